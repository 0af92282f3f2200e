//! The change feed: `watch`, `current_revision` and `snapshot_leases`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orbit_persistence_core::{Acquire, LeaseEvent, LeaseEventKind, OrbitError, Renew};

use crate::Backend;
use crate::fixtures::{Ctx, node, reference};
use crate::follow::{OWED, QUIET, contents, drain, own_revisions, replay, take};

/// Revisions never go back; on a store with its own revisions, they go up by one per event.
fn check_revisions(b: Backend, events: &[LeaseEvent]) {
    for pair in events.windows(2) {
        let (a, z) = (pair[0].revision, pair[1].revision);
        if own_revisions(b) {
            assert_eq!(z, a + 1, "a gap or a duplicate: {:?}", &pair);
        } else {
            assert!(z >= a, "out of order: {:?}", &pair);
        }
    }
}

/// Every kind of write arrives as its event, in order, with the lease it concerns (a removal
/// with the last lease), and replaying the events gives the store's contents.
pub async fn watch_sees_every_change_with_its_kind(b: Backend) {
    let ctx = Ctx::new(b).await;
    let start = ctx.store.current_revision().await.unwrap();
    let mut watch = ctx.store.watch(start).await.unwrap();
    let s = &ctx.store;
    for i in 1..=3 {
        ctx.put(&ctx.lease(i, 1 + i / 3)).await;
    }
    s.store_leases(&[ctx.lease(4, 2), ctx.lease(5, 2)])
        .await
        .unwrap();
    let Acquire::Acquired(held) = s.acquire_lease(&ctx.lease(6, 1)).await.unwrap() else {
        panic!("acquire of a free reference failed");
    };
    let later = ctx.now().saturating_add(Duration::from_secs(60));
    let Renew::Renewed(renewed) = s
        .renew_lease(&reference(6), &node(1), held.revision, later, later)
        .await
        .unwrap()
    else {
        panic!("renew by the owner failed");
    };
    assert!(
        s.release_lease(&reference(6), &node(1), renewed.revision)
            .await
            .unwrap()
    );
    assert!(s.remove_lease(&reference(1)).await.unwrap());
    let mut short = ctx.lease(7, 1);
    short.expires_at.0 = ctx.now().0 + 5;
    short.renew_at = short.expires_at;
    ctx.put(&short).await;
    ctx.advance(5);
    assert_eq!(s.cleanup_expired_leases().await.unwrap(), 1);
    assert_eq!(s.remove_node_leases(&node(2)).await.unwrap(), 3);

    let events = take(&mut watch, 14).await;
    check_revisions(b, &events);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    use LeaseEventKind::*;
    assert_eq!(
        kinds,
        [
            Put, Put, Put, Put, Put, Put, Put, Released, Removed, Put, Expired, Evicted, Evicted,
            Evicted
        ]
    );
    assert_eq!(
        events[5].lease, held,
        "the acquire's event is the acquired lease"
    );
    assert_eq!(events[6].lease, renewed);
    assert_eq!(events[7].lease, renewed, "a release carries the last lease");
    assert_eq!(events[8].lease.node_id, node(1));
    let mut evicted: Vec<_> = events[11..].iter().map(|e| e.reference().clone()).collect();
    let mut expected = vec![reference(3), reference(4), reference(5)];
    evicted.sort();
    expected.sort();
    assert_eq!(evicted, expected);
    for e in &events {
        if e.kind == Put {
            assert_eq!(
                e.lease.revision, e.revision,
                "a put's lease has its revision"
            );
        } else {
            assert!(
                e.lease.revision < e.revision,
                "a removal's lease is the one before it"
            );
        }
    }
    assert!(events[0].revision > start);
    assert_eq!(replay(BTreeMap::new(), &events), contents(&ctx).await);
}

/// Eight writers at once: the watcher sees every change exactly once, in revision order, and
/// replaying what it saw onto the snapshot it started from gives the store's contents.
pub async fn watch_under_concurrent_writers_has_no_gap(b: Backend) {
    let ctx = Ctx::new(b).await;
    for i in 0..20 {
        ctx.put(&ctx.lease(100_000 + i, 0)).await;
    }
    let snapshot = ctx.store.snapshot_leases().await.unwrap();
    let mut watch = ctx.store.watch(snapshot.revision).await.unwrap();
    let writers: Vec<_> = (0..8u32)
        .map(|w| {
            let store = Arc::clone(&ctx.store);
            let leases: Vec<_> = (0..40u32).map(|i| ctx.lease(w * 1_000 + i, w)).collect();
            tokio::spawn(async move {
                for l in &leases {
                    store.store_lease(l).await.unwrap();
                }
                for l in leases.iter().step_by(4) {
                    assert!(store.remove_lease(&l.reference).await.unwrap());
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let events = take(&mut watch, 8 * 50).await;
    check_revisions(b, &events);
    assert!(events[0].revision > snapshot.revision);
    let base = snapshot
        .leases
        .into_iter()
        .map(|l| (l.reference.clone(), l))
        .collect();
    assert_eq!(replay(base, &events), contents(&ctx).await);
    assert!(drain(&mut watch).await.is_empty(), "an event nobody wrote");
}

/// A watcher that drops its watch and comes back with the last revision it saw gets exactly
/// the rest: nothing twice, nothing missing.
pub async fn watch_resumes_after_the_last_revision_seen(b: Backend) {
    let ctx = Ctx::new(b).await;
    let start = ctx.store.current_revision().await.unwrap();
    for i in 0..20 {
        ctx.put(&ctx.lease(i, i % 3)).await;
    }
    let mut first = ctx.store.watch(start).await.unwrap();
    let seen = take(&mut first, 7).await;
    drop(first);
    for i in 20..30 {
        ctx.put(&ctx.lease(i, i % 3)).await;
    }
    let last = seen.last().unwrap().revision;
    let mut again = ctx.store.watch(last).await.unwrap();
    let rest = take(&mut again, 23).await;
    let mut whole = ctx.store.watch(start).await.unwrap();
    let all = take(&mut whole, 30).await;
    assert_eq!([seen, rest].concat(), all);
}

/// A watch from a revision not written yet waits for it and starts right after it.
pub async fn watch_from_a_future_revision_waits_for_it(b: Backend) {
    let ctx = Ctx::new(b).await;
    let now = ctx.store.current_revision().await.unwrap();
    let mut watch = ctx.store.watch(now + 3).await.unwrap();
    let early = tokio::time::timeout(QUIET, watch.next()).await;
    assert!(early.is_err(), "an event before any write: {early:?}");
    for i in 0..5 {
        ctx.put(&ctx.lease(i, 0)).await;
    }
    if own_revisions(b) {
        let events = take(&mut watch, 2).await;
        let refs: Vec<_> = events.iter().map(|e| e.reference().clone()).collect();
        assert_eq!(refs, [reference(3), reference(4)]);
        assert_eq!(events[0].revision, now + 4);
    } else {
        for e in drain(&mut watch).await {
            assert!(e.revision > now + 3, "{e:?}");
        }
    }
}

/// Shutting the store down ends every watch with `Closed`; a watch after it is `Closed`.
pub async fn watch_ends_with_closed_at_shutdown(b: Backend) {
    let ctx = Ctx::new(b).await;
    ctx.put(&ctx.lease(1, 0)).await;
    let now = ctx.store.current_revision().await.unwrap();
    let mut watch = ctx.store.watch(now).await.unwrap();
    let waiting = tokio::spawn(async move {
        let first = watch.next().await;
        (first, watch.next().await)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    ctx.store.shutdown().await.unwrap();
    let (first, after) = tokio::time::timeout(OWED, waiting)
        .await
        .expect("a watch outlived the store")
        .unwrap();
    assert!(matches!(first, Some(Err(OrbitError::Closed))), "{first:?}");
    assert!(after.is_none(), "the watch went on after Closed: {after:?}");
    assert!(matches!(
        ctx.store.watch(now).await,
        Err(OrbitError::Closed)
    ));
}

/// The history survives a reopen: a watch from the start after it sees every change before
/// it, then the new ones, with revisions that go on from where they were.
pub async fn watch_history_survives_reopen(b: Backend) {
    let mut ctx = Ctx::new(b).await;
    let start = ctx.store.current_revision().await.unwrap();
    for i in 0..10 {
        ctx.put(&ctx.lease(i, 0)).await;
    }
    assert!(ctx.store.remove_lease(&reference(3)).await.unwrap());
    ctx.reopen().await;
    ctx.put(&ctx.lease(10, 0)).await;
    let mut watch = ctx.store.watch(start).await.unwrap();
    let events = take(&mut watch, 12).await;
    check_revisions(b, &events);
    assert_eq!(events[10].kind, LeaseEventKind::Removed);
    assert_eq!(events[11].reference(), &reference(10));
    assert_eq!(replay(BTreeMap::new(), &events), contents(&ctx).await);
}

/// With a history of `history` changes, a watch from before it is `Compacted`, naming the
/// oldest revision to watch from; watching from there works. (Generated by
/// [`crate::watch_history_cases!`] for a backend opened with that small a history.)
pub async fn watch_past_the_history_is_compacted(b: Backend, history: u64) {
    let ctx = Ctx::new(b).await;
    let start = ctx.store.current_revision().await.unwrap();
    let n = history as u32 + 50;
    let leases: Vec<_> = (0..n).map(|i| ctx.lease(i, i % 4)).collect();
    for chunk in leases.chunks(100) {
        ctx.store.store_leases(chunk).await.unwrap();
    }
    let mut watch = ctx.store.watch(start).await.unwrap();
    let oldest = match watch.next().await {
        Some(Err(OrbitError::Compacted { requested, oldest })) => {
            assert_eq!(requested, start);
            oldest
        }
        other => panic!("a watch from before the history: {other:?}"),
    };
    assert!(
        watch.next().await.is_none(),
        "the watch went on after Compacted"
    );
    let now = ctx.store.current_revision().await.unwrap();
    assert!(
        oldest >= start + 50 && oldest < now,
        "oldest {oldest} of {start}..{now}"
    );
    let mut resumed = ctx.store.watch(oldest).await.unwrap();
    let events = take(&mut resumed, (now - oldest) as usize).await;
    assert_eq!(events[0].revision, oldest + 1);
    assert_eq!(events.last().unwrap().reference(), &reference(n - 1));
}

/// A watch of a store whose feed is off (`watch_history = 0`) is refused with `Config`.
pub async fn watch_without_history_is_a_config_error(b: Backend) {
    let ctx = Ctx::new(b).await;
    let err = ctx.store.watch(0).await.unwrap_err();
    assert!(matches!(err, OrbitError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("watch_history"), "{err}");
}
