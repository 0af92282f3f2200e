//! Running a compaction [`Task`].
//!
//! The inputs are merged (newest first, so the newest version of each key wins) into new tables
//! of about `table_size` bytes, written at most at the configured rate. They are synced, the
//! manifest edit that swaps inputs for outputs is made durable, the new state is published, and
//! only then are the input files deleted (a reader of an older state keeps them open).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use orbit_persistence_core::OrbitResult;

use crate::compaction::strategy::Task;
use crate::levels::TableHandle;
use crate::manifest::Edit;
use crate::merge::{LevelIter, MergeIter, Source};
use crate::output::TableOutput;
use crate::shared::Shared;
use crate::sstable::{TableIter, table_path};
use crate::version::Version;

/// Runs `task`. Returns `false` if it was abandoned because the store is closing.
pub fn run(shared: &Shared, task: &Task) -> OrbitResult<bool> {
    let output_level = task.output_level as u8;
    let added = if task.is_move() {
        let t = &task.inputs[0];
        let mut meta = t.meta.clone();
        meta.level = output_level;
        vec![Arc::new(TableHandle {
            meta,
            table: Arc::clone(&t.table),
        })]
    } else {
        let mut sources: Vec<Source> = Vec::new();
        let (upper, lower): (Vec<_>, Vec<_>) = task
            .inputs
            .iter()
            .cloned()
            .partition(|t| usize::from(t.meta.level) != task.output_level);
        for t in upper {
            if t.meta.level == 0 {
                sources.push(Box::new(TableIter::new(Arc::clone(&t.table), &[])));
            } else {
                sources.push(Box::new(LevelIter::new(&[t], &[])));
            }
        }
        if !lower.is_empty() {
            sources.push(Box::new(LevelIter::new(&lower, &[])));
        }
        let mut out = TableOutput::new(
            shared,
            output_level,
            shared.settings.table_size,
            shared.settings.compaction_rate_limit,
        );
        for (i, entry) in MergeIter::new(sources, None)?.enumerate() {
            let (key, value) = entry?;
            if value.is_none() && task.drop_tombstones {
                continue;
            }
            out.add(&key, value.as_deref())?;
            if i % 4096 == 0 && shared.signals().closing {
                return Ok(false); // `out` removes its files
            }
        }
        let added = out.finish()?;
        let bytes: u64 = added.iter().map(|t| t.meta.file_size).sum();
        shared
            .stats
            .compaction_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        added
    };
    let removed: Vec<u64> = task.inputs.iter().map(|t| t.meta.id).collect();
    let mut manifest = shared
        .manifest
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let edit = Edit {
        next_table_id: shared.next_table_id.load(Ordering::Relaxed),
        added: added.iter().map(|t| t.meta.clone()).collect(),
        removed: removed.clone(),
        ..Edit::keeping(manifest.state())
    };
    manifest.commit(&edit)?;
    shared.publish(|s| Version {
        levels: Arc::new(s.levels.apply(&removed, added.clone())),
        ..s.clone()
    });
    drop(manifest);
    shared.notify();
    shared.stats.compactions.fetch_add(1, Ordering::Relaxed);
    if !task.is_move() {
        for id in removed {
            shared.fs.remove_file(&table_path(&shared.dir, id))?;
        }
    }
    Ok(true)
}
