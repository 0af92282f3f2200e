//! # orbit-persistence-rocksdb
//!
//! The lease directory on RocksDB: leases and their node and expiry indexes in three column
//! families, every change one `WriteBatch` (synced under `SyncMode::Always`, batched with
//! concurrent writers by RocksDB's own group commit), conditional operations serialized per
//! reference by striped locks, never by a global lock. Every RocksDB call that may do file I/O
//! runs on tokio's blocking pool, never on a worker thread; a point read first tries RocksDB's
//! memory-only tier (memtables and block cache) in place and hops to the pool only on a miss.
//!
//! Layout and tuning: [`options`]. The data directory holds `LOCK` (our exclusive lock: a second
//! open, from this or another process, is `Locked` before RocksDB is touched), `ORBIT-STORE`
//! (the store's identity, `orbit_persistence_core::identity`) and `db/`, the RocksDB database.
//! RocksDB may create a database only while the identity says the store is being created;
//! afterwards a missing `db/CURRENT` is `Corruption`, never a new empty database.
//!
//! Sync modes: `always` syncs the WAL in each write; `interval_ms = N` writes unsynced and a
//! background thread syncs the WAL every N ms; `never` leaves it to RocksDB (and shutdown).
#![warn(missing_docs)]

pub mod options;
mod store;
mod stripes;
mod verify;
mod wal_check;
mod watermark;

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use orbit_persistence_core::backup::BackupSummary;
use orbit_persistence_core::feed::{History, HistoryFeed};
use orbit_persistence_core::fs::StdFileSystem;
use orbit_persistence_core::identity::{self, EngineFiles, Plan};
use orbit_persistence_core::lock::DirLock;
use orbit_persistence_core::metrics::MetricsRecorder;
use orbit_persistence_core::verify::VerifyReport;
use orbit_persistence_core::{
    Acquire, AddressableDirectoryProvider, AddressableLease, AddressableReference, BackendType,
    Clock, LeaseEvent, LeaseSnapshot, LeaseWatch, NodeId, OrbitError, OrbitResult,
    PersistenceMetrics, PersistenceProvider, ProviderHealth, RecoveryReport, Renew, RocksDbConfig,
    SyncMode, Timestamp, rules,
};

use store::{Opening, Store};

/// The RocksDB database's directory inside the data directory.
pub const DB_DIR: &str = "db";

/// The files of this engine, for its identity record: the database directory. Nothing is
/// ever deleted to restart a crashed creation (RocksDB finishes its own).
pub const FILES: EngineFiles = EngineFiles {
    engine: BackendType::RocksDB,
    format_version: 1,
    root: DB_DIR,
    owns: |_| false,
};

/// Most expired leases removed by one cleanup batch: bounds how long cleanup holds stripes.
pub const CLEANUP_BATCH: usize = 1024;

/// An open store and the directory lock it lives under.
struct Open {
    store: Arc<Store>,
    /// `None` only for a read-only open of a directory without a `LOCK` file.
    _lock: Option<DirLock>,
}

/// The RocksDB [`AddressableDirectoryProvider`].
pub struct RocksDbDirectory {
    /// The open store, `None` once shut down. An `ArcSwapOption` rather than a mutex: every
    /// call reads it, and with a mutex (and an `Arc` clone) per call two threads bounced the
    /// same cache lines on every get.
    open: ArcSwapOption<Open>,
    clock: Arc<dyn Clock>,
    metrics: MetricsRecorder,
}

impl std::fmt::Debug for RocksDbDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbDirectory").finish_non_exhaustive()
    }
}

fn spawn_interval_sync(store: Weak<Store>, every: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("orbit-rocksdb-sync".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(store) = store.upgrade() else { return };
                // Never retry a failed sync (fsyncgate): refuse further writes instead.
                if let Err(e) = store.sync() {
                    store.poison(format!("the interval WAL sync failed: {e}"));
                    return;
                }
            }
        })
        .map(|_| ())
}

/// Whether the caller runs on a multi-threaded tokio runtime (where `block_in_place` works).
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// `shared` once every other reference to it is gone, waiting until `deadline` at most.
fn sole_owner<T>(mut shared: Arc<T>, deadline: Instant) -> OrbitResult<T> {
    loop {
        match Arc::try_unwrap(shared) {
            Ok(owned) => return Ok(owned),
            Err(still_shared) if Instant::now() < deadline => {
                shared = still_shared;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => {
                return Err(OrbitError::Unavailable(
                    "shutdown: calls still running after 30 s".into(),
                ));
            }
        }
    }
}

impl RocksDbDirectory {
    /// Opens (creating if missing) the store in `config.data_dir`. Blocking: call it from a
    /// blocking context (e.g. `spawn_blocking`) inside an async program.
    pub fn open(config: &RocksDbConfig, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        config.validate()?;
        let (fs, dir) = (StdFileSystem::new(), &config.data_dir);
        // Before the lock file is created: another engine's store or someone else's files are
        // refused without a byte written (the check is repeated under the lock).
        identity::prepare(&fs, dir, &FILES)?;
        let lock = DirLock::acquire(&config.data_dir)?;
        let db = dir.join(DB_DIR);
        let mut report = RecoveryReport::default();
        let store = match identity::prepare(&fs, dir, &FILES)? {
            Plan::Create { restart } => {
                // RocksDB creates its database crash-safely itself: a creation that crashed
                // is finished by opening with `create_if_missing` again.
                let mut id =
                    identity::begin_create(&fs, dir, &FILES, restart, clock.now(), &mut report)?;
                let store = Store::open(config, &db, Opening::Create)?;
                identity::finish_create(&fs, dir, &mut id)?;
                store
            }
            Plan::Open(_) => Store::open(config, &db, Opening::Existing)?,
            Plan::Legacy => {
                let store = Store::open(config, &db, Opening::Existing)?;
                identity::adopt(&fs, dir, &FILES, clock.now(), &mut report)?;
                store
            }
        };
        let store = Arc::new(store);
        if let SyncMode::IntervalMs(ms) = config.sync {
            spawn_interval_sync(Arc::downgrade(&store), Duration::from_millis(ms))
                .map_err(|e| OrbitError::io("spawn the WAL sync thread", &config.data_dir, e))?;
        }
        Ok(RocksDbDirectory {
            open: ArcSwapOption::from_pointee(Open {
                store,
                _lock: Some(lock),
            }),
            clock,
            metrics: MetricsRecorder::default(),
        })
    }

    /// Opens the store in `config.data_dir` for reading only, with RocksDB's read-only mode:
    /// nothing in the directory is created or written (no lock file, no info log, the WAL
    /// replayed into memory only), so it works on a read-only mount and a full disk; writes
    /// answer `ReadOnly`. Takes a shared lock: readers go together, never beside a writer.
    ///
    /// Errors: as [`RocksDbDirectory::open`], and `WrongStore` for a directory that holds no
    /// store (an absent one too).
    pub fn open_read_only(config: &RocksDbConfig, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        config.validate()?;
        let dir = &config.data_dir;
        let lock = DirLock::acquire_shared(dir)?;
        identity::check_readable(dir, identity::prepare(&StdFileSystem::new(), dir, &FILES)?)?;
        let store = Store::open(config, &dir.join(DB_DIR), Opening::ReadOnly)?;
        Ok(RocksDbDirectory {
            open: ArcSwapOption::from_pointee(Open {
                store: Arc::new(store),
                _lock: lock,
            }),
            clock,
            metrics: MetricsRecorder::default(),
        })
    }

    /// Opens the store in `dir` with default settings.
    pub fn open_dir(dir: &Path, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        let config = RocksDbConfig {
            data_dir: dir.to_path_buf(),
            ..RocksDbConfig::default()
        };
        Self::open(&config, clock)
    }

    /// Reads the whole database back (checksums of every block, both indexes against the
    /// leases in both directions, the counters); see the `verify` module.
    pub async fn verify(&self) -> OrbitResult<VerifyReport> {
        self.blocking(|s| Ok(s.verify())).await
    }

    /// Calls `each` with every lease of one snapshot, in reference order (a dump or a backup);
    /// returns how many. Runs off the runtime's workers, like every RocksDB call.
    pub async fn for_each_lease(
        &self,
        mut each: impl FnMut(AddressableLease) -> OrbitResult<()> + Send + 'static,
    ) -> OrbitResult<u64> {
        self.blocking(move |s| s.for_each_lease(&mut each)).await
    }

    /// Runs `f` with the open store, borrowed for the length of the call (no reference count
    /// touched); `Closed` once shut down.
    fn with_store<T>(&self, f: impl FnOnce(&Store) -> OrbitResult<T>) -> OrbitResult<T> {
        match self.open.load().as_ref() {
            Some(open) => f(&open.store),
            None => Err(OrbitError::Closed),
        }
    }

    /// Runs a blocking RocksDB call `f` with the store, off the runtime's worker role.
    ///
    /// On a multi-threaded runtime: `block_in_place`, which hands this worker's queue to
    /// another thread for the duration of the call, so no task waits behind it, and costs no
    /// thread hop. Elsewhere (a current-thread runtime, where `block_in_place` is not allowed):
    /// `spawn_blocking`. Measured against the benchmark's raw RocksDB peer: a
    /// `spawn_blocking` hop per write cost up to half the throughput of the raw crate (mixed
    /// phase 0.50x, cleanup 0.46x); with `block_in_place` they are 0.90x and 0.95x.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> OrbitResult<T> + Send + 'static,
    ) -> OrbitResult<T> {
        if on_multi_thread_runtime() {
            return self.in_place(f);
        }
        let open = self.open.load_full().ok_or(OrbitError::Closed)?;
        tokio::task::spawn_blocking(move || f(&open.store))
            .await
            .map_err(|e| OrbitError::internal("rocksdb", format!("a task failed: {e}")))?
    }

    /// Runs `f` with the store through `block_in_place`: only on a multi-threaded runtime
    /// ([`on_multi_thread_runtime`]). `f` may borrow from the caller (no `'static` copy).
    fn in_place<T>(&self, f: impl FnOnce(&Store) -> OrbitResult<T>) -> OrbitResult<T> {
        self.with_store(|store| tokio::task::block_in_place(|| f(store)))
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> OrbitResult<T> + Send + 'static,
    ) -> OrbitResult<T> {
        let start = Instant::now();
        let out = self.blocking(f).await;
        self.metrics.read_done(start);
        out
    }

    /// Runs the write `f` off the worker threads; `written` says how many lease changes its
    /// outcome made.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> OrbitResult<T> + Send + 'static,
        written: impl FnOnce(&T) -> u64,
    ) -> OrbitResult<T> {
        let start = Instant::now();
        let out = self.blocking(f).await;
        self.metrics.write_done(start, &out, written);
        out
    }
}

#[async_trait]
impl PersistenceProvider for RocksDbDirectory {
    async fn initialize(&self) -> OrbitResult<()> {
        self.with_store(|_| Ok(()))
    }

    async fn shutdown(&self) -> OrbitResult<()> {
        let Some(open) = self.open.swap(None) else {
            return Ok(());
        };
        open.store.feed().close();
        tokio::task::spawn_blocking(move || {
            // Calls still running (and the interval sync thread) hold it a little longer.
            let deadline = Instant::now() + Duration::from_secs(30);
            let Open { store, _lock } = sole_owner(open, deadline)?;
            // Memtables to SST files: the next open then replays no WAL (fast reopen). A
            // read-only store has nothing to sync and may write nothing.
            let synced = match store.is_read_only() {
                true => Ok(()),
                false => store.sync().and_then(|()| store.flush()),
            };
            // The database is closed (and its files released) before the directory lock is.
            drop(sole_owner(store, deadline)?);
            drop(_lock);
            synced
        })
        .await
        .map_err(|e| OrbitError::internal("rocksdb", format!("the shutdown task failed: {e}")))?
    }

    async fn health_check(&self) -> ProviderHealth {
        match self.blocking(|s| Ok(s.health())).await {
            Ok(health) => health,
            Err(e) => ProviderHealth::Unhealthy {
                reason: e.to_string(),
            },
        }
    }

    async fn metrics(&self) -> PersistenceMetrics {
        let base = self.metrics.snapshot();
        // Properties and the counters may read from disk: off the worker threads too.
        self.blocking(move |s| s.metrics(base))
            .await
            .unwrap_or_else(|_| self.metrics.snapshot())
    }
}

#[async_trait]
impl AddressableDirectoryProvider for RocksDbDirectory {
    async fn store_lease(&self, lease: &AddressableLease) -> OrbitResult<()> {
        self.store_leases(std::slice::from_ref(lease)).await
    }

    async fn get_lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        rules::validate_reference(r)?;
        // Hot leases are answered from RocksDB's memory right here; only a read that needs
        // file I/O moves to the blocking pool (a hop costs more than the whole cached read).
        let start = Instant::now();
        if let Some(cached) = self.with_store(|store| store.get_cached(r)).transpose() {
            self.metrics.read_done(start);
            return cached;
        }
        let r = r.clone();
        self.read(move |s| s.get(&r)).await
    }

    async fn remove_lease(&self, r: &AddressableReference) -> OrbitResult<bool> {
        rules::validate_reference(r)?;
        let r = r.clone();
        self.write(move |s| s.remove(&r), |removed| u64::from(*removed))
            .await
    }

    async fn list_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        rules::validate_node(node)?;
        let node = node.clone();
        self.read(move |s| s.list_node(&node)).await
    }

    async fn cleanup_expired_leases(&self) -> OrbitResult<u64> {
        let now = self.clock.now();
        let (mut total, mut after) = (0, None);
        loop {
            let (removed, next) = self
                .write(
                    move |s| s.cleanup_step(now, CLEANUP_BATCH, after),
                    |(removed, _)| *removed,
                )
                .await?;
            total += removed;
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        MetricsRecorder::add(&self.metrics.expired_removed, total);
        Ok(total)
    }

    async fn remove_node_leases(&self, node: &NodeId) -> OrbitResult<u64> {
        rules::validate_node(node)?;
        let (mut total, mut after) = (0, None);
        loop {
            let node = node.clone();
            let (removed, next) = self
                .write(
                    move |s| s.evict_step(&node, CLEANUP_BATCH, after),
                    |(removed, _)| *removed,
                )
                .await?;
            total += removed;
            match next {
                Some(next) => after = Some(next),
                None => return Ok(total),
            }
        }
    }

    async fn current_revision(&self) -> OrbitResult<u64> {
        let open = self.open.load_full().ok_or(OrbitError::Closed)?;
        Ok(open.store.written_revision())
    }

    async fn snapshot_leases(&self) -> OrbitResult<LeaseSnapshot> {
        self.read(|s| s.snapshot_leases()).await
    }

    async fn backup(&self, dest: &Path) -> OrbitResult<BackupSummary> {
        // On a blocking thread of its own: a long backup must not hold a worker.
        let open = self.open.load_full().ok_or(OrbitError::Closed)?;
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || open.store.backup(&dest))
            .await
            .map_err(|e| OrbitError::internal("rocksdb", format!("the backup task failed: {e}")))?
    }

    async fn restore_leases(&self, leases: &[AddressableLease], revision: u64) -> OrbitResult<()> {
        rules::validate_restore(leases, revision)?;
        let leases = leases.to_vec();
        let n = leases.len() as u64;
        self.write(move |s| s.restore(&leases, revision), |_| n)
            .await
    }

    async fn replicate(&self, events: &[LeaseEvent]) -> OrbitResult<()> {
        rules::validate_replicate(events)?;
        let events = events.to_vec();
        let n = events.len() as u64;
        self.write(move |s| s.replicate(&events), |_| n).await
    }

    async fn watch(&self, from_revision: u64) -> OrbitResult<LeaseWatch> {
        let open = self.open.load_full().ok_or(OrbitError::Closed)?;
        if !open.store.keeps_history() {
            return Err(OrbitError::Config(
                "rocksdb: watch_history = 0 (or a read-only open of a store without a history) \
                 keeps no change history; the change feed is off"
                    .into(),
            ));
        }
        let history = Arc::new(StoreHistory(Arc::downgrade(&open.store)));
        Ok(LeaseWatch::new(HistoryFeed::new(
            history,
            open.store.feed(),
            from_revision,
        )))
    }

    async fn acquire_lease(&self, lease: &AddressableLease) -> OrbitResult<Acquire> {
        let now = self.clock.now();
        rules::validate_lease(lease, now)?;
        let lease = lease.clone();
        let out = self
            .write(
                move |s| s.acquire(lease, now),
                |a| u64::from(matches!(a, Acquire::Acquired(_))),
            )
            .await?;
        if matches!(out, Acquire::Held(_)) {
            self.metrics.conflict();
        }
        Ok(out)
    }

    async fn renew_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
        expires_at: Timestamp,
        renew_at: Timestamp,
    ) -> OrbitResult<Renew> {
        rules::validate_renew(r, owner, expires_at, renew_at, self.clock.now())?;
        let (r, owner) = (r.clone(), owner.clone());
        let out = self
            .write(
                move |s| s.renew(&r, &owner, revision, expires_at, renew_at),
                |renewed| u64::from(matches!(renewed, Renew::Renewed(_))),
            )
            .await?;
        if matches!(out, Renew::Lost(_)) {
            self.metrics.conflict();
        }
        Ok(out)
    }

    async fn release_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
    ) -> OrbitResult<bool> {
        rules::validate_release(r, owner)?;
        let (r, owner) = (r.clone(), owner.clone());
        let released = self
            .write(
                move |s| s.release(&r, &owner, revision),
                |released| u64::from(*released),
            )
            .await?;
        if !released {
            self.metrics.conflict();
        }
        Ok(released)
    }

    async fn store_leases(&self, leases: &[AddressableLease]) -> OrbitResult<()> {
        rules::validate_batch(leases, self.clock.now())?;
        let n = leases.len() as u64;
        if on_multi_thread_runtime() {
            // The batch is written from the caller's slice, never copied.
            let start = Instant::now();
            let out = self.in_place(|s| s.store(leases));
            self.metrics.write_done(start, &out, |_| n);
            return out;
        }
        let leases = leases.to_vec();
        self.write(move |s| s.store(&leases), |_| n).await
    }
}

/// The history column family, as a watcher reads it: through a weak reference, so a watcher
/// never keeps a shut-down database open (shutdown waits to be its sole owner).
struct StoreHistory(Weak<Store>);

impl History for StoreHistory {
    fn read(&self, from: u64, upto: u64, limit: usize) -> OrbitResult<Vec<LeaseEvent>> {
        self.0
            .upgrade()
            .ok_or(OrbitError::Closed)?
            .history(from, upto, limit)
    }

    /// A revision a commit took and a crash lost before its batch was written has no event.
    fn gapless(&self) -> bool {
        false
    }
}
