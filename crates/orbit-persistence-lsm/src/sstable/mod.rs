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
//! data       see [`block`] (prefix-compressed entries, restart points)
//! bloom      the `bloomfilter` crate's serialized filter over every key of the table
//! index      u32 BE n, then n x (varint key length, the last key of the block,
//!            u64 BE block offset, u32 BE block length)
//! ```
//!
//! A table is written once by [`TableBuilder`] (flush or compaction), synced, its directory
//! synced, and only then named in the manifest; it is never modified. [`Table::open`] reads the
//! footer, the index and the bloom filter into memory and checks every checksum it reads; data
//! blocks are checked when read (and then kept, verified, in the block cache). Any mismatch is
//!
//! [`block`] is the data block, [`builder`] writes a table, [`table`] reads one.

pub mod block;
pub mod builder;
pub mod table;

use std::path::{Path, PathBuf};

pub use builder::{TableBuilder, TableInfo};
pub use table::{Table, TableIter};

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

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap_or_default())
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap_or_default())
}
