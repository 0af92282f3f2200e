//! Iterators that compose: one per memtable, table or level, and a merge of them in which the
//! newest source wins for each key. Range scans of the indexes and compactions both read
//! through [`MergeIter`].

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::sync::Arc;

use orbit_persistence_core::OrbitResult;

use crate::levels::TableHandle;
use crate::memtable::Memtable;
use crate::sstable::TableIter;
use crate::value::Entry;

/// A sorted source of entries with unique keys.
pub type Source = Box<dyn Iterator<Item = OrbitResult<Entry>> + Send>;

/// Entries a memtable iterator copies out per step.
const CHUNK: usize = 256;

/// An owning iterator over a memtable as of a sequence number, read in chunks.
pub struct MemIter {
    mem: Arc<Memtable>,
    seq: u64,
    end: Vec<u8>,
    after: Option<Vec<u8>>,
    start: Vec<u8>,
    chunk: std::vec::IntoIter<Entry>,
    done: bool,
}

impl MemIter {
    /// Entries of `mem` with `start <= key < end` as of `seq`.
    pub fn new(mem: Arc<Memtable>, start: &[u8], end: &[u8], seq: u64) -> Self {
        MemIter {
            mem,
            seq,
            end: end.to_vec(),
            after: None,
            start: start.to_vec(),
            chunk: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl Iterator for MemIter {
    type Item = OrbitResult<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.chunk.next() {
            return Some(Ok(e));
        }
        if self.done {
            return None;
        }
        let from = match &self.after {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Included(self.start.as_slice()),
        };
        let chunk = self.mem.range_chunk(from, &self.end, self.seq, CHUNK);
        self.done = chunk.len() < CHUNK;
        self.after = chunk.last().map(|(k, _)| k.clone());
        self.chunk = chunk.into_iter();
        self.chunk.next().map(Ok)
    }
}

/// An iterator over a sorted run of non-overlapping tables (one level below L0), opening each
/// table only when reached.
pub struct LevelIter {
    tables: std::collections::VecDeque<Arc<TableHandle>>,
    current: Option<TableIter>,
    start: Vec<u8>,
}

impl LevelIter {
    /// Entries with keys `>= start` of `tables` (sorted, non-overlapping).
    pub fn new(tables: &[Arc<TableHandle>], start: &[u8]) -> Self {
        let first = tables.partition_point(|t| t.meta.largest.as_slice() < start);
        LevelIter {
            tables: tables[first..].iter().cloned().collect(),
            current: None,
            start: start.to_vec(),
        }
    }
}

impl Iterator for LevelIter {
    type Item = OrbitResult<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.as_mut().and_then(Iterator::next) {
                return Some(item);
            }
            let table = self.tables.pop_front()?;
            self.current = Some(TableIter::new(Arc::clone(&table.table), &self.start));
        }
    }
}

struct Head {
    entry: Entry,
    /// Lower = newer.
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    /// Reversed, so the max-heap pops the smallest key, and of equal keys the newest source.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .entry
            .0
            .cmp(&self.entry.0)
            .then_with(|| other.source.cmp(&self.source))
    }
}

/// Merges sources (given newest first) into one sorted stream with unique keys below `end`,
/// each key's entry taken from the newest source holding it. Tombstones are passed through.
pub struct MergeIter {
    sources: Vec<Source>,
    heap: BinaryHeap<Head>,
    end: Option<Vec<u8>>,
    failed: bool,
}

impl MergeIter {
    /// A merge of `sources` (newest first), stopping before `end` (`None`: no bound).
    pub fn new(sources: Vec<Source>, end: Option<&[u8]>) -> OrbitResult<Self> {
        let mut merge = MergeIter {
            sources,
            heap: BinaryHeap::new(),
            end: end.map(<[u8]>::to_vec),
            failed: false,
        };
        for i in 0..merge.sources.len() {
            merge.pull(i)?;
        }
        Ok(merge)
    }

    fn pull(&mut self, source: usize) -> OrbitResult<()> {
        if let Some(entry) = self.sources[source].next().transpose()?
            && self.end.as_ref().is_none_or(|end| entry.0 < *end)
        {
            self.heap.push(Head { entry, source });
        }
        Ok(())
    }

    fn step(&mut self) -> OrbitResult<Option<Entry>> {
        let Some(top) = self.heap.pop() else {
            return Ok(None);
        };
        self.pull(top.source)?;
        // Older versions of the same key.
        while self.heap.peek().is_some_and(|h| h.entry.0 == top.entry.0) {
            if let Some(old) = self.heap.pop() {
                self.pull(old.source)?;
            }
        }
        Ok(Some(top.entry))
    }
}

impl Iterator for MergeIter {
    type Item = OrbitResult<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let out = self.step().transpose();
        if matches!(out, Some(Err(_))) {
            self.failed = true;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(entries: &[(&str, Option<&str>)]) -> Source {
        let v: Vec<OrbitResult<Entry>> = entries
            .iter()
            .map(|(k, v)| Ok((k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()))))
            .collect();
        Box::new(v.into_iter())
    }

    #[test]
    fn newest_source_wins_and_keys_come_once_in_order() {
        let newest = source(&[("b", None), ("d", Some("d2"))]);
        let older = source(&[("a", Some("a1")), ("b", Some("b1")), ("d", Some("d1"))]);
        let oldest = source(&[("b", Some("b0")), ("c", Some("c0")), ("e", Some("e0"))]);
        let merged: Vec<Entry> = MergeIter::new(vec![newest, older, oldest], Some(b"e"))
            .unwrap()
            .collect::<OrbitResult<_>>()
            .unwrap();
        let expect: Vec<Entry> = [
            ("a", Some("a1")),
            ("b", None),
            ("c", Some("c0")),
            ("d", Some("d2")),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
        .collect();
        assert_eq!(merged, expect);
    }

    #[test]
    fn an_error_ends_the_merge() {
        let bad: Source = Box::new(
            vec![
                Ok((b"a".to_vec(), None)),
                Err(orbit_persistence_core::OrbitError::corruption(
                    "t", 9, "bad",
                )),
            ]
            .into_iter(),
        );
        let mut m = MergeIter::new(vec![bad, source(&[("b", Some("1"))])], None).unwrap();
        let results: Vec<_> = m.by_ref().collect();
        assert!(results.last().unwrap().is_err(), "{results:?}");
        assert!(m.next().is_none());
    }
}
