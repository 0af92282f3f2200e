//! Space comes back: after most leases are removed, nodes merge and the pages they free are
//! reused, so the tree takes far fewer pages and the file does not grow (free pages at its end
//! are cut off; free pages in the middle are reused by later writes).

use std::sync::Arc;

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, CowBTreeConfig,
    Key, ManualClock, NodeId, PersistenceProvider, Timestamp,
};
use orbit_persistence_cowbtree::CowBTreeDirectory;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn lease(i: u32) -> AddressableLease {
    let e = Timestamp(T0.0 + 3_600_000);
    AddressableLease::new(
        AddressableReference::new(format!("Type{}", i % 4), Key::string(format!("key-{i:06}"))),
        NodeId::new(format!("node-{}", i % 20), "ns"),
        e,
        e,
    )
}

#[test]
fn removing_most_leases_shrinks_the_page_file() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = CowBTreeConfig {
            data_dir: dir.path().to_path_buf(),
            page_size: 1024,
            checkpoint_interval_ms: 1,
            // The leases' pages are measured here: the change history (which keeps the
            // removals, up to its window) is off.
            watch_history: 0,
            ..CowBTreeConfig::default()
        };
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
        let pages = || {
            std::fs::metadata(dir.path().join("pages.cow"))
                .unwrap()
                .len()
                / 1024
        };
        let store = CowBTreeDirectory::open(&config, clock.clone()).unwrap();
        let all: Vec<_> = (0..5_000).map(lease).collect();
        for chunk in all.chunks(500) {
            store.store_leases(chunk).await.unwrap();
        }
        store.shutdown().await.unwrap();
        let full = pages();
        let store = CowBTreeDirectory::open(&config, clock.clone()).unwrap();
        let m = store.metrics().await.engine;
        let used_full = m["page_count"] - m["free_pages"];
        for (i, l) in all.iter().enumerate() {
            if i % 10 != 0 {
                store.remove_lease(&l.reference).await.unwrap();
            }
        }
        // A few more checkpoints hand the last freed pages back.
        for l in all.iter().take(20) {
            store.store_lease(l).await.unwrap();
        }
        let m = store.metrics().await.engine;
        let used_purged = m["page_count"] - m["free_pages"];
        store.shutdown().await.unwrap();
        let purged = pages();
        assert!(
            used_purged * 4 < used_full,
            "a tenth of the leases should use far fewer pages: {used_full} -> {used_purged}"
        );
        assert!(purged <= full, "the file grew: {full} -> {purged} pages");
        let store = CowBTreeDirectory::open(&config, clock).unwrap();
        // 500 kept, plus the first 20 stored again of which 2 were kept anyway.
        assert_eq!(store.metrics().await.lease_count, 500 + 18);
        store.shutdown().await.unwrap();
    });
}
