//! The write half of [`AddressableDirectoryProvider`] for every backend whose writes go through
//! a [`GroupCommit`] writer of [`WriteRequest`]s: input validation, the clock reading each
//! request is judged by, the outcome mapping, cleanup in bounded steps, and write metrics.
//! Written once here so the disk backends differ only in their engines.
//!
//! [`AddressableDirectoryProvider`]: crate::AddressableDirectoryProvider

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::change::{LeaseChange, WriteOp, WriteOutcome, WriteRequest};
use crate::feed::LeaseEvent;
use crate::group_commit::{CommitHandler, GroupCommit};
use crate::lock::DirLock;
use crate::metrics::{HistogramSnapshot, MetricsRecorder};
use crate::{
    Acquire, AddressableLease, AddressableReference, Clock, NodeId, OrbitError, OrbitResult, Renew,
    Timestamp, rules,
};

/// Leases one cleanup step removes: bounds the writer's batch and the WAL record.
pub const CLEANUP_STEP: usize = 1024;

/// Node-index entries one eviction step reads (and so leases it removes at most): bounds the
/// writer's batch and the WAL record as [`CLEANUP_STEP`] does.
pub const EVICT_STEP: usize = 1024;

/// Submits validated lease writes to a group-commit writer.
pub struct LeaseWrites<H: CommitHandler<Request = WriteRequest, Response = WriteOutcome>> {
    writer: GroupCommit<H>,
    clock: Arc<dyn Clock>,
    metrics: Arc<MetricsRecorder>,
}

impl<H: CommitHandler<Request = WriteRequest, Response = WriteOutcome>> std::fmt::Debug
    for LeaseWrites<H>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseWrites")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

fn unexpected(outcome: WriteOutcome) -> OrbitError {
    OrbitError::internal(
        "lease writer",
        format!("the writer answered with the wrong outcome: {outcome:?}"),
    )
}

impl<H: CommitHandler<Request = WriteRequest, Response = WriteOutcome>> LeaseWrites<H> {
    /// Writes through `writer`, judging expiry by `clock`, counting into `metrics`.
    pub fn new(
        writer: GroupCommit<H>,
        clock: Arc<dyn Clock>,
        metrics: Arc<MetricsRecorder>,
    ) -> Self {
        LeaseWrites {
            writer,
            clock,
            metrics,
        }
    }

    /// The group-commit writer (shutdown, poison state, stats).
    pub fn writer(&self) -> &GroupCommit<H> {
        &self.writer
    }

    /// Shuts the writer down (its final flush or checkpoint writes files) on a blocking
    /// thread, off the runtime's workers.
    pub async fn shutdown(self: &Arc<Self>) -> OrbitResult<()> {
        let writes = Arc::clone(self);
        tokio::task::spawn_blocking(move || writes.writer.shutdown())
            .await
            .unwrap_or_else(|e| {
                Err(OrbitError::internal(
                    "lease writer",
                    format!("the {} shutdown task failed: {e}", self.writer.name()),
                ))
            })
    }

    /// The clock requests are judged by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    async fn submit(&self, op: WriteOp, now: Timestamp) -> OrbitResult<WriteOutcome> {
        let start = Instant::now();
        let batch = match &op {
            WriteOp::Store(leases) | WriteOp::Restore { leases, .. } => leases.len() as u64,
            WriteOp::Replicate(changes) => changes.len() as u64,
            _ => 1,
        };
        let out = self.writer.submit(WriteRequest { op, now }).await;
        self.metrics.write_done(start, &out, |o| o.changes(batch));
        out
    }

    /// `store_leases` (and `store_lease`).
    pub async fn store(&self, leases: &[AddressableLease]) -> OrbitResult<()> {
        let now = self.clock.now();
        rules::validate_batch(leases, now)?;
        match self.submit(WriteOp::Store(leases.to_vec()), now).await? {
            WriteOutcome::Stored => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// `restore_leases`: the leases with their revisions, and the counter raised to `revision`.
    pub async fn restore(&self, leases: &[AddressableLease], revision: u64) -> OrbitResult<()> {
        rules::validate_restore(leases, revision)?;
        let op = WriteOp::Restore {
            leases: leases.to_vec(),
            revision,
        };
        match self.submit(op, self.clock.now()).await? {
            WriteOutcome::Stored => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// `replicate`: another store's events, verbatim, continuing this store's revisions.
    pub async fn replicate(&self, events: &[LeaseEvent]) -> OrbitResult<()> {
        rules::validate_replicate(events)?;
        let op = WriteOp::Replicate(events.iter().map(LeaseChange::from_event).collect());
        match self.submit(op, self.clock.now()).await? {
            WriteOutcome::Stored => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// `remove_lease`.
    pub async fn remove(&self, r: &AddressableReference) -> OrbitResult<bool> {
        rules::validate_reference(r)?;
        match self
            .submit(WriteOp::Remove(r.clone()), self.clock.now())
            .await?
        {
            WriteOutcome::Removed(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// `cleanup_expired_leases`: steps of [`CLEANUP_STEP`] leases, all judged at one `now`.
    pub async fn cleanup(&self) -> OrbitResult<u64> {
        let now = self.clock.now();
        let mut total = 0;
        loop {
            match self
                .submit(
                    WriteOp::Cleanup {
                        limit: CLEANUP_STEP,
                    },
                    now,
                )
                .await?
            {
                WriteOutcome::Cleaned(n) => {
                    total += n;
                    MetricsRecorder::add(&self.metrics.expired_removed, n);
                    if n < CLEANUP_STEP as u64 {
                        return Ok(total);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// `remove_node_leases`: steps of [`EVICT_STEP`] node-index entries, each one atomic
    /// record, each step starting after the last entry of the one before (so no step walks
    /// what an earlier one removed). A node without leases costs one index read and no write.
    pub async fn remove_node(&self, node: &NodeId) -> OrbitResult<u64> {
        rules::validate_node(node)?;
        let now = self.clock.now();
        let (mut total, mut after) = (0, None);
        loop {
            let op = WriteOp::Evict {
                node: node.clone(),
                after: after.take(),
                limit: EVICT_STEP,
            };
            match self.submit(op, now).await? {
                WriteOutcome::Evicted { removed, next } => {
                    total += removed;
                    match next {
                        Some(next) => after = Some(next),
                        None => return Ok(total),
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// `acquire_lease`.
    pub async fn acquire(&self, lease: &AddressableLease) -> OrbitResult<Acquire> {
        let now = self.clock.now();
        rules::validate_lease(lease, now)?;
        match self.submit(WriteOp::Acquire(lease.clone()), now).await? {
            WriteOutcome::Acquire(a) => {
                if matches!(a, Acquire::Held(_)) {
                    self.metrics.conflict();
                }
                Ok(a)
            }
            other => Err(unexpected(other)),
        }
    }

    /// `renew_lease`.
    pub async fn renew(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
        expires_at: Timestamp,
        renew_at: Timestamp,
    ) -> OrbitResult<Renew> {
        let now = self.clock.now();
        rules::validate_renew(r, owner, expires_at, renew_at, now)?;
        let op = WriteOp::Renew {
            reference: r.clone(),
            owner: owner.clone(),
            revision,
            expires_at,
            renew_at,
        };
        match self.submit(op, now).await? {
            WriteOutcome::Renew(x) => {
                if matches!(x, Renew::Lost(_)) {
                    self.metrics.conflict();
                }
                Ok(x)
            }
            other => Err(unexpected(other)),
        }
    }

    /// `release_lease`.
    pub async fn release(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
    ) -> OrbitResult<bool> {
        rules::validate_release(r, owner)?;
        let op = WriteOp::Release {
            reference: r.clone(),
            owner: owner.clone(),
            revision,
        };
        match self.submit(op, self.clock.now()).await? {
            WriteOutcome::Removed(b) => {
                if !b {
                    self.metrics.conflict();
                }
                Ok(b)
            }
            other => Err(unexpected(other)),
        }
    }
}

/// The writer of a disk provider: started for a writable open, absent for a read-only one
/// (whose writes answer [`OrbitError::ReadOnly`]). Written once for every engine.
pub struct Writes<H: CommitHandler<Request = WriteRequest, Response = WriteOutcome>> {
    inner: Option<Arc<LeaseWrites<H>>>,
    dir: std::path::PathBuf,
}

impl<H: CommitHandler<Request = WriteRequest, Response = WriteOutcome>> std::fmt::Debug
    for Writes<H>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes")
            .field("read_only", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}

impl<H: CommitHandler<Request = WriteRequest, Response = WriteOutcome>> Writes<H> {
    /// For `ReadWrite`, starts `handler` on a group-commit thread named `name`; for
    /// `ReadOnly`, drops it unstarted (its recovery is published; it never writes).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        access: crate::wal::Access,
        name: &str,
        handler: H,
        sync: crate::SyncMode,
        clock: Arc<dyn Clock>,
        metrics: &Arc<MetricsRecorder>,
        dir: &std::path::Path,
    ) -> OrbitResult<Self> {
        let inner = match access {
            crate::wal::Access::ReadWrite => {
                let writer = GroupCommit::spawn(name, handler, sync)?;
                Some(Arc::new(LeaseWrites::new(
                    writer,
                    clock,
                    Arc::clone(metrics),
                )))
            }
            crate::wal::Access::ReadOnly => None,
        };
        Ok(Writes {
            inner,
            dir: dir.to_path_buf(),
        })
    }

    /// The writer; `ReadOnly` naming the data directory for a read-only store.
    pub fn get(&self) -> OrbitResult<&Arc<LeaseWrites<H>>> {
        self.inner
            .as_ref()
            .ok_or_else(|| OrbitError::ReadOnly(self.dir.clone()))
    }

    /// Shuts the writer down ([`LeaseWrites::shutdown`]); nothing to do when read-only.
    pub async fn shutdown(&self) -> OrbitResult<()> {
        match &self.inner {
            Some(writes) => writes.shutdown().await,
            None => Ok(()),
        }
    }

    /// Whether a failed write or sync poisoned the writer.
    pub fn is_poisoned(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|w| w.writer().is_poisoned())
    }

    /// The group-commit counters (zero when read-only).
    pub fn stats(&self) -> crate::group_commit::GroupCommitStats {
        self.inner
            .as_ref()
            .map(|w| w.writer().stats())
            .unwrap_or_default()
    }

    /// The group commit's log-write durations and batch sizes (empty when read-only).
    pub fn histograms(&self) -> (HistogramSnapshot, HistogramSnapshot) {
        self.inner
            .as_ref()
            .map(|w| w.writer().histograms())
            .unwrap_or_default()
    }
}

/// The open/closed state of a disk provider and the data-directory lock it holds, written once:
/// [`Lifecycle::check_open`] answers `Closed` after shutdown, and [`Lifecycle::shutdown`] closes
/// the store once, then lets the directory go.
#[derive(Debug)]
pub struct Lifecycle {
    closed: AtomicBool,
    lock: Mutex<Option<DirLock>>,
}

impl Lifecycle {
    /// An open store holding `lock` (`None` where the caller guarantees exclusive use).
    pub fn new(lock: Option<DirLock>) -> Self {
        Lifecycle {
            closed: AtomicBool::new(false),
            lock: Mutex::new(lock),
        }
    }

    /// Whether the store was shut down.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// `Closed` once the store was shut down.
    pub fn check_open(&self) -> OrbitResult<()> {
        if self.is_closed() {
            return Err(OrbitError::Closed);
        }
        Ok(())
    }

    /// Runs `close` (the final flush or checkpoint) the first time only, then releases the
    /// directory lock, whatever `close` returned: a poisoned store still lets its directory go.
    pub async fn shutdown<F: Future<Output = OrbitResult<()>>>(
        &self,
        close: impl FnOnce() -> F,
    ) -> OrbitResult<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = close().await;
        self.lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        result
    }
}
