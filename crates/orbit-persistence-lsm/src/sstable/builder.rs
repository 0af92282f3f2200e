//! Writes one table file in the format of [`super`]: data blocks as keys arrive, then the bloom
//! filter, the index and the footer, then one sync.

use std::path::{Path, PathBuf};

use bloomfilter::Bloom;
use orbit_persistence_core::fs::{FileSystem, FsFile, OpenMode};
use orbit_persistence_core::{OrbitError, OrbitResult};

use super::block::BlockBuilder;
use super::{BLOOM_SEED, FOOTER_LEN, HEADER_LEN, MAGIC, VERSION};
use crate::coding::put_varint;

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
                .map_err(|e| OrbitError::internal("lsm", format!("bloom filter: {e}")))?;
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
            return Err(OrbitError::internal(
                "lsm",
                format!("empty table {} finished", self.path.display()),
            ));
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
