//! # orbit-persistence
//!
//! The lease directory of an Orbit-style virtual-actor system, with the backend chosen by
//! configuration: [`open`] reads a [`PersistenceConfig`] (from TOML, the environment or code)
//! and returns the directory behind the one trait, [`AddressableDirectoryProvider`].
//!
//! Each backend is a cargo feature, so an application compiles only what it uses:
//!
//! | `backend` in the config | cargo feature | crate |
//! |---|---|---|
//! | `memory` | `memory` (default) | `orbit-persistence-memory` |
//! | `cow_btree` | `cowbtree` | `orbit-persistence-cowbtree` |
//! | `lsm_tree` | `lsm` | `orbit-persistence-lsm` |
//! | `rocksdb` | `rocksdb` (builds RocksDB's C++) | `orbit-persistence-rocksdb` |
//! | `etcd` | `etcd` (a client of an etcd cluster) | `orbit-persistence-etcd` |
//!
//! A config naming a backend that is not compiled in gets
//! [`OrbitError::BackendNotCompiled`], whose message names the feature to enable.
//!
//! ```
//! # fn main() -> orbit_persistence::OrbitResult<()> {
//! use std::sync::Arc;
//! use orbit_persistence::{PersistenceConfig, SystemClock};
//!
//! let config = PersistenceConfig::from_toml_str(r#"backend = "memory""#)?;
//! let directory = orbit_persistence::open(&config, Arc::new(SystemClock))?;
//! # Ok(()) }
//! ```
//!
//! Everything of `orbit-persistence-core` (the data model, the traits, errors, config, clock) is
//! re-exported here.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use orbit_persistence_core::*;

#[cfg(feature = "prometheus")]
pub mod exporter;
pub mod migrate;

use orbit_persistence_core::backup::{BackupSummary, RestoreSummary};
use orbit_persistence_core::fs::{FileSystem, StdFileSystem};

/// Opens the directory `config` names, after validating the config (errors name the field).
///
/// The disk backends open (and recover) their data directory here, which is blocking file I/O:
/// inside an async program, call this from `tokio::task::spawn_blocking`.
///
/// The etcd backend connects to its cluster here, which needs a multi-thread tokio runtime
/// (the connection's tasks run on it): call `open` from inside one; a current-thread runtime or
/// none at all is a `Config` error, never a panic.
///
/// Errors: `Config` for an invalid config; `BackendNotCompiled` for a backend whose cargo
/// feature is off; whatever the backend's open returns (`Locked`, `Corruption`, `Io`, and
/// `Unavailable` for an unreachable cluster).
///
/// A data directory that a live migration left (see [`migrate`]) is settled first: an
/// interrupted migration is rolled back or finished, and a directory migrated elsewhere opens
/// the store it moved to (logged with `tracing`): the one authoritative copy, never a stale one.
pub fn open(
    config: &PersistenceConfig,
    clock: Arc<dyn Clock>,
) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    open_settled(config, clock).map(|(store, _)| store)
}

/// [`open`], returning the config of the store it opened (another one's after a migration).
fn open_settled(
    config: &PersistenceConfig,
    clock: Arc<dyn Clock>,
) -> OrbitResult<(Arc<dyn AddressableDirectoryProvider>, PersistenceConfig)> {
    config.validate()?;
    let config = migrate::settle(&StdFileSystem::new(), config)?;
    Ok((open_backend(&config, clock)?, config))
}

/// Opens the backend `config` names, as it is.
fn open_backend(
    config: &PersistenceConfig,
    clock: Arc<dyn Clock>,
) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    config.validate()?;
    let _ = &clock; // unused when no backend feature is on
    match config.backend {
        #[cfg(feature = "memory")]
        BackendType::Memory => Ok(Arc::new(orbit_persistence_memory::MemoryDirectory::new(
            &config.memory_or_default(),
            clock,
        )?)),
        #[cfg(feature = "cowbtree")]
        BackendType::CowBTree => Ok(Arc::new(
            orbit_persistence_cowbtree::CowBTreeDirectory::open(
                &config.cow_btree_or_default(),
                clock,
            )?,
        )),
        #[cfg(feature = "lsm")]
        BackendType::LsmTree => Ok(Arc::new(orbit_persistence_lsm::LsmDirectory::open(
            &config.lsm_tree_or_default(),
            clock,
        )?)),
        #[cfg(feature = "rocksdb")]
        BackendType::RocksDB => Ok(Arc::new(orbit_persistence_rocksdb::RocksDbDirectory::open(
            &config.rocksdb_or_default(),
            clock,
        )?)),
        #[cfg(feature = "etcd")]
        BackendType::Etcd => Ok(Arc::new(open_etcd(&config.etcd_or_default(), clock)?)),
        #[allow(unreachable_patterns)]
        other => Err(OrbitError::BackendNotCompiled(other)),
    }
}

/// Opens the directory `config` names for inspection: the embedded engines (`cow_btree`,
/// `lsm_tree`, `rocksdb`) open read-only, creating, deleting and writing nothing (no lock
/// file, no WAL replayed into a new segment, no checkpoint, flush or compaction), so this
/// works on a read-only mount and a full disk; writes answer `ReadOnly`. A directory without
/// a store is `WrongStore`, never a new empty store.
///
/// RocksDB opens in its own read-only mode, which writes nothing either. etcd connects as
/// with [`open`] (reads change nothing there). The memory backend is `Config`: a new process
/// would only ever see an empty store.
///
/// A directory a live migration moved elsewhere opens the store it moved to; one whose
/// migration was interrupted opens as it is, settling nothing ([`migrate::settle_read_only`]).
///
/// Blocking, like [`open`]: call it from `tokio::task::spawn_blocking` inside a runtime.
pub fn open_read_only(
    config: &PersistenceConfig,
    clock: Arc<dyn Clock>,
) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    config.validate()?;
    let config = &migrate::settle_read_only(&StdFileSystem::new(), config)?;
    match config.backend {
        BackendType::Memory => Err(OrbitError::Config(
            "the memory backend keeps nothing between processes: there is no store to open \
             read-only"
                .into(),
        )),
        #[cfg(feature = "cowbtree")]
        BackendType::CowBTree => Ok(Arc::new(
            orbit_persistence_cowbtree::CowBTreeDirectory::open_read_only(
                &config.cow_btree_or_default(),
                clock,
            )?,
        )),
        #[cfg(feature = "lsm")]
        BackendType::LsmTree => Ok(Arc::new(
            orbit_persistence_lsm::LsmDirectory::open_read_only(
                &config.lsm_tree_or_default(),
                clock,
            )?,
        )),
        #[cfg(feature = "rocksdb")]
        BackendType::RocksDB => Ok(Arc::new(
            orbit_persistence_rocksdb::RocksDbDirectory::open_read_only(
                &config.rocksdb_or_default(),
                clock,
            )?,
        )),
        _ => open_backend(config, clock),
    }
}

/// Connects to etcd from synchronous code running on a multi-thread tokio runtime (a worker
/// thread or the blocking pool).
#[cfg(feature = "etcd")]
fn open_etcd(
    config: &EtcdConfig,
    clock: Arc<dyn Clock>,
) -> OrbitResult<orbit_persistence_etcd::EtcdDirectory> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let not_on_tokio = || {
        OrbitError::Config(
            "the etcd backend needs a multi-thread tokio runtime: call open inside one".into(),
        )
    };
    let handle = Handle::try_current().map_err(|_| not_on_tokio())?;
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        return Err(not_on_tokio());
    }
    let connect = orbit_persistence_etcd::EtcdDirectory::connect(config, clock);
    tokio::task::block_in_place(|| handle.block_on(connect))
}

/// Why `verify` and `dump` refuse the etcd backend.
#[cfg(feature = "etcd")]
const ETCD_OFFLINE: &str = "verify and dump read a local data directory; an etcd cluster checks \
     its own data (etcdctl endpoint hashkv, etcdctl check datascale)";

/// Opens the store of type `$backend` with `$config` on the blocking pool (with the system
/// clock), for a command that reads it and closes it: `verify`, `dump`; `$open` is the
/// backend's open function (`open_read_only` where it has one).
#[allow(unused_macros)]
macro_rules! open_offline {
    ($backend:path, $open:ident, $config:expr) => {{
        let config = $config;
        blocking(move || <$backend>::$open(&config, Arc::new(SystemClock))).await?
    }};
}

/// Opens the store `config` names (read-only, as [`open_read_only`] does, following a
/// migration) and reads it all back: every checksum the backend's `verify` covers, and that the leases and both indexes
/// agree (see `LsmDirectory::verify` and `CowBTreeDirectory::verify`). A problem found while
/// opening (a bad manifest, a torn meta page) is the error; what recovery did is in the
/// report. The memory backend has nothing on disk: its report is empty. For
/// RocksDB, every block is read with RocksDB's checksum verification and both indexes are
/// checked against the leases in both directions (`RocksDbDirectory::verify`).
pub async fn verify(config: &PersistenceConfig) -> OrbitResult<verify::VerifyReport> {
    config.validate()?;
    let config = &migrate::settle_read_only(&StdFileSystem::new(), config)?;
    match config.backend {
        #[cfg(feature = "memory")]
        BackendType::Memory => Ok(verify::VerifyReport::default()),
        #[cfg(feature = "cowbtree")]
        BackendType::CowBTree => {
            let store = open_offline!(
                orbit_persistence_cowbtree::CowBTreeDirectory,
                open_read_only,
                config.cow_btree_or_default()
            );
            finish_verify(store.verify().await, store.shutdown().await)
        }
        #[cfg(feature = "lsm")]
        BackendType::LsmTree => {
            let store = open_offline!(
                orbit_persistence_lsm::LsmDirectory,
                open_read_only,
                config.lsm_tree_or_default()
            );
            finish_verify(store.verify().await, store.shutdown().await)
        }
        #[cfg(feature = "rocksdb")]
        BackendType::RocksDB => {
            let store = open_offline!(
                orbit_persistence_rocksdb::RocksDbDirectory,
                open_read_only,
                config.rocksdb_or_default()
            );
            finish_verify(store.verify().await, store.shutdown().await)
        }
        #[cfg(feature = "etcd")]
        BackendType::Etcd => Err(OrbitError::Config(ETCD_OFFLINE.into())),
        #[allow(unreachable_patterns)]
        other => Err(OrbitError::BackendNotCompiled(other)),
    }
}

/// Opens the store `config` names (read-only, as [`open_read_only`] does) and calls `each`
/// with every lease of a consistent snapshot,
/// in reference order (a backup, or `orbit-persistence dump`); returns how many. `each` runs on
/// the blocking pool. The memory backend starts empty in a new process: it dumps nothing.
pub async fn dump(
    config: &PersistenceConfig,
    mut each: impl FnMut(AddressableLease) -> OrbitResult<()> + Send + 'static,
) -> OrbitResult<u64> {
    config.validate()?;
    let config = &migrate::settle_read_only(&StdFileSystem::new(), config)?;
    let _ = &mut each;
    match config.backend {
        #[cfg(feature = "memory")]
        BackendType::Memory => Ok(0),
        #[cfg(feature = "cowbtree")]
        BackendType::CowBTree => {
            let store = open_offline!(
                orbit_persistence_cowbtree::CowBTreeDirectory,
                open_read_only,
                config.cow_btree_or_default()
            );
            let leases = store.snapshot().map(|snapshot| snapshot.leases());
            dump_from(store, leases, each).await
        }
        #[cfg(feature = "lsm")]
        BackendType::LsmTree => {
            let store = open_offline!(
                orbit_persistence_lsm::LsmDirectory,
                open_read_only,
                config.lsm_tree_or_default()
            );
            let leases = store.snapshot().map(|snapshot| snapshot.leases());
            dump_from(store, leases, each).await
        }
        #[cfg(feature = "rocksdb")]
        BackendType::RocksDB => {
            let store = open_offline!(
                orbit_persistence_rocksdb::RocksDbDirectory,
                open_read_only,
                config.rocksdb_or_default()
            );
            let drained = store.for_each_lease(each).await;
            store.shutdown().await?;
            drained
        }
        #[cfg(feature = "etcd")]
        BackendType::Etcd => Err(OrbitError::Config(ETCD_OFFLINE.into())),
        #[allow(unreachable_patterns)]
        other => Err(OrbitError::BackendNotCompiled(other)),
    }
}

/// Writes a backup of the store `config` names to the new file `dest` (see
/// [`backup`] for the format): opens it as [`open_read_only`]
/// does (etcd: connects), so it works beside nothing but other readers, and on a read-only
/// mount. A store that is open in a service is backed up by that service, online, with
/// [`AddressableDirectoryProvider::backup`]. The memory backend is `Config`: a new process
/// would back up an empty store.
pub async fn backup_store(config: &PersistenceConfig, dest: &Path) -> OrbitResult<BackupSummary> {
    let config = config.clone();
    let store = blocking(move || open_read_only(&config, Arc::new(SystemClock))).await?;
    let written = store.backup(dest).await;
    let closed = store.shutdown().await;
    let summary = written?;
    closed?;
    Ok(summary)
}

/// Restores the backup `file` into a new store as `target` describes, and closes it.
///
/// The whole file is verified first: a damaged, truncated or foreign backup is refused
/// (`Corruption` naming the offset, `WrongStore` for a newer format) before anything is
/// created. The target's data directory must be absent or empty (`InvalidInput` otherwise,
/// nothing touched). The store is built in a staging directory beside it
/// (`.<name>.restoring`, removed first if a crashed restore left one), closed, and renamed
/// into place, so a crash mid-restore leaves no half-made store where the config points. The
/// restored store holds every lease with its revision, and its next revision is above the
/// backup's: fencing tokens never go backwards.
///
/// The memory backend keeps nothing between processes (restore into an open one with
/// [`restore::restore_into`]); etcd assigns revisions itself, so leases cannot keep theirs
/// there: both are `Config`.
pub async fn restore(file: &Path, target: &PersistenceConfig) -> OrbitResult<RestoreSummary> {
    target.validate()?;
    let fs: Arc<dyn FileSystem> = Arc::new(StdFileSystem::new());
    let (verify_fs, verify_file) = (Arc::clone(&fs), file.to_path_buf());
    blocking(move || backup::verify_backup(&*verify_fs, &verify_file)).await?;
    let Some(dir) = target.data_dir() else {
        return Err(OrbitError::Config(format!(
            "a backup restores into a store with a data directory (cow_btree, lsm_tree, \
             rocksdb), not {}: {}",
            target.backend.as_str(),
            match target.backend {
                BackendType::Etcd => "etcd assigns every revision itself",
                _ => "the memory backend keeps nothing between processes",
            }
        )));
    };
    let (staging, _) = sibling_dir(&dir, "restoring")?;
    let (check_fs, check_dir, check_staging) = (Arc::clone(&fs), dir.clone(), staging.clone());
    blocking(move || {
        if check_fs.exists(&check_dir)? && !check_fs.list_dir(&check_dir)?.is_empty() {
            return Err(OrbitError::invalid(format!(
                "{} is not empty: a backup restores only into an absent or empty directory",
                check_dir.display()
            )));
        }
        // What a crash left of an earlier restore.
        remove_dir(&check_staging)
    })
    .await?;
    let staged = target.with_data_dir(&staging);
    let store = blocking(move || open(&staged, Arc::new(SystemClock))).await?;
    let restored =
        restore::restore_into(Arc::clone(&fs), file, &*store, target.backend.as_str()).await;
    let closed = store.shutdown().await;
    drop(store);
    let placed = match (restored, closed) {
        (Ok(summary), Ok(())) => {
            let (staging, dir) = (staging.clone(), dir.clone());
            blocking(move || move_into_place(&*fs, &staging, &dir).map(|()| summary)).await
        }
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    };
    if placed.is_err() {
        let _ = blocking(move || remove_dir(&staging)).await;
    }
    placed
}

/// Moves the fully built `staging` directory to `dir`, which is absent or empty (rename(2)
/// replaces an empty directory), and syncs their parent so the move survives a crash: the
/// last step of a restore and of a migration, and of settling one interrupted after its
/// switch. Blocking.
fn move_into_place(fs: &dyn FileSystem, staging: &Path, dir: &Path) -> OrbitResult<()> {
    std::fs::rename(staging, dir).map_err(|e| OrbitError::io("rename", staging, e))?;
    fs.sync_dir(orbit_persistence_core::fs::parent_dir(dir))
}

/// Removes `dir` and everything in it; an absent one is fine. Blocking.
fn remove_dir(dir: &Path) -> OrbitResult<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(OrbitError::io("remove_dir_all", dir, e)),
    }
}

/// The staging directory a restore or migration into `dir` builds in
/// (`.<name>.<suffix>` beside it), and their parent.
fn sibling_dir(dir: &Path, suffix: &str) -> OrbitResult<(PathBuf, PathBuf)> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(OrbitError::Config(format!(
            "{} has no parent directory to build a store beside",
            dir.display()
        )));
    };
    let parent = match parent.as_os_str().is_empty() {
        true => PathBuf::from("."),
        false => parent.to_path_buf(),
    };
    let mut staging = std::ffi::OsString::from(".");
    staging.push(name);
    staging.push(".");
    staging.push(suffix);
    Ok((parent.join(staging), parent))
}

/// A verify's report, with a failure to close the store added to it: a background thread
/// that met the same bad bytes poisons the store, and that is a finding, not a lost report.
#[allow(dead_code)]
fn finish_verify(
    report: OrbitResult<verify::VerifyReport>,
    closed: OrbitResult<()>,
) -> OrbitResult<verify::VerifyReport> {
    let mut report = report?;
    if let Err(e) = closed {
        report.problem(format!("closing the store after verifying it: {e}"));
    }
    Ok(report)
}

/// Feeds every lease of `leases` (a snapshot of `store`) to `each` on the blocking pool, then
/// closes `store`; returns how many leases there were.
#[allow(dead_code)]
async fn dump_from(
    store: impl PersistenceProvider,
    leases: OrbitResult<impl Iterator<Item = OrbitResult<AddressableLease>> + Send + 'static>,
    mut each: impl FnMut(AddressableLease) -> OrbitResult<()> + Send + 'static,
) -> OrbitResult<u64> {
    let drained = match leases {
        Ok(leases) => {
            blocking(move || {
                let mut n = 0;
                for lease in leases {
                    each(lease?)?;
                    n += 1;
                }
                Ok(n)
            })
            .await
        }
        Err(e) => Err(e),
    };
    store.shutdown().await?;
    drained
}

/// Runs a blocking open on the blocking pool.
#[allow(dead_code)]
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> OrbitResult<T> + Send + 'static,
) -> OrbitResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        OrbitError::internal("orbit-persistence", format!("the open task failed: {e}"))
    })?
}

/// The backends compiled into this build.
pub fn compiled_backends() -> Vec<BackendType> {
    [
        (BackendType::Memory, cfg!(feature = "memory")),
        (BackendType::CowBTree, cfg!(feature = "cowbtree")),
        (BackendType::LsmTree, cfg!(feature = "lsm")),
        (BackendType::RocksDB, cfg!(feature = "rocksdb")),
        (BackendType::Etcd, cfg!(feature = "etcd")),
    ]
    .into_iter()
    .filter_map(|(b, on)| on.then_some(b))
    .collect()
}
