//! Sorted string tables: immutable files of sorted keys, each a run of the LSM tree.
//!
//! # File format
//!
//! ```text
//! offset 0   header   8 bytes magic "ORBITSST", u32 BE format version (1)
//!            block*   data blocks, then the bloom block, then the index block
//! end - 56   footer   (56 bytes, all integers big-endian)
//!                     u64 index offset, u32 index length,
//!                     u64 bloom offset, u32 bloom length,
//!                     u64 entries, u64 tombstones,
//!                     8 bytes magic "ORBITSST", u32 format version,
//!                     u32 CRC32 of the 52 footer bytes before it
//!
//! block      payload, then u32 LE CRC32 of the payload (a handle's length excludes the CRC)
//! data       see crate::block (prefix-compressed entries, restart points)
//! bloom      the `bloomfilter` crate's serialized filter over every key of the table
//! index      u32 BE n, then n x (varint key length, the last key of the block,
//!            u64 BE block offset, u32 BE block length)
//! ```
//!
//! A table is written once by [`TableBuilder`] (flush or compaction), synced, its directory
//! synced, and only then named in the manifest; it is never modified. [`Table::open`] reads the
//! footer, the index and the bloom filter into memory and checks every checksum it reads; data
//! blocks are checked when read (and then kept, verified, in the block cache). Any mismatch is
//! `Corruption` naming the file and the block's offset.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bloomfilter::Bloom;
use orbit_persistence_core::fs::{FileSystem, FsFile, OpenMode};
use orbit_persistence_core::{OrbitError, OrbitResult};

use crate::block::{Block, BlockBuilder, BlockCursor, Slot};
use crate::cache::BlockCache;
use crate::coding::{get_varint, put_varint};
use crate::value::Lookup;

/// Magic at both ends of a table file.
pub const MAGIC: &[u8; 8] = b"ORBITSST";
/// Format version of table files.
pub const VERSION: u32 = 1;
const HEADER_LEN: u64 = 12;
const FOOTER_LEN: usize = 56;
/// Fixed seed of the bloom filters' hash functions, so a filter means the same in every process.
const BLOOM_SEED: [u8; 32] = *b"orbit-persistence-lsm-bloom-seed";

/// Path of table `id` in `dir`.
pub fn table_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.sst"))
}

/// The table id of a file name, if it is a table's.
pub fn parse_table_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".sst")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Writes one table file.
pub struct TableBuilder {
    file: Box<dyn FsFile>,
    path: PathBuf,
    block_size: usize,
    block: BlockBuilder,
    offset: u64,
    index: Vec<(Vec<u8>, u64, u32)>,
    /// Hashes of every key, for the bloom filter sized at the end.
    keys: Vec<Vec<u8>>,
    fp_rate: f64,
    entries: u64,
    tombstones: u64,
    first_key: Option<Vec<u8>>,
    /// Bytes written so far (for rate limiting and size-based splits).
    pub written: u64,
}

/// A finished table's facts, as the manifest records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Bytes of the file.
    pub file_size: u64,
    /// Entries, tombstones included.
    pub entries: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Smallest key.
    pub smallest: Vec<u8>,
    /// Largest key.
    pub largest: Vec<u8>,
}

impl TableBuilder {
    /// Creates the file at `path` (which must not exist).
    pub fn create(
        fs: &dyn FileSystem,
        path: &Path,
        block_size: usize,
        fp_rate: f64,
    ) -> OrbitResult<Self> {
        let file = fs.open(path, OpenMode::CreateNew)?;
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&VERSION.to_be_bytes());
        file.write_at(&header, 0)?;
        Ok(TableBuilder {
            file,
            path: path.to_path_buf(),
            block_size,
            block: BlockBuilder::default(),
            offset: HEADER_LEN,
            index: Vec::new(),
            keys: Vec::new(),
            fp_rate,
            entries: 0,
            tombstones: 0,
            first_key: None,
            written: HEADER_LEN,
        })
    }

    /// Appends an entry (`None` = tombstone); keys in strictly increasing order.
    pub fn add(&mut self, key: &[u8], value: Option<&[u8]>) -> OrbitResult<()> {
        if self.first_key.is_none() {
            self.first_key = Some(key.to_vec());
        }
        self.block.add(key, value);
        self.keys.push(key.to_vec());
        self.entries += 1;
        self.tombstones += u64::from(value.is_none());
        if self.block.size() >= self.block_size {
            self.finish_block()?;
        }
        Ok(())
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Bytes the file would have if finished now (roughly).
    pub fn estimated_size(&self) -> u64 {
        self.offset + self.block.size() as u64
    }

    fn write_block(&mut self, payload: &[u8]) -> OrbitResult<(u64, u32)> {
        let at = self.offset;
        let mut bytes = Vec::with_capacity(payload.len() + 4);
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.file.write_at(&bytes, at)?;
        self.offset += bytes.len() as u64;
        self.written += bytes.len() as u64;
        Ok((at, payload.len() as u32))
    }

    fn finish_block(&mut self) -> OrbitResult<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let last = self.block.last_key().to_vec();
        let payload = self.block.finish();
        let (at, len) = self.write_block(&payload)?;
        self.index.push((last, at, len));
        Ok(())
    }

    /// Writes the bloom filter, the index and the footer, and syncs the file. The caller syncs
    /// the directory before naming the table anywhere.
    pub fn finish(mut self) -> OrbitResult<TableInfo> {
        self.finish_block()?;
        let mut bloom: Bloom<[u8]> =
            Bloom::new_for_fp_rate_with_seed(self.keys.len().max(1), self.fp_rate, &BLOOM_SEED)
                .map_err(|e| crate::internal(format!("bloom filter: {e}")))?;
        for k in &self.keys {
            bloom.set(k);
        }
        let (bloom_at, bloom_len) = self.write_block(&bloom.to_bytes())?;
        let mut index = (self.index.len() as u32).to_be_bytes().to_vec();
        for (key, at, len) in &self.index {
            put_varint(&mut index, key.len() as u64);
            index.extend_from_slice(key);
            index.extend_from_slice(&at.to_be_bytes());
            index.extend_from_slice(&len.to_be_bytes());
        }
        let (index_at, index_len) = self.write_block(&index)?;
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(&index_at.to_be_bytes());
        footer.extend_from_slice(&index_len.to_be_bytes());
        footer.extend_from_slice(&bloom_at.to_be_bytes());
        footer.extend_from_slice(&bloom_len.to_be_bytes());
        footer.extend_from_slice(&self.entries.to_be_bytes());
        footer.extend_from_slice(&self.tombstones.to_be_bytes());
        footer.extend_from_slice(MAGIC);
        footer.extend_from_slice(&VERSION.to_be_bytes());
        footer.extend_from_slice(&crc32fast::hash(&footer).to_be_bytes());
        self.file.write_at(&footer, self.offset)?;
        self.offset += FOOTER_LEN as u64;
        self.file.sync_data()?;
        let largest = self.index.last().map(|(k, ..)| k.clone());
        let (Some(smallest), Some(largest)) = (self.first_key.take(), largest) else {
            return Err(crate::internal(format!(
                "empty table {} finished",
                self.path.display()
            )));
        };
        Ok(TableInfo {
            file_size: self.offset,
            entries: self.entries,
            tombstones: self.tombstones,
            smallest,
            largest,
        })
    }
}

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

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap_or_default())
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap_or_default())
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
                .map_err(|e| crate::internal(format!("bloom filter: {e}")))?,
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
        table.index = parse_index(&index, footer_at).map_err(|e| corrupt(index_at, e))?;
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
        let block = Arc::new(
            Block::new(bytes).map_err(|e| OrbitError::corruption(&self.path, entry.offset, e))?,
        );
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
            let corrupt = |what: String| OrbitError::corruption(&self.path, entry.offset, what);
            let checked = self
                .read_block(entry.offset, entry.len, u64::MAX)
                .and_then(|bytes| Block::new(bytes).map_err(corrupt))
                .and_then(|block| {
                    let mut cursor = BlockCursor::seek(Arc::new(block), &[]).map_err(corrupt)?;
                    while let Some((key, _)) = cursor.next_entry().map_err(corrupt)? {
                        if previous.as_ref().is_some_and(|p| *p >= key) || *key > *entry.last_key {
                            return Err(corrupt("keys out of order".into()));
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
                .map_err(|e| OrbitError::corruption(&self.path, offset, e))?
            {
                None => Lookup::Absent,
                Some(Slot::Tombstone) => Lookup::Deleted,
                Some(slot) => Lookup::Value(block.value(slot).unwrap_or_default().to_vec()),
            },
        )
    }
}

fn parse_index(bytes: &[u8], limit: u64) -> Result<Vec<IndexEntry>, String> {
    let count = bytes.get(..4).map(be_u32).ok_or("index without a count")? as usize;
    // Each entry takes at least 13 bytes: bound the allocation by the bytes present.
    if count > bytes.len() / 13 {
        return Err(format!(
            "index claims {count} blocks in {} bytes",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(count);
    let mut at = 4;
    for i in 0..count {
        let key_len = get_varint(bytes, &mut at).ok_or("bad key length in the index")? as usize;
        let key_end = at.checked_add(key_len).ok_or("index key too long")?;
        let rest = bytes
            .get(at..key_end.checked_add(12).ok_or("index key too long")?)
            .ok_or_else(|| format!("index entry {i} truncated"))?;
        let key: Box<[u8]> = rest[..key_len].into();
        let offset = be_u64(&rest[key_len..key_len + 8]);
        let len = be_u32(&rest[key_len + 8..]);
        if offset.saturating_add(u64::from(len) + 4) > limit {
            return Err(format!("index entry {i} points past the data"));
        }
        if out.last().is_some_and(|p: &IndexEntry| *p.last_key >= *key) {
            return Err(format!("index entry {i} is out of order"));
        }
        out.push(IndexEntry {
            last_key: key,
            offset,
            len,
        });
        at = key_end + 12;
    }
    if at != bytes.len() {
        return Err("trailing bytes after the index".into());
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
                        return Some(Err(OrbitError::corruption(&self.table.path, at, e)));
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
                    .map_err(|e| OrbitError::corruption(&self.table.path, offset, e))
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
