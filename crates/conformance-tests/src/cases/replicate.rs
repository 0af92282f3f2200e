//! `replicate`: a copy loaded with `restore_leases` follows its source's change feed verbatim,
//! as a live migration catches its target up.

use std::time::Duration;

use orbit_persistence_core::{LeaseEvent, LeaseEventKind, OrbitError, Renew};

use crate::Backend;
use crate::fixtures::{Ctx, node, reference};
use crate::follow::{contents, own_revisions, take};

/// Every kind of change (store, acquire, renew, release, remove, cleanup, eviction) replicated
/// into a copy of the source's snapshot leaves the copy equal to the source: the same leases
/// with the same revisions, the same revision counter, and the same change events. A batch
/// that skips a revision, starts anywhere but the copy's next revision, or removes a lease the
/// copy does not hold is refused with nothing written. etcd assigns revisions itself: `Config`.
pub async fn replicate_continues_a_copy_with_its_sources_history(b: Backend) {
    let source = Ctx::new(b).await;
    let preload: Vec<_> = (0..30).map(|i| source.lease(i, i % 3)).collect();
    source.store.store_leases(&preload).await.unwrap();
    let start = source.store.snapshot_leases().await.unwrap();
    let r = start.revision;
    let mut watch = source.store.watch(r).await.unwrap();

    // One of each change kind, some of them on the same lease.
    let renewed = source.get(&reference(0)).await.unwrap();
    let later = renewed.expires_at.saturating_add(Duration::from_millis(10));
    let Renew::Renewed(renewed) = source
        .store
        .renew_lease(
            &renewed.reference,
            &renewed.node_id,
            renewed.revision,
            later,
            later,
        )
        .await
        .unwrap()
    else {
        panic!("the owner's renew failed");
    };
    assert!(
        source
            .store
            .release_lease(&renewed.reference, &renewed.node_id, renewed.revision)
            .await
            .unwrap()
    );
    source
        .store
        .acquire_lease(&source.lease(100, 4))
        .await
        .unwrap();
    assert!(source.store.remove_lease(&reference(1)).await.unwrap());
    assert_eq!(source.store.remove_node_leases(&node(2)).await.unwrap(), 10);
    let short = crate::fixtures::lease_at(reference(101), node(5), source.now(), 10);
    source.put(&short).await;
    source.put(&source.lease(3, 1)).await;
    source.advance(20);
    assert_eq!(source.store.cleanup_expired_leases().await.unwrap(), 1);
    source.store.store_lease(&source.lease(0, 4)).await.unwrap();
    let now = source.store.current_revision().await.unwrap();
    if !own_revisions(b) {
        let events = take(&mut watch, 1).await;
        let target = Ctx::new(b).await;
        assert!(matches!(
            target.store.replicate(&events).await,
            Err(OrbitError::Config(_))
        ));
        return;
    }
    let events = take(&mut watch, (now - r) as usize).await;
    for kind in [
        LeaseEventKind::Put,
        LeaseEventKind::Released,
        LeaseEventKind::Removed,
        LeaseEventKind::Evicted,
        LeaseEventKind::Expired,
    ] {
        assert!(events.iter().any(|e| e.kind == kind), "no {kind:?} event");
    }

    let target = Ctx::new(b).await;
    target.store.restore_leases(&start.leases, r).await.unwrap();
    let mut copied = target.store.watch(r).await.unwrap();
    let loaded = contents(&target).await;
    // Refused, nothing written: a gap at the start, a gap inside, a removal of a lease the
    // copy does not hold, and a put whose lease lost its revision.
    let mut gap_inside = events[..3].to_vec();
    gap_inside.remove(1);
    let missing = LeaseEvent {
        revision: r + 1,
        kind: LeaseEventKind::Removed,
        lease: source.lease(900, 1),
    };
    let mut wrong_revision = events[..1].to_vec();
    wrong_revision[0].lease.revision += 1;
    for bad in [
        events[1..].to_vec(),
        gap_inside,
        vec![missing],
        wrong_revision,
    ] {
        match target.store.replicate(&bad).await {
            Err(OrbitError::InvalidInput(_)) => {}
            other => panic!("{}: a bad batch {bad:?}: {other:?}", b.name),
        }
        assert_eq!(target.store.current_revision().await.unwrap(), r);
        assert_eq!(contents(&target).await, loaded);
    }

    // In two batches, split inside the changes of one lease.
    let (head, tail) = events.split_at(3);
    target.store.replicate(head).await.unwrap();
    target.store.replicate(tail).await.unwrap();
    target.store.replicate(&[]).await.unwrap();
    assert_eq!(contents(&target).await, contents(&source).await);
    assert_eq!(target.store.current_revision().await.unwrap(), now);
    assert_eq!(take(&mut copied, events.len()).await, events);
    // A fencing token of the source still renews on the copy, and the next is the source's next.
    let held = target.get(&reference(0)).await.unwrap();
    let Renew::Renewed(after) = target
        .store
        .renew_lease(&held.reference, &held.node_id, held.revision, later, later)
        .await
        .unwrap()
    else {
        panic!("a replicated revision must renew");
    };
    assert_eq!(after.revision, now + 1);
    assert_eq!(target.listed(&node(2)).await, source.listed(&node(2)).await);
}
