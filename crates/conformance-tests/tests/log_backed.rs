//! The suite's own durable subject: a deliberately small provider built only from core's shared
//! disk pieces (data-dir lock, file-system seam, CRC32 log, group-commit writer) over one ordered
//! map, replaying its whole log at open. It exists so that the durable cases, the kill -9
//! harness and those shared pieces are exercised end to end before any real disk backend lands;
//! it is not a backend (no checkpoints, no indexes, full scans).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use orbit_persistence_conformance::{Backend, Capabilities, conformance_suite};
use orbit_persistence_core::encoding::{
    decode_lease, decode_reference, encode_lease, encode_reference,
};
use orbit_persistence_core::fs::{FileSystem, StdFileSystem};
use orbit_persistence_core::group_commit::{CommitHandler, GroupCommit};
use orbit_persistence_core::lock::DirLock;
use orbit_persistence_core::log::{LogBatch, LogWriter};
use orbit_persistence_core::metrics::MetricsRecorder;
use orbit_persistence_core::{
    Acquire, AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, NodeId,
    OrbitError, OrbitResult, PersistenceMetrics, PersistenceProvider, ProviderHealth, Renew,
    SyncMode, Timestamp, rules,
};

type Map = BTreeMap<AddressableReference, AddressableLease>;

const PUT: u8 = 1;
const DELETE: u8 = 2;

enum Req {
    Store(Vec<AddressableLease>),
    Remove(AddressableReference),
    Acquire(AddressableLease, Timestamp),
    Renew(AddressableReference, NodeId, u64, Timestamp, Timestamp),
    Release(AddressableReference, NodeId, u64),
    Cleanup(Timestamp),
}

enum Resp {
    Done,
    Bool(bool),
    Count(u64),
    Acquire(Acquire),
    Renew(Renew),
}

enum Change {
    Put(AddressableLease),
    Delete(AddressableReference),
}

struct Writer {
    log: LogWriter,
    /// The writer's view: published state plus this batch's staged changes.
    view: Map,
    staged: Vec<Change>,
    revision: u64,
    published: Arc<RwLock<Map>>,
    last_revision: Arc<AtomicU64>,
}

impl Writer {
    fn put(
        &mut self,
        batch: &mut LogBatch,
        mut lease: AddressableLease,
    ) -> OrbitResult<AddressableLease> {
        self.revision += 1;
        lease.revision = self.revision;
        let mut record = vec![PUT];
        record.extend(encode_lease(&lease));
        batch.push(&record)?;
        self.view.insert(lease.reference.clone(), lease.clone());
        self.staged.push(Change::Put(lease.clone()));
        Ok(lease)
    }

    fn delete(&mut self, batch: &mut LogBatch, r: &AddressableReference) -> OrbitResult<bool> {
        if !self.view.contains_key(r) {
            return Ok(false);
        }
        // A delete consumes a revision and logs it, so revisions never repeat after a crash.
        self.revision += 1;
        let mut record = vec![DELETE];
        record.extend(self.revision.to_be_bytes());
        record.extend(encode_reference(r));
        batch.push(&record)?;
        self.view.remove(r);
        self.staged.push(Change::Delete(r.clone()));
        Ok(true)
    }
}

impl CommitHandler for Writer {
    type Request = Req;
    type Response = Resp;

    fn stage(&mut self, req: Req, batch: &mut LogBatch) -> OrbitResult<Resp> {
        Ok(match req {
            Req::Store(leases) => {
                for l in leases {
                    self.put(batch, l)?;
                }
                Resp::Done
            }
            Req::Remove(r) => Resp::Bool(self.delete(batch, &r)?),
            Req::Acquire(l, now) => {
                match rules::acquire_allowed(self.view.get(&l.reference), now) {
                    Ok(()) => Resp::Acquire(Acquire::Acquired(self.put(batch, l)?)),
                    Err(held) => Resp::Acquire(Acquire::Held(held)),
                }
            }
            Req::Renew(r, owner, rev, e, ra) => {
                match rules::renew_decision(self.view.get(&r), &owner, rev, e, ra) {
                    Ok(l) => Resp::Renew(Renew::Renewed(self.put(batch, l)?)),
                    Err(lost) => Resp::Renew(lost),
                }
            }
            Req::Release(r, owner, rev) => {
                let owned = rules::owns(self.view.get(&r), &owner, rev);
                Resp::Bool(owned && self.delete(batch, &r)?)
            }
            Req::Cleanup(now) => {
                let expired: Vec<_> = self
                    .view
                    .values()
                    .filter(|l| l.is_expired(now))
                    .map(|l| l.reference.clone())
                    .collect();
                for r in &expired {
                    self.delete(batch, r)?;
                }
                Resp::Count(expired.len() as u64)
            }
        })
    }

    fn write(&mut self, batch: &LogBatch, sync: bool) -> OrbitResult<()> {
        self.log.append(batch)?;
        if sync {
            self.log.sync()?;
        }
        Ok(())
    }

    fn publish(&mut self) {
        let mut map = self.published.write().unwrap();
        for change in self.staged.drain(..) {
            match change {
                Change::Put(l) => map.insert(l.reference.clone(), l),
                Change::Delete(r) => map.remove(&r),
            };
        }
        self.last_revision.store(self.revision, Ordering::SeqCst);
    }

    fn abort(&mut self) {
        self.staged.clear();
        self.view = self.published.read().unwrap().clone();
    }

    fn sync(&mut self) -> OrbitResult<()> {
        self.log.sync()
    }
}

struct LogBacked {
    clock: Arc<dyn Clock>,
    map: Arc<RwLock<Map>>,
    writer: GroupCommit<Writer>,
    lock: Mutex<Option<DirLock>>,
    closed: AtomicBool,
    last_revision: Arc<AtomicU64>,
    metrics: MetricsRecorder,
}

fn replay(
    path: &Path,
    records: Vec<orbit_persistence_core::log::LogRecord>,
) -> OrbitResult<(Map, u64)> {
    let mut map = Map::new();
    let mut revision = 0;
    for rec in records {
        let corrupt = |e: orbit_persistence_core::encoding::DecodeError| {
            e.into_corruption(path, rec.offset + 9)
        };
        match rec.payload.split_first() {
            Some((&PUT, rest)) => {
                let l = decode_lease(rest).map_err(corrupt)?;
                revision = revision.max(l.revision);
                map.insert(l.reference.clone(), l);
            }
            Some((&DELETE, rest)) if rest.len() >= 8 => {
                let (rev, r) = rest.split_at(8);
                revision = revision.max(u64::from_be_bytes(rev.try_into().unwrap()));
                map.remove(&decode_reference(r).map_err(corrupt)?);
            }
            _ => {
                return Err(OrbitError::corruption(
                    path,
                    rec.offset,
                    "unknown record type",
                ));
            }
        }
    }
    Ok((map, revision))
}

fn open(clock: Arc<dyn Clock>, dir: &Path) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    let lock = DirLock::acquire(dir)?;
    let fs = StdFileSystem;
    let path = dir.join("wal.log");
    let (log, map, revision) = if fs.exists(&path)? {
        let (log, replayed) = LogWriter::open_for_append(&fs, &path)?;
        let (map, revision) = replay(&path, replayed.records)?;
        (log, map, revision)
    } else {
        (LogWriter::create(&fs, &path)?, Map::new(), 0)
    };
    let published = Arc::new(RwLock::new(map.clone()));
    let last_revision = Arc::new(AtomicU64::new(revision));
    let writer = Writer {
        log,
        view: map,
        staged: Vec::new(),
        revision,
        published: published.clone(),
        last_revision: last_revision.clone(),
    };
    Ok(Arc::new(LogBacked {
        clock,
        map: published,
        writer: GroupCommit::spawn("log-backed-writer", writer, SyncMode::Always)?,
        lock: Mutex::new(Some(lock)),
        closed: AtomicBool::new(false),
        last_revision,
        metrics: MetricsRecorder::default(),
    }))
}

impl LogBacked {
    fn check_open(&self) -> OrbitResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(OrbitError::Closed);
        }
        Ok(())
    }

    async fn submit(&self, req: Req) -> OrbitResult<Resp> {
        self.check_open()?;
        let start = Instant::now();
        let leases = match &req {
            Req::Store(leases) => leases.len() as u64,
            _ => 1,
        };
        let out = self.writer.submit(req).await;
        self.metrics.write_latency.record(start.elapsed());
        if out.is_ok() {
            MetricsRecorder::add(&self.metrics.writes, leases);
        }
        out
    }

    fn read<T>(&self, f: impl FnOnce(&Map) -> T) -> OrbitResult<T> {
        self.check_open()?;
        MetricsRecorder::add(&self.metrics.reads, 1);
        Ok(f(&self.map.read().unwrap()))
    }
}

#[async_trait]
impl PersistenceProvider for LogBacked {
    async fn initialize(&self) -> OrbitResult<()> {
        self.check_open()
    }

    async fn shutdown(&self) -> OrbitResult<()> {
        self.closed.store(true, Ordering::Release);
        self.writer.shutdown()?;
        self.lock.lock().unwrap().take();
        Ok(())
    }

    async fn health_check(&self) -> ProviderHealth {
        if self.closed.load(Ordering::Acquire) || self.writer.is_poisoned() {
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
        self.store_leases(std::slice::from_ref(lease)).await
    }

    async fn get_lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        rules::validate_reference(r)?;
        self.read(|map| map.get(r).cloned())
    }

    async fn remove_lease(&self, r: &AddressableReference) -> OrbitResult<bool> {
        rules::validate_reference(r)?;
        match self.submit(Req::Remove(r.clone())).await? {
            Resp::Bool(b) => Ok(b),
            _ => unreachable!(),
        }
    }

    async fn list_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        rules::validate_node(node)?;
        self.read(|map| {
            map.values()
                .filter(|l| l.node_id == *node)
                .cloned()
                .collect()
        })
    }

    async fn cleanup_expired_leases(&self) -> OrbitResult<u64> {
        match self.submit(Req::Cleanup(self.clock.now())).await? {
            Resp::Count(n) => Ok(n),
            _ => unreachable!(),
        }
    }

    async fn acquire_lease(&self, lease: &AddressableLease) -> OrbitResult<Acquire> {
        let now = self.clock.now();
        rules::validate_lease(lease, now)?;
        match self.submit(Req::Acquire(lease.clone(), now)).await? {
            Resp::Acquire(a) => Ok(a),
            _ => unreachable!(),
        }
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
        match self
            .submit(Req::Renew(
                r.clone(),
                owner.clone(),
                revision,
                expires_at,
                renew_at,
            ))
            .await?
        {
            Resp::Renew(x) => Ok(x),
            _ => unreachable!(),
        }
    }

    async fn release_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
    ) -> OrbitResult<bool> {
        rules::validate_release(r, owner)?;
        match self
            .submit(Req::Release(r.clone(), owner.clone(), revision))
            .await?
        {
            Resp::Bool(b) => Ok(b),
            _ => unreachable!(),
        }
    }

    async fn store_leases(&self, leases: &[AddressableLease]) -> OrbitResult<()> {
        rules::validate_batch(leases, self.clock.now())?;
        self.submit(Req::Store(leases.to_vec())).await.map(|_| ())
    }
}

const LOG_BACKED: Backend = Backend {
    name: "log-backed test subject",
    open,
    capabilities: Capabilities { durable: true },
};

conformance_suite!(LOG_BACKED, durable = true);
