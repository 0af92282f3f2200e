//! Concurrency, shutdown, health and metrics.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orbit_persistence_core::{Acquire, OrbitError, ProviderHealth, Renew, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Backend;
use crate::fixtures::{Ctx, node, reference};

/// 16 tasks storing distinct leases at once: every write lands, indexes included.
pub async fn concurrent_writers_all_land(b: Backend) {
    let ctx = Arc::new(Ctx::new(b).await);
    let tasks: Vec<_> = (0..16u32)
        .map(|t| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                for i in 0..40u32 {
                    ctx.store
                        .store_lease(&ctx.lease(t * 1000 + i, t))
                        .await
                        .expect("store failed");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer panicked");
    }
    let mut revisions = HashSet::new();
    for t in 0..16u32 {
        assert_eq!(ctx.listed(&node(t)).await.len(), 40, "node {t}");
        for i in 0..40u32 {
            let l = ctx
                .get(&reference(t * 1000 + i))
                .await
                .expect("acknowledged write missing");
            assert!(
                revisions.insert(l.revision),
                "revision {} given twice",
                l.revision
            );
        }
    }
    assert_eq!(ctx.store.metrics().await.lease_count, 640);
}

#[derive(Debug, Clone)]
struct Grant {
    owner: u32,
    revision: u64,
    expires_at: Timestamp,
    /// Clock reading after the call returned: the store decided at or before this.
    decided_by: Timestamp,
    /// For a renewal, the revision the caller presented.
    renewed_from: Option<u64>,
}

/// Eight nodes fight over a few references with acquire, renew and release while the clock
/// moves. Checked afterwards, per reference in revision order: a renewal always continues the
/// grant it named, and a new owner only ever took over a lease that was released or expired.
pub async fn contended_owners_never_overlap(b: Backend) {
    const REFS: u32 = 12;
    const TTL: u64 = 40;
    let ctx = Arc::new(Ctx::new(b).await);
    let grants: Arc<Mutex<BTreeMap<u32, Vec<Grant>>>> = Arc::default();
    let released: Arc<Mutex<HashSet<(u32, u64)>>> = Arc::default();
    let tasks: Vec<_> = (0..8u32)
        .map(|owner| {
            let (ctx, grants, released) = (ctx.clone(), grants.clone(), released.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(u64::from(owner) + 7);
                let mut mine: BTreeMap<u32, u64> = BTreeMap::new();
                for _ in 0..250 {
                    if owner == 0 {
                        ctx.advance(rng.random_range(0..6));
                    }
                    let i = rng.random_range(0..REFS);
                    let expires_at = Timestamp(ctx.now().0 + TTL);
                    let record = |g: Grant| grants.lock().unwrap().entry(i).or_default().push(g);
                    match (mine.get(&i).copied(), rng.random_range(0..3)) {
                        (Some(rev), 0) => {
                            let out = ctx
                                .store
                                .renew_lease(
                                    &reference(i),
                                    &node(owner),
                                    rev,
                                    expires_at,
                                    expires_at,
                                )
                                .await;
                            match out {
                                Ok(Renew::Renewed(l)) => {
                                    mine.insert(i, l.revision);
                                    record(Grant {
                                        owner,
                                        revision: l.revision,
                                        expires_at: l.expires_at,
                                        decided_by: ctx.now(),
                                        renewed_from: Some(rev),
                                    });
                                }
                                Ok(Renew::Lost(_)) => {
                                    mine.remove(&i);
                                }
                                // The clock moved past expires_at between reading and calling.
                                Err(OrbitError::InvalidInput(_)) => {}
                                Err(e) => panic!("renew failed: {e}"),
                            }
                        }
                        (Some(rev), 1) => {
                            if ctx
                                .store
                                .release_lease(&reference(i), &node(owner), rev)
                                .await
                                .expect("release failed")
                            {
                                released.lock().unwrap().insert((i, rev));
                            }
                            mine.remove(&i);
                        }
                        _ => {
                            let mut lease = ctx.lease(i, owner);
                            lease.expires_at = expires_at;
                            lease.renew_at = expires_at;
                            match ctx.store.acquire_lease(&lease).await {
                                Ok(Acquire::Acquired(l)) => {
                                    mine.insert(i, l.revision);
                                    record(Grant {
                                        owner,
                                        revision: l.revision,
                                        expires_at: l.expires_at,
                                        decided_by: ctx.now(),
                                        renewed_from: None,
                                    });
                                }
                                Ok(Acquire::Held(h)) => {
                                    // Held means unexpired when decided, which was after we read the clock.
                                    let asked_at =
                                        expires_at.saturating_sub(Duration::from_millis(TTL));
                                    assert!(
                                        h.expires_at > asked_at,
                                        "acquire answered Held with an expired lease: {h:?}"
                                    );
                                }
                                Err(OrbitError::InvalidInput(_)) => {}
                                Err(e) => panic!("acquire failed: {e}"),
                            }
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("contender panicked");
    }
    let grants = grants.lock().unwrap();
    let released = released.lock().unwrap();
    let mut total = 0;
    for (i, list) in grants.iter() {
        let mut list = list.clone();
        list.sort_by_key(|g| g.revision);
        total += list.len();
        for pair in list.windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            assert!(
                next.revision > prev.revision,
                "ref {i}: revision reused: {pair:?}"
            );
            match next.renewed_from {
                Some(from) => assert!(
                    from == prev.revision && next.owner == prev.owner,
                    "ref {i}: renewal did not continue the latest grant: {pair:?}"
                ),
                None => assert!(
                    released.contains(&(*i, prev.revision)) || next.decided_by >= prev.expires_at,
                    "ref {i}: two owners at once: {pair:?}"
                ),
            }
        }
    }
    assert!(
        total > 100,
        "too few grants ({total}) for the check to mean anything"
    );
}

/// After `shutdown`, every operation answers `Closed`.
pub async fn operations_after_shutdown_are_closed(b: Backend) {
    let ctx = Ctx::new(b).await;
    let l = ctx.put(&ctx.lease(1, 1)).await;
    ctx.store.shutdown().await.expect("shutdown failed");
    let closed = |what: &str, e: Option<OrbitError>| {
        assert!(
            matches!(e, Some(OrbitError::Closed)),
            "{what} after shutdown: {e:?}"
        );
    };
    closed("get", ctx.store.get_lease(&l.reference).await.err());
    closed("store", ctx.store.store_lease(&ctx.lease(2, 1)).await.err());
    closed(
        "acquire",
        ctx.store.acquire_lease(&ctx.lease(3, 1)).await.err(),
    );
    closed("list", ctx.store.list_node_leases(&node(1)).await.err());
    closed("cleanup", ctx.store.cleanup_expired_leases().await.err());
    assert!(matches!(
        ctx.store.health_check().await,
        ProviderHealth::Unhealthy { .. }
    ));
}

/// Health is `Healthy` on a working store, and the metrics count what happened.
pub async fn health_and_metrics_reflect_the_store(b: Backend) {
    let ctx = Ctx::new(b).await;
    assert_eq!(ctx.store.health_check().await, ProviderHealth::Healthy);
    let batch: Vec<_> = (0..10).map(|i| ctx.lease(i, 0)).collect();
    ctx.store.store_leases(&batch).await.unwrap();
    for i in 0..5 {
        ctx.get(&reference(i)).await;
    }
    ctx.store.remove_lease(&reference(0)).await.unwrap();
    let m = ctx.store.metrics().await;
    assert_eq!(m.lease_count, 9, "{m:?}");
    assert!(m.writes >= 11, "{m:?}");
    assert!(m.reads >= 5, "{m:?}");
    assert!(m.last_revision >= 11, "{m:?}");
    assert!(m.write_latency.count >= 2, "{m:?}");
}
