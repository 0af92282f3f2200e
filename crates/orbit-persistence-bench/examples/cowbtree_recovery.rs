//! How long does recovery take with a full WAL? Loads N leases, checkpoints, rewrites M of them
//! (one WAL record per batch of 1,000, no checkpoint), abandons the store without closing it,
//! and times the reopen (meta page + WAL replay) to the first successful get.
//!
//! `cargo run --release -p orbit-persistence-bench --example cowbtree_recovery -- [N] [M]`
//! (defaults 1,000,000 and 50,000: a WAL of about the default `wal_size_limit`, 4 MiB; the WAL
//! reaches twice that at worst).

use std::sync::Arc;
use std::time::Instant;

use orbit_persistence_bench::workload::{Data, HOUR, T0};
use orbit_persistence_core::fs::StdFileSystem;
use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, CowBTreeConfig, ManualClock,
    PersistenceProvider, SyncMode, Timestamp,
};
use orbit_persistence_cowbtree::CowBTreeDirectory;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, m) = (
        *args.first().unwrap_or(&1_000_000),
        *args.get(1).unwrap_or(&50_000),
    );
    let dir = tempfile::tempdir_in(".").unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let config = CowBTreeConfig {
        data_dir: dir.path().to_path_buf(),
        sync: SyncMode::Never,
        wal_size_limit: 1 << 40,
        checkpoint_interval_ms: 3_600_000,
        cache_size: 1 << 40,
        ..CowBTreeConfig::default()
    };
    let store = CowBTreeDirectory::open(&config, clock.clone()).unwrap();
    let leases = Data::new(n).leases;
    for chunk in leases.chunks(1_000) {
        store.store_leases(chunk).await.unwrap();
    }
    store.shutdown().await.unwrap();
    drop(store);
    let fs = Arc::new(StdFileSystem::new());
    let store = CowBTreeDirectory::open_on(fs.clone(), &config, clock.clone()).unwrap();
    let updates: Vec<AddressableLease> = (0..m)
        .map(|i| {
            let e = Timestamp(T0.0 + 2 * HOUR + i as u64);
            AddressableLease {
                expires_at: e,
                renew_at: e,
                ..leases[i * 7 % n].clone()
            }
        })
        .collect();
    for chunk in updates.chunks(1_000) {
        store.store_leases(chunk).await.unwrap();
    }
    let wal = store.metrics().await.engine["wal_bytes"];
    // Abandoned, not closed: no final checkpoint. The OS has the WAL bytes.
    std::mem::forget(store);
    let start = Instant::now();
    let store = CowBTreeDirectory::open_on(fs, &config, clock).unwrap();
    store
        .get_lease(&leases[1].reference)
        .await
        .unwrap()
        .unwrap();
    println!(
        "reopen with {:.1} MiB of WAL ({m} lease changes) over {n} leases: {:.0} ms",
        wal as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64() * 1e3
    );
}
