//! The workload on redb: three tables, one write transaction per change.

use std::path::Path;

use orbit_persistence_core::encoding::{
    decode_expiry_index_key, decode_lease, decode_reference, encode_lease, encode_reference,
    expiry_index_key, expiry_index_upper_bound, node_index_key, node_index_prefix,
};
use orbit_persistence_core::{AddressableLease, AddressableReference, NodeId, Timestamp};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::Peer;

const LEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("leases");
const BY_NODE: TableDefinition<&[u8], ()> = TableDefinition::new("by_node");
const BY_EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("by_expiry");

/// The workload on redb: three tables, one write transaction per change.
#[derive(Debug)]
pub struct RedbPeer {
    db: Database,
}

impl RedbPeer {
    /// Opens or creates `path` (a file).
    pub fn open(path: &Path) -> RedbPeer {
        let db = Database::create(path).expect("redb open");
        let tx = db.begin_write().expect("redb write");
        tx.open_table(LEASES).expect("redb table");
        tx.open_table(BY_NODE).expect("redb table");
        tx.open_table(BY_EXPIRY).expect("redb table");
        tx.commit().expect("redb commit");
        RedbPeer { db }
    }
}

impl Peer for RedbPeer {
    fn sync(&self) {
        // An empty durable commit makes the non-durable commits before it durable.
        let mut tx = self.db.begin_write().expect("redb write");
        tx.set_durability(Durability::Immediate)
            .expect("durability");
        tx.commit().expect("redb commit");
    }

    fn upsert(&self, leases: &[AddressableLease], durable: bool) {
        let mut tx = self.db.begin_write().expect("redb write");
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        tx.set_durability(durability).expect("durability");
        {
            let mut l = tx.open_table(LEASES).unwrap();
            let mut n = tx.open_table(BY_NODE).unwrap();
            let mut e = tx.open_table(BY_EXPIRY).unwrap();
            for lease in leases {
                let key = encode_reference(&lease.reference);
                let old = l
                    .insert(key.as_slice(), encode_lease(lease).as_slice())
                    .unwrap()
                    .map(|v| decode_lease(v.value()).unwrap());
                if let Some(old) = old {
                    n.remove(node_index_key(&old.node_id, &old.reference).as_slice())
                        .unwrap();
                    e.remove(expiry_index_key(old.expires_at, &old.reference).as_slice())
                        .unwrap();
                }
                n.insert(
                    node_index_key(&lease.node_id, &lease.reference).as_slice(),
                    (),
                )
                .unwrap();
                e.insert(
                    expiry_index_key(lease.expires_at, &lease.reference).as_slice(),
                    (),
                )
                .unwrap();
            }
        }
        tx.commit().expect("redb commit");
    }

    fn remove(&self, leases: &[AddressableLease]) {
        let tx = self.db.begin_write().expect("redb write");
        {
            let mut l = tx.open_table(LEASES).unwrap();
            let mut n = tx.open_table(BY_NODE).unwrap();
            let mut e = tx.open_table(BY_EXPIRY).unwrap();
            for lease in leases {
                let r = &lease.reference;
                l.remove(encode_reference(r).as_slice()).unwrap();
                n.remove(node_index_key(&lease.node_id, r).as_slice())
                    .unwrap();
                e.remove(expiry_index_key(lease.expires_at, r).as_slice())
                    .unwrap();
            }
        }
        tx.commit().expect("redb commit");
    }

    fn get(&self, r: &AddressableReference) -> Option<AddressableLease> {
        let tx = self.db.begin_read().unwrap();
        let t = tx.open_table(LEASES).unwrap();
        t.get(encode_reference(r).as_slice())
            .unwrap()
            .map(|v| decode_lease(v.value()).unwrap())
    }

    fn list(&self, node: &NodeId) -> Vec<AddressableLease> {
        let tx = self.db.begin_read().unwrap();
        let (l, n) = (
            tx.open_table(LEASES).unwrap(),
            tx.open_table(BY_NODE).unwrap(),
        );
        let prefix = node_index_prefix(node);
        let mut out = Vec::new();
        for item in n.range(prefix.as_slice()..).unwrap() {
            let (k, _) = item.unwrap();
            let k = k.value();
            if !k.starts_with(&prefix) {
                break;
            }
            let r = decode_reference(&k[prefix.len()..]).unwrap();
            let v = l.get(encode_reference(&r).as_slice()).unwrap().unwrap();
            out.push(decode_lease(v.value()).unwrap());
        }
        out
    }

    fn cleanup(&self, now: Timestamp) -> u64 {
        let bound = expiry_index_upper_bound(now);
        let mut total = 0;
        loop {
            let tx = self.db.begin_write().unwrap();
            let removed;
            {
                let mut l = tx.open_table(LEASES).unwrap();
                let mut n = tx.open_table(BY_NODE).unwrap();
                let mut e = tx.open_table(BY_EXPIRY).unwrap();
                let keys: Vec<Vec<u8>> = e
                    .range(..bound.as_slice())
                    .unwrap()
                    .take(1024)
                    .map(|i| i.unwrap().0.value().to_vec())
                    .collect();
                for k in &keys {
                    let (_, r) = decode_expiry_index_key(k).unwrap();
                    let old = l.remove(encode_reference(&r).as_slice()).unwrap().unwrap();
                    let old = decode_lease(old.value()).unwrap();
                    n.remove(node_index_key(&old.node_id, &r).as_slice())
                        .unwrap();
                    e.remove(k.as_slice()).unwrap();
                }
                removed = keys.len();
            }
            tx.commit().unwrap();
            total += removed as u64;
            if removed < 1024 {
                return total;
            }
        }
    }
}
