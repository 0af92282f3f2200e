//! How cleanup's and a node listing's costs grow with the number of leases, on a fresh local
//! etcd member.
//!
//! `cargo run --release -p orbit-persistence-etcd --example scan_scale -- 100000 300000`
//!
//! For each size `n`, under a prefix of its own: stores `n` leases that all expire at one
//! instant (a node that died holding them: the expiry-index keys differ only in their
//! references) and `n / 10` that expire later, on 4 nodes. It times listing one node (a quarter
//! of the leases), then one `cleanup_expired_leases`. Scans linear in `n` handle about as many
//! leases per second at every size.

use std::sync::Arc;
use std::time::Instant;

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, EtcdConfig, Key,
    ManualClock, NodeId, Timestamp,
};
use orbit_persistence_etcd::EtcdDirectory;
use orbit_persistence_etcd::local_cluster::LocalCluster;

const T0: Timestamp = Timestamp(1_700_000_000_000);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![20_000]
    } else {
        sizes
    };
    let member = LocalCluster::single()?;
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "expired", "listed", "list s", "removed", "cleanup s", "removed/s"
    );
    for n in sizes {
        let clock = Arc::new(ManualClock::new(T0));
        let config = EtcdConfig {
            endpoints: member.endpoints(),
            key_prefix: format!("/cleanup-scale-{n}/"),
            ..EtcdConfig::default()
        };
        let store = EtcdDirectory::connect(&config, clock.clone()).await?;
        let later = n / 10;
        let leases: Vec<AddressableLease> = (0..n + later)
            .map(|i| {
                let expires_at = Timestamp(T0.0 + 60_000 + if i < n { 0 } else { 60_000 });
                AddressableLease::new(
                    AddressableReference::new("Actor", Key::string(format!("actor-{i}"))),
                    NodeId::new(format!("node-{}", i % 4), "orbit"),
                    expires_at,
                    Timestamp(T0.0 + 30_000),
                )
            })
            .collect();
        for chunk in leases.chunks(10_000) {
            store.store_leases(chunk).await?;
        }
        let start = Instant::now();
        let listed = store
            .list_node_leases(&NodeId::new("node-0", "orbit"))
            .await?
            .len();
        let list_seconds = start.elapsed().as_secs_f64();
        assert_eq!(
            listed as u64,
            (n + later).div_ceil(4),
            "node-0 holds every fourth"
        );
        clock.set(Timestamp(T0.0 + 90_000));
        let start = Instant::now();
        let removed = store.cleanup_expired_leases().await?;
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(removed, n, "every expired lease removed, no other");
        println!(
            "{n:>10} {listed:>10} {list_seconds:>10.2} {removed:>10} {seconds:>10.2} {:>10.0}",
            removed as f64 / seconds
        );
    }
    Ok(())
}
