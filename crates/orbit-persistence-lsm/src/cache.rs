//! The block cache: verified, decoded data blocks shared by every table, bounded in bytes
//! (`lsm_tree.block_cache_size`; 0 turns it off). A hit skips the read and the checksum.
//! Built on `quick_cache` (the cache fjall uses): sharded, with CLOCK-PRO-style eviction that
//! keeps a scan (compaction, cleanup) from flushing the hot blocks of point reads.

use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::sstable::block::Block;

/// (table id, block offset).
pub type BlockKey = (u64, u64);

#[derive(Debug, Clone)]
struct BlockBytes;

impl Weighter<BlockKey, Arc<Block>> for BlockBytes {
    fn weight(&self, _key: &BlockKey, block: &Arc<Block>) -> u64 {
        // The bytes plus the entry's own overhead.
        block.len() as u64 + 64
    }
}

/// Blocks by table and offset, at most `capacity` bytes.
pub struct BlockCache {
    cache: Cache<BlockKey, Arc<Block>, BlockBytes>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("bytes", &self.cache.weight())
            .finish()
    }
}

impl BlockCache {
    /// A cache of at most `capacity` bytes, sized for blocks of about `block_size`.
    pub fn new(capacity: u64, block_size: usize) -> Self {
        let items = (capacity / (block_size as u64 + 64)).max(16) as usize;
        BlockCache {
            cache: Cache::with_weighter(items, capacity, BlockBytes),
        }
    }

    /// The cached block, if any.
    pub fn get(&self, key: &BlockKey) -> Option<Arc<Block>> {
        self.cache.get(key)
    }

    /// Caches a block.
    pub fn insert(&self, key: BlockKey, block: Arc<Block>) {
        self.cache.insert(key, block);
    }

    /// Bytes cached now.
    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }
}
