//! Data blocks: sorted entries with prefix-compressed keys and restart points.
//!
//! # Format (the payload; the table adds a CRC32 after it, see [`super`])
//!
//! ```text
//! entry*          one per key, in key order
//! u32 LE x r      restart offsets: where entries with a full key (shared = 0) begin
//! u32 LE          r, the number of restart points (>= 1 in a non-empty block)
//!
//! entry:
//!   varint        shared: bytes of the key equal to the previous key's
//!   varint        unshared: bytes that follow
//!   varint        value tag: 0 = tombstone, otherwise value length + 1
//!   bytes         the unshared key suffix
//!   bytes         the value
//! ```
//!
//! Varints are LEB128 (7 bits per byte, low first, at most 10 bytes). Every
//! [`RESTART_INTERVAL`]th entry restarts with a full key, so a lookup binary-searches the
//! restart points and then decodes at most that many entries. The lease keys share long
//! prefixes (type, key stem, node), which is where most of the space saving comes from.

use std::sync::Arc;

use crate::coding::{get_varint, put_varint};
use crate::value::Entry;
use orbit_persistence_core::encoding::DecodeError;

/// Entries between two restart points.
pub const RESTART_INTERVAL: usize = 16;

/// Builds one data block.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    last_key: Vec<u8>,
    count: usize,
}

impl BlockBuilder {
    /// Appends an entry; keys must come in strictly increasing order.
    pub fn add(&mut self, key: &[u8], value: Option<&[u8]>) {
        debug_assert!(self.count == 0 || key > self.last_key.as_slice());
        let shared = if self.count.is_multiple_of(RESTART_INTERVAL) {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            key.iter()
                .zip(&self.last_key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.map_or(0, |v| v.len() as u64 + 1));
        self.buf.extend_from_slice(&key[shared..]);
        if let Some(v) = value {
            self.buf.extend_from_slice(v);
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.count += 1;
    }

    /// Bytes the block would have if finished now.
    pub fn size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The last key added.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// The finished payload; the builder is empty again afterwards.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.restarts.clear();
        self.last_key.clear();
        self.count = 0;
        out
    }
}

/// A decoded view of one block's payload (already checksum-verified).
#[derive(Debug)]
pub struct Block {
    data: Box<[u8]>,
    /// Where the restart array begins (= end of the entries).
    restarts_at: usize,
    restarts: usize,
}

/// One entry of a block: the value's place in the block, or a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A value at this byte range of the block.
    Value(usize, usize),
    /// The key was deleted.
    Tombstone,
}

impl Block {
    /// Checks the restart array of `data`. The error says what is wrong, for a `Corruption`.
    pub fn new(data: Box<[u8]>) -> Result<Block, DecodeError> {
        let len = data.len();
        let Some(count_at) = len.checked_sub(4) else {
            return Err(DecodeError::new(
                0,
                format!("block of {len} bytes has no restart count"),
            ));
        };
        let restarts = u32::from_le_bytes(data[count_at..].try_into().unwrap_or_default()) as usize;
        let restarts_at = restarts
            .checked_mul(4)
            .and_then(|n| count_at.checked_sub(n))
            .ok_or_else(|| {
                DecodeError::new(
                    count_at,
                    format!("block of {len} bytes claims {restarts} restart points"),
                )
            })?;
        if restarts == 0 {
            return Err(DecodeError::new(count_at, "block without restart points"));
        }
        let block = Block {
            data,
            restarts_at,
            restarts,
        };
        for i in 0..restarts {
            if block.restart(i) >= restarts_at {
                return Err(DecodeError::new(
                    restarts_at + 4 * i,
                    format!("restart point {i} lies past the entries"),
                ));
            }
        }
        Ok(block)
    }

    /// Bytes held (for the cache's weight).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the block holds no bytes (never true for a valid block).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn restart(&self, i: usize) -> usize {
        let at = self.restarts_at + 4 * i;
        u32::from_le_bytes(self.data[at..at + 4].try_into().unwrap_or_default()) as usize
    }

    /// Decodes the entry at `at` onto `key` (which holds the previous key). Returns the slot
    /// and where the next entry begins.
    fn decode(&self, at: usize, key: &mut Vec<u8>) -> Result<(Slot, usize), DecodeError> {
        let bad = |what: &str| DecodeError::new(at, format!("entry: {what}"));
        let end = self.restarts_at;
        let entries = &self.data[..end];
        let mut pos = at;
        let shared = get_varint(entries, &mut pos).ok_or_else(|| bad("bad shared length"))?;
        let unshared = get_varint(entries, &mut pos).ok_or_else(|| bad("bad key length"))?;
        let tag = get_varint(entries, &mut pos).ok_or_else(|| bad("bad value length"))?;
        if shared as usize > key.len() {
            return Err(bad("shares more than the previous key holds"));
        }
        let key_end = pos
            .checked_add(unshared as usize)
            .filter(|&e| e <= end)
            .ok_or_else(|| bad("key runs past the entries"))?;
        key.truncate(shared as usize);
        key.extend_from_slice(&entries[pos..key_end]);
        if tag == 0 {
            return Ok((Slot::Tombstone, key_end));
        }
        let value_end = key_end
            .checked_add(tag as usize - 1)
            .filter(|&e| e <= end)
            .ok_or_else(|| bad("value runs past the entries"))?;
        Ok((Slot::Value(key_end, value_end), value_end))
    }

    /// The value slice of a slot.
    pub fn value(&self, slot: Slot) -> Option<&[u8]> {
        match slot {
            Slot::Value(a, b) => Some(&self.data[a..b]),
            Slot::Tombstone => None,
        }
    }

    /// Position of the first entry with a key `>= target`: the restart point to scan from.
    fn seek_restart(&self, target: &[u8]) -> Result<usize, DecodeError> {
        // The last restart point whose key is < target (or the first one).
        let (mut lo, mut hi) = (0, self.restarts);
        let mut key = Vec::new();
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            key.clear();
            self.decode(self.restart(mid), &mut key)?;
            if key.as_slice() < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(self.restart(lo))
    }

    /// The slot of `key`, if the block holds it.
    pub fn get(&self, target: &[u8]) -> Result<Option<Slot>, DecodeError> {
        let mut at = self.seek_restart(target)?;
        let mut key = Vec::new();
        while at < self.restarts_at {
            let (slot, next) = self.decode(at, &mut key)?;
            match key.as_slice().cmp(target) {
                std::cmp::Ordering::Less => at = next,
                std::cmp::Ordering::Equal => return Ok(Some(slot)),
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// A cursor over the entries of a block, from a key on.
#[derive(Debug)]
pub struct BlockCursor {
    block: Arc<Block>,
    at: usize,
    key: Vec<u8>,
}

impl BlockCursor {
    /// A cursor at the first entry with a key `>= start` (the first entry if `start` is empty).
    pub fn seek(block: Arc<Block>, start: &[u8]) -> Result<BlockCursor, DecodeError> {
        let at = if start.is_empty() {
            0
        } else {
            block.seek_restart(start)?
        };
        let mut cursor = BlockCursor {
            block,
            at,
            key: Vec::new(),
        };
        // Skip the entries before `start` within the restart interval.
        while let Some((key, _)) = cursor.peek()? {
            if key.as_slice() >= start {
                break;
            }
            cursor.advance()?;
        }
        Ok(cursor)
    }

    fn peek(&self) -> Result<Option<(Vec<u8>, Slot)>, DecodeError> {
        if self.at >= self.block.restarts_at {
            return Ok(None);
        }
        let mut key = self.key.clone();
        let (slot, _) = self.block.decode(self.at, &mut key)?;
        Ok(Some((key, slot)))
    }

    fn advance(&mut self) -> Result<(), DecodeError> {
        let (_, next) = self.block.decode(self.at, &mut self.key)?;
        self.at = next;
        Ok(())
    }

    /// The next entry: key and value (`None` for a tombstone).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, DecodeError> {
        if self.at >= self.block.restarts_at {
            return Ok(None);
        }
        let (slot, next) = self.block.decode(self.at, &mut self.key)?;
        self.at = next;
        Ok(Some((
            self.key.clone(),
            self.block.value(slot).map(<[u8]>::to_vec),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(n: usize) -> (Block, Vec<Entry>) {
        let mut b = BlockBuilder::default();
        let mut entries = Vec::new();
        for i in 0..n {
            let key = format!("Lactor-{:08}", i * 3).into_bytes();
            let value = (i % 5 != 0).then(|| vec![i as u8; i % 7]);
            b.add(&key, value.as_deref());
            entries.push((key, value));
        }
        (Block::new(b.finish().into()).unwrap(), entries)
    }

    #[test]
    fn varints_round_trip_and_reject_overlong() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut at = 0;
            assert_eq!(get_varint(&out, &mut at), Some(v));
            assert_eq!(at, out.len());
        }
        let mut at = 0;
        assert_eq!(get_varint(&[0x80; 11], &mut at), None);
        let mut at = 0;
        assert_eq!(get_varint(&[0x80], &mut at), None);
    }

    #[test]
    fn every_key_is_found_and_missing_keys_are_not() {
        let (block, entries) = build(100);
        for (k, v) in &entries {
            let slot = block.get(k).unwrap().expect("present");
            assert_eq!(block.value(slot).map(<[u8]>::to_vec), *v);
        }
        assert_eq!(block.get(b"Lactor-00000001").unwrap(), None);
        assert_eq!(block.get(b"A").unwrap(), None);
        assert_eq!(block.get(b"Z").unwrap(), None);
    }

    #[test]
    fn cursor_seeks_and_walks_in_order() {
        let (block, entries) = build(50);
        let block = Arc::new(block);
        for start in 0..entries.len() {
            let mut c = BlockCursor::seek(Arc::clone(&block), &entries[start].0).unwrap();
            let mut got = Vec::new();
            while let Some(e) = c.next_entry().unwrap() {
                got.push(e);
            }
            assert_eq!(got, entries[start..]);
        }
        // Between keys: starts at the next one.
        let mut c = BlockCursor::seek(Arc::clone(&block), b"Lactor-00000004").unwrap();
        assert_eq!(c.next_entry().unwrap().unwrap().0, entries[2].0);
    }

    #[test]
    fn prefix_compression_saves_space() {
        let (block, entries) = build(64);
        let raw: usize = entries
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        assert!(block.len() < raw, "{} >= {raw}", block.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Block::new(vec![1, 2].into()).is_err());
        assert!(Block::new(vec![0, 0, 0, 0].into()).is_err());
        assert!(Block::new(vec![9, 0, 0, 0, 1, 0, 0, 0].into()).is_err());
        // The error names where in the block it is: here the restart count that claims 200.
        let e = Block::new(vec![0, 0, 0, 0, 200, 0, 0, 0].into()).unwrap_err();
        assert_eq!(e.offset, 4, "{e}");
        let mut rng = 0x1234_5678u64;
        for _ in 0..2000 {
            let len = (rng % 64) as usize + 8;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                bytes.push(rng as u8);
            }
            // A plausible restart array: one restart at 0.
            let n = bytes.len();
            bytes[n - 4..].copy_from_slice(&1u32.to_le_bytes());
            bytes[n - 8..n - 4].copy_from_slice(&0u32.to_le_bytes());
            if let Ok(block) = Block::new(bytes.into()) {
                let block = Arc::new(block);
                let _ = block.get(b"Lactor");
                if let Ok(mut c) = BlockCursor::seek(block, b"") {
                    while let Ok(Some(_)) = c.next_entry() {}
                }
            }
        }
    }
}
