//! The writer thread: applies each durable batch to the working tree, publishes it, and
//! checkpoints when the WAL or the memory budget asks. Core's `LeaseCommit` drives it; recovery
//! builds it ([`crate::recovery`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use orbit_persistence_core::change::{ChangeStager, LeaseChange, WriteOutcome, WriteRequest};
use orbit_persistence_core::engine::{EngineWriter, Published};
use orbit_persistence_core::fs::FileSystem;
use orbit_persistence_core::keyspace::{self, CountChange, LeaseKv, OrderedKvWrite};
use orbit_persistence_core::log::{HEADER_LEN, LogBatch, LogWriter};
use orbit_persistence_core::wal::{self};
use orbit_persistence_core::{OrbitError, OrbitResult, Timestamp};

use crate::btree::{self, Child, WriteCtx};
use crate::checkpoint::{self, Done, Job};
use crate::freelist::Allocator;
use crate::meta::Meta;
use crate::page::{Layout, PageId};
use crate::pagefile::PageStore;
use crate::version::{Guard, Version, View};

/// What the writer needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bytes of a page for a new file.
    pub page_size: usize,
    /// Checkpoint at least this often while writes come in.
    pub checkpoint_interval: Duration,
    /// Checkpoint when the WAL grows past this.
    pub wal_size_limit: u64,
    /// Checkpoint when pages loaded into memory since the last one pass this many bytes.
    pub cache_size: u64,
    /// The clock's time at open: the creation time of a store this open creates.
    pub now: Timestamp,
    /// Events the change history keeps (0: none).
    pub watch_history: u64,
}

/// Counters the writer publishes for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Checkpoints done since open.
    pub checkpoints: AtomicU64,
    /// Pages written by checkpoints since open.
    pub pages_written: AtomicU64,
    /// Length of the page file, in pages.
    pub page_count: AtomicU64,
    /// Free pages, including those waiting for readers.
    pub free_pages: AtomicU64,
    /// Bytes in the current WAL segment.
    pub wal_bytes: AtomicU64,
    /// Pages loaded into memory since the last checkpoint.
    pub loaded_pages: AtomicU64,
    /// Time spent in checkpoints, microseconds.
    pub checkpoint_micros: AtomicU64,
}

/// What the writer shares with the provider.
#[derive(Debug)]
pub struct Shared {
    /// The version readers use.
    pub published: Published<Version>,
    /// Counters.
    pub stats: Stats,
    /// The page layout.
    pub layout: Layout,
}

impl Shared {
    /// The current version.
    #[inline]
    pub fn current(&self) -> Arc<Version> {
        self.published.current()
    }
}

/// The writer thread's state.
pub struct Writer {
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) dir: PathBuf,
    pub(crate) settings: Settings,
    pub(crate) store: Arc<PageStore>,
    /// The working tree: the published one between batches.
    pub(crate) root: Child,
    /// The durable meta page.
    pub(crate) meta: Meta,
    pub(crate) alloc: Allocator,
    /// Pages of the durable tree that `root` no longer uses.
    pub(crate) retired: Vec<PageId>,
    /// Pages of the durable free list.
    pub(crate) freelist_pages: Vec<PageId>,
    /// Pages handed to reader guards, not yet back.
    pub(crate) in_guards: BTreeSet<PageId>,
    /// Where guards return pages.
    pub(crate) released: Arc<Mutex<Vec<PageId>>>,
    pub(crate) guard: Arc<Guard>,
    pub(crate) wal: LogWriter,
    pub(crate) wal_seq: u64,
    pub(crate) lease_count: u64,
    pub(crate) revision: u64,
    pub(crate) loaded: u64,
    pub(crate) last_checkpoint: Instant,
    pub(crate) in_flight: Option<InFlight>,
    pub(crate) shared: Arc<Shared>,
}

impl Writer {
    /// Applies one change to the working tree: the lease and its index entries.
    fn apply_one(&mut self, change: &LeaseChange) -> OrbitResult<()> {
        self.revision = self.revision.max(change.revision());
        let mut tree = WorkingTree {
            ctx: WriteCtx {
                store: &self.store,
                retired: &mut self.retired,
                loaded: &mut self.loaded,
            },
            root: &mut self.root,
        };
        match keyspace::apply_change(&mut tree, change, self.settings.watch_history)? {
            CountChange::Added => self.lease_count += 1,
            CountChange::Removed => self.lease_count -= 1,
            CountChange::Same => {}
        }
        Ok(())
    }

    pub(crate) fn publish_version(&mut self) {
        let version = Arc::new(Version {
            root: self.root.clone(),
            store: Arc::clone(&self.store),
            lease_count: self.lease_count,
            revision: self.revision,
            guard: Arc::clone(&self.guard),
        });
        self.shared.published.publish(version);
        let stats = &self.shared.stats;
        stats.wal_bytes.store(self.wal.len(), Ordering::Relaxed);
        stats.loaded_pages.store(self.loaded, Ordering::Relaxed);
        if self.in_flight.is_none() {
            // Otherwise the checkpoint thread holds the allocator.
            stats
                .page_count
                .store(self.alloc.page_count, Ordering::Relaxed);
            let free = self.alloc.free.len() + self.in_guards.len() + self.retired.len();
            stats.free_pages.store(free as u64, Ordering::Relaxed);
        }
    }

    fn checkpoint_due(&self) -> bool {
        let logged = self.wal.len() > HEADER_LEN;
        self.wal.len() >= self.settings.wal_size_limit
            || self.loaded * self.settings.page_size as u64 >= self.settings.cache_size
            || (logged && self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval)
    }

    /// Starts a checkpoint of the working tree on its own thread: rotates the WAL (the
    /// checkpoint covers every segment before the new one) and hands the tree, the allocator
    /// and the free-list inputs over. See [`crate::checkpoint`].
    fn start_checkpoint(&mut self) -> OrbitResult<()> {
        for page in
            std::mem::take(&mut *self.released.lock().unwrap_or_else(PoisonError::into_inner))
        {
            self.in_guards.remove(&page);
            self.alloc.free.insert(page);
        }
        self.alloc.trim();
        // Under `interval`/`never` sync the old segment may hold unsynced records that are
        // already acknowledged; they must not wait for the checkpoint to become durable (the
        // interval promise holds while it runs, and a failed checkpoint leaves them to the WAL).
        let seq = self.wal_seq + 1;
        let wal = wal::rotate(&*self.fs, &self.dir, &mut self.wal, seq)?;
        let retired = std::mem::take(&mut self.retired);
        let also_free = self
            .in_guards
            .iter()
            .chain(&retired)
            .chain(&self.freelist_pages)
            .copied()
            .collect();
        let job = Job {
            fs: Arc::clone(&self.fs),
            dir: self.dir.clone(),
            store: Arc::clone(&self.store),
            alloc: std::mem::take(&mut self.alloc),
            snapshot: self.root.clone(),
            also_free,
            old_freelist: self.freelist_pages.clone(),
            meta: Meta {
                generation: self.meta.generation + 1,
                last_revision: self.revision,
                lease_count: self.lease_count,
                wal_start: seq,
                ..self.meta
            },
            old_segments: self.meta.wal_start..seq,
        };
        let handle = std::thread::Builder::new()
            .name("cowbtree-checkpoint".into())
            .spawn(move || {
                let started = Instant::now();
                job.run().map(|done| (done, started.elapsed()))
            })
            .map_err(|e| OrbitError::io("spawn checkpoint thread", &self.dir, e))?;
        self.wal = wal;
        self.wal_seq = seq;
        self.loaded = 0;
        self.last_checkpoint = Instant::now();
        self.in_flight = Some(InFlight { handle, retired });
        Ok(())
    }

    /// Waits for the checkpoint in flight, if any, and takes its result in: its pages replace
    /// the nodes it wrote, the pages it made unnecessary go to the readers' guard.
    fn finish_checkpoint(&mut self) -> OrbitResult<()> {
        let Some(InFlight { handle, retired }) = self.in_flight.take() else {
            return Ok(());
        };
        let (done, took) = handle
            .join()
            .map_err(|_| OrbitError::internal("cowbtree", "the checkpoint thread panicked"))??;
        self.alloc = done.alloc;
        self.meta = done.meta;
        self.freelist_pages = done.freelist_pages;
        self.in_guards.extend(&retired);
        self.guard = self.guard.hand_over(retired);
        let mut written = done.written;
        checkpoint::adopt(&mut self.root, &mut written);
        // Written, but replaced since the snapshot: part of the durable tree only.
        self.retired.extend(written.into_values().flatten());
        drop(done.snapshot);
        if self.store.mapped_pages() > 0 && self.alloc.page_count > self.store.mapped_pages() {
            // Map the grown file; older versions keep the old mapping.
            let file = Arc::clone(self.store.file());
            let pages = file.len()? / self.settings.page_size as u64;
            self.store = Arc::new(PageStore::new(
                self.store.path(),
                self.store.layout(),
                file,
                pages,
            )?);
        }
        self.publish_version();
        let stats = &self.shared.stats;
        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        stats
            .pages_written
            .fetch_add(done.pages_written, Ordering::Relaxed);
        stats
            .checkpoint_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        tracing::debug!(
            generation = self.meta.generation,
            pages = done.pages_written,
            micros = took.as_micros() as u64,
            "checkpoint"
        );
        Ok(())
    }

    /// Checkpoints now and waits for it (after any in flight): the final checkpoint at close.
    fn checkpoint(&mut self) -> OrbitResult<()> {
        self.finish_checkpoint()?;
        self.start_checkpoint()?;
        self.finish_checkpoint()
    }
}

impl Drop for Writer {
    /// A checkpoint in flight finishes before the writer is gone, so no thread of this store
    /// writes its files after it is closed (or poisoned) and the directory is unlocked.
    fn drop(&mut self) {
        if let Some(f) = self.in_flight.take() {
            let _ = f.handle.join();
        }
    }
}

/// A checkpoint running on its own thread.
pub(crate) struct InFlight {
    handle: std::thread::JoinHandle<OrbitResult<(Done, Duration)>>,
    /// Pages the snapshot no longer uses: to the readers' guard once the checkpoint is durable.
    retired: Vec<PageId>,
}

/// The working tree as the key space [`keyspace::apply_change`] writes.
struct WorkingTree<'a> {
    ctx: WriteCtx<'a>,
    root: &'a mut Child,
}

impl OrderedKvWrite for WorkingTree<'_> {
    fn replace(&mut self, key: &[u8], value: &[u8]) -> OrbitResult<Option<Vec<u8>>> {
        btree::insert(&mut self.ctx, self.root, key, value)
    }

    fn take(&mut self, key: &[u8]) -> OrbitResult<Option<Vec<u8>>> {
        btree::remove(&mut self.ctx, self.root, key)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> OrbitResult<()> {
        btree::insert(&mut self.ctx, self.root, key, value).map(drop)
    }

    fn delete(&mut self, key: &[u8]) -> OrbitResult<()> {
        btree::remove(&mut self.ctx, self.root, key).map(drop)
    }

    fn corrupt(&self, detail: String) -> OrbitError {
        self.ctx.store.corrupt(0, detail)
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
        let view = View {
            store: &self.store,
            root: &self.root,
        };
        stager.stage(&LeaseKv(&view), req, batch)
    }

    fn apply(&mut self, changes: &[LeaseChange]) -> OrbitResult<()> {
        for change in changes {
            self.apply_one(change)?;
        }
        Ok(())
    }

    fn publish(&mut self) {
        self.publish_version();
    }

    fn after_batch(&mut self) -> OrbitResult<()> {
        let finished = self.in_flight.as_ref().map(|f| f.handle.is_finished());
        match finished {
            Some(true) => self.finish_checkpoint()?,
            // The WAL (and so recovery) grows past twice its limit only if checkpoints cannot
            // keep up: then writers wait for this one.
            Some(false) if self.wal.len() >= 2 * self.settings.wal_size_limit => {
                self.finish_checkpoint()?
            }
            _ => {}
        }
        if self.in_flight.is_none() && self.checkpoint_due() {
            self.start_checkpoint()?;
        }
        Ok(())
    }

    fn close(&mut self) -> OrbitResult<()> {
        self.finish_checkpoint()?;
        if self.wal.len() > HEADER_LEN {
            self.checkpoint()?;
        }
        Ok(())
    }
}
