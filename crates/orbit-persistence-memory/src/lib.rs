//! # orbit-persistence-memory
//!
//! The in-memory lease directory: no I/O, no durability, the correctness reference for the disk
//! backends and the fastest choice for tests and single-process caches.
//!
//! Leases are spread over [`SHARDS`] shards by the hash of their reference. Each shard holds its
//! leases with its own node and expiry indexes behind one `RwLock`, so a write updates a lease and
//! both indexes atomically, and tasks touching different shards never contend. Guards are only
//! held inside synchronous sections, never across an `.await`.
//!
//! - A multi-shard write (`store_leases`) write-locks its shards in ascending order, and
//!   `list_node_leases` read-locks all shards in the same order, so a listing never sees half a
//!   batch and no lock cycle can form.
//! - Revisions come from one atomic counter, taken under the shard lock of the lease they stamp:
//!   per reference they increase in write order, store-wide every write gets a fresh, larger one.
//! - `cleanup_expired_leases` and `remove_node_leases` remove at most [`CLEANUP_BATCH`] leases
//!   per lock hold, so they never stall writers for long.
//! - `max_entries` is enforced by reserving capacity before inserting; a full store answers
//!   `InvalidInput`, it never evicts.
//! - The change feed's history is a ring of the last `watch_history` events (core's
//!   `EventRing`), which also hands out the revisions: a writer takes its revision and records
//!   its event under the ring's lock while it holds its shard's, so events enter in revision
//!   order and a snapshot taken with every shard read-locked pairs with the counter.
#![warn(missing_docs)]

mod shard;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use async_trait::async_trait;
use orbit_persistence_core::backup::{self, BackupSummary};
use orbit_persistence_core::feed::{EventRing, HistoryFeed};
use orbit_persistence_core::metrics::MetricsRecorder;
use orbit_persistence_core::{
    Acquire, AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock,
    LeaseEvent, LeaseEventKind, LeaseSnapshot, LeaseWatch, MemoryConfig, NodeId, OrbitError,
    OrbitResult, PersistenceMetrics, PersistenceProvider, ProviderHealth, Renew, Timestamp, rules,
};

use shard::Shard;

/// Number of shards: a power of two comfortably above the core counts we run on.
pub const SHARDS: usize = 32;
/// Most leases removed per shard lock hold during cleanup.
pub const CLEANUP_BATCH: usize = 1024;

/// The in-memory [`AddressableDirectoryProvider`].
#[derive(Debug)]
pub struct MemoryDirectory {
    shards: Box<[RwLock<Shard>]>,
    clock: Arc<dyn Clock>,
    last_revision: AtomicU64,
    count: AtomicU64,
    max_entries: Option<u64>,
    closed: AtomicBool,
    metrics: MetricsRecorder,
    /// The change feed's history; it also hands out the revisions.
    feed: Arc<EventRing>,
}

fn shard_of(r: &AddressableReference) -> usize {
    let mut h = DefaultHasher::new();
    r.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl MemoryDirectory {
    /// An empty directory using `clock` for expiry.
    pub fn new(config: &MemoryConfig, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        config.validate()?;
        Ok(MemoryDirectory {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            clock,
            last_revision: AtomicU64::new(0),
            count: AtomicU64::new(0),
            max_entries: config.max_entries,
            closed: AtomicBool::new(false),
            metrics: MetricsRecorder::default(),
            feed: Arc::new(EventRing::new(config.watch_history, 0)),
        })
    }

    fn check_open(&self) -> OrbitResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(OrbitError::Closed);
        }
        Ok(())
    }

    // A poisoned lock means a panic mid-update in this process; the maps are still
    // structurally valid (each update is a few infallible map operations), so keep serving.
    fn read(&self, i: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[i].read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, i: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[i].write().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the next revision for a change of the lease `make` gives, and records its event.
    fn record(&self, kind: LeaseEventKind, lease: impl FnOnce() -> AddressableLease) -> u64 {
        self.feed.record(&self.last_revision, |revision| {
            let mut lease = lease();
            if kind == LeaseEventKind::Put {
                lease.revision = revision;
            }
            (kind, lease)
        })
    }

    /// Reserves room for `n` new leases or answers `InvalidInput` when the store is full.
    fn reserve(&self, n: u64) -> OrbitResult<()> {
        let max = self.max_entries.unwrap_or(u64::MAX);
        self.count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                c.checked_add(n).filter(|&total| total <= max)
            })
            .map(|_| ())
            .map_err(|c| {
                OrbitError::invalid(format!(
                    "memory store is full: memory.max_entries = {max}, holding {c}, adding {n}"
                ))
            })
    }

    fn release_slots(&self, n: u64) {
        self.count.fetch_sub(n, Ordering::SeqCst);
    }

    /// Runs `step` (which removes at most [`CLEANUP_BATCH`] leases) on each shard under its
    /// write lock until a step removes fewer, so writers never wait long; each removal takes a
    /// revision and is a `kind` event. Returns how many were removed.
    fn remove_in_batches(
        &self,
        kind: LeaseEventKind,
        step: impl Fn(&mut Shard) -> Vec<AddressableLease>,
    ) -> u64 {
        let mut total = 0u64;
        for i in 0..SHARDS {
            loop {
                let mut shard = self.write(i);
                let removed = step(&mut shard);
                let n = removed.len();
                for old in removed {
                    self.record(kind, || old);
                }
                drop(shard);
                self.release_slots(n as u64);
                total += n as u64;
                if n < CLEANUP_BATCH {
                    break;
                }
            }
        }
        MetricsRecorder::add(&self.metrics.writes, total);
        total
    }

    /// Writes `lease` with a fresh revision into a locked shard; returns what was stored.
    fn put(&self, shard: &mut Shard, mut lease: AddressableLease) -> OrbitResult<AddressableLease> {
        let is_new = shard.get(&lease.reference).is_none();
        if is_new {
            self.reserve(1)?;
        }
        lease.revision = self.record(LeaseEventKind::Put, || lease.clone());
        shard.upsert(lease.clone());
        MetricsRecorder::add(&self.metrics.writes, 1);
        Ok(lease)
    }

    /// Removes the lease of `r` from a locked shard (a `kind` event); whether there was one.
    fn delete(&self, shard: &mut Shard, r: &AddressableReference, kind: LeaseEventKind) -> bool {
        let Some(old) = shard.remove(r) else {
            return false;
        };
        self.release_slots(1);
        // A removal is a write: it consumes a revision so revisions keep counting writes.
        self.record(kind, || old);
        MetricsRecorder::add(&self.metrics.writes, 1);
        true
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn timed_write<T>(&self, f: impl FnOnce() -> OrbitResult<T>) -> OrbitResult<T> {
        self.check_open()?;
        let start = Instant::now();
        let out = f();
        self.metrics.write_latency.record(start.elapsed());
        out
    }

    fn timed_read<T>(&self, f: impl FnOnce() -> OrbitResult<T>) -> OrbitResult<T> {
        self.check_open()?;
        let start = Instant::now();
        let out = f();
        self.metrics.read_done(start);
        out
    }
}

#[async_trait]
impl PersistenceProvider for MemoryDirectory {
    async fn initialize(&self) -> OrbitResult<()> {
        self.check_open()
    }

    async fn shutdown(&self) -> OrbitResult<()> {
        self.closed.store(true, Ordering::Release);
        self.feed.signal().close();
        Ok(())
    }

    async fn health_check(&self) -> ProviderHealth {
        if self.closed.load(Ordering::Acquire) {
            return ProviderHealth::Unhealthy {
                reason: "the store is closed".into(),
            };
        }
        match self.max_entries {
            Some(max) if self.count.load(Ordering::Relaxed) >= max => ProviderHealth::Degraded {
                reason: format!("memory store is full (memory.max_entries = {max})"),
            },
            _ => ProviderHealth::Healthy,
        }
    }

    async fn metrics(&self) -> PersistenceMetrics {
        let memory_bytes = (0..SHARDS).map(|i| self.read(i).approx_bytes()).sum();
        PersistenceMetrics {
            lease_count: self.count.load(Ordering::Relaxed),
            last_revision: self.last_revision.load(Ordering::SeqCst),
            memory_bytes,
            ..self.metrics.snapshot()
        }
    }
}

#[async_trait]
impl AddressableDirectoryProvider for MemoryDirectory {
    async fn store_lease(&self, lease: &AddressableLease) -> OrbitResult<()> {
        rules::validate_lease(lease, self.now())?;
        self.timed_write(|| {
            let mut shard = self.write(shard_of(&lease.reference));
            self.put(&mut shard, lease.clone()).map(|_| ())
        })
    }

    async fn get_lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        rules::validate_reference(r)?;
        self.timed_read(|| Ok(self.read(shard_of(r)).get(r).cloned()))
    }

    async fn remove_lease(&self, r: &AddressableReference) -> OrbitResult<bool> {
        rules::validate_reference(r)?;
        self.timed_write(|| {
            Ok(self.delete(&mut self.write(shard_of(r)), r, LeaseEventKind::Removed))
        })
    }

    async fn list_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        rules::validate_node(node)?;
        self.timed_read(|| {
            let guards: Vec<_> = (0..SHARDS).map(|i| self.read(i)).collect();
            let mut out = Vec::new();
            for shard in &guards {
                shard.collect_node(node, &mut out);
            }
            out.sort_by(|a, b| a.reference.cmp(&b.reference));
            Ok(out)
        })
    }

    async fn cleanup_expired_leases(&self) -> OrbitResult<u64> {
        self.timed_write(|| {
            let now = self.now();
            let total = self.remove_in_batches(LeaseEventKind::Expired, |shard| {
                shard.remove_expired(now, CLEANUP_BATCH)
            });
            MetricsRecorder::add(&self.metrics.expired_removed, total);
            Ok(total)
        })
    }

    async fn remove_node_leases(&self, node: &NodeId) -> OrbitResult<u64> {
        rules::validate_node(node)?;
        self.timed_write(|| {
            Ok(self.remove_in_batches(LeaseEventKind::Evicted, |shard| {
                shard.remove_node(node, CLEANUP_BATCH)
            }))
        })
    }

    async fn acquire_lease(&self, lease: &AddressableLease) -> OrbitResult<Acquire> {
        let now = self.now();
        rules::validate_lease(lease, now)?;
        self.timed_write(|| {
            let mut shard = self.write(shard_of(&lease.reference));
            if let Err(held) = rules::acquire_allowed(shard.get(&lease.reference), now) {
                self.metrics.conflict();
                return Ok(Acquire::Held(held));
            }
            self.put(&mut shard, lease.clone()).map(Acquire::Acquired)
        })
    }

    async fn renew_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
        expires_at: Timestamp,
        renew_at: Timestamp,
    ) -> OrbitResult<Renew> {
        rules::validate_renew(r, owner, expires_at, renew_at, self.now())?;
        self.timed_write(|| {
            let mut shard = self.write(shard_of(r));
            match rules::renew_decision(shard.get(r), owner, revision, expires_at, renew_at) {
                Ok(renewed) => self.put(&mut shard, renewed).map(Renew::Renewed),
                Err(lost) => {
                    self.metrics.conflict();
                    Ok(lost)
                }
            }
        })
    }

    async fn release_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
    ) -> OrbitResult<bool> {
        rules::validate_release(r, owner)?;
        self.timed_write(|| {
            let mut shard = self.write(shard_of(r));
            if !rules::owns(shard.get(r), owner, revision) {
                self.metrics.conflict();
                return Ok(false);
            }
            Ok(self.delete(&mut shard, r, LeaseEventKind::Released))
        })
    }

    async fn store_leases(&self, leases: &[AddressableLease]) -> OrbitResult<()> {
        rules::validate_batch(leases, self.now())?;
        self.timed_write(|| {
            let mut involved: Vec<usize> = leases.iter().map(|l| shard_of(&l.reference)).collect();
            involved.sort_unstable();
            involved.dedup();
            // Ascending order: the lock order every multi-shard operation follows.
            let mut guards: Vec<(usize, RwLockWriteGuard<'_, Shard>)> =
                involved.iter().map(|&i| (i, self.write(i))).collect();
            let shard_pos = |r: &AddressableReference| {
                let i = shard_of(r);
                guards.binary_search_by_key(&i, |(j, _)| *j).unwrap_or(0)
            };
            let positions: Vec<usize> = leases.iter().map(|l| shard_pos(&l.reference)).collect();
            let new = leases
                .iter()
                .zip(&positions)
                .filter(|&(l, &p)| guards[p].1.get(&l.reference).is_none())
                .count() as u64;
            // All-or-nothing: capacity is reserved for the whole batch before any write.
            self.reserve(new)?;
            for (lease, &p) in leases.iter().zip(&positions) {
                let mut lease = lease.clone();
                lease.revision = self.record(LeaseEventKind::Put, || lease.clone());
                guards[p].1.upsert(lease);
            }
            MetricsRecorder::add(&self.metrics.writes, leases.len() as u64);
            Ok(())
        })
    }

    async fn current_revision(&self) -> OrbitResult<u64> {
        self.check_open()?;
        Ok(self.last_revision.load(Ordering::SeqCst))
    }

    async fn snapshot_leases(&self) -> OrbitResult<LeaseSnapshot> {
        self.timed_read(|| {
            // Every shard read-locked (ascending, as writers lock): a writer that took a
            // revision holds its shard until its write is in, so the counter read now is the
            // revision of exactly what the shards hold.
            let guards: Vec<_> = (0..SHARDS).map(|i| self.read(i)).collect();
            let revision = self.last_revision.load(Ordering::SeqCst);
            let mut leases = Vec::new();
            for shard in &guards {
                shard.collect_all(&mut leases);
            }
            drop(guards);
            leases.sort_by(|a, b| a.reference.cmp(&b.reference));
            Ok(LeaseSnapshot { revision, leases })
        })
    }

    async fn backup(&self, dest: &Path) -> OrbitResult<BackupSummary> {
        // The consistent view is a copy: the leases are in memory already, and the file is
        // written after every shard lock is let go, so writers wait only for the copy.
        backup::write_snapshot("memory", self.snapshot_leases().await?, dest).await
    }

    async fn restore_leases(&self, leases: &[AddressableLease], revision: u64) -> OrbitResult<()> {
        rules::validate_restore(leases, revision)?;
        self.timed_write(|| {
            // Every shard write-locked (ascending): no writer takes a revision meanwhile.
            let mut guards: Vec<_> = (0..SHARDS).map(|i| self.write(i)).collect();
            let new = leases
                .iter()
                .filter(|l| guards[shard_of(&l.reference)].get(&l.reference).is_none())
                .count() as u64;
            self.reserve(new)?;
            if let Err(current) = self.feed.jump(&self.last_revision, revision) {
                self.release_slots(new);
                return rules::restore_allowed(current, revision);
            }
            for lease in leases {
                guards[shard_of(&lease.reference)].upsert(lease.clone());
            }
            MetricsRecorder::add(&self.metrics.writes, leases.len() as u64);
            Ok(())
        })
    }

    async fn replicate(&self, events: &[LeaseEvent]) -> OrbitResult<()> {
        rules::validate_replicate(events)?;
        let Some(first) = events.first() else {
            return self.check_open();
        };
        self.timed_write(|| {
            // Every shard write-locked (ascending): no writer takes a revision meanwhile.
            let mut guards: Vec<_> = (0..SHARDS).map(|i| self.write(i)).collect();
            rules::replicate_allowed(self.last_revision.load(Ordering::SeqCst), first.revision)?;
            // Judged whole before anything changes: every removal finds its lease.
            let mut held: HashMap<&AddressableReference, bool> = HashMap::new();
            let (mut added, mut removed) = (0u64, 0u64);
            for event in events {
                let r = event.reference();
                let present = match held.get(r) {
                    Some(&present) => present,
                    None => guards[shard_of(r)].get(r).is_some(),
                };
                match (event.is_removal(), present) {
                    (true, false) => {
                        return Err(rules::replicated_removal_missing(r, event.revision));
                    }
                    (true, true) => removed += 1,
                    (false, false) => added += 1,
                    (false, true) => {}
                }
                held.insert(r, !event.is_removal());
            }
            // Net growth: a batch that adds and removes never needs more room than it ends with.
            let grows = added.saturating_sub(removed);
            self.reserve(grows)?;
            for event in events {
                let shard = &mut guards[shard_of(event.reference())];
                match event.is_removal() {
                    true => shard.remove(event.reference()),
                    false => shard.upsert(event.lease.clone()),
                };
                // Consecutive from the counter's next: the ring hands out exactly these.
                self.record(event.kind, || event.lease.clone());
            }
            self.release_slots(removed.saturating_sub(added));
            MetricsRecorder::add(&self.metrics.writes, events.len() as u64);
            Ok(())
        })
    }

    async fn watch(&self, from_revision: u64) -> OrbitResult<LeaseWatch> {
        self.check_open()?;
        if !self.feed.is_on() {
            return Err(OrbitError::Config(
                "memory.watch_history = 0 keeps no change history; the change feed is off".into(),
            ));
        }
        Ok(LeaseWatch::new(HistoryFeed::new(
            Arc::clone(&self.feed),
            self.feed.signal(),
            from_revision,
        )))
    }
}
