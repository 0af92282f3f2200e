//! Shared fixtures of the cases: a store in a temporary directory with a manual clock, and
//! builders for references, nodes and leases.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, Key, ManualClock,
    NodeId, OrbitResult, Timestamp,
};
use tempfile::TempDir;

use crate::Backend;

/// The instant every case starts at: far from zero so "expired" arithmetic never saturates.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);
/// Lease time-to-live used by the cases.
pub const TTL_MS: u64 = 10_000;

/// The `i`-th reference: four actor types, string keys.
pub fn reference(i: u32) -> AddressableReference {
    AddressableReference::new(
        format!("ActorType{:02}", i % 4),
        Key::string(format!("actor-{i:012}")),
    )
}

/// The `i`-th node of namespace `orbit`.
pub fn node(i: u32) -> NodeId {
    NodeId::new(format!("node-{i}"), "orbit")
}

/// A lease of `r` on `n` that expires `ttl_ms` after `now` and should renew halfway.
pub fn lease_at(
    r: AddressableReference,
    n: NodeId,
    now: Timestamp,
    ttl_ms: u64,
) -> AddressableLease {
    AddressableLease::new(
        r,
        n,
        Timestamp(now.0 + ttl_ms),
        Timestamp(now.0 + ttl_ms / 2),
    )
}

/// A lease with its revision cleared, to compare content across stores.
pub fn without_revision(mut l: AddressableLease) -> AddressableLease {
    l.revision = 0;
    l
}

/// Opens `backend` in `dir` on a blocking thread, as [`crate::OpenFn`] requires.
pub async fn open_in(
    backend: Backend,
    clock: Arc<dyn Clock>,
    dir: &Path,
) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || (backend.open)(clock, &dir))
        .await
        .expect("the backend's open function panicked")
}

/// One case's world: a backend opened in its own temporary directory, with a manual clock.
pub struct Ctx {
    /// The backend under test.
    pub backend: Backend,
    /// The clock the store sees; cases advance it instead of sleeping.
    pub clock: Arc<ManualClock>,
    /// The open store.
    pub store: Arc<dyn AddressableDirectoryProvider>,
    dir: TempDir,
}

impl Ctx {
    /// Opens `backend` in a fresh directory at [`T0`].
    pub async fn new(backend: Backend) -> Ctx {
        let dir = tempfile::Builder::new()
            .prefix("orbit-conformance-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let clock = Arc::new(ManualClock::new(T0));
        let store = open_in(backend, clock.clone(), dir.path())
            .await
            .unwrap_or_else(|e| panic!("{}: open failed: {e}", backend.name));
        store.initialize().await.expect("initialize failed");
        Ctx {
            backend,
            clock,
            store,
            dir,
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The clock's current time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }

    /// A lease of reference `i` on node `n` with the default TTL from now.
    pub fn lease(&self, i: u32, n: u32) -> AddressableLease {
        lease_at(reference(i), node(n), self.now(), TTL_MS)
    }

    /// Opens the same directory again (the caller shut the store down first, or wants to see
    /// `Locked`).
    pub async fn open_again(&self) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
        open_in(self.backend, self.clock.clone(), self.dir.path()).await
    }

    /// Shuts the store down and opens it again in the same directory.
    pub async fn reopen(&mut self) {
        self.store.shutdown().await.expect("shutdown failed");
        self.store = self
            .open_again()
            .await
            .unwrap_or_else(|e| panic!("{}: reopen failed: {e}", self.backend.name));
        self.store.initialize().await.expect("initialize failed");
    }

    /// Stores `lease` and returns it as stored (with its revision).
    pub async fn put(&self, lease: &AddressableLease) -> AddressableLease {
        self.store
            .store_lease(lease)
            .await
            .expect("store_lease failed");
        self.get(&lease.reference)
            .await
            .expect("stored lease is missing")
    }

    /// `get_lease`, panicking on error.
    pub async fn get(&self, r: &AddressableReference) -> Option<AddressableLease> {
        self.store.get_lease(r).await.expect("get_lease failed")
    }

    /// The references listed for node `n`, sorted.
    pub async fn listed(&self, n: &NodeId) -> Vec<AddressableReference> {
        let mut refs: Vec<_> = self
            .store
            .list_node_leases(n)
            .await
            .expect("list_node_leases failed")
            .into_iter()
            .map(|l| {
                assert_eq!(
                    &l.node_id, n,
                    "list_node_leases returned another node's lease"
                );
                l.reference
            })
            .collect();
        refs.sort();
        refs
    }
}
