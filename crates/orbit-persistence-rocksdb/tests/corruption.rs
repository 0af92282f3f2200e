//! Bad bytes in any of RocksDB's files (RELIABILITY.md row E), through the suite's harness:
//! every file of a crash image (WAL, tables, MANIFEST, CURRENT, OPTIONS), flipped at many
//! offsets and cut short, must give `Corruption` naming the file, or the acknowledged data.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_conformance::corruption;
use orbit_persistence_core::{AddressableDirectoryProvider, Clock, OrbitResult, RocksDbConfig};
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

#[test]
fn every_file_damaged_anywhere_is_corruption_or_correct_data() {
    let reports = corruption::every_file(open, 24);
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
