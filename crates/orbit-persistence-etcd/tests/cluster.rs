//! A three-member etcd cluster on loopback, under member loss:
//! - the leader is killed while a writer runs: every acknowledged write stays readable, and
//!   writes go on (they fail with `Unavailable`, each within the timeout, only until the two
//!   others elect a leader; the writer retries a failed write as an application would);
//! - a second member is killed: no quorum, so operations fail with `Unavailable` within the
//!   configured timeout, not later;
//! - both come back: operations succeed again, and every acknowledged write is still there.

use std::time::{Duration, Instant};

use orbit_persistence_conformance::fixtures::{T0, node, reference};
use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, EtcdConfig, ManualClock, OrbitError,
    PersistenceProvider, Timestamp,
};
use orbit_persistence_etcd::EtcdDirectory;
use orbit_persistence_etcd::local_cluster::LocalCluster;

const TIMEOUT_MS: u64 = 2_000;

fn lease(i: u32) -> AddressableLease {
    AddressableLease::new(
        reference(i),
        node(i % 7),
        Timestamp(T0.0 + 3_600_000),
        Timestamp(T0.0 + 1_800_000),
    )
}

/// The member that leads the cluster now, asked of each live member in turn.
async fn leader(cluster: &LocalCluster, live: &[usize]) -> usize {
    for _ in 0..100 {
        for &i in live {
            let Ok(mut client) = etcd_client::Client::connect([cluster.endpoint(i)], None).await
            else {
                continue;
            };
            if let Ok(status) = client.status().await
                && status.leader() != 0
                && status.leader() == status.header().map_or(0, |h| h.member_id())
            {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no member leads the cluster");
}

/// Writes leases `range`, returning those acknowledged; a failure must be `Unavailable`.
/// Writes the leases of `range` in order; a write that fails with `Unavailable` is tried again
/// after 50 ms for as long as `retry_for` since the first failure allows. Every attempt must
/// answer within the timeout. Returns the acknowledged leases and how many attempts failed.
async fn write(
    store: &EtcdDirectory,
    range: std::ops::Range<u32>,
    retry_for: Duration,
) -> (Vec<u32>, usize) {
    let (mut acked, mut failed) = (Vec::new(), 0);
    let mut first_failure = None;
    for i in range {
        loop {
            let start = Instant::now();
            let out = store.store_lease(&lease(i)).await;
            let took = start.elapsed();
            assert!(
                took < Duration::from_millis(TIMEOUT_MS + 1_000),
                "write {i} took {took:?}, past the {TIMEOUT_MS} ms timeout"
            );
            match out {
                Ok(()) => {
                    acked.push(i);
                    break;
                }
                Err(OrbitError::Unavailable(e)) => {
                    eprintln!("write {i}: {e}");
                    failed += 1;
                    let since = *first_failure.get_or_insert_with(Instant::now);
                    if since.elapsed() >= retry_for {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("write {i}: expected Ok or Unavailable, got {e:?}"),
            }
        }
    }
    (acked, failed)
}

async fn assert_readable(store: &EtcdDirectory, acked: &[u32]) {
    for &i in acked {
        let got = store.get_lease(&reference(i)).await.unwrap();
        assert_eq!(
            got.map(|l| l.node_id),
            Some(node(i % 7)),
            "acknowledged write {i} is gone"
        );
    }
}

#[test]
fn acknowledged_writes_survive_member_loss_and_quorum_loss_is_a_timely_error() {
    let mut cluster = LocalCluster::start(3).expect("start a 3-member etcd cluster");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = EtcdConfig {
            endpoints: cluster.endpoints(),
            key_prefix: "/orbit-cluster/".into(),
            request_timeout_ms: TIMEOUT_MS,
            connect_timeout_ms: 1_000,
            read_attempts: 1,
            ..EtcdConfig::default()
        };
        leader(&cluster, &[0, 1, 2]).await; // the first election is over
        let clock = std::sync::Arc::new(ManualClock::new(T0));
        let store = EtcdDirectory::connect(&config, clock).await.unwrap();

        let (mut acked, failed) = write(&store, 0..100, Duration::ZERO).await;
        assert_eq!(
            (acked.len(), failed),
            (100, 0),
            "a healthy cluster takes every write"
        );

        // The leader dies mid-stream.
        let first = leader(&cluster, &[0, 1, 2]).await;
        cluster.kill(first).unwrap();
        let start = Instant::now();
        let (more, failed) = write(&store, 100..300, Duration::from_secs(20)).await;
        eprintln!(
            "after the leader's death: {} acknowledged in {:?}, {failed} attempts Unavailable",
            more.len(),
            start.elapsed()
        );
        assert_eq!(
            more.len(),
            200,
            "writes must continue on two members once they elect a leader (within 20 s)"
        );
        acked.extend(more);
        assert_readable(&store, &acked).await;

        // A second member dies: no quorum.
        let live: Vec<usize> = (0..3).filter(|&i| i != first).collect();
        cluster.kill(live[0]).unwrap();
        let start = Instant::now();
        let err = store.store_lease(&lease(1_000)).await.unwrap_err();
        let write_took = start.elapsed();
        assert!(matches!(err, OrbitError::Unavailable(_)), "{err:?}");
        let start = Instant::now();
        let read = store.get_lease(&reference(0)).await;
        let read_took = start.elapsed();
        assert!(matches!(read, Err(OrbitError::Unavailable(_))), "{read:?}");
        let limit = Duration::from_millis(TIMEOUT_MS + 1_000);
        assert!(
            write_took < limit && read_took < limit,
            "{write_took:?} / {read_took:?}"
        );
        eprintln!("without quorum: write failed in {write_took:?}, read in {read_took:?}: {err}");

        // Both come back; the cluster serves again, and has lost nothing.
        cluster.restart(first).unwrap();
        cluster.restart(live[0]).unwrap();
        let start = Instant::now();
        loop {
            match store.store_lease(&lease(1_001)).await {
                Ok(()) => break,
                Err(OrbitError::Unavailable(_)) if start.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the restored cluster still fails: {e:?}"),
            }
        }
        eprintln!("writes again {:?} after the restart", start.elapsed());
        assert_readable(&store, &acked).await;
        assert_eq!(store.metrics().await.lease_count, acked.len() as u64 + 1);
    });
}
