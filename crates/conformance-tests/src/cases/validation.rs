//! Bad input is rejected with `InvalidInput` before anything changes.

use std::time::Duration;

use orbit_persistence_core::{
    AddressableLease, AddressableReference, Key, NodeId, OrbitError, OrbitResult,
};

use crate::Backend;
use crate::fixtures::{Ctx, node, reference};

fn assert_invalid<T: std::fmt::Debug>(what: &str, r: OrbitResult<T>) {
    match r {
        Err(OrbitError::InvalidInput(msg)) => assert!(!msg.is_empty(), "{what}: empty message"),
        other => panic!("{what}: expected InvalidInput, got {other:?}"),
    }
}

/// Every way a lease can break the limits of docs/contract.md#limits.
/// The base lease is reference `i` on node 1.
pub fn invalid_leases(ctx: &Ctx, i: u32) -> Vec<(&'static str, AddressableLease)> {
    let base = ctx.lease(i, 1);
    let with = |f: &dyn Fn(&mut AddressableLease)| {
        let mut l = base.clone();
        f(&mut l);
        l
    };
    vec![
        (
            "empty type",
            with(&|l| l.reference.addressable_type.clear()),
        ),
        (
            "type of 257 bytes",
            with(&|l| l.reference.addressable_type = "t".repeat(257)),
        ),
        (
            "string key of 1025 bytes",
            with(&|l| l.reference.key = Key::string("k".repeat(1025))),
        ),
        ("empty node key", with(&|l| l.node_id.key.clear())),
        ("empty namespace", with(&|l| l.node_id.namespace.clear())),
        (
            "node key of 257 bytes",
            with(&|l| l.node_id.key = "n".repeat(257)),
        ),
        (
            "namespace of 257 bytes",
            with(&|l| l.node_id.namespace = "n".repeat(257)),
        ),
        (
            "renew_at after expires_at",
            with(&|l| l.renew_at.0 = l.expires_at.0 + 1),
        ),
        (
            "already expired",
            with(&|l| {
                l.expires_at = ctx.now();
                l.renew_at = ctx.now();
            }),
        ),
    ]
}

async fn assert_unchanged(ctx: &Ctx, before: &AddressableLease) {
    assert_eq!(
        ctx.get(&before.reference).await.as_ref(),
        Some(before),
        "a rejected write changed the store"
    );
    assert_eq!(ctx.listed(&node(1)).await, vec![before.reference.clone()]);
    assert_eq!(ctx.store.metrics().await.lease_count, 1);
}

/// `store_lease` and `store_leases` reject every invalid lease.
pub async fn invalid_store_inputs_are_rejected(b: Backend) {
    let ctx = Ctx::new(b).await;
    let before = ctx.put(&ctx.lease(1, 1)).await;
    for (what, bad) in invalid_leases(&ctx, 1) {
        assert_invalid(what, ctx.store.store_lease(&bad).await);
        assert_invalid(what, ctx.store.store_leases(&[bad]).await);
    }
    assert_unchanged(&ctx, &before).await;
}

/// `acquire_lease` rejects every invalid lease for a free reference.
pub async fn invalid_acquire_inputs_are_rejected(b: Backend) {
    let ctx = Ctx::new(b).await;
    let before = ctx.put(&ctx.lease(1, 1)).await;
    for (what, bad) in invalid_leases(&ctx, 2) {
        assert_invalid(what, ctx.store.acquire_lease(&bad).await);
    }
    assert_unchanged(&ctx, &before).await;
}

/// `renew_lease` and `release_lease` reject bad references, owners and times.
pub async fn invalid_renew_inputs_are_rejected(b: Backend) {
    let ctx = Ctx::new(b).await;
    let before = ctx.put(&ctx.lease(1, 1)).await;
    let (rev, now) = (before.revision, ctx.now());
    let later = now.saturating_add(Duration::from_secs(60));
    let r = reference(1);
    let s = &ctx.store;
    assert_invalid(
        "renew_at after expires_at",
        s.renew_lease(
            &r,
            &node(1),
            rev,
            now.saturating_add(Duration::from_secs(1)),
            later,
        )
        .await,
    );
    assert_invalid(
        "expires in the past",
        s.renew_lease(
            &r,
            &node(1),
            rev,
            now.saturating_sub(Duration::from_secs(1)),
            now.saturating_sub(Duration::from_secs(2)),
        )
        .await,
    );
    assert_invalid(
        "expires now",
        s.renew_lease(&r, &node(1), rev, now, now).await,
    );
    assert_invalid(
        "empty owner",
        s.renew_lease(&r, &NodeId::new("", "orbit"), rev, later, now)
            .await,
    );
    let bad_ref = AddressableReference::new("", Key::string("x"));
    assert_invalid(
        "renew empty type",
        s.renew_lease(&bad_ref, &node(1), rev, later, now).await,
    );
    assert_invalid(
        "release empty type",
        s.release_lease(&bad_ref, &node(1), rev).await,
    );
    assert_invalid(
        "release long owner",
        s.release_lease(&r, &NodeId::new("n".repeat(300), "orbit"), rev)
            .await,
    );
    assert_unchanged(&ctx, &before).await;
}

/// Reads and removes reject references and nodes outside the limits.
pub async fn invalid_read_inputs_are_rejected(b: Backend) {
    let ctx = Ctx::new(b).await;
    let before = ctx.put(&ctx.lease(1, 1)).await;
    let long = AddressableReference::new("T", Key::string("k".repeat(1025)));
    let empty = AddressableReference::new("", Key::NoKey);
    assert_invalid("get long key", ctx.store.get_lease(&long).await);
    assert_invalid("get empty type", ctx.store.get_lease(&empty).await);
    assert_invalid("remove empty type", ctx.store.remove_lease(&empty).await);
    assert_invalid(
        "list empty node",
        ctx.store.list_node_leases(&NodeId::new("", "orbit")).await,
    );
    assert_invalid(
        "list empty namespace",
        ctx.store.list_node_leases(&NodeId::new("n", "")).await,
    );
    assert_unchanged(&ctx, &before).await;
}
