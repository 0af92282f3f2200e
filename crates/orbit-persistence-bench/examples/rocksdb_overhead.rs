//! What does the wrapper cost? Runs the phases of the lease workload (BENCHMARK.md) on
//! `RocksDbDirectory` and on the same workload written directly against the rocksdb crate (same
//! three column families, same encodings, one WriteBatch per change, upserts that read the old
//! lease to move its index entries), side by side in one run, and prints the ratio.
//!
//! `cargo run --release -p orbit-persistence-bench --features rocksdb --example rocksdb_overhead [N]` (default 1,000,000)

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orbit_persistence_bench::peer::{Peer, RocksDbPeer};
use orbit_persistence_bench::phases::{self, alternate};
use orbit_persistence_bench::workload::{Data, HOUR, T0, dir_bytes};
use orbit_persistence_core::encoding::{encode_lease, encode_reference};
use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, Key, ManualClock,
    NodeId, PersistenceProvider, RocksDbConfig, SyncMode, Timestamp,
};
use orbit_persistence_rocksdb::RocksDbDirectory;

struct Row {
    phase: String,
    ours: f64,
    raw: f64,
    unit: &'static str,
    higher_is_better: bool,
}

fn timed<F: FnOnce() -> u64>(f: F) -> (u64, Duration) {
    let start = Instant::now();
    let n = f();
    (n, start.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--kill9-child") {
        return kill9_child(&args[2], Path::new(&args[3])).await;
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    eprintln!("generating {n} leases");
    let data = Arc::new(Data::new(n));
    let root = tempfile::tempdir().unwrap();
    let config = |dir: &Path, sync| RocksDbConfig {
        data_dir: dir.to_path_buf(),
        sync,
        ..RocksDbConfig::default()
    };
    let (ours_dir, raw_dir) = (root.path().join("ours"), root.path().join("raw"));
    let clock = Arc::new(ManualClock::new(T0));
    let ours = Arc::new(
        RocksDbDirectory::open(
            &config(&ours_dir, SyncMode::Always),
            clock.clone() as Arc<dyn Clock>,
        )
        .unwrap(),
    );
    let raw = Arc::new(RocksDbPeer::open(
        &raw_dir,
        &config(&raw_dir, SyncMode::Always),
    ));
    let (ours_dyn, raw_dyn): (phases::Ours, Arc<dyn Peer>) = (ours.clone(), raw.clone());
    let mut rows = Vec::new();
    let logical: u64 = data
        .leases
        .iter()
        .map(|l| (encode_reference(&l.reference).len() + encode_lease(l).len()) as u64)
        .sum();

    // 1. bulk_load
    eprintln!("bulk_load");
    let (_, t_ours) = timed(|| {
        let rt = tokio::runtime::Handle::current();
        for chunk in data.leases.chunks(1_000) {
            tokio::task::block_in_place(|| rt.block_on(ours.store_leases(chunk))).unwrap();
        }
        0
    });
    let (_, t_raw) = timed(|| {
        // Same durability as ours (SyncMode::Always): each batch synced.
        for chunk in data.leases.chunks(1_000) {
            raw.upsert(chunk, true);
        }
        0
    });
    rows.push(Row {
        phase: "bulk_load leases/s".into(),
        ours: n as f64 / t_ours.as_secs_f64(),
        raw: n as f64 / t_raw.as_secs_f64(),
        unit: "/s",
        higher_is_better: true,
    });
    ours.store_leases(&[]).await.unwrap();
    raw.flush_wal();

    // Repeatable phases run REPS times in alternating order (ours first, then raw first, ...)
    // and keep each side's best, so neither side is favoured by running second on a warmer
    // page cache.
    // 2. durable_renew: 1,000 renewals per concurrency level, each synced before it returns.
    for tasks in [1usize, 4, 16, 64] {
        eprintln!("durable_renew x{tasks}");
        let (o, r) = alternate(
            async || phases::ours_renew(&ours_dyn, &data, tasks).await,
            || phases::peer_renew(&raw_dyn, &data, tasks),
        )
        .await;
        rows.push(Row {
            phase: format!("durable_renew {tasks} tasks ops/s"),
            ours: o,
            raw: r,
            unit: "/s",
            higher_is_better: true,
        });
    }

    // 3. get: 1,000,000 uniform random gets, 1 and 2 tasks.
    for tasks in [1usize, 2] {
        eprintln!("get x{tasks}");
        let (o, r) = alternate(
            async || phases::ours_get(&ours_dyn, &data, tasks).await,
            || phases::peer_get(&raw_dyn, &data, tasks),
        )
        .await;
        rows.push(Row {
            phase: format!("get {tasks} task(s) /s"),
            ours: o,
            raw: r,
            unit: "/s",
            higher_is_better: true,
        });
    }

    // 5. list_node: 100 random nodes (rates in calls/s, shown as ms per call).
    eprintln!("list_node");
    let (o, r, per_call) = phases::list_node(&ours_dyn, &raw_dyn, &data).await;
    rows.push(Row {
        phase: format!("list_node ms/call (~{per_call} leases)"),
        ours: o,
        raw: r,
        unit: "ms",
        higher_is_better: false,
    });

    for (name, dir) in [("ours", ours_dir.join("db")), ("raw", raw_dir.clone())] {
        let mut kinds: std::collections::BTreeMap<String, u64> = Default::default();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let f = e.file_name().to_string_lossy().to_string();
            let kind = f.rsplit('.').next().unwrap_or("").to_string();
            *kinds.entry(kind).or_default() += e.metadata().unwrap().len();
        }
        eprintln!("{name} after load: {kinds:?}");
    }
    let space_load = (
        dir_bytes(&ours_dir) as f64 / logical as f64,
        dir_bytes(&raw_dir) as f64 / logical as f64,
    );

    // 6. cleanup: the 10% loaded expired.
    eprintln!("cleanup");
    clock.set(Timestamp(T0.0 + 2_000));
    let (removed, t) = timed(|| {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| rt.block_on(ours.cleanup_expired_leases())).unwrap()
    });
    let (raw_removed, t_raw) = timed(|| raw.cleanup(Timestamp(T0.0 + 2_000)));
    assert_eq!(removed, raw_removed);
    rows.push(Row {
        phase: format!("cleanup removed/s ({removed})"),
        ours: removed as f64 / t.as_secs_f64(),
        raw: raw_removed as f64 / t_raw.as_secs_f64(),
        unit: "/s",
        higher_is_better: true,
    });

    // 7. recovery after a clean shutdown: open to first successful get.
    eprintln!("recovery");
    drop((ours_dyn, raw_dyn));
    ours.shutdown().await.unwrap();
    drop(ours);
    drop(Arc::try_unwrap(raw).ok().expect("raw still shared"));
    let probe = &data.leases[1].reference;
    let start = Instant::now();
    let reopened = Arc::new(
        RocksDbDirectory::open(
            &config(&ours_dir, SyncMode::IntervalMs(50)),
            clock.clone() as Arc<dyn Clock>,
        )
        .unwrap(),
    );
    reopened.get_lease(probe).await.unwrap().unwrap();
    let ours_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let raw = Arc::new(RocksDbPeer::open(
        &raw_dir,
        &config(&raw_dir, SyncMode::Always),
    ));
    raw.get(probe).unwrap();
    let raw_ms = start.elapsed().as_secs_f64() * 1e3;
    rows.push(Row {
        phase: "reopen after clean shutdown ms".into(),
        ours: ours_ms,
        raw: raw_ms,
        unit: "ms",
        higher_is_better: false,
    });

    // 4. mixed: Zipf(0.99), 90% get / 10% renew, interval sync (raw: unsynced writes), 2 tasks.
    // Run after the reopen so ours runs with `interval_ms = 50`; cleaned-up leases are skipped.
    eprintln!("mixed");
    let ops = 200_000usize;
    let (reopened_dyn, raw_dyn): (phases::Ours, Arc<dyn Peer>) = (reopened.clone(), raw.clone());
    let (ours_rate, raw_rate) = alternate(
        async || phases::ours_mixed(&reopened_dyn, &data, ops).await,
        || phases::peer_mixed(&raw_dyn, &data, ops),
    )
    .await;
    drop(raw_dyn);
    rows.push(Row {
        phase: "mixed 90/10 zipf, 2 tasks ops/s".into(),
        ours: ours_rate,
        raw: raw_rate,
        unit: "/s",
        higher_is_better: true,
    });

    // 7b. recovery after kill -9 of a child that was writing durably: open to first get.
    eprintln!("recovery after kill -9");
    let probe = data.leases[1].reference.clone();
    reopened.shutdown().await.unwrap();
    drop(reopened);
    drop(Arc::try_unwrap(raw).ok().expect("raw still shared"));
    let mut killed_ms = Vec::new();
    for (mode, dir) in [("ours", &ours_dir), ("raw", &raw_dir)] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--kill9-child", mode, dir.to_str().unwrap()])
            .spawn()
            .expect("spawn child");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let start = Instant::now();
        if mode == "ours" {
            let s = RocksDbDirectory::open(
                &config(dir, SyncMode::Always),
                clock.clone() as Arc<dyn Clock>,
            )
            .unwrap();
            s.get_lease(&probe).await.unwrap().unwrap();
            killed_ms.push(start.elapsed().as_secs_f64() * 1e3);
            s.shutdown().await.unwrap();
        } else {
            let r = RocksDbPeer::open(dir, &config(dir, SyncMode::Always));
            r.get(&probe).unwrap();
            killed_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    rows.push(Row {
        phase: "reopen after kill -9 ms".into(),
        ours: killed_ms[0],
        raw: killed_ms[1],
        unit: "ms",
        higher_is_better: false,
    });

    let space_cleanup = (
        dir_bytes(&ours_dir) as f64 / logical as f64,
        dir_bytes(&raw_dir) as f64 / logical as f64,
    );
    println!("N = {n}, logical bytes = {logical}");
    println!("| phase | orbit-persistence-rocksdb | raw rocksdb | ours / raw |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        let ratio = if r.higher_is_better {
            r.ours / r.raw
        } else {
            r.raw / r.ours
        };
        println!(
            "| {} | {:.2}{} | {:.2}{} | {:.2} |",
            r.phase, r.ours, r.unit, r.raw, r.unit, ratio
        );
    }
    println!(
        "| space after load (x logical) | {:.2} | {:.2} | |",
        space_load.0, space_load.1
    );
    println!(
        "| space after cleanup (x logical) | {:.2} | {:.2} | |",
        space_cleanup.0, space_cleanup.1
    );
    println!("(ours / raw: >= 1 means the wrapper is at least as fast; for ms rows, raw / ours)");
}

/// The child of the kill -9 recovery phase: durable single-lease upserts until killed.
async fn kill9_child(mode: &str, dir: &Path) {
    let config = RocksDbConfig {
        data_dir: dir.to_path_buf(),
        sync: SyncMode::Always,
        ..RocksDbConfig::default()
    };
    let node = NodeId::new("node-kill9", "bench");
    let lease = |i: u64| {
        AddressableLease::new(
            AddressableReference::new("Kill9", Key::Int64Key { key: i as i64 }),
            node.clone(),
            Timestamp(T0.0 + HOUR),
            Timestamp(T0.0 + HOUR / 2),
        )
    };
    if mode == "ours" {
        let s = RocksDbDirectory::open(&config, Arc::new(ManualClock::new(T0))).unwrap();
        for i in 0.. {
            s.store_lease(&lease(i % 10_000)).await.unwrap();
        }
    } else {
        let raw = RocksDbPeer::open(dir, &config);
        for i in 0.. {
            raw.upsert(&[lease(i % 10_000)], true);
        }
    }
}
