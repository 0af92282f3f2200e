//! Published versions of the tree, the reader guards that keep retired pages alive, and a tree
//! as the key space of core's `keyspace` (what the lease-level reads run over).
//!
//! One tree holds the leases and both indexes as key ranges (the layout of
//! `orbit_persistence_core::keyspace`), so one commit updates all three.
//!
//! # Reader guards
//!
//! A [`Version`] is a root plus the page store it reads from, and an `Arc` of the [`Guard`] of
//! its checkpoint epoch. Pages retired during an epoch are handed to that epoch's guard after
//! the next checkpoint; the guard gives them back (to the writer's free pages) when it is dropped.
//! Each guard holds the next epoch's guard, so a guard is only dropped after every older one:
//! a page is reused only when no version that could reach it is left.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use orbit_persistence_core::engine;
use orbit_persistence_core::keyspace::{KvSnapshot, LeaseKv, OrderedKv, ScanVisitor};
use orbit_persistence_core::{
    AddressableLease, AddressableReference, NodeId, OrbitError, OrbitResult,
};

use crate::btree::{self, Child};
use crate::page::PageId;
use crate::pagefile::PageStore;

/// One tree as the ordered key space of [`orbit_persistence_core::keyspace`].
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// Where its pages are.
    pub store: &'a PageStore,
    /// Its root.
    pub root: &'a Child,
}

impl OrderedKv for View<'_> {
    fn get<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> OrbitResult<T>,
    ) -> OrbitResult<Option<T>> {
        btree::get(self.store, self.root, key, f)
    }

    fn scan(&self, start: &[u8], end: &[u8], f: &mut ScanVisitor<'_>) -> OrbitResult<()> {
        btree::scan(self.store, self.root, start, end, f).map(drop)
    }

    fn corrupt(&self, detail: String) -> OrbitError {
        self.store.corrupt(0, format!("{detail} (in the tree)"))
    }
}

/// Frees retired pages once no version that could reach them is left; see the module docs.
pub struct Guard {
    pages: Mutex<Vec<PageId>>,
    next: OnceLock<Arc<Guard>>,
    sink: Arc<Mutex<Vec<PageId>>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard that returns its pages to `sink`.
    pub fn new(sink: Arc<Mutex<Vec<PageId>>>) -> Arc<Guard> {
        Arc::new(Guard {
            pages: Mutex::new(Vec::new()),
            next: OnceLock::new(),
            sink,
        })
    }

    /// Ends this guard's epoch: it takes `pages` (retired while it was current) and hands over to
    /// a new guard, which it keeps alive. Returns the new guard.
    pub fn hand_over(self: &Arc<Self>, pages: Vec<PageId>) -> Arc<Guard> {
        self.pages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(pages);
        let next = Guard::new(Arc::clone(&self.sink));
        // Each guard hands over once: the writer replaces its guard with `next` right away.
        let _ = self.next.set(Arc::clone(&next));
        next
    }

    fn release(&mut self) {
        let pages = std::mem::take(self.pages.get_mut().unwrap_or_else(PoisonError::into_inner));
        if !pages.is_empty() {
            self.sink
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(pages);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.release();
        // Drop the chain of newer guards nobody else holds iteratively, not recursively: a
        // long-lived snapshot can hold a long chain.
        let mut next = self.next.take();
        while let Some(guard) = next {
            match Arc::try_unwrap(guard) {
                Ok(mut guard) => {
                    guard.release();
                    next = guard.next.take();
                }
                Err(_) => break,
            }
        }
    }
}

/// One published state of the tree.
#[derive(Debug)]
pub struct Version {
    /// The tree.
    pub root: Child,
    /// Where its pages are read.
    pub store: Arc<PageStore>,
    /// Leases in it.
    pub lease_count: u64,
    /// Highest revision in it.
    pub revision: u64,
    /// Keeps the pages it can reach from being reused.
    pub guard: Arc<Guard>,
}

impl Version {
    /// Lease-level reads of this version.
    pub fn view(&self) -> View<'_> {
        View {
            store: &self.store,
            root: &self.root,
        }
    }
}

impl KvSnapshot for Version {
    type Kv<'a> = View<'a>;

    fn kv(&self) -> View<'_> {
        self.view()
    }
}

impl engine::Version for Version {
    fn lease_count(&self) -> u64 {
        self.lease_count
    }

    fn revision(&self) -> u64 {
        self.revision
    }

    fn lease(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        LeaseKv(&self.view()).lease(r)
    }

    fn node_leases(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        LeaseKv(&self.view()).node_leases(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(sink: &Arc<Mutex<Vec<PageId>>>) -> Vec<PageId> {
        std::mem::take(&mut *sink.lock().unwrap())
    }

    #[test]
    fn pages_come_back_only_after_every_older_reader_is_gone() {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let g1 = Guard::new(Arc::clone(&sink));
        let old_reader = Arc::clone(&g1);
        let g2 = g1.hand_over(vec![10, 11]);
        drop(g1); // the writer moved on
        assert!(drain(&sink).is_empty(), "a reader of epoch 1 is alive");
        let mid_reader = Arc::clone(&g2);
        let g3 = g2.hand_over(vec![20]);
        drop(g2);
        drop(mid_reader);
        assert!(
            drain(&sink).is_empty(),
            "epoch 2's pages wait for the epoch-1 reader too"
        );
        drop(old_reader);
        let mut back = drain(&sink);
        back.sort();
        assert_eq!(back, vec![10, 11, 20]);
        drop(g3);
    }

    #[test]
    fn a_long_chain_drops_without_recursion() {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let first = Guard::new(Arc::clone(&sink));
        let mut g = Arc::clone(&first);
        for i in 0..200_000 {
            g = g.hand_over(vec![i]);
        }
        drop(g);
        drop(first);
        assert_eq!(drain(&sink).len(), 200_000);
    }
}
