//! # orbit-persistence-lsm
//!
//! The LSM-tree backend of orbit-persistence: the write-heavy embedded store of the lease
//! directory.
//!
//! ## Architecture
//!
//! Bottom-up: a module imports only from the rows above it, except that the [`compaction`]
//! folder spans two layers (its strategy sits below [`shared`], which holds the one in use; its
//! job runs above it). `scripts/check-module-cycles.py` keeps the crate free of import cycles.
//!
//! | module | concept |
//! |---|---|
//! | [`value`] | entries, lookup results, the sequence number that sees everything |
//! | [`coding`] | varints |
//! | [`sstable::block`] | data blocks: prefix-compressed keys, restart points |
//! | [`cache`] | the block cache |
//! | [`sstable`] | table files ([`sstable::builder`] writes one, [`sstable::table`] reads one): blocks, bloom filter, index, footer |
//! | [`levels`] | the tables by level |
//! | [`memtable`] | the skiplist memtable, versioned by batch sequence number |
//! | [`merge`] | iterators over memtables, tables and levels, and their merge |
//! | [`manifest`] | the durable list of tables and the WAL start |
//! | [`version`] | the published state (this engine's version) readers use |
//! | [`compaction`] | what a compaction is, the strategies (leveled), and running one |
//! | [`shared`] | what the writer, the background threads and the readers share |
//! | [`output`] | writing new tables, for flushes and compactions |
//! | [`flush`] | flushing a frozen memtable |
//! | [`background`] | the flush and compaction threads |
//! | [`writer`] | the writer thread: apply, publish, freeze, stall |
//! | [`recovery`] | opening: the manifest's tables, orphans, the WAL replay |
//! | [`engine`] | the engine the provider holds: open, verify, health, metrics, [`Compact`] |
//!
//! The provider itself is core's `DiskDirectory` around [`LsmTree`], this crate's
//! [`Engine`](orbit_persistence_core::engine::Engine):
//! [`LsmDirectory`] is that type; [`Compact`] adds the full compaction only an LSM has.
//!
//! A write is decided on the writer thread (core's `ChangeStager`), appended to the WAL with
//! every other write of its batch and synced once (core's group commit), inserted into the
//! active memtable under the batch's sequence number, and published: readers read as of the
//! sequence number of the state they took, so they never see half a batch. A full memtable is
//! frozen (a new WAL segment starts) and flushed to a level-0 table by the flush thread; the
//! compaction thread merges tables down the levels. Leases and both indexes are key ranges of
//! one tree (core's `keyspace`), so every lease change is one atomic batch.
#![warn(missing_docs)]

pub mod background;
pub mod cache;
pub mod coding;
pub mod compaction;
pub mod engine;
pub mod flush;
pub mod levels;
pub mod manifest;
pub mod memtable;
pub mod merge;
pub mod output;
pub mod recovery;
pub mod shared;
pub mod sstable;
pub mod value;
pub mod version;
pub mod writer;

use orbit_persistence_core::disk_directory::{self, DiskDirectory};

pub use engine::{Compact, L0_COMPACTION_TRIGGER, LsmTree};

/// The lease directory on an LSM tree. Open it with [`LsmDirectory::open`].
pub type LsmDirectory = DiskDirectory<LsmTree>;

/// A consistent read-only view of an [`LsmDirectory`] ([`LsmDirectory::snapshot`]).
pub type Snapshot = disk_directory::Snapshot<version::Version>;
