//! The memtable: the newest writes, in a lock-free skiplist (crossbeam-skiplist), readable by
//! any number of readers while the one writer inserts.
//!
//! Every entry carries a sequence number (one per insert, increasing; a published version shows
//! everything up to the last insert of its batch), and entries of one key sort newest first. A
//! reader reads as of the sequence number of the version it took ([`crate::version::Version`]),
//! so it never sees part of a batch the writer is still applying. A frozen memtable is no longer
//! written and is read in full.

use std::borrow::Borrow;
use std::cmp::Ordering as CmpOrdering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_skiplist::SkipSet;

use orbit_persistence_core::OrbitResult;

use crate::value::Entry;
use crate::value::{LATEST, Lookup};

/// A key at a sequence number, as the skiplist orders it: by key, then newest first. Entries
/// and lookup probes both implement it, so a lookup borrows its key instead of allocating.
pub trait SeqKey {
    /// The user key.
    fn user_key(&self) -> &[u8];
    /// The sequence number.
    fn seq(&self) -> u64;
}

impl PartialEq for dyn SeqKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for dyn SeqKey + '_ {}

impl PartialOrd for dyn SeqKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn SeqKey + '_ {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.user_key()
            .cmp(other.user_key())
            .then_with(|| other.seq().cmp(&self.seq()))
    }
}

/// One entry: key and value in a single allocation.
#[derive(Debug)]
pub struct MemEntry {
    /// The key, then the value (empty for a tombstone).
    bytes: Box<[u8]>,
    key_len: u32,
    seq: u64,
    tombstone: bool,
}

impl MemEntry {
    /// `key` = `value` (`None`: a tombstone) at `seq`, in one allocation.
    pub fn new(key: &[u8], value: Option<&[u8]>, seq: u64) -> MemEntry {
        let value_bytes = value.unwrap_or_default();
        let mut bytes = Vec::with_capacity(key.len() + value_bytes.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value_bytes);
        MemEntry {
            bytes: bytes.into_boxed_slice(),
            key_len: key.len() as u32,
            seq,
            tombstone: value.is_none(),
        }
    }

    /// The value, `None` for a tombstone.
    pub fn payload(&self) -> Option<&[u8]> {
        (!self.tombstone).then(|| &self.bytes[self.key_len as usize..])
    }
}

impl SeqKey for MemEntry {
    fn user_key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    fn seq(&self) -> u64 {
        self.seq
    }
}

impl<'a> Borrow<dyn SeqKey + 'a> for MemEntry {
    fn borrow(&self) -> &(dyn SeqKey + 'a) {
        self
    }
}

impl PartialEq for MemEntry {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn SeqKey) == (other as &dyn SeqKey)
    }
}

impl Eq for MemEntry {}

impl PartialOrd for MemEntry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for MemEntry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self as &dyn SeqKey).cmp(other as &dyn SeqKey)
    }
}

/// A borrowed key at a sequence number, to look up or to bound a range.
struct Probe<'a> {
    key: &'a [u8],
    seq: u64,
}

impl SeqKey for Probe<'_> {
    fn user_key(&self) -> &[u8] {
        self.key
    }

    fn seq(&self) -> u64 {
        self.seq
    }
}

/// Bytes an entry is counted as beyond its key and value (skiplist node, allocation).
const ENTRY_OVERHEAD: u64 = 64;

/// One memtable.
#[derive(Debug, Default)]
pub struct Memtable {
    map: SkipSet<MemEntry>,
    bytes: AtomicU64,
}

impl Memtable {
    /// Inserts `key` = `value` (`None`: a tombstone) at `seq` (above every sequence number
    /// inserted before). Returns this memtable's previous version of `key`, if it holds one:
    /// entries of a key sort newest first, so it is the next entry, found without a second
    /// search. Writer thread only.
    pub fn insert(&self, key: &[u8], value: Option<&[u8]>, seq: u64) -> Lookup {
        self.insert_entry(MemEntry::new(key, value, seq))
    }

    /// Inserts an entry built beforehand (see [`Memtable::insert`]).
    pub fn insert_entry(&self, entry: MemEntry) -> Lookup {
        let size = entry.bytes.len() as u64 + ENTRY_OVERHEAD;
        let entry = self.map.insert(entry);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        let key = entry.user_key();
        match entry.next() {
            Some(prev) if prev.user_key() == key => match prev.value().payload() {
                Some(v) => Lookup::Value(v.to_vec()),
                None => Lookup::Deleted,
            },
            _ => Lookup::Absent,
        }
    }

    /// Approximate bytes held (every version counts).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether nothing was ever inserted.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The newest version of `key` as of `seq`.
    pub fn get(&self, key: &[u8], seq: u64) -> Lookup {
        let probe = Probe { key, seq };
        match self.map.lower_bound(Bound::Included(&probe as &dyn SeqKey)) {
            Some(e) if e.user_key() == key => match e.value().payload() {
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
    ) -> Vec<Entry> {
        // Sequence numbers start at 1: (k, 0) sorts after every version of k.
        let (key, seq_bound, included) = match start {
            Bound::Included(k) => (k, LATEST, true),
            Bound::Excluded(k) => (k, 0, false),
            Bound::Unbounded => (&[][..], LATEST, true),
        };
        let probe = Probe {
            key,
            seq: seq_bound,
        };
        let lower: Bound<&dyn SeqKey> = if included {
            Bound::Included(&probe)
        } else {
            Bound::Excluded(&probe)
        };
        let bounds: (Bound<&dyn SeqKey>, Bound<&dyn SeqKey>) = (lower, Bound::Unbounded);
        let mut out: Vec<Entry> = Vec::new();
        for e in self.map.range::<dyn SeqKey, _>(bounds) {
            let k = e.user_key();
            if k >= end {
                break;
            }
            if e.seq > seq || out.last().is_some_and(|(last, _)| last.as_slice() == k) {
                continue; // too new, or an older version of a key already returned
            }
            if out.len() == limit {
                break;
            }
            out.push((k.to_vec(), e.value().payload().map(<[u8]>::to_vec)));
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
            let k = e.user_key();
            if last.as_deref() == Some(k) {
                continue; // an older version
            }
            f(k, e.value().payload())?;
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
        assert_eq!(m.insert(b"a", Some(b"1"), 1), Lookup::Absent);
        assert_eq!(m.insert(b"a", Some(b"2"), 2), Lookup::Value(b"1".to_vec()));
        assert_eq!(m.insert(b"a", None, 3), Lookup::Value(b"2".to_vec()));
        assert_eq!(m.insert(b"a", Some(b"3"), 5), Lookup::Deleted);
        assert_eq!(m.insert(b"b", Some(b"x"), 4), Lookup::Absent);
        assert_eq!(m.get(b"a", 0), Lookup::Absent);
        assert_eq!(m.get(b"a", 1), Lookup::Value(b"1".to_vec()));
        assert_eq!(m.get(b"a", 2), Lookup::Value(b"2".to_vec()));
        assert_eq!(m.get(b"a", 4), Lookup::Deleted);
        assert_eq!(m.get(b"a", LATEST), Lookup::Value(b"3".to_vec()));
        assert_eq!(m.get(b"b", 3), Lookup::Absent);
        assert_eq!(m.get(b"c", LATEST), Lookup::Absent);
        assert_eq!(m.get(b"", LATEST), Lookup::Absent);
    }

    #[test]
    fn range_chunks_return_each_key_once_and_resume() {
        let m = Memtable::default();
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            m.insert(*k, Some(b"old"), 1 + i as u64);
            m.insert(*k, (i % 2 == 0).then_some(&b"new"[..]), 10 + i as u64);
        }
        let all = m.range_chunk(Bound::Unbounded, b"z", LATEST, 10);
        let expect = vec![
            (b"a".to_vec(), Some(b"new".to_vec())),
            (b"b".to_vec(), None),
            (b"c".to_vec(), Some(b"new".to_vec())),
            (b"d".to_vec(), None),
        ];
        assert_eq!(all, expect);
        let first = m.range_chunk(Bound::Included(b"b"), b"d", 4, 1);
        assert_eq!(first, vec![(b"b".to_vec(), Some(b"old".to_vec()))]);
        let rest = m.range_chunk(Bound::Excluded(b"b"), b"d", 4, 10);
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
