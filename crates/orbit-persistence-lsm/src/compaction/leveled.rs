//! Leveled compaction ([`Leveled`]).
//!
//! - Level 0 collects flushed memtables. When it holds [`Leveled::l0_trigger`] tables, all of
//!   them and the level-1 tables they overlap are merged into level 1.
//! - Level `n >= 1` has a target size: `level1_size * fanout^(n-1)`. The level furthest over
//!   its target (score = size / target > 1) gives one table, taken round-robin through its key
//!   range, which is merged with the tables of level `n + 1` it overlaps.
//! - A table with nothing to merge with below is moved down by a manifest edit alone.
//! - Tombstones are dropped when no deeper level holds the key range of the inputs (the output
//!   level's tables widen it beyond the upper ones): nothing is left for them
//!   to hide. After a purge, the space of the deleted leases comes back as the tombstones sink.
//!
//! Each level below 0 stays one sorted run, so a point read looks at one table per level (after
//! the bloom filter), and space amplification stays near `1 + 1/fanout`.
//!

use std::sync::{Arc, Mutex, PoisonError};

use crate::compaction::strategy::{CompactionStrategy, Task};
use crate::levels::{Levels, MAX_LEVELS, TableHandle};

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
        // Over the range of every input: the output level's tables widen it, and a tombstone
        // of theirs still hides an older value deeper down.
        task.drop_tombstones = match task.range() {
            Some((s, l)) => !levels.deeper_overlap(output_level, s, l),
            None => false,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::TableMeta;
    use crate::sstable::{Table, TableBuilder, table_path};
    use orbit_persistence_core::fs::StdFileSystem;

    /// A real table file of `keys` (tombstones), as a table of `level`.
    fn table(dir: &std::path::Path, id: u64, level: u8, keys: &[&[u8]]) -> Arc<TableHandle> {
        let fs = StdFileSystem::new();
        let path = table_path(dir, id);
        let mut builder = TableBuilder::create(&fs, &path, 1024, 0.01).unwrap();
        for key in keys {
            builder.add(key, None).unwrap();
        }
        let info = builder.finish().unwrap();
        Arc::new(TableHandle {
            meta: TableMeta {
                id,
                level,
                file_size: info.file_size,
                entries: info.entries,
                smallest: info.smallest,
                largest: info.largest,
            },
            table: Arc::new(Table::open(&fs, &path, id, None).unwrap()),
        })
    }

    #[test]
    fn tombstones_stay_while_a_deeper_level_meets_any_input_not_only_the_picked_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut levels = Levels::default();
        // Level 1 is over its target; its table [c, f] meets the level-2 table [a, z], whose
        // tombstone for "x" still hides the older "x" of level 3.
        levels.levels[1].push(table(dir.path(), 1, 1, &[b"c", b"f"]));
        levels.levels[2].push(table(dir.path(), 2, 2, &[b"a", b"x", b"z"]));
        levels.levels[3].push(table(dir.path(), 3, 3, &[b"w", b"x", b"y"]));
        let task = Leveled::new(4, 1, 1000).pick(&levels).unwrap();
        assert_eq!(task.output_level, 2);
        assert_eq!(
            task.inputs.len(),
            2,
            "the level-1 table and the level-2 one it meets"
        );
        assert!(
            !task.drop_tombstones,
            "level 3 meets the inputs' range [a, z]: dropping the tombstone of x would bring \
             the old x back"
        );
        // With nothing deeper in that range, the tombstones may go.
        levels.levels[3].clear();
        assert!(
            Leveled::new(4, 1, 1000)
                .pick(&levels)
                .unwrap()
                .drop_tombstones
        );
    }

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
