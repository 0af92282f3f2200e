//! The workload on fjall: three keyspaces (its column families) in one database, one write
//! batch per change, synced with `PersistMode::SyncData` when durable.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use orbit_persistence_core::encoding::{
    decode_expiry_index_key, decode_lease, decode_reference, encode_lease, encode_reference,
    expiry_index_key, expiry_index_upper_bound, node_index_key, node_index_prefix,
};
use orbit_persistence_core::{AddressableLease, AddressableReference, NodeId, Timestamp};

use super::Peer;

/// The workload on fjall.
pub struct FjallPeer {
    db: Database,
    leases: Keyspace,
    by_node: Keyspace,
    by_expiry: Keyspace,
}

impl FjallPeer {
    /// Opens or creates the database in `dir`.
    pub fn open(dir: &Path) -> FjallPeer {
        let db = Database::builder(dir).open().expect("fjall open");
        let ks = |name| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .expect("fjall keyspace")
        };
        let (leases, by_node, by_expiry) = (ks("leases"), ks("by_node"), ks("by_expiry"));
        FjallPeer {
            db,
            leases,
            by_node,
            by_expiry,
        }
    }

    /// Flushes and merges everything (fjall's `major_compact` on each keyspace).
    pub fn compact(&self) {
        for ks in [&self.leases, &self.by_node, &self.by_expiry] {
            ks.rotate_memtable_and_wait().expect("fjall flush");
            ks.major_compact().expect("fjall compaction");
        }
    }
}

impl Peer for FjallPeer {
    fn sync(&self) {
        self.db
            .persist(PersistMode::SyncData)
            .expect("fjall persist");
    }

    fn upsert(&self, leases: &[AddressableLease], durable: bool) {
        let mut batch = self
            .db
            .batch()
            .durability(durable.then_some(PersistMode::SyncData));
        for lease in leases {
            let key = encode_reference(&lease.reference);
            if let Some(old) = self.leases.get(&key).expect("fjall get") {
                let old = decode_lease(&old).expect("lease");
                batch.remove(&self.by_node, node_index_key(&old.node_id, &old.reference));
                batch.remove(
                    &self.by_expiry,
                    expiry_index_key(old.expires_at, &old.reference),
                );
            }
            batch.insert(&self.leases, key, encode_lease(lease));
            batch.insert(
                &self.by_node,
                node_index_key(&lease.node_id, &lease.reference),
                [],
            );
            batch.insert(
                &self.by_expiry,
                expiry_index_key(lease.expires_at, &lease.reference),
                [],
            );
        }
        batch.commit().expect("fjall commit");
    }

    fn remove(&self, leases: &[AddressableLease]) {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for lease in leases {
            let r = &lease.reference;
            batch.remove(&self.leases, encode_reference(r));
            batch.remove(&self.by_node, node_index_key(&lease.node_id, r));
            batch.remove(&self.by_expiry, expiry_index_key(lease.expires_at, r));
        }
        batch.commit().expect("fjall commit");
    }

    fn get(&self, r: &AddressableReference) -> Option<AddressableLease> {
        self.leases
            .get(encode_reference(r))
            .expect("fjall get")
            .map(|v| decode_lease(&v).expect("lease"))
    }

    fn list(&self, node: &NodeId) -> Vec<AddressableLease> {
        let prefix = node_index_prefix(node);
        self.by_node
            .prefix(&prefix)
            .map(|item| {
                let k = item.key().expect("fjall iterate");
                let r = decode_reference(&k[prefix.len()..]).expect("reference");
                self.get(&r).expect("indexed lease")
            })
            .collect()
    }

    fn cleanup(&self, now: Timestamp) -> u64 {
        let bound = expiry_index_upper_bound(now);
        let mut total = 0;
        loop {
            let keys: Vec<_> = self
                .by_expiry
                .range(..bound.as_slice())
                .take(1024)
                .map(|item| item.key().expect("fjall iterate"))
                .collect();
            let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
            for k in &keys {
                let (_, r) = decode_expiry_index_key(k).expect("expiry key");
                let key = encode_reference(&r);
                let old = decode_lease(&self.leases.get(&key).expect("get").expect("lease"))
                    .expect("lease");
                batch.remove(&self.leases, key);
                batch.remove(&self.by_node, node_index_key(&old.node_id, &r));
                batch.remove(&self.by_expiry, k.clone());
            }
            batch.commit().expect("fjall commit");
            total += keys.len() as u64;
            if keys.len() < 1024 {
                return total;
            }
        }
    }
}
