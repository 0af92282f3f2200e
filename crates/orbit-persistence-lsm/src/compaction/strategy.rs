//! What a compaction is ([`Task`]) and who chooses one ([`CompactionStrategy`]); below the
//! shared tree state, which holds the strategy in use.

use std::sync::Arc;

use crate::levels::{Levels, MAX_LEVELS, TableHandle};

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

/// A compaction of every table into one sorted run at the deepest level in use, dropping every
/// tombstone (`Compact::compact`).
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
