//! The change feed's history on etcd is the cluster's: after a compaction, a watch from before
//! it is `Compacted`, naming the compaction revision, and watching from there works. Its own
//! member, since a compaction affects every watcher of the cluster.

use std::sync::Arc;
use std::time::Duration;

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, EtcdConfig, Key,
    ManualClock, NodeId, OrbitError, PersistenceProvider, Timestamp,
};
use orbit_persistence_etcd::EtcdDirectory;
use orbit_persistence_etcd::local_cluster::LocalCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_a_compaction_is_compacted() {
    let cluster = LocalCluster::single().unwrap();
    let config = EtcdConfig {
        endpoints: cluster.endpoints(),
        key_prefix: "/feed-test/".into(),
        ..EtcdConfig::default()
    };
    let now = Timestamp(1_700_000_000_000);
    let store = EtcdDirectory::connect(&config, Arc::new(ManualClock::new(now)))
        .await
        .unwrap();
    let start = store.current_revision().await.unwrap();
    for i in 0..20 {
        let lease = AddressableLease::new(
            AddressableReference::new("Greeter", Key::Int64Key { key: i }),
            NodeId::new("n", "ns"),
            Timestamp(now.0 + 60_000),
            Timestamp(now.0 + 30_000),
        );
        store.store_lease(&lease).await.unwrap();
    }
    let end = store.current_revision().await.unwrap();
    let compact_at = end - 5;
    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    client.compact(compact_at as i64, None).await.unwrap();

    let mut watch = store.watch(start).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
    let oldest = match next {
        Ok(Some(Err(OrbitError::Compacted { requested, oldest }))) => {
            assert_eq!(requested, start);
            oldest
        }
        other => panic!("a watch from before the compaction: {other:?}"),
    };
    assert_eq!(oldest, compact_at - 1);
    assert!(
        watch.next().await.is_none(),
        "the watch went on after Compacted"
    );

    let mut resumed = store.watch(compact_at).await.unwrap();
    let mut revisions = Vec::new();
    for _ in 0..5 {
        let event = tokio::time::timeout(Duration::from_secs(10), resumed.next())
            .await
            .expect("an event owed")
            .unwrap()
            .unwrap();
        revisions.push(event.revision);
    }
    assert_eq!(revisions, ((compact_at + 1)..=end).collect::<Vec<_>>());
    store.shutdown().await.unwrap();
}
