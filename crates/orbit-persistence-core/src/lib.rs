//! # orbit-persistence-core
//!
//! The contract every orbit-persistence backend implements and every user programs against:
//!
//! - the lease data model ([`NodeId`], [`Key`], [`AddressableReference`], [`AddressableLease`],
//!   [`Timestamp`]) and its canonical, order-preserving binary [`encoding`];
//! - the provider traits [`PersistenceProvider`] and [`AddressableDirectoryProvider`];
//! - [`OrbitError`], [`Clock`], configuration ([`PersistenceConfig`]) and metrics;
//! - the lease rules every backend applies the same way ([`rules`], and [`index`] for which
//!   index entries a change moves), and the lease changes every disk backend logs, with the
//!   writer-side staging of conditional operations ([`change`]);
//! - the change feed ([`feed`]): [`LeaseEvent`]s from any retained revision on;
//! - backups ([`backup`]): one portable, checksummed file of every lease at one revision,
//!   written online and restorable into any backend;
//! - the pieces every disk backend shares, written once: the file-system seam ([`fs`]), the
//!   CRC32-framed log ([`log`]) and the WAL ([`wal`]), the data-directory lock ([`lock`]), the
//!   store identity record ([`identity`]), the report of what recovery did ([`recovery`]), the
//!   group-commit writer ([`group_commit`]), and the provider itself ([`disk_directory`]) around
//!   an [`engine`].
#![warn(missing_docs)]

pub mod backend;
pub mod backup;
pub mod change;
pub mod clock;
pub mod config;
pub mod disk_directory;
pub mod encoding;
pub mod engine;
pub mod error;
#[cfg(feature = "prometheus")]
pub mod exposition;
pub mod feed;
pub mod fs;
pub mod group_commit;
pub mod identity;
pub mod index;
pub mod keyspace;
pub mod lease_writes;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod provider;
pub mod recovery;
pub mod restore;
pub mod rules;
pub mod types;
pub mod verify;
pub mod wal;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    BackendType, CowBTreeConfig, EtcdConfig, EtcdTlsConfig, LsmTreeConfig, MemoryConfig,
    PersistenceConfig, RocksDbConfig, SyncMode,
};
pub use error::{OrbitError, OrbitResult};
pub use feed::{LeaseEvent, LeaseEventKind, LeaseSnapshot, LeaseWatch};
pub use metrics::{PersistenceMetrics, ProviderHealth};
pub use provider::{Acquire, AddressableDirectoryProvider, PersistenceProvider, Renew};
pub use recovery::{RecoveryAction, RecoveryReport};
pub use types::{AddressableLease, AddressableReference, Key, NodeId, Timestamp};
