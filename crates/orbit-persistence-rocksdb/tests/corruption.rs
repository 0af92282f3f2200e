//! Bad bytes in any of RocksDB's files (docs/reliability.md row E), through the suite's harness:
//! every file of a crash image (WAL, tables, MANIFEST, CURRENT, OPTIONS), flipped at many
//! offsets and cut short, must give `Corruption` naming the file, or the acknowledged data.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_conformance::corruption::{self, Damage, copy_dir};
use orbit_persistence_conformance::fixtures::{T0, TTL_MS, lease_at, node, reference};
use orbit_persistence_core::{
    AddressableDirectoryProvider, Clock, ManualClock, OrbitError, OrbitResult, RocksDbConfig,
};
use orbit_persistence_rocksdb::RocksDbDirectory;

fn open(clock: Arc<dyn Clock>, dir: &Path) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    let config = RocksDbConfig {
        data_dir: dir.to_path_buf(),
        block_cache_size: 1 << 20,
        write_buffer_size: 1 << 20,
        ..RocksDbConfig::default()
    };
    Ok(Arc::new(RocksDbDirectory::open(&config, clock)?))
}

/// RocksDB's one known gap in naming a damaged file: it parses a table's properties block
/// *before* checking the block's checksum (`ReadTablePropertiesHelper`, so that ingested files
/// with a rewritten sequence number still load), and the parse error ("properties unsorted")
/// names no table; recovery then appends "The file MANIFEST-n may be corrupted" to it. Such an
/// open still fails with `Corruption` and serves nothing; it is counted as misnamed.
fn rocksdb_blames_the_manifest_for_a_table(damaged: &Path, error: &OrbitError) -> bool {
    let OrbitError::Corruption { path, detail, .. } = error else {
        return false;
    };
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    damaged.extension().is_some_and(|x| x == "sst")
        && named.starts_with("MANIFEST-")
        && detail.contains("may be corrupted")
}

/// RocksDB's known gap with lost files: its live WAL. The MANIFEST tracks a WAL only once it
/// is synced and closed (`track_and_verify_wals_in_manifest`, which this backend enables), and
/// nothing names the WAL being written, so deleting or emptying it opens the database as of its
/// last flush: an acknowledged state, but not the last one (before the first flush, an empty
/// store). Our engines create each WAL segment before anything names it and seal it before
/// the next is used, and see this (`docs/operating.md`).
fn rocksdb_cannot_see_its_live_wal_go(damaged: &Path, damage: Damage) -> bool {
    damaged.extension().is_some_and(|x| x == "log")
        && matches!(damage, Damage::Delete | Damage::Cut(0))
}

#[test]
fn every_file_damaged_anywhere_is_corruption_or_correct_data() {
    let allow = corruption::Allowances {
        misnamed: rocksdb_blames_the_manifest_for_a_table,
        // RocksDB cuts a torn WAL tail in its own recovery, which tells us nothing.
        unreported_repairs: true,
        undetected_loss: rocksdb_cannot_see_its_live_wal_go,
    };
    let reports = corruption::every_file_allowing(open, 24, allow);
    for r in &reports {
        eprintln!("{r:?}");
    }
    let caught = |part: &str| {
        reports
            .iter()
            .filter(|r| r.file.to_string_lossy().contains(part))
            .map(|r| r.corruption)
            .sum::<usize>()
    };
    for part in [".sst", ".log", "MANIFEST"] {
        assert!(caught(part) > 0, "no damage to a {part} file was caught");
    }
}

/// CI found it (row E): RocksDB reads a WAL whose first record's type byte had one bit flipped
/// (full, 1, to recycled full, 5) as a recycled log's leftover, that is as an empty log, and
/// opened without any write in it. The WAL check before RocksDB's open makes it `Corruption`.
#[test]
fn a_recycled_record_type_at_the_start_of_the_wal_is_corruption_not_an_empty_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (live, image) = (tmp.path().join("live"), tmp.path().join("image"));
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(clock.clone(), &live).unwrap();
        for i in 0..50 {
            let lease = lease_at(reference(i), node(i % 3), T0, TTL_MS);
            store.store_lease(&lease).await.unwrap();
        }
        copy_dir(&live, &image); // a crash image: every write is in the WAL only
        store.shutdown().await.unwrap();
    });
    let wal = std::fs::read_dir(image.join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log") && p.metadata().unwrap().len() > 0)
        .expect("the image has a WAL holding the writes");
    let mut bytes = std::fs::read(&wal).unwrap();
    assert_eq!(bytes[6], 1, "the first record is a full record");
    bytes[6] ^= 4;
    std::fs::write(&wal, bytes).unwrap();
    match open(clock, &image) {
        Err(OrbitError::Corruption { path, offset, .. }) => {
            assert_eq!((path, offset), (wal, 0));
        }
        Err(e) => panic!("expected Corruption of the WAL, got {e:?}"),
        Ok(store) => {
            let found = runtime.block_on(store.get_lease(&reference(0))).unwrap();
            panic!("opened the damaged image; the first lease reads {found:?}");
        }
    }
}
