//! The published version of the tree (this engine's [`Version`]), and reads over it.
//!
//! A [`Version`] is an immutable value: the active memtable, the frozen ones waiting for flush,
//! the tables by level, and the sequence number of the last batch it shows. The writer publishes
//! a new one after each batch, a flush or a compaction after changing the tables; a reader
//! takes the current one (an `Arc` clone) and reads it without any lock, as of its sequence
//! number, so it sees whole batches only, and the tables it reads stay open while it does.

use std::path::PathBuf;
use std::sync::Arc;

use orbit_persistence_core::engine;
use orbit_persistence_core::keyspace::{KvSnapshot, LeaseKv, OrderedKv, ScanVisitor};
use orbit_persistence_core::{
    AddressableLease, AddressableReference, NodeId, OrbitError, OrbitResult,
};

use crate::levels::Levels;
use crate::memtable::Memtable;
use crate::merge::{LevelIter, MemIter, MergeIter, Source};
use crate::sstable::TableIter;
use crate::value::{LATEST, Lookup};

/// A memtable that no longer takes writes, waiting for its flush.
#[derive(Debug)]
pub struct Frozen {
    /// Its entries.
    pub mem: Arc<Memtable>,
    /// The first WAL segment not covered by it (and older memtables): recovery's start once it
    /// is flushed.
    pub next_log: u64,
    /// Highest revision written when it was frozen.
    pub last_revision: u64,
    /// Leases in the store when it was frozen.
    pub lease_count: u64,
}

/// One published state of the tree.
#[derive(Debug, Clone)]
pub struct Version {
    /// The memtable the writer inserts into.
    pub active: Arc<Memtable>,
    /// Frozen memtables, newest first.
    pub frozen: Vec<Arc<Frozen>>,
    /// The tables.
    pub levels: Arc<Levels>,
    /// The last batch this state shows.
    pub seq: u64,
    /// Leases, as of `seq`.
    pub lease_count: u64,
    /// Highest revision, as of `seq`.
    pub revision: u64,
    /// The data directory (for error messages).
    pub dir: Arc<PathBuf>,
}

impl Version {
    /// The state as a reader sees it: as of its sequence number.
    pub fn view(&self) -> View<'_> {
        View {
            state: self,
            seq: self.seq,
        }
    }

    /// The state as the writer sees it: every applied entry, published or not.
    pub fn latest(&self) -> View<'_> {
        View {
            state: self,
            seq: LATEST,
        }
    }
}

/// A [`Version`] read as of a sequence number.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    state: &'a Version,
    seq: u64,
}

impl View<'_> {
    /// The newest version of `key`.
    pub fn lookup(&self, key: &[u8]) -> OrbitResult<Lookup> {
        let found = self.state.active.get(key, self.seq);
        if found != Lookup::Absent {
            return Ok(found);
        }
        self.lookup_below_active(key)
    }

    /// The newest version of `key` in the frozen memtables and the tables.
    pub fn lookup_below_active(&self, key: &[u8]) -> OrbitResult<Lookup> {
        for f in &self.state.frozen {
            let found = f.mem.get(key, LATEST);
            if found != Lookup::Absent {
                return Ok(found);
            }
        }
        self.state.levels.get(key)
    }

    /// Every source holding keys in `[start, end)`, newest first.
    pub fn sources(&self, start: &[u8], end: &[u8]) -> Vec<Source> {
        let s = self.state;
        let mut sources: Vec<Source> = Vec::new();
        sources.push(Box::new(MemIter::new(
            Arc::clone(&s.active),
            start,
            end,
            self.seq,
        )));
        for f in &s.frozen {
            sources.push(Box::new(MemIter::new(
                Arc::clone(&f.mem),
                start,
                end,
                LATEST,
            )));
        }
        for t in &s.levels.levels[0] {
            if t.meta.overlaps(start, end) {
                sources.push(Box::new(TableIter::new(Arc::clone(&t.table), start)));
            }
        }
        for level in &s.levels.levels[1..] {
            if !level.is_empty() {
                sources.push(Box::new(LevelIter::new(level, start)));
            }
        }
        sources
    }
}

impl OrderedKv for View<'_> {
    fn get<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> OrbitResult<T>,
    ) -> OrbitResult<Option<T>> {
        match self.lookup(key)? {
            Lookup::Value(v) => f(&v).map(Some),
            Lookup::Deleted | Lookup::Absent => Ok(None),
        }
    }

    fn scan(&self, start: &[u8], end: &[u8], f: &mut ScanVisitor<'_>) -> OrbitResult<()> {
        for entry in MergeIter::new(self.sources(start, end), Some(end))? {
            let (key, value) = entry?;
            if let Some(value) = value
                && !f(&key, &value)?
            {
                break;
            }
        }
        Ok(())
    }

    fn corrupt(&self, detail: String) -> OrbitError {
        OrbitError::corruption(self.state.dir.as_path(), 0, detail)
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
