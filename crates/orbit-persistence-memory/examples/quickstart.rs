//! Quick start: store, acquire, renew, list and clean up leases on the default (memory) backend.
//!
//! `cargo run -p orbit-persistence-memory --example quickstart`

use std::sync::Arc;
use std::time::Duration;

use orbit_persistence_core::{
    Acquire, AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, Key,
    ManualClock, NodeId, OrbitResult, PersistenceConfig, PersistenceProvider, Renew, Timestamp,
};
use orbit_persistence_memory::MemoryDirectory;

#[tokio::main]
async fn main() -> OrbitResult<()> {
    // The config a file holding only `backend = "memory"` gives; the manual clock lets the demo
    // jump forward in time instead of sleeping.
    let config = PersistenceConfig::from_toml_str("backend = \"memory\"")?;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let store = MemoryDirectory::new(&config.memory_or_default(), clock.clone())?;
    store.initialize().await?;

    let node_a = NodeId::new("node-a", "demo");
    let node_b = NodeId::new("node-b", "demo");
    let ttl = Duration::from_secs(30);
    let lease_for = |i: u32, node: &NodeId| {
        let now = clock.now();
        AddressableLease::new(
            AddressableReference::new("Greeter", Key::string(format!("greeter-{i}"))),
            node.clone(),
            now.saturating_add(ttl),
            now.saturating_add(ttl / 2),
        )
    };

    // Node A registers 100 actors in one atomic batch.
    let batch: Vec<_> = (0..100).map(|i| lease_for(i, &node_a)).collect();
    store.store_leases(&batch).await?;
    println!("stored {} leases for {}", batch.len(), node_a.key);

    // Node B tries to take greeter-7: held by A, so B is told who owns it.
    match store.acquire_lease(&lease_for(7, &node_b)).await? {
        Acquire::Held(holder) => println!(
            "greeter-7 is held by {} (revision {})",
            holder.node_id.key, holder.revision
        ),
        Acquire::Acquired(_) => unreachable!("the lease is held"),
    }

    // Node B acquires a free actor, then renews it with its fencing token.
    let Acquire::Acquired(mine) = store.acquire_lease(&lease_for(1_000, &node_b)).await? else {
        unreachable!("greeter-1000 is free");
    };
    clock.advance(Duration::from_secs(20));
    let now = clock.now();
    if let Renew::Renewed(renewed) = store
        .renew_lease(
            &mine.reference,
            &node_b,
            mine.revision,
            now.saturating_add(ttl),
            now.saturating_add(ttl / 2),
        )
        .await?
    {
        println!(
            "node-b renewed greeter-1000: revision {} -> {}",
            mine.revision, renewed.revision
        );
    }

    println!(
        "node-a hosts {} actors",
        store.list_node_leases(&node_a).await?.len()
    );
    println!(
        "node-b hosts {} actors",
        store.list_node_leases(&node_b).await?.len()
    );

    // 15 s later A's leases have expired (A stopped renewing); B's renewed lease has not.
    clock.advance(Duration::from_secs(15));
    let removed = store.cleanup_expired_leases().await?;
    println!("cleanup removed {removed} expired leases");
    println!(
        "node-a hosts {} actors",
        store.list_node_leases(&node_a).await?.len()
    );
    println!(
        "node-b hosts {} actors",
        store.list_node_leases(&node_b).await?.len()
    );

    let m = store.metrics().await;
    println!(
        "metrics: {} leases, {} writes, {} reads, last revision {}",
        m.lease_count, m.writes, m.reads, m.last_revision
    );
    store.shutdown().await
}
