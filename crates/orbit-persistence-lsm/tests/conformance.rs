//! The LSM backend against the whole conformance suite, durable cases and kill -9 included:
//! once with the default settings, once with tiny memtables, blocks and levels, so the cases
//! also run across many flushes, compactions and tables.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_conformance::{Backend, Capabilities, conformance_suite};
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
        let config = LsmTreeConfig {
            data_dir: dir.to_path_buf(),
            watch_history,
            ..LsmTreeConfig::default()
        };
        Ok(Arc::new(LsmDirectory::open(&config, clock)?))
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
            name: "lsm-small-history",
            open: open_small,
            capabilities: CAPABILITIES,
        },
        history = HISTORY,
        off = Backend {
            name: "lsm-no-history",
            open: open_off,
            capabilities: CAPABILITIES,
        }
    );
}
