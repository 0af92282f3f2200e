//! The flush of a frozen memtable to a level-0 table: written through [`TableOutput`], named
//! by a manifest edit that also moves the WAL start past the memtable, then published; the
//! WAL segments it covered are deleted last.

use std::sync::Arc;

use orbit_persistence_core::OrbitResult;
use orbit_persistence_core::wal;

use crate::manifest::Edit;
use crate::output::TableOutput;
use crate::shared::Shared;
use crate::version::{Frozen, Version};

/// Flushes `frozen` (the oldest frozen memtable) to a level-0 table.
pub fn flush(shared: &Shared, frozen: &Arc<Frozen>) -> OrbitResult<()> {
    let mut out = TableOutput::new(shared, 0, u64::MAX, 0);
    frozen.mem.for_each_latest(|k, v| out.add(k, v))?;
    let added = out.finish()?;
    let bytes: u64 = added.iter().map(|t| t.meta.file_size).sum();
    let mut manifest = shared
        .manifest
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let old_start = manifest.state().log_start;
    let edit = Edit {
        log_start: frozen.next_log,
        next_table_id: shared
            .next_table_id
            .load(std::sync::atomic::Ordering::Relaxed),
        last_revision: frozen.last_revision,
        lease_count: frozen.lease_count,
        added: added.iter().map(|t| t.meta.clone()).collect(),
        removed: Vec::new(),
    };
    manifest.commit(&edit)?;
    shared.publish(|s| Version {
        frozen: s
            .frozen
            .iter()
            .filter(|f| !Arc::ptr_eq(f, frozen))
            .cloned()
            .collect(),
        levels: Arc::new(s.levels.apply(&[], added.clone())),
        ..s.clone()
    });
    drop(manifest);
    shared.notify();
    // The flushed memtable's WAL segments are covered by the table now.
    for seq in old_start..frozen.next_log {
        let path = wal::segment_path(&shared.dir, seq);
        if shared.fs.exists(&path)? {
            shared.fs.remove_file(&path)?;
        }
    }
    let stats = &shared.stats;
    stats
        .flushes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    stats
        .flush_bytes
        .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}
