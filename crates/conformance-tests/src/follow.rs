//! Following a store's change feed in the cases: reading events, replaying them onto a map,
//! and what revisions a backend's events may have.

use std::collections::BTreeMap;
use std::time::Duration;

use orbit_persistence_core::{
    AddressableLease, AddressableReference, LeaseEvent, LeaseEventKind, LeaseWatch,
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

/// Replays `watch` onto an empty map until it equals `expected` (each event within
/// [`OWED`]), then what is still coming until the feed is quiet: the whole feed must replay
/// to `expected`. For a backend whose revisions are shared (etcd), where the number of
/// events owed is not known, and whose history may take a moment to start flowing.
pub async fn replay_to(
    watch: &mut LeaseWatch,
    expected: &BTreeMap<AddressableReference, AddressableLease>,
) -> Result<(), String> {
    let mut replayed = BTreeMap::new();
    let mut events = 0usize;
    while replayed != *expected {
        match tokio::time::timeout(OWED, watch.next()).await {
            Ok(Some(Ok(event))) => {
                replayed = replay(replayed, std::slice::from_ref(&event));
                events += 1;
            }
            other => {
                return Err(format!(
                    "after {events} events the replay holds {} leases, the store {}: {other:?}",
                    replayed.len(),
                    expected.len()
                ));
            }
        }
    }
    let rest = drain(watch).await;
    replayed = replay(replayed, &rest);
    if replayed != *expected {
        return Err(format!("{} more events made the replay differ", rest.len()));
    }
    Ok(())
}
