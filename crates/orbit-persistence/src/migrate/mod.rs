//! Live migration between backends: [`SwappableProvider`] serves the lease directory from one
//! backend and moves it to another while it serves.
//!
//! [`SwappableProvider::migrate_to`] runs these steps ([`MigrationStep`]):
//!
//! 1. **Marked**: a `copying` [marker] in the source's data directory (a memory source
//!    has none: nothing of it survives a crash anyway). The target opens in a staging
//!    directory beside its data directory (`.<name>.migrating`).
//! 2. **Copied**: the source's snapshot at revision R is loaded into the target with
//!    `restore_leases` (every lease keeps its revision), and a watch of the source from R opens.
//! 3. **CaughtUp**: rounds of the source's change feed applied to the target with `replicate`
//!    (verbatim: revisions, removals and change events), while writers go on, until a round
//!    finds little left. Writers faster than the copy (a memory source) are slowed instead of
//!    stopped: the rounds become short slices with writes held and ever shorter windows of
//!    writes between them, so the lag shrinks while no write waits much longer than a slice;
//!    the slice that catches up becomes the barrier.
//! 4. **Barrier**: new writes wait (none fail) and the writes in flight finish; reads go on.
//!    **Drained**: the last events are replicated; the target is now exactly the source.
//!    **TargetClosed**: the target closes, durable.
//! 5. **Switched**: the marker turns to `switched`: from here the target is authoritative.
//!    **Renamed**: the staging directory is renamed into place. **Reopened**: the target
//!    opens there and serves; the barrier lifts; the source closes.
//!
//! A crash at any step leaves one authoritative store, which [`crate::open`] of the *source's*
//! config finds ([`settle`]): before the switch the staging directory is removed and the source
//! opens; after it the rename is finished if needed and the target opens. Every acknowledged
//! write is in the store that opens: writes are acknowledged by the source until the barrier,
//! and the target holds all of them before the switch; after it they go to the target.
//! Acquire, renew and release keep their compare-and-set meaning across the switch: the
//! target holds every lease with the revision the source gave it, and its next revision
//! follows the source's last.

pub mod marker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use orbit_persistence_core::backup::BackupSummary;
use orbit_persistence_core::feed::{EventSource, LeaseWatch};
use orbit_persistence_core::fs::{FileSystem, StdFileSystem};
use orbit_persistence_core::recovery::RecoveryReport;
use orbit_persistence_core::rules::MAX_BATCH_LEN;
use orbit_persistence_core::{
    Acquire, AddressableDirectoryProvider, AddressableLease, AddressableReference, BackendType,
    Clock, LeaseEvent, LeaseSnapshot, NodeId, OrbitError, OrbitResult, PersistenceConfig,
    PersistenceMetrics, PersistenceProvider, ProviderHealth, Renew, Timestamp,
};
use serde::Serialize;
use tokio::sync::{Mutex, RwLock as AsyncRwLock, RwLockWriteGuard, mpsc};
use tokio::task::JoinHandle;

use self::marker::{Marker, MarkerState};
use crate::{blocking, move_into_place, remove_dir, sibling_dir};

/// Events one `replicate` call carries at most.
const REPLICATE_BATCH: usize = 4096;
/// A catch-up round that found at most this many new events ends the catch-up: the barrier
/// then waits for about one such round.
const SMALL_LAG: u64 = 256;
/// Catch-up rounds (of at most [`ROUND`]) before the barrier goes up, unless writers outran
/// the copy and the rounds became slices.
const MAX_ROUNDS: u32 = 16;
/// Longest stretch of replication with writes held while writers outrun the copy.
const SLICE: Duration = Duration::from_millis(20);
/// Shortest window of writes between slices before it becomes none.
const MIN_WINDOW: Duration = Duration::from_millis(1);
/// Longest catch-up round while writes go on: a round that cannot finish in it shows the
/// writers outrunning the copy sooner than a round to the end of a long lag would.
const ROUND: Duration = Duration::from_secs(1);
/// Longest wait for an event the source's feed owes.
const FEED_WAIT: Duration = Duration::from_secs(30);
/// Most markers [`settle`] follows (a directory migrated on and on).
const MAX_HOPS: usize = 16;

/// The steps of a migration, in order, as [`SwappableProvider::migrate_to_observed`] reports
/// them (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MigrationStep {
    /// The `copying` marker is durable and the target is open in its staging directory.
    Marked,
    /// The snapshot at R is in the target.
    Copied,
    /// A catch-up round ended (the round's number, from 1).
    CaughtUp(u32),
    /// Writes wait.
    Barrier,
    /// The target holds every write the source acknowledged.
    Drained,
    /// The target is closed and durable in its staging directory.
    TargetClosed,
    /// The `switched` marker is durable: the target is authoritative.
    Switched,
    /// The target is in its data directory.
    Renamed,
    /// The target serves; writes go on.
    Reopened,
}

/// What a migration did, and how long writers waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// The source's backend.
    pub source: BackendType,
    /// The target's backend.
    pub target: BackendType,
    /// Leases in the snapshot copied.
    pub copied_leases: u64,
    /// The snapshot's revision R.
    pub copied_at_revision: u64,
    /// Changes after R replicated from the source's feed.
    pub replicated_events: u64,
    /// Catch-up rounds before the barrier.
    pub catch_up_rounds: u32,
    /// The revision of the last write the source acknowledged, where the target took over.
    pub switched_at_revision: u64,
    /// The longest time writes waited, in microseconds: at the final barrier, or in a slice of
    /// a catch-up that writers outran.
    pub write_stall_us: u64,
    /// The whole migration, in milliseconds.
    pub elapsed_ms: u64,
}

/// The store serving now.
struct Serving {
    store: Arc<dyn AddressableDirectoryProvider>,
    config: PersistenceConfig,
    /// Bumped by each switch, so a call or watch that met its store closed knows to follow.
    generation: u64,
}

struct Shared {
    serving: RwLock<Serving>,
    /// Writes hold it shared while they run; the end of a migration holds it exclusively.
    barrier: AsyncRwLock<()>,
    /// Why writes are refused: a switch that failed after its marker (a reopen finishes it).
    broken: RwLock<Option<String>>,
}

impl Shared {
    fn current(&self) -> (Arc<dyn AddressableDirectoryProvider>, u64) {
        let serving = self.serving.read().unwrap_or_else(PoisonError::into_inner);
        (Arc::clone(&serving.store), serving.generation)
    }

    fn generation(&self) -> u64 {
        self.serving
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation
    }

    fn check_writable(&self) -> OrbitResult<()> {
        match &*self.broken.read().unwrap_or_else(PoisonError::into_inner) {
            Some(reason) => Err(OrbitError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }
}

/// A lease directory whose backend can change while it serves: every call goes to the
/// current backend; [`migrate_to`](Self::migrate_to) moves the directory to another.
pub struct SwappableProvider {
    shared: Arc<Shared>,
    /// One migration at a time.
    migrating: Mutex<()>,
    clock: Arc<dyn Clock>,
}

/// A read: on the current store, once more on the next if a switch closed it meanwhile.
macro_rules! read {
    ($self:ident, |$s:ident| $call:expr) => {{
        let ($s, generation) = $self.shared.current();
        match $call.await {
            Err(OrbitError::Closed) if $self.shared.generation() != generation => {
                let ($s, _) = $self.shared.current();
                $call.await
            }
            other => other,
        }
    }};
}

/// A write: through the barrier, on the current store.
macro_rules! write {
    ($self:ident, |$s:ident| $call:expr) => {{
        let _writing = $self.shared.barrier.read().await;
        $self.shared.check_writable()?;
        let ($s, _) = $self.shared.current();
        $call.await
    }};
}

impl SwappableProvider {
    /// Opens the directory `config` names, as [`crate::open`] does (finishing or rolling back
    /// an interrupted migration first), ready to migrate. Blocking, like [`crate::open`].
    pub fn open(config: &PersistenceConfig, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        let (store, config) = crate::open_settled(config, Arc::clone(&clock))?;
        Ok(SwappableProvider::serving(store, config, clock))
    }

    /// Serves `store`, opened from `config` with `clock` (which a target is opened with too).
    pub fn serving(
        store: Arc<dyn AddressableDirectoryProvider>,
        config: PersistenceConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        SwappableProvider {
            shared: Arc::new(Shared {
                serving: RwLock::new(Serving {
                    store,
                    config,
                    generation: 0,
                }),
                barrier: AsyncRwLock::new(()),
                broken: RwLock::new(None),
            }),
            migrating: Mutex::new(()),
            clock,
        }
    }

    /// The config of the backend serving now.
    pub fn config(&self) -> PersistenceConfig {
        let serving = self
            .shared
            .serving
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        serving.config.clone()
    }

    /// Moves the directory to the backend `target` describes, while it serves (see the module
    /// docs); returns what it did.
    ///
    /// The target must be `cow_btree`, `lsm_tree` or `rocksdb` with an absent or empty data
    /// directory, and the source any backend but etcd, with its change feed on (a watch
    /// history long enough for one catch-up round). `InvalidInput` or `Config` otherwise,
    /// with nothing changed. A failure before the switch leaves the source serving and
    /// removes the target's staging directory; one from it on (the switched marker, the
    /// rename or the reopen of the target failed) refuses writes with `Poisoned` until the
    /// directory is reopened, which settles the marker.
    pub async fn migrate_to(&self, target: &PersistenceConfig) -> OrbitResult<MigrationReport> {
        self.migrate_to_observed(target, &|_| {}).await
    }

    /// [`migrate_to`](Self::migrate_to), calling `observe` after each step (progress, or a
    /// test that crashes the process at a chosen step).
    pub async fn migrate_to_observed(
        &self,
        target: &PersistenceConfig,
        observe: &(dyn Fn(MigrationStep) + Send + Sync),
    ) -> OrbitResult<MigrationReport> {
        let _one = self.migrating.lock().await;
        self.shared.check_writable()?;
        let started = Instant::now();
        let (source, _) = self.shared.current();
        let plan = Plan::new(&self.config(), target)?;
        let fs: Arc<dyn FileSystem> = Arc::new(StdFileSystem::new());
        let prepared = plan.clone();
        let prepare_fs = Arc::clone(&fs);
        blocking(move || prepared.prepare(&*prepare_fs)).await?;
        let (staged_config, clock) = (plan.staged_config(), Arc::clone(&self.clock));
        let staged = match blocking(move || crate::open_backend(&staged_config, clock)).await {
            Ok(staged) => staged,
            Err(e) => return Err(plan.abandon(fs, None, e).await),
        };
        observe(MigrationStep::Marked);
        let mut report = MigrationReport {
            source: plan.source.backend,
            target: plan.target.backend,
            copied_leases: 0,
            copied_at_revision: 0,
            replicated_events: 0,
            catch_up_rounds: 0,
            switched_at_revision: 0,
            write_stall_us: 0,
            elapsed_ms: 0,
        };
        let copy = Copy {
            source: &*source,
            target: &*staged,
            observe,
        };
        let mut watch = match copy.load(&mut report).await {
            Ok(watch) => watch,
            Err(e) => return Err(plan.abandon(fs, Some(staged), e).await),
        };
        let held = match copy
            .catch_up(&self.shared.barrier, &mut watch, &mut report)
            .await
        {
            Ok(held) => held,
            Err(e) => return Err(plan.abandon(fs, Some(staged), e).await),
        };
        let (barrier, stalled) = match held {
            Some(held) => held,
            None => (self.shared.barrier.write().await, Instant::now()),
        };
        observe(MigrationStep::Barrier);
        let drained = match source.current_revision().await {
            Ok(goal) => copy.drain(&mut watch, &mut report, goal, None).await,
            Err(e) => Err(e),
        };
        if let Err(e) = drained {
            drop(barrier);
            return Err(plan.abandon(fs, Some(staged), e).await);
        }
        observe(MigrationStep::Drained);
        drop(watch);
        if let Err(e) = staged.shutdown().await {
            drop(barrier);
            return Err(plan.abandon(fs, Some(staged), e).await);
        }
        drop(staged);
        observe(MigrationStep::TargetClosed);
        // From the switched marker on the target is authoritative. A failure from here leaves
        // writes refused until a reopen settles the marker, never the source written again:
        // even a failed marker write may have left it switched on disk (the target holds every
        // acknowledged write either way).
        let (finished, target_config, clock) =
            (plan.clone(), plan.target.clone(), Arc::clone(&self.clock));
        let opened = async {
            let switched = finished.clone();
            let switch_fs = Arc::clone(&fs);
            blocking(move || switched.mark(&*switch_fs, MarkerState::Switched)).await?;
            observe(MigrationStep::Switched);
            blocking(move || finished.rename_into_place(&*fs)).await?;
            observe(MigrationStep::Renamed);
            blocking(move || crate::open_backend(&target_config, clock)).await
        }
        .await;
        let store = match opened {
            Ok(store) => store,
            Err(e) => {
                *self
                    .shared
                    .broken
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(format!(
                    "the migration to the {} store in {} failed at its switch ({e}): reopen \
                     the directory to settle it",
                    plan.target.backend.as_str(),
                    plan.target_dir.display()
                ));
                return Err(e);
            }
        };
        {
            let mut serving = self
                .shared
                .serving
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            serving.store = store;
            serving.config = plan.target.clone();
            serving.generation += 1;
        }
        observe(MigrationStep::Reopened);
        drop(barrier);
        report.write_stall_us = report
            .write_stall_us
            .max(stalled.elapsed().as_micros() as u64);
        if let Err(e) = source.shutdown().await {
            tracing::warn!(error = %e, "closing the source store after a migration");
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(?report, "migration finished");
        Ok(report)
    }
}

/// Where a migration reads, writes and reports.
struct Copy<'a> {
    source: &'a dyn AddressableDirectoryProvider,
    target: &'a dyn AddressableDirectoryProvider,
    observe: &'a (dyn Fn(MigrationStep) + Send + Sync),
}

impl Copy<'_> {
    /// Loads the source's snapshot into the target; returns the source's events from it.
    async fn load(&self, report: &mut MigrationReport) -> OrbitResult<Pump> {
        // The pump starts before the snapshot, so it reads the feed from the first event the
        // copy may need while the snapshot is taken; the events up to R are skipped.
        let from = self.source.current_revision().await?;
        let watch = Pump::start(self.source.watch(from).await?);
        let LeaseSnapshot { leases, revision } = self.source.snapshot_leases().await?;
        for chunk in leases.chunks(MAX_BATCH_LEN) {
            self.target.restore_leases(chunk, revision).await?;
        }
        if leases.is_empty() {
            // The revision counter still starts at R.
            self.target.restore_leases(&[], revision).await?;
        }
        report.copied_leases = leases.len() as u64;
        report.copied_at_revision = revision;
        report.switched_at_revision = revision;
        (self.observe)(MigrationStep::Copied);
        Ok(watch)
    }

    /// Rounds of replication while writers go on, until one finds little to do. When writers
    /// outrun the copy (a round's lag did not shrink), the rounds become slices: up to
    /// [`SLICE`] of replication with writes held at `barrier`, then a window of writes that
    /// halves each time the lag still grew (down to none: one write per writer between two
    /// slices), so the copy gains while no write waits much longer than a slice. A slice that
    /// catches up with writes held is the final barrier: it is returned, held, with when it
    /// began.
    async fn catch_up<'b>(
        &self,
        barrier: &'b AsyncRwLock<()>,
        watch: &mut Pump,
        report: &mut MigrationReport,
    ) -> OrbitResult<Option<(RwLockWriteGuard<'b, ()>, Instant)>> {
        let (mut last_lag, mut sliced, mut window) = (u64::MAX, false, SLICE / 2);
        for round in 1.. {
            let held = match sliced {
                true => Some((barrier.write().await, Instant::now())),
                false => None,
            };
            let goal = self.source.current_revision().await?;
            let lag = goal.saturating_sub(report.switched_at_revision);
            let deadline = match &held {
                Some((_, since)) => *since + SLICE,
                None => Instant::now() + ROUND,
            };
            self.drain(watch, report, goal, Some(deadline)).await?;
            report.catch_up_rounds = round;
            (self.observe)(MigrationStep::CaughtUp(round));
            if let Some((held, since)) = held {
                if report.switched_at_revision >= goal {
                    return Ok(Some((held, since)));
                }
                drop(held);
                report.write_stall_us = report
                    .write_stall_us
                    .max(since.elapsed().as_micros() as u64);
                if lag >= last_lag {
                    // Below a millisecond, none: the writes queued at the barrier go through,
                    // one per writer, and the next slice queues behind them.
                    window = Some(window / 2)
                        .filter(|w| *w >= MIN_WINDOW)
                        .unwrap_or_default();
                }
                match window.is_zero() {
                    true => tokio::task::yield_now().await,
                    false => tokio::time::sleep(window).await,
                }
            } else if lag <= SMALL_LAG || round >= MAX_ROUNDS {
                break;
            }
            sliced |= lag >= last_lag;
            last_lag = lag;
        }
        Ok(None)
    }

    /// Replicates every change up to the source's revision `goal`, or until `deadline` passes.
    async fn drain(
        &self,
        watch: &mut Pump,
        report: &mut MigrationReport,
        goal: u64,
        deadline: Option<Instant>,
    ) -> OrbitResult<()> {
        let mut batch: Vec<LeaseEvent> = Vec::new();
        while report.switched_at_revision < goal {
            let event = match tokio::time::timeout(FEED_WAIT, watch.events.recv()).await {
                Ok(Some(Ok(event))) => event,
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => return Err(OrbitError::Closed),
                Err(_) => {
                    return Err(OrbitError::Unavailable(format!(
                        "the source's change feed owed revision {} and sent nothing for {:?}",
                        report.switched_at_revision + 1,
                        FEED_WAIT
                    )));
                }
            };
            if event.revision <= report.switched_at_revision {
                continue; // in the snapshot already
            }
            report.switched_at_revision = event.revision;
            batch.push(event);
            if batch.len() == REPLICATE_BATCH || report.switched_at_revision >= goal {
                self.target.replicate(&batch).await?;
                report.replicated_events += batch.len() as u64;
                batch.clear();
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// The source's change feed, read by a task of its own as fast as the source writes, so the
/// history the source keeps never drops an event the copy has not replicated yet (a memory
/// store's writers outrun any copy): what a migration buffers is the events of its copy time.
struct Pump {
    events: mpsc::UnboundedReceiver<OrbitResult<LeaseEvent>>,
    task: JoinHandle<()>,
}

impl Pump {
    fn start(mut watch: LeaseWatch) -> Pump {
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(next) = watch.next().await {
                let end = next.is_err();
                if tx.send(next).is_err() || end {
                    break;
                }
            }
        });
        Pump { events, task }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The directories of one migration.
#[derive(Clone)]
struct Plan {
    source: PersistenceConfig,
    target: PersistenceConfig,
    /// The source's data directory, where the marker lives (none for memory).
    source_dir: Option<PathBuf>,
    target_dir: PathBuf,
    staging: PathBuf,
}

impl Plan {
    fn new(source: &PersistenceConfig, target: &PersistenceConfig) -> OrbitResult<Plan> {
        target.validate()?;
        if source.backend == BackendType::Etcd {
            return Err(OrbitError::Config(
                "a live migration out of etcd is not supported: its revisions are the \
                 cluster's, shared by its transactions; take a backup and restore it"
                    .into(),
            ));
        }
        let Some(target_dir) = target.data_dir() else {
            return Err(OrbitError::Config(format!(
                "a live migration moves into cow_btree, lsm_tree or rocksdb, not {}: {}",
                target.backend.as_str(),
                match target.backend {
                    BackendType::Etcd => "etcd assigns every revision itself",
                    _ => "the memory backend keeps nothing on disk",
                }
            )));
        };
        let source_dir = source.data_dir();
        if source_dir.as_deref() == Some(target_dir.as_path()) {
            return Err(OrbitError::invalid(format!(
                "the target's data directory {} is the source's",
                target_dir.display()
            )));
        }
        Ok(Plan {
            source: source.clone(),
            target: target.effective(),
            staging: staging_dir(&target_dir)?,
            source_dir,
            target_dir,
        })
    }

    fn staged_config(&self) -> PersistenceConfig {
        self.target.with_data_dir(&self.staging)
    }

    /// Refuses a non-empty target, clears a staging directory a crash left, and writes the
    /// `copying` marker.
    fn prepare(&self, fs: &dyn FileSystem) -> OrbitResult<()> {
        if fs.exists(&self.target_dir)? && !fs.list_dir(&self.target_dir)?.is_empty() {
            return Err(OrbitError::invalid(format!(
                "{} is not empty: a migration moves only into an absent or empty directory",
                self.target_dir.display()
            )));
        }
        remove_dir(&self.staging)?;
        self.mark(fs, MarkerState::Copying)
    }

    fn mark(&self, fs: &dyn FileSystem, state: MarkerState) -> OrbitResult<()> {
        match &self.source_dir {
            Some(dir) => marker::write(
                fs,
                dir,
                &Marker {
                    state,
                    target: self.target.clone(),
                },
            ),
            None => Ok(()),
        }
    }

    fn rename_into_place(&self, fs: &dyn FileSystem) -> OrbitResult<()> {
        move_into_place(fs, &self.staging, &self.target_dir)
    }

    /// Gives the migration up before its switch: closes and removes the staged target and
    /// the marker; the source serves on. Returns `error`, the reason.
    async fn abandon(
        &self,
        fs: Arc<dyn FileSystem>,
        staged: Option<Arc<dyn AddressableDirectoryProvider>>,
        error: OrbitError,
    ) -> OrbitError {
        if let Some(staged) = staged {
            let _ = staged.shutdown().await;
        }
        let plan = self.clone();
        let cleaned = blocking(move || {
            remove_dir(&plan.staging)?;
            match &plan.source_dir {
                Some(dir) => marker::remove(&*fs, dir),
                None => Ok(()),
            }
        })
        .await;
        if let Err(e) = cleaned {
            tracing::warn!(error = %e, "cleaning up after a failed migration");
        }
        tracing::warn!(error = %error, "migration abandoned; the source serves on");
        error
    }
}

/// Where a migration into `dir` builds its target: `.<name>.migrating` beside it.
fn staging_dir(dir: &Path) -> OrbitResult<PathBuf> {
    sibling_dir(dir, "migrating").map(|(staging, _)| staging)
}

/// The config whose store is authoritative for `config`, after finishing or rolling back the
/// migrations its data directory's marker records: a `copying` marker's staging directory
/// and the marker are removed (the source is authoritative); a `switched` one is followed to
/// its target, whose staging directory is renamed into place if a crash came first. Blocking.
pub fn settle(fs: &dyn FileSystem, config: &PersistenceConfig) -> OrbitResult<PersistenceConfig> {
    let mut config = config.clone();
    for _ in 0..MAX_HOPS {
        let Some(dir) = config.data_dir() else {
            return Ok(config);
        };
        let Some(found) = marker::read(fs, &dir)? else {
            return Ok(config);
        };
        let target_dir = found.target.data_dir().unwrap_or_default();
        let staging = staging_dir(&target_dir)?;
        match found.state {
            MarkerState::Copying => {
                tracing::warn!(
                    source = %dir.display(),
                    staging = %staging.display(),
                    "rolling back a migration interrupted before its switch"
                );
                remove_dir(&staging)?;
                fs.sync_dir(orbit_persistence_core::fs::parent_dir(&staging))?;
                marker::remove(fs, &dir)?;
                return Ok(config);
            }
            MarkerState::Switched => {
                if fs.exists(&staging)? {
                    if fs.exists(&target_dir)? && !fs.list_dir(&target_dir)?.is_empty() {
                        return Err(OrbitError::WrongStore {
                            path: target_dir,
                            detail: format!(
                                "a migration switched to this directory, but it is not empty \
                                 and the migrated store is still in {}: move one aside",
                                staging.display()
                            ),
                        });
                    }
                    tracing::warn!(
                        target = %target_dir.display(),
                        "finishing a migration interrupted after its switch"
                    );
                    move_into_place(fs, &staging, &target_dir)?;
                }
                config = found.target;
            }
        }
    }
    Err(OrbitError::Config(format!(
        "more than {MAX_HOPS} migration markers to follow from {:?}",
        config.data_dir()
    )))
}

/// As [`settle`], writing nothing: a `copying` marker is left as it is (the source is
/// authoritative); a `switched` one is followed only once its rename is done.
pub fn settle_read_only(
    fs: &dyn FileSystem,
    config: &PersistenceConfig,
) -> OrbitResult<PersistenceConfig> {
    let mut config = config.clone();
    for _ in 0..MAX_HOPS {
        let Some(dir) = config.data_dir() else {
            return Ok(config);
        };
        match marker::read(fs, &dir)? {
            Some(Marker {
                state: MarkerState::Switched,
                target,
            }) => {
                let target_dir = target.data_dir().unwrap_or_default();
                if fs.exists(&staging_dir(&target_dir)?)? {
                    return Err(OrbitError::WrongStore {
                        path: dir,
                        detail: format!(
                            "this store migrated to {}, and the switch is not finished: open \
                             it read-write once to finish it",
                            target_dir.display()
                        ),
                    });
                }
                config = target;
            }
            _ => return Ok(config),
        }
    }
    Err(OrbitError::Config(format!(
        "more than {MAX_HOPS} migration markers to follow from {:?}",
        config.data_dir()
    )))
}

/// A watch that follows the directory across a switch: when its store closes because a
/// migration switched, it goes on from the next store at the last revision it delivered.
struct FollowingFeed {
    shared: Arc<Shared>,
    watch: LeaseWatch,
    generation: u64,
    last: u64,
}

#[async_trait]
impl EventSource for FollowingFeed {
    async fn next_batch(&mut self) -> OrbitResult<Vec<LeaseEvent>> {
        loop {
            match self.watch.next().await {
                Some(Ok(event)) => {
                    self.last = event.revision;
                    return Ok(vec![event]);
                }
                Some(Err(OrbitError::Closed)) | None
                    if self.shared.generation() != self.generation =>
                {
                    let (store, generation) = self.shared.current();
                    self.watch = store.watch(self.last).await?;
                    self.generation = generation;
                }
                Some(Err(e)) => return Err(e),
                None => return Err(OrbitError::Closed),
            }
        }
    }
}

#[async_trait]
impl PersistenceProvider for SwappableProvider {
    async fn initialize(&self) -> OrbitResult<()> {
        read!(self, |s| s.initialize())
    }

    async fn shutdown(&self) -> OrbitResult<()> {
        let _one = self.migrating.lock().await;
        let (store, _) = self.shared.current();
        store.shutdown().await
    }

    async fn health_check(&self) -> ProviderHealth {
        if let Err(e) = self.shared.check_writable() {
            return ProviderHealth::Unhealthy {
                reason: e.to_string(),
            };
        }
        let (store, _) = self.shared.current();
        store.health_check().await
    }

    async fn metrics(&self) -> PersistenceMetrics {
        let (store, _) = self.shared.current();
        store.metrics().await
    }

    async fn recovery_report(&self) -> RecoveryReport {
        let (store, _) = self.shared.current();
        store.recovery_report().await
    }
}

#[async_trait]
impl AddressableDirectoryProvider for SwappableProvider {
    async fn store_lease(&self, lease: &AddressableLease) -> OrbitResult<()> {
        write!(self, |s| s.store_lease(lease))
    }

    async fn get_lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        read!(self, |s| s.get_lease(r))
    }

    async fn remove_lease(&self, r: &AddressableReference) -> OrbitResult<bool> {
        write!(self, |s| s.remove_lease(r))
    }

    async fn list_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        read!(self, |s| s.list_node_leases(node))
    }

    async fn cleanup_expired_leases(&self) -> OrbitResult<u64> {
        write!(self, |s| s.cleanup_expired_leases())
    }

    async fn acquire_lease(&self, lease: &AddressableLease) -> OrbitResult<Acquire> {
        write!(self, |s| s.acquire_lease(lease))
    }

    async fn renew_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
        expires_at: Timestamp,
        renew_at: Timestamp,
    ) -> OrbitResult<Renew> {
        write!(self, |s| s
            .renew_lease(r, owner, revision, expires_at, renew_at))
    }

    async fn release_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
    ) -> OrbitResult<bool> {
        write!(self, |s| s.release_lease(r, owner, revision))
    }

    async fn store_leases(&self, leases: &[AddressableLease]) -> OrbitResult<()> {
        write!(self, |s| s.store_leases(leases))
    }

    async fn remove_node_leases(&self, node: &NodeId) -> OrbitResult<u64> {
        write!(self, |s| s.remove_node_leases(node))
    }

    async fn current_revision(&self) -> OrbitResult<u64> {
        read!(self, |s| s.current_revision())
    }

    async fn snapshot_leases(&self) -> OrbitResult<LeaseSnapshot> {
        read!(self, |s| s.snapshot_leases())
    }

    async fn watch(&self, from_revision: u64) -> OrbitResult<LeaseWatch> {
        let (store, generation) = self.shared.current();
        let watch = store.watch(from_revision).await?;
        Ok(LeaseWatch::new(FollowingFeed {
            shared: Arc::clone(&self.shared),
            watch,
            generation,
            last: from_revision,
        }))
    }

    async fn backup(&self, dest: &std::path::Path) -> OrbitResult<BackupSummary> {
        read!(self, |s| s.backup(dest))
    }

    async fn restore_leases(&self, leases: &[AddressableLease], revision: u64) -> OrbitResult<()> {
        write!(self, |s| s.restore_leases(leases, revision))
    }

    async fn replicate(&self, events: &[LeaseEvent]) -> OrbitResult<()> {
        write!(self, |s| s.replicate(events))
    }
}
