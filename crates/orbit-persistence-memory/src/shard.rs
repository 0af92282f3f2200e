//! One shard of the memory backend: the leases whose reference hashes here, with this shard's
//! part of the node and expiry indexes. Every method keeps the three maps in agreement, so a
//! caller holding the shard's lock can never observe an index without its lease.

use std::collections::{BTreeSet, HashMap, HashSet};

use orbit_persistence_core::index::{IndexDelta, IndexEntries, index_delta};
use orbit_persistence_core::{AddressableLease, AddressableReference, NodeId, Timestamp};

#[derive(Debug, Default)]
pub(crate) struct Shard {
    leases: HashMap<AddressableReference, AddressableLease>,
    by_node: HashMap<NodeId, HashSet<AddressableReference>>,
    by_expiry: BTreeSet<(Timestamp, AddressableReference)>,
}

impl Shard {
    pub(crate) fn get(&self, r: &AddressableReference) -> Option<&AddressableLease> {
        self.leases.get(r)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.leases.len()
    }

    /// Inserts or replaces a lease, moving the index entries that change (core's
    /// `index_delta`: a renewal on the same node moves only its expiry entry); returns the
    /// previous lease.
    pub(crate) fn upsert(&mut self, lease: AddressableLease) -> Option<AddressableLease> {
        let new = Some(IndexEntries::of(&lease));
        match self.leases.get_mut(&lease.reference) {
            Some(current) => {
                let delta = index_delta(Some(IndexEntries::of(current)), new);
                Self::apply(
                    &mut self.by_node,
                    &mut self.by_expiry,
                    &lease.reference,
                    delta,
                );
                Some(std::mem::replace(current, lease))
            }
            None => {
                let delta = index_delta(None, new);
                Self::apply(
                    &mut self.by_node,
                    &mut self.by_expiry,
                    &lease.reference,
                    delta,
                );
                self.leases.insert(lease.reference.clone(), lease);
                None
            }
        }
    }

    /// Removes a lease and its index entries.
    pub(crate) fn remove(&mut self, r: &AddressableReference) -> Option<AddressableLease> {
        let old = self.leases.remove(r)?;
        let delta = index_delta(Some(IndexEntries::of(&old)), None);
        Self::apply(&mut self.by_node, &mut self.by_expiry, r, delta);
        Some(old)
    }

    /// Removes and adds the index entries of `r` that `delta` names.
    fn apply(
        by_node: &mut HashMap<NodeId, HashSet<AddressableReference>>,
        by_expiry: &mut BTreeSet<(Timestamp, AddressableReference)>,
        r: &AddressableReference,
        delta: IndexDelta<&NodeId>,
    ) {
        if let Some(node) = delta.remove_node
            && let Some(refs) = by_node.get_mut(node)
        {
            refs.remove(r);
            if refs.is_empty() {
                by_node.remove(node);
            }
        }
        if let Some(expires_at) = delta.remove_expiry {
            by_expiry.remove(&(expires_at, r.clone()));
        }
        if let Some(node) = delta.add_node {
            by_node.entry(node.clone()).or_default().insert(r.clone());
        }
        if let Some(expires_at) = delta.add_expiry {
            by_expiry.insert((expires_at, r.clone()));
        }
    }

    /// Appends this shard's leases of `node` to `out`.
    pub(crate) fn collect_node(&self, node: &NodeId, out: &mut Vec<AddressableLease>) {
        if let Some(refs) = self.by_node.get(node) {
            out.extend(refs.iter().filter_map(|r| self.leases.get(r)).cloned());
        }
    }

    /// Removes up to `limit` leases of `node`; returns them.
    pub(crate) fn remove_node(&mut self, node: &NodeId, limit: usize) -> Vec<AddressableLease> {
        let doomed: Vec<AddressableReference> = match self.by_node.get(node) {
            Some(refs) => refs.iter().take(limit).cloned().collect(),
            None => return Vec::new(),
        };
        doomed.iter().filter_map(|r| self.remove(r)).collect()
    }

    /// Removes up to `limit` leases expired at `now`, earliest first; returns them.
    pub(crate) fn remove_expired(&mut self, now: Timestamp, limit: usize) -> Vec<AddressableLease> {
        let expired: Vec<AddressableReference> = self
            .by_expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect();
        expired.iter().filter_map(|r| self.remove(r)).collect()
    }

    /// Appends every lease of this shard to `out`.
    pub(crate) fn collect_all(&self, out: &mut Vec<AddressableLease>) {
        out.extend(self.leases.values().cloned());
    }

    /// Approximate heap bytes held: for metrics only.
    pub(crate) fn approx_bytes(&self) -> u64 {
        let per_lease = std::mem::size_of::<AddressableLease>() * 3 + 64;
        (self.leases.len() * per_lease) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orbit_persistence_core::Key;

    fn lease(key: &str, node: &str, expires: u64) -> AddressableLease {
        AddressableLease::new(
            AddressableReference::new("T", Key::string(key)),
            NodeId::new(node, "ns"),
            Timestamp(expires),
            Timestamp(expires),
        )
    }

    #[test]
    fn indexes_follow_moves_and_removals() {
        let mut s = Shard::default();
        s.upsert(lease("a", "n1", 10));
        s.upsert(lease("a", "n2", 20));
        let mut out = Vec::new();
        s.collect_node(&NodeId::new("n1", "ns"), &mut out);
        assert!(out.is_empty());
        s.collect_node(&NodeId::new("n2", "ns"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(s.remove_expired(Timestamp(15), 10).len(), 0);
        assert_eq!(s.remove_expired(Timestamp(20), 10).len(), 1);
        assert!(s.by_node.is_empty() && s.by_expiry.is_empty() && s.leases.is_empty());
    }

    #[test]
    fn same_node_upsert_moves_only_the_expiry_entry() {
        let mut s = Shard::default();
        s.upsert(lease("a", "n1", 10));
        let old = s.upsert(lease("a", "n1", 30)).expect("previous lease");
        assert_eq!(old.expires_at, Timestamp(10));
        assert_eq!(s.by_expiry.len(), 1);
        assert_eq!(s.remove_expired(Timestamp(20), 10).len(), 0);
        let mut out = Vec::new();
        s.collect_node(&NodeId::new("n1", "ns"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].expires_at, Timestamp(30));
        assert_eq!(s.remove_expired(Timestamp(30), 10).len(), 1);
        assert!(s.by_node.is_empty() && s.leases.is_empty());
    }

    #[test]
    fn remove_node_takes_only_that_node_and_its_index() {
        let mut s = Shard::default();
        for i in 0..5 {
            s.upsert(lease(
                &i.to_string(),
                if i % 2 == 0 { "a" } else { "b" },
                10,
            ));
        }
        let a = NodeId::new("a", "ns");
        assert_eq!(s.remove_node(&a, 2).len(), 2);
        assert_eq!(s.remove_node(&a, 2).len(), 1);
        assert!(s.remove_node(&a, 2).is_empty());
        assert_eq!(s.len(), 2);
        assert!(!s.by_node.contains_key(&a));
        assert_eq!(s.by_expiry.len(), 2);
    }

    #[test]
    fn remove_expired_respects_the_limit() {
        let mut s = Shard::default();
        for i in 0..5 {
            s.upsert(lease(&i.to_string(), "n", i));
        }
        assert_eq!(s.remove_expired(Timestamp(10), 2).len(), 2);
        assert_eq!(s.len(), 3);
        assert!(s.get(&lease("0", "n", 0).reference).is_none());
        assert!(s.get(&lease("4", "n", 0).reference).is_some());
    }
}
