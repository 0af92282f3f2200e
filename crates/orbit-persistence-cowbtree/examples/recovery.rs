//! How long does recovery take with a full WAL? Loads N leases, checkpoints, rewrites M of them
//! (one WAL record per batch of 1,000, no checkpoint), abandons the store without closing it,
//! and times the reopen (meta page + WAL replay) to the first successful get.
//!
//! `cargo run --release -p orbit-persistence-cowbtree --example recovery -- [N] [M]`
//! (defaults 1,000,000 and 350,000).

use std::sync::Arc;
use std::time::Instant;

use orbit_persistence_core::fs::StdFileSystem;
use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, CowBTreeConfig, Key,
    ManualClock, NodeId, PersistenceProvider, SyncMode, Timestamp,
};
use orbit_persistence_cowbtree::CowBTreeDirectory;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn lease(i: usize, expires: u64) -> AddressableLease {
    AddressableLease::new(
        AddressableReference::new(
            format!("ActorType{:02}", i % 16),
            Key::string(format!("actor-{i:012}-{:06x}", (i * 7919) & 0xff_ffff)),
        ),
        NodeId::new(format!("node-{:04}", (i * 31) % 1000), "bench"),
        Timestamp(expires),
        Timestamp(expires - 500),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, m) = (
        *args.first().unwrap_or(&1_000_000),
        *args.get(1).unwrap_or(&350_000),
    );
    let dir = tempfile::tempdir_in(".").unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let config = CowBTreeConfig {
        data_dir: dir.path().to_path_buf(),
        sync: SyncMode::Never,
        wal_size_limit: 1 << 40,
        checkpoint_interval_ms: 1 << 40,
        cache_size: 1 << 40,
        ..CowBTreeConfig::default()
    };
    let store = CowBTreeDirectory::open(&config, clock.clone()).unwrap();
    let leases: Vec<_> = (0..n).map(|i| lease(i, T0.0 + 3_600_000)).collect();
    for chunk in leases.chunks(1_000) {
        store.store_leases(chunk).await.unwrap();
    }
    store.shutdown().await.unwrap();
    drop(store);
    let fs = Arc::new(StdFileSystem::new());
    let store = CowBTreeDirectory::open_on(fs.clone(), &config, clock.clone()).unwrap();
    let updates: Vec<_> = (0..m)
        .map(|i| lease(i * 7 % n, T0.0 + 7_200_000 + i as u64))
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
