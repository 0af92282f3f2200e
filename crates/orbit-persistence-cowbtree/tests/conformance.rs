//! The COW B+tree backend against the whole conformance suite, durable cases and kill -9
//! included: once with the default settings, once with tiny pages and a tiny WAL limit, so the
//! cases also run across page splits, merges, overflow pages and many checkpoints.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_conformance::{Backend, Capabilities, conformance_suite};
use orbit_persistence_core::{AddressableDirectoryProvider, Clock, CowBTreeConfig, OrbitResult};
use orbit_persistence_cowbtree::CowBTreeDirectory;

mod defaults {
    use super::*;

    fn open(
        clock: Arc<dyn Clock>,
        dir: &Path,
    ) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
        let config = CowBTreeConfig {
            data_dir: dir.to_path_buf(),
            ..CowBTreeConfig::default()
        };
        Ok(Arc::new(CowBTreeDirectory::open(&config, clock)?))
    }

    const COWBTREE: Backend = Backend {
        name: "cowbtree",
        open,
        capabilities: Capabilities {
            durable: true,
            exclusive: true,
        },
    };

    conformance_suite!(COWBTREE, durable = true);
}

mod small_pages {
    use super::*;

    fn open(
        clock: Arc<dyn Clock>,
        dir: &Path,
    ) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
        let config = CowBTreeConfig {
            data_dir: dir.to_path_buf(),
            page_size: 1024,
            wal_size_limit: 64 << 10,
            cache_size: 64 << 10,
            ..CowBTreeConfig::default()
        };
        Ok(Arc::new(CowBTreeDirectory::open(&config, clock)?))
    }

    const COWBTREE_SMALL: Backend = Backend {
        name: "cowbtree-small-pages",
        open,
        capabilities: Capabilities {
            durable: true,
            exclusive: true,
        },
    };

    conformance_suite!(COWBTREE_SMALL, durable = true);
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
        let config = CowBTreeConfig {
            data_dir: dir.to_path_buf(),
            watch_history,
            ..CowBTreeConfig::default()
        };
        Ok(Arc::new(CowBTreeDirectory::open(&config, clock)?))
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
            name: "cowbtree-small-history",
            open: open_small,
            capabilities: CAPABILITIES,
        },
        history = HISTORY,
        off = Backend {
            name: "cowbtree-no-history",
            open: open_off,
            capabilities: CAPABILITIES,
        }
    );
}
