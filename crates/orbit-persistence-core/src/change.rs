//! Lease changes: what every disk backend logs, applies and replays, and the writer-side logic
//! that turns a write request into changes. Written once here so that the COW B+tree and the LSM
//! decide acquire/renew/release identically and share one WAL record format.
//!
//! # WAL record payload (one [`crate::log`] record per request)
//!
//! ```text
//! u8      format version = 1
//! u32 BE  number of changes n
//! n x     change:
//!           u8      kind: 1 = put; a delete by its cause: 2 = removed, 3 = released,
//!                   4 = expired, 5 = evicted; 6 = restored; 7 = revision floor
//!           u32 BE  length of the body
//!           body    put, restored: encoded lease (crate::encoding, includes its revision)
//!                   delete: u64 BE revision, then the encoded reference
//!                   revision floor: u64 BE revision
//! ```
//!
//! All changes of one request (a whole `store_leases` batch, or the removals of one cleanup
//! step) travel in one log record, and a record is atomic under the log's checksum: a torn
//! write can lose a request, never half of one. A delete carries its revision so the revision
//! counter survives a crash that leaves a deletion as the last write, and its cause so the
//! change feed rebuilt by a replay tells a release from an expiry. (Kinds 3-5 came with the
//! change feed; a log written before it has only kind 2, which reads as removed.) Kinds 6 and 7
//! are what a restore writes ([`WriteOp::Restore`]): leases with the revisions they had, no
//! change event, then the revision counter raised to the backup's.
//!
//! # Staging
//!
//! [`ChangeStager`] runs on the group-commit writer thread. It decides each request against the
//! published state (through [`LeaseSource`]) overlaid with everything staged earlier in the same
//! batch, assigns revisions, and pushes the request's record into the batch. After the batch is
//! durable the backend applies [`ChangeStager::take`]'s changes to its structures; on failure it
//! calls [`ChangeStager::abort`].

use std::collections::HashMap;

use crate::encoding::{self, DecodeError};
use crate::error::OrbitResult;
use crate::feed::{LeaseEvent, LeaseEventKind};
use crate::log::LogBatch;
use crate::provider::{Acquire, Renew};
use crate::rules;
use crate::types::{AddressableLease, AddressableReference, NodeId, Timestamp};

const FORMAT_VERSION: u8 = 1;
const KIND_PUT: u8 = 1;
const KIND_RESTORED: u8 = 6;
const KIND_FLOOR: u8 = 7;
/// Smallest encoded change: kind, length, and a revision floor's revision.
const MIN_CHANGE_LEN: usize = 1 + 4 + 8;

/// Why a lease was removed (the change feed's event kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalCause {
    /// `remove_lease`.
    Removed,
    /// `release_lease` by the owner.
    Released,
    /// `cleanup_expired_leases`.
    Expired,
    /// `remove_node_leases`.
    Evicted,
}

impl RemovalCause {
    /// The change kind a delete of this cause is logged with.
    fn kind(self) -> u8 {
        match self {
            RemovalCause::Removed => 2,
            RemovalCause::Released => 3,
            RemovalCause::Expired => 4,
            RemovalCause::Evicted => 5,
        }
    }

    fn from_kind(kind: u8) -> Option<Self> {
        Some(match kind {
            2 => RemovalCause::Removed,
            3 => RemovalCause::Released,
            4 => RemovalCause::Expired,
            5 => RemovalCause::Evicted,
            _ => return None,
        })
    }

    /// The change feed's kind of event for this removal.
    pub fn event_kind(self) -> LeaseEventKind {
        match self {
            RemovalCause::Removed => LeaseEventKind::Removed,
            RemovalCause::Released => LeaseEventKind::Released,
            RemovalCause::Expired => LeaseEventKind::Expired,
            RemovalCause::Evicted => LeaseEventKind::Evicted,
        }
    }

    /// The cause of a removal event of `kind`; `None` for a put.
    pub fn from_event_kind(kind: LeaseEventKind) -> Option<Self> {
        Some(match kind {
            LeaseEventKind::Put => return None,
            LeaseEventKind::Removed => RemovalCause::Removed,
            LeaseEventKind::Released => RemovalCause::Released,
            LeaseEventKind::Expired => RemovalCause::Expired,
            LeaseEventKind::Evicted => RemovalCause::Evicted,
        })
    }
}

/// One durable change of the lease table; the indexes follow from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// Insert or replace the lease (its revision is the one the store assigned).
    Put(AddressableLease),
    /// Insert or replace the lease with the revision it carries, with no change event: a lease
    /// restored from a backup.
    Restored(AddressableLease),
    /// Raise the revision counter to this revision, changing no lease: the end of a restore, so
    /// the store's next revision is above every one the backup's store handed out.
    Floor(u64),
    /// Remove the lease of `reference`; the removal consumed `revision`.
    Delete {
        /// The removed lease's reference.
        reference: AddressableReference,
        /// The revision this removal consumed.
        revision: u64,
        /// Why.
        cause: RemovalCause,
    },
}

impl LeaseChange {
    /// The revision this change consumed.
    pub fn revision(&self) -> u64 {
        match self {
            LeaseChange::Put(l) | LeaseChange::Restored(l) => l.revision,
            LeaseChange::Delete { revision, .. } => *revision,
            LeaseChange::Floor(revision) => *revision,
        }
    }

    /// The change a feed event records: a put of its lease, or a removal with its cause.
    pub fn from_event(event: &LeaseEvent) -> LeaseChange {
        match RemovalCause::from_event_kind(event.kind) {
            None => LeaseChange::Put(event.lease.clone()),
            Some(cause) => LeaseChange::Delete {
                reference: event.lease.reference.clone(),
                revision: event.revision,
                cause,
            },
        }
    }

    /// The reference it changes (none for a revision floor).
    pub fn reference(&self) -> Option<&AddressableReference> {
        match self {
            LeaseChange::Put(l) | LeaseChange::Restored(l) => Some(&l.reference),
            LeaseChange::Delete { reference, .. } => Some(reference),
            LeaseChange::Floor(_) => None,
        }
    }
}

/// Appends the WAL payload of `changes` to `out`.
pub fn encode_changes(changes: &[LeaseChange], out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(changes.len() as u32).to_be_bytes());
    for change in changes {
        let (kind, body) = match change {
            LeaseChange::Put(l) => (KIND_PUT, encoding::encode_lease(l)),
            LeaseChange::Restored(l) => (KIND_RESTORED, encoding::encode_lease(l)),
            LeaseChange::Floor(revision) => (KIND_FLOOR, revision.to_be_bytes().to_vec()),
            LeaseChange::Delete {
                reference,
                revision,
                cause,
            } => {
                let mut body = revision.to_be_bytes().to_vec();
                encoding::put_reference(&mut body, reference);
                (cause.kind(), body)
            }
        };
        out.push(kind);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
    }
}

/// Decodes [`encode_changes`]'s output. Never panics; allocates at most in proportion to the
/// input (the claimed count is checked against the bytes present).
pub fn decode_changes(bytes: &[u8]) -> Result<Vec<LeaseChange>, DecodeError> {
    let err = |offset: usize, detail: String| DecodeError { offset, detail };
    let take = |at: usize, n: usize| -> Result<&[u8], DecodeError> {
        at.checked_add(n)
            .and_then(|end| bytes.get(at..end))
            .ok_or_else(|| err(at, format!("truncated change record: need {n} bytes")))
    };
    let version = take(0, 1)?[0];
    if version != FORMAT_VERSION {
        return Err(err(0, format!("unknown change format version {version}")));
    }
    let count = u32::from_be_bytes(take(1, 4)?.try_into().unwrap_or_default()) as usize;
    if count > (bytes.len() - 5) / MIN_CHANGE_LEN {
        return Err(err(
            1,
            format!("claims {count} changes in {} bytes", bytes.len()),
        ));
    }
    let mut changes = Vec::with_capacity(count);
    let mut at = 5;
    for _ in 0..count {
        let kind = take(at, 1)?[0];
        let len = u32::from_be_bytes(take(at + 1, 4)?.try_into().unwrap_or_default()) as usize;
        let body_at = at + 5;
        let body = take(body_at, len)?;
        let shift = |e: DecodeError| err(body_at + e.offset, e.detail);
        changes.push(match kind {
            KIND_PUT => LeaseChange::Put(encoding::decode_lease(body).map_err(shift)?),
            KIND_RESTORED => LeaseChange::Restored(encoding::decode_lease(body).map_err(shift)?),
            KIND_FLOOR if body.len() == 8 => {
                LeaseChange::Floor(u64::from_be_bytes(body.try_into().unwrap_or_default()))
            }
            kind if body.len() >= 8 && RemovalCause::from_kind(kind).is_some() => {
                let (revision, reference) = body.split_at(8);
                LeaseChange::Delete {
                    revision: u64::from_be_bytes(revision.try_into().unwrap_or_default()),
                    reference: encoding::decode_reference(reference)
                        .map_err(|e| err(body_at + 8 + e.offset, e.detail))?,
                    cause: RemovalCause::from_kind(kind).unwrap_or(RemovalCause::Removed),
                }
            }
            other => {
                return Err(err(
                    at,
                    format!("unknown change kind {other} (length {len})"),
                ));
            }
        });
        at = body_at + len;
    }
    if at != bytes.len() {
        return Err(err(
            at,
            format!("{} trailing bytes after the changes", bytes.len() - at),
        ));
    }
    Ok(changes)
}

/// A write, as the writer thread receives it. Arguments are validated by the provider before
/// submitting (see [`rules`]); `now` is the provider's clock reading at that moment.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// `store_lease` / `store_leases`.
    Store(Vec<AddressableLease>),
    /// `remove_lease`.
    Remove(AddressableReference),
    /// `acquire_lease`.
    Acquire(AddressableLease),
    /// `renew_lease`.
    Renew {
        /// The lease to renew.
        reference: AddressableReference,
        /// Who claims to own it.
        owner: NodeId,
        /// The revision the owner holds.
        revision: u64,
        /// New expiry.
        expires_at: Timestamp,
        /// New renewal time.
        renew_at: Timestamp,
    },
    /// `release_lease`.
    Release {
        /// The lease to release.
        reference: AddressableReference,
        /// Who claims to own it.
        owner: NodeId,
        /// The revision the owner holds.
        revision: u64,
    },
    /// One bounded step of `cleanup_expired_leases`: remove up to `limit` expired leases.
    Cleanup {
        /// Most leases this step removes.
        limit: usize,
    },
    /// `restore_leases`: store the leases with the revisions they carry (no change events), and
    /// raise the revision counter to `revision`. Refused when the store already went past
    /// `revision`, or a lease's revision is above it.
    Restore {
        /// The leases, each with its revision.
        leases: Vec<AddressableLease>,
        /// The revision the counter rises to.
        revision: u64,
    },
    /// `replicate`: another store's changes, verbatim (revisions, causes and change events
    /// included), continuing this store's revisions at the very next one. A removal must find
    /// its lease.
    Replicate(Vec<LeaseChange>),
    /// One bounded step of `remove_node_leases`: remove the leases of `node` among the first
    /// `limit` entries of its node index after `after`.
    Evict {
        /// The node whose leases go.
        node: NodeId,
        /// Where the previous step stopped (its last index entry); `None` for the first step.
        after: Option<AddressableReference>,
        /// Most node-index entries this step reads (and so leases it removes).
        limit: usize,
    },
}

/// A [`WriteOp`] with the clock reading it is judged by.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// What to do.
    pub op: WriteOp,
    /// The provider's clock when the request was made: expiry is judged against it.
    pub now: Timestamp,
}

/// The answer to a [`WriteRequest`], matching its op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The leases were stored.
    Stored,
    /// Whether a lease was removed (remove, release).
    Removed(bool),
    /// The acquire's result.
    Acquire(Acquire),
    /// The renew's result.
    Renew(Renew),
    /// How many expired leases a cleanup step removed.
    Cleaned(u64),
    /// What an eviction step removed, and where the next step starts (`None`: the node's index
    /// had no more entries).
    Evicted {
        /// Leases removed.
        removed: u64,
        /// The last index entry this step read, when it read `limit` of them.
        next: Option<AddressableReference>,
    },
}

impl WriteOutcome {
    /// The lease changes this outcome wrote, for a `batch` of that many leases (a store, a
    /// restore or a replicate): what [`crate::metrics::PersistenceMetrics::writes`] counts.
    pub fn changes(&self, batch: u64) -> u64 {
        match self {
            WriteOutcome::Stored => batch,
            WriteOutcome::Removed(removed) => u64::from(*removed),
            WriteOutcome::Acquire(a) => u64::from(matches!(a, Acquire::Acquired(_))),
            WriteOutcome::Renew(r) => u64::from(matches!(r, Renew::Renewed(_))),
            WriteOutcome::Cleaned(n) => *n,
            WriteOutcome::Evicted { removed, .. } => *removed,
        }
    }
}

/// Read access to the published state, for the writer thread.
pub trait LeaseSource {
    /// The published lease of `r`.
    fn lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>>;
    /// Up to `limit` published leases with `expires_at <= now`, earliest first.
    fn expired(&self, now: Timestamp, limit: usize) -> OrbitResult<Vec<AddressableLease>>;

    /// As [`LeaseSource::expired`], but a source may start after the expiry-index position
    /// `after` (`expires_at`, reference): the stager passes a position below which it knows
    /// nothing expired is left, so a long cleanup does not rescan what its earlier steps
    /// removed (an ordered store would walk their tombstones each time). Ignoring `after`, as
    /// the default does, is always correct.
    fn expired_after(
        &self,
        now: Timestamp,
        after: Option<&(Timestamp, AddressableReference)>,
        limit: usize,
    ) -> OrbitResult<Vec<AddressableLease>> {
        let _ = after;
        self.expired(now, limit)
    }

    /// Up to `limit` references of `node`'s published leases, in reference order, after
    /// `after` (from the first if `None`), through the node index.
    fn node_references(
        &self,
        node: &NodeId,
        after: Option<&AddressableReference>,
        limit: usize,
    ) -> OrbitResult<Vec<AddressableReference>>;
}

/// Stages the put of `lease` with the revision after `*revision`; returns it as stored.
fn put(
    revision: &mut u64,
    changes: &mut Vec<LeaseChange>,
    mut lease: AddressableLease,
) -> AddressableLease {
    *revision += 1;
    lease.revision = *revision;
    changes.push(LeaseChange::Put(lease.clone()));
    lease
}

/// Stages the removal of `reference`, for `cause`, with the revision after `*revision`.
fn delete(
    revision: &mut u64,
    changes: &mut Vec<LeaseChange>,
    reference: AddressableReference,
    cause: RemovalCause,
) {
    *revision += 1;
    changes.push(LeaseChange::Delete {
        reference,
        revision: *revision,
        cause,
    });
}

/// Turns requests into changes on the writer thread; see the module docs.
#[derive(Debug, Default)]
pub struct ChangeStager {
    published_revision: u64,
    next_revision: u64,
    /// The last change staged in this batch for each reference, as an index into `staged`;
    /// built lazily (see [`ChangeStager::index_overlay`]), so a batch of plain stores never
    /// pays for it.
    overlay: HashMap<AddressableReference, usize>,
    /// How many of `staged` are in `overlay`.
    indexed: usize,
    /// `(now, position)`: as of `now`, no expired lease is left at or below this expiry-index
    /// position (a cleanup step removed all of them, in order). It stays true while every
    /// request is judged at `now` or later, because no write may store a lease expiring at or
    /// before its own `now`; a request judged earlier, or a failed batch, drops it.
    cleanup_floor: Option<(Timestamp, (Timestamp, AddressableReference))>,
    staged: Vec<LeaseChange>,
}

impl ChangeStager {
    /// A stager continuing after `last_revision` (0 for a new store; the highest revision found
    /// by recovery otherwise).
    pub fn new(last_revision: u64) -> Self {
        ChangeStager {
            published_revision: last_revision,
            next_revision: last_revision,
            ..ChangeStager::default()
        }
    }

    /// The highest revision staged so far.
    pub fn last_revision(&self) -> u64 {
        self.next_revision
    }

    /// Brings the overlay up to date with every staged change.
    fn index_overlay(&mut self) {
        for (i, change) in self.staged.iter().enumerate().skip(self.indexed) {
            if let Some(r) = change.reference() {
                self.overlay.insert(r.clone(), i);
            }
        }
        self.indexed = self.staged.len();
    }

    /// The state of `r` staged earlier in this batch, if any: `Some(None)` = deleted.
    fn staged_state(&self, r: &AddressableReference) -> Option<Option<AddressableLease>> {
        self.overlay.get(r).map(|&i| match &self.staged[i] {
            LeaseChange::Put(l) | LeaseChange::Restored(l) => Some(l.clone()),
            LeaseChange::Delete { .. } | LeaseChange::Floor(_) => None,
        })
    }

    fn current(
        &mut self,
        source: &dyn LeaseSource,
        r: &AddressableReference,
    ) -> OrbitResult<Option<AddressableLease>> {
        self.index_overlay();
        match self.staged_state(r) {
            Some(staged) => Ok(staged),
            None => source.lease(r),
        }
    }

    /// Decides `req`, and if it changes anything, pushes its one record into `batch` and stages
    /// its changes. On error nothing is staged and the batch is unchanged.
    pub fn stage(
        &mut self,
        source: &dyn LeaseSource,
        req: WriteRequest,
        batch: &mut LogBatch,
    ) -> OrbitResult<WriteOutcome> {
        let mut revision = self.next_revision;
        let mut changes = Vec::new();
        let now = req.now;
        if self.cleanup_floor.as_ref().is_some_and(|(at, _)| now < *at) {
            self.cleanup_floor = None;
        }
        let mut floor = None;
        let outcome = match req.op {
            WriteOp::Restore {
                leases,
                revision: floor,
            } => {
                rules::restore_allowed(revision, floor)?;
                changes.reserve(leases.len() + 1);
                changes.extend(leases.into_iter().map(LeaseChange::Restored));
                if floor > revision {
                    revision = floor;
                    changes.push(LeaseChange::Floor(floor));
                }
                WriteOutcome::Stored
            }
            WriteOp::Replicate(replicated) => {
                if let Some(first) = replicated.first() {
                    rules::replicate_allowed(revision, first.revision())?;
                }
                // What this request itself put or removed, ahead of the published state.
                let mut held: HashMap<AddressableReference, bool> = HashMap::new();
                for change in &replicated {
                    match change {
                        LeaseChange::Delete {
                            reference,
                            revision,
                            ..
                        } => {
                            let present = match held.get(reference) {
                                Some(&present) => present,
                                None => self.current(source, reference)?.is_some(),
                            };
                            if !present {
                                return Err(rules::replicated_removal_missing(
                                    reference, *revision,
                                ));
                            }
                            held.insert(reference.clone(), false);
                        }
                        LeaseChange::Put(lease) | LeaseChange::Restored(lease) => {
                            held.insert(lease.reference.clone(), true);
                        }
                        LeaseChange::Floor(_) => {}
                    }
                }
                revision = replicated.last().map_or(revision, LeaseChange::revision);
                changes = replicated;
                WriteOutcome::Stored
            }
            WriteOp::Store(leases) => {
                changes.reserve(leases.len());
                for mut lease in leases {
                    revision += 1;
                    lease.revision = revision;
                    changes.push(LeaseChange::Put(lease));
                }
                WriteOutcome::Stored
            }
            WriteOp::Acquire(lease) => {
                let current = self.current(source, &lease.reference)?;
                match rules::acquire_allowed(current.as_ref(), now) {
                    Ok(()) => WriteOutcome::Acquire(Acquire::Acquired(put(
                        &mut revision,
                        &mut changes,
                        lease,
                    ))),
                    Err(held) => WriteOutcome::Acquire(Acquire::Held(held)),
                }
            }
            WriteOp::Renew {
                reference,
                owner,
                revision: held,
                expires_at,
                renew_at,
            } => {
                let current = self.current(source, &reference)?;
                match rules::renew_decision(current.as_ref(), &owner, held, expires_at, renew_at) {
                    Ok(lease) => {
                        WriteOutcome::Renew(Renew::Renewed(put(&mut revision, &mut changes, lease)))
                    }
                    Err(lost) => WriteOutcome::Renew(lost),
                }
            }
            WriteOp::Remove(reference) => {
                let exists = self.current(source, &reference)?.is_some();
                if exists {
                    delete(
                        &mut revision,
                        &mut changes,
                        reference,
                        RemovalCause::Removed,
                    );
                }
                WriteOutcome::Removed(exists)
            }
            WriteOp::Release {
                reference,
                owner,
                revision: held,
            } => {
                let current = self.current(source, &reference)?;
                let owned = rules::owns(current.as_ref(), &owner, held);
                if owned {
                    delete(
                        &mut revision,
                        &mut changes,
                        reference,
                        RemovalCause::Released,
                    );
                }
                WriteOutcome::Removed(owned)
            }
            WriteOp::Cleanup { limit } => {
                // Published candidates, re-judged through the overlay, plus leases staged in
                // this batch that are already expired at `now`.
                self.index_overlay();
                let after = self.cleanup_floor.as_ref().map(|(_, position)| position);
                let candidates =
                    source.expired_after(now, after, limit.saturating_add(self.overlay.len()))?;
                let mut expired: Vec<AddressableReference> = Vec::new();
                // The floor moves past what this step removes only when the batch's earlier
                // changes play no part; otherwise it is dropped, to be safe.
                let mut overlay_involved = false;
                let mut last_published = None;
                for lease in candidates {
                    if expired.len() == limit {
                        break;
                    }
                    if self.overlay.contains_key(&lease.reference) {
                        overlay_involved = true;
                    } else {
                        last_published = Some((lease.expires_at, lease.reference.clone()));
                        expired.push(lease.reference);
                    }
                }
                for (r, &i) in &self.overlay {
                    if matches!(&self.staged[i], LeaseChange::Put(l) | LeaseChange::Restored(l)
                        if l.is_expired(now))
                    {
                        overlay_involved = true;
                        expired.push(r.clone());
                    }
                }
                expired.truncate(limit);
                if overlay_involved {
                    floor = Some(None);
                } else if let Some(position) = last_published {
                    floor = Some(Some((now, position)));
                }
                for reference in expired {
                    delete(
                        &mut revision,
                        &mut changes,
                        reference,
                        RemovalCause::Expired,
                    );
                }
                WriteOutcome::Cleaned(changes.len() as u64)
            }
            WriteOp::Evict { node, after, limit } => {
                let candidates = source.node_references(&node, after.as_ref(), limit)?;
                let next = match candidates.len() == limit {
                    true => candidates.last().cloned(),
                    false => None,
                };
                // Re-judged through this batch's earlier changes: a lease moved off the node
                // or removed since it was published stays as it is.
                self.index_overlay();
                for reference in candidates {
                    let on_node = match self.staged_state(&reference) {
                        None => true,
                        Some(staged) => staged.is_some_and(|l| l.node_id == node),
                    };
                    if on_node {
                        delete(
                            &mut revision,
                            &mut changes,
                            reference,
                            RemovalCause::Evicted,
                        );
                    }
                }
                WriteOutcome::Evicted {
                    removed: changes.len() as u64,
                    next,
                }
            }
        };
        if !changes.is_empty() {
            batch.push_with(|buf| {
                encode_changes(&changes, buf);
                Ok(())
            })?;
            self.next_revision = revision;
            self.staged.extend(changes);
        }
        // `Some(new)` replaces the floor; `None` (nothing removed in order) keeps it.
        if let Some(new) = floor {
            self.cleanup_floor = new;
        }
        Ok(outcome)
    }

    /// The batch is durable: hands over its changes, in order, for the backend to apply.
    pub fn take(&mut self) -> Vec<LeaseChange> {
        self.overlay.clear();
        self.indexed = 0;
        self.published_revision = self.next_revision;
        std::mem::take(&mut self.staged)
    }

    /// The batch failed: forgets its changes and the revisions they took.
    pub fn abort(&mut self) {
        self.overlay.clear();
        self.indexed = 0;
        self.cleanup_floor = None;
        self.staged.clear();
        self.next_revision = self.published_revision;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Key;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Map(BTreeMap<AddressableReference, AddressableLease>);

    impl LeaseSource for Map {
        fn lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
            Ok(self.0.get(r).cloned())
        }
        fn expired(&self, now: Timestamp, limit: usize) -> OrbitResult<Vec<AddressableLease>> {
            let mut v: Vec<_> = self
                .0
                .values()
                .filter(|l| l.is_expired(now))
                .cloned()
                .collect();
            v.sort_by_key(|l| l.expires_at);
            v.truncate(limit);
            Ok(v)
        }
        fn node_references(
            &self,
            node: &NodeId,
            after: Option<&AddressableReference>,
            limit: usize,
        ) -> OrbitResult<Vec<AddressableReference>> {
            Ok(self
                .0
                .values()
                .filter(|l| l.node_id == *node && after.is_none_or(|a| l.reference > *a))
                .map(|l| l.reference.clone())
                .take(limit)
                .collect())
        }
    }

    impl Map {
        fn apply(&mut self, changes: Vec<LeaseChange>) {
            for c in changes {
                match c {
                    LeaseChange::Put(l) | LeaseChange::Restored(l) => {
                        self.0.insert(l.reference.clone(), l)
                    }
                    LeaseChange::Delete { reference, .. } => self.0.remove(&reference),
                    LeaseChange::Floor(_) => None,
                };
            }
        }
    }

    fn lease(i: u32, node: &str, expires: u64) -> AddressableLease {
        AddressableLease::new(
            AddressableReference::new("T", Key::Int32Key { key: i as i32 }),
            NodeId::new(node, "ns"),
            Timestamp(expires),
            Timestamp(expires),
        )
    }

    fn req(op: WriteOp, now: u64) -> WriteRequest {
        WriteRequest {
            op,
            now: Timestamp(now),
        }
    }

    #[test]
    fn a_restore_keeps_revisions_raises_the_counter_and_is_refused_past_it() {
        let (mut map, mut stager, mut batch) =
            (Map::default(), ChangeStager::new(0), LogBatch::new());
        let mut a = lease(1, "a", 10);
        a.revision = 7;
        let mut b = lease(2, "b", 10);
        b.revision = 3;
        let restore = WriteOp::Restore {
            leases: vec![a.clone(), b.clone()],
            revision: 20,
        };
        assert_eq!(
            stager.stage(&map, req(restore, 0), &mut batch).unwrap(),
            WriteOutcome::Stored
        );
        assert_eq!(stager.last_revision(), 20);
        let changes = stager.take();
        assert_eq!(
            changes,
            vec![
                LeaseChange::Restored(a.clone()),
                LeaseChange::Restored(b.clone()),
                LeaseChange::Floor(20),
            ]
        );
        // The WAL record round-trips both new kinds.
        let mut bytes = Vec::new();
        encode_changes(&changes, &mut bytes);
        assert_eq!(decode_changes(&bytes).unwrap(), changes);
        map.apply(changes);
        assert_eq!(map.0.len(), 2);
        // The next write is above the floor; a restore below the counter is refused, staging
        // nothing.
        let out = stager
            .stage(
                &map,
                req(WriteOp::Acquire(lease(3, "a", 10)), 0),
                &mut batch,
            )
            .unwrap();
        assert!(matches!(out, WriteOutcome::Acquire(Acquire::Acquired(l)) if l.revision == 21));
        let late = WriteOp::Restore {
            leases: vec![],
            revision: 20,
        };
        assert!(matches!(
            stager.stage(&map, req(late, 0), &mut batch),
            Err(crate::OrbitError::InvalidInput(_))
        ));
        assert_eq!(stager.take().len(), 1);
    }

    #[test]
    fn a_request_is_one_record_and_round_trips() {
        let (map, mut stager, mut batch) = (Map::default(), ChangeStager::new(41), LogBatch::new());
        let out = stager
            .stage(
                &map,
                req(
                    WriteOp::Store(vec![lease(1, "a", 10), lease(2, "a", 10)]),
                    0,
                ),
                &mut batch,
            )
            .unwrap();
        assert_eq!(out, WriteOutcome::Stored);
        assert_eq!(batch.record_count(), 1);
        let changes = stager.take();
        assert_eq!(
            changes
                .iter()
                .map(LeaseChange::revision)
                .collect::<Vec<_>>(),
            vec![42, 43]
        );
        let mut buf = Vec::new();
        encode_changes(&changes, &mut buf);
        assert_eq!(decode_changes(&buf).unwrap(), changes);
    }

    #[test]
    fn later_requests_of_a_batch_see_earlier_ones() {
        let (map, mut stager, mut batch) = (Map::default(), ChangeStager::new(0), LogBatch::new());
        let first = stager
            .stage(
                &map,
                req(WriteOp::Acquire(lease(1, "a", 10)), 0),
                &mut batch,
            )
            .unwrap();
        let WriteOutcome::Acquire(Acquire::Acquired(held)) = first else {
            panic!("{first:?}")
        };
        let second = stager
            .stage(
                &map,
                req(WriteOp::Acquire(lease(1, "b", 10)), 0),
                &mut batch,
            )
            .unwrap();
        assert_eq!(second, WriteOutcome::Acquire(Acquire::Held(held.clone())));
        let renew = WriteOp::Renew {
            reference: held.reference.clone(),
            owner: held.node_id.clone(),
            revision: held.revision,
            expires_at: Timestamp(20),
            renew_at: Timestamp(15),
        };
        let WriteOutcome::Renew(Renew::Renewed(r)) =
            stager.stage(&map, req(renew, 5), &mut batch).unwrap()
        else {
            panic!("renew lost")
        };
        assert_eq!(r.revision, 2);
        let removed = stager
            .stage(
                &map,
                req(WriteOp::Remove(held.reference.clone()), 5),
                &mut batch,
            )
            .unwrap();
        assert_eq!(removed, WriteOutcome::Removed(true));
        let again = stager
            .stage(
                &map,
                req(WriteOp::Remove(held.reference.clone()), 5),
                &mut batch,
            )
            .unwrap();
        assert_eq!(again, WriteOutcome::Removed(false));
        assert_eq!(
            batch.record_count(),
            3,
            "the second acquire and remove change nothing"
        );
        assert_eq!(stager.last_revision(), 3);
    }

    #[test]
    fn cleanup_sees_the_overlay_and_respects_the_limit() {
        let mut map = Map::default();
        map.apply(
            (0..5)
                .map(|i| {
                    LeaseChange::Put(AddressableLease {
                        revision: i.into(),
                        ..lease(i, "a", 10)
                    })
                })
                .collect(),
        );
        let (mut stager, mut batch) = (ChangeStager::new(5), LogBatch::new());
        // Lease 0 is renewed in this batch: no longer expired at 10.
        let renew = WriteOp::Renew {
            reference: lease(0, "a", 0).reference,
            owner: NodeId::new("a", "ns"),
            revision: 0,
            expires_at: Timestamp(100),
            renew_at: Timestamp(50),
        };
        stager.stage(&map, req(renew, 5), &mut batch).unwrap();
        let out = stager
            .stage(&map, req(WriteOp::Cleanup { limit: 3 }, 10), &mut batch)
            .unwrap();
        assert_eq!(out, WriteOutcome::Cleaned(3));
        let out = stager
            .stage(&map, req(WriteOp::Cleanup { limit: 3 }, 10), &mut batch)
            .unwrap();
        assert_eq!(out, WriteOutcome::Cleaned(1));
        let out = stager
            .stage(&map, req(WriteOp::Cleanup { limit: 3 }, 10), &mut batch)
            .unwrap();
        assert_eq!(out, WriteOutcome::Cleaned(0));
        map.apply(stager.take());
        assert_eq!(map.0.len(), 1);
        assert_eq!(map.0.values().next().unwrap().expires_at, Timestamp(100));
    }

    #[test]
    fn abort_forgets_changes_and_revisions() {
        let (map, mut stager, mut batch) = (Map::default(), ChangeStager::new(7), LogBatch::new());
        stager
            .stage(
                &map,
                req(WriteOp::Store(vec![lease(1, "a", 10)]), 0),
                &mut batch,
            )
            .unwrap();
        stager.abort();
        assert_eq!(stager.last_revision(), 7);
        assert!(stager.take().is_empty());
        let out = stager
            .stage(
                &map,
                req(WriteOp::Remove(lease(1, "a", 0).reference), 0),
                &mut batch,
            )
            .unwrap();
        assert_eq!(
            out,
            WriteOutcome::Removed(false),
            "an aborted put must not be visible"
        );
    }

    #[test]
    fn eviction_steps_walk_the_node_and_respect_the_batch() {
        let mut map = Map::default();
        let mut stager = ChangeStager::new(0);
        let mut batch = LogBatch::new();
        let mut leases: Vec<_> = (0..5).map(|i| lease(i, "a", 100)).collect();
        leases.push(lease(9, "b", 100));
        stager
            .stage(&map, req(WriteOp::Store(leases), 0), &mut batch)
            .unwrap();
        map.apply(stager.take());
        // Earlier in the batch, lease 1 moves to node b and lease 2 is removed.
        stager
            .stage(
                &map,
                req(WriteOp::Store(vec![lease(1, "b", 100)]), 0),
                &mut batch,
            )
            .unwrap();
        stager
            .stage(
                &map,
                req(WriteOp::Remove(lease(2, "a", 0).reference), 0),
                &mut batch,
            )
            .unwrap();
        let evict = |after| WriteOp::Evict {
            node: NodeId::new("a", "ns"),
            after,
            limit: 3,
        };
        let first = stager.stage(&map, req(evict(None), 0), &mut batch).unwrap();
        assert_eq!(
            first,
            WriteOutcome::Evicted {
                removed: 1,
                next: Some(lease(2, "a", 0).reference)
            },
            "entries 0, 1 and 2 read; only 0 is still on node a"
        );
        let WriteOutcome::Evicted { next, .. } = first else {
            unreachable!()
        };
        let second = stager.stage(&map, req(evict(next), 0), &mut batch).unwrap();
        assert_eq!(
            second,
            WriteOutcome::Evicted {
                removed: 2,
                next: None
            }
        );
        let changes = stager.take();
        let revisions: Vec<u64> = changes.iter().map(LeaseChange::revision).collect();
        assert_eq!(revisions, (7..=11).collect::<Vec<_>>(), "one revision each");
        map.apply(changes);
        let left: Vec<_> = map
            .0
            .values()
            .map(|l| (l.reference.clone(), l.node_id.clone()))
            .collect();
        assert_eq!(
            left,
            vec![
                (lease(1, "b", 0).reference, NodeId::new("b", "ns")),
                (lease(9, "b", 0).reference, NodeId::new("b", "ns")),
            ]
        );
    }

    #[test]
    fn every_removal_cause_round_trips_and_a_legacy_delete_reads_as_removed() {
        let causes = [
            RemovalCause::Removed,
            RemovalCause::Released,
            RemovalCause::Expired,
            RemovalCause::Evicted,
        ];
        let changes: Vec<_> = causes
            .iter()
            .enumerate()
            .map(|(i, &cause)| LeaseChange::Delete {
                reference: lease(i as u32, "a", 0).reference,
                revision: i as u64 + 1,
                cause,
            })
            .collect();
        let mut buf = Vec::new();
        encode_changes(&changes, &mut buf);
        assert_eq!(decode_changes(&buf).unwrap(), changes);
        // Kind 2 is what a log written before the change feed holds for every delete.
        assert_eq!(buf[5], 2);
    }

    #[test]
    fn corrupt_payloads_are_errors_with_offsets() {
        let mut buf = Vec::new();
        encode_changes(
            &[LeaseChange::Delete {
                reference: lease(1, "a", 0).reference,
                revision: 9,
                cause: RemovalCause::Removed,
            }],
            &mut buf,
        );
        let mut bad = buf.clone();
        bad[5] = 7;
        let e = decode_changes(&bad).unwrap_err();
        assert_eq!(e.offset, 5, "{e}");
        assert!(decode_changes(&buf[..buf.len() - 1]).is_err());
        let mut huge = vec![FORMAT_VERSION];
        huge.extend(u32::MAX.to_be_bytes());
        assert!(decode_changes(&huge).unwrap_err().detail.contains("claims"));
    }

    /// A source that honours `after`, as an ordered store does.
    #[derive(Default)]
    struct Ordered(Map);

    impl LeaseSource for Ordered {
        fn lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
            self.0.lease(r)
        }
        fn expired(&self, now: Timestamp, limit: usize) -> OrbitResult<Vec<AddressableLease>> {
            self.expired_after(now, None, limit)
        }
        fn expired_after(
            &self,
            now: Timestamp,
            after: Option<&(Timestamp, AddressableReference)>,
            limit: usize,
        ) -> OrbitResult<Vec<AddressableLease>> {
            let mut v: Vec<_> = self
                .0
                .0
                .values()
                .filter(|l| l.is_expired(now))
                .filter(|l| after.is_none_or(|a| (l.expires_at, &l.reference) > (a.0, &a.1)))
                .cloned()
                .collect();
            v.sort_by(|a, b| (a.expires_at, &a.reference).cmp(&(b.expires_at, &b.reference)));
            v.truncate(limit);
            Ok(v)
        }
        fn node_references(
            &self,
            node: &NodeId,
            after: Option<&AddressableReference>,
            limit: usize,
        ) -> OrbitResult<Vec<AddressableReference>> {
            self.0.node_references(node, after, limit)
        }
    }

    /// Stores lease `i` expiring at `expires_at`, judged at `now`, in the current batch.
    fn store_at(
        stager: &mut ChangeStager,
        src: &Ordered,
        batch: &mut LogBatch,
        i: u32,
        now: u64,
        expires_at: u64,
    ) {
        let l = AddressableLease {
            expires_at: Timestamp(expires_at),
            renew_at: Timestamp(expires_at),
            ..lease(i, "a", 0)
        };
        stager
            .stage(src, req(WriteOp::Store(vec![l]), now), batch)
            .unwrap();
    }

    proptest! {
        /// The cleanup floor never hides an expired lease: whatever the clock does (it may go
        /// back, and requests judged at an earlier `now` may share a batch with a cleanup), a
        /// cleanup run to the end leaves nothing expired.
        #[test]
        fn cleanup_floor_never_hides_an_expired_lease(
            ops in proptest::collection::vec((0u8..4, 0u32..20, 0u64..40), 1..150)
        ) {
            let (mut src, mut stager, mut batch) = (Ordered::default(), ChangeStager::new(0), LogBatch::new());
            let mut now = 100u64;
            for (kind, i, t) in ops {
                match kind {
                    0 => {
                        store_at(&mut stager, &src, &mut batch, i, now, now + 1 + t);
                        src.0.apply(stager.take());
                    }
                    1 => now = 80 + t,
                    2 => {
                        loop {
                            let out = stager
                                .stage(&src, req(WriteOp::Cleanup { limit: 3 }, now), &mut batch)
                                .unwrap();
                            src.0.apply(stager.take());
                            if out != WriteOutcome::Cleaned(3) {
                                break;
                            }
                        }
                        let left: Vec<_> = src.0.0.values().filter(|l| l.is_expired(Timestamp(now))).collect();
                        prop_assert!(left.is_empty(), "expired leases left at {}: {:?}", now, left);
                    }
                    _ => {
                        // A caller that read the clock earlier shares a batch with a cleanup.
                        let earlier = now.saturating_sub(t);
                        store_at(&mut stager, &src, &mut batch, i, earlier, earlier + 1 + t / 2);
                        stager
                            .stage(&src, req(WriteOp::Cleanup { limit: 3 }, now), &mut batch)
                            .unwrap();
                        src.0.apply(stager.take());
                    }
                }
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_changes(&bytes);
        }

        #[test]
        fn mutations_never_panic(at in any::<usize>(), byte in any::<u8>()) {
            let mut buf = Vec::new();
            encode_changes(&[
                LeaseChange::Put(lease(1, "a", 5)),
                LeaseChange::Delete {
                    reference: lease(2, "b", 0).reference,
                    revision: 3,
                    cause: RemovalCause::Removed,
                },
            ], &mut buf);
            let i = at % buf.len();
            buf[i] = byte;
            let _ = decode_changes(&buf);
        }
    }
}
