//! `remove_node_leases`: evicting a dead node's leases through the node index.

use std::sync::Arc;

use orbit_persistence_core::{NodeId, OrbitError, Timestamp};

use crate::Backend;
use crate::fixtures::{Ctx, node, reference};

/// Eviction removes exactly the node's leases (expired ones included) with their index
/// entries: the other nodes' leases and listings stay, and a later cleanup finds no expiry
/// entry of an evicted lease.
pub async fn remove_node_removes_exactly_that_node(b: Backend) {
    let ctx = Ctx::new(b).await;
    for i in 0..30 {
        ctx.put(&ctx.lease(i, i % 3)).await;
    }
    // One expired lease on the evicted node, one on a node that stays.
    let mut stale = ctx.lease(30, 1);
    stale.expires_at = Timestamp(ctx.now().0 + 5);
    stale.renew_at = stale.expires_at;
    ctx.put(&stale).await;
    let mut stale_kept = ctx.lease(31, 2);
    stale_kept.expires_at = stale.expires_at;
    stale_kept.renew_at = stale.expires_at;
    ctx.put(&stale_kept).await;
    let before = [ctx.listed(&node(0)).await, ctx.listed(&node(2)).await];

    assert_eq!(ctx.store.remove_node_leases(&node(1)).await.unwrap(), 11);
    for i in 0..32 {
        let on_evicted = (i < 30 && i % 3 == 1) || i == 30;
        assert_eq!(
            ctx.get(&reference(i)).await.is_none(),
            on_evicted,
            "lease {i}"
        );
    }
    assert!(ctx.listed(&node(1)).await.is_empty());
    assert_eq!(
        [ctx.listed(&node(0)).await, ctx.listed(&node(2)).await],
        before
    );
    assert_eq!(ctx.store.metrics().await.lease_count, 21);
    ctx.advance(10);
    assert_eq!(
        ctx.store.cleanup_expired_leases().await.unwrap(),
        1,
        "only the kept node's expired lease is left to clean"
    );
    assert_eq!(ctx.store.remove_node_leases(&node(1)).await.unwrap(), 0);
}

/// A node without leases (also one whose name or namespace is a prefix of a node that has
/// some) evicts nothing, and writes nothing: the next write takes the next revision.
pub async fn remove_unknown_node_removes_nothing(b: Backend) {
    let ctx = Ctx::new(b).await;
    let mut l = ctx.lease(1, 0);
    l.node_id = NodeId::new("node-10", "orbit");
    let first = ctx.put(&l).await;
    for unknown in [node(1), NodeId::new("node-10", "orbi"), node(99)] {
        assert_eq!(ctx.store.remove_node_leases(&unknown).await.unwrap(), 0);
    }
    let second = ctx.put(&ctx.lease(2, 0)).await;
    assert_eq!(ctx.get(&reference(1)).await, Some(first.clone()));
    // A store with a revision counter of its own (not a shared etcd cluster's).
    if b.capabilities.exclusive || !b.capabilities.durable {
        assert_eq!(
            second.revision,
            first.revision + 1,
            "an eviction of nothing took a revision"
        );
    }
}

/// More leases than any sane batch or scan page, on one node, beside the same node name in
/// another namespace: all of them go, in several batches, and nothing else does. Every
/// removal is a write: revisions after it are above every revision before.
pub async fn remove_node_of_many_is_exact(b: Backend) {
    let ctx = Ctx::new(b).await;
    let other_ns = NodeId::new("node-0", "orbit-other");
    let leases: Vec<_> = (0..3_500u32)
        .map(|i| {
            let mut l = ctx.lease(i, 0);
            if i % 5 == 4 {
                l.node_id = other_ns.clone();
            }
            l
        })
        .collect();
    ctx.store.store_leases(&leases).await.unwrap();
    let last_before = ctx.get(&reference(3_499)).await.unwrap().revision;

    assert_eq!(ctx.store.remove_node_leases(&node(0)).await.unwrap(), 2_800);
    assert!(ctx.listed(&node(0)).await.is_empty());
    assert_eq!(ctx.listed(&other_ns).await.len(), 700);
    assert_eq!(ctx.store.metrics().await.lease_count, 700);
    assert_eq!(ctx.get(&reference(0)).await, None);
    assert!(ctx.get(&reference(4)).await.is_some());
    let after = ctx.put(&ctx.lease(9_999, 1)).await;
    assert!(
        after.revision > last_before,
        "{} <= {last_before}",
        after.revision
    );
}

/// While other nodes keep acquiring and renewing, evicting one node removes its leases and
/// touches no lease of another node.
pub async fn remove_node_under_concurrent_writers(b: Backend) {
    let ctx = Ctx::new(b).await;
    let doomed: Vec<_> = (0..2_000u32).map(|i| ctx.lease(i, 0)).collect();
    ctx.store.store_leases(&doomed).await.unwrap();
    let writers: Vec<_> = (1..=4u32)
        .map(|w| {
            let store = Arc::clone(&ctx.store);
            let leases: Vec<_> = (0..50u32).map(|i| ctx.lease(10_000 * w + i, w)).collect();
            tokio::spawn(async move {
                for round in 0..3 {
                    for l in &leases {
                        let mut l = l.clone();
                        l.renew_at.0 += round;
                        store.store_lease(&l).await.unwrap();
                    }
                }
                leases.len()
            })
        })
        .collect();
    let evicted = ctx.store.remove_node_leases(&node(0)).await.unwrap();
    for w in writers {
        assert_eq!(w.await.unwrap(), 50);
    }
    assert_eq!(evicted, 2_000);
    assert!(ctx.listed(&node(0)).await.is_empty());
    for w in 1..=4 {
        assert_eq!(ctx.listed(&node(w)).await.len(), 50, "node {w}");
    }
    assert_eq!(ctx.store.metrics().await.lease_count, 200);
}

/// An invalid node is refused before anything changes.
pub async fn remove_node_rejects_an_invalid_node(b: Backend) {
    let ctx = Ctx::new(b).await;
    ctx.put(&ctx.lease(1, 0)).await;
    for bad in [
        NodeId::new("", "orbit"),
        NodeId::new("x".repeat(100_000), "orbit"),
    ] {
        let err = ctx.store.remove_node_leases(&bad).await.unwrap_err();
        assert!(matches!(err, OrbitError::InvalidInput(_)), "{err:?}");
    }
    assert!(ctx.get(&reference(1)).await.is_some());
}

/// An eviction is durable: after a reopen the node's leases are still gone, its index is
/// empty, and the others are intact.
pub async fn eviction_survives_reopen(b: Backend) {
    let mut ctx = Ctx::new(b).await;
    let leases: Vec<_> = (0..1_500u32).map(|i| ctx.lease(i, i % 2)).collect();
    ctx.store.store_leases(&leases).await.unwrap();
    assert_eq!(ctx.store.remove_node_leases(&node(0)).await.unwrap(), 750);
    let kept = ctx.listed(&node(1)).await;
    ctx.reopen().await;
    assert!(ctx.listed(&node(0)).await.is_empty());
    assert_eq!(ctx.listed(&node(1)).await, kept);
    assert_eq!(ctx.store.metrics().await.lease_count, 750);
    assert_eq!(ctx.get(&reference(0)).await, None);
}
