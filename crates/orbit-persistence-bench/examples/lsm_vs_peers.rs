//! The LSM backend against its peers, RocksDB (used directly, with the same tuned options as
//! our RocksDB backend) and fjall, on the phases of the lease workload (BENCHMARK.md), side by
//! side in one run. Repeatable phases run three times per store in rotating order; each store
//! keeps its best.
//!
//! `cargo run --release -p orbit-persistence-bench --features rocksdb --example lsm_vs_peers -- [N]`
//! (default N = 1,000,000).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use orbit_persistence_bench::peer::{FjallPeer, Peer, RocksDbPeer};
use orbit_persistence_bench::phases::{self, Ours, Side, best_rotating};
use orbit_persistence_bench::report::{Row, print_table_vs_best};
use orbit_persistence_bench::workload::{Data, T0, dir_bytes};
use orbit_persistence_core::{
    AddressableDirectoryProvider, Clock, LsmTreeConfig, ManualClock, PersistenceProvider,
    RocksDbConfig, SyncMode, Timestamp,
};
use orbit_persistence_lsm::LsmDirectory;

fn open_lsm(dir: &Path, sync: SyncMode, clock: &Arc<ManualClock>) -> Arc<LsmDirectory> {
    let config = LsmTreeConfig {
        data_dir: dir.to_path_buf(),
        sync,
        ..LsmTreeConfig::default()
    };
    Arc::new(LsmDirectory::open(&config, clock.clone() as Arc<dyn Clock>).unwrap())
}

fn rocks_config(dir: &Path) -> RocksDbConfig {
    RocksDbConfig {
        data_dir: dir.to_path_buf(),
        ..RocksDbConfig::default()
    }
}

fn row(phase: impl Into<String>, unit: &'static str, higher: bool, values: Vec<f64>) -> Row {
    Row {
        phase: phase.into(),
        unit,
        higher_is_better: higher,
        values,
    }
}

/// The child of the kill -9 phase: durable batches of 1,000 leases until the active memtable
/// is nearly full (the most WAL a reopen replays while the flush thread keeps up), then `READY`.
async fn kill9_child(dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = open_lsm(dir, SyncMode::Always, &clock);
    let limit = LsmTreeConfig::default().memtable_size;
    let data = Data::new(1_000_000);
    for chunk in data.leases.chunks(1_000).cycle() {
        store.store_leases(chunk).await.unwrap();
        let m = store.metrics().await.engine;
        if m["memtable_bytes"] > limit * 9 / 10 && m["frozen_memtables"] == 0 {
            println!("READY {}", m["wal_bytes"]);
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            }
        }
    }
}

/// Runs the kill -9 child on `dir` until it is ready, kills it, and returns the WAL bytes it
/// reported and the milliseconds from open to the first successful get.
async fn kill9_reopen(dir: &Path, data: &Data, clock: &Arc<ManualClock>) -> (u64, f64) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--kill9-child", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut wal = 0;
    for line in stdout.lines() {
        if let Some(rest) = line.unwrap().strip_prefix("READY ") {
            wal = rest.trim().parse().unwrap();
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    let store = open_lsm(dir, SyncMode::Always, clock);
    store
        .get_lease(&data.leases[1].reference)
        .await
        .unwrap()
        .unwrap();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    store.shutdown().await.unwrap();
    (wal, ms)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--kill9-child") {
        return kill9_child(Path::new(&args[2])).await;
    }
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    eprintln!("generating {n} leases");
    let data = Arc::new(Data::new(n));
    let logical = data.logical_bytes() as f64;
    let root = tempfile::tempdir_in(".").unwrap();
    let dirs = ["lsm", "rocksdb", "fjall"].map(|d| root.path().join(d));
    let clock = Arc::new(ManualClock::new(T0));
    let lsm = open_lsm(&dirs[0], SyncMode::Always, &clock);
    let rocks = Arc::new(RocksDbPeer::open(&dirs[1], &rocks_config(&dirs[1])));
    let fjall = Arc::new(FjallPeer::open(&dirs[2]));
    let mut sides = vec![
        Side::Ours(lsm.clone() as Ours),
        Side::Peer(rocks.clone() as Arc<dyn Peer>),
        Side::Peer(fjall.clone() as Arc<dyn Peer>),
    ];
    let mut rows = Vec::new();

    eprintln!("bulk_load");
    let mut load = Vec::new();
    for side in &sides {
        load.push(side.bulk_load(&data).await);
    }
    rows.push(row("bulk_load", "leases/s", true, load));
    let space = |rows: &mut Vec<Row>, what: &str| {
        let v = dirs.iter().map(|d| dir_bytes(d) as f64 / logical).collect();
        rows.push(row(format!("space {what}"), "x logical", false, v));
    };
    space(&mut rows, "after load");

    for tasks in [1usize, 4, 16, 64] {
        eprintln!("durable_renew x{tasks}");
        let v = best_rotating(&sides, async |s| s.renew(&data, tasks).await).await;
        rows.push(row(
            format!("durable_renew {tasks} tasks"),
            "ops/s",
            true,
            v,
        ));
    }

    for tasks in [1usize, 2] {
        eprintln!("get x{tasks}");
        let v = best_rotating(&sides, async |s| s.get(&data, tasks).await).await;
        rows.push(row(format!("get {tasks} tasks"), "/s", true, v));
    }

    eprintln!("list_node");
    let picks = phases::list_node_picks(&data);
    let mut listed = Vec::new();
    for s in &sides {
        listed.push(s.list_nodes(&picks).await);
    }
    assert!(
        listed.iter().all(|&l| l == listed[0]),
        "stores disagree: {listed:?}"
    );
    let v = best_rotating(&sides, async |s| {
        let start = Instant::now();
        s.list_nodes(&picks).await;
        picks.len() as f64 / start.elapsed().as_secs_f64()
    })
    .await;
    rows.push(row(
        format!("list_node (~{} leases)", listed[0] / picks.len()),
        "ms/call",
        false,
        v.iter().map(|calls| 1e3 / calls).collect(),
    ));

    eprintln!("cleanup");
    let now = Timestamp(T0.0 + 2_000);
    clock.set(now);
    let mut rates = Vec::new();
    let mut removed = Vec::new();
    for s in &sides {
        let (r, rate) = s.cleanup(now).await;
        removed.push(r);
        rates.push(rate);
    }
    assert!(removed.iter().all(|&r| r == removed[0]), "{removed:?}");
    rows.push(row(
        format!("cleanup ({} removed)", removed[0]),
        "/s",
        true,
        rates,
    ));
    space(&mut rows, "after cleanup");
    eprintln!("compaction");
    let start = Instant::now();
    lsm.compact().await.unwrap();
    let lsm_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    tokio::task::block_in_place(|| rocks.compact());
    let rocks_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    tokio::task::block_in_place(|| fjall.compact());
    let fjall_secs = start.elapsed().as_secs_f64();
    rows.push(row(
        "full compaction",
        "s",
        false,
        vec![lsm_secs, rocks_secs, fjall_secs],
    ));
    space(&mut rows, "after cleanup + full compaction");

    eprintln!("reopen after clean shutdown");
    let probe = data.leases[1].reference.clone();
    sides.clear();
    lsm.shutdown().await.unwrap();
    drop(lsm);
    drop(Arc::try_unwrap(rocks).ok().expect("rocksdb still shared"));
    drop(Arc::try_unwrap(fjall).ok().expect("fjall still shared"));
    let start = Instant::now();
    let lsm = open_lsm(&dirs[0], SyncMode::IntervalMs(50), &clock);
    lsm.get_lease(&probe).await.unwrap().unwrap();
    let lsm_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let rocks = Arc::new(RocksDbPeer::open(&dirs[1], &rocks_config(&dirs[1])));
    rocks.get(&probe).unwrap();
    let rocks_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let fjall = Arc::new(FjallPeer::open(&dirs[2]));
    fjall.get(&probe).unwrap();
    let fjall_ms = start.elapsed().as_secs_f64() * 1e3;
    rows.push(row(
        "reopen after clean shutdown",
        "ms",
        false,
        vec![lsm_ms, rocks_ms, fjall_ms],
    ));

    eprintln!("mixed");
    let sides = vec![
        Side::Ours(lsm.clone() as Ours),
        Side::Peer(rocks.clone() as Arc<dyn Peer>),
        Side::Peer(fjall.clone() as Arc<dyn Peer>),
    ];
    let v = best_rotating(&sides, async |s| s.mixed(&data, 200_000).await).await;
    rows.push(row(
        "mixed 90/10 zipf, 2 tasks, interval sync",
        "ops/s",
        true,
        v,
    ));
    let m = lsm.metrics().await;
    lsm.shutdown().await.unwrap();

    eprintln!("reopen after kill -9");
    let (wal, kill9_ms) = kill9_reopen(&root.path().join("lsm-kill9"), &data, &clock).await;

    let (append, overwrite) = phases::floor(root.path());
    println!("N = {n}, logical bytes = {logical}");
    println!("floor: append+fdatasync {append:.0}/s, 4 KiB overwrite+fdatasync {overwrite:.0}/s");
    println!("lsm engine metrics at the end: {:?}", m.engine);
    println!(
        "lsm reopen after kill -9 with a nearly full memtable ({wal} WAL bytes to replay): \
         {kill9_ms:.0} ms to the first get"
    );
    print_table_vs_best(&["lsm", "rocksdb", "fjall"], &rows);
}
