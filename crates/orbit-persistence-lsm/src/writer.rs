//! Recovery at open, the group-commit handler that logs and applies each batch, and the
//! background threads' loops.
//!
//! Recovery: the manifest names the live tables and the first WAL segment to replay; tables
//! the manifest does not name (a flush or compaction that crashed before its edit, or one whose
//! inputs were not deleted yet) are deleted; the WAL segments from the manifest's start on are
//! replayed into a fresh memtable. Replay is bounded by the memtables that were not flushed:
//! at most `(max_immutable_memtables + 1) * memtable_size` of log.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orbit_persistence_core::change::{ChangeStager, LeaseChange, WriteOutcome, WriteRequest};
use orbit_persistence_core::engine::{self, EngineWriter};
use orbit_persistence_core::fs::FileSystem;
use orbit_persistence_core::identity::{self, EngineFiles, Plan};
use orbit_persistence_core::keyspace::{self, CountChange, LeaseKv, OrderedKv, OrderedKvWrite};
use orbit_persistence_core::log::{LogBatch, LogWriter};
use orbit_persistence_core::wal::{self, Access};
use orbit_persistence_core::{
    BackendType, OrbitError, OrbitResult, RecoveryAction, RecoveryReport, Timestamp,
};

use crate::cache::BlockCache;
use crate::compaction::{self, CompactionStrategy};
use crate::flush;
use crate::levels::{Levels, MAX_LEVELS, TableHandle};
use crate::manifest::{MANIFEST, Manifest};
use crate::memtable::{MemEntry, Memtable, SeqKey};
use crate::shared::{L0_STALL_TABLES, Settings, Shared, Signals, Stats};
use crate::sstable::{Table, parse_table_name, table_path};
use crate::value::Lookup;
use crate::version::{Frozen, Version};

/// The files of this engine, for its identity record ([`identity`]).
pub const FILES: EngineFiles = EngineFiles {
    engine: BackendType::LsmTree,
    format_version: crate::sstable::VERSION,
    root: MANIFEST,
    owns: |name| {
        name.starts_with(MANIFEST) || name.starts_with("wal-") || parse_table_name(name).is_some()
    },
};

/// The body of a background thread.
type BackgroundLoop = fn(&Shared);

/// The writer thread's state.
pub struct Writer {
    shared: Arc<Shared>,
    wal: LogWriter,
    wal_seq: u64,
    seq: u64,
    lease_count: u64,
    revision: u64,
    threads: Vec<JoinHandle<()>>,
}

/// The active memtable as the key space [`keyspace::apply_change`] writes; every write takes
/// the next sequence number.
///
/// Lease keys are read and written at once (the next change may read them). Blind writes (the
/// index entries) are collected and inserted at the end of the batch in key order: index keys
/// arrive in random order, and inserting them sorted lets consecutive skiplist searches share
/// the cached upper part of their paths. Each keeps its own sequence number, so the order of
/// insertion changes nothing a reader can see (and the batch is unpublished until then).
struct MemWriter<'a> {
    state: &'a Version,
    seq: &'a mut u64,
    blind: Vec<MemEntry>,
}

impl MemWriter<'_> {
    /// Inserts the collected blind writes, in key order.
    fn finish(mut self) {
        self.blind.sort_by(|a, b| a.user_key().cmp(b.user_key()));
        for entry in self.blind {
            self.state.active.insert_entry(entry);
        }
    }

    fn insert(&mut self, key: &[u8], value: Option<&[u8]>) -> OrbitResult<Lookup> {
        *self.seq += 1;
        match self.state.active.insert(key, value, *self.seq) {
            // Not in the active memtable: older memtables and the tables.
            Lookup::Absent => self.state.latest().lookup_below_active(key),
            found => Ok(found),
        }
    }
}

impl OrderedKvWrite for MemWriter<'_> {
    fn replace(&mut self, key: &[u8], value: &[u8]) -> OrbitResult<Option<Vec<u8>>> {
        Ok(match self.insert(key, Some(value))? {
            Lookup::Value(v) => Some(v),
            Lookup::Deleted | Lookup::Absent => None,
        })
    }

    fn take(&mut self, key: &[u8]) -> OrbitResult<Option<Vec<u8>>> {
        // A tombstone for a key that turns out absent is harmless, and rare.
        Ok(match self.insert(key, None)? {
            Lookup::Value(v) => Some(v),
            Lookup::Deleted | Lookup::Absent => None,
        })
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> OrbitResult<()> {
        *self.seq += 1;
        self.blind.push(MemEntry::new(key, Some(value), *self.seq));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> OrbitResult<()> {
        *self.seq += 1;
        self.blind.push(MemEntry::new(key, None, *self.seq));
        Ok(())
    }

    fn corrupt(&self, detail: String) -> OrbitError {
        self.state.latest().corrupt(detail)
    }
}

/// Opens the tables the manifest names, in levels, after deleting the files nobody names.
fn open_levels(
    fs: &dyn FileSystem,
    dir: &Path,
    manifest: &Manifest,
    cache: &Option<Arc<BlockCache>>,
    access: Access,
    report: &mut RecoveryReport,
) -> OrbitResult<Levels> {
    let tables = &manifest.state().tables;
    // Read-only: files nobody names are simply not read.
    let names = match access {
        Access::ReadWrite => fs.list_dir(dir)?,
        Access::ReadOnly => Vec::new(),
    };
    for name in names {
        let orphan = parse_table_name(&name).is_some_and(|id| !tables.contains_key(&id));
        if orphan || name == format!("{MANIFEST}.tmp") {
            let path = dir.join(&name);
            fs.remove_file(&path)?;
            report.record(RecoveryAction::OrphanRemoved { path });
        }
    }
    let mut levels = Levels::default();
    for meta in tables.values() {
        let path = table_path(dir, meta.id);
        if !fs.exists(&path)? {
            return Err(OrbitError::corruption(
                &path,
                0,
                "table named by the manifest is missing",
            ));
        }
        let table = Table::open(fs, &path, meta.id, cache.clone())?;
        levels.levels[meta.level as usize].push(Arc::new(TableHandle {
            meta: meta.clone(),
            table: Arc::new(table),
        }));
    }
    // Level 0: newest (highest id) first. Deeper levels: by key, without overlap.
    levels.levels[0].sort_by_key(|t| std::cmp::Reverse(t.meta.id));
    for level in 1..MAX_LEVELS {
        let tables = &mut levels.levels[level];
        tables.sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
        if let Some(w) = tables
            .windows(2)
            .find(|w| w[0].meta.largest >= w[1].meta.smallest)
        {
            return Err(OrbitError::corruption(
                dir.join(MANIFEST),
                0,
                format!(
                    "tables {:016x} and {:016x} of level {level} overlap",
                    w[0].meta.id, w[1].meta.id
                ),
            ));
        }
    }
    Ok(levels)
}

impl Writer {
    /// Opens (or creates) the tree in `dir`, replays its WAL and starts the background
    /// threads, recording in `report` what recovery did. The caller holds the directory lock
    /// (a shared one for `ReadOnly`).
    ///
    /// `Access::ReadOnly` creates, deletes and writes nothing and starts no thread: the WAL is
    /// replayed into the memtable only, and the writer returned must not be started (its WAL
    /// cannot append); the published state serves reads.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        settings: Settings,
        cache_size: u64,
        strategy: Box<dyn CompactionStrategy>,
        now: Timestamp,
        access: Access,
        report: &mut RecoveryReport,
    ) -> OrbitResult<(Writer, Arc<Shared>)> {
        let plan = identity::prepare(&*fs, dir, &FILES)?;
        if access == Access::ReadOnly {
            identity::check_readable(dir, plan)?;
        }
        let manifest_path = dir.join(MANIFEST);
        let manifest = if let Plan::Create { restart } = plan {
            let mut id = identity::begin_create(&*fs, dir, &FILES, restart, now, report)?;
            let manifest = Manifest::create(Arc::clone(&fs), dir)?;
            wal::create_first(&*fs, dir, manifest.state().log_start)?;
            identity::finish_create(&*fs, dir, &mut id)?;
            manifest
        } else if fs.exists(&manifest_path)? {
            Manifest::open(Arc::clone(&fs), dir)?
        } else {
            return Err(OrbitError::corruption(
                &manifest_path,
                0,
                "manifest is missing (deleted?): the store's tables cannot be found without it",
            ));
        };
        if let Some(at) = manifest.torn_at() {
            report.record(RecoveryAction::DamagedRootSkipped {
                path: manifest_path.clone(),
                offset: at,
                reason: "the last edit is torn or damaged (a crash while committing it?)".into(),
            });
        }
        let cache =
            (cache_size > 0).then(|| Arc::new(BlockCache::new(cache_size, settings.block_size)));
        // A damaged last manifest edit reads like a torn one, and recovery starts from the state
        // before it. After a real torn commit that state's tables and WAL segments still exist
        // (nothing is deleted before the edit retiring it is durable); when they do not, the
        // edit was durable and rotted, and the manifest is what to name.
        let name_manifest = |e: OrbitError| match (manifest.torn_at(), e) {
            (Some(at), e @ OrbitError::Corruption { .. }) => OrbitError::corruption(
                manifest.path(),
                at,
                format!(
                    "the last manifest edit is damaged, and the state before it cannot be \
                     recovered without it: {e}"
                ),
            ),
            (_, e) => e,
        };
        let levels =
            open_levels(&*fs, dir, &manifest, &cache, access, report).map_err(name_manifest)?;
        let ms = manifest.state().clone();
        let replayed = wal::recover(&*fs, dir, ms.log_start, &manifest_path, access, report)
            .map_err(name_manifest)?;
        let shared = Arc::new(Shared {
            fs,
            dir: dir.to_path_buf(),
            settings,
            published: RwLock::new(Arc::new(Version {
                active: Arc::new(Memtable::default()),
                frozen: Vec::new(),
                levels: Arc::new(levels),
                seq: 0,
                lease_count: ms.lease_count,
                revision: ms.last_revision,
                dir: Arc::new(dir.to_path_buf()),
            })),
            manifest: Mutex::new(manifest),
            next_table_id: AtomicU64::new(ms.next_table_id),
            cache,
            strategy,
            stats: Stats::default(),
            signals: Mutex::new(Signals::default()),
            changed: Condvar::new(),
            freeze_requested: AtomicBool::new(false),
        });
        let mut writer = Writer {
            shared: Arc::clone(&shared),
            wal: replayed.writer,
            wal_seq: replayed.seq,
            seq: 0,
            lease_count: ms.lease_count,
            revision: ms.last_revision,
            threads: Vec::new(),
        };
        engine::replay(&mut writer, &replayed.records)?;
        writer.publish_state();
        if access == Access::ReadOnly {
            return Ok((writer, shared));
        }
        if plan == Plan::Legacy {
            identity::adopt(&*shared.fs, dir, &FILES, now, report)?;
        }
        writer.spawn_threads()?;
        if shared.current().active.bytes() >= shared.settings.memtable_size {
            writer.freeze()?;
        }
        Ok((writer, shared))
    }

    fn spawn_threads(&mut self) -> OrbitResult<()> {
        let loops: [(&str, BackgroundLoop); 2] = [
            ("lsm-flush", flush_loop),
            ("lsm-compaction", compaction_loop),
        ];
        for (name, body) in loops {
            let shared = Arc::clone(&self.shared);
            let handle = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || body(&shared))
                .map_err(|e| OrbitError::io("spawn thread", &self.shared.dir, e))?;
            self.threads.push(handle);
        }
        Ok(())
    }

    fn publish_state(&self) {
        let (seq, lease_count, revision) = (self.seq, self.lease_count, self.revision);
        self.shared.publish(|s| Version {
            seq,
            lease_count,
            revision,
            ..s.clone()
        });
        self.shared
            .stats
            .wal_bytes
            .store(self.wal.len(), Ordering::Relaxed);
    }

    /// Freezes the active memtable (if it holds anything): syncs its WAL segment, starts the
    /// next one and hands the memtable to the flush thread.
    fn freeze(&mut self) -> OrbitResult<()> {
        let state = self.shared.current();
        if state.active.is_empty() {
            return Ok(());
        }
        // Under `interval`/`never` sync the segment may end in acknowledged, unsynced records;
        // a later segment must never be durable while an earlier one is torn.
        let next = self.wal_seq + 1;
        self.wal = wal::rotate(&*self.shared.fs, &self.shared.dir, &mut self.wal, next)?;
        self.wal_seq = next;
        let frozen = Arc::new(Frozen {
            mem: Arc::clone(&state.active),
            next_log: next,
            last_revision: self.revision,
            lease_count: self.lease_count,
        });
        self.shared.publish(|s| {
            let mut frozen_list = vec![Arc::clone(&frozen)];
            frozen_list.extend(s.frozen.iter().cloned());
            Version {
                active: Arc::new(Memtable::default()),
                frozen: frozen_list,
                ..s.clone()
            }
        });
        self.shared.notify();
        Ok(())
    }

    /// Waits while too many memtables wait for flush or level 0 is too deep.
    fn stall_if_needed(&self) -> OrbitResult<()> {
        let shared = &self.shared;
        let max_frozen = shared.settings.max_immutable_memtables;
        let started = Instant::now();
        let mut stalled = false;
        let mut signals = shared.signals();
        loop {
            if let Some(e) = &signals.error {
                return Err(OrbitError::Unavailable(format!(
                    "lsm background thread: {e}"
                )));
            }
            let state = shared.current();
            if state.frozen.len() <= max_frozen && state.levels.levels[0].len() < L0_STALL_TABLES {
                break;
            }
            stalled = true;
            signals = shared.wait(signals, Duration::from_millis(100));
        }
        drop(signals);
        if stalled {
            shared.stats.stalls.fetch_add(1, Ordering::Relaxed);
            shared
                .stats
                .stall_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Waits until every frozen memtable is flushed.
    fn drain_frozen(&self) -> OrbitResult<()> {
        let mut signals = self.shared.signals();
        while !self.shared.current().frozen.is_empty() {
            if let Some(e) = &signals.error {
                return Err(OrbitError::Unavailable(format!(
                    "lsm background thread: {e}"
                )));
            }
            signals = self.shared.wait(signals, Duration::from_millis(100));
        }
        Ok(())
    }

    fn stop_threads(&mut self) {
        self.shared.signals().closing = true;
        self.shared.changed.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    /// The background threads end before the writer is gone, so no thread of this store writes
    /// its files after it is closed (or poisoned) and the directory is unlocked.
    fn drop(&mut self) {
        self.stop_threads();
    }
}

impl EngineWriter for Writer {
    fn wal(&mut self) -> &mut LogWriter {
        &mut self.wal
    }

    fn revision(&self) -> u64 {
        self.revision
    }

    fn stage(
        &mut self,
        stager: &mut ChangeStager,
        req: WriteRequest,
        batch: &mut LogBatch,
    ) -> OrbitResult<WriteOutcome> {
        let state = self.shared.current();
        stager.stage(&LeaseKv(&state.latest()), req, batch)
    }

    /// Applies `changes` to the active memtable, after every sequence number so far.
    fn apply(&mut self, changes: &[LeaseChange]) -> OrbitResult<()> {
        let state = self.shared.current();
        let mut mem = MemWriter {
            state: &state,
            seq: &mut self.seq,
            blind: Vec::with_capacity(2 * changes.len()),
        };
        for change in changes {
            self.revision = self.revision.max(change.revision());
            match keyspace::apply_change(&mut mem, change)? {
                CountChange::Added => self.lease_count += 1,
                CountChange::Removed => self.lease_count -= 1,
                CountChange::Same => {}
            }
        }
        mem.finish();
        Ok(())
    }

    fn publish(&mut self) {
        self.publish_state();
    }

    fn after_batch(&mut self) -> OrbitResult<()> {
        self.shared.check_background()?;
        let full = self.shared.current().active.bytes() >= self.shared.settings.memtable_size;
        let requested = self.shared.freeze_requested.load(Ordering::Acquire);
        if full || requested {
            self.freeze()?;
        }
        if requested {
            // Cleared only once the frozen memtable is published: `compact` waits for this.
            self.shared.freeze_requested.store(false, Ordering::Release);
            self.shared.notify();
        }
        self.stall_if_needed()
    }

    fn close(&mut self) -> OrbitResult<()> {
        self.freeze()?;
        self.drain_frozen()?;
        self.shared.check_background()?;
        self.stop_threads();
        Ok(())
    }
}

/// The flush thread: flushes the oldest frozen memtable whenever there is one.
fn flush_loop(shared: &Shared) {
    loop {
        let frozen = {
            let mut signals = shared.signals();
            loop {
                if signals.error.is_some() || signals.closing {
                    return;
                }
                if let Some(f) = shared.current().frozen.last() {
                    break Arc::clone(f);
                }
                signals = shared.wait(signals, Duration::from_secs(1));
            }
        };
        if let Err(e) = flush::flush(shared, &frozen) {
            shared.fail("flush", &e);
            return;
        }
        // Free the memtable here, not on whichever thread drops the last state holding it
        // (often the writer): a million small frees stall the thread that does them.
        let deadline = Instant::now() + Duration::from_secs(1);
        while (Arc::strong_count(&frozen) > 1 || Arc::strong_count(&frozen.mem) > 1)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(frozen);
    }
}

/// The compaction thread: runs what the strategy (or a full-compaction request) asks for.
fn compaction_loop(shared: &Shared) {
    loop {
        let (task, full) = {
            let mut signals = shared.signals();
            loop {
                if signals.error.is_some() || signals.closing {
                    return;
                }
                let levels = Arc::clone(&shared.current().levels);
                if signals.full_compactions_requested > signals.full_compactions_done {
                    let target = signals.full_compactions_requested;
                    match compaction::full_compaction(&levels) {
                        Some(t) => break (t, Some(target)),
                        None => {
                            signals.full_compactions_done = target;
                            shared.changed.notify_all();
                            continue;
                        }
                    }
                }
                if let Some(t) = shared.strategy.pick(&levels) {
                    break (t, None);
                }
                signals = shared.wait(signals, Duration::from_secs(1));
            }
        };
        match compaction::job::run(shared, &task) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                shared.fail("compaction", &e);
                return;
            }
        }
        if let Some(target) = full {
            let mut signals = shared.signals();
            signals.full_compactions_done = signals.full_compactions_done.max(target);
            drop(signals);
            shared.changed.notify_all();
        }
    }
}

/// Waits for the freeze asked for by [`Shared::freeze_requested`], then for every frozen
/// memtable to be flushed, then asks for a full compaction and waits for it. Gives up if the
/// writer is poisoned (`writer_poisoned`) before it froze the memtable.
pub fn full_compaction_blocking(
    shared: &Shared,
    writer_poisoned: impl Fn() -> bool,
) -> OrbitResult<()> {
    let mut signals = shared.signals();
    while shared.freeze_requested.load(Ordering::Acquire) || !shared.current().frozen.is_empty() {
        if let Some(e) = &signals.error {
            return Err(OrbitError::Unavailable(format!(
                "lsm background thread: {e}"
            )));
        }
        if signals.closing || writer_poisoned() {
            return Err(OrbitError::Poisoned(
                "the writer stopped before the memtable was frozen".into(),
            ));
        }
        signals = shared.wait(signals, Duration::from_millis(100));
    }
    signals.full_compactions_requested += 1;
    let target = signals.full_compactions_requested;
    shared.changed.notify_all();
    while signals.full_compactions_done < target {
        if let Some(e) = &signals.error {
            return Err(OrbitError::Unavailable(format!(
                "lsm background thread: {e}"
            )));
        }
        if signals.closing {
            return Err(OrbitError::Closed);
        }
        signals = shared.wait(signals, Duration::from_millis(100));
    }
    Ok(())
}
