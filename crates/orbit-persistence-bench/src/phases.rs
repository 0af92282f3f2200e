//! The timed phases. Ours run as tokio tasks against a provider, as an application would call
//! it; peers run on plain threads. [`alternate`] runs a repeatable phase on both sides several
//! times, alternating who goes first, and keeps each side's best.

use std::sync::Arc;
use std::time::Instant;

use orbit_persistence_core::{AddressableDirectoryProvider, Timestamp};

use crate::peer::Peer;
use crate::workload::{Data, HOUR, T0};

/// A provider under test.
pub type Ours = Arc<dyn AddressableDirectoryProvider>;

/// How many times each repeatable phase runs per side.
pub const REPS: usize = 3;

/// Runs both sides [`REPS`] times, alternating which goes first; the best of each.
pub async fn alternate(ours: impl AsyncFn() -> f64, peer: impl Fn() -> f64) -> (f64, f64) {
    let (mut best_ours, mut best_peer) = (0f64, 0f64);
    for rep in 0..REPS {
        if rep % 2 == 0 {
            best_ours = best_ours.max(ours().await);
            best_peer = best_peer.max(peer());
        } else {
            best_peer = best_peer.max(peer());
            best_ours = best_ours.max(ours().await);
        }
    }
    (best_ours, best_peer)
}

/// Bulk load in batches of 1,000; leases/s.
pub async fn ours_bulk_load(ours: &Ours, data: &Data) -> f64 {
    let start = Instant::now();
    for chunk in data.leases.chunks(1_000) {
        ours.store_leases(chunk).await.unwrap();
    }
    data.leases.len() as f64 / start.elapsed().as_secs_f64()
}

/// Bulk load in durable transactions of 1,000; leases/s.
pub fn peer_bulk_load(peer: &dyn Peer, data: &Data) -> f64 {
    let start = Instant::now();
    for chunk in data.leases.chunks(1_000) {
        peer.upsert(chunk, true);
    }
    data.leases.len() as f64 / start.elapsed().as_secs_f64()
}

/// The lease renewal `k` of task `t` renews.
fn renewed(data: &Data, t: usize, k: usize, per: usize) -> usize {
    (t * per + k) * 7 % data.leases.len()
}

/// 1,000 durable renewals (get, then renew with its revision) from `tasks` tasks; ops/s.
pub async fn ours_renew(ours: &Ours, data: &Arc<Data>, tasks: usize) -> f64 {
    let per = 1_000 / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (ours, data) = (ours.clone(), data.clone());
            tokio::spawn(async move {
                for k in 0..per {
                    let r = &data.leases[renewed(&data, t, k, per)].reference;
                    let cur = ours.get_lease(r).await.unwrap().unwrap();
                    let e = Timestamp(T0.0 + 2 * HOUR + k as u64);
                    ours.renew_lease(r, &cur.node_id, cur.revision, e, e)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    (per * tasks) as f64 / start.elapsed().as_secs_f64()
}

/// The peer's 1,000 durable renewals (get, then upsert) from `tasks` threads; ops/s.
pub fn peer_renew(peer: &Arc<dyn Peer>, data: &Arc<Data>, tasks: usize) -> f64 {
    let per = 1_000 / tasks;
    let start = Instant::now();
    let threads: Vec<_> = (0..tasks)
        .map(|t| {
            let (peer, data) = (peer.clone(), data.clone());
            std::thread::spawn(move || {
                for k in 0..per {
                    let r = &data.leases[renewed(&data, t, k, per)].reference;
                    let mut cur = peer.get(r).unwrap();
                    cur.expires_at = Timestamp(T0.0 + 2 * HOUR + k as u64);
                    cur.renew_at = cur.expires_at;
                    peer.upsert(std::slice::from_ref(&cur), true);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (per * tasks) as f64 / start.elapsed().as_secs_f64()
}

/// Uniform random gets from `tasks` tasks, 1,000,000 in all; gets/s.
pub async fn ours_get(ours: &Ours, data: &Arc<Data>, tasks: usize) -> f64 {
    let gets = 1_000_000 / tasks;
    let start = Instant::now();
    let hs: Vec<_> = (0..tasks)
        .map(|t| {
            let (ours, data) = (ours.clone(), data.clone());
            tokio::spawn(async move {
                let mut rng = 77 + t as u64;
                for _ in 0..gets {
                    let i = data.uniform(&mut rng);
                    ours.get_lease(&data.leases[i].reference).await.unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    (gets * tasks) as f64 / start.elapsed().as_secs_f64()
}

/// The peer's uniform random gets from `tasks` threads; gets/s.
pub fn peer_get(peer: &Arc<dyn Peer>, data: &Arc<Data>, tasks: usize) -> f64 {
    let gets = 1_000_000 / tasks;
    let start = Instant::now();
    let ts: Vec<_> = (0..tasks)
        .map(|t| {
            let (peer, data) = (peer.clone(), data.clone());
            std::thread::spawn(move || {
                let mut rng = 77 + t as u64;
                for _ in 0..gets {
                    let i = data.uniform(&mut rng);
                    peer.get(&data.leases[i].reference);
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    (gets * tasks) as f64 / start.elapsed().as_secs_f64()
}

/// Zipf(0.99) 90% get / 10% renew from 2 tasks, `ops` in all; ops/s. Cleaned-up leases are
/// skipped. Run it on a provider opened with interval sync.
pub async fn ours_mixed(ours: &Ours, data: &Arc<Data>, ops: usize) -> f64 {
    let start = Instant::now();
    let hs: Vec<_> = (0..2u64)
        .map(|t| {
            let (ours, data) = (ours.clone(), data.clone());
            tokio::spawn(async move {
                let mut rng = 99 + t;
                for k in 0..ops / 2 {
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
        })
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

/// The peer's mixed phase with unsynced writes; ops/s.
pub fn peer_mixed(peer: &Arc<dyn Peer>, data: &Arc<Data>, ops: usize) -> f64 {
    let start = Instant::now();
    let ts: Vec<_> = (0..2u64)
        .map(|t| {
            let (peer, data) = (peer.clone(), data.clone());
            std::thread::spawn(move || {
                let mut rng = 99 + t;
                for k in 0..ops / 2 {
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
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

/// The list_node phase: `list_node_leases` of 100 random nodes on both sides, checked to agree
/// first, then timed with [`alternate`]. Returns (ms per call ours, ms per call peer, leases
/// per call).
pub async fn list_node(ours: &Ours, peer: &Arc<dyn Peer>, data: &Data) -> (f64, f64, usize) {
    let mut rng = 5u64;
    let picks: Vec<_> = (0..100)
        .map(|_| {
            data.nodes[(crate::workload::next(&mut rng) % data.nodes.len() as u64) as usize].clone()
        })
        .collect();
    let mut listed = 0;
    for node in &picks {
        let n = ours.list_node_leases(node).await.unwrap().len();
        assert_eq!(n, peer.list(node).len(), "the stores disagree on {node:?}");
        listed += n;
    }
    // `alternate` keeps each side's best rate (calls/s); shown as ms per call.
    let (o, p) = alternate(
        async || {
            let start = Instant::now();
            for node in &picks {
                ours.list_node_leases(node).await.unwrap();
            }
            picks.len() as f64 / start.elapsed().as_secs_f64()
        },
        || {
            let start = Instant::now();
            for node in &picks {
                peer.list(node);
            }
            picks.len() as f64 / start.elapsed().as_secs_f64()
        },
    )
    .await;
    (1e3 / o, 1e3 / p, listed / picks.len())
}

/// The physical limit of one durable write on the disk under `dir` (BENCHMARK.md phase 9):
/// 1,000 x (append 192 bytes + `fdatasync`) and 1,000 x (4 KiB write at a preallocated
/// offset + `fdatasync`). Returns both rates, per second.
pub fn floor(dir: &std::path::Path) -> (f64, f64) {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let path = dir.join("floor.tmp");
    let mut f = std::fs::File::create(&path).unwrap();
    let record = [0x5au8; 192];
    let start = Instant::now();
    for _ in 0..1_000 {
        f.write_all(&record).unwrap();
        f.sync_data().unwrap();
    }
    let append = 1_000.0 / start.elapsed().as_secs_f64();
    let page = [0xa5u8; 4096];
    for i in 0..1_000u64 {
        f.write_all_at(&page, i * 4096).unwrap();
    }
    f.sync_all().unwrap();
    let start = Instant::now();
    for i in 0..1_000u64 {
        f.write_all_at(&page, i * 4096).unwrap();
        f.sync_data().unwrap();
    }
    let overwrite = 1_000.0 / start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    (append, overwrite)
}

/// A store under test: one of ours, through the provider as an application calls it, or a
/// peer, on plain threads.
#[derive(Clone)]
pub enum Side {
    /// One of our backends.
    Ours(Ours),
    /// A peer store.
    Peer(Arc<dyn Peer>),
}

impl Side {
    /// [`ours_bulk_load`] or [`peer_bulk_load`].
    pub async fn bulk_load(&self, data: &Data) -> f64 {
        match self {
            Side::Ours(o) => ours_bulk_load(o, data).await,
            Side::Peer(p) => tokio::task::block_in_place(|| peer_bulk_load(&**p, data)),
        }
    }

    /// [`ours_renew`] or [`peer_renew`].
    pub async fn renew(&self, data: &Arc<Data>, tasks: usize) -> f64 {
        match self {
            Side::Ours(o) => ours_renew(o, data, tasks).await,
            Side::Peer(p) => tokio::task::block_in_place(|| peer_renew(p, data, tasks)),
        }
    }

    /// [`ours_get`] or [`peer_get`].
    pub async fn get(&self, data: &Arc<Data>, tasks: usize) -> f64 {
        match self {
            Side::Ours(o) => ours_get(o, data, tasks).await,
            Side::Peer(p) => tokio::task::block_in_place(|| peer_get(p, data, tasks)),
        }
    }

    /// [`ours_mixed`] or [`peer_mixed`].
    pub async fn mixed(&self, data: &Arc<Data>, ops: usize) -> f64 {
        match self {
            Side::Ours(o) => ours_mixed(o, data, ops).await,
            Side::Peer(p) => tokio::task::block_in_place(|| peer_mixed(p, data, ops)),
        }
    }

    /// Lists every node of `nodes`; returns how many leases were listed.
    pub async fn list_nodes(&self, nodes: &[orbit_persistence_core::NodeId]) -> usize {
        let mut n = 0;
        for node in nodes {
            n += match self {
                Side::Ours(o) => o.list_node_leases(node).await.unwrap().len(),
                Side::Peer(p) => tokio::task::block_in_place(|| p.list(node).len()),
            };
        }
        n
    }

    /// Removes every lease expired at `now`; returns how many and the rate per second.
    pub async fn cleanup(&self, now: Timestamp) -> (u64, f64) {
        let start = Instant::now();
        let removed = match self {
            // The caller sets the clock of ours to `now`.
            Side::Ours(o) => o.cleanup_expired_leases().await.unwrap(),
            Side::Peer(p) => tokio::task::block_in_place(|| p.cleanup(now)),
        };
        (removed, removed as f64 / start.elapsed().as_secs_f64())
    }
}

/// Runs `phase` on every side [`REPS`] times, rotating which side goes first, and keeps each
/// side's best, so no side is favoured by running after another warmed the page cache.
pub async fn best_rotating(sides: &[Side], phase: impl AsyncFn(&Side) -> f64) -> Vec<f64> {
    let mut best = vec![0f64; sides.len()];
    for rep in 0..REPS {
        for k in 0..sides.len() {
            let i = (rep + k) % sides.len();
            best[i] = best[i].max(phase(&sides[i]).await);
        }
    }
    best
}

/// 100 nodes picked at random (deterministically) for the list_node phase.
pub fn list_node_picks(data: &Data) -> Vec<orbit_persistence_core::NodeId> {
    let mut rng = 5u64;
    (0..100)
        .map(|_| {
            data.nodes[(crate::workload::next(&mut rng) % data.nodes.len() as u64) as usize].clone()
        })
        .collect()
}
