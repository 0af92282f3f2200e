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
//! | [`checkpoint`] | writing changed nodes and the free list; the page lifecycle |
//! | [`version`] | published versions, reader guards, key layout, [`Snapshot`] |
//! | [`writer`] | recovery, and the group-commit handler that applies and checkpoints |
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
pub mod meta;
pub mod page;
pub mod pagefile;
pub mod version;
pub mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use orbit_persistence_core::fs::{FileSystem, StdFileSystem};
use orbit_persistence_core::identity;
use orbit_persistence_core::keyspace::LeaseKv;
use orbit_persistence_core::lease_writes::{LeaseWrites, Lifecycle, Writes};
use orbit_persistence_core::lock::DirLock;
use orbit_persistence_core::metrics::MetricsRecorder;
use orbit_persistence_core::verify::{MAX_PROBLEMS, VerifyReport};
use orbit_persistence_core::wal::Access;
use orbit_persistence_core::{
    AddressableLease, AddressableReference, Clock, CowBTreeConfig, NodeId, OrbitError, OrbitResult,
    PersistenceMetrics, PersistenceProvider, ProviderHealth, RecoveryReport,
};

pub use version::Snapshot;
use writer::{Settings, Shared, Writer};

/// An error that means a bug in this crate, not bad input or bad bytes.
pub(crate) fn internal(what: impl std::fmt::Display) -> OrbitError {
    OrbitError::Unavailable(format!("cowbtree internal error: {what}"))
}

/// The lease directory on a copy-on-write B+tree. Open it with [`CowBTreeDirectory::open`].
pub struct CowBTreeDirectory {
    shared: Arc<Shared>,
    writes: Writes<Writer>,
    metrics: Arc<MetricsRecorder>,
    fs: Arc<dyn FileSystem>,
    dir: std::path::PathBuf,
    life: Lifecycle,
    recovery: RecoveryReport,
}

impl std::fmt::Debug for CowBTreeDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CowBTreeDirectory")
            .field("dir", &self.dir)
            .field("closed", &self.life.is_closed())
            .finish_non_exhaustive()
    }
}

impl CowBTreeDirectory {
    /// Opens (creating if needed) the store in `config.data_dir`, recovering from the last
    /// checkpoint and the WAL. Blocking: call it from `spawn_blocking` inside a runtime.
    ///
    /// Errors: `Config` for an invalid config (naming the field) or a page size that differs
    /// from the file's; `Locked` if another open store holds the directory; `Corruption`
    /// naming the file and offset of any bad byte recovery needs.
    pub fn open(config: &CowBTreeConfig, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        Self::open_locked(config, clock, Access::ReadWrite)
    }

    /// Opens the store in `config.data_dir` for reading only: creates, deletes and writes
    /// nothing (no lock file, no WAL replayed into a new segment, no checkpoint), so it works
    /// on a read-only mount and a full disk. The WAL is replayed in memory; writes answer
    /// `ReadOnly`. Takes a shared lock: readers go together, never beside a writer.
    ///
    /// Errors: as [`CowBTreeDirectory::open`], and `WrongStore` for a directory that holds no
    /// store of this engine (an absent one too).
    pub fn open_read_only(config: &CowBTreeConfig, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        Self::open_locked(config, clock, Access::ReadOnly)
    }

    /// Opens `config.data_dir` on the real file system under its lock ([`identity::lock`]).
    fn open_locked(
        config: &CowBTreeConfig,
        clock: Arc<dyn Clock>,
        access: Access,
    ) -> OrbitResult<Self> {
        config.validate()?;
        let lock = identity::lock(&config.data_dir, &writer::FILES, access)?;
        Self::open_inner(Arc::new(StdFileSystem::new()), config, clock, lock, access)
    }

    /// Opens the store in `dir` with the default settings.
    pub fn open_dir(dir: &Path, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        let config = CowBTreeConfig {
            data_dir: dir.to_path_buf(),
            ..CowBTreeConfig::default()
        };
        Self::open(&config, clock)
    }

    /// Opens the store on another file system (the fault-injecting one of the tests). No OS
    /// lock is taken: the caller guarantees nobody else opens the directory.
    pub fn open_on(
        fs: Arc<dyn FileSystem>,
        config: &CowBTreeConfig,
        clock: Arc<dyn Clock>,
    ) -> OrbitResult<Self> {
        config.validate()?;
        Self::open_inner(fs, config, clock, None, Access::ReadWrite)
    }

    fn open_inner(
        fs: Arc<dyn FileSystem>,
        config: &CowBTreeConfig,
        clock: Arc<dyn Clock>,
        lock: Option<DirLock>,
        access: Access,
    ) -> OrbitResult<Self> {
        let settings = Settings {
            page_size: config.page_size as usize,
            checkpoint_interval: Duration::from_millis(config.checkpoint_interval_ms),
            wal_size_limit: config.wal_size_limit,
            cache_size: config.cache_size,
            now: clock.now(),
        };
        let mut recovery = RecoveryReport::default();
        let (writer, shared) = Writer::open(
            Arc::clone(&fs),
            &config.data_dir,
            settings,
            access,
            &mut recovery,
        )?;
        let metrics = Arc::new(MetricsRecorder::default());
        let writes = Writes::start(
            access,
            "cowbtree-writer",
            writer,
            config.sync,
            clock,
            &metrics,
            &config.data_dir,
        )?;
        Ok(CowBTreeDirectory {
            shared,
            writes,
            metrics,
            fs,
            dir: config.data_dir.clone(),
            life: Lifecycle::new(lock),
            recovery,
        })
    }

    /// A consistent read-only view of the directory as of now; see [`Snapshot`].
    pub fn snapshot(&self) -> OrbitResult<Snapshot> {
        self.check_open()?;
        Ok(Snapshot::new(self.shared.current()))
    }

    /// Reads the whole tree back: every page of the lease and index ranges (each page's
    /// checksum is checked the first time this open reads it) and every lease and index
    /// entry, which must agree. The meta pages, the free list and the WAL were checked when
    /// the store opened; what recovery did then is in the report. Blocking reads run off the
    /// runtime's workers.
    pub async fn verify(&self) -> OrbitResult<VerifyReport> {
        self.check_open()?;
        let version = self.shared.current();
        let recovery = self.recovery.clone();
        let page_size = self.shared.layout.page_size as u64;
        tokio::task::spawn_blocking(move || {
            // Only the tree's pages are read, not the whole file (free pages are not).
            let mut report = VerifyReport {
                recovery,
                ..VerifyReport::default()
            };
            report.add_index_check(LeaseKv(&version.view()).index_problems(MAX_PROBLEMS));
            report.files_checked = 1;
            report.bytes_checked = version.store.checked_pages() * page_size;
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
        self.read(|v| LeaseKv(&v.view()).lease(r))
    }

    fn read_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        self.read(|v| LeaseKv(&v.view()).node_leases(node))
    }

    fn read<T>(&self, f: impl FnOnce(&version::Version) -> OrbitResult<T>) -> OrbitResult<T> {
        self.check_open()?;
        let start = Instant::now();
        let out = f(&self.shared.current());
        self.metrics.read_done(start);
        out
    }
}

#[async_trait]
impl PersistenceProvider for CowBTreeDirectory {
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
        if self.writes.is_poisoned() {
            return ProviderHealth::Unhealthy {
                reason: "poisoned by a failed write or sync; reopen to recover".into(),
            };
        }
        ProviderHealth::Healthy
    }

    async fn recovery_report(&self) -> RecoveryReport {
        self.recovery.clone()
    }

    async fn metrics(&self) -> PersistenceMetrics {
        let v = self.shared.current();
        let s = &self.shared.stats;
        let gc = self.writes.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let page_size = self.shared.layout.page_size as u64;
        let engine = [
            ("checkpoints", load(&s.checkpoints)),
            ("checkpoint_micros", load(&s.checkpoint_micros)),
            ("pages_written", load(&s.pages_written)),
            ("page_count", load(&s.page_count)),
            ("free_pages", load(&s.free_pages)),
            ("wal_bytes", load(&s.wal_bytes)),
            ("loaded_pages", load(&s.loaded_pages)),
            ("page_size", page_size),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        PersistenceMetrics {
            lease_count: v.lease_count,
            last_revision: v.revision,
            write_batches: gc.batches,
            syncs: gc.syncs,
            disk_bytes: orbit_persistence_core::fs::dir_bytes(&*self.fs, &self.dir),
            memory_bytes: load(&s.loaded_pages) * page_size,
            recovery_actions: self.recovery.len(),
            engine,
            ..self.metrics.snapshot()
        }
    }
}

orbit_persistence_core::directory_over_lease_writes!(CowBTreeDirectory, writes);
