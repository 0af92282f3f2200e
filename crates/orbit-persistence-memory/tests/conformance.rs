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
