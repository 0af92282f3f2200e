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

/// The redb version this crate builds against (its requirement in Cargo.toml).
pub const REDB_VERSION: &str = "4.6";
/// The fjall version this crate builds against.
pub const FJALL_VERSION: &str = "3.1";
/// The rocksdb crate version this crate builds against.
pub const ROCKSDB_CRATE_VERSION: &str = "0.24";

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
    /// Makes every write so far durable (the interval sync of the mixed phase).
    fn sync(&self);
    /// Removes `leases` (as stored) and their index entries in one durable transaction.
    fn remove(&self, leases: &[AddressableLease]);

    /// Removes every lease of `node`: the node index listed, then durable transactions of
    /// 1,024 removals, as a user of the engine would evict a node; returns how many.
    fn evict(&self, node: &NodeId) -> u64 {
        let leases = self.list(node);
        for chunk in leases.chunks(1024) {
            self.remove(chunk);
        }
        leases.len() as u64
    }
}

#[cfg(test)]
mod tests {
    /// The versions the report names are the ones Cargo.toml asks for.
    #[test]
    fn reported_versions_match_the_manifest() {
        let manifest = include_str!("../../Cargo.toml");
        let dependencies = &manifest[manifest.find("[dependencies]").unwrap()..];
        for (name, version) in [
            ("redb", super::REDB_VERSION),
            ("fjall", super::FJALL_VERSION),
            ("rocksdb", super::ROCKSDB_CRATE_VERSION),
        ] {
            let line = dependencies
                .lines()
                .find(|l| l.starts_with(&format!("{name} = ")))
                .unwrap_or_else(|| panic!("{name} is not a dependency"));
            assert!(
                line.contains(&format!("\"{version}\"")),
                "{name}: the manifest says {line}, the report says {version}"
            );
        }
    }
}
