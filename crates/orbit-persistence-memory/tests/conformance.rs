//! The memory backend against the whole conformance suite (minus the durable cases).

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_conformance::{
    Backend, Capabilities, conformance_suite, watch_history_cases,
};
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

/// The store with a change history of `watch_history` changes, for the feed's cases that need
/// a small one or none.
fn open_with_history(
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

watch_history_cases!(
    name = "memory",
    capabilities = MEMORY.capabilities,
    history = 200,
    open_with = open_with_history
);
