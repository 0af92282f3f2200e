//! The lease directory as one ordered byte map: the key layout every ordered disk engine
//! (the COW B+tree, the LSM) stores, and the lease-level reads and writes over it, written once.
//!
//! # Key layout
//!
//! One key space holds the leases and both indexes as key ranges, so one atomic commit of the
//! engine updates all three:
//!
//! | range | key | value |
//! |---|---|---|
//! | leases | `L` ++ encoded reference | the lease without its reference ([`encode_lease_value`]) |
//! | node index | `N` ++ encoded node ++ encoded reference | empty |
//! | expiry index | `E` ++ `expires_at` (u64 BE) ++ encoded reference | empty |
//! | change history | `H` ++ revision (u64 BE) | the event ([`crate::feed`]'s history value) |
//!
//! (encodings from [`crate::encoding`], which preserve order). An engine provides
//! [`OrderedKv`] (point reads and range scans) and [`OrderedKvWrite`]; [`LeaseKv`] answers the
//! provider's reads and the writer's [`LeaseSource`] questions, and [`apply_change`] turns a
//! durable [`LeaseChange`] into key writes, keeping both indexes and the change history in
//! step. The history holds the last `watch_history` events: each change writes its own and
//! deletes the one `watch_history` revisions older.

use crate::change::{LeaseChange, LeaseSource};
use crate::encoding::{
    decode_expiry_index_key, decode_lease_value, decode_node_index_key, decode_reference,
    encode_lease_value, expiry_index_key, expiry_index_upper_bound, lease_value_index_fields,
    node_index_key, node_index_prefix, put_reference,
};
use crate::feed::{LeaseEvent, LeaseEventKind};
use crate::index::{IndexEntries, index_delta};
use crate::{AddressableLease, AddressableReference, NodeId, OrbitError, OrbitResult, Timestamp};

/// Tag of the lease range.
pub const LEASES: u8 = b'L';
/// Tag of the node-index range.
pub const NODES: u8 = b'N';
/// Tag of the expiry-index range.
pub const EXPIRY: u8 = b'E';
/// Tag of the change-history range.
pub const HISTORY: u8 = b'H';

/// Key of the history event of `revision`.
pub fn history_key(revision: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(HISTORY);
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

/// Key of a lease.
pub fn lease_key(r: &AddressableReference) -> Vec<u8> {
    let mut k = Vec::with_capacity(r.addressable_type.len() + 40);
    k.push(LEASES);
    put_reference(&mut k, r);
    k
}

/// Key of a node-index entry.
pub fn node_key(node: &NodeId, r: &AddressableReference) -> Vec<u8> {
    tagged(NODES, &node_index_key(node, r))
}

/// Key of an expiry-index entry.
pub fn expiry_key(expires_at: Timestamp, r: &AddressableReference) -> Vec<u8> {
    tagged(EXPIRY, &expiry_index_key(expires_at, r))
}

fn tagged(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

/// The smallest key greater than every key starting with `prefix` (which must not be all 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while end.last() == Some(&0xFF) {
        end.pop();
    }
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// What [`OrderedKv::scan`] calls with each key and value; `false` stops the scan.
pub type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> OrbitResult<bool> + 'a;

/// Read access to an engine's ordered key space, as of one consistent state.
pub trait OrderedKv {
    /// Calls `f` with the value of `key`, if present.
    fn get<T>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> OrbitResult<T>)
    -> OrbitResult<Option<T>>;

    /// Calls `f` with each pair of `start <= key < end`, in key order, until it returns false.
    fn scan(&self, start: &[u8], end: &[u8], f: &mut ScanVisitor<'_>) -> OrbitResult<()>;

    /// The error for stored bytes that do not decode (naming the engine's file).
    fn corrupt(&self, detail: String) -> OrbitError;
}

/// Lease-level reads over an [`OrderedKv`].
#[derive(Clone, Copy)]
pub struct LeaseKv<'a, K: ?Sized>(pub &'a K);

impl<K: OrderedKv> LeaseKv<'_, K> {
    fn corrupt_value(&self, what: &str, e: impl std::fmt::Display) -> OrbitError {
        self.0.corrupt(format!("undecodable {what}: {e}"))
    }

    fn decode_value(&self, r: AddressableReference, v: &[u8]) -> OrbitResult<AddressableLease> {
        decode_lease_value(r, v).map_err(|e| self.corrupt_value("lease", e))
    }

    /// The reference of a lease key (`L` ++ encoded reference).
    fn key_reference(&self, key: &[u8]) -> OrbitResult<AddressableReference> {
        decode_reference(key.get(1..).unwrap_or_default())
            .map_err(|e| self.corrupt_value("lease key", e))
    }

    /// The lease of `r`.
    pub fn lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        self.0
            .get(&lease_key(r), |v| self.decode_value(r.clone(), v))
    }

    fn indexed_lease(
        &self,
        r: &AddressableReference,
        index: &str,
    ) -> OrbitResult<AddressableLease> {
        self.lease(r)?.ok_or_else(|| {
            self.0
                .corrupt(format!("{index} entry for {r:?} without a lease"))
        })
    }

    /// Every lease of `node`, through the node index.
    pub fn node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        let start = tagged(NODES, &node_index_prefix(node));
        let end = prefix_end(&start);
        // An index key is the prefix followed by the encoded reference: the lease key is `L`
        // and those same bytes.
        let mut lease_keys = Vec::new();
        self.0.scan(&start, &end, &mut |k, _| {
            let mut key = Vec::with_capacity(k.len() - start.len() + 1);
            key.push(LEASES);
            key.extend_from_slice(&k[start.len()..]);
            lease_keys.push(key);
            Ok(true)
        })?;
        lease_keys
            .iter()
            .map(|key| {
                let r = self.key_reference(key)?;
                self.0
                    .get(key, |v| self.decode_value(r.clone(), v))?
                    .ok_or_else(|| {
                        self.0
                            .corrupt(format!("node-index entry for {r:?} without a lease"))
                    })
            })
            .collect()
    }

    /// Up to `limit` references of `node`'s leases after `after`, in reference order, read
    /// from the node index alone.
    pub fn node_references(
        &self,
        node: &NodeId,
        after: Option<&AddressableReference>,
        limit: usize,
    ) -> OrbitResult<Vec<AddressableReference>> {
        let prefix = tagged(NODES, &node_index_prefix(node));
        let end = prefix_end(&prefix);
        let start = match after {
            Some(r) => {
                let mut k = node_key(node, r);
                k.push(0); // the smallest key after it
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        if limit > 0 {
            self.0.scan(&start, &end, &mut |k, _| {
                let r = decode_reference(&k[prefix.len()..])
                    .map_err(|e| self.corrupt_value("node-index key", e))?;
                out.push(r);
                Ok(out.len() < limit)
            })?;
        }
        Ok(out)
    }

    /// Up to `limit` history events with revisions in `from..=upto`, in revision order.
    pub fn history(&self, from: u64, upto: u64, limit: usize) -> OrbitResult<Vec<LeaseEvent>> {
        let mut out = Vec::new();
        if limit == 0 || from > upto {
            return Ok(out);
        }
        let end = match upto.checked_add(1) {
            Some(after) => history_key(after),
            None => vec![HISTORY + 1],
        };
        self.0.scan(&history_key(from), &end, &mut |k, v| {
            let revision = u64::from_be_bytes(k[1..].try_into().unwrap_or_default());
            let event = LeaseEvent::decode_value(revision, v)
                .map_err(|e| self.corrupt_value("history event", e))?;
            out.push(event);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Up to `limit` leases with `expires_at <= now`, earliest first, through the expiry index.
    pub fn expired(&self, now: Timestamp, limit: usize) -> OrbitResult<Vec<AddressableLease>> {
        self.expired_after(now, None, limit)
    }

    /// As [`LeaseKv::expired`], from after the expiry-index position `after`.
    pub fn expired_after(
        &self,
        now: Timestamp,
        after: Option<&(Timestamp, AddressableReference)>,
        limit: usize,
    ) -> OrbitResult<Vec<AddressableLease>> {
        let start = match after {
            Some((expires_at, r)) => {
                let mut k = expiry_key(*expires_at, r);
                k.push(0); // the smallest key after it
                k
            }
            None => vec![EXPIRY],
        };
        let end = tagged(EXPIRY, &expiry_index_upper_bound(now));
        let mut refs = Vec::new();
        if limit > 0 && start < end {
            self.0.scan(&start, &end, &mut |k, _| {
                let (_, r) = decode_expiry_index_key(&k[1..])
                    .map_err(|e| self.corrupt_value("expiry-index key", e))?;
                refs.push(r);
                Ok(refs.len() < limit)
            })?;
        }
        refs.iter()
            .map(|r| self.indexed_lease(r, "expiry-index"))
            .collect()
    }

    /// Up to `limit` leases with references after `after` (all from the start if `None`), in
    /// reference order.
    pub fn leases_after(
        &self,
        after: Option<&AddressableReference>,
        limit: usize,
    ) -> OrbitResult<Vec<AddressableLease>> {
        let start = match after {
            Some(r) => {
                let mut k = lease_key(r);
                k.push(0); // the smallest key after it
                k
            }
            None => vec![LEASES],
        };
        let mut out = Vec::new();
        if limit > 0 {
            self.0.scan(&start, &[LEASES + 1], &mut |k, v| {
                out.push(self.decode_value(self.key_reference(k)?, v)?);
                Ok(out.len() < limit)
            })?;
        }
        Ok(out)
    }
}

impl<K: OrderedKv> LeaseKv<'_, K> {
    /// Checks that the leases and both indexes agree: every lease has its node-index and
    /// expiry-index entry, and every index entry names a lease that has that node or expiry.
    /// Returns the disagreements found (at most `limit`) and how many leases were checked.
    /// Undecodable bytes are errors (`Corruption`). Reads the whole key space: a tool for
    /// `verify`, not for the request path.
    pub fn index_problems(&self, limit: usize) -> OrbitResult<(Vec<String>, u64)> {
        let mut problems = Vec::new();
        let mut leases = 0u64;
        let note = |problems: &mut Vec<String>, p: String| {
            if problems.len() < limit {
                problems.push(p);
            }
        };
        self.0.scan(&[LEASES], &[LEASES + 1], &mut |k, v| {
            leases += 1;
            let lease = self.decode_value(self.key_reference(k)?, v)?;
            let r = &lease.reference;
            if self
                .0
                .get(&node_key(&lease.node_id, r), |_| Ok(()))?
                .is_none()
            {
                note(
                    &mut problems,
                    format!("lease {r:?} has no node-index entry"),
                );
            }
            if self
                .0
                .get(&expiry_key(lease.expires_at, r), |_| Ok(()))?
                .is_none()
            {
                note(
                    &mut problems,
                    format!("lease {r:?} has no expiry-index entry"),
                );
            }
            Ok(true)
        })?;
        self.0.scan(&[NODES], &[NODES + 1], &mut |k, _| {
            let (node, r) = decode_node_index_key(&k[1..])
                .map_err(|e| self.corrupt_value("node-index key", e))?;
            match self.lease(&r)? {
                Some(l) if l.node_id == node => {}
                other => note(
                    &mut problems,
                    format!("node-index entry ({node:?}, {r:?}) but the lease is {other:?}"),
                ),
            }
            Ok(true)
        })?;
        self.0.scan(&[EXPIRY], &[EXPIRY + 1], &mut |k, _| {
            let (expires_at, r) = decode_expiry_index_key(&k[1..])
                .map_err(|e| self.corrupt_value("expiry-index key", e))?;
            match self.lease(&r)? {
                Some(l) if l.expires_at == expires_at => {}
                other => note(
                    &mut problems,
                    format!(
                        "expiry-index entry ({expires_at:?}, {r:?}) but the lease is {other:?}"
                    ),
                ),
            }
            Ok(true)
        })?;
        Ok((problems, leases))
    }
}

/// One consistent state of an engine (a published version), as a key space to read.
pub trait KvSnapshot {
    /// The key-space view of the state.
    type Kv<'a>: OrderedKv
    where
        Self: 'a;

    /// The view.
    fn kv(&self) -> Self::Kv<'_>;
}

/// Leases [`Leases`] reads per step.
pub const LEASE_CHUNK: usize = 1024;

/// Every lease of a snapshot, in reference order, read in chunks of [`LEASE_CHUNK`]: what a
/// backup or a dump iterates.
#[derive(Debug)]
pub struct Leases<S> {
    snapshot: S,
    chunk: std::vec::IntoIter<AddressableLease>,
    last: Option<AddressableReference>,
    done: bool,
}

impl<S: KvSnapshot> Leases<S> {
    /// The leases of `snapshot`.
    pub fn new(snapshot: S) -> Self {
        Leases {
            snapshot,
            chunk: Vec::new().into_iter(),
            last: None,
            done: false,
        }
    }
}

impl<S: KvSnapshot> Iterator for Leases<S> {
    type Item = OrbitResult<AddressableLease>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(lease) = self.chunk.next() {
            self.last = Some(lease.reference.clone());
            return Some(Ok(lease));
        }
        if self.done {
            return None;
        }
        match LeaseKv(&self.snapshot.kv()).leases_after(self.last.as_ref(), LEASE_CHUNK) {
            Ok(chunk) => {
                self.done = chunk.len() < LEASE_CHUNK;
                self.chunk = chunk.into_iter();
                let lease = self.chunk.next()?;
                self.last = Some(lease.reference.clone());
                Some(Ok(lease))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<K: OrderedKv> LeaseSource for LeaseKv<'_, K> {
    fn lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        LeaseKv::lease(self, r)
    }

    fn expired(&self, now: Timestamp, limit: usize) -> OrbitResult<Vec<AddressableLease>> {
        LeaseKv::expired(self, now, limit)
    }

    fn expired_after(
        &self,
        now: Timestamp,
        after: Option<&(Timestamp, AddressableReference)>,
        limit: usize,
    ) -> OrbitResult<Vec<AddressableLease>> {
        LeaseKv::expired_after(self, now, after, limit)
    }

    fn node_references(
        &self,
        node: &NodeId,
        after: Option<&AddressableReference>,
        limit: usize,
    ) -> OrbitResult<Vec<AddressableReference>> {
        LeaseKv::node_references(self, node, after, limit)
    }
}

/// Write access to an engine's working key space (on its writer thread).
pub trait OrderedKvWrite {
    /// Sets `key` to `value` and returns the previous value.
    fn replace(&mut self, key: &[u8], value: &[u8]) -> OrbitResult<Option<Vec<u8>>>;
    /// Removes `key` and returns the previous value.
    fn take(&mut self, key: &[u8]) -> OrbitResult<Option<Vec<u8>>>;
    /// Sets `key` to `value` when the previous value does not matter (an engine may write
    /// blindly).
    fn put(&mut self, key: &[u8], value: &[u8]) -> OrbitResult<()>;
    /// Removes `key`, present or not (an engine may write a tombstone blindly).
    fn delete(&mut self, key: &[u8]) -> OrbitResult<()>;
    /// The error for a stored lease that does not decode.
    fn corrupt(&self, detail: String) -> OrbitError;
}

/// How a change moved the number of leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountChange {
    /// A lease appeared.
    Added,
    /// A lease was replaced, or a removal found nothing.
    Same,
    /// A lease was removed.
    Removed,
}

/// The index entries of an encoded lease value, read without decoding it.
fn index_entries(value: &[u8]) -> Option<IndexEntries<&[u8]>> {
    lease_value_index_fields(value).map(|(node, expires_at)| IndexEntries { node, expires_at })
}

/// Records the event of `revision` in the change history, and trims the event `history`
/// revisions older (0: no history kept).
fn record_event(
    kv: &mut impl OrderedKvWrite,
    revision: u64,
    kind: LeaseEventKind,
    lease: &AddressableLease,
    history: u64,
) -> OrbitResult<()> {
    if history == 0 {
        return Ok(());
    }
    kv.put(
        &history_key(revision),
        &LeaseEvent::encode_value(kind, lease),
    )?;
    if revision > history {
        kv.delete(&history_key(revision - history))?;
    }
    Ok(())
}

/// Applies one durable change: the lease key, the index entries that follow from it, and its
/// event in the change history, which keeps the last `history` events (a restored lease has
/// no event, a revision floor changes no key).
pub fn apply_change(
    kv: &mut impl OrderedKvWrite,
    change: &LeaseChange,
    history: u64,
) -> OrbitResult<CountChange> {
    fn decode_old(
        kv: &impl OrderedKvWrite,
        r: &AddressableReference,
        bytes: &[u8],
    ) -> OrbitResult<AddressableLease> {
        decode_lease_value(r.clone(), bytes)
            .map_err(|e| kv.corrupt(format!("undecodable stored lease of {r:?}: {e}")))
    }
    match change {
        LeaseChange::Floor(_) => Ok(CountChange::Same),
        LeaseChange::Put(lease) | LeaseChange::Restored(lease) => {
            let r = &lease.reference;
            let value = encode_lease_value(lease);
            let old = kv.replace(&lease_key(r), &value)?;
            // Which index entries move, read off the two encoded values: the old lease is
            // decoded only when its node entry goes (a renewal keeps its node).
            let old_entries = match &old {
                None => None,
                Some(o) => match index_entries(o) {
                    Some(e) => Some(e),
                    // Not a lease value: report why.
                    None => {
                        return Err(decode_old(kv, r, o)
                            .err()
                            .unwrap_or_else(|| kv.corrupt("a short lease value decoded".into())));
                    }
                },
            };
            let delta = index_delta(old_entries, index_entries(&value));
            if let (Some(_), Some(o)) = (delta.remove_node, &old) {
                kv.delete(&node_key(&decode_old(kv, r, o)?.node_id, r))?;
            }
            if let Some(expires_at) = delta.remove_expiry {
                kv.delete(&expiry_key(expires_at, r))?;
            }
            if delta.add_node.is_some() {
                kv.put(&node_key(&lease.node_id, r), &[])?;
            }
            if let Some(expires_at) = delta.add_expiry {
                kv.put(&expiry_key(expires_at, r), &[])?;
            }
            if let LeaseChange::Put(_) = change {
                record_event(kv, lease.revision, LeaseEventKind::Put, lease, history)?;
            }
            Ok(if old.is_none() {
                CountChange::Added
            } else {
                CountChange::Same
            })
        }
        LeaseChange::Delete {
            reference,
            revision,
            cause,
        } => {
            let Some(old) = kv.take(&lease_key(reference))? else {
                return Ok(CountChange::Same);
            };
            let old = decode_old(kv, reference, &old)?;
            let delta = index_delta(Some(IndexEntries::of(&old)), None);
            if let Some(node) = delta.remove_node {
                kv.delete(&node_key(node, reference))?;
            }
            if let Some(expires_at) = delta.remove_expiry {
                kv.delete(&expiry_key(expires_at, reference))?;
            }
            record_event(kv, *revision, cause.event_kind(), &old, history)?;
            Ok(CountChange::Removed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::RemovalCause;
    use std::collections::BTreeMap;

    /// A plain ordered map as the engine.
    #[derive(Default)]
    struct Map(BTreeMap<Vec<u8>, Vec<u8>>);

    impl OrderedKv for Map {
        fn get<T>(
            &self,
            key: &[u8],
            f: impl FnOnce(&[u8]) -> OrbitResult<T>,
        ) -> OrbitResult<Option<T>> {
            self.0.get(key).map(|v| f(v)).transpose()
        }

        fn scan(&self, start: &[u8], end: &[u8], f: &mut ScanVisitor<'_>) -> OrbitResult<()> {
            for (k, v) in self.0.range(start.to_vec()..end.to_vec()) {
                if !f(k, v)? {
                    break;
                }
            }
            Ok(())
        }

        fn corrupt(&self, detail: String) -> OrbitError {
            OrbitError::corruption("map", 0, detail)
        }
    }

    impl OrderedKvWrite for Map {
        fn replace(&mut self, key: &[u8], value: &[u8]) -> OrbitResult<Option<Vec<u8>>> {
            Ok(self.0.insert(key.to_vec(), value.to_vec()))
        }
        fn take(&mut self, key: &[u8]) -> OrbitResult<Option<Vec<u8>>> {
            Ok(self.0.remove(key))
        }
        fn put(&mut self, key: &[u8], value: &[u8]) -> OrbitResult<()> {
            self.0.insert(key.to_vec(), value.to_vec());
            Ok(())
        }
        fn delete(&mut self, key: &[u8]) -> OrbitResult<()> {
            self.0.remove(key);
            Ok(())
        }
        fn corrupt(&self, detail: String) -> OrbitError {
            OrbitError::corruption("map", 0, detail)
        }
    }

    fn lease(id: &str, node: &str, expires_at: u64, revision: u64) -> AddressableLease {
        AddressableLease {
            reference: AddressableReference::new("T", crate::Key::string(id)),
            node_id: NodeId::new(node, "ns"),
            expires_at: Timestamp(expires_at),
            renew_at: Timestamp(expires_at / 2),
            revision,
        }
    }

    #[test]
    fn indexes_follow_puts_moves_and_deletes() {
        let mut m = Map::default();
        let a = lease("a", "n1", 100, 1);
        assert_eq!(
            apply_change(&mut m, &LeaseChange::Put(a.clone()), 0).unwrap(),
            CountChange::Added
        );
        // Renewal: the expiry entry moves, the node entry stays.
        let renewed = AddressableLease {
            expires_at: Timestamp(200),
            revision: 2,
            ..a.clone()
        };
        assert_eq!(
            apply_change(&mut m, &LeaseChange::Put(renewed.clone()), 0).unwrap(),
            CountChange::Same
        );
        // Taken over by another node: the node entry moves.
        let moved = AddressableLease {
            node_id: NodeId::new("n2", "ns"),
            revision: 3,
            ..renewed.clone()
        };
        apply_change(&mut m, &LeaseChange::Put(moved.clone()), 0).unwrap();
        let view = LeaseKv(&m);
        assert_eq!(view.lease(&a.reference).unwrap(), Some(moved.clone()));
        assert!(
            view.node_leases(&NodeId::new("n1", "ns"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            view.node_leases(&NodeId::new("n2", "ns")).unwrap(),
            vec![moved.clone()]
        );
        assert!(view.expired(Timestamp(199), 10).unwrap().is_empty());
        assert_eq!(
            view.expired(Timestamp(200), 10).unwrap(),
            vec![moved.clone()]
        );
        assert_eq!(
            m.0.len(),
            3,
            "one lease and one entry per index: {:?}",
            m.0.keys()
        );
        let delete = LeaseChange::Delete {
            reference: a.reference.clone(),
            revision: 4,
            cause: RemovalCause::Removed,
        };
        assert_eq!(
            apply_change(&mut m, &delete, 0).unwrap(),
            CountChange::Removed
        );
        assert!(m.0.is_empty());
        assert_eq!(apply_change(&mut m, &delete, 0).unwrap(), CountChange::Same);
    }

    #[test]
    fn the_history_records_each_change_and_keeps_the_last_ones() {
        let mut m = Map::default();
        let a = lease("a", "n1", 100, 1);
        apply_change(&mut m, &LeaseChange::Put(a.clone()), 3).unwrap();
        let renewed = AddressableLease {
            expires_at: Timestamp(200),
            revision: 2,
            ..a.clone()
        };
        apply_change(&mut m, &LeaseChange::Put(renewed.clone()), 3).unwrap();
        let b = lease("b", "n2", 100, 3);
        apply_change(&mut m, &LeaseChange::Put(b.clone()), 3).unwrap();
        let released = LeaseChange::Delete {
            reference: a.reference.clone(),
            revision: 4,
            cause: RemovalCause::Released,
        };
        apply_change(&mut m, &released, 3).unwrap();
        let view = LeaseKv(&m);
        let events = view.history(0, 10, 100).unwrap();
        let summary: Vec<_> = events
            .iter()
            .map(|e| (e.revision, e.kind, e.lease.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (2, LeaseEventKind::Put, renewed.clone()),
                (3, LeaseEventKind::Put, b),
                (4, LeaseEventKind::Released, renewed),
            ],
            "revision 1 trimmed; the release carries the last lease"
        );
        assert_eq!(view.history(3, 3, 100).unwrap().len(), 1);
        assert_eq!(view.history(2, 10, 1).unwrap()[0].revision, 2);
        assert!(view.history(5, 10, 100).unwrap().is_empty());
    }

    #[test]
    fn expired_after_starts_past_the_given_position() {
        let mut m = Map::default();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            apply_change(
                &mut m,
                &LeaseChange::Put(lease(id, "n", 100 + i as u64, 1)),
                0,
            )
            .unwrap();
        }
        let view = LeaseKv(&m);
        let all = view.expired(Timestamp(200), 10).unwrap();
        assert_eq!(all.len(), 3);
        let first = (all[0].expires_at, all[0].reference.clone());
        let rest = view
            .expired_after(Timestamp(200), Some(&first), 10)
            .unwrap();
        assert_eq!(rest, all[1..]);
        let last = (all[2].expires_at, all[2].reference.clone());
        assert!(
            view.expired_after(Timestamp(200), Some(&last), 10)
                .unwrap()
                .is_empty()
        );
        // A position past `now` finds nothing (and scans nothing).
        assert!(
            view.expired_after(Timestamp(100), Some(&last), 10)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn leases_after_pages_through_in_reference_order() {
        let mut m = Map::default();
        for (i, id) in ["c", "a", "b"].iter().enumerate() {
            apply_change(
                &mut m,
                &LeaseChange::Put(lease(id, "n", 100, i as u64 + 1)),
                0,
            )
            .unwrap();
        }
        let view = LeaseKv(&m);
        let first = view.leases_after(None, 2).unwrap();
        assert_eq!(first.len(), 2);
        let rest = view.leases_after(Some(&first[1].reference), 2).unwrap();
        let keys: Vec<_> = first
            .iter()
            .chain(&rest)
            .map(|l| l.reference.key.clone())
            .collect();
        assert_eq!(keys, ["a", "b", "c"].map(crate::Key::string));
    }

    #[test]
    fn index_problems_finds_every_kind_of_disagreement() {
        let mut m = Map::default();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            apply_change(
                &mut m,
                &LeaseChange::Put(lease(id, "n1", 100 + i as u64, 1)),
                0,
            )
            .unwrap();
        }
        assert_eq!(LeaseKv(&m).index_problems(10).unwrap(), (vec![], 3));
        let a = lease("a", "n1", 100, 1);
        let b = lease("b", "n1", 101, 1);
        // A lost node entry, a stale expiry entry, a node entry naming no lease.
        m.0.remove(&node_key(&a.node_id, &a.reference));
        m.0.insert(expiry_key(Timestamp(5), &b.reference), vec![]);
        m.0.insert(
            node_key(&NodeId::new("n9", "ns"), &lease("z", "n9", 1, 1).reference),
            vec![],
        );
        let (problems, leases) = LeaseKv(&m).index_problems(10).unwrap();
        assert_eq!(leases, 3);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert_eq!(LeaseKv(&m).index_problems(1).unwrap().0.len(), 1);
    }

    #[test]
    fn an_undecodable_stored_lease_is_corruption() {
        let mut m = Map::default();
        let a = lease("a", "n1", 100, 1);
        m.0.insert(lease_key(&a.reference), vec![1, 2, 3]);
        let err = apply_change(&mut m, &LeaseChange::Put(a.clone()), 0).unwrap_err();
        assert!(matches!(err, OrbitError::Corruption { .. }), "{err}");
        m.0.insert(lease_key(&a.reference), vec![1, 2, 3]);
        assert!(LeaseKv(&m).lease(&a.reference).is_err());
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"N\x01ab"), b"N\x01ac");
        assert_eq!(prefix_end(b"N\xff\xff"), b"O");
    }
}
