//! Peer stores: the lease workload written directly on another engine, with the same leases,
//! the same two indexes (node -> reference, expires_at -> reference) and the same encodings,
//! each change one atomic transaction that reads the old lease to move its index entries.

mod fjall;
mod redb;
#[cfg(feature = "rocksdb")]
mod rocksdb;

pub use self::fjall::FjallPeer;
pub use self::redb::RedbPeer;
#[cfg(feature = "rocksdb")]
pub use self::rocksdb::RocksDbPeer;

use orbit_persistence_core::{AddressableLease, AddressableReference, NodeId, Timestamp};

/// A peer store, called from plain threads.
pub trait Peer: Send + Sync {
    /// Upserts `leases` in one transaction, durable before it returns if `durable`.
    fn upsert(&self, leases: &[AddressableLease], durable: bool);
    /// The lease of `r`.
    fn get(&self, r: &AddressableReference) -> Option<AddressableLease>;
    /// The leases of `node`, through the node index.
    fn list(&self, node: &NodeId) -> Vec<AddressableLease>;
    /// Removes every lease expired at `now` in durable transactions of 1,024; returns how many.
    fn cleanup(&self, now: Timestamp) -> u64;
}
