//! Which storage engine a config selects ([`BackendType`]): below both the config and the
//! errors, which name it.

use serde::{Deserialize, Serialize};

/// Which storage engine a [`PersistenceConfig`](crate::PersistenceConfig) selects.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackendType {
    /// In-memory, no durability: tests and caches.
    #[serde(rename = "memory")]
    Memory,
    /// Copy-on-write B+tree on disk: read-heavy, snapshots.
    #[serde(rename = "cow_btree")]
    CowBTree,
    /// LSM tree on disk: write-heavy.
    #[serde(rename = "lsm_tree")]
    LsmTree,
    /// RocksDB.
    #[serde(rename = "rocksdb")]
    RocksDB,
    /// etcd, for clusters.
    #[serde(rename = "etcd")]
    Etcd,
}

impl BackendType {
    /// The name used in config files and `ORBIT_PERSISTENCE_BACKEND`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendType::Memory => "memory",
            BackendType::CowBTree => "cow_btree",
            BackendType::LsmTree => "lsm_tree",
            BackendType::RocksDB => "rocksdb",
            BackendType::Etcd => "etcd",
        }
    }

    /// The cargo feature of the `orbit-persistence` facade that compiles this backend in.
    pub fn cargo_feature(self) -> &'static str {
        match self {
            BackendType::Memory => "memory",
            BackendType::CowBTree => "cowbtree",
            BackendType::LsmTree => "lsm",
            BackendType::RocksDB => "rocksdb",
            BackendType::Etcd => "etcd",
        }
    }
}
