//! The tables of the tree, by level. Level 0 holds flushed memtables, which may overlap, newest
//! first; every deeper level is one sorted run of non-overlapping tables, ordered by key. A
//! [`Levels`] value is immutable: flushes and compactions publish a new one, and a reader keeps
//! the tables of the one it took open for as long as it reads.

use std::sync::Arc;

use orbit_persistence_core::OrbitResult;

use crate::sstable::Table;
use crate::value::Lookup;

/// Deepest level + 1.
pub const MAX_LEVELS: usize = 7;

/// What the manifest records of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    /// The table's id (its file name).
    pub id: u64,
    /// Its level.
    pub level: u8,
    /// Bytes of the file.
    pub file_size: u64,
    /// Entries, tombstones included.
    pub entries: u64,
    /// Smallest key.
    pub smallest: Vec<u8>,
    /// Largest key.
    pub largest: Vec<u8>,
}

impl TableMeta {
    /// Whether the table's key range meets `[smallest, largest]`.
    pub fn overlaps(&self, smallest: &[u8], largest: &[u8]) -> bool {
        self.smallest.as_slice() <= largest && smallest <= self.largest.as_slice()
    }
}

/// An open table with its manifest facts.
#[derive(Debug)]
pub struct TableHandle {
    /// The manifest's facts.
    pub meta: TableMeta,
    /// The open table.
    pub table: Arc<Table>,
}

/// The tables of every level.
#[derive(Debug, Clone)]
pub struct Levels {
    /// `levels[0]` newest first; the others sorted by smallest key.
    pub levels: Vec<Vec<Arc<TableHandle>>>,
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            levels: vec![Vec::new(); MAX_LEVELS],
        }
    }
}

impl Levels {
    /// The newest version of `key` in the tables.
    pub fn get(&self, key: &[u8]) -> OrbitResult<Lookup> {
        for t in &self.levels[0] {
            if t.meta.overlaps(key, key) {
                let found = t.table.get(key)?;
                if found != Lookup::Absent {
                    return Ok(found);
                }
            }
        }
        for level in &self.levels[1..] {
            let i = level.partition_point(|t| t.meta.largest.as_slice() < key);
            if let Some(t) = level.get(i).filter(|t| t.meta.smallest.as_slice() <= key) {
                let found = t.table.get(key)?;
                if found != Lookup::Absent {
                    return Ok(found);
                }
            }
        }
        Ok(Lookup::Absent)
    }

    /// Bytes of the tables of `level`.
    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|t| t.meta.file_size).sum()
    }

    /// Bytes of every table.
    pub fn total_bytes(&self) -> u64 {
        (0..MAX_LEVELS).map(|l| self.level_bytes(l)).sum()
    }

    /// Number of tables.
    pub fn table_count(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// Tables of `level` meeting `[smallest, largest]`.
    pub fn overlapping(
        &self,
        level: usize,
        smallest: &[u8],
        largest: &[u8],
    ) -> Vec<Arc<TableHandle>> {
        self.levels[level]
            .iter()
            .filter(|t| t.meta.overlaps(smallest, largest))
            .cloned()
            .collect()
    }

    /// Whether any level below `level` holds a table meeting `[smallest, largest]` (if none,
    /// tombstones written to `level` have nothing left to hide and can be dropped).
    pub fn deeper_overlap(&self, level: usize, smallest: &[u8], largest: &[u8]) -> bool {
        self.levels[level + 1..]
            .iter()
            .flatten()
            .any(|t| t.meta.overlaps(smallest, largest))
    }

    /// These levels with `removed` tables dropped and `added` ones inserted in place.
    pub fn apply(&self, removed: &[u64], added: Vec<Arc<TableHandle>>) -> Levels {
        let mut next = self.clone();
        for level in &mut next.levels {
            level.retain(|t| !removed.contains(&t.meta.id));
        }
        for t in added {
            let level = &mut next.levels[t.meta.level as usize];
            if t.meta.level == 0 {
                // Newest first: a flushed table is newer than every other table of level 0,
                // and tables moved back into level 0 never happen.
                level.insert(0, t);
            } else {
                let at = level.partition_point(|o| o.meta.smallest < t.meta.smallest);
                level.insert(at, t);
            }
        }
        next
    }
}
