//! The suite's own durable subject: a deliberately small provider built only from core's shared
//! disk pieces (data-dir lock, file-system seam, CRC32 log, group-commit writer, change stager)
//! over one ordered map, replaying its whole log at open. It exists so that the durable cases,
//! the kill -9 harness and those shared pieces are exercised end to end before any real disk
//! backend lands; it is not a backend (no checkpoints, no indexes, full scans).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use orbit_persistence_conformance::{Backend, Capabilities, conformance_suite};
use orbit_persistence_core::backup::{self, BackupSummary};
use orbit_persistence_core::change::{
    ChangeStager, LeaseChange, LeaseSource, WriteOutcome, WriteRequest, decode_changes,
};
use orbit_persistence_core::feed::{EventRing, HistoryFeed};
use orbit_persistence_core::fs::{FileSystem, StdFileSystem};
use orbit_persistence_core::group_commit::{CommitHandler, GroupCommit};
use orbit_persistence_core::lease_writes::LeaseWrites;
use orbit_persistence_core::lock::DirLock;
use orbit_persistence_core::log::{LogBatch, LogRecord, LogWriter};
use orbit_persistence_core::metrics::MetricsRecorder;
use orbit_persistence_core::{
    Acquire, AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock,
    LeaseEvent, LeaseEventKind, LeaseSnapshot, LeaseWatch, NodeId, OrbitError, OrbitResult,
    PersistenceMetrics, PersistenceProvider, ProviderHealth, Renew, SyncMode, Timestamp, rules,
};

type Map = BTreeMap<AddressableReference, AddressableLease>;

/// Applies `changes` to `map`, recording their events in `feed`.
fn apply(map: &mut Map, changes: Vec<LeaseChange>, feed: &EventRing) {
    for change in changes {
        match change {
            LeaseChange::Put(l) => {
                map.insert(l.reference.clone(), l.clone());
                feed.push(LeaseEvent {
                    revision: l.revision,
                    kind: LeaseEventKind::Put,
                    lease: l,
                });
            }
            LeaseChange::Restored(l) => {
                map.insert(l.reference.clone(), l);
            }
            // The ring restarts at the restore's revision (it was below it: the stager checked).
            LeaseChange::Floor(revision) => feed
                .jump(&AtomicU64::new(0), revision)
                .expect("a floor above revision 0"),
            LeaseChange::Delete {
                reference,
                revision,
                cause,
            } => {
                if let Some(lease) = map.remove(&reference) {
                    feed.push(LeaseEvent {
                        revision,
                        kind: cause.event_kind(),
                        lease,
                    });
                }
            }
        };
    }
}

struct Published(Arc<RwLock<Map>>);

impl LeaseSource for Published {
    fn lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        Ok(self.0.read().unwrap().get(r).cloned())
    }

    fn expired(&self, now: Timestamp, limit: usize) -> OrbitResult<Vec<AddressableLease>> {
        let map = self.0.read().unwrap();
        Ok(map
            .values()
            .filter(|l| l.is_expired(now))
            .take(limit)
            .cloned()
            .collect())
    }

    fn node_references(
        &self,
        node: &NodeId,
        after: Option<&AddressableReference>,
        limit: usize,
    ) -> OrbitResult<Vec<AddressableReference>> {
        let map = self.0.read().unwrap();
        Ok(map
            .values()
            .filter(|l| l.node_id == *node && after.is_none_or(|a| l.reference > *a))
            .take(limit)
            .map(|l| l.reference.clone())
            .collect())
    }
}

struct Writer {
    log: LogWriter,
    stager: ChangeStager,
    published: Published,
    last_revision: Arc<AtomicU64>,
    feed: Arc<EventRing>,
}

impl CommitHandler for Writer {
    type Request = WriteRequest;
    type Response = WriteOutcome;

    fn stage(&mut self, req: WriteRequest, batch: &mut LogBatch) -> OrbitResult<WriteOutcome> {
        self.stager.stage(&self.published, req, batch)
    }

    fn write(&mut self, batch: &LogBatch, sync: bool) -> OrbitResult<()> {
        self.log.append(batch)?;
        if sync {
            self.log.sync()?;
        }
        Ok(())
    }

    fn publish(&mut self) {
        // The revision moves under the map's lock, so a snapshot pairs the two.
        let mut map = self.published.0.write().unwrap();
        apply(&mut map, self.stager.take(), &self.feed);
        self.last_revision
            .store(self.stager.last_revision(), Ordering::SeqCst);
    }

    fn abort(&mut self) {
        self.stager.abort();
    }

    fn sync(&mut self) -> OrbitResult<()> {
        self.log.sync()
    }
}

struct LogBacked {
    map: Arc<RwLock<Map>>,
    writes: Arc<LeaseWrites<Writer>>,
    lock: Mutex<Option<DirLock>>,
    closed: AtomicBool,
    last_revision: Arc<AtomicU64>,
    metrics: Arc<MetricsRecorder>,
    feed: Arc<EventRing>,
}

/// Events the log-backed store's feed keeps (its history is rebuilt by the replay at open).
const HISTORY: u64 = 100_000;

fn replay(path: &Path, records: Vec<LogRecord>, feed: &EventRing) -> OrbitResult<(Map, u64)> {
    let mut map = Map::new();
    let mut revision = 0;
    for rec in records {
        // The payload starts after the 8-byte record header.
        let changes =
            decode_changes(&rec.payload).map_err(|e| e.into_corruption(path, rec.offset + 8))?;
        revision = changes
            .iter()
            .map(LeaseChange::revision)
            .fold(revision, u64::max);
        apply(&mut map, changes, feed);
    }
    Ok((map, revision))
}

fn open(clock: Arc<dyn Clock>, dir: &Path) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    let fs = StdFileSystem::new();
    let path = dir.join("wal.log");
    // As every store must: a new one only in an absent or empty directory, checked before
    // the lock file is created. (Our engines use core's identity record for this.)
    if fs.exists(dir)? && !fs.exists(&path)? {
        let names = fs.list_dir(dir)?;
        if let Some(other) = names.iter().find(|n| *n != DirLock::FILE_NAME) {
            return Err(OrbitError::wrong_store(
                dir,
                format!("holds {other} but no log-backed store"),
            ));
        }
    }
    let lock = DirLock::acquire(dir)?;
    let feed = Arc::new(EventRing::new(HISTORY, 0));
    let (log, map, revision) = if fs.exists(&path)? {
        let (log, replayed) = LogWriter::open_for_append(&fs, &path)?;
        let (map, revision) = replay(&path, replayed.records, &feed)?;
        (log, map, revision)
    } else {
        (LogWriter::create(&fs, &path)?, Map::new(), 0)
    };
    let map = Arc::new(RwLock::new(map));
    let last_revision = Arc::new(AtomicU64::new(revision));
    let writer = Writer {
        log,
        stager: ChangeStager::new(revision),
        published: Published(map.clone()),
        last_revision: last_revision.clone(),
        feed: Arc::clone(&feed),
    };
    let metrics = Arc::new(MetricsRecorder::default());
    let writer = GroupCommit::spawn("log-backed-writer", writer, SyncMode::Always)?;
    Ok(Arc::new(LogBacked {
        map,
        writes: Arc::new(LeaseWrites::new(writer, clock, metrics.clone())),
        lock: Mutex::new(Some(lock)),
        closed: AtomicBool::new(false),
        last_revision,
        metrics,
        feed,
    }))
}

impl LogBacked {
    fn writes(&self) -> OrbitResult<&Arc<LeaseWrites<Writer>>> {
        self.check_open()?;
        Ok(&self.writes)
    }

    fn check_open(&self) -> OrbitResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(OrbitError::Closed);
        }
        Ok(())
    }

    fn read_lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        self.read(|map| map.get(r).cloned())
    }

    fn read_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        self.read(|map| {
            map.values()
                .filter(|l| l.node_id == *node)
                .cloned()
                .collect()
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Map) -> T) -> OrbitResult<T> {
        self.check_open()?;
        let start = Instant::now();
        let out = f(&self.map.read().unwrap());
        self.metrics.read_done(start);
        Ok(out)
    }
}

#[async_trait]
impl PersistenceProvider for LogBacked {
    async fn initialize(&self) -> OrbitResult<()> {
        self.check_open()
    }

    async fn shutdown(&self) -> OrbitResult<()> {
        self.closed.store(true, Ordering::Release);
        let writes = self.writes.clone();
        tokio::task::spawn_blocking(move || writes.writer().shutdown())
            .await
            .expect("shutdown task")?;
        self.lock.lock().unwrap().take();
        self.feed.signal().close();
        Ok(())
    }

    async fn health_check(&self) -> ProviderHealth {
        if self.closed.load(Ordering::Acquire) || self.writes.writer().is_poisoned() {
            return ProviderHealth::Unhealthy {
                reason: "closed or poisoned".into(),
            };
        }
        ProviderHealth::Healthy
    }

    async fn metrics(&self) -> PersistenceMetrics {
        PersistenceMetrics {
            lease_count: self.map.read().unwrap().len() as u64,
            last_revision: self.last_revision.load(Ordering::SeqCst),
            ..self.metrics.snapshot()
        }
    }
}

#[async_trait]
impl AddressableDirectoryProvider for LogBacked {
    async fn store_lease(&self, lease: &AddressableLease) -> OrbitResult<()> {
        self.writes()?.store(std::slice::from_ref(lease)).await
    }

    async fn get_lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        rules::validate_reference(r)?;
        self.read_lease(r)
    }

    async fn remove_lease(&self, r: &AddressableReference) -> OrbitResult<bool> {
        self.writes()?.remove(r).await
    }

    async fn list_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        rules::validate_node(node)?;
        self.read_node_leases(node)
    }

    async fn cleanup_expired_leases(&self) -> OrbitResult<u64> {
        self.writes()?.cleanup().await
    }

    async fn remove_node_leases(&self, node: &NodeId) -> OrbitResult<u64> {
        self.writes()?.remove_node(node).await
    }

    async fn current_revision(&self) -> OrbitResult<u64> {
        self.check_open()?;
        Ok(self.last_revision.load(Ordering::SeqCst))
    }

    async fn snapshot_leases(&self) -> OrbitResult<LeaseSnapshot> {
        self.read(|map| LeaseSnapshot {
            // Written under the map's write lock, with the changes it counts.
            revision: self.last_revision.load(Ordering::SeqCst),
            leases: map.values().cloned().collect(),
        })
    }

    async fn backup(&self, dest: &Path) -> OrbitResult<BackupSummary> {
        backup::write_snapshot("log-backed", self.snapshot_leases().await?, dest).await
    }

    async fn restore_leases(&self, leases: &[AddressableLease], revision: u64) -> OrbitResult<()> {
        self.writes()?.restore(leases, revision).await
    }

    async fn replicate(&self, events: &[LeaseEvent]) -> OrbitResult<()> {
        self.writes()?.replicate(events).await
    }

    async fn watch(&self, from_revision: u64) -> OrbitResult<LeaseWatch> {
        self.check_open()?;
        Ok(LeaseWatch::new(HistoryFeed::new(
            Arc::clone(&self.feed),
            self.feed.signal(),
            from_revision,
        )))
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

const LOG_BACKED: Backend = Backend {
    name: "log-backed test subject",
    open,
    capabilities: Capabilities {
        durable: true,
        exclusive: true,
    },
};

conformance_suite!(LOG_BACKED, durable = true);
