//! The two secondary indexes every backend keeps beside its leases (by node, for
//! `list_node_leases`; by expiry, for cleanup), and the one rule that keeps them in step with
//! the leases: which entries a change of a lease removes and which it adds ([`index_delta`]).
//! Each backend stores the entries its own way; none decides on its own which ones move.

use crate::types::{AddressableLease, NodeId, Timestamp};

/// The index entries of one lease: its node and its expiry. `N` is how the caller holds the
/// node: a `&NodeId`, or its encoded bytes where decoding would cost (core's key space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntries<N> {
    /// The node-index entry.
    pub node: N,
    /// The expiry-index entry.
    pub expires_at: Timestamp,
}

impl<'a> IndexEntries<&'a NodeId> {
    /// The entries of `lease`.
    pub fn of(lease: &'a AddressableLease) -> Self {
        IndexEntries {
            node: &lease.node_id,
            expires_at: lease.expires_at,
        }
    }
}

/// What replacing one lease by another does to the indexes. An entry both leases have is
/// neither removed nor added: a renewal on the same node moves only its expiry entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexDelta<N> {
    /// The old lease's node entry, if it goes.
    pub remove_node: Option<N>,
    /// The old lease's expiry entry, if it goes.
    pub remove_expiry: Option<Timestamp>,
    /// The new lease's node entry, if it is new.
    pub add_node: Option<N>,
    /// The new lease's expiry entry, if it is new.
    pub add_expiry: Option<Timestamp>,
}

/// The index entries to remove and add when the lease stored under one reference goes from
/// `old` to `new` (`None`: no lease; an insert has no `old`, a removal no `new`).
pub fn index_delta<N: Copy + PartialEq>(
    old: Option<IndexEntries<N>>,
    new: Option<IndexEntries<N>>,
) -> IndexDelta<N> {
    let node_moves = old.map(|o| o.node) != new.map(|n| n.node);
    let expiry_moves = old.map(|o| o.expires_at) != new.map(|n| n.expires_at);
    IndexDelta {
        remove_node: old.filter(|_| node_moves).map(|o| o.node),
        remove_expiry: old.filter(|_| expiry_moves).map(|o| o.expires_at),
        add_node: new.filter(|_| node_moves).map(|n| n.node),
        add_expiry: new.filter(|_| expiry_moves).map(|n| n.expires_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(node: &str, expires_at: u64) -> Option<IndexEntries<&str>> {
        Some(IndexEntries {
            node,
            expires_at: Timestamp(expires_at),
        })
    }

    fn delta(
        remove: (Option<&'static str>, Option<u64>),
        add: (Option<&'static str>, Option<u64>),
    ) -> IndexDelta<&'static str> {
        IndexDelta {
            remove_node: remove.0,
            remove_expiry: remove.1.map(Timestamp),
            add_node: add.0,
            add_expiry: add.1.map(Timestamp),
        }
    }

    #[test]
    fn an_insert_adds_both_entries_and_a_removal_removes_both() {
        assert_eq!(
            index_delta(None, entries("a", 10)),
            delta((None, None), (Some("a"), Some(10)))
        );
        assert_eq!(
            index_delta(entries("a", 10), None),
            delta((Some("a"), Some(10)), (None, None))
        );
        assert_eq!(
            index_delta::<&str>(None, None),
            delta((None, None), (None, None))
        );
    }

    #[test]
    fn a_renewal_on_the_same_node_moves_only_the_expiry_entry() {
        assert_eq!(
            index_delta(entries("a", 10), entries("a", 20)),
            delta((None, Some(10)), (None, Some(20)))
        );
    }

    #[test]
    fn a_move_to_another_node_moves_the_node_entry() {
        assert_eq!(
            index_delta(entries("a", 10), entries("b", 10)),
            delta((Some("a"), None), (Some("b"), None))
        );
        assert_eq!(
            index_delta(entries("a", 10), entries("b", 20)),
            delta((Some("a"), Some(10)), (Some("b"), Some(20)))
        );
    }

    #[test]
    fn an_unchanged_lease_moves_nothing() {
        assert_eq!(
            index_delta(entries("a", 10), entries("a", 10)),
            delta((None, None), (None, None))
        );
    }

    #[test]
    fn the_entries_of_a_lease_are_its_node_and_expiry() {
        let lease = AddressableLease::new(
            crate::AddressableReference::new("T", crate::Key::string("k")),
            NodeId::new("n", "ns"),
            Timestamp(9),
            Timestamp(5),
        );
        let e = IndexEntries::of(&lease);
        assert_eq!((e.node, e.expires_at), (&lease.node_id, lease.expires_at));
    }
}
