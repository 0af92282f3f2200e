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

/// Backends with a small change history and with none, for the cases that need them.
mod feed_config {
    use super::*;
    use orbit_persistence_conformance::watch_history_cases;

    const HISTORY: u64 = 200;

    fn open_with(
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

    fn open_small(
        clock: Arc<dyn Clock>,
        dir: &Path,
    ) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
        open_with(clock, dir, HISTORY)
    }

    fn open_off(
        clock: Arc<dyn Clock>,
        dir: &Path,
    ) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
        open_with(clock, dir, 0)
    }

    const CAPABILITIES: Capabilities = Capabilities {
        durable: true,
        exclusive: true,
    };

    watch_history_cases!(
        small = Backend {
            name: "rocksdb-small-history",
            open: open_small,
            capabilities: CAPABILITIES,
        },
        history = HISTORY,
        off = Backend {
            name: "rocksdb-no-history",
            open: open_off,
            capabilities: CAPABILITIES,
        }
    );
}
