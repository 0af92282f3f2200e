//! The tree under churn: many times the memtable size of overwrites, renewals and removals.
//! Reads must stay correct while flushes and compactions run underneath, the number of tables
//! and the bytes on disk must stay bounded, and a full compaction must give the space of the
//! removed leases back.

use std::collections::HashMap;
use std::sync::Arc;

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, Key,
    LsmTreeConfig, ManualClock, NodeId, PersistenceProvider, Timestamp,
};
use orbit_persistence_lsm::Compact;
use orbit_persistence_lsm::LsmDirectory;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const REFS: u32 = 1_500;
const MEMTABLE: u64 = 64 << 10;

fn reference(i: u32) -> AddressableReference {
    AddressableReference::new(
        format!("Type{}", i % 4),
        Key::string(format!("actor-{i:08}-payload-to-make-keys-longer")),
    )
}

fn lease(i: u32, round: u32) -> AddressableLease {
    let e = Timestamp(T0.0 + 3_600_000 + u64::from(round) * 1000 + u64::from(i));
    AddressableLease::new(
        reference(i),
        NodeId::new(format!("node-{}", (i + round) % 25), "ns"),
        e,
        e,
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn check_against(store: &LsmDirectory, model: &HashMap<u32, AddressableLease>, round: u32) {
    for i in (0..REFS).step_by(7) {
        let got = store.get_lease(&reference(i)).await.unwrap();
        let want = model.get(&i);
        assert_eq!(
            got.as_ref().map(|l| (&l.node_id, l.expires_at)),
            want.map(|l| (&l.node_id, l.expires_at)),
            "round {round}, lease {i}"
        );
    }
    let node = NodeId::new(format!("node-{}", round % 25), "ns");
    let mut listed: Vec<_> = store
        .list_node_leases(&node)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.reference)
        .collect();
    listed.sort();
    let mut want: Vec<_> = model
        .values()
        .filter(|l| l.node_id == node)
        .map(|l| l.reference.clone())
        .collect();
    want.sort();
    assert_eq!(listed, want, "round {round}: node index of {node:?}");
}

#[test]
fn churn_keeps_reads_right_and_tables_and_space_bounded() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LsmTreeConfig {
            data_dir: dir.path().to_path_buf(),
            memtable_size: MEMTABLE,
            max_immutable_memtables: 2,
            block_size: 1024,
            level1_size: 48 << 10,
            level_fanout: 3,
            // The bounds below are the live leases' and their tombstones': the change
            // history (up to its window of events) is off.
            watch_history: 0,
            ..LsmTreeConfig::default()
        };
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
        let store = LsmDirectory::open(&config, clock).unwrap();
        let mut model: HashMap<u32, AddressableLease> = HashMap::new();
        let mut written = 0u64;
        let mut max_tables = 0;
        let mut max_disk = 0;
        let mut max_table_bytes = 0;
        for round in 0..40u32 {
            // Store a slice (new or overwritten), remove another.
            let ids: Vec<u32> = (0..REFS).filter(|i| (i + round) % 3 == 0).collect();
            let stored: Vec<_> = ids.iter().map(|&i| lease(i, round)).collect();
            for chunk in stored.chunks(100) {
                store.store_leases(chunk).await.unwrap();
            }
            written += stored.len() as u64 * 3 * 120;
            model.extend(ids.into_iter().zip(stored));
            for i in (0..REFS).filter(|i| (i + 2 * round) % 5 == 0) {
                let removed = store.remove_lease(&reference(i)).await.unwrap();
                assert_eq!(
                    removed,
                    model.remove(&i).is_some(),
                    "round {round}, remove {i}"
                );
            }
            check_against(&store, &model, round).await;
            let m = store.metrics().await;
            assert_eq!(m.lease_count, model.len() as u64, "round {round}");
            max_tables = max_tables.max(m.engine["tables"]);
            max_disk = max_disk.max(m.disk_bytes);
            max_table_bytes = max_table_bytes.max(m.engine["table_bytes"]);
        }
        let m = store.metrics().await;
        assert!(written > 5 * MEMTABLE, "wrote {written} bytes");
        assert!(m.engine["flushes"] >= 5, "flushes: {:?}", m.engine);
        assert!(m.engine["compactions"] >= 2, "compactions: {:?}", m.engine);
        // ~1,000 live leases of ~250 bytes with their index entries, in tables of
        // level1_size / 8 = 6 KiB: dozens of tables below level 0 (seen: at most 79 tables in
        // all). Level 0 is capped by write stalls at 20 tables of one memtable each, however
        // far compaction lags on a loaded machine. Without compaction there would be one table
        // per flush: over 150 tables and 6 MB.
        assert!(
            max_tables <= 120,
            "tables peaked at {max_tables}: {:?}",
            m.engine
        );
        assert!(
            max_table_bytes < 2 << 20,
            "tables peaked at {max_table_bytes} bytes"
        );
        // The rest is the WAL of the memtables and the manifest (rewritten at 4 MiB).
        assert!(max_disk < 6 << 20, "disk peaked at {max_disk} bytes");

        // Remove nearly everything, compact: the space comes back.
        let before = m.disk_bytes;
        let keys: Vec<u32> = model.keys().copied().collect();
        for i in keys.iter().filter(|&&i| i % 10 != 0) {
            assert!(store.remove_lease(&reference(*i)).await.unwrap());
            model.remove(i);
        }
        store.compact().await.unwrap();
        check_against(&store, &model, 99).await;
        let m = store.metrics().await;
        assert_eq!(m.lease_count, model.len() as u64);
        assert!(
            m.engine["table_bytes"] * 4 < before,
            "after purge and compaction: {} table bytes, {before} disk bytes before; {:?}",
            m.engine["table_bytes"],
            m.engine
        );
        assert!(
            m.disk_bytes < before,
            "{} disk bytes, {before} before",
            m.disk_bytes
        );
        store.shutdown().await.unwrap();

        // And all of it survives a reopen.
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
        let store = LsmDirectory::open(&config, clock).unwrap();
        check_against(&store, &model, 100).await;
        assert_eq!(store.metrics().await.lease_count, model.len() as u64);
        store.shutdown().await.unwrap();
    });
}
