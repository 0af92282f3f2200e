//! Following a store's change feed in the cases: reading events, replaying them onto a map,
//! and what revisions a backend's events may have.

use std::collections::BTreeMap;
use std::time::Duration;

use orbit_persistence_core::{
    AddressableLease, AddressableReference, LeaseEvent, LeaseEventKind, LeaseSnapshot, LeaseWatch,
};

use crate::Backend;
use crate::fixtures::Ctx;

/// How long a case waits for an event it is owed before it fails.
pub const OWED: Duration = Duration::from_secs(20);
/// How long without an event means the feed has nothing more (for backends whose revisions
/// other writers share, where the last revision is not known).
pub const QUIET: Duration = Duration::from_millis(300);

/// The next `n` events of `watch`; fails on an error or a wait over [`OWED`].
pub async fn take(watch: &mut LeaseWatch, n: usize) -> Vec<LeaseEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(OWED, watch.next()).await {
            Ok(Some(Ok(event))) => out.push(event),
            Ok(other) => panic!("after {} of {n} events: {other:?}", out.len()),
            Err(_) => panic!("after {} of {n} events: nothing for {OWED:?}", out.len()),
        }
    }
    out
}

/// Events of `watch` until none comes for [`QUIET`].
pub async fn drain(watch: &mut LeaseWatch) -> Vec<LeaseEvent> {
    let mut out = Vec::new();
    while let Ok(next) = tokio::time::timeout(QUIET, watch.next()).await {
        match next {
            Some(Ok(event)) => out.push(event),
            other => panic!("after {} events: {other:?}", out.len()),
        }
    }
    out
}

/// `events` applied in order to `base`.
pub fn replay(
    mut base: BTreeMap<AddressableReference, AddressableLease>,
    events: &[LeaseEvent],
) -> BTreeMap<AddressableReference, AddressableLease> {
    for e in events {
        match e.kind {
            LeaseEventKind::Put => base.insert(e.reference().clone(), e.lease.clone()),
            _ => base.remove(e.reference()),
        };
    }
    base
}

/// The store's leases now, as a map, from `snapshot_leases`.
pub async fn contents(ctx: &Ctx) -> BTreeMap<AddressableReference, AddressableLease> {
    let snapshot = ctx.store.snapshot_leases().await.unwrap();
    snapshot
        .leases
        .into_iter()
        .map(|l| (l.reference.clone(), l))
        .collect()
}

/// Whether the store's revisions are its own (one per change), not a cluster's that other
/// clients move too (etcd: one per transaction, shared by its changes and by other
/// directories on the cluster).
pub fn own_revisions(b: Backend) -> bool {
    b.capabilities.exclusive || !b.capabilities.durable
}

/// Replays `watch` (started after `from.revision`) onto `from`'s leases up to `to`, a later
/// snapshot of the same store with no write since, and checks the result equals `to`'s
/// leases. With `exact` revisions (the store's own) it reads up to `to.revision`; otherwise
/// (etcd: revisions shared with other writers, the number of events owed unknown, and history
/// that may take a moment to start flowing), and when `to.revision` has no event (RocksDB: a
/// revision taken and lost in a crash), until the replay equals `to` and the feed is quiet.
pub async fn replay_to(
    watch: &mut LeaseWatch,
    from: &LeaseSnapshot,
    to: &LeaseSnapshot,
    exact: bool,
) -> Result<(), String> {
    let map = |leases: &[AddressableLease]| -> BTreeMap<_, _> {
        leases
            .iter()
            .map(|l| (l.reference.clone(), l.clone()))
            .collect()
    };
    let (mut replayed, expected) = (map(&from.leases), map(&to.leases));
    let (mut last, mut events) = (from.revision, 0usize);
    // Done at `to.revision` (exact), or when the replay equals `to` and nothing more comes (a
    // revision lost in a crash has no event, so it may never be reached).
    while !(exact && last >= to.revision) {
        let equal = replayed == expected;
        let wait = if equal { QUIET } else { OWED };
        match tokio::time::timeout(wait, watch.next()).await {
            Ok(Some(Ok(event))) => {
                last = event.revision;
                replayed = replay(replayed, std::slice::from_ref(&event));
                events += 1;
            }
            Err(_) if equal => break,
            other => {
                return Err(format!(
                    "after {events} events from revision {} (up to {}), the replay holds {} \
                     leases, the store {}: {other:?}",
                    from.revision,
                    to.revision,
                    replayed.len(),
                    expected.len()
                ));
            }
        }
    }
    if replayed != expected {
        return Err(format!(
            "{events} events from revision {} replay to {} leases, the store holds {}",
            from.revision,
            replayed.len(),
            expected.len()
        ));
    }
    Ok(())
}
