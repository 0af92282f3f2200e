//! The provider of every embedded disk engine, written once: [`DiskDirectory`] holds an
//! [`Engine`] and does what does not depend on it: the directory lock, opening and shutting
//! down, input validation, reads of the published [`Version`] (no lock held while reading), the
//! group-commit writer ([`LeaseWrites`] over [`LeaseCommit`]), health, metrics, `verify`,
//! [`Snapshot`]s and the change feed.
//!
//! # The change feed
//!
//! The engine keeps the history in its key space ([`keyspace::apply_change`] writes each
//! change's event in the change's own atomic write), so a watcher reads it from the published
//! version like any other key range: [`LeaseCommit`] announces each published batch on a
//! [`FeedSignal`], and each watcher ([`HistoryFeed`]) wakes and reads what it has not seen. No
//! watcher holds a buffer the writer fills; shutdown closes the signal.
//!
//! # Opening
//!
//! [`DiskDirectory::open`] validates the config, takes the directory's lock
//! ([`identity::lock`]: exclusive, after checking that the directory holds this engine's store
//! or nothing), and lets the engine recover. [`DiskDirectory::open_read_only`] takes a shared
//! lock and starts no writer. [`DiskDirectory::open_on`] opens on another file system (the
//! fault-injecting one of the tests) without an OS lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::backup::{self, BackupHeader, BackupSummary};
use crate::engine::{Engine, EngineConfig, EngineMetrics, LeaseCommit, Version};
use crate::feed::{
    FEED_BATCH, FeedSignal, History, HistoryFeed, LeaseEvent, LeaseSnapshot, LeaseWatch,
};
use crate::fs::{FileSystem, StdFileSystem, dir_bytes};
use crate::identity;
use crate::keyspace::{self, KvSnapshot, LeaseKv};
use crate::lease_writes::{LeaseWrites, Lifecycle, Writes};
use crate::lock::DirLock;
use crate::metrics::MetricsRecorder;
use crate::verify::{MAX_PROBLEMS, VerifyReport};
use crate::wal::Access;
use crate::{
    Acquire, AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, NodeId,
    OrbitError, OrbitResult, PersistenceMetrics, PersistenceProvider, ProviderHealth,
    RecoveryReport, Renew, Timestamp, rules,
};

/// The lease directory on the disk engine `E`; see the module docs.
pub struct DiskDirectory<E: Engine> {
    engine: Arc<E>,
    feed: Arc<FeedSignal>,
    watch_history: u64,
    writes: Writes<LeaseCommit<E::Writer>>,
    metrics: Arc<MetricsRecorder>,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    life: Lifecycle,
    recovery: RecoveryReport,
}

impl<E: Engine> std::fmt::Debug for DiskDirectory<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskDirectory")
            .field("engine", &E::NAME)
            .field("dir", &self.dir)
            .field("closed", &self.life.is_closed())
            .finish_non_exhaustive()
    }
}

impl<E: Engine> DiskDirectory<E> {
    /// Opens (creating if needed) the store in `config`'s data directory and recovers it.
    /// Blocking: call it from `spawn_blocking` inside a runtime.
    ///
    /// Errors: `Config` for an invalid config (naming the field, or a setting the existing
    /// files contradict); `Locked` if another open store holds the directory; `WrongStore` for
    /// a directory of other files or another engine's store; `Corruption` naming the file and
    /// offset of any bad byte recovery needs.
    pub fn open(config: &E::Config, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        Self::open_locked(config, clock, Access::ReadWrite)
    }

    /// Opens the store for reading only: creates, deletes and writes nothing (no lock file, no
    /// new WAL segment, no checkpoint or flush, no thread), so it works on a read-only mount
    /// and a full disk. The WAL is replayed in memory; writes answer `ReadOnly`. Takes a shared
    /// lock: readers go together, never beside a writer.
    ///
    /// Errors: as [`DiskDirectory::open`], and `WrongStore` for a directory that holds no store
    /// of this engine (an absent one too).
    pub fn open_read_only(config: &E::Config, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        Self::open_locked(config, clock, Access::ReadOnly)
    }

    /// Opens the store in `dir` with the default settings.
    pub fn open_dir(dir: &Path, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        Self::open(&E::Config::default().with_data_dir(dir), clock)
    }

    /// Opens the store on another file system (the fault-injecting one of the tests). No OS
    /// lock is taken: the caller guarantees nobody else opens the directory.
    pub fn open_on(
        fs: Arc<dyn FileSystem>,
        config: &E::Config,
        clock: Arc<dyn Clock>,
    ) -> OrbitResult<Self> {
        config.validate()?;
        Self::open_inner(fs, config, clock, None, Access::ReadWrite)
    }

    fn open_locked(config: &E::Config, clock: Arc<dyn Clock>, access: Access) -> OrbitResult<Self> {
        config.validate()?;
        let lock = identity::lock(config.data_dir(), &E::FILES, access)?;
        Self::open_inner(Arc::new(StdFileSystem::new()), config, clock, lock, access)
    }

    fn open_inner(
        fs: Arc<dyn FileSystem>,
        config: &E::Config,
        clock: Arc<dyn Clock>,
        lock: Option<DirLock>,
        access: Access,
    ) -> OrbitResult<Self> {
        let mut recovery = RecoveryReport::default();
        let (engine, writer) =
            E::open(Arc::clone(&fs), config, clock.now(), access, &mut recovery)?;
        let metrics = Arc::new(MetricsRecorder::default());
        let feed = Arc::new(FeedSignal::new(engine.current().revision()));
        let writes = Writes::start(
            access,
            &format!("{}-writer", E::NAME),
            LeaseCommit::new(writer, Arc::clone(&feed)),
            config.sync(),
            clock,
            &metrics,
            config.data_dir(),
        )?;
        Ok(DiskDirectory {
            engine: Arc::new(engine),
            feed,
            watch_history: config.watch_history(),
            writes,
            metrics,
            fs,
            dir: config.data_dir().to_path_buf(),
            life: Lifecycle::new(lock),
            recovery,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine, for what only it offers (an LSM's full compaction).
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The writer; `ReadOnly` for a store opened read-only, `Closed` after shutdown.
    pub fn writes(&self) -> OrbitResult<&Arc<LeaseWrites<LeaseCommit<E::Writer>>>> {
        self.life.check_open()?;
        self.writes.get()
    }

    /// A consistent read-only view of the directory as of now; see [`Snapshot`].
    pub fn snapshot(&self) -> OrbitResult<Snapshot<E::Version>> {
        self.life.check_open()?;
        Ok(Snapshot {
            version: self.engine.current(),
        })
    }

    /// Reads the whole store back: every page, block or table the current version reaches
    /// (checksums checked) and every lease and index entry, which must agree. The roots and the
    /// WAL were checked when the store opened; what recovery did then is in the report.
    /// Blocking reads run off the runtime's workers.
    pub async fn verify(&self) -> OrbitResult<VerifyReport> {
        self.life.check_open()?;
        let version = self.engine.current();
        let recovery = self.recovery.clone();
        tokio::task::spawn_blocking(move || {
            let mut report = VerifyReport {
                recovery,
                ..VerifyReport::default()
            };
            E::verify_files(&version, &mut report);
            let kv = version.kv();
            report.add_index_check(LeaseKv(&kv).index_problems(MAX_PROBLEMS));
            // Every event of the change history decodes (a chunk at a time).
            let mut from = 0;
            loop {
                match LeaseKv(&kv).history(from, u64::MAX, FEED_BATCH) {
                    Ok(events) => match events.last() {
                        Some(last) if events.len() == FEED_BATCH => from = last.revision + 1,
                        _ => break,
                    },
                    Err(e) => {
                        report.problem(e.to_string());
                        break;
                    }
                }
            }
            report
        })
        .await
        .map_err(|e| OrbitError::internal(E::NAME, format!("the verify task failed: {e}")))
    }

    /// Runs `f` on the current version, timed as a read.
    fn read<T>(&self, f: impl FnOnce(&E::Version) -> OrbitResult<T>) -> OrbitResult<T> {
        self.life.check_open()?;
        let start = Instant::now();
        let out = f(&self.engine.current());
        self.metrics.read_done(start);
        out
    }
}

#[async_trait]
impl<E: Engine> PersistenceProvider for DiskDirectory<E> {
    async fn initialize(&self) -> OrbitResult<()> {
        self.life.check_open()
    }

    async fn shutdown(&self) -> OrbitResult<()> {
        let closed = self.life.shutdown(|| self.writes.shutdown()).await;
        self.feed.close();
        closed
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
        self.engine.health()
    }

    async fn recovery_report(&self) -> RecoveryReport {
        self.recovery.clone()
    }

    async fn metrics(&self) -> PersistenceMetrics {
        let version = self.engine.current();
        let EngineMetrics {
            memory_bytes,
            counters,
        } = self.engine.metrics(&version);
        let gc = self.writes.stats();
        let (log_write_histogram, batch_size_histogram) = self.writes.histograms();
        // Listing the directory and statvfs are file-system calls: off the async workers (a
        // scrape of `/metrics` runs on one).
        let (fs, dir) = (Arc::clone(&self.fs), self.dir.clone());
        let (disk_bytes, disk_free_bytes) = tokio::task::spawn_blocking(move || {
            (
                dir_bytes(&*fs, &dir),
                crate::fs::free_bytes(&dir).unwrap_or(0),
            )
        })
        .await
        .unwrap_or((0, 0));
        PersistenceMetrics {
            lease_count: version.lease_count(),
            last_revision: version.revision(),
            write_batches: gc.batches,
            syncs: gc.syncs,
            disk_bytes,
            disk_free_bytes,
            log_write_histogram,
            batch_size_histogram,
            memory_bytes,
            recovery_actions: self.recovery.len(),
            engine: counters,
            ..self.metrics.snapshot()
        }
    }
}

#[async_trait]
impl<E: Engine> AddressableDirectoryProvider for DiskDirectory<E> {
    async fn store_lease(&self, lease: &AddressableLease) -> OrbitResult<()> {
        self.writes()?.store(std::slice::from_ref(lease)).await
    }

    async fn get_lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        rules::validate_reference(r)?;
        self.read(|v| v.lease(r))
    }

    async fn remove_lease(&self, r: &AddressableReference) -> OrbitResult<bool> {
        self.writes()?.remove(r).await
    }

    async fn list_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        rules::validate_node(node)?;
        self.read(|v| v.node_leases(node))
    }

    async fn cleanup_expired_leases(&self) -> OrbitResult<u64> {
        self.writes()?.cleanup().await
    }

    async fn remove_node_leases(&self, node: &NodeId) -> OrbitResult<u64> {
        self.writes()?.remove_node(node).await
    }

    async fn current_revision(&self) -> OrbitResult<u64> {
        self.read(|v| Ok(v.revision()))
    }

    async fn snapshot_leases(&self) -> OrbitResult<LeaseSnapshot> {
        let snapshot = self.snapshot()?;
        tokio::task::spawn_blocking(move || {
            Ok(LeaseSnapshot {
                revision: snapshot.revision(),
                leases: snapshot.leases().collect::<OrbitResult<_>>()?,
            })
        })
        .await
        .map_err(|e| OrbitError::internal(E::NAME, format!("the snapshot task failed: {e}")))?
    }

    async fn watch(&self, from_revision: u64) -> OrbitResult<LeaseWatch> {
        self.life.check_open()?;
        if self.watch_history == 0 {
            return Err(OrbitError::Config(format!(
                "{}: watch_history = 0 keeps no change history; the change feed is off",
                E::NAME
            )));
        }
        let history = Arc::new(EngineHistory(Arc::clone(&self.engine)));
        Ok(LeaseWatch::new(HistoryFeed::new(
            history,
            &self.feed,
            from_revision,
        )))
    }

    async fn backup(&self, dest: &Path) -> OrbitResult<BackupSummary> {
        let snapshot = self.snapshot()?;
        let (fs, dest) = (Arc::clone(&self.fs), dest.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let header = BackupHeader::now(E::NAME, snapshot.revision(), snapshot.lease_count());
            backup::write_backup(fs, &dest, header, snapshot.leases())
        })
        .await
        .map_err(|e| OrbitError::internal(E::NAME, format!("the backup task failed: {e}")))?
    }

    async fn restore_leases(&self, leases: &[AddressableLease], revision: u64) -> OrbitResult<()> {
        self.writes()?.restore(leases, revision).await
    }

    async fn replicate(&self, events: &[LeaseEvent]) -> OrbitResult<()> {
        self.writes()?.replicate(events).await
    }

    async fn acquire_lease(&self, lease: &AddressableLease) -> OrbitResult<Acquire> {
        self.writes()?.acquire(lease).await
    }

    async fn renew_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
        expires_at: Timestamp,
        renew_at: Timestamp,
    ) -> OrbitResult<Renew> {
        let writes = self.writes()?;
        writes.renew(r, owner, revision, expires_at, renew_at).await
    }

    async fn release_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
    ) -> OrbitResult<bool> {
        self.writes()?.release(r, owner, revision).await
    }

    async fn store_leases(&self, leases: &[AddressableLease]) -> OrbitResult<()> {
        self.writes()?.store(leases).await
    }
}

/// A consistent, read-only, point-in-time view of a disk directory: what a backup or a dump
/// iterates. It sees no write made after it was taken, and keeps what its version reaches
/// alive while it lives (the copy-on-write tree's pages are not reused, the LSM's memtables
/// and replaced tables stay open), so do not keep one for hours under heavy writes.
#[derive(Debug)]
pub struct Snapshot<V> {
    version: Arc<V>,
}

impl<V> Clone for Snapshot<V> {
    fn clone(&self) -> Self {
        Snapshot {
            version: Arc::clone(&self.version),
        }
    }
}

impl<V: Version> Snapshot<V> {
    /// The lease of `r` as of the snapshot.
    pub fn get(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        self.version.lease(r)
    }

    /// Every lease of `node` as of the snapshot.
    pub fn node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        self.version.node_leases(node)
    }

    /// Number of leases in the snapshot.
    pub fn lease_count(&self) -> u64 {
        self.version.lease_count()
    }

    /// Highest revision in the snapshot.
    pub fn revision(&self) -> u64 {
        self.version.revision()
    }

    /// Every lease of the snapshot in reference order, read in chunks. It may read files:
    /// blocking.
    pub fn leases(&self) -> keyspace::Leases<Self> {
        keyspace::Leases::new(self.clone())
    }
}

impl<V: Version> KvSnapshot for Snapshot<V> {
    type Kv<'a> = V::Kv<'a>;

    fn kv(&self) -> V::Kv<'_> {
        self.version.kv()
    }
}

/// The change history an engine keeps in its key space, read from its current version.
struct EngineHistory<E>(Arc<E>);

impl<E: Engine> History for EngineHistory<E> {
    fn read(&self, from: u64, upto: u64, limit: usize) -> OrbitResult<Vec<LeaseEvent>> {
        LeaseKv(&self.0.current().kv()).history(from, upto, limit)
    }
}
