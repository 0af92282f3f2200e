//! Compaction: choosing which tables to merge ([`CompactionStrategy`], one value per strategy)
//! and running the merge ([`run`]).
//!
//! # Leveled compaction ([`Leveled`])
//!
//! - Level 0 collects flushed memtables. When it holds [`Leveled::l0_trigger`] tables, all of
//!   them and the level-1 tables they overlap are merged into level 1.
//! - Level `n >= 1` has a target size: `level1_size * fanout^(n-1)`. The level furthest over
//!   its target (score = size / target > 1) gives one table, taken round-robin through its key
//!   range, which is merged with the tables of level `n + 1` it overlaps.
//! - A table with nothing to merge with below is moved down by a manifest edit alone.
//! - Tombstones are dropped when no deeper level holds the key range: nothing is left for them
//!   to hide. After a purge, the space of the deleted leases comes back as the tombstones sink.
//!
//! Each level below 0 stays one sorted run, so a point read looks at one table per level (after
//! the bloom filter), and space amplification stays near `1 + 1/fanout`.
//!
//! # Running a compaction
//!
//! The inputs are merged (newest first, so the newest version of each key wins) into new tables
//! of about `table_size` bytes, written at most at the configured rate. They are synced, the
//! manifest edit that swaps inputs for outputs is made durable, the new state is published, and
//! only then are the input files deleted (a reader of an older state keeps them open).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use orbit_persistence_core::OrbitResult;

use crate::flush::TableOutput;
use crate::levels::{Levels, MAX_LEVELS, TableHandle};
use crate::manifest::Edit;
use crate::merge::{LevelIter, MergeIter, Source};
use crate::sstable::{TableIter, table_path};
use crate::state::State;
use crate::tree::Tree;

/// One compaction: tables to merge and where the result goes.
#[derive(Debug, Clone)]
pub struct Task {
    /// Input tables, newest first: all chosen tables of the upper level, then those of
    /// `output_level`.
    pub inputs: Vec<Arc<TableHandle>>,
    /// The level the output goes to.
    pub output_level: usize,
    /// Whether tombstones may be dropped (no deeper level holds the range).
    pub drop_tombstones: bool,
}

impl Task {
    /// The key range of the inputs.
    pub fn range(&self) -> Option<(&[u8], &[u8])> {
        let smallest = self
            .inputs
            .iter()
            .map(|t| t.meta.smallest.as_slice())
            .min()?;
        let largest = self
            .inputs
            .iter()
            .map(|t| t.meta.largest.as_slice())
            .max()?;
        Some((smallest, largest))
    }

    /// Whether the task only moves one table down (no merge needed).
    pub fn is_move(&self) -> bool {
        self.inputs.len() == 1
            && usize::from(self.inputs[0].meta.level) != self.output_level
            && !self.drop_tombstones
    }
}

/// Chooses compactions. Implementations are values, so a test can drive one alone.
pub trait CompactionStrategy: Send + Sync + std::fmt::Debug {
    /// The strategy's name (for metrics and logs).
    fn name(&self) -> &'static str;
    /// The next compaction for `levels`, if one is due.
    fn pick(&self, levels: &Levels) -> Option<Task>;
}

/// Leveled compaction; see the module docs.
#[derive(Debug)]
pub struct Leveled {
    /// Level-0 tables that trigger a compaction into level 1.
    pub l0_trigger: usize,
    /// Target bytes of level 1.
    pub level1_size: u64,
    /// Growth of the target per level.
    pub fanout: u64,
    /// Per level, the largest key of the last table compacted out of it (round-robin).
    cursors: Mutex<Vec<Vec<u8>>>,
}

impl Leveled {
    /// Leveled compaction with these parameters.
    pub fn new(l0_trigger: usize, level1_size: u64, fanout: u64) -> Self {
        Leveled {
            l0_trigger,
            level1_size,
            fanout,
            cursors: Mutex::new(vec![Vec::new(); MAX_LEVELS]),
        }
    }

    /// Target bytes of `level` (>= 1).
    pub fn target(&self, level: usize) -> u64 {
        let mut t = self.level1_size;
        for _ in 1..level {
            t = t.saturating_mul(self.fanout);
        }
        t
    }

    fn task(levels: &Levels, upper: Vec<Arc<TableHandle>>, output_level: usize) -> Task {
        let mut task = Task {
            inputs: upper,
            output_level,
            drop_tombstones: false,
        };
        let (smallest, largest) = match task.range() {
            Some((s, l)) => (s.to_vec(), l.to_vec()),
            None => return task,
        };
        task.inputs
            .extend(levels.overlapping(output_level, &smallest, &largest));
        task.drop_tombstones = !levels.deeper_overlap(output_level, &smallest, &largest);
        task
    }
}

impl CompactionStrategy for Leveled {
    fn name(&self) -> &'static str {
        "leveled"
    }

    fn pick(&self, levels: &Levels) -> Option<Task> {
        if levels.levels[0].len() >= self.l0_trigger {
            return Some(Self::task(levels, levels.levels[0].clone(), 1));
        }
        let (level, score) = (1..MAX_LEVELS - 1)
            .map(|l| (l, levels.level_bytes(l) as f64 / self.target(l) as f64))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if score <= 1.0 {
            return None;
        }
        let tables = &levels.levels[level];
        let mut cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        let cursor = &mut cursors[level];
        let next = tables
            .iter()
            .find(|t| t.meta.smallest > *cursor)
            .or_else(|| tables.first())?;
        cursor.clone_from(&next.meta.largest);
        Some(Self::task(levels, vec![Arc::clone(next)], level + 1))
    }
}

/// A compaction of every table into one sorted run at the deepest level in use, dropping every
/// tombstone (`LsmDirectory::compact`).
pub fn full_compaction(levels: &Levels) -> Option<Task> {
    let deepest = (1..MAX_LEVELS)
        .rev()
        .find(|&l| !levels.levels[l].is_empty())
        .unwrap_or(1);
    let inputs: Vec<Arc<TableHandle>> = levels.levels.iter().flatten().cloned().collect();
    (!inputs.is_empty()).then_some(Task {
        inputs,
        output_level: deepest,
        drop_tombstones: true,
    })
}

/// Runs `task`. Returns `false` if it was abandoned because the store is closing.
pub fn run(tree: &Tree, task: &Task) -> OrbitResult<bool> {
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
            tree,
            output_level,
            tree.settings.table_size,
            tree.settings.compaction_rate_limit,
        );
        for (i, entry) in MergeIter::new(sources, None)?.enumerate() {
            let (key, value) = entry?;
            if value.is_none() && task.drop_tombstones {
                continue;
            }
            out.add(&key, value.as_deref())?;
            if i % 4096 == 0 && tree.signals().closing {
                return Ok(false); // `out` removes its files
            }
        }
        let added = out.finish()?;
        let bytes: u64 = added.iter().map(|t| t.meta.file_size).sum();
        tree.stats
            .compaction_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        added
    };
    let removed: Vec<u64> = task.inputs.iter().map(|t| t.meta.id).collect();
    let mut manifest = tree.manifest.lock().unwrap_or_else(PoisonError::into_inner);
    let edit = Edit {
        next_table_id: tree.next_table_id.load(Ordering::Relaxed),
        added: added.iter().map(|t| t.meta.clone()).collect(),
        removed: removed.clone(),
        ..Edit::keeping(manifest.state())
    };
    manifest.commit(&edit)?;
    tree.publish(|s| State {
        levels: Arc::new(s.levels.apply(&removed, added.clone())),
        ..s.clone()
    });
    drop(manifest);
    tree.notify();
    tree.stats.compactions.fetch_add(1, Ordering::Relaxed);
    if !task.is_move() {
        for id in removed {
            tree.fs.remove_file(&table_path(&tree.dir, id))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::TableMeta;

    #[test]
    fn targets_grow_by_the_fanout_and_ranges_overlap_inclusively() {
        let s = Leveled::new(4, 1000, 10);
        assert_eq!(s.target(1), 1000);
        assert_eq!(s.target(2), 10_000);
        assert_eq!(s.target(3), 100_000);
        assert_eq!(Leveled::new(4, u64::MAX / 2, 10).target(6), u64::MAX);
        let m = TableMeta {
            id: 1,
            level: 1,
            file_size: 1,
            entries: 1,
            smallest: b"b".to_vec(),
            largest: b"d".to_vec(),
        };
        assert!(m.overlaps(b"a", b"b") && m.overlaps(b"c", b"c") && m.overlaps(b"d", b"z"));
        assert!(!m.overlaps(b"a", b"a") && !m.overlaps(b"e", b"z"));
    }
}
