//! The COW B+tree backend against redb, its closest peer (an embedded copy-on-write B+tree),
//! on every phase of the lease workload (BENCHMARK.md), side by side in one run; plus the
//! space check of the backend's issue: purge 90% of the leases, insert 10% new ones, and see
//! whether the files grow.
//!
//! `cargo run --release -p orbit-persistence-bench --example cowbtree_vs_redb -- [N]`
//! (default N = 1,000,000).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orbit_persistence_bench::peer::{Peer, RedbPeer};
use orbit_persistence_bench::phases::{self, Ours, alternate};
use orbit_persistence_bench::report::{Row, print_table};
use orbit_persistence_bench::workload::{Data, EXPIRED_AT, HOUR, T0, dir_bytes};
use orbit_persistence_core::{
    AddressableLease, AddressableReference, Clock, CowBTreeConfig, Key, ManualClock, NodeId,
    SyncMode, Timestamp,
};
use orbit_persistence_cowbtree::CowBTreeDirectory;

fn config(dir: &Path, sync: SyncMode) -> CowBTreeConfig {
    CowBTreeConfig {
        data_dir: dir.to_path_buf(),
        sync,
        ..CowBTreeConfig::default()
    }
}

fn open_ours(dir: &Path, sync: SyncMode, clock: &Arc<ManualClock>) -> Ours {
    Arc::new(CowBTreeDirectory::open(&config(dir, sync), clock.clone() as Arc<dyn Clock>).unwrap())
}

fn row(phase: impl Into<String>, unit: &'static str, higher: bool, ours: f64, peer: f64) -> Row {
    Row {
        phase: phase.into(),
        unit,
        higher_is_better: higher,
        values: vec![ours, peer],
    }
}

fn kill9_lease(i: u64) -> AddressableLease {
    AddressableLease::new(
        AddressableReference::new("Kill9", Key::Int64Key { key: i as i64 }),
        NodeId::new("node-kill9", "bench"),
        Timestamp(T0.0 + HOUR),
        Timestamp(T0.0 + HOUR / 2),
    )
}

/// The child of the kill -9 phase: durable single-lease upserts until killed. In mode
/// `ours-full-wal` it rewrites leases in durable batches until the WAL is nearly at its limit
/// (the worst case for recovery), says `READY` and waits to be killed.
async fn kill9_child(mode: &str, dir: &Path) {
    if mode == "ours-full-wal" {
        let clock = Arc::new(ManualClock::new(T0));
        let s = open_ours(dir, SyncMode::Always, &clock);
        let limit = CowBTreeConfig::default().wal_size_limit;
        let data = Data::new(1_000_000);
        let mut round = 0u64;
        loop {
            for chunk in data.leases.chunks(1_000) {
                let batch: Vec<_> = chunk
                    .iter()
                    .map(|l| {
                        let e = Timestamp(T0.0 + 5 * HOUR + round);
                        AddressableLease {
                            expires_at: e,
                            renew_at: e,
                            ..l.clone()
                        }
                    })
                    .collect();
                s.store_leases(&batch).await.unwrap();
                round += 1;
                if s.metrics().await.engine["wal_bytes"] > limit * 9 / 10 {
                    println!("READY {}", s.metrics().await.engine["wal_bytes"]);
                    loop {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                }
            }
        }
    }
    if mode == "ours" {
        let clock = Arc::new(ManualClock::new(T0));
        let s = open_ours(dir, SyncMode::Always, &clock);
        for i in 0.. {
            s.store_lease(&kill9_lease(i % 10_000)).await.unwrap();
        }
    } else {
        let peer = RedbPeer::open(&dir.join("redb"));
        for i in 0.. {
            peer.upsert(&[kill9_lease(i % 10_000)], true);
        }
    }
}

/// Runs a child writing to `dir` for 1.5 s, then kills it with SIGKILL.
async fn kill_writer(mode: &str, dir: &Path) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--kill9-child", mode, dir.to_str().unwrap()])
        .spawn()
        .expect("spawn child");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Runs a child in `mode` until it prints `READY <n>`, kills it with SIGKILL, returns `n`.
fn kill_when_ready(mode: &str, dir: &Path) -> u64 {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--kill9-child", mode, dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut n = 0;
    for line in stdout.lines() {
        if let Some(rest) = line.unwrap().strip_prefix("READY ") {
            n = rest.trim().parse().unwrap();
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    n
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--kill9-child") {
        return kill9_child(&args[2], Path::new(&args[3])).await;
    }
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    eprintln!("generating {n} leases");
    let data = Arc::new(Data::new(n));
    let logical = data.logical_bytes() as f64;
    let root = tempfile::tempdir_in(".").unwrap();
    let (ours_dir, peer_dir) = (root.path().join("cowbtree"), root.path().join("redb"));
    std::fs::create_dir_all(&peer_dir).unwrap();
    let peer_file = peer_dir.join("redb");
    let clock = Arc::new(ManualClock::new(T0));
    let mut ours = open_ours(&ours_dir, SyncMode::Always, &clock);
    let mut peer: Arc<dyn Peer> = Arc::new(RedbPeer::open(&peer_file));
    let mut rows = Vec::new();

    eprintln!("bulk_load");
    let o = phases::ours_bulk_load(&ours, &data).await;
    let p = phases::peer_bulk_load(&*peer, &data);
    rows.push(row("bulk_load", "leases/s", true, o, p));

    for tasks in [1usize, 4, 16, 64] {
        eprintln!("durable_renew x{tasks}");
        let (o, p) = alternate(
            async || phases::ours_renew(&ours, &data, tasks).await,
            || phases::peer_renew(&peer, &data, tasks),
        )
        .await;
        rows.push(row(
            format!("durable_renew {tasks} tasks"),
            "ops/s",
            true,
            o,
            p,
        ));
    }

    for tasks in [1usize, 2] {
        eprintln!("get x{tasks}");
        let (o, p) = alternate(
            async || phases::ours_get(&ours, &data, tasks).await,
            || phases::peer_get(&peer, &data, tasks),
        )
        .await;
        rows.push(row(format!("get {tasks} task(s)"), "gets/s", true, o, p));
    }

    eprintln!("list_node");
    let (o, p, per_call) = phases::list_node(&ours, &peer, &data).await;
    rows.push(row(
        format!("list_node (~{per_call} leases)"),
        "ms/call",
        false,
        o,
        p,
    ));

    let space_load = (
        dir_bytes(&ours_dir) as f64 / logical,
        dir_bytes(&peer_dir) as f64 / logical,
    );

    eprintln!("cleanup");
    clock.set(Timestamp(EXPIRED_AT.0 + 1_000));
    let start = Instant::now();
    let removed = ours.cleanup_expired_leases().await.unwrap();
    let o = removed as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let peer_removed = peer.cleanup(clock.now());
    let p = peer_removed as f64 / start.elapsed().as_secs_f64();
    assert_eq!(removed, peer_removed);
    rows.push(row(
        format!("cleanup ({removed} expired)"),
        "removed/s",
        true,
        o,
        p,
    ));
    let space_cleanup = (
        dir_bytes(&ours_dir) as f64 / logical,
        dir_bytes(&peer_dir) as f64 / logical,
    );

    eprintln!("recovery after a clean shutdown");
    let probe = data.leases[1].reference.clone();
    ours.shutdown().await.unwrap();
    drop(ours);
    drop(peer);
    let start = Instant::now();
    ours = open_ours(&ours_dir, SyncMode::IntervalMs(50), &clock);
    ours.get_lease(&probe).await.unwrap().unwrap();
    let o = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    peer = Arc::new(RedbPeer::open(&peer_file));
    peer.get(&probe).unwrap();
    let p = start.elapsed().as_secs_f64() * 1e3;
    rows.push(row("reopen after clean shutdown", "ms", false, o, p));

    eprintln!("mixed");
    let (o, p) = alternate(
        async || phases::ours_mixed(&ours, &data, 200_000).await,
        || phases::peer_mixed(&peer, &data, 200_000),
    )
    .await;
    rows.push(row(
        "mixed 90/10 zipf, 2 tasks, interval sync",
        "ops/s",
        true,
        o,
        p,
    ));

    eprintln!("recovery after kill -9");
    ours.shutdown().await.unwrap();
    drop(ours);
    drop(peer);
    kill_writer("ours", &ours_dir).await;
    let start = Instant::now();
    ours = open_ours(&ours_dir, SyncMode::Always, &clock);
    ours.get_lease(&probe).await.unwrap().unwrap();
    let o = start.elapsed().as_secs_f64() * 1e3;
    kill_writer("peer", &peer_dir).await;
    let start = Instant::now();
    peer = Arc::new(RedbPeer::open(&peer_file));
    peer.get(&probe).unwrap();
    let p = start.elapsed().as_secs_f64() * 1e3;
    let killed_ms = [o, p];
    rows.push(row(
        "reopen after kill -9",
        "ms",
        false,
        killed_ms[0],
        killed_ms[1],
    ));

    eprintln!("purge 90%, insert 10% new");
    let before = (dir_bytes(&ours_dir), dir_bytes(&peer_dir));
    let purge_at = Timestamp(clock.now().0 + 1_000);
    let live: Vec<AddressableLease> = data
        .leases
        .iter()
        .filter(|l| l.expires_at > clock.now())
        .cloned()
        .collect();
    let doomed: Vec<AddressableLease> = live
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .map(|(_, l)| AddressableLease {
            expires_at: purge_at,
            renew_at: purge_at,
            ..l.clone()
        })
        .collect();
    for chunk in doomed.chunks(1_000) {
        ours.store_leases(chunk).await.unwrap();
        peer.upsert(chunk, true);
    }
    clock.set(Timestamp(purge_at.0 + 1));
    let purged = ours.cleanup_expired_leases().await.unwrap();
    assert_eq!(purged, peer.cleanup(clock.now()));
    let fresh: Vec<AddressableLease> = data
        .leases
        .iter()
        .take(n / 10)
        .map(|l| {
            let mut l = l.clone();
            l.reference.addressable_type.push_str("-new");
            l.expires_at = Timestamp(clock.now().0 + HOUR);
            l.renew_at = l.expires_at;
            l
        })
        .collect();
    for chunk in fresh.chunks(1_000) {
        ours.store_leases(chunk).await.unwrap();
        peer.upsert(chunk, true);
    }
    ours.shutdown().await.unwrap();
    drop(peer);
    let after = (dir_bytes(&ours_dir), dir_bytes(&peer_dir));
    eprintln!("recovery after kill -9 with a nearly full WAL");
    let wal_bytes = kill_when_ready("ours-full-wal", &ours_dir);
    let start = Instant::now();
    ours = open_ours(&ours_dir, SyncMode::Always, &clock);
    ours.get_lease(&probe).await.unwrap().unwrap();
    let full_wal_ms = start.elapsed().as_secs_f64() * 1e3;
    rows.push(row(
        format!(
            "disk after purging {purged} and adding {} / before",
            fresh.len()
        ),
        "ratio",
        false,
        after.0 as f64 / before.0 as f64,
        after.1 as f64 / before.1 as f64,
    ));

    let (append, overwrite) = phases::floor(root.path());
    println!("N = {n}, logical bytes = {logical:.0}");
    print_table(&["cowbtree", "redb"], &rows);
    println!(
        "| space after load | {:.2} | {:.2} | |\n| space after cleanup | {:.2} | {:.2} | |",
        space_load.0, space_load.1, space_cleanup.0, space_cleanup.1
    );
    println!(
        "| reopen after kill -9 with {:.1} MiB of WAL (ms) | {full_wal_ms:.0} | | |",
        wal_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "| floor: append 192 B + fdatasync (/s) | {append:.0} | | |\n| floor: 4 KiB overwrite + fdatasync (/s) | {overwrite:.0} | | |"
    );
    println!("(ratios: >= 1 means cowbtree is better; ms and space rows are lower-is-better)");
}
