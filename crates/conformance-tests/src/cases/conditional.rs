//! acquire, renew and release: the compare-and-set operations a cluster relies on.

use std::sync::Arc;
use std::time::Duration;

use orbit_persistence_core::{Acquire, AddressableLease, Renew};

use crate::Backend;
use crate::fixtures::{Ctx, TTL_MS, node, reference, without_revision};

async fn acquire(ctx: &Ctx, lease: &AddressableLease) -> Acquire {
    ctx.store
        .acquire_lease(lease)
        .await
        .expect("acquire_lease failed")
}

fn acquired(a: Acquire) -> AddressableLease {
    match a {
        Acquire::Acquired(l) => l,
        Acquire::Held(h) => panic!("expected Acquired, got Held({h:?})"),
    }
}

/// Acquiring a free reference stores the lease with a new revision and returns it.
pub async fn acquire_absent_acquires(b: Backend) {
    let ctx = Ctx::new(b).await;
    let want = ctx.lease(1, 1);
    let got = acquired(acquire(&ctx, &want).await);
    assert!(got.revision > 0);
    assert_eq!(without_revision(got.clone()), want);
    assert_eq!(ctx.get(&reference(1)).await, Some(got));
    assert_eq!(ctx.listed(&node(1)).await, vec![reference(1)]);
}

/// Acquiring a held, unexpired lease changes nothing and returns the holder.
pub async fn acquire_held_returns_holder(b: Backend) {
    let ctx = Ctx::new(b).await;
    let holder = acquired(acquire(&ctx, &ctx.lease(1, 1)).await);
    ctx.advance(TTL_MS - 1);
    let mut rival = ctx.lease(1, 2);
    rival.expires_at.0 += 1;
    assert_eq!(acquire(&ctx, &rival).await, Acquire::Held(holder.clone()));
    assert_eq!(ctx.get(&reference(1)).await, Some(holder));
    assert!(ctx.listed(&node(2)).await.is_empty());
}

/// An expired lease is free: a new owner takes it over, with a larger revision.
pub async fn acquire_expired_takes_over(b: Backend) {
    let ctx = Ctx::new(b).await;
    let old = acquired(acquire(&ctx, &ctx.lease(1, 1)).await);
    ctx.advance(TTL_MS);
    let new = acquired(acquire(&ctx, &ctx.lease(1, 2)).await);
    assert_eq!(new.node_id, node(2));
    assert!(new.revision > old.revision);
    assert!(
        ctx.listed(&node(1)).await.is_empty(),
        "old owner still indexed"
    );
    assert_eq!(ctx.listed(&node(2)).await, vec![reference(1)]);
    // The old owner's fencing token is dead.
    let renew = ctx
        .store
        .renew_lease(
            &reference(1),
            &node(1),
            old.revision,
            ctx.now().saturating_add(Duration::from_secs(5)),
            ctx.now(),
        )
        .await
        .unwrap();
    assert_eq!(renew, Renew::Lost(Some(new)));
}

/// Many tasks acquire the same reference at once: exactly one wins, every loser sees the winner.
pub async fn racing_acquirers_exactly_one_wins(b: Backend) {
    let ctx = Arc::new(Ctx::new(b).await);
    for round in 0..40u32 {
        let tasks: Vec<_> = (0..8u32)
            .map(|t| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let lease = ctx.lease(round, t);
                    ctx.store
                        .acquire_lease(&lease)
                        .await
                        .expect("acquire failed")
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut held = Vec::new();
        for t in tasks {
            match t.await.expect("task panicked") {
                Acquire::Acquired(l) => winners.push(l),
                Acquire::Held(l) => held.push(l),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        for h in held {
            assert_eq!(h, winners[0], "round {round}: a loser saw another holder");
        }
        assert_eq!(ctx.get(&reference(round)).await.as_ref(), Some(&winners[0]));
    }
}

/// The owner renews with its revision: new expiry, new revision, index updated.
pub async fn renew_by_owner_extends(b: Backend) {
    let ctx = Ctx::new(b).await;
    let l = acquired(acquire(&ctx, &ctx.lease(1, 1)).await);
    ctx.advance(TTL_MS / 2);
    let expires = ctx.now().saturating_add(Duration::from_millis(TTL_MS));
    let renewed = match ctx
        .store
        .renew_lease(&reference(1), &node(1), l.revision, expires, ctx.now())
        .await
        .unwrap()
    {
        Renew::Renewed(r) => r,
        lost => panic!("owner lost its lease: {lost:?}"),
    };
    assert_eq!(renewed.expires_at, expires);
    assert_eq!(renewed.renew_at, ctx.now());
    assert!(renewed.revision > l.revision);
    assert_eq!(ctx.get(&reference(1)).await, Some(renewed));
    ctx.advance(TTL_MS / 2 + 1); // past the original expiry, before the renewed one
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 0);
    assert!(matches!(
        acquire(&ctx, &ctx.lease(1, 2)).await,
        Acquire::Held(_)
    ));
}

/// Renewing with a revision that is no longer current loses and overwrites nothing.
pub async fn renew_with_stale_revision_loses(b: Backend) {
    let ctx = Ctx::new(b).await;
    let first = acquired(acquire(&ctx, &ctx.lease(1, 1)).await);
    let expires = ctx.now().saturating_add(Duration::from_secs(60));
    let second = match ctx
        .store
        .renew_lease(&reference(1), &node(1), first.revision, expires, ctx.now())
        .await
        .unwrap()
    {
        Renew::Renewed(r) => r,
        lost => panic!("{lost:?}"),
    };
    let stale = ctx
        .store
        .renew_lease(
            &reference(1),
            &node(1),
            first.revision,
            expires.saturating_add(Duration::from_secs(1)),
            ctx.now(),
        )
        .await
        .unwrap();
    assert_eq!(stale, Renew::Lost(Some(second.clone())));
    assert_eq!(ctx.get(&reference(1)).await, Some(second));
}

/// Another node cannot renew a lease even with the right revision.
pub async fn renew_by_other_node_loses(b: Backend) {
    let ctx = Ctx::new(b).await;
    let l = acquired(acquire(&ctx, &ctx.lease(1, 1)).await);
    let out = ctx
        .store
        .renew_lease(
            &reference(1),
            &node(2),
            l.revision,
            ctx.now().saturating_add(Duration::from_secs(60)),
            ctx.now(),
        )
        .await
        .unwrap();
    assert_eq!(out, Renew::Lost(Some(l.clone())));
    assert_eq!(ctx.get(&reference(1)).await, Some(l));
}

/// Renewing a lease that does not exist answers `Lost(None)` and creates nothing.
pub async fn renew_absent_is_lost(b: Backend) {
    let ctx = Ctx::new(b).await;
    let out = ctx
        .store
        .renew_lease(
            &reference(9),
            &node(1),
            1,
            ctx.now().saturating_add(Duration::from_secs(60)),
            ctx.now(),
        )
        .await
        .unwrap();
    assert_eq!(out, Renew::Lost(None));
    assert_eq!(ctx.get(&reference(9)).await, None);
}

/// The owner releases its lease: gone from the lease table and the node index.
pub async fn release_by_owner_removes(b: Backend) {
    let ctx = Ctx::new(b).await;
    let l = acquired(acquire(&ctx, &ctx.lease(1, 1)).await);
    assert!(
        ctx.store
            .release_lease(&reference(1), &node(1), l.revision)
            .await
            .unwrap()
    );
    assert_eq!(ctx.get(&reference(1)).await, None);
    assert!(ctx.listed(&node(1)).await.is_empty());
    assert!(
        !ctx.store
            .release_lease(&reference(1), &node(1), l.revision)
            .await
            .unwrap()
    );
    // Free again: anyone can acquire.
    acquired(acquire(&ctx, &ctx.lease(1, 2)).await);
}

/// A stale revision or another node cannot release a lease.
pub async fn release_with_stale_revision_keeps_lease(b: Backend) {
    let ctx = Ctx::new(b).await;
    let old = acquired(acquire(&ctx, &ctx.lease(1, 1)).await);
    let current = ctx.put(&ctx.lease(1, 1)).await;
    assert!(
        !ctx.store
            .release_lease(&reference(1), &node(1), old.revision)
            .await
            .unwrap()
    );
    assert!(
        !ctx.store
            .release_lease(&reference(1), &node(2), current.revision)
            .await
            .unwrap()
    );
    assert_eq!(ctx.get(&reference(1)).await, Some(current));
}

/// Every write gets a revision larger than any before it, whatever the operation (the leases
/// of one `store_leases` batch may share one).
pub async fn revisions_strictly_increase(b: Backend) {
    let ctx = Ctx::new(b).await;
    let mut last = 0;
    let mut check = |rev: u64, what: &str| {
        assert!(rev > last, "{what}: revision {rev} not above {last}");
        last = rev;
    };
    for i in 0..5 {
        check(ctx.put(&ctx.lease(i, 0)).await.revision, "store");
    }
    let a = acquired(acquire(&ctx, &ctx.lease(10, 0)).await);
    check(a.revision, "acquire");
    if let Renew::Renewed(r) = ctx
        .store
        .renew_lease(
            &reference(10),
            &node(0),
            a.revision,
            ctx.now().saturating_add(Duration::from_secs(30)),
            ctx.now(),
        )
        .await
        .unwrap()
    {
        check(r.revision, "renew");
    } else {
        panic!("renew lost");
    }
    ctx.store.remove_lease(&reference(0)).await.unwrap();
    ctx.store
        .store_leases(&[ctx.lease(20, 1), ctx.lease(21, 1)])
        .await
        .unwrap();
    // A batch may commit as one write (an etcd transaction has one revision), so its leases
    // may share a revision; both are above every earlier write and below every later one.
    let r20 = ctx.get(&reference(20)).await.unwrap().revision;
    let r21 = ctx.get(&reference(21)).await.unwrap().revision;
    check(r20.min(r21), "batch");
    if r20 != r21 {
        check(r20.max(r21), "batch");
    }
    check(
        ctx.put(&ctx.lease(1, 3)).await.revision,
        "upsert after batch",
    );
    let metrics_rev = ctx.store.metrics().await.last_revision;
    assert!(
        metrics_rev >= last,
        "metrics.last_revision {metrics_rev} < {last}"
    );
}
