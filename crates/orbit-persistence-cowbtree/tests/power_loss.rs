//! Power-loss simulation and I/O errors (docs/reliability.md rows B, C and D) of the COW B+tree, with the suite's
//! harness (`orbit_persistence_conformance::power_loss`): 1 KiB pages and a 64 KiB WAL, and in
//! busy runs a checkpoint after every batch, so crashes land inside checkpoints.

use std::sync::Arc;

use orbit_persistence_conformance::power_loss::DIR;
use orbit_persistence_core::fs::FaultFs;
use orbit_persistence_core::{
    AddressableDirectoryProvider, Clock, CowBTreeConfig, OrbitResult, SyncMode,
};
use orbit_persistence_cowbtree::CowBTreeDirectory;

fn open(
    fs: &FaultFs,
    busy: bool,
    clock: Arc<dyn Clock>,
) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    let config = CowBTreeConfig {
        data_dir: DIR.into(),
        sync: SyncMode::Always,
        page_size: 1024,
        checkpoint_interval_ms: if busy { 1 } else { 60_000 },
        wal_size_limit: 64 << 10,
        cache_size: 64 << 10,
        ..CowBTreeConfig::default()
    };
    Ok(Arc::new(CowBTreeDirectory::open_on(
        Arc::new(fs.clone()),
        &config,
        clock,
    )?))
}

orbit_persistence_conformance::power_loss_suite!(open);
