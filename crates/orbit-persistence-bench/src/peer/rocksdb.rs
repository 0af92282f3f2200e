//! The workload directly on the rocksdb crate: three column families, one `WriteBatch` per
//! change (reading the old lease to move its index entries), synced when durable.

use std::path::Path;

use orbit_persistence_core::encoding::{
    decode_lease, decode_reference, encode_lease, encode_reference, expiry_index_key,
    expiry_index_upper_bound, node_index_key, node_index_prefix,
};
use orbit_persistence_core::{
    AddressableLease, AddressableReference, NodeId, RocksDbConfig, Timestamp,
};
use orbit_persistence_rocksdb::options::{self, CF_BY_EXPIRY, CF_BY_NODE, CF_LEASES};
use rocksdb::{DB, Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};

use super::Peer;

/// The workload directly on the rocksdb crate, with the tuned options of
/// `orbit-persistence-rocksdb` (`options::build`).
pub struct RocksDbPeer {
    db: DB,
    sync: WriteOptions,
    nosync: WriteOptions,
}

impl RocksDbPeer {
    /// Opens or creates the database in `dir` with `config`'s options.
    pub fn open(dir: &Path, config: &RocksDbConfig) -> RocksDbPeer {
        let (opts, cfs) = options::build(config);
        let db = DB::open_cf_descriptors(&opts, dir, cfs).expect("raw open");
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        RocksDbPeer {
            db,
            sync,
            nosync: WriteOptions::default(),
        }
    }

    fn write(&self, leases: &[AddressableLease], wo: &WriteOptions) {
        let (l, n, e) = (
            self.db.cf_handle(CF_LEASES).unwrap(),
            self.db.cf_handle(CF_BY_NODE).unwrap(),
            self.db.cf_handle(CF_BY_EXPIRY).unwrap(),
        );
        let keys: Vec<_> = leases
            .iter()
            .map(|x| encode_reference(&x.reference))
            .collect();
        let old = self.db.batched_multi_get_cf(l, &keys, false);
        let mut b = WriteBatch::default();
        for ((lease, key), old) in leases.iter().zip(&keys).zip(old) {
            if let Some(old) = old.unwrap() {
                let old = decode_lease(&old).unwrap();
                b.delete_cf(n, node_index_key(&old.node_id, &old.reference));
                b.delete_cf(e, expiry_index_key(old.expires_at, &old.reference));
            }
            b.put_cf(l, key, encode_lease(lease));
            b.put_cf(n, node_index_key(&lease.node_id, &lease.reference), []);
            b.put_cf(e, expiry_index_key(lease.expires_at, &lease.reference), []);
        }
        self.db.write_opt(b, wo).unwrap();
    }
}

impl RocksDbPeer {
    /// Flushes the memtables and compacts every column family in full.
    pub fn compact(&self) {
        for cf in [CF_LEASES, CF_BY_NODE, CF_BY_EXPIRY] {
            let cf = self.db.cf_handle(cf).expect("column family");
            self.db.flush_cf(cf).expect("rocksdb flush");
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
    }
}

impl Peer for RocksDbPeer {
    fn sync(&self) {
        self.db.flush_wal(true).expect("rocksdb flush_wal");
    }

    fn upsert(&self, leases: &[AddressableLease], durable: bool) {
        self.write(leases, if durable { &self.sync } else { &self.nosync });
    }

    fn remove(&self, leases: &[AddressableLease]) {
        let (l, n, e) = (
            self.db.cf_handle(CF_LEASES).unwrap(),
            self.db.cf_handle(CF_BY_NODE).unwrap(),
            self.db.cf_handle(CF_BY_EXPIRY).unwrap(),
        );
        let mut b = WriteBatch::default();
        for lease in leases {
            let r = &lease.reference;
            b.delete_cf(l, encode_reference(r));
            b.delete_cf(n, node_index_key(&lease.node_id, r));
            b.delete_cf(e, expiry_index_key(lease.expires_at, r));
        }
        self.db.write_opt(b, &self.sync).unwrap();
    }

    fn get(&self, r: &AddressableReference) -> Option<AddressableLease> {
        let l = self.db.cf_handle(CF_LEASES).unwrap();
        self.db
            .get_pinned_cf(l, encode_reference(r))
            .unwrap()
            .map(|v| decode_lease(&v).unwrap())
    }

    fn list(&self, node: &NodeId) -> Vec<AddressableLease> {
        let snap = self.db.snapshot();
        let (l, n) = (
            self.db.cf_handle(CF_LEASES).unwrap(),
            self.db.cf_handle(CF_BY_NODE).unwrap(),
        );
        let prefix = node_index_prefix(node);
        let mut keys = Vec::new();
        for item in snap.iterator_cf_opt(
            n,
            ReadOptions::default(),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, _) = item.unwrap();
            if !k.starts_with(&prefix) {
                break;
            }
            decode_reference(&k[prefix.len()..]).unwrap();
            keys.push(k[prefix.len()..].to_vec());
        }
        snap.multi_get_cf(keys.iter().map(|k| (l, k)))
            .into_iter()
            .map(|v| decode_lease(&v.unwrap().unwrap()).unwrap())
            .collect()
    }

    fn cleanup(&self, now: Timestamp) -> u64 {
        let (l, n, e) = (
            self.db.cf_handle(CF_LEASES).unwrap(),
            self.db.cf_handle(CF_BY_NODE).unwrap(),
            self.db.cf_handle(CF_BY_EXPIRY).unwrap(),
        );
        let mut total = 0;
        loop {
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(expiry_index_upper_bound(now));
            let refs: Vec<_> = self
                .db
                .iterator_cf_opt(e, ro, IteratorMode::Start)
                .take(1024)
                .map(|i| {
                    orbit_persistence_core::encoding::decode_expiry_index_key(&i.unwrap().0)
                        .unwrap()
                        .1
                })
                .collect();
            let keys: Vec<_> = refs.iter().map(encode_reference).collect();
            let mut b = WriteBatch::default();
            for (key, v) in keys
                .iter()
                .zip(self.db.batched_multi_get_cf(l, &keys, false))
            {
                let old = decode_lease(&v.unwrap().unwrap()).unwrap();
                b.delete_cf(l, key);
                b.delete_cf(n, node_index_key(&old.node_id, &old.reference));
                b.delete_cf(e, expiry_index_key(old.expires_at, &old.reference));
                total += 1;
            }
            self.db.write_opt(b, &self.sync).unwrap();
            if refs.len() < 1024 {
                return total;
            }
        }
    }
}
