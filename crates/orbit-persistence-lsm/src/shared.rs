//! What the writer thread, the flush thread, the compaction thread and the readers share: the
//! published [`Version`], the manifest, the settings, the counters, and the signals between the
//! threads.
//!
//! # Threads
//!
//! - The **writer** (core's group commit) appends each batch to the WAL, applies it to the
//!   active memtable and publishes a new state; when the memtable is full it freezes it and
//!   starts a new WAL segment. It stalls (counted in the metrics) while too many memtables wait
//!   for flush or level 0 holds too many tables.
//! - The **flush** thread writes the oldest frozen memtable to a level-0 table, records it in the
//!   manifest with the new WAL start, publishes, and deletes the WAL segments it covered.
//! - The **compaction** thread asks the [`crate::compaction::CompactionStrategy`] for work and
//!   runs it: merge, write, record in the manifest, publish, delete the inputs.
//!
//! A failure on a background thread is kept in [`Signals::error`]; the writer fails its next
//! batch with it, which poisons the store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use orbit_persistence_core::engine::Published;
use orbit_persistence_core::fs::FileSystem;
use orbit_persistence_core::{OrbitError, OrbitResult};

use crate::cache::BlockCache;
use crate::compaction::strategy::CompactionStrategy;
use crate::manifest::Manifest;
use crate::version::Version;

/// The engine's settings, from `LsmTreeConfig`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Freeze the active memtable at this many bytes.
    pub memtable_size: u64,
    /// Frozen memtables allowed before writers stall.
    pub max_immutable_memtables: usize,
    /// Bloom filter false-positive rate.
    pub bloom_fp_rate: f64,
    /// Data block size.
    pub block_size: usize,
    /// Target size of one compaction output table.
    pub table_size: u64,
    /// Compaction write limit, bytes per second (0: none).
    pub compaction_rate_limit: u64,
    /// Events the change history keeps (0: none).
    pub watch_history: u64,
}

/// Level-0 tables at which writers stall until compaction catches up.
pub const L0_STALL_TABLES: usize = 20;

/// Counters for the metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Memtables flushed.
    pub flushes: AtomicU64,
    /// Bytes written by flushes.
    pub flush_bytes: AtomicU64,
    /// Compactions run (trivial moves included).
    pub compactions: AtomicU64,
    /// Bytes written by compactions.
    pub compaction_bytes: AtomicU64,
    /// Batches that waited for a flush or a compaction.
    pub stalls: AtomicU64,
    /// Time writers spent stalled, microseconds.
    pub stall_micros: AtomicU64,
    /// Bytes of the current WAL segment.
    pub wal_bytes: AtomicU64,
}

/// What the threads tell each other; guarded by [`Shared::signals`].
#[derive(Debug, Default)]
pub struct Signals {
    /// A background thread failed: the store is poisoned.
    pub error: Option<String>,
    /// The store is closing: background threads stop after their current step.
    pub closing: bool,
    /// Full compactions asked for.
    pub full_compactions_requested: u64,
    /// Full compactions finished.
    pub full_compactions_done: u64,
}

/// The shared engine.
pub struct Shared {
    /// The file system.
    pub fs: Arc<dyn FileSystem>,
    /// The data directory.
    pub dir: PathBuf,
    /// Settings.
    pub settings: Settings,
    /// The state readers use.
    pub published: Published<Version>,
    /// The manifest; held while an edit is made durable and published, so edits and states
    /// follow in one order.
    pub manifest: Mutex<Manifest>,
    /// Next table id to hand out.
    pub next_table_id: AtomicU64,
    /// The block cache, if enabled.
    pub cache: Option<Arc<BlockCache>>,
    /// How compactions are chosen.
    pub strategy: Box<dyn CompactionStrategy>,
    /// Counters.
    pub stats: Stats,
    /// Signals between the threads.
    pub signals: Mutex<Signals>,
    /// Notified on every change of the state or the signals.
    pub changed: Condvar,
    /// Set by the provider to have the writer freeze the active memtable after its next batch.
    pub freeze_requested: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The current state.
    #[inline]
    pub fn current(&self) -> Arc<Version> {
        self.published.current()
    }

    /// Replaces the state with `f(current)`.
    pub fn publish(&self, f: impl FnOnce(&Version) -> Version) {
        self.published.update(f);
    }

    /// The signals, locked.
    pub fn signals(&self) -> MutexGuard<'_, Signals> {
        self.signals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every thread waiting for a change (taking the lock first, so a waiter between its
    /// check and its wait cannot miss it).
    pub fn notify(&self) {
        drop(self.signals());
        self.changed.notify_all();
    }

    /// Waits for a change, at most `timeout`.
    pub fn wait<'a>(
        &self,
        guard: MutexGuard<'a, Signals>,
        timeout: Duration,
    ) -> MutexGuard<'a, Signals> {
        self.changed
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// Records a background failure (the first one wins) and wakes everyone.
    pub fn fail(&self, what: &str, e: &OrbitError) {
        tracing::error!(error = %e, "lsm {what} failed; the store is poisoned");
        let mut s = self.signals();
        s.error.get_or_insert_with(|| format!("{what} failed: {e}"));
        drop(s);
        self.changed.notify_all();
    }

    /// The background failure, if any, as an error.
    pub fn check_background(&self) -> OrbitResult<()> {
        match &self.signals().error {
            Some(e) => Err(OrbitError::Unavailable(format!(
                "lsm background thread: {e}"
            ))),
            None => Ok(()),
        }
    }

    /// A new table id.
    pub fn new_table_id(&self) -> u64 {
        self.next_table_id.fetch_add(1, Ordering::Relaxed)
    }
}
