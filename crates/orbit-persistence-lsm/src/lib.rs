//! # orbit-persistence-lsm
//!
//! The LSM-tree backend of orbit-persistence: the write-heavy embedded store of the lease
//! directory.
//!
//! ## Architecture
//!
//! | module | concept |
//! |---|---|
//! | [`memtable`] | the skiplist memtable, versioned by batch sequence number |
//! | [`block`] | data blocks: prefix-compressed keys, restart points |
//! | [`sstable`] | table files: blocks, bloom filter, index, footer |
//! | [`cache`] | the block cache |
//! | [`merge`] | iterators over memtables, tables and levels, and their merge |
//! | [`levels`] | the tables by level |
//! | [`manifest`] | the durable list of tables and the WAL start |
//! | [`compaction`] | compaction strategies (leveled) and running a compaction |
//! | [`flush`] | writing new tables; flushing a frozen memtable |
//! | [`state`] | the published state readers use |
//! | [`tree`] | what the threads share |
//! | [`writer`] | recovery, the group-commit handler, the background threads |
//!
//! A write is decided on the writer thread (core's `ChangeStager`), appended to the WAL with
//! every other write of its batch and synced once (core's group commit), inserted into the
//! active memtable under the batch's sequence number, and published: readers read as of the
//! sequence number of the state they took, so they never see half a batch. A full memtable is
//! frozen (a new WAL segment starts) and flushed to a level-0 table by the flush thread; the
//! compaction thread merges tables down the levels. Leases and both indexes are key ranges of
//! one tree (core's `keyspace`), so every lease change is one atomic batch.
#![warn(missing_docs)]

pub mod block;
pub mod cache;
pub mod compaction;
pub mod flush;
pub mod levels;
pub mod manifest;
pub mod memtable;
pub mod merge;
pub mod sstable;
pub mod state;
pub mod tree;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use orbit_persistence_core::change::{WriteOp, WriteRequest};
use orbit_persistence_core::fs::{FileSystem, StdFileSystem};
use orbit_persistence_core::identity;
use orbit_persistence_core::keyspace::LeaseKv;
use orbit_persistence_core::lease_writes::{LeaseWrites, Lifecycle, Writes};
use orbit_persistence_core::lock::DirLock;
use orbit_persistence_core::metrics::MetricsRecorder;
use orbit_persistence_core::verify::{MAX_PROBLEMS, VerifyReport};
use orbit_persistence_core::wal::Access;
use orbit_persistence_core::{
    AddressableLease, AddressableReference, Clock, LsmTreeConfig, NodeId, OrbitError, OrbitResult,
    PersistenceMetrics, PersistenceProvider, ProviderHealth, RecoveryReport,
};

pub use state::Snapshot;

use compaction::Leveled;
use tree::{Settings, Tree};
use writer::Writer;

/// Level-0 tables that trigger a compaction into level 1.
pub const L0_COMPACTION_TRIGGER: usize = 4;

/// An error that means a bug in this crate, not bad input or bad bytes.
pub(crate) fn internal(what: impl std::fmt::Display) -> OrbitError {
    OrbitError::Unavailable(format!("lsm internal error: {what}"))
}

/// The lease directory on an LSM tree. Open it with [`LsmDirectory::open`].
pub struct LsmDirectory {
    tree: Arc<Tree>,
    writes: Writes<Writer>,
    metrics: Arc<MetricsRecorder>,
    life: Lifecycle,
    recovery: RecoveryReport,
}

impl std::fmt::Debug for LsmDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LsmDirectory")
            .field("dir", &self.tree.dir)
            .field("closed", &self.life.is_closed())
            .finish_non_exhaustive()
    }
}

impl LsmDirectory {
    /// Opens (creating if needed) the store in `config.data_dir`: the manifest's tables plus a
    /// replay of the WAL of the memtables not yet flushed. Blocking: call it from
    /// `spawn_blocking` inside a runtime.
    ///
    /// Errors: `Config` for an invalid config (naming the field); `Locked` if another open
    /// store holds the directory; `Corruption` naming the file and offset of any bad byte
    /// recovery needs.
    pub fn open(config: &LsmTreeConfig, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        Self::open_locked(config, clock, Access::ReadWrite)
    }

    /// Opens the store in `config.data_dir` for reading only: creates, deletes and writes
    /// nothing (no lock file, no new WAL segment, no flush or compaction, no thread), so it
    /// works on a read-only mount and a full disk. The WAL is replayed into memory; writes
    /// answer `ReadOnly`. Takes a shared lock: readers go together, never beside a writer.
    ///
    /// Errors: as [`LsmDirectory::open`], and `WrongStore` for a directory that holds no
    /// store of this engine (an absent one too).
    pub fn open_read_only(config: &LsmTreeConfig, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        Self::open_locked(config, clock, Access::ReadOnly)
    }

    /// Opens `config.data_dir` on the real file system under its lock ([`identity::lock`]).
    fn open_locked(
        config: &LsmTreeConfig,
        clock: Arc<dyn Clock>,
        access: Access,
    ) -> OrbitResult<Self> {
        config.validate()?;
        let lock = identity::lock(&config.data_dir, &writer::FILES, access)?;
        Self::open_inner(Arc::new(StdFileSystem::new()), config, clock, lock, access)
    }

    /// Opens the store in `dir` with the default settings.
    pub fn open_dir(dir: &Path, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        let config = LsmTreeConfig {
            data_dir: dir.to_path_buf(),
            ..LsmTreeConfig::default()
        };
        Self::open(&config, clock)
    }

    /// Opens the store on another file system (the fault-injecting one of the tests). No OS
    /// lock is taken: the caller guarantees nobody else opens the directory.
    pub fn open_on(
        fs: Arc<dyn FileSystem>,
        config: &LsmTreeConfig,
        clock: Arc<dyn Clock>,
    ) -> OrbitResult<Self> {
        config.validate()?;
        Self::open_inner(fs, config, clock, None, Access::ReadWrite)
    }

    fn open_inner(
        fs: Arc<dyn FileSystem>,
        config: &LsmTreeConfig,
        clock: Arc<dyn Clock>,
        lock: Option<DirLock>,
        access: Access,
    ) -> OrbitResult<Self> {
        let settings = Settings {
            memtable_size: config.memtable_size,
            max_immutable_memtables: config.max_immutable_memtables as usize,
            bloom_fp_rate: config.bloom_filter_fp_rate,
            block_size: config.block_size as usize,
            table_size: (config.level1_size / 8).max(u64::from(config.block_size) * 4),
            compaction_rate_limit: config.compaction_rate_limit,
        };
        let strategy = Box::new(Leveled::new(
            L0_COMPACTION_TRIGGER,
            config.level1_size,
            config.level_fanout.into(),
        ));
        let mut recovery = RecoveryReport::default();
        let (writer, tree) = Writer::open(
            fs,
            &config.data_dir,
            settings,
            config.block_cache_size,
            strategy,
            clock.now(),
            access,
            &mut recovery,
        )?;
        let metrics = Arc::new(MetricsRecorder::default());
        let writes = Writes::start(
            access,
            "lsm-writer",
            writer,
            config.sync,
            clock,
            &metrics,
            &config.data_dir,
        )?;
        Ok(LsmDirectory {
            tree,
            writes,
            metrics,
            life: Lifecycle::new(lock),
            recovery,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &PathBuf {
        &self.tree.dir
    }

    /// Flushes every memtable and merges every table into one sorted run at the deepest level,
    /// dropping every tombstone: what is left on disk is the live data only. Reads and writes go
    /// on meanwhile. Useful after a large purge, or before a backup.
    pub async fn compact(&self) -> OrbitResult<()> {
        self.check_open()?;
        let writes = Arc::clone(self.writes()?);
        self.tree.freeze_requested.store(true, Ordering::Release);
        // A request that changes nothing: the writer freezes the memtable after its batch.
        let now = writes.clock().now();
        writes
            .writer()
            .submit(WriteRequest {
                op: WriteOp::Cleanup { limit: 0 },
                now,
            })
            .await?;
        let tree = Arc::clone(&self.tree);
        tokio::task::spawn_blocking(move || {
            writer::full_compaction_blocking(&tree, || writes.writer().is_poisoned())
        })
        .await
        .unwrap_or_else(|e| Err(internal(format!("compaction task failed: {e}"))))
    }

    /// A consistent read-only view of the directory as of now; see [`Snapshot`].
    pub fn snapshot(&self) -> OrbitResult<Snapshot> {
        self.check_open()?;
        Ok(Snapshot::new(self.tree.current()))
    }

    /// Reads the whole store back: every block of every table (from the files, checksums
    /// checked) and every lease and index entry, which must agree. The manifest and the WAL
    /// were checked when the store opened. Blocking reads run off the runtime's workers.
    pub async fn verify(&self) -> OrbitResult<VerifyReport> {
        self.check_open()?;
        let state = self.tree.current();
        let recovery = self.recovery.clone();
        tokio::task::spawn_blocking(move || {
            let mut report = VerifyReport {
                recovery,
                ..VerifyReport::default()
            };
            for t in state.levels.levels.iter().flatten() {
                report.files_checked += 1;
                report.bytes_checked += t.meta.file_size;
                for e in t.table.verify() {
                    report.problem(e.to_string());
                }
            }
            report.add_index_check(LeaseKv(&state.view()).index_problems(MAX_PROBLEMS));
            report
        })
        .await
        .map_err(|e| internal(format!("verify task failed: {e}")))
    }

    fn check_open(&self) -> OrbitResult<()> {
        self.life.check_open()
    }

    /// The writer; `ReadOnly` for a store opened read-only.
    fn writes(&self) -> OrbitResult<&Arc<LeaseWrites<Writer>>> {
        self.writes.get()
    }

    fn read_lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        self.read(|s| LeaseKv(&s.view()).lease(r))
    }

    fn read_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        self.read(|s| LeaseKv(&s.view()).node_leases(node))
    }

    fn read<T>(&self, f: impl FnOnce(&state::State) -> OrbitResult<T>) -> OrbitResult<T> {
        self.check_open()?;
        let start = Instant::now();
        let out = f(&self.tree.current());
        self.metrics.read_done(start);
        out
    }
}

#[async_trait]
impl PersistenceProvider for LsmDirectory {
    async fn initialize(&self) -> OrbitResult<()> {
        self.check_open()
    }

    async fn shutdown(&self) -> OrbitResult<()> {
        self.life.shutdown(|| self.writes.shutdown()).await
    }

    async fn health_check(&self) -> ProviderHealth {
        if self.life.is_closed() {
            return ProviderHealth::Unhealthy {
                reason: "closed".into(),
            };
        }
        if let Err(e) = self.tree.check_background() {
            return ProviderHealth::Unhealthy {
                reason: format!("{e}; reopen to recover"),
            };
        }
        if self.writes.is_poisoned() {
            return ProviderHealth::Unhealthy {
                reason: "poisoned by a failed write or sync; reopen to recover".into(),
            };
        }
        let state = self.tree.current();
        if state.frozen.len() > self.tree.settings.max_immutable_memtables {
            return ProviderHealth::Degraded {
                reason: format!(
                    "{} memtables wait for flush: writes stall",
                    state.frozen.len()
                ),
            };
        }
        ProviderHealth::Healthy
    }

    async fn recovery_report(&self) -> RecoveryReport {
        self.recovery.clone()
    }

    async fn metrics(&self) -> PersistenceMetrics {
        let state = self.tree.current();
        let s = &self.tree.stats;
        let gc = self.writes.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let memtable_bytes =
            state.active.bytes() + state.frozen.iter().map(|f| f.mem.bytes()).sum::<u64>();
        let mut engine: std::collections::BTreeMap<String, u64> = [
            ("memtable_bytes", memtable_bytes),
            ("frozen_memtables", state.frozen.len() as u64),
            ("tables", state.levels.table_count() as u64),
            ("table_bytes", state.levels.total_bytes()),
            ("flushes", load(&s.flushes)),
            ("flush_bytes", load(&s.flush_bytes)),
            ("compactions", load(&s.compactions)),
            ("compaction_bytes", load(&s.compaction_bytes)),
            ("write_stalls", load(&s.stalls)),
            ("write_stall_micros", load(&s.stall_micros)),
            ("wal_bytes", load(&s.wal_bytes)),
            (
                "block_cache_bytes",
                self.tree.cache.as_ref().map_or(0, |c| c.bytes()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (level, tables) in state.levels.levels.iter().enumerate() {
            engine.insert(format!("level{level}_tables"), tables.len() as u64);
            engine.insert(
                format!("level{level}_bytes"),
                state.levels.level_bytes(level),
            );
        }
        PersistenceMetrics {
            lease_count: state.lease_count,
            last_revision: state.revision,
            write_batches: gc.batches,
            syncs: gc.syncs,
            disk_bytes: orbit_persistence_core::fs::dir_bytes(&*self.tree.fs, &self.tree.dir),
            memory_bytes: memtable_bytes + self.tree.cache.as_ref().map_or(0, |c| c.bytes()),
            recovery_actions: self.recovery.len(),
            engine: engine.into_iter().collect(),
            ..self.metrics.snapshot()
        }
    }
}

orbit_persistence_core::directory_over_lease_writes!(LsmDirectory, writes);
