//! The directory's keys in etcd: core's one-key-space layout ([`orbit_persistence_core::keyspace`])
//! under the configured prefix, and what each key's value holds.
//!
//! | key | value |
//! |---|---|
//! | prefix ++ `L` ++ reference | the lease without its reference ([`encode_lease_value`], revision 0) |
//! | prefix ++ `N` ++ node ++ reference | the same lease value: listing a node is one range read |
//! | prefix ++ `E` ++ `expires_at` BE ++ reference | the encoded node: cleanup deletes the node entry without reading the lease |
//! | prefix ++ `K` | why the last removing transaction removed (one byte, a `LeaseEventKind`): the change feed reads it |
//!
//! The three keys of a lease are written in one transaction, so they share its mod revision,
//! which is the lease's revision (its fencing token). Values never hold the revision: etcd
//! assigns it when the transaction commits.

use orbit_persistence_core::encoding::{
    DecodeError, decode_expiry_index_key, decode_lease_value, decode_node, decode_node_index_key,
    decode_reference, encode_lease_value, encode_node, expiry_index_upper_bound, node_index_prefix,
};
use orbit_persistence_core::keyspace::{self, EXPIRY, LEASES, NODES};
use orbit_persistence_core::{
    AddressableLease, AddressableReference, NodeId, OrbitError, OrbitResult, Timestamp,
};

/// Tag of the removal-cause key (see [`Keys::cause`]).
const CAUSE: u8 = b'K';

/// The keys of one directory: everything under `prefix`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: Vec<u8>,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    fn under(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    fn tag(&self, tag: u8) -> Vec<u8> {
        self.under(&[tag])
    }

    pub fn lease(&self, r: &AddressableReference) -> Vec<u8> {
        self.under(&keyspace::lease_key(r))
    }

    /// The key every removing transaction writes why it removes (one byte, a
    /// `LeaseEventKind`), so a watch tells a release from an expiry. Its tag `K` sorts just
    /// before the leases' `L`: one watch range holds both, and no lease scan sees it.
    pub fn cause(&self) -> Vec<u8> {
        self.tag(CAUSE)
    }

    /// `[start, end)` of what the change feed watches: the cause key and every lease key.
    pub fn feed_range(&self) -> (Vec<u8>, Vec<u8>) {
        (self.cause(), self.leases_range().1)
    }

    pub fn node(&self, node: &NodeId, r: &AddressableReference) -> Vec<u8> {
        self.under(&keyspace::node_key(node, r))
    }

    pub fn expiry(&self, expires_at: Timestamp, r: &AddressableReference) -> Vec<u8> {
        self.under(&keyspace::expiry_key(expires_at, r))
    }

    /// `[start, end)` of every lease key.
    pub fn leases_range(&self) -> (Vec<u8>, Vec<u8>) {
        let start = self.tag(LEASES);
        let end = keyspace::prefix_end(&start);
        (start, end)
    }

    /// `[start, end)` of the node-index keys of `node`.
    pub fn node_range(&self, node: &NodeId) -> (Vec<u8>, Vec<u8>) {
        let mut start = self.tag(NODES);
        start.extend_from_slice(&node_index_prefix(node));
        let end = keyspace::prefix_end(&start);
        (start, end)
    }

    /// `[start, end)` of the expiry-index keys of leases expired at `now`.
    pub fn expired_range(&self, now: Timestamp) -> (Vec<u8>, Vec<u8>) {
        let start = self.tag(EXPIRY);
        let mut end = start.clone();
        end.extend_from_slice(&expiry_index_upper_bound(now));
        (start, end)
    }

    /// The value of a lease key and of its node-index key.
    pub fn lease_value(lease: &AddressableLease) -> Vec<u8> {
        encode_lease_value(&AddressableLease {
            revision: 0,
            ..lease.clone()
        })
    }

    /// The value of an expiry-index key.
    pub fn expiry_value(node: &NodeId) -> Vec<u8> {
        encode_node(node)
    }

    /// A bad stored key or value is `Corruption`, naming the etcd key (lossy UTF-8) as its path.
    fn corruption(key: &[u8], what: &str, e: DecodeError) -> OrbitError {
        let name = format!("etcd:{}", String::from_utf8_lossy(key));
        OrbitError::corruption(name, e.offset as u64, format!("{what}: {}", e.detail))
    }

    /// The bytes of `key` after the prefix and the range tag.
    fn after_tag<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        key.get(self.prefix.len() + 1..).unwrap_or_default()
    }

    /// The lease of `reference` that `value` (of `key`) holds, at `mod_revision`.
    fn lease_in(
        key: &[u8],
        reference: AddressableReference,
        value: &[u8],
        mod_revision: i64,
        what: &str,
    ) -> OrbitResult<AddressableLease> {
        let mut lease =
            decode_lease_value(reference, value).map_err(|e| Self::corruption(key, what, e))?;
        lease.revision = mod_revision as u64;
        Ok(lease)
    }

    /// The lease stored at lease key `key` with `value`, its revision `mod_revision`.
    pub fn decode_lease(
        &self,
        key: &[u8],
        value: &[u8],
        mod_revision: i64,
    ) -> OrbitResult<AddressableLease> {
        let reference = decode_reference(self.after_tag(key))
            .map_err(|e| Self::corruption(key, "lease key", e))?;
        Self::lease_in(key, reference, value, mod_revision, "lease value")
    }

    /// The lease a node-index entry holds.
    pub fn decode_node_entry(
        &self,
        key: &[u8],
        value: &[u8],
        mod_revision: i64,
    ) -> OrbitResult<AddressableLease> {
        let (_, reference) = decode_node_index_key(self.after_tag(key))
            .map_err(|e| Self::corruption(key, "node index key", e))?;
        Self::lease_in(key, reference, value, mod_revision, "node index value")
    }

    /// The reference, expiry and node of an expiry-index entry.
    pub fn decode_expiry_entry(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> OrbitResult<(AddressableReference, Timestamp, NodeId)> {
        let (expires_at, reference) = decode_expiry_index_key(self.after_tag(key))
            .map_err(|e| Self::corruption(key, "expiry index key", e))?;
        let node =
            decode_node(value).map_err(|e| Self::corruption(key, "expiry index value", e))?;
        Ok((reference, expires_at, node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orbit_persistence_core::Key;

    fn lease() -> AddressableLease {
        AddressableLease {
            revision: 41,
            ..AddressableLease::new(
                AddressableReference::new("Type", Key::string("k")),
                NodeId::new("n1", "ns"),
                Timestamp(2_000),
                Timestamp(1_000),
            )
        }
    }

    #[test]
    fn every_entry_decodes_back_with_the_mod_revision() {
        let keys = Keys::new("/orbit/x/");
        let l = lease();
        let value = Keys::lease_value(&l);
        let back = keys
            .decode_lease(&keys.lease(&l.reference), &value, 77)
            .unwrap();
        assert_eq!(
            back,
            AddressableLease {
                revision: 77,
                ..l.clone()
            }
        );
        let entry = keys
            .decode_node_entry(&keys.node(&l.node_id, &l.reference), &value, 78)
            .unwrap();
        assert_eq!(
            entry,
            AddressableLease {
                revision: 78,
                ..l.clone()
            }
        );
        let (r, at, node) = keys
            .decode_expiry_entry(
                &keys.expiry(l.expires_at, &l.reference),
                &Keys::expiry_value(&l.node_id),
            )
            .unwrap();
        assert_eq!(
            (r, at, node),
            (l.reference.clone(), l.expires_at, l.node_id.clone())
        );
    }

    #[test]
    fn ranges_hold_exactly_their_keys() {
        let keys = Keys::new("/p/");
        let l = lease();
        let inside = |(start, end): (Vec<u8>, Vec<u8>), k: &[u8]| {
            start.as_slice() <= k && k < end.as_slice()
        };
        assert!(inside(keys.leases_range(), &keys.lease(&l.reference)));
        assert!(!inside(
            keys.leases_range(),
            &keys.node(&l.node_id, &l.reference)
        ));
        assert!(inside(
            keys.node_range(&l.node_id),
            &keys.node(&l.node_id, &l.reference)
        ));
        let other = NodeId::new("n1x", "ns");
        assert!(!inside(
            keys.node_range(&l.node_id),
            &keys.node(&other, &l.reference)
        ));
        assert!(inside(
            keys.expired_range(Timestamp(2_000)),
            &keys.expiry(l.expires_at, &l.reference)
        ));
        assert!(!inside(
            keys.expired_range(Timestamp(1_999)),
            &keys.expiry(l.expires_at, &l.reference)
        ));
        assert!(!inside(
            Keys::new("/q/").leases_range(),
            &keys.lease(&l.reference)
        ));
    }

    #[test]
    fn a_bad_value_is_corruption_naming_the_key() {
        let keys = Keys::new("/p/");
        let l = lease();
        match keys.decode_lease(&keys.lease(&l.reference), b"\x01garbage", 1) {
            Err(OrbitError::Corruption { path, .. }) => {
                assert!(path.to_string_lossy().starts_with("etcd:/p/L"));
            }
            other => panic!("expected Corruption, got {other:?}"),
        }
    }
}
