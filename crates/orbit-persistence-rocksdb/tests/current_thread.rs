//! On a current-thread runtime, where `block_in_place` is not allowed, the blocking calls fall
//! back to the blocking pool: every kind of call still works.

use std::sync::Arc;

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, Key, ManualClock,
    NodeId, PersistenceProvider, Timestamp,
};
use orbit_persistence_rocksdb::RocksDbDirectory;

#[tokio::test(flavor = "current_thread")]
async fn a_current_thread_runtime_is_served_by_the_blocking_pool() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp(1_700_000_000_000);
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t0));
    let store = RocksDbDirectory::open_dir(dir.path(), clock).unwrap();
    let e = Timestamp(t0.0 + 60_000);
    let lease = AddressableLease::new(
        AddressableReference::new("Greeter", Key::string("alice")),
        NodeId::new("node-1", "test"),
        e,
        e,
    );
    store.store_lease(&lease).await.unwrap();
    let got = store.get_lease(&lease.reference).await.unwrap().unwrap();
    assert_eq!(got.node_id, lease.node_id);
    assert_eq!(
        store.list_node_leases(&lease.node_id).await.unwrap().len(),
        1
    );
    assert!(store.remove_lease(&lease.reference).await.unwrap());
    assert_eq!(store.cleanup_expired_leases().await.unwrap(), 0);
    store.shutdown().await.unwrap();
}
