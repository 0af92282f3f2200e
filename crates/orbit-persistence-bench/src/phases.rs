//! The timed phases of the lease workload, on a [`Side`]: ours run as tokio tasks against a
//! provider, as an application calls it; peers run on plain threads (inside `block_in_place`,
//! so a peer's blocking calls never stall the runtime). [`best_rotating`] runs a repeatable
//! phase on every side several times in rotating order and keeps each side's best.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, NodeId, Renew, Timestamp,
};

use crate::peer::Peer;
use crate::workload::{Data, HOUR, T0};

/// A provider under test.
pub type Ours = Arc<dyn AddressableDirectoryProvider>;

/// The interval sync of the mixed phase (ours: `SyncMode::IntervalMs(50)`).
pub const MIXED_SYNC_INTERVAL: Duration = Duration::from_millis(50);

/// Renewals per `durable_renew` run (docs/benchmark.md: 1,000 per concurrency level).
pub const RENEWALS: usize = 1_000;

/// A store under test: one of ours, through the provider as an application calls it, or a
/// peer, on plain threads.
#[derive(Clone)]
pub enum Side {
    /// One of our backends.
    Ours(Ours),
    /// A peer store.
    Peer(Arc<dyn Peer>),
}

/// Throughput and latency of one `durable_renew` run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Renewals {
    /// Aggregate renewals per second.
    pub rate: f64,
    /// Median latency of one renewal (its get and its durable write), ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// One watcher following durable writers: what [`Side::follow`] measures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Follow {
    /// Acknowledged renewals per second of all writers.
    pub writes_per_s: f64,
    /// Events per second the watcher received, over the same start.
    pub events_per_s: f64,
    /// Median time from a write's acknowledgement to its event, ms.
    pub p50_lag_ms: f64,
    /// 99th percentile of that, ms.
    pub p99_lag_ms: f64,
}

/// The `q` quantile (0..=1) of `sorted`, in ms.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The lease renewal `k` of task `t` renews.
fn renewed(data: &Data, t: usize, k: usize, per: usize) -> usize {
    (t * per + k) * 7 % data.leases.len()
}

/// Waits for every task of `handles`; what they returned, in order.
async fn join_tasks<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("benchmark task"));
    }
    out
}

/// Runs `spawn(t)` for `t` in `0..threads` and joins them, inside `block_in_place`.
fn join_threads<T>(threads: usize, spawn: impl Fn(usize) -> std::thread::JoinHandle<T>) -> Vec<T> {
    tokio::task::block_in_place(|| {
        let handles: Vec<_> = (0..threads).map(spawn).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark thread"))
            .collect()
    })
}

impl Side {
    /// Bulk load in batches of 1,000, each durable; leases/s.
    pub async fn bulk_load(&self, data: &Data) -> f64 {
        let start = Instant::now();
        for chunk in data.leases.chunks(1_000) {
            self.upsert_durable(chunk).await;
        }
        data.leases.len() as f64 / start.elapsed().as_secs_f64()
    }

    /// Stores `leases` unconditionally in one durable change (ours: `store_leases`).
    pub async fn upsert_durable(&self, leases: &[AddressableLease]) {
        match self {
            Side::Ours(o) => o.store_leases(leases).await.expect("store_leases"),
            Side::Peer(p) => tokio::task::block_in_place(|| p.upsert(leases, true)),
        }
    }

    /// The lease of `r`.
    pub async fn get(&self, r: &AddressableReference) -> Option<AddressableLease> {
        match self {
            Side::Ours(o) => o.get_lease(r).await.expect("get_lease"),
            Side::Peer(p) => tokio::task::block_in_place(|| p.get(r)),
        }
    }

    /// [`RENEWALS`] durable renewals (get, then renew with its revision; a peer gets, then
    /// upserts durably) from `tasks` concurrent tasks.
    pub async fn renew(&self, data: &Arc<Data>, tasks: usize) -> Renewals {
        let per = RENEWALS / tasks;
        let start = Instant::now();
        let latencies: Vec<Vec<Duration>> = match self {
            Side::Ours(ours) => {
                let spawn = |t: usize| {
                    let (ours, data) = (ours.clone(), data.clone());
                    tokio::spawn(async move {
                        let mut lat = Vec::with_capacity(per);
                        for k in 0..per {
                            let op = Instant::now();
                            let r = &data.leases[renewed(&data, t, k, per)].reference;
                            let cur = ours.get_lease(r).await.unwrap().expect("renewed lease");
                            let e = Timestamp(T0.0 + 2 * HOUR + k as u64);
                            ours.renew_lease(r, &cur.node_id, cur.revision, e, e)
                                .await
                                .unwrap();
                            lat.push(op.elapsed());
                        }
                        lat
                    })
                };
                join_tasks((0..tasks).map(spawn).collect()).await
            }
            Side::Peer(peer) => {
                let spawn = |t: usize| {
                    let (peer, data) = (peer.clone(), data.clone());
                    std::thread::spawn(move || {
                        let mut lat = Vec::with_capacity(per);
                        for k in 0..per {
                            let op = Instant::now();
                            let r = &data.leases[renewed(&data, t, k, per)].reference;
                            let mut cur = peer.get(r).expect("renewed lease");
                            cur.expires_at = Timestamp(T0.0 + 2 * HOUR + k as u64);
                            cur.renew_at = cur.expires_at;
                            peer.upsert(std::slice::from_ref(&cur), true);
                            lat.push(op.elapsed());
                        }
                        lat
                    })
                };
                join_threads(tasks, spawn)
            }
        };
        let elapsed = start.elapsed();
        let mut all: Vec<Duration> = latencies.into_iter().flatten().collect();
        all.sort_unstable();
        Renewals {
            rate: all.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: quantile_ms(&all, 0.50),
            p99_ms: quantile_ms(&all, 0.99),
        }
    }

    /// `gets` uniform random gets from `tasks` tasks; gets/s.
    pub async fn get_uniform(&self, data: &Arc<Data>, tasks: usize, gets: usize) -> f64 {
        let per = gets / tasks;
        let start = Instant::now();
        match self {
            Side::Ours(ours) => {
                let spawn = |t: usize| {
                    let (ours, data) = (ours.clone(), data.clone());
                    tokio::spawn(async move {
                        let mut rng = 77 + t as u64;
                        for _ in 0..per {
                            let i = data.uniform(&mut rng);
                            ours.get_lease(&data.leases[i].reference).await.unwrap();
                        }
                    })
                };
                join_tasks((0..tasks).map(spawn).collect()).await;
            }
            Side::Peer(peer) => {
                let spawn = |t: usize| {
                    let (peer, data) = (peer.clone(), data.clone());
                    std::thread::spawn(move || {
                        let mut rng = 77 + t as u64;
                        for _ in 0..per {
                            let i = data.uniform(&mut rng);
                            peer.get(&data.leases[i].reference);
                        }
                    })
                };
                join_threads(tasks, spawn);
            }
        }
        (per * tasks) as f64 / start.elapsed().as_secs_f64()
    }

    /// Zipf(0.99) 90% get / 10% renew from 2 tasks, `ops` in all; ops/s. Ours should be opened
    /// with interval sync (50 ms); a peer writes unsynced while a thread syncs it every 50 ms,
    /// so both pay the same durability. Cleaned-up leases are skipped.
    pub async fn mixed(&self, data: &Arc<Data>, ops: usize) -> f64 {
        let per = ops / 2;
        let start = Instant::now();
        match self {
            Side::Ours(ours) => {
                let spawn = |t: usize| {
                    let (ours, data) = (ours.clone(), data.clone());
                    tokio::spawn(async move {
                        let mut rng = 99 + t as u64;
                        for k in 0..per {
                            let l = &data.leases[data.zipf(&mut rng)];
                            let Some(cur) = ours.get_lease(&l.reference).await.unwrap() else {
                                continue;
                            };
                            if k % 10 == 0 {
                                let e = Timestamp(T0.0 + 3 * HOUR + k as u64);
                                ours.renew_lease(&l.reference, &cur.node_id, cur.revision, e, e)
                                    .await
                                    .unwrap();
                            }
                        }
                    })
                };
                join_tasks((0..2).map(spawn).collect()).await;
            }
            Side::Peer(peer) => {
                let done = Arc::new(AtomicBool::new(false));
                let syncer = {
                    let (peer, done) = (peer.clone(), done.clone());
                    std::thread::spawn(move || {
                        while !done.load(Ordering::Relaxed) {
                            std::thread::sleep(MIXED_SYNC_INTERVAL);
                            peer.sync();
                        }
                    })
                };
                let spawn = |t: usize| {
                    let (peer, data) = (peer.clone(), data.clone());
                    std::thread::spawn(move || {
                        let mut rng = 99 + t as u64;
                        for k in 0..per {
                            let l = &data.leases[data.zipf(&mut rng)];
                            let Some(mut cur) = peer.get(&l.reference) else {
                                continue;
                            };
                            if k % 10 == 0 {
                                cur.expires_at = Timestamp(T0.0 + 3 * HOUR + k as u64);
                                cur.renew_at = cur.expires_at;
                                peer.upsert(std::slice::from_ref(&cur), false);
                            }
                        }
                    })
                };
                join_threads(2, spawn);
                done.store(true, Ordering::Relaxed);
                syncer.join().expect("sync thread");
            }
        }
        (per * 2) as f64 / start.elapsed().as_secs_f64()
    }

    /// Lists every node of `nodes`; returns how many leases were listed.
    pub async fn list_nodes(&self, nodes: &[NodeId]) -> usize {
        let mut n = 0;
        for node in nodes {
            n += match self {
                Side::Ours(o) => o.list_node_leases(node).await.unwrap().len(),
                Side::Peer(p) => tokio::task::block_in_place(|| p.list(node).len()),
            };
        }
        n
    }

    /// Removes every lease expired at `now` (the caller sets the clock of ours to `now`);
    /// returns how many and how long it took.
    pub async fn cleanup(&self, now: Timestamp) -> (u64, Duration) {
        let start = Instant::now();
        let removed = match self {
            Side::Ours(o) => o.cleanup_expired_leases().await.unwrap(),
            Side::Peer(p) => tokio::task::block_in_place(|| p.cleanup(now)),
        };
        (removed, start.elapsed())
    }

    /// Removes every lease of `node` (ours: `remove_node_leases`; a peer lists the node and
    /// removes in durable transactions of 1,024); returns how many and how long it took.
    pub async fn evict(&self, node: &NodeId) -> (u64, Duration) {
        let start = Instant::now();
        let removed = match self {
            Side::Ours(o) => o.remove_node_leases(node).await.unwrap(),
            Side::Peer(p) => tokio::task::block_in_place(|| p.evict(node)),
        };
        (removed, start.elapsed())
    }

    /// One watcher following `tasks` tasks that renew `per_task` leases each, durably (ours
    /// only: no peer has a change feed). `None` for a peer.
    pub async fn follow(&self, data: &Arc<Data>, tasks: usize, per_task: usize) -> Option<Follow> {
        let Side::Ours(ours) = self else {
            return None;
        };
        let from = ours.current_revision().await.unwrap();
        let mut watch = ours.watch(from).await.unwrap();
        let total = tasks * per_task;
        let watcher = tokio::spawn(async move {
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total {
                match watch.next().await {
                    Some(Ok(event)) => seen.push((event.revision, Instant::now())),
                    other => panic!("the watch ended: {other:?}"),
                }
            }
            seen
        });
        let start = Instant::now();
        let spawn = |t: usize| {
            let (ours, data) = (ours.clone(), data.clone());
            tokio::spawn(async move {
                let mut acked = Vec::with_capacity(per_task);
                // Task `t` renews only leases `t` modulo `tasks`: one writer per lease, so no
                // renewal is lost to another task's.
                let own = data.leases.len() / tasks;
                for k in 0..per_task {
                    let r = &data.leases[t + tasks * (k % own)].reference;
                    let cur = ours.get_lease(r).await.unwrap().expect("renewed lease");
                    // A millisecond later: a lease the cleanup phase expires still expires
                    // (peers run no watch phase, and must remove the same leases).
                    let e = Timestamp(cur.expires_at.0 + 1);
                    let Renew::Renewed(l) = ours
                        .renew_lease(r, &cur.node_id, cur.revision, e, e)
                        .await
                        .unwrap()
                    else {
                        panic!("a renewal of the only writer of a lease was lost");
                    };
                    acked.push((l.revision, Instant::now()));
                }
                acked
            })
        };
        let acked: Vec<(u64, Instant)> = join_tasks((0..tasks).map(spawn).collect())
            .await
            .into_iter()
            .flatten()
            .collect();
        let writers = start.elapsed();
        let seen = watcher.await.expect("watcher");
        let followed = seen
            .last()
            .map_or(writers, |(_, at)| at.duration_since(start));
        let acked: std::collections::HashMap<u64, Instant> = acked.into_iter().collect();
        // Lag: from the writer's acknowledgement to the watcher's receipt (0 if the event
        // arrived first, which the feed allows: an event is published before the ack returns).
        let mut lags: Vec<Duration> = seen
            .iter()
            .filter_map(|(revision, at)| {
                acked
                    .get(revision)
                    .map(|ack| at.saturating_duration_since(*ack))
            })
            .collect();
        assert_eq!(lags.len(), total, "events that no writer acknowledged");
        lags.sort_unstable();
        Some(Follow {
            writes_per_s: total as f64 / writers.as_secs_f64(),
            events_per_s: total as f64 / followed.as_secs_f64(),
            p50_lag_ms: quantile_ms(&lags, 0.50),
            p99_lag_ms: quantile_ms(&lags, 0.99),
        })
    }

    /// Closes the store: a clean shutdown for ours; a peer is dropped, which must release the
    /// last reference to it (no phase may still hold one).
    pub async fn close(self) {
        match self {
            Side::Ours(o) => o.shutdown().await.expect("shutdown"),
            Side::Peer(p) => {
                assert_eq!(Arc::strong_count(&p), 1, "a peer is still shared at close");
                tokio::task::block_in_place(|| drop(p));
            }
        }
    }
}

/// Runs `phase` on every side `reps` times, rotating which side goes first, and keeps each
/// side's best by `score`, so no side is favoured by running after another warmed the page
/// cache.
pub async fn best_rotating<T: Copy + Default>(
    sides: &[Side],
    reps: usize,
    phase: impl AsyncFn(usize, &Side) -> T,
    score: impl Fn(&T) -> f64,
) -> Vec<T> {
    let mut best: Vec<Option<T>> = vec![None; sides.len()];
    for rep in 0..reps {
        for k in 0..sides.len() {
            let i = (rep + k) % sides.len();
            let got = phase(i, &sides[i]).await;
            if best[i].is_none_or(|b| score(&got) > score(&b)) {
                best[i] = Some(got);
            }
        }
    }
    best.into_iter().map(Option::unwrap_or_default).collect()
}

/// 100 nodes picked at random (deterministically) for the list_node phase.
pub fn list_node_picks(data: &Data) -> Vec<NodeId> {
    let mut rng = 5u64;
    (0..100)
        .map(|_| {
            data.nodes[(crate::workload::next(&mut rng) % data.nodes.len() as u64) as usize].clone()
        })
        .collect()
}

/// The physical limit of one durable write on the disk under `dir` (docs/benchmark.md phase 9):
/// 1,000 x (append 192 bytes + `fdatasync`) and 1,000 x (4 KiB write at a preallocated
/// offset + `fdatasync`). Returns both rates, per second.
pub fn floor(dir: &std::path::Path) -> std::io::Result<(f64, f64)> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let path = dir.join("floor.tmp");
    let mut f = std::fs::File::create(&path)?;
    let record = [0x5au8; 192];
    let start = Instant::now();
    for _ in 0..1_000 {
        f.write_all(&record)?;
        f.sync_data()?;
    }
    let append = 1_000.0 / start.elapsed().as_secs_f64();
    let page = [0xa5u8; 4096];
    for i in 0..1_000u64 {
        f.write_all_at(&page, i * 4096)?;
    }
    f.sync_all()?;
    let start = Instant::now();
    for i in 0..1_000u64 {
        f.write_all_at(&page, i * 4096)?;
        f.sync_data()?;
    }
    let overwrite = 1_000.0 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok((append, overwrite))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_right_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&d, 0.5), 51.0);
        assert_eq!(quantile_ms(&d, 0.99), 99.0);
        assert_eq!(quantile_ms(&d, 0.0), 1.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
    }
}
