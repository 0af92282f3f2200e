//! Reads one table file in the format of [`super`]: the footer, index and bloom filter at open,
//! data blocks on demand through the block cache, every checksum checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bloomfilter::Bloom;
use orbit_persistence_core::encoding::DecodeError;
use orbit_persistence_core::fs::{FileSystem, FsFile, OpenMode};
use orbit_persistence_core::{OrbitError, OrbitResult};

use super::block::{Block, BlockCursor, Slot};
use super::{BLOOM_SEED, FOOTER_LEN, HEADER_LEN, MAGIC, VERSION, be_u32, be_u64};
use crate::cache::BlockCache;
use crate::coding::get_varint;
use crate::value::Lookup;

/// Where one data block is.
#[derive(Debug)]
struct IndexEntry {
    last_key: Box<[u8]>,
    offset: u64,
    len: u32,
}

/// An open table: its index and bloom filter in memory, data blocks read on demand.
pub struct Table {
    id: u64,
    path: PathBuf,
    file: Box<dyn FsFile>,
    index: Vec<IndexEntry>,
    bloom: Bloom<[u8]>,
    cache: Option<Arc<BlockCache>>,
    entries: u64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("blocks", &self.index.len())
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl Table {
    /// Opens table `id` at `path`: checks the header and footer, loads the index and the bloom
    /// filter.
    pub fn open(
        fs: &dyn FileSystem,
        path: &Path,
        id: u64,
        cache: Option<Arc<BlockCache>>,
    ) -> OrbitResult<Table> {
        let file = fs.open(path, OpenMode::Read)?;
        let corrupt = |at: u64, what: String| OrbitError::corruption(path, at, what);
        let len = file.len()?;
        if len < HEADER_LEN + FOOTER_LEN as u64 {
            return Err(corrupt(0, format!("table of {len} bytes is too short")));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut header, 0)?;
        if &header[..8] != MAGIC {
            return Err(corrupt(0, "not a table file (bad magic)".into()));
        }
        if be_u32(&header[8..]) != VERSION {
            return Err(corrupt(
                8,
                format!("unknown table format version {}", be_u32(&header[8..])),
            ));
        }
        let footer_at = len - FOOTER_LEN as u64;
        let mut footer = [0u8; FOOTER_LEN];
        file.read_exact_at(&mut footer, footer_at)?;
        if crc32fast::hash(&footer[..52]) != be_u32(&footer[52..]) {
            return Err(corrupt(footer_at, "footer checksum mismatch".into()));
        }
        if &footer[40..48] != MAGIC || be_u32(&footer[48..52]) != VERSION {
            return Err(corrupt(footer_at, "bad footer magic or version".into()));
        }
        let handle = |at: usize| {
            (
                be_u64(&footer[at..at + 8]),
                be_u32(&footer[at + 8..at + 12]),
            )
        };
        let (index_at, index_len) = handle(0);
        let (bloom_at, bloom_len) = handle(12);
        let entries = be_u64(&footer[24..32]);
        let mut table = Table {
            id,
            path: path.to_path_buf(),
            file,
            index: Vec::new(),
            bloom: Bloom::new_with_seed(1, 1, &BLOOM_SEED)
                .map_err(|e| OrbitError::internal("lsm", format!("bloom filter: {e}")))?,
            cache,
            entries,
        };
        let bloom_bytes = table.read_block(bloom_at, bloom_len, footer_at)?;
        table.bloom = Bloom::from_bytes(bloom_bytes.into_vec())
            .ok()
            // Not `is_empty`: for a `Bloom` that means "no bit set". A filter of zero bits
            // would divide by zero on every check; a builder never writes under a byte.
            .filter(|b| b.len() >= 8)
            .ok_or_else(|| corrupt(bloom_at, "undecodable bloom filter".into()))?;
        let index = table.read_block(index_at, index_len, footer_at)?;
        table.index =
            parse_index(&index, footer_at).map_err(|e| e.into_corruption(path, index_at))?;
        Ok(table)
    }

    /// The table's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries, tombstones included.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Reads and checks the block at `at` (payload length `len`), which must end by `limit`.
    fn read_block(&self, at: u64, len: u32, limit: u64) -> OrbitResult<Box<[u8]>> {
        let end = at.checked_add(u64::from(len) + 4).filter(|&e| e <= limit);
        if at < HEADER_LEN || end.is_none() {
            return Err(OrbitError::corruption(
                &self.path,
                at,
                format!("block of {len} bytes at {at} lies outside the table"),
            ));
        }
        let mut bytes = vec![0u8; len as usize + 4];
        self.file.read_exact_at(&mut bytes, at)?;
        let crc = u32::from_le_bytes(bytes[len as usize..].try_into().unwrap_or_default());
        bytes.truncate(len as usize);
        if crc32fast::hash(&bytes) != crc {
            return Err(OrbitError::corruption(
                &self.path,
                at,
                "block checksum mismatch",
            ));
        }
        Ok(bytes.into_boxed_slice())
    }

    /// Data block `i`, from the cache or the file.
    fn data_block(&self, i: usize) -> OrbitResult<Arc<Block>> {
        let entry = &self.index[i];
        let key = (self.id, entry.offset);
        if let Some(block) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(block);
        }
        let bytes = self.read_block(entry.offset, entry.len, u64::MAX)?;
        let block =
            Arc::new(Block::new(bytes).map_err(|e| e.into_corruption(&self.path, entry.offset))?);
        if let Some(cache) = &self.cache {
            cache.insert(key, Arc::clone(&block));
        }
        Ok(block)
    }

    /// The index of the first block that may hold keys `>= key`.
    fn block_for(&self, key: &[u8]) -> usize {
        self.index.partition_point(|e| &*e.last_key < key)
    }

    /// Whether the bloom filter allows `key` to be here.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.bloom.check(key)
    }

    /// Reads every data block from the file (not the cache), checking its checksum, its
    /// entries, and that its keys are in order and within its index entry. Returns the first
    /// problem of each bad block.
    pub fn verify(&self) -> Vec<OrbitError> {
        let mut problems = Vec::new();
        let mut previous: Option<Vec<u8>> = None;
        for entry in &self.index {
            let undecodable = |e: DecodeError| e.into_corruption(&self.path, entry.offset);
            let checked = self
                .read_block(entry.offset, entry.len, u64::MAX)
                .and_then(|bytes| Block::new(bytes).map_err(undecodable))
                .and_then(|block| {
                    let mut cursor =
                        BlockCursor::seek(Arc::new(block), &[]).map_err(undecodable)?;
                    while let Some((key, _)) = cursor.next_entry().map_err(undecodable)? {
                        if previous.as_ref().is_some_and(|p| *p >= key) || *key > *entry.last_key {
                            return Err(OrbitError::corruption(
                                &self.path,
                                entry.offset,
                                "keys out of order",
                            ));
                        }
                        previous = Some(key);
                    }
                    Ok(())
                });
            if let Err(e) = checked {
                problems.push(e);
            }
        }
        problems
    }

    /// Looks `key` up.
    pub fn get(&self, key: &[u8]) -> OrbitResult<Lookup> {
        if !self.may_contain(key) {
            return Ok(Lookup::Absent);
        }
        let i = self.block_for(key);
        if i >= self.index.len() {
            return Ok(Lookup::Absent);
        }
        let block = self.data_block(i)?;
        let offset = self.index[i].offset;
        Ok(
            match block
                .get(key)
                .map_err(|e| e.into_corruption(&self.path, offset))?
            {
                None => Lookup::Absent,
                Some(Slot::Tombstone) => Lookup::Deleted,
                Some(slot) => Lookup::Value(block.value(slot).unwrap_or_default().to_vec()),
            },
        )
    }
}

fn parse_index(bytes: &[u8], limit: u64) -> Result<Vec<IndexEntry>, DecodeError> {
    let count = bytes
        .get(..4)
        .map(be_u32)
        .ok_or_else(|| DecodeError::new(0, "index without a count"))? as usize;
    // Each entry takes at least 13 bytes: bound the allocation by the bytes present.
    if count > bytes.len() / 13 {
        return Err(DecodeError::new(
            0,
            format!("index claims {count} blocks in {} bytes", bytes.len()),
        ));
    }
    let mut out = Vec::with_capacity(count);
    let mut at = 4;
    for i in 0..count {
        let entry_at = at;
        let bad = |what: &str| DecodeError::new(entry_at, format!("index entry {i}: {what}"));
        let key_len = get_varint(bytes, &mut at).ok_or_else(|| bad("bad key length"))? as usize;
        let rest = at
            .checked_add(key_len)
            .and_then(|key_end| key_end.checked_add(12))
            .and_then(|end| bytes.get(at..end))
            .ok_or_else(|| bad("truncated"))?;
        let key_end = at + key_len;
        let key: Box<[u8]> = rest[..key_len].into();
        let offset = be_u64(&rest[key_len..key_len + 8]);
        let len = be_u32(&rest[key_len + 8..]);
        if offset.saturating_add(u64::from(len) + 4) > limit {
            return Err(bad("points past the data"));
        }
        if out.last().is_some_and(|p: &IndexEntry| *p.last_key >= *key) {
            return Err(bad("out of order"));
        }
        out.push(IndexEntry {
            last_key: key,
            offset,
            len,
        });
        at = key_end + 12;
    }
    if at != bytes.len() {
        return Err(DecodeError::new(at, "trailing bytes after the index"));
    }
    Ok(out)
}

/// An owning iterator over a table's entries from a start key on.
pub struct TableIter {
    table: Arc<Table>,
    next_block: usize,
    cursor: Option<BlockCursor>,
    /// File offset of the cursor's block, for errors.
    cursor_offset: u64,
    start: Vec<u8>,
}

impl TableIter {
    /// Entries of `table` with keys `>= start`.
    pub fn new(table: Arc<Table>, start: &[u8]) -> Self {
        let next_block = table.block_for(start);
        TableIter {
            table,
            next_block,
            cursor: None,
            cursor_offset: 0,
            start: start.to_vec(),
        }
    }
}

impl Iterator for TableIter {
    type Item = OrbitResult<(Vec<u8>, Option<Vec<u8>>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(cursor) = &mut self.cursor {
                match cursor.next_entry() {
                    Ok(Some(e)) => return Some(Ok(e)),
                    Ok(None) => self.cursor = None,
                    Err(e) => {
                        self.cursor = None;
                        self.next_block = self.table.index.len();
                        let at = self.cursor_offset;
                        return Some(Err(e.into_corruption(&self.table.path, at)));
                    }
                }
            }
            if self.next_block >= self.table.index.len() {
                return None;
            }
            let i = self.next_block;
            self.next_block += 1;
            let offset = self.table.index[i].offset;
            self.cursor_offset = offset;
            let opened = self.table.data_block(i).and_then(|block| {
                BlockCursor::seek(block, &std::mem::take(&mut self.start))
                    .map_err(|e| e.into_corruption(&self.table.path, offset))
            });
            match opened {
                Ok(c) => self.cursor = Some(c),
                Err(e) => {
                    self.next_block = self.table.index.len();
                    return Some(Err(e));
                }
            }
        }
    }
}
