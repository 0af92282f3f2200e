//! RocksDB options tuned for the lease workload, and the layout of the database.
//!
//! # Layout
//!
//! | column family | key                                  | value            |
//! |---------------|--------------------------------------|------------------|
//! | `leases`      | encoded reference                    | encoded lease    |
//! | `by_node`     | encoded node ++ encoded reference    | empty            |
//! | `by_expiry`   | `expires_at` u64 BE ++ encoded ref   | empty            |
//! | `leases`      | `0x00 revision`, `0x00 lease_count`  | u64 BE counters  |
//!
//! Encodings are core's ([`orbit_persistence_core::encoding`]). The two counter keys start with
//! `0x00`, which no encoded reference does (they start with the format version, 1), and are only
//! ever *merged*: `revision` with max, `lease_count` with addition, so concurrent batches can
//! update them without reading and the values are exact after any crash (they commit atomically
//! with the batch that changed them). They live in `leases` rather than a column family of their
//! own because a family written in every batch but rarely flushed would pin every WAL file until
//! `max_total_wal_size` forces a flush: four times the WAL to keep and to replay at open.
//!
//! # Tuning (small values, point reads, prefix scans)
//!
//! - One shared LRU block cache (`block_cache_size`, default 256 MiB: the lease family of a
//!   million leases fits, so point reads stay in memory), index and filter blocks cached in it and
//!   pinned for level 0, so memory stays bounded as data grows.
//! - Bloom filters (`bloom_bits_per_key`, default 10: ~1% false positives) on whole keys for the
//!   `leases` family: a `get_lease` of an absent actor rarely touches disk.
//! - 4 KiB data blocks (leases are ~150 bytes), `compression` (default lz4: cheap to decode).
//! - Dynamic level sizing, `max_background_jobs` threads for flush and compaction.
//! - Index families get the same table options; their scans are bounded by `iterate_upper_bound`.

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode,
    MergeOperands, Options,
};

use orbit_persistence_core::RocksDbConfig;

/// The lease table.
pub const CF_LEASES: &str = "leases";
/// node -> reference index.
pub const CF_BY_NODE: &str = "by_node";
/// expires_at -> reference index.
pub const CF_BY_EXPIRY: &str = "by_expiry";
/// Column family of the change history: revision (u64 BE) -> the event (core's `feed` history
/// value), the last `watch_history` of them.
pub const CF_HISTORY: &str = "history";
/// Key of the highest revision assigned (in `leases`).
pub const KEY_REVISION: &[u8] = b"\x00revision";
/// Key of the revision a restore raised the counter to (in `leases`; absent: 0). The history
/// holds no event up to it, so a watch from before it is `Compacted`. Written with a plain put,
/// never merged.
pub const KEY_HISTORY_FLOOR: &[u8] = b"\x00history_floor";
/// Key of the exact number of leases (in `leases`).
pub const KEY_LEASE_COUNT: &[u8] = b"\x00lease_count";

fn u64_of(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Merges `revision` by max and `lease_count` by (signed) addition.
fn merge_counters(
    key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut value = existing.map(u64_of).unwrap_or(0);
    for op in operands {
        let op = u64_of(op);
        value = if key == KEY_REVISION {
            value.max(op)
        } else {
            // lease_count operands are i64 deltas in two's complement.
            value.wrapping_add(op)
        };
    }
    Some(value.to_be_bytes().to_vec())
}

fn table_options(config: &RocksDbConfig, cache: &Cache) -> BlockBasedOptions {
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    t.set_block_size(4096);
    t.set_cache_index_and_filter_blocks(true);
    t.set_pin_l0_filter_and_index_blocks_in_cache(true);
    if config.bloom_bits_per_key > 0 {
        t.set_bloom_filter(f64::from(config.bloom_bits_per_key), false);
        t.set_whole_key_filtering(true);
    }
    t.set_format_version(5);
    t
}

fn compression(config: &RocksDbConfig) -> DBCompressionType {
    match config.compression.as_str() {
        "lz4" => DBCompressionType::Lz4,
        "zstd" => DBCompressionType::Zstd,
        _ => DBCompressionType::None,
    }
}

/// Options of the database and of each column family, from a validated config.
pub fn build(config: &RocksDbConfig) -> (Options, Vec<ColumnFamilyDescriptor>) {
    let cache = Cache::new_lru_cache(config.block_cache_size as usize);
    let cf_options = || {
        let mut o = Options::default();
        o.set_block_based_table_factory(&table_options(config, &cache));
        o.set_write_buffer_size(config.write_buffer_size as usize);
        o.set_compression_type(compression(config));
        o.set_level_compaction_dynamic_level_bytes(true);
        o
    };
    let mut db = cf_options();
    db.create_if_missing(true);
    db.create_missing_column_families(true);
    db.set_max_background_jobs(config.max_background_jobs as i32);
    db.set_keep_log_file_num(4);
    // RocksDB's default (point-in-time recovery) stops replaying a WAL at its first bad record
    // and opens as if the rest had never been written: a flipped byte in the middle of the WAL
    // silently drops every acknowledged write after it. Only a torn tail may be cut; anything
    // else is corruption the operator must see (docs/reliability.md row E found this).
    db.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
    // Checks every block read during open and compaction as well as reads.
    db.set_paranoid_checks(true);
    // Records every WAL in the MANIFEST, so that recovery refuses to open when a WAL it needs
    // is missing (an operator deleting "logs") instead of opening without its writes.
    db.set_track_and_verify_wals_in_manifest(true);
    let cfs = [CF_LEASES, CF_BY_NODE, CF_BY_EXPIRY, CF_HISTORY]
        .into_iter()
        .map(|name| {
            let mut o = cf_options();
            if name == CF_LEASES {
                o.set_merge_operator_associative("orbit_counters", merge_counters);
            }
            ColumnFamilyDescriptor::new(name, o)
        })
        .collect();
    (db, cfs)
}
