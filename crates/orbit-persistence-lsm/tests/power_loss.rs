//! Power-loss simulation and I/O errors (docs/reliability.md rows B, C and D) of the LSM tree, with the suite's harness
//! (`orbit_persistence_conformance::power_loss`). Busy runs use 4 KiB memtables, 512-byte blocks
//! and 16 KiB of level 1, so memtables freeze, flush and compact every few writes and crashes
//! land inside flushes, manifest edits and compactions.

use std::sync::Arc;

use orbit_persistence_conformance::power_loss::DIR;
use orbit_persistence_core::fs::FaultFs;
use orbit_persistence_core::{
    AddressableDirectoryProvider, Clock, LsmTreeConfig, OrbitResult, SyncMode,
};
use orbit_persistence_lsm::LsmDirectory;

fn open(
    fs: &FaultFs,
    busy: bool,
    clock: Arc<dyn Clock>,
) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    let config = LsmTreeConfig {
        data_dir: DIR.into(),
        sync: SyncMode::Always,
        memtable_size: if busy { 4 << 10 } else { 64 << 10 },
        max_immutable_memtables: 1,
        block_size: 512,
        level1_size: 16 << 10,
        level_fanout: 2,
        ..LsmTreeConfig::default()
    };
    Ok(Arc::new(LsmDirectory::open_on(
        Arc::new(fs.clone()),
        &config,
        clock,
    )?))
}

orbit_persistence_conformance::power_loss_suite!(open);
