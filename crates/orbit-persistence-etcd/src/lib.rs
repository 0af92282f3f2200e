//! # orbit-persistence-etcd
//!
//! The lease directory on an etcd cluster, for when one machine's disk is not enough: many
//! nodes share one directory, and it survives the loss of a member.
//!
//! - **Keys.** Leases, the node index and the expiry index live as keys under the configured
//!   prefix (layout at the top of the `keys` module); stores with different prefixes share a
//!   cluster.
//! - **One transaction per change.** A lease change writes its three keys (and deletes the
//!   index entries it replaces) in one etcd transaction, so the indexes never disagree with the
//!   leases.
//! - **Revisions are etcd's.** A lease's revision is the mod revision of its key, the
//!   cluster-wide revision of the transaction that wrote it: strictly increasing, never reused,
//!   and a fencing token across processes and machines.
//! - **Conditional operations compare in etcd.** acquire, renew and release read the lease,
//!   decide with [`orbit_persistence_core::rules`] (the same rules as every backend), and
//!   commit only if the lease's key still has the revision they read (`create_revision == 0`
//!   for an absent lease). A lost compare means someone else wrote in between: they read again
//!   and decide again. So two providers in two processes racing for a reference get exactly one
//!   winner, and a stale owner's renew loses.
//! - **Batches.** `store_leases` commits 25 leases per transaction (etcd's default limit is 128
//!   operations per transaction, and a lease change takes up to five); a larger batch is applied
//!   as several transactions, each atomic. `cleanup_expired_leases` removes `cleanup_batch`
//!   leases per transaction, each guarded by its lease's revision, so a lease renewed meanwhile
//!   is never removed. It reads the expired entries in one pass of windows sized to hold about
//!   a page, so its cost grows linearly with their number (see `scan_window`).
//! - **Errors and time.** Every call is bounded by `request_timeout_ms`; a failure is
//!   `Unavailable` naming the endpoints and the cause, never a hang. Idempotent reads (get,
//!   list, count) are retried `read_attempts` times with backoff, within that same timeout;
//!   writes are not (an answer lost
//!   in transit may hide a commit, and the conditional operations recover from that by reading).
//! - **Expiry** is decided by the injected clock against the stored `expires_at`, like every
//!   backend; etcd's own leases (TTL keys) are not used, so no key vanishes behind a caller's
//!   back.
//!
//! Durability is etcd's: an acknowledged transaction is committed by a majority of members
//! (each fsyncs its raft log). `SyncMode` does not apply.
#![warn(missing_docs)]

mod feed;
mod keys;
#[cfg(feature = "local-cluster")]
pub mod local_cluster;
mod remote;
mod scan_window;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, GetOptions, GetResponse, Txn, TxnOp, TxnOpResponse};
use orbit_persistence_core::backup::{self, BackupHeader, BackupSummary};
use orbit_persistence_core::feed::FeedSignal;
use orbit_persistence_core::fs::StdFileSystem;
use orbit_persistence_core::index::{IndexEntries, index_delta};
use orbit_persistence_core::metrics::MetricsRecorder;
use orbit_persistence_core::{
    Acquire, AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock,
    EtcdConfig, LeaseEvent, LeaseEventKind, LeaseSnapshot, LeaseWatch, NodeId, OrbitError,
    OrbitResult, PersistenceMetrics, PersistenceProvider, ProviderHealth, Renew, Timestamp, rules,
};

use crate::feed::EtcdFeed;
use crate::keys::Keys;
use crate::remote::Remote;
use crate::scan_window::ScanWindows;

/// Leases per `store_leases` transaction: up to five operations each, under etcd's default
/// limit of 128 operations per transaction.
const LEASES_PER_TXN: usize = 25;
/// Keys per page of a range read (list, cleanup scan).
const PAGE: i64 = 1_000;

/// The lease directory on etcd.
pub struct EtcdDirectory {
    remote: Remote,
    keys: Keys,
    clock: Arc<dyn Clock>,
    cleanup_batch: usize,
    closed: AtomicBool,
    metrics: MetricsRecorder,
    /// Closed at shutdown: ends every watch.
    watches: FeedSignal,
}

impl std::fmt::Debug for EtcdDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDirectory")
            .field("endpoints", &self.remote.endpoints())
            .finish_non_exhaustive()
    }
}

/// A lease as read, with the compare that proves it is still the current one at commit.
fn unchanged(key: &[u8], current: Option<&AddressableLease>) -> Compare {
    match current {
        Some(l) => Compare::mod_revision(key.to_vec(), CompareOp::Equal, l.revision as i64),
        None => Compare::create_revision(key.to_vec(), CompareOp::Equal, 0),
    }
}

impl EtcdDirectory {
    /// Connects to the cluster in `config`. Validates the config first (a bad one is `Config`
    /// before any network I/O); an unreachable cluster is `Unavailable` within the timeouts.
    pub async fn connect(config: &EtcdConfig, clock: Arc<dyn Clock>) -> OrbitResult<Self> {
        config.validate()?;
        let remote = Remote::connect(config).await?;
        Ok(EtcdDirectory {
            remote,
            keys: Keys::new(&config.key_prefix),
            clock,
            cleanup_batch: config.cleanup_batch as usize,
            closed: AtomicBool::new(false),
            metrics: MetricsRecorder::default(),
            watches: FeedSignal::new(0),
        })
    }

    fn check_open(&self) -> OrbitResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(OrbitError::Closed);
        }
        Ok(())
    }

    /// The current leases of `refs`, read at one revision (a transaction of reads).
    async fn current(
        &self,
        refs: &[&AddressableReference],
    ) -> OrbitResult<Vec<Option<AddressableLease>>> {
        let ops: Vec<TxnOp> = refs
            .iter()
            .map(|r| TxnOp::get(self.keys.lease(r), None))
            .collect();
        let response = self.remote.read_txn(Txn::new().and_then(ops)).await?;
        response
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => self.lease_in(&get),
                _ => Err(OrbitError::Unavailable(
                    "etcd answered a read transaction with a write response".into(),
                )),
            })
            .collect()
    }

    /// The current lease of `r`.
    async fn current_one(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        self.lease_in(&self.remote.get(self.keys.lease(r), None).await?)
    }

    /// The lease a point read of a lease key found, if any.
    fn lease_in(&self, get: &GetResponse) -> OrbitResult<Option<AddressableLease>> {
        get.kvs()
            .first()
            .map(|kv| {
                self.keys
                    .decode_lease(kv.key(), kv.value(), kv.mod_revision())
            })
            .transpose()
    }

    /// The operations that replace `previous` (if any) by `lease`: its three keys, and the
    /// old index entries it moves away from.
    fn put_ops(&self, previous: Option<&AddressableLease>, lease: &AddressableLease) -> Vec<TxnOp> {
        let r = &lease.reference;
        let value = Keys::lease_value(lease);
        let mut ops = vec![
            TxnOp::put(self.keys.lease(r), value.clone(), None),
            TxnOp::put(self.keys.node(&lease.node_id, r), value, None),
            TxnOp::put(
                self.keys.expiry(lease.expires_at, r),
                Keys::expiry_value(&lease.node_id),
                None,
            ),
        ];
        // Every entry is put (an index value carries the lease); the old ones that moved go.
        let delta = index_delta(
            previous.map(IndexEntries::of),
            Some(IndexEntries::of(lease)),
        );
        if let Some(node) = delta.remove_node {
            ops.push(TxnOp::delete(self.keys.node(node, r), None));
        }
        if let Some(expires_at) = delta.remove_expiry {
            ops.push(TxnOp::delete(self.keys.expiry(expires_at, r), None));
        }
        ops
    }

    /// The operations that remove `lease` and its index entries.
    fn delete_ops(
        &self,
        r: &AddressableReference,
        node: &NodeId,
        expires_at: Timestamp,
    ) -> Vec<TxnOp> {
        vec![
            TxnOp::delete(self.keys.lease(r), None),
            TxnOp::delete(self.keys.node(node, r), None),
            TxnOp::delete(self.keys.expiry(expires_at, r), None),
        ]
    }

    /// The operation that records why a transaction removes leases, first in it: the change
    /// feed reads it back (see `feed`).
    fn cause_op(&self, kind: LeaseEventKind) -> TxnOp {
        TxnOp::put(self.keys.cause(), vec![kind.byte()], None)
    }

    /// Commits `ops` if every compare holds; `Some(revision)` of the commit, `None` if a
    /// compare failed (someone wrote in between).
    async fn commit(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> OrbitResult<Option<u64>> {
        let response = self
            .remote
            .write_txn(Txn::new().when(compares).and_then(ops))
            .await?;
        if !response.succeeded() {
            return Ok(None);
        }
        let revision = response.header().map(|h| h.revision()).ok_or_else(|| {
            OrbitError::Unavailable("etcd answered a transaction without a header".into())
        })?;
        Ok(Some(revision as u64))
    }

    /// Stores up to [`LEASES_PER_TXN`] leases in one transaction, re-reading on a lost compare.
    async fn store_chunk(&self, leases: &[AddressableLease]) -> OrbitResult<()> {
        let refs: Vec<&AddressableReference> = leases.iter().map(|l| &l.reference).collect();
        loop {
            let current = self.current(&refs).await?;
            let mut compares = Vec::with_capacity(leases.len());
            let mut ops = Vec::with_capacity(leases.len() * 5);
            for (lease, previous) in leases.iter().zip(&current) {
                compares.push(unchanged(
                    &self.keys.lease(&lease.reference),
                    previous.as_ref(),
                ));
                ops.extend(self.put_ops(previous.as_ref(), lease));
            }
            if self.commit(compares, ops).await?.is_some() {
                return Ok(());
            }
        }
    }

    /// Deletes `r`'s lease (its three keys) if `wanted` accepts the current one, reading and
    /// deciding again after a lost compare. False when there is none or `wanted` refuses it.
    async fn delete_lease_if(
        &self,
        r: &AddressableReference,
        kind: LeaseEventKind,
        wanted: impl Fn(&AddressableLease) -> bool,
    ) -> OrbitResult<bool> {
        loop {
            let Some(current) = self.current_one(r).await?.filter(|c| wanted(c)) else {
                return Ok(false);
            };
            let compare = unchanged(&self.keys.lease(r), Some(&current));
            let mut ops = vec![self.cause_op(kind)];
            ops.extend(self.delete_ops(r, &current.node_id, current.expires_at));
            if self.commit(vec![compare], ops).await?.is_some() {
                return Ok(true);
            }
        }
    }

    /// Removes the leases of `expired` entries in one transaction, each only if its key still
    /// has the revision its expiry entry was written with (a lease renewed meanwhile stays).
    /// Returns how many were removed.
    async fn remove_expired(&self, expired: &[etcd_client::KeyValue]) -> OrbitResult<u64> {
        let mut entries = Vec::with_capacity(expired.len());
        for kv in expired {
            let (r, expires_at, node) = self.keys.decode_expiry_entry(kv.key(), kv.value())?;
            entries.push((r, node, expires_at, kv.mod_revision()));
        }
        if self
            .remove_unchanged(&entries, LeaseEventKind::Expired)
            .await?
        {
            return Ok(expired.len() as u64);
        }
        // A lost compare: some lease of the batch changed meanwhile. One by one, so that every
        // entry is either removed or found stale.
        let mut removed = 0;
        for kv in expired {
            removed += u64::from(self.remove_expired_one(kv).await?);
        }
        Ok(removed)
    }

    /// Removes the leases named by index `entries` (reference, node, expiry, and the revision
    /// the entry was written with, which is its lease's) in one transaction, each only if its
    /// lease key still has that revision. `false` if a compare was lost (a lease changed
    /// meanwhile) and nothing was removed.
    async fn remove_unchanged(
        &self,
        entries: &[(AddressableReference, NodeId, Timestamp, i64)],
        kind: LeaseEventKind,
    ) -> OrbitResult<bool> {
        let mut compares = Vec::with_capacity(entries.len());
        let mut ops = Vec::with_capacity(entries.len() * 3 + 1);
        ops.push(self.cause_op(kind));
        for (r, node, expires_at, mod_revision) in entries {
            compares.push(Compare::mod_revision(
                self.keys.lease(r),
                CompareOp::Equal,
                *mod_revision,
            ));
            ops.extend(self.delete_ops(r, node, *expires_at));
        }
        let start = Instant::now();
        let committed = self.commit(compares, ops).await;
        self.metrics.write_done(start, &committed, |c| {
            if c.is_some() { entries.len() as u64 } else { 0 }
        });
        Ok(committed?.is_some())
    }

    /// Removes the leases of `node` among node-index `listed` in one transaction; on a lost
    /// compare, one by one, each only while it is still on `node`. Returns how many went.
    async fn remove_node_entries(
        &self,
        node: &NodeId,
        listed: &[etcd_client::KeyValue],
    ) -> OrbitResult<u64> {
        let mut entries = Vec::with_capacity(listed.len());
        for kv in listed {
            let lease = self
                .keys
                .decode_node_entry(kv.key(), kv.value(), kv.mod_revision())?;
            entries.push((
                lease.reference,
                node.clone(),
                lease.expires_at,
                kv.mod_revision(),
            ));
        }
        if self
            .remove_unchanged(&entries, LeaseEventKind::Evicted)
            .await?
        {
            return Ok(entries.len() as u64);
        }
        let mut removed = 0;
        for (r, ..) in &entries {
            let on_node = |c: &AddressableLease| c.node_id == *node;
            removed += u64::from(
                self.delete_lease_if(r, LeaseEventKind::Evicted, on_node)
                    .await?,
            );
        }
        Ok(removed)
    }

    /// The next window of `windows` (see `scan_window`) read at the latest revision, so what
    /// the caller removed from the last one is gone from this read; `None` after the last.
    async fn next_window(
        &self,
        windows: &mut Option<ScanWindows>,
    ) -> OrbitResult<Option<Vec<etcd_client::KeyValue>>> {
        let Some(current) = windows.as_mut() else {
            return Ok(None);
        };
        let (kvs, count, _) = self.read_window(current, 0).await?;
        let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key()).collect();
        if !current.advance(&keys, count) {
            *windows = None;
        }
        Ok(Some(kvs))
    }

    /// Removes the lease of one expired entry if the lease is still the one the entry was
    /// written with; an entry whose lease moved on (renewed, replaced, removed) by a write that
    /// somehow left it behind is deleted on its own. Whether a lease was removed.
    async fn remove_expired_one(&self, entry: &etcd_client::KeyValue) -> OrbitResult<bool> {
        let (r, expires_at, node) = self.keys.decode_expiry_entry(entry.key(), entry.value())?;
        let lease_key = self.keys.lease(&r);
        let compare = Compare::mod_revision(lease_key, CompareOp::Equal, entry.mod_revision());
        if self
            .commit(
                vec![compare],
                [
                    vec![self.cause_op(LeaseEventKind::Expired)],
                    self.delete_ops(&r, &node, expires_at),
                ]
                .concat(),
            )
            .await?
            .is_some()
        {
            return Ok(true);
        }
        let current = self.current_one(&r).await?;
        if current.is_some_and(|c| c.expires_at == expires_at && c.node_id == node) {
            return Ok(false); // rewritten with the same expiry: a fresh entry; the next scan decides
        }
        tracing::warn!(key = %String::from_utf8_lossy(entry.key()), "deleting a stale expiry entry");
        let stale =
            Compare::mod_revision(entry.key().to_vec(), CompareOp::Equal, entry.mod_revision());
        self.commit(vec![stale], vec![TxnOp::delete(entry.key().to_vec(), None)])
            .await?;
        Ok(false)
    }

    /// All leases listed under `[start, end)`, window by window (see `scan_window`) at the
    /// first read's revision, so the list is one consistent snapshot.
    async fn range(&self, range: (Vec<u8>, Vec<u8>)) -> OrbitResult<Vec<etcd_client::KeyValue>> {
        Ok(self.range_at(range).await?.0)
    }

    /// As [`EtcdDirectory::range`], with the revision the snapshot is of.
    async fn range_at(
        &self,
        range: (Vec<u8>, Vec<u8>),
    ) -> OrbitResult<(Vec<etcd_client::KeyValue>, u64)> {
        let mut windows = ScanWindows::new(range, PAGE as usize);
        let (mut out, mut revision) = (Vec::new(), 0);
        loop {
            let (kvs, count, read_at) = self.read_window(&windows, revision).await?;
            if revision == 0 {
                revision = read_at;
            }
            let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key()).collect();
            let more = windows.advance(&keys, count);
            out.extend(kvs);
            if !more {
                return Ok((out, u64::try_from(revision).unwrap_or(0)));
            }
        }
    }

    /// One read of the current window of `windows`, at `revision` (0: the latest): its first
    /// [`PAGE`] keys, how many keys the window holds (more than returned exactly when etcd says
    /// there are more), and the revision of the store it read.
    async fn read_window(
        &self,
        windows: &ScanWindows,
        revision: i64,
    ) -> OrbitResult<(Vec<etcd_client::KeyValue>, usize, i64)> {
        let (from, to) = windows.window();
        let mut options = GetOptions::new().with_range(to).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut response = self.remote.get(from.to_vec(), Some(options)).await?;
        let read_at = response.header().map_or(0, |h| h.revision());
        let (more, count) = (response.more(), response.count());
        let kvs = response.take_kvs();
        // `more` decides whether the window was read whole; the count only sizes the next
        // window, so a proxy that leaves it out slows a scan down but never makes it skip keys.
        let count = match more {
            true => usize::try_from(count).unwrap_or(0).max(kvs.len() + 1),
            false => kvs.len(),
        };
        Ok((kvs, count, read_at))
    }
}

#[async_trait]
impl PersistenceProvider for EtcdDirectory {
    async fn initialize(&self) -> OrbitResult<()> {
        self.check_open()
    }

    async fn shutdown(&self) -> OrbitResult<()> {
        // Every acknowledged write is already committed by the cluster; nothing to flush.
        self.closed.store(true, Ordering::Release);
        self.watches.close();
        Ok(())
    }

    async fn health_check(&self) -> ProviderHealth {
        if self.closed.load(Ordering::Acquire) {
            return ProviderHealth::Unhealthy {
                reason: "closed".into(),
            };
        }
        match self.remote.status().await {
            Ok(status) if status.leader() == 0 => ProviderHealth::Unhealthy {
                reason: format!(
                    "etcd at {}: the cluster has no leader",
                    self.remote.endpoints()
                ),
            },
            Ok(status) if !status.errors().is_empty() => ProviderHealth::Degraded {
                reason: format!(
                    "etcd at {}: member reports {}",
                    self.remote.endpoints(),
                    status.errors().join("; ")
                ),
            },
            Ok(_) => ProviderHealth::Healthy,
            Err(e) => ProviderHealth::Unhealthy {
                reason: e.to_string(),
            },
        }
    }

    async fn metrics(&self) -> PersistenceMetrics {
        let mut metrics = self.metrics.snapshot();
        let (start, end) = self.keys.leases_range();
        let options = GetOptions::new().with_range(end).with_count_only();
        if let Ok(response) = self.remote.get(start, Some(options)).await {
            metrics.lease_count = response.count() as u64;
            metrics.last_revision = response.header().map_or(0, |h| h.revision() as u64);
        }
        if let Ok(status) = self.remote.status().await {
            metrics.disk_bytes = status.db_size() as u64;
            metrics
                .engine
                .insert("raft-term".into(), status.raft_term());
            metrics
                .engine
                .insert("db-size-in-use".into(), status.raft_used_db_size() as u64);
        }
        metrics
    }
}

#[async_trait]
impl AddressableDirectoryProvider for EtcdDirectory {
    async fn store_lease(&self, lease: &AddressableLease) -> OrbitResult<()> {
        self.store_leases(std::slice::from_ref(lease)).await
    }

    async fn get_lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        rules::validate_reference(r)?;
        self.check_open()?;
        let start = Instant::now();
        let out = self.current_one(r).await;
        self.metrics.read_done(start);
        out
    }

    async fn remove_lease(&self, r: &AddressableReference) -> OrbitResult<bool> {
        rules::validate_reference(r)?;
        self.check_open()?;
        let start = Instant::now();
        let out = self
            .delete_lease_if(r, LeaseEventKind::Removed, |_| true)
            .await;
        self.metrics
            .write_done(start, &out, |removed| u64::from(*removed));
        out
    }

    async fn list_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        rules::validate_node(node)?;
        self.check_open()?;
        let start = Instant::now();
        let out = async {
            self.range(self.keys.node_range(node))
                .await?
                .iter()
                .map(|kv| {
                    self.keys
                        .decode_node_entry(kv.key(), kv.value(), kv.mod_revision())
                })
                .collect()
        }
        .await;
        self.metrics.read_done(start);
        out
    }

    async fn cleanup_expired_leases(&self) -> OrbitResult<u64> {
        self.check_open()?;
        let now = self.clock.now();
        let mut total = 0;
        // One pass over the expired entries, in windows of about a page (see `scan_window`
        // for why not page after page from the start).
        let mut windows = Some(ScanWindows::new(
            self.keys.expired_range(now),
            PAGE as usize,
        ));
        while let Some(expired) = self.next_window(&mut windows).await? {
            for batch in expired.chunks(self.cleanup_batch) {
                total += self.remove_expired(batch).await?;
            }
        }
        MetricsRecorder::add(&self.metrics.expired_removed, total);
        Ok(total)
    }

    async fn remove_node_leases(&self, node: &NodeId) -> OrbitResult<u64> {
        rules::validate_node(node)?;
        self.check_open()?;
        let mut total = 0;
        // The node index, window by window; a batch of `cleanup_batch` leases per transaction.
        let mut windows = Some(ScanWindows::new(self.keys.node_range(node), PAGE as usize));
        while let Some(listed) = self.next_window(&mut windows).await? {
            for batch in listed.chunks(self.cleanup_batch) {
                total += self.remove_node_entries(node, batch).await?;
            }
        }
        Ok(total)
    }

    async fn current_revision(&self) -> OrbitResult<u64> {
        self.check_open()?;
        let (start, end) = self.keys.leases_range();
        let options = GetOptions::new().with_range(end).with_count_only();
        let response = self.remote.get(start, Some(options)).await?;
        Ok(response
            .header()
            .map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0)))
    }

    async fn snapshot_leases(&self) -> OrbitResult<LeaseSnapshot> {
        self.check_open()?;
        let (kvs, revision) = self.range_at(self.keys.leases_range()).await?;
        let leases = kvs
            .iter()
            .map(|kv| {
                self.keys
                    .decode_lease(kv.key(), kv.value(), kv.mod_revision())
            })
            .collect::<OrbitResult<_>>()?;
        Ok(LeaseSnapshot { revision, leases })
    }

    async fn backup(&self, dest: &Path) -> OrbitResult<BackupSummary> {
        self.check_open()?;
        // The count and its revision R in one read, then every page read at R: one
        // consistent state, while writers go on.
        let range = self.keys.leases_range();
        let counted = self
            .remote
            .get(
                range.0.clone(),
                Some(
                    GetOptions::new()
                        .with_range(range.1.clone())
                        .with_count_only(),
                ),
            )
            .await?;
        let revision = counted.header().map_or(0, |h| h.revision());
        let header = BackupHeader::now(
            "etcd",
            u64::try_from(revision).unwrap_or(0),
            u64::try_from(counted.count()).unwrap_or(0),
        );
        // The file is written on a blocking thread, fed page by page.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<OrbitResult<Vec<AddressableLease>>>(2);
        let dest = dest.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || {
            let pages = std::iter::from_fn(move || rx.blocking_recv());
            let leases = pages.flat_map(|page| match page {
                Ok(leases) => leases.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            });
            backup::write_backup(Arc::new(StdFileSystem::new()), &dest, header, leases)
        });
        let mut windows = ScanWindows::new(range, PAGE as usize);
        loop {
            let read = self.read_window(&windows, revision).await;
            let (page, more) = match read {
                Ok((kvs, count, _)) => {
                    let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key()).collect();
                    let more = windows.advance(&keys, count);
                    let page = kvs
                        .iter()
                        .map(|kv| {
                            self.keys
                                .decode_lease(kv.key(), kv.value(), kv.mod_revision())
                        })
                        .collect::<OrbitResult<Vec<_>>>();
                    (page, more)
                }
                Err(e) => (Err(e), false),
            };
            let failed = page.is_err();
            // A closed channel: the writer stopped early, and says why below.
            if tx.send(page).await.is_err() || failed || !more {
                break;
            }
        }
        drop(tx);
        writer
            .await
            .map_err(|e| OrbitError::internal("etcd", format!("the backup task failed: {e}")))?
    }

    async fn restore_leases(&self, leases: &[AddressableLease], revision: u64) -> OrbitResult<()> {
        rules::validate_restore(leases, revision)?;
        self.check_open()?;
        // etcd assigns every revision itself (a lease's revision is its key's mod revision),
        // so a lease cannot be stored with the revision it had; see docs/operating.md#backup-and-restore.
        Err(OrbitError::Config(
            "etcd: a backup cannot be restored into etcd yet: etcd assigns every revision \
             itself, so restored leases would lose their fencing tokens"
                .into(),
        ))
    }

    async fn replicate(&self, events: &[LeaseEvent]) -> OrbitResult<()> {
        rules::validate_replicate(events)?;
        self.check_open()?;
        // As restore_leases: etcd hands out every revision itself.
        Err(OrbitError::Config(
            "etcd: another store's events cannot be replicated into etcd yet: etcd assigns \
             every revision itself, so copied leases would lose their fencing tokens"
                .into(),
        ))
    }

    async fn watch(&self, from_revision: u64) -> OrbitResult<LeaseWatch> {
        self.check_open()?;
        let feed = EtcdFeed::start(
            self.remote.client(),
            self.keys.clone(),
            from_revision,
            &self.watches,
            self.remote.endpoints(),
        )
        .await?;
        Ok(LeaseWatch::new(feed))
    }

    async fn acquire_lease(&self, lease: &AddressableLease) -> OrbitResult<Acquire> {
        let now = self.clock.now();
        rules::validate_lease(lease, now)?;
        self.check_open()?;
        let start = Instant::now();
        let out = async {
            loop {
                let current = self.current_one(&lease.reference).await?;
                if let Err(held) = rules::acquire_allowed(current.as_ref(), now) {
                    self.metrics.conflict();
                    return Ok(Acquire::Held(held));
                }
                let compare = unchanged(&self.keys.lease(&lease.reference), current.as_ref());
                let ops = self.put_ops(current.as_ref(), lease);
                if let Some(revision) = self.commit(vec![compare], ops).await? {
                    return Ok(Acquire::Acquired(AddressableLease {
                        revision,
                        ..lease.clone()
                    }));
                }
            }
        }
        .await;
        self.metrics.write_done(start, &out, |a| {
            u64::from(matches!(a, Acquire::Acquired(_)))
        });
        out
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
        self.check_open()?;
        let start = Instant::now();
        let out = async {
            loop {
                let current = self.current_one(r).await?;
                let renewed = match rules::renew_decision(
                    current.as_ref(),
                    owner,
                    revision,
                    expires_at,
                    renew_at,
                ) {
                    Ok(renewed) => renewed,
                    Err(lost) => {
                        self.metrics.conflict();
                        return Ok(lost);
                    }
                };
                let compare = unchanged(&self.keys.lease(r), current.as_ref());
                let ops = self.put_ops(current.as_ref(), &renewed);
                if let Some(revision) = self.commit(vec![compare], ops).await? {
                    return Ok(Renew::Renewed(AddressableLease {
                        revision,
                        ..renewed
                    }));
                }
            }
        }
        .await;
        self.metrics
            .write_done(start, &out, |r| u64::from(matches!(r, Renew::Renewed(_))));
        out
    }

    async fn release_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
    ) -> OrbitResult<bool> {
        rules::validate_release(r, owner)?;
        self.check_open()?;
        let start = Instant::now();
        let out = self
            .delete_lease_if(r, LeaseEventKind::Released, |held| {
                rules::owns(Some(held), owner, revision)
            })
            .await;
        if matches!(out, Ok(false)) {
            self.metrics.conflict();
        }
        self.metrics
            .write_done(start, &out, |released| u64::from(*released));
        out
    }

    async fn store_leases(&self, leases: &[AddressableLease]) -> OrbitResult<()> {
        rules::validate_batch(leases, self.clock.now())?;
        self.check_open()?;
        let start = Instant::now();
        let out = async {
            for chunk in leases.chunks(LEASES_PER_TXN) {
                self.store_chunk(chunk).await?;
            }
            Ok(())
        }
        .await;
        self.metrics
            .write_done(start, &out, |_| leases.len() as u64);
        out
    }
}
