//! The COW B+tree backend against the whole conformance suite, durable cases and kill -9
//! included: once with the default settings, once with tiny pages and a tiny WAL limit, so the
//! cases also run across page splits, merges, overflow pages and many checkpoints.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_conformance::{
    Backend, Capabilities, conformance_suite, watch_history_cases,
};
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

/// The store with a change history of `watch_history` changes, for the feed's cases that need
/// a small one or none.
fn open_with_history(
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

watch_history_cases!(
    name = "cowbtree",
    capabilities = Capabilities {
        durable: true,
        exclusive: true,
    },
    history = 200,
    open_with = open_with_history
);
