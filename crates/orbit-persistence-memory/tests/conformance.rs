//! The memory backend against the whole conformance suite (minus the durable cases).

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_conformance::{Backend, Capabilities, conformance_suite};
use orbit_persistence_core::{AddressableDirectoryProvider, Clock, MemoryConfig, OrbitResult};
use orbit_persistence_memory::MemoryDirectory;

fn open(clock: Arc<dyn Clock>, _dir: &Path) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    Ok(Arc::new(MemoryDirectory::new(
        &MemoryConfig::default(),
        clock,
    )?))
}

const MEMORY: Backend = Backend {
    name: "memory",
    open,
    capabilities: Capabilities {
        durable: false,
        exclusive: false,
    },
};

conformance_suite!(MEMORY, durable = false);

/// Backends with a small change history and with none, for the cases that need them.
mod feed_config {
    use super::*;
    use orbit_persistence_conformance::watch_history_cases;

    const HISTORY: u64 = 200;

    fn open_with(
        clock: Arc<dyn Clock>,
        _dir: &Path,
        watch_history: u64,
    ) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
        let config = MemoryConfig {
            watch_history,
            ..MemoryConfig::default()
        };
        Ok(Arc::new(MemoryDirectory::new(&config, clock)?))
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
        durable: false,
        exclusive: false,
    };

    watch_history_cases!(
        small = Backend {
            name: "memory-small-history",
            open: open_small,
            capabilities: CAPABILITIES,
        },
        history = HISTORY,
        off = Backend {
            name: "memory-no-history",
            open: open_off,
            capabilities: CAPABILITIES,
        }
    );
}
