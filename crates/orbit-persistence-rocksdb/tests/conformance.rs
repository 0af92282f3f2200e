//! The RocksDB backend against the whole conformance suite, durable cases and kill -9 included.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_conformance::{Backend, Capabilities, conformance_suite};
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
