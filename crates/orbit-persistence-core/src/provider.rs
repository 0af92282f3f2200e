//! The provider traits (docs/contract.md) and the outcomes of the conditional operations.

use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backup::BackupSummary;
use crate::error::OrbitResult;
use crate::feed::{LeaseEvent, LeaseSnapshot, LeaseWatch};
use crate::metrics::{PersistenceMetrics, ProviderHealth};
use crate::recovery::RecoveryReport;
use crate::types::{AddressableLease, AddressableReference, NodeId, Timestamp};

/// Result of [`AddressableDirectoryProvider::acquire_lease`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acquire {
    /// The caller now holds the lease; it carries the revision the store assigned.
    Acquired(AddressableLease),
    /// Someone holds an unexpired lease; here it is.
    Held(AddressableLease),
}

/// Result of [`AddressableDirectoryProvider::renew_lease`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Renew {
    /// Renewed; the lease carries its new revision.
    Renewed(AddressableLease),
    /// The caller no longer owns the lease (another owner or revision, or no lease at all):
    /// here is what is stored now.
    Lost(Option<AddressableLease>),
}

/// Lifecycle, health and metrics common to every provider.
#[async_trait]
pub trait PersistenceProvider: Send + Sync {
    /// Prepares the provider for use; idempotent. Opening already recovered the data.
    async fn initialize(&self) -> OrbitResult<()>;
    /// Flushes, syncs and releases the data directory; later calls answer `Closed`.
    async fn shutdown(&self) -> OrbitResult<()>;
    /// Whether the provider can serve reads and writes.
    async fn health_check(&self) -> ProviderHealth;
    /// Counters, latencies and sizes.
    async fn metrics(&self) -> PersistenceMetrics;
    /// What opening the store did to recover it (cut a torn log tail, replayed the WAL, skipped
    /// a damaged meta page...): empty after a clean shutdown, and for stores that keep nothing
    /// on disk of their own. See [`crate::recovery`].
    async fn recovery_report(&self) -> RecoveryReport {
        RecoveryReport::default()
    }
}

/// The lease directory: who hosts which addressable, until when.
#[async_trait]
pub trait AddressableDirectoryProvider: PersistenceProvider {
    /// Upserts a lease (moving it between nodes if `node_id` changed); assigns a new revision.
    async fn store_lease(&self, lease: &AddressableLease) -> OrbitResult<()>;
    /// The stored lease, even if expired and not yet cleaned up.
    async fn get_lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>>;
    /// Removes a lease; `true` if there was one.
    async fn remove_lease(&self, r: &AddressableReference) -> OrbitResult<bool>;
    /// Every stored lease of `node` (expired ones included), through the node index.
    async fn list_node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>>;
    /// Removes every lease expired by the provider's clock; returns how many.
    async fn cleanup_expired_leases(&self) -> OrbitResult<u64>;
    /// Registers the lease if none is stored or the stored one is expired, atomically.
    async fn acquire_lease(&self, lease: &AddressableLease) -> OrbitResult<Acquire>;
    /// Extends the lease if `owner` and `revision` still match the stored lease.
    async fn renew_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
        expires_at: Timestamp,
        renew_at: Timestamp,
    ) -> OrbitResult<Renew>;
    /// Removes the lease if `owner` and `revision` still match; `true` if it did.
    async fn release_lease(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
    ) -> OrbitResult<bool>;
    /// Upserts all leases as one atomic batch: all or none are visible, before and after a
    /// crash.
    async fn store_leases(&self, leases: &[AddressableLease]) -> OrbitResult<()>;
    /// Removes every lease of `node` (a node that died), expired or not, through the node
    /// index; returns how many. Works in bounded atomic batches, each removal with its own
    /// revision (etcd: each batch one revision), so a crash between batches leaves each batch
    /// whole and the rest still listed; calling it again finishes the job. A node without
    /// leases returns 0 without writing. Leases written to the node while it runs may stay.
    async fn remove_node_leases(&self, node: &NodeId) -> OrbitResult<u64>;
    /// The revision of the store's last write (0 for a new, empty store): where a watch that
    /// wants only what comes next starts.
    async fn current_revision(&self) -> OrbitResult<u64>;
    /// Every lease, read from one consistent state, and that state's revision: what a cache
    /// loads before it [`watch`](Self::watch)es from that revision.
    async fn snapshot_leases(&self) -> OrbitResult<LeaseSnapshot>;
    /// The change feed: every change after `from_revision`, in revision order, without gaps
    /// or duplicates (see [`crate::feed`]). A revision not written yet is waited for. One older
    /// than the history the store keeps ends the watch with `Compacted`; the store's shutdown
    /// with `Closed`. A slow watcher never slows the writers.
    async fn watch(&self, from_revision: u64) -> OrbitResult<LeaseWatch>;
    /// Writes a backup of every lease to the new file `dest`, online: from one consistent
    /// snapshot at the store's revision R, while writes go on (see [`crate::backup`] for the
    /// format). The file appears whole and durable, or not at all. `InvalidInput` if `dest`
    /// exists.
    async fn backup(&self, dest: &Path) -> OrbitResult<BackupSummary>;
    /// Stores `leases` exactly as given, revisions included, with no change event, and raises
    /// the revision counter to `revision`, atomically: how a backup is restored
    /// ([`crate::restore::restore_into`]). Not for applications: it bypasses acquire's rules.
    /// `InvalidInput` (nothing written) if the store's revision is already above `revision`
    /// (so a fencing token is never handed out twice), a lease's revision is not in
    /// `1..=revision`, or a reference repeats. Watches from before `revision` answer
    /// `Compacted` afterwards: the backup holds no history.
    async fn restore_leases(&self, leases: &[AddressableLease], revision: u64) -> OrbitResult<()>;
    /// Applies `events`, another store's change feed in order, verbatim and atomically: each
    /// put with its revision, each removal with its revision and cause, each a change event of
    /// this store too. How a live migration catches a copy up with its source after
    /// [`restore_leases`](Self::restore_leases) loaded the source's snapshot. Not for
    /// applications: it bypasses acquire's rules. `InvalidInput` (nothing written) unless the
    /// revisions are consecutive and the first is the store's next revision, a put's lease
    /// carries its event's revision, and every removal finds its lease. etcd assigns
    /// revisions itself: `Config` there.
    async fn replicate(&self, events: &[LeaseEvent]) -> OrbitResult<()>;
}
