//! # orbit-persistence-cowbtree
//!
//! The copy-on-write B+tree backend of orbit-persistence: the read-heavy, snapshot-capable
//! embedded store of the lease directory.
//!
//! ## Architecture
//!
//! | module | concept |
//! |---|---|
//! | [`page`] | page formats, byte by byte |
//! | [`meta`] | the two alternating meta pages |
//! | [`pagefile`] | reading pages (memory map, CRC checked once) and writing them |
//! | [`btree`] | the copy-on-write B+tree: lookups, scans, inserts, removals |
//! | [`freelist`] | the page allocator and the free list on disk |
//! | [`checkpoint`] | writing changed nodes and the free list; the page lifecycle |
//! | [`engine`] | the engine the provider holds: open, verify, metrics |
//! | [`version`] | published versions, reader guards, a tree as a key space |
//! | [`writer`] | the writer thread: apply, publish, checkpoint |
//! | [`recovery`] | opening: the meta pages, the free list, the WAL replay |
//!
//! The provider itself is core's `DiskDirectory` around [`CowBTree`], this crate's
//! [`Engine`](orbit_persistence_core::engine::Engine): [`CowBTreeDirectory`] is that type.
//!
//! A write is decided on the writer thread (core's `ChangeStager`), appended to the WAL with
//! every other write of its batch and synced once (core's group commit), applied to the working
//! tree in memory, and published as a new [`version::Version`]: readers never wait for the
//! writer and never see half a batch. A checkpoint starts a new WAL segment, then, on its own
//! thread while the writer goes on, writes the changed nodes to free pages, syncs and switches
//! the meta page; recovery is the newest valid meta page plus a replay of the WAL since (bounded
//! by about twice `wal_size_limit`).
//!
//! Reads run in place on the calling task: the lookup is a walk over the memory-mapped pages
//! of the last checkpoint and the nodes changed since, with no lock held and no thread hop.
//! A page that is not in the OS page cache faults in from disk on that thread; see
//! `docs/design-decisions.md` for why this is accepted.
#![warn(missing_docs)]

pub mod btree;
pub mod checkpoint;
pub mod engine;
pub mod freelist;
pub mod meta;
pub mod page;
pub mod pagefile;
pub mod recovery;
pub mod version;
pub mod writer;

use orbit_persistence_core::disk_directory::{self, DiskDirectory};

pub use engine::CowBTree;

/// The lease directory on a copy-on-write B+tree. Open it with [`CowBTreeDirectory::open`].
pub type CowBTreeDirectory = DiskDirectory<CowBTree>;

/// A consistent read-only view of a [`CowBTreeDirectory`] ([`CowBTreeDirectory::snapshot`]).
pub type Snapshot = disk_directory::Snapshot<version::Version>;
