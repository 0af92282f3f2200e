//! Expiry by the injected clock, and cleanup through the expiry index.

use orbit_persistence_core::{AddressableLease, Renew, Timestamp};

use crate::Backend;
use crate::fixtures::{Ctx, TTL_MS, node, reference};

/// `get_lease` returns an expired lease until cleanup removes it.
pub async fn expired_lease_is_still_returned_by_get(b: Backend) {
    let ctx = Ctx::new(b).await;
    let stored = ctx.put(&ctx.lease(1, 1)).await;
    ctx.advance(TTL_MS);
    let got = ctx
        .get(&reference(1))
        .await
        .expect("expired lease vanished before cleanup");
    assert_eq!(got, stored);
    assert!(got.is_expired(ctx.now()));
}

async fn put_with_ttl(ctx: &Ctx, i: u32, n: u32, ttl: u64) -> AddressableLease {
    let mut l = ctx.lease(i, n);
    l.expires_at.0 = ctx.now().0 + ttl;
    l.renew_at = l.expires_at;
    ctx.put(&l).await
}

/// Cleanup removes exactly the leases with `expires_at <= now` and reports that count.
pub async fn cleanup_removes_exactly_the_expired(b: Backend) {
    let ctx = Ctx::new(b).await;
    for i in 0..30 {
        put_with_ttl(&ctx, i, i % 3, 1_000 + u64::from(i % 3) * 1_000).await;
    }
    ctx.advance(2_000); // ttl 1000 and 2000 expire (<= now); 3000 does not.
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 20);
    for i in 0..30 {
        let present = ctx.get(&reference(i)).await.is_some();
        assert_eq!(present, i % 3 == 2, "lease {i}");
    }
}

/// A second cleanup with nothing new expired removes nothing.
pub async fn cleanup_is_idempotent(b: Backend) {
    let ctx = Ctx::new(b).await;
    for i in 0..10 {
        put_with_ttl(&ctx, i, 0, 100).await;
    }
    put_with_ttl(&ctx, 10, 0, 100_000).await;
    ctx.advance(500);
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 10);
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 0);
    assert!(ctx.get(&reference(10)).await.is_some());
}

/// A renewed lease is judged by its new expiry, not the old one left behind in the index.
pub async fn cleanup_follows_renewals(b: Backend) {
    let ctx = Ctx::new(b).await;
    let stored = put_with_ttl(&ctx, 1, 1, 1_000).await;
    let mut longer = ctx.lease(2, 1);
    longer.expires_at.0 = ctx.now().0 + 50_000;
    let upserted = ctx.put(&longer).await;
    let now = ctx.now();
    let renewed = ctx
        .store
        .renew_lease(
            &reference(1),
            &node(1),
            stored.revision,
            now.saturating_add(std::time::Duration::from_secs(60)),
            now,
        )
        .await
        .unwrap();
    assert!(matches!(renewed, Renew::Renewed(_)), "{renewed:?}");
    // Shorten reference 2 by upsert: its old, later expiry must not keep it alive.
    let mut shorter = upserted.clone();
    shorter.expires_at.0 = ctx.now().0 + 500;
    shorter.renew_at = shorter.expires_at;
    ctx.put(&shorter).await;
    ctx.advance(2_000);
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 1);
    assert!(
        ctx.get(&reference(1)).await.is_some(),
        "renewed lease was cleaned up"
    );
    assert!(
        ctx.get(&reference(2)).await.is_none(),
        "shortened lease survived cleanup"
    );
}

/// Leases removed by cleanup leave the node index too.
pub async fn cleanup_clears_node_index(b: Backend) {
    let ctx = Ctx::new(b).await;
    put_with_ttl(&ctx, 1, 7, 100).await;
    put_with_ttl(&ctx, 2, 7, 100_000).await;
    ctx.advance(100);
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 1);
    assert_eq!(ctx.listed(&node(7)).await, vec![reference(2)]);
}

/// Cleanup of many leases (more than any sane internal batch) is exact.
pub async fn cleanup_of_many_is_exact(b: Backend) {
    let ctx = Ctx::new(b).await;
    let now = ctx.now();
    let batch: Vec<_> = (0..6_000u32)
        .map(|i| {
            let mut l = ctx.lease(i, i % 10);
            l.expires_at.0 = now.0
                + if i % 6 == 0 {
                    50_000
                } else {
                    1 + u64::from(i % 500)
                };
            l.renew_at = l.expires_at;
            l
        })
        .collect();
    ctx.store.store_leases(&batch).await.unwrap();
    ctx.advance(1_000);
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 5_000);
    assert_eq!(ctx.listed(&node(0)).await.len(), 200);
    assert_eq!(ctx.store.metrics().await.lease_count, 1_000);
}

/// Many leases expiring at one instant (a node that died holding them) are all removed by one
/// cleanup; the ones expiring a moment later stay. Their expiry-index keys share everything
/// up to the references, which a backend scanning its index by key ranges must cope with.
pub async fn cleanup_of_many_expiring_at_once(b: Backend) {
    let ctx = Ctx::new(b).await;
    let at = Timestamp(ctx.now().0 + 10);
    let batch: Vec<_> = (0..3_500u32)
        .map(|i| {
            let mut l = ctx.lease(i, i % 3);
            l.expires_at = Timestamp(at.0 + u64::from(i >= 3_000));
            l.renew_at = at;
            l
        })
        .collect();
    ctx.store.store_leases(&batch).await.unwrap();
    // More than a page of any sane backend's scan on one node.
    assert_eq!(ctx.listed(&node(0)).await.len(), 1_167);
    ctx.advance(10);
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 3_000);
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 0);
    assert_eq!(ctx.store.metrics().await.lease_count, 500);
    let survivor = ctx.store.get_lease(&reference(3_000)).await.unwrap();
    assert_eq!(survivor.map(|l| l.expires_at), Some(Timestamp(at.0 + 1)));
    assert_eq!(ctx.store.get_lease(&reference(2_999)).await.unwrap(), None);
    assert_eq!(ctx.listed(&node(0)).await.len(), 167);
}
