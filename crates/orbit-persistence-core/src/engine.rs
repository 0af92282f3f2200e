//! The engine half of a disk provider: what the copy-on-write B+tree and the LSM tree each
//! implement, while [`crate::disk_directory::DiskDirectory`] is the provider written once around
//! them (lock, lifecycle, reads, writes, health, metrics, shutdown).
//!
//! An engine has three parts, named the same way in every engine crate:
//!
//! - its **version** ([`Version`]): one immutable published state of the store, which a reader
//!   takes (an `Arc` clone, from the engine's [`Published`] slot) and reads with no lock held;
//! - its **writer** ([`EngineWriter`]): the state of the group-commit thread, which decides each
//!   request against the working state, applies durable batches and publishes new versions;
//!   [`LeaseCommit`] wraps it into core's [`CommitHandler`] so the logging and staging around
//!   it are written once;
//! - the **engine** itself ([`Engine`]): what the provider holds while the store is open (the
//!   published version, the counters, the background threads' shared state).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::change::{ChangeStager, LeaseChange, WriteOutcome, WriteRequest, decode_changes};
use crate::config::{CowBTreeConfig, LsmTreeConfig, SyncMode};
use crate::feed::FeedSignal;
use crate::fs::FileSystem;
use crate::group_commit::CommitHandler;
use crate::identity::EngineFiles;
use crate::keyspace::KvSnapshot;
use crate::log::{LogBatch, LogRecord, LogWriter};
use crate::recovery::RecoveryReport;
use crate::verify::VerifyReport;
use crate::wal::Access;
use crate::{
    AddressableLease, AddressableReference, NodeId, OrbitResult, ProviderHealth, Timestamp,
};

/// The config section of a disk engine.
pub trait EngineConfig: Clone + Default + Send + Sync + 'static {
    /// The data directory.
    fn data_dir(&self) -> &Path;
    /// The same settings on another data directory.
    fn with_data_dir(&self, dir: &Path) -> Self;
    /// Durability of acknowledged writes.
    fn sync(&self) -> SyncMode;
    /// `Config` naming the first invalid field.
    fn validate(&self) -> OrbitResult<()>;
    /// Changes the change feed keeps (0: none).
    fn watch_history(&self) -> u64;
}

macro_rules! engine_config {
    ($ty:ty) => {
        impl EngineConfig for $ty {
            fn data_dir(&self) -> &Path {
                &self.data_dir
            }

            fn with_data_dir(&self, dir: &Path) -> Self {
                Self {
                    data_dir: dir.to_path_buf(),
                    ..self.clone()
                }
            }

            fn sync(&self) -> SyncMode {
                self.sync
            }

            fn validate(&self) -> OrbitResult<()> {
                <$ty>::validate(self)
            }

            fn watch_history(&self) -> u64 {
                self.watch_history
            }
        }
    };
}

engine_config!(CowBTreeConfig);
engine_config!(LsmTreeConfig);

/// One published state of a disk engine, readable as the key space of [`crate::keyspace`].
///
/// The two point reads are written in the engine crate (each is
/// `LeaseKv(&self.kv()).lease(r)` or `.node_leases(node)`), not here once: that compiles the
/// read path, key space and engine together, where the engine's page and block reads inline
/// into it. Generic code here would be compiled in the crate that names the engine, a call
/// away from those reads (the read rows of the benchmark showed it).
pub trait Version: KvSnapshot + Send + Sync + 'static {
    /// Leases in it.
    fn lease_count(&self) -> u64;
    /// Highest revision in it.
    fn revision(&self) -> u64;
    /// The lease of `r` in it.
    fn lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>>;
    /// Every lease of `node` in it.
    fn node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>>;
}

/// Where a writer publishes versions and readers take them: an `Arc` swapped under a short
/// write lock and cloned under a short read lock, so a reader holds no lock while it reads and
/// a writer never waits for one.
#[derive(Debug)]
pub struct Published<V> {
    slot: RwLock<Arc<V>>,
}

impl<V> Published<V> {
    /// A slot holding `first`.
    pub fn new(first: V) -> Self {
        Published {
            slot: RwLock::new(Arc::new(first)),
        }
    }

    /// The current version.
    #[inline]
    pub fn current(&self) -> Arc<V> {
        Arc::clone(&self.slot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes `next` the current version. The one it replaces is dropped after the lock is
    /// let go (dropping it can free a lot).
    pub fn publish(&self, next: Arc<V>) {
        let old = std::mem::replace(
            &mut *self.slot.write().unwrap_or_else(PoisonError::into_inner),
            next,
        );
        drop(old);
    }

    /// Replaces the current version with `f(current)`, under the write lock: concurrent
    /// updates (an LSM's writer, flush and compaction) apply in one order, none lost.
    pub fn update(&self, f: impl FnOnce(&V) -> V) {
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        let next = Arc::new(f(&slot));
        let old = std::mem::replace(&mut *slot, next);
        drop(slot);
        drop(old);
    }
}

/// What an engine reports for the metrics, beside what the provider counts itself.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Bytes the engine holds in memory (caches, memtables).
    pub memory_bytes: u64,
    /// Engine-specific counters, by name.
    pub counters: BTreeMap<String, u64>,
}

impl EngineMetrics {
    /// Counters from `(name, value)` pairs.
    pub fn counters<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> BTreeMap<String, u64> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

/// The engine-specific half of a disk provider; see the module docs.
pub trait Engine: Send + Sync + Sized + 'static {
    /// Its config section.
    type Config: EngineConfig;
    /// One published state.
    type Version: Version;
    /// The writer thread's state.
    type Writer: EngineWriter;

    /// Short name, for thread names and messages (`"cowbtree"`).
    const NAME: &'static str;
    /// Its files, for the store identity and the lock ([`crate::identity`]).
    const FILES: EngineFiles;

    /// Opens (or creates) the store in `config`'s data directory on `fs` and recovers it,
    /// recording in `report` what recovery did. The caller holds the directory lock (a shared
    /// one for `ReadOnly`). `now` is the creation time of a store this open creates.
    ///
    /// `ReadOnly` creates, deletes and writes nothing and starts no thread; the writer returned
    /// is dropped unstarted and the published version serves reads.
    fn open(
        fs: Arc<dyn FileSystem>,
        config: &Self::Config,
        now: Timestamp,
        access: Access,
        report: &mut RecoveryReport,
    ) -> OrbitResult<(Self, Self::Writer)>;

    /// The current published version.
    fn current(&self) -> Arc<Self::Version>;

    /// Reads the files of `version` back, checksums checked, counting into `report`; the
    /// provider checks the leases against the indexes itself. Blocking.
    fn verify_files(version: &Self::Version, report: &mut VerifyReport);

    /// The engine's own health (a failed background thread, a write stall); the provider
    /// checks closed and poisoned first.
    fn health(&self) -> ProviderHealth {
        ProviderHealth::Healthy
    }

    /// The engine's counters as of `version`.
    fn metrics(&self, version: &Self::Version) -> EngineMetrics;
}

/// The writer-thread half of an engine; [`LeaseCommit`] drives it.
pub trait EngineWriter: Send + 'static {
    /// The WAL segment batches are appended to.
    fn wal(&mut self) -> &mut LogWriter;

    /// Highest revision applied so far.
    fn revision(&self) -> u64;

    /// Decides `req` with `stager` against the working state (every applied change, published
    /// or not): `stager.stage(&LeaseKv(&working), req, batch)`.
    fn stage(
        &mut self,
        stager: &mut ChangeStager,
        req: WriteRequest,
        batch: &mut LogBatch,
    ) -> OrbitResult<WriteOutcome>;

    /// Applies durable changes to the working state (the lease and its index entries), still
    /// invisible to readers.
    fn apply(&mut self, changes: &[LeaseChange]) -> OrbitResult<()>;

    /// Publishes the working state as the new version.
    fn publish(&mut self);

    /// Housekeeping after a published batch (a checkpoint, a memtable freeze, a stall).
    fn after_batch(&mut self) -> OrbitResult<()> {
        Ok(())
    }

    /// The writer is shutting down cleanly (see [`CommitHandler::close`]).
    fn close(&mut self) -> OrbitResult<()> {
        Ok(())
    }
}

/// Applies the WAL records recovery read (each one request's changes) to `writer`.
pub fn replay<W: EngineWriter>(
    writer: &mut W,
    records: &[(PathBuf, LogRecord)],
) -> OrbitResult<()> {
    for (path, record) in records {
        // The payload starts after the 8-byte record header.
        let changes = decode_changes(&record.payload)
            .map_err(|e| e.into_corruption(path, record.offset + 8))?;
        writer.apply(&changes)?;
    }
    Ok(())
}

/// The group-commit handler of every disk engine: stages requests with core's
/// [`ChangeStager`], appends each batch to the engine's WAL (one `fdatasync` per batch), and
/// hands the durable changes to the engine's writer.
pub struct LeaseCommit<W> {
    writer: W,
    stager: ChangeStager,
    feed: Arc<FeedSignal>,
}

impl<W: EngineWriter> LeaseCommit<W> {
    /// Drives `writer`, assigning revisions after the highest it applied, and announcing each
    /// published batch on `feed`.
    pub fn new(writer: W, feed: Arc<FeedSignal>) -> Self {
        let stager = ChangeStager::new(writer.revision());
        LeaseCommit {
            writer,
            stager,
            feed,
        }
    }
}

impl<W: EngineWriter> CommitHandler for LeaseCommit<W> {
    type Request = WriteRequest;
    type Response = WriteOutcome;

    fn stage(&mut self, req: WriteRequest, batch: &mut LogBatch) -> OrbitResult<WriteOutcome> {
        self.writer.stage(&mut self.stager, req, batch)
    }

    fn write(&mut self, batch: &LogBatch, sync: bool) -> OrbitResult<()> {
        let wal = self.writer.wal();
        wal.append(batch)?;
        if sync {
            wal.sync()?;
        }
        let changes = self.stager.take();
        self.writer.apply(&changes)
    }

    fn publish(&mut self) {
        self.writer.publish();
        self.feed.published(self.stager.last_revision());
    }

    fn abort(&mut self) {
        self.stager.abort();
    }

    fn sync(&mut self) -> OrbitResult<()> {
        self.writer.wal().sync()
    }

    fn after_batch(&mut self) -> OrbitResult<()> {
        self.writer.after_batch()
    }

    fn close(&mut self) -> OrbitResult<()> {
        self.writer.close()
    }
}
