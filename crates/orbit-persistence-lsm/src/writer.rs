//! The writer thread: applies each durable batch to the active memtable and publishes it,
//! freezes a full memtable (a new WAL segment starts) and hands it to the flush thread, and
//! stalls writes while flushes or compactions fall behind. Core's `LeaseCommit` drives it;
//! recovery builds it ([`crate::recovery`]); the threads it starts are [`crate::background`]'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orbit_persistence_core::change::{ChangeStager, LeaseChange, WriteOutcome, WriteRequest};
use orbit_persistence_core::engine::EngineWriter;
use orbit_persistence_core::keyspace::{self, CountChange, LeaseKv, OrderedKv, OrderedKvWrite};
use orbit_persistence_core::log::{LogBatch, LogWriter};
use orbit_persistence_core::wal;
use orbit_persistence_core::{OrbitError, OrbitResult};

use crate::background;
use crate::memtable::{MemEntry, Memtable, SeqKey};
use crate::shared::{L0_STALL_TABLES, Shared};
use crate::value::Lookup;
use crate::version::{Frozen, Version};

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

impl Writer {
    /// The writer over `shared` after recovery: appending to `wal` (segment `wal_seq`), with
    /// the lease count and revision the durable root recorded; replay moves them on.
    pub(crate) fn new(
        shared: Arc<Shared>,
        wal: LogWriter,
        wal_seq: u64,
        lease_count: u64,
        revision: u64,
    ) -> Self {
        Writer {
            shared,
            wal,
            wal_seq,
            seq: 0,
            lease_count,
            revision,
            threads: Vec::new(),
        }
    }

    /// Starts the flush and compaction threads ([`background`]); they stop with the writer.
    pub(crate) fn spawn_threads(&mut self) -> OrbitResult<()> {
        self.threads = background::spawn(&self.shared)?;
        Ok(())
    }

    pub(crate) fn publish_state(&self) {
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
    pub(crate) fn freeze(&mut self) -> OrbitResult<()> {
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
        let history = self.shared.settings.watch_history;
        let mut mem = MemWriter {
            state: &state,
            seq: &mut self.seq,
            blind: Vec::with_capacity(2 * changes.len()),
        };
        for change in changes {
            self.revision = self.revision.max(change.revision());
            match keyspace::apply_change(&mut mem, change, history)? {
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
