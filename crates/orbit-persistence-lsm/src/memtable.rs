//! The memtable: the newest writes, in a lock-free skiplist (crossbeam-skiplist), readable by
//! any number of readers while the one writer inserts.
//!
//! Every entry carries the sequence number of the batch that wrote it, and entries of one key
//! sort newest first. A reader reads as of the sequence number of the state it took
//! ([`crate::state::State`]), so it never sees part of a batch the writer is still applying. A
//! frozen memtable is no longer written and is read in full.

use std::cmp::Ordering as CmpOrdering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_skiplist::SkipMap;

use orbit_persistence_core::OrbitResult;

use crate::sstable::Lookup;

/// Sees every entry (a frozen memtable, or the writer's own view).
pub const LATEST: u64 = u64::MAX;

/// A key at a sequence number: ordered by key, then newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemKey {
    key: Box<[u8]>,
    seq: u64,
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.key
            .cmp(&other.key)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// Bytes an entry is counted as beyond its key and value (skiplist node, boxes).
const ENTRY_OVERHEAD: u64 = 64;

/// One memtable.
#[derive(Debug, Default)]
pub struct Memtable {
    map: SkipMap<MemKey, Option<Box<[u8]>>>,
    bytes: AtomicU64,
}

impl Memtable {
    /// Inserts `key` = `value` (`None`: a tombstone) as of batch `seq`. Writer thread only.
    pub fn insert(&self, key: &[u8], value: Option<&[u8]>, seq: u64) {
        let size = key.len() as u64 + value.map_or(0, |v| v.len() as u64) + ENTRY_OVERHEAD;
        self.map.insert(
            MemKey {
                key: key.into(),
                seq,
            },
            value.map(Into::into),
        );
        self.bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// Approximate bytes held (every version counts).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether nothing was ever inserted.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries, every version counted.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The newest version of `key` as of `seq`.
    pub fn get(&self, key: &[u8], seq: u64) -> Lookup {
        let probe = MemKey {
            key: key.into(),
            seq,
        };
        match self.map.lower_bound(Bound::Included(&probe)) {
            Some(e) if *e.key().key == *key => match e.value() {
                Some(v) => Lookup::Value(v.to_vec()),
                None => Lookup::Deleted,
            },
            _ => Lookup::Absent,
        }
    }

    /// Up to `limit` visible entries (newest version as of `seq`, tombstones included) with
    /// `start <= key < end`, in key order; the caller continues after the last key returned.
    pub fn range_chunk(
        &self,
        start: Bound<&[u8]>,
        end: &[u8],
        seq: u64,
        limit: usize,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let lower = match start {
            Bound::Included(k) => MemKey {
                key: k.into(),
                seq: LATEST,
            },
            // After every version of `k`.
            Bound::Excluded(k) => MemKey {
                key: k.into(),
                seq: 0,
            },
            Bound::Unbounded => MemKey {
                key: Box::default(),
                seq: LATEST,
            },
        };
        let lower = match start {
            Bound::Excluded(_) => Bound::Excluded(lower),
            _ => Bound::Included(lower),
        };
        let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for e in self.map.range((lower, Bound::Unbounded)) {
            let k = e.key();
            if *k.key >= *end {
                break;
            }
            if k.seq > seq || out.last().is_some_and(|(last, _)| **last == *k.key) {
                continue; // too new, or an older version of a key already returned
            }
            if out.len() == limit {
                break;
            }
            out.push((k.key.to_vec(), e.value().as_ref().map(|v| v.to_vec())));
        }
        out
    }

    /// Calls `f` with every key's newest version, in key order (a flush of a frozen memtable).
    pub fn for_each_latest(
        &self,
        mut f: impl FnMut(&[u8], Option<&[u8]>) -> OrbitResult<()>,
    ) -> OrbitResult<()> {
        let mut last: Option<Vec<u8>> = None;
        for e in self.map.iter() {
            let k: &[u8] = &e.key().key;
            if last.as_deref() == Some(k) {
                continue; // an older version
            }
            f(k, e.value().as_deref())?;
            let buf = last.get_or_insert_with(Vec::new);
            buf.clear();
            buf.extend_from_slice(k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_the_newest_version_as_of_their_sequence() {
        let m = Memtable::default();
        m.insert(b"a", Some(b"1"), 1);
        m.insert(b"a", Some(b"2"), 2);
        m.insert(b"a", None, 3);
        m.insert(b"b", Some(b"x"), 2);
        assert_eq!(m.get(b"a", 0), Lookup::Absent);
        assert_eq!(m.get(b"a", 1), Lookup::Value(b"1".to_vec()));
        assert_eq!(m.get(b"a", 2), Lookup::Value(b"2".to_vec()));
        assert_eq!(m.get(b"a", LATEST), Lookup::Deleted);
        assert_eq!(m.get(b"b", 1), Lookup::Absent);
        assert_eq!(m.get(b"c", LATEST), Lookup::Absent);
        assert_eq!(m.get(b"", LATEST), Lookup::Absent);
    }

    #[test]
    fn range_chunks_return_each_key_once_and_resume() {
        let m = Memtable::default();
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            m.insert(*k, Some(b"old"), 1);
            m.insert(*k, (i % 2 == 0).then_some(&b"new"[..]), 2);
        }
        let all = m.range_chunk(Bound::Unbounded, b"z", LATEST, 10);
        let expect = vec![
            (b"a".to_vec(), Some(b"new".to_vec())),
            (b"b".to_vec(), None),
            (b"c".to_vec(), Some(b"new".to_vec())),
            (b"d".to_vec(), None),
        ];
        assert_eq!(all, expect);
        let first = m.range_chunk(Bound::Included(b"b"), b"d", 1, 1);
        assert_eq!(first, vec![(b"b".to_vec(), Some(b"old".to_vec()))]);
        let rest = m.range_chunk(Bound::Excluded(b"b"), b"d", 1, 10);
        assert_eq!(rest, vec![(b"c".to_vec(), Some(b"old".to_vec()))]);
        let mut flushed = Vec::new();
        m.for_each_latest(|k, v| {
            flushed.push((k.to_vec(), v.map(<[u8]>::to_vec)));
            Ok(())
        })
        .unwrap();
        assert_eq!(flushed, expect);
    }
}
