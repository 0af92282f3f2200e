//! The RocksDB backend against the whole conformance suite, durable cases and kill -9 included.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_conformance::{
    Backend, Capabilities, conformance_suite, watch_history_cases,
};
use orbit_persistence_core::{AddressableDirectoryProvider, Clock, OrbitResult, RocksDbConfig};
use orbit_persistence_rocksdb::RocksDbDirectory;

fn open(clock: Arc<dyn Clock>, dir: &Path) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    // Small buffers: the suite opens many stores at once.
    let config = RocksDbConfig {
        data_dir: dir.to_path_buf(),
        block_cache_size: 8 << 20,
        write_buffer_size: 4 << 20,
        ..RocksDbConfig::default()
    };
    Ok(Arc::new(RocksDbDirectory::open(&config, clock)?))
}

const ROCKSDB: Backend = Backend {
    name: "rocksdb",
    open,
    capabilities: Capabilities {
        durable: true,
        exclusive: true,
    },
};

conformance_suite!(ROCKSDB, durable = true);

/// The store with a change history of `watch_history` changes, for the feed's cases that need
/// a small one or none.
fn open_with_history(
    clock: Arc<dyn Clock>,
    dir: &Path,
    watch_history: u64,
) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    let config = RocksDbConfig {
        data_dir: dir.to_path_buf(),
        block_cache_size: 8 << 20,
        write_buffer_size: 4 << 20,
        watch_history,
        ..RocksDbConfig::default()
    };
    Ok(Arc::new(RocksDbDirectory::open(&config, clock)?))
}

watch_history_cases!(
    name = "rocksdb",
    capabilities = ROCKSDB.capabilities,
    history = 200,
    open_with = open_with_history
);
