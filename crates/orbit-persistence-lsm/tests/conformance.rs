//! The LSM backend against the whole conformance suite, durable cases and kill -9 included:
//! once with the default settings, once with tiny memtables, blocks and levels, so the cases
//! also run across many flushes, compactions and tables.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_conformance::{
    Backend, Capabilities, conformance_suite, watch_history_cases,
};
use orbit_persistence_core::{AddressableDirectoryProvider, Clock, LsmTreeConfig, OrbitResult};
use orbit_persistence_lsm::LsmDirectory;

mod defaults {
    use super::*;

    fn open(
        clock: Arc<dyn Clock>,
        dir: &Path,
    ) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
        let config = LsmTreeConfig {
            data_dir: dir.to_path_buf(),
            ..LsmTreeConfig::default()
        };
        Ok(Arc::new(LsmDirectory::open(&config, clock)?))
    }

    const LSM: Backend = Backend {
        name: "lsm",
        open,
        capabilities: Capabilities {
            durable: true,
            exclusive: true,
        },
    };

    conformance_suite!(LSM, durable = true);
}

mod small_tables {
    use super::*;

    fn open(
        clock: Arc<dyn Clock>,
        dir: &Path,
    ) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
        let config = LsmTreeConfig {
            data_dir: dir.to_path_buf(),
            memtable_size: 4 << 10,
            max_immutable_memtables: 1,
            block_size: 512,
            level1_size: 16 << 10,
            level_fanout: 2,
            block_cache_size: 0,
            ..LsmTreeConfig::default()
        };
        Ok(Arc::new(LsmDirectory::open(&config, clock)?))
    }

    const LSM_SMALL: Backend = Backend {
        name: "lsm-small-tables",
        open,
        capabilities: Capabilities {
            durable: true,
            exclusive: true,
        },
    };

    conformance_suite!(LSM_SMALL, durable = true);
}

/// The store with a change history of `watch_history` changes, for the feed's cases that need
/// a small one or none.
fn open_with_history(
    clock: Arc<dyn Clock>,
    dir: &Path,
    watch_history: u64,
) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    let config = LsmTreeConfig {
        data_dir: dir.to_path_buf(),
        watch_history,
        ..LsmTreeConfig::default()
    };
    Ok(Arc::new(LsmDirectory::open(&config, clock)?))
}

watch_history_cases!(
    name = "lsm",
    capabilities = Capabilities {
        durable: true,
        exclusive: true,
    },
    history = 200,
    open_with = open_with_history
);
