//! The lease rules every backend applies identically: input limits (checked before any I/O) and
//! the decisions of the conditional operations. A backend owns *how* it stores leases; *whether*
//! a write is allowed is decided here, once.

use std::collections::HashSet;

use crate::error::{OrbitError, OrbitResult};
use crate::feed::{LeaseEvent, LeaseEventKind};
use crate::provider::Renew;
use crate::types::{AddressableLease, AddressableReference, Key, NodeId, Timestamp};

/// Longest `addressable_type`, in bytes.
pub const MAX_TYPE_LEN: usize = 256;
/// Longest string key, in bytes.
pub const MAX_STRING_KEY_LEN: usize = 1024;
/// Longest node key or namespace, in bytes.
pub const MAX_NODE_FIELD_LEN: usize = 256;
/// Most leases in one `store_leases` batch: bounds the memory and log record of one batch.
pub const MAX_BATCH_LEN: usize = 100_000;

fn check_len(field: &str, value: &str, min: usize, max: usize) -> OrbitResult<()> {
    let len = value.len();
    if len < min || len > max {
        return Err(OrbitError::invalid(format!(
            "{field} must be {min}..={max} bytes, got {len}"
        )));
    }
    Ok(())
}

/// Checks the limits of a reference.
pub fn validate_reference(r: &AddressableReference) -> OrbitResult<()> {
    check_len("addressable_type", &r.addressable_type, 1, MAX_TYPE_LEN)?;
    if let Key::StringKey { key } = &r.key {
        check_len("key", key, 0, MAX_STRING_KEY_LEN)?;
    }
    Ok(())
}

/// Checks the limits of a node id.
pub fn validate_node(node: &NodeId) -> OrbitResult<()> {
    check_len("node_id.key", &node.key, 1, MAX_NODE_FIELD_LEN)?;
    check_len("node_id.namespace", &node.namespace, 1, MAX_NODE_FIELD_LEN)
}

/// Checks the timing of a write: `renew_at <= expires_at`, and the lease must not already be
/// expired at `now` (writing a lease nobody holds is a caller bug, not a state to store).
pub fn validate_times(
    expires_at: Timestamp,
    renew_at: Timestamp,
    now: Timestamp,
) -> OrbitResult<()> {
    if renew_at > expires_at {
        return Err(OrbitError::invalid(format!(
            "renew_at ({renew_at}) must not be after expires_at ({expires_at})"
        )));
    }
    if expires_at <= now {
        return Err(OrbitError::invalid(format!(
            "expires_at ({expires_at}) must be after now ({now}): the lease would already be expired"
        )));
    }
    Ok(())
}

/// Checks the arguments of `renew_lease` at `now`.
pub fn validate_renew(
    r: &AddressableReference,
    owner: &NodeId,
    expires_at: Timestamp,
    renew_at: Timestamp,
    now: Timestamp,
) -> OrbitResult<()> {
    validate_reference(r)?;
    validate_node(owner)?;
    validate_times(expires_at, renew_at, now)
}

/// Checks the arguments of `release_lease`.
pub fn validate_release(r: &AddressableReference, owner: &NodeId) -> OrbitResult<()> {
    validate_reference(r)?;
    validate_node(owner)
}

/// Checks everything about a lease about to be written at `now`.
pub fn validate_lease(lease: &AddressableLease, now: Timestamp) -> OrbitResult<()> {
    validate_reference(&lease.reference)?;
    validate_node(&lease.node_id)?;
    validate_times(lease.expires_at, lease.renew_at, now)
}

/// Checks a batch for `store_leases`: every lease valid, no reference twice (the result would
/// depend on order), at most [`MAX_BATCH_LEN`] leases.
pub fn validate_batch(leases: &[AddressableLease], now: Timestamp) -> OrbitResult<()> {
    check_batch("store_leases", "lease {i} of the batch", leases, |lease| {
        validate_lease(lease, now)
    })
}

/// The checks of every batch write `op`: at most [`MAX_BATCH_LEN`] leases, each passing
/// `check`, no reference twice; a lease's error is prefixed with `label` (its `{i}` replaced by
/// the lease's position).
fn check_batch(
    op: &str,
    label: &str,
    leases: &[AddressableLease],
    check: impl Fn(&AddressableLease) -> OrbitResult<()>,
) -> OrbitResult<()> {
    if leases.len() > MAX_BATCH_LEN {
        return Err(OrbitError::invalid(format!(
            "{op} takes at most {MAX_BATCH_LEN} leases per batch, got {}",
            leases.len()
        )));
    }
    let mut seen = HashSet::with_capacity(leases.len());
    for (i, lease) in leases.iter().enumerate() {
        let label = || label.replace("{i}", &i.to_string());
        check(lease).map_err(|e| OrbitError::invalid(format!("{}: {e}", label())))?;
        if !seen.insert(&lease.reference) {
            return Err(OrbitError::invalid(format!(
                "{} repeats reference {:?}",
                label(),
                lease.reference
            )));
        }
    }
    Ok(())
}

/// Checks a batch for `restore_leases` into a store whose revision counter rises to `floor`:
/// at most [`MAX_BATCH_LEN`] leases, each reference and node valid, `renew_at <= expires_at`,
/// a revision in `1..=floor`, and no reference twice. Expired leases are allowed: a backup
/// holds what its store held, cleanup removes them.
pub fn validate_restore(leases: &[AddressableLease], floor: u64) -> OrbitResult<()> {
    check_batch("restore_leases", "restored lease {i}", leases, |lease| {
        validate_reference(&lease.reference)?;
        validate_node(&lease.node_id)?;
        if lease.renew_at > lease.expires_at {
            return Err(OrbitError::invalid(format!(
                "renew_at ({}) must not be after expires_at ({})",
                lease.renew_at, lease.expires_at
            )));
        }
        if lease.revision == 0 || lease.revision > floor {
            return Err(OrbitError::invalid(format!(
                "revision {} is outside 1..={floor}, the revisions of the store restored",
                lease.revision
            )));
        }
        Ok(())
    })
}

/// Whether a restore raising the revision counter to `floor` may write to a store at revision
/// `current`: only if the store has not gone past it, so no revision it handed out is handed
/// out again.
pub fn restore_allowed(current: u64, floor: u64) -> OrbitResult<()> {
    if current > floor {
        return Err(OrbitError::invalid(format!(
            "a restore up to revision {floor} into a store already at revision {current}: \
             restore only into an empty store"
        )));
    }
    Ok(())
}

/// Checks a batch for `replicate`: at most [`MAX_BATCH_LEN`] events, each lease's reference and
/// node valid, revisions consecutive (a local store's change feed has no gaps), and a put's
/// lease carrying its event's revision.
pub fn validate_replicate(events: &[LeaseEvent]) -> OrbitResult<()> {
    if events.len() > MAX_BATCH_LEN {
        return Err(OrbitError::invalid(format!(
            "replicate takes at most {MAX_BATCH_LEN} events per batch, got {}",
            events.len()
        )));
    }
    for (i, event) in events.iter().enumerate() {
        let check = || -> OrbitResult<()> {
            validate_reference(&event.lease.reference)?;
            validate_node(&event.lease.node_id)?;
            if event.kind == LeaseEventKind::Put && event.lease.revision != event.revision {
                return Err(OrbitError::invalid(format!(
                    "a put at revision {} carries a lease of revision {}",
                    event.revision, event.lease.revision
                )));
            }
            if i > 0 && event.revision != events[i - 1].revision + 1 {
                return Err(OrbitError::invalid(format!(
                    "revision {} follows {}: replicated events must be consecutive",
                    event.revision,
                    events[i - 1].revision
                )));
            }
            Ok(())
        };
        check().map_err(|e| OrbitError::invalid(format!("replicated event {i}: {e}")))?;
    }
    Ok(())
}

/// Whether replicated events starting at revision `first` continue a store at revision
/// `current`: only as its very next revision, so the copy's history is the source's.
pub fn replicate_allowed(current: u64, first: u64) -> OrbitResult<()> {
    if first != current + 1 {
        return Err(OrbitError::invalid(format!(
            "replicated events start at revision {first}, but this store is at revision \
             {current}: they must continue it at {}",
            current + 1
        )));
    }
    Ok(())
}

/// The error for a replicated removal of a lease the store does not hold: the copy diverged
/// from its source.
pub fn replicated_removal_missing(reference: &AddressableReference, revision: u64) -> OrbitError {
    OrbitError::invalid(format!(
        "the replicated removal at revision {revision} is of {reference:?}, which this store \
         does not hold: it is not a copy of the events' source"
    ))
}

/// Whether an acquire may write: `Err(current)` when an unexpired lease is held.
pub fn acquire_allowed(
    current: Option<&AddressableLease>,
    now: Timestamp,
) -> Result<(), AddressableLease> {
    match current {
        Some(held) if !held.is_expired(now) => Err(held.clone()),
        _ => Ok(()),
    }
}

/// Whether `(owner, revision)` still owns `current`: the compare of renew and release.
///
/// An expired lease that nobody has taken over may still be renewed or released by its owner:
/// the revision proves that no one acquired it in between, so no second owner can exist.
pub fn owns(current: Option<&AddressableLease>, owner: &NodeId, revision: u64) -> bool {
    matches!(current, Some(l) if l.node_id == *owner && l.revision == revision)
}

/// The decision of a renew: the lease to write (revision still to be set), or the `Lost`
/// answer.
pub fn renew_decision(
    current: Option<&AddressableLease>,
    owner: &NodeId,
    revision: u64,
    expires_at: Timestamp,
    renew_at: Timestamp,
) -> Result<AddressableLease, Renew> {
    match current {
        Some(l) if owns(current, owner, revision) => Ok(AddressableLease {
            expires_at,
            renew_at,
            ..l.clone()
        }),
        _ => Err(Renew::Lost(current.cloned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(expires: u64) -> AddressableLease {
        AddressableLease {
            revision: 7,
            ..AddressableLease::new(
                AddressableReference::new("T", Key::string("k")),
                NodeId::new("n1", "ns"),
                Timestamp(expires),
                Timestamp(expires / 2),
            )
        }
    }

    #[test]
    fn limits_name_the_field() {
        let mut l = lease(100);
        l.reference.addressable_type = String::new();
        assert!(
            validate_lease(&l, Timestamp(0))
                .unwrap_err()
                .to_string()
                .contains("addressable_type")
        );
        let mut l = lease(100);
        l.reference.key = Key::string("x".repeat(MAX_STRING_KEY_LEN + 1));
        assert!(
            validate_lease(&l, Timestamp(0))
                .unwrap_err()
                .to_string()
                .contains("key must be 0..=1024")
        );
        let mut l = lease(100);
        l.reference.key = Key::string("");
        assert!(validate_lease(&l, Timestamp(0)).is_ok());
        let mut l = lease(100);
        l.node_id.namespace = "n".repeat(257);
        assert!(
            validate_lease(&l, Timestamp(0))
                .unwrap_err()
                .to_string()
                .contains("node_id.namespace")
        );
        let mut l = lease(100);
        l.renew_at = Timestamp(101);
        assert!(
            validate_lease(&l, Timestamp(0))
                .unwrap_err()
                .to_string()
                .contains("renew_at")
        );
        assert!(
            validate_lease(&lease(100), Timestamp(100))
                .unwrap_err()
                .to_string()
                .contains("already be expired")
        );
    }

    #[test]
    fn batch_rejects_duplicates_and_names_the_index() {
        let err = validate_batch(&[lease(100), lease(100)], Timestamp(0)).unwrap_err();
        assert!(
            err.to_string().contains("lease 1 of the batch repeats"),
            "{err}"
        );
    }

    #[test]
    fn acquire_and_renew_decisions() {
        let held = lease(100);
        assert_eq!(
            acquire_allowed(Some(&held), Timestamp(99)),
            Err(held.clone())
        );
        assert_eq!(acquire_allowed(Some(&held), Timestamp(100)), Ok(()));
        assert_eq!(acquire_allowed(None, Timestamp(0)), Ok(()));
        let owner = held.node_id.clone();
        assert!(owns(Some(&held), &owner, 7));
        assert!(!owns(Some(&held), &owner, 6));
        assert!(!owns(Some(&held), &NodeId::new("n2", "ns"), 7));
        assert!(!owns(None, &owner, 7));
        let renewed =
            renew_decision(Some(&held), &owner, 7, Timestamp(300), Timestamp(200)).unwrap();
        assert_eq!(
            (renewed.expires_at, renewed.renew_at),
            (Timestamp(300), Timestamp(200))
        );
        assert_eq!(
            renew_decision(Some(&held), &owner, 8, Timestamp(300), Timestamp(200)),
            Err(Renew::Lost(Some(held.clone())))
        );
        assert_eq!(
            renew_decision(None, &owner, 7, Timestamp(300), Timestamp(200)),
            Err(Renew::Lost(None))
        );
    }
}
