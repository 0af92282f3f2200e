//! What an open did to bring a store back: every repair and replay, reported.
//!
//! Recovery is allowed to change a store only in ways that lose nothing acknowledged (cutting a
//! torn log tail, deleting a file no durable root names, finishing an interrupted creation), but
//! an operator must hear of each one: a tail cut after a crash is routine, the same cut after a
//! bad copy or a damaged disk is how an incident starts. So every action is
//!
//! - logged with `tracing` at `warn` when it is recorded,
//! - counted in [`crate::PersistenceMetrics::recovery_actions`],
//! - returned by [`crate::PersistenceProvider::recovery_report`], and printed by the CLI's
//!   `stats` and `verify`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One thing recovery did, with the file and offset it did it at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RecoveryAction {
    /// The end of a log did not verify and was cut off: a write torn by a crash, or damage at
    /// the very end of the file (which cannot be told apart). The bytes cut held no
    /// acknowledged write if the store was shut down or crashed; after a bad copy they may.
    TailCut {
        /// The log file.
        path: PathBuf,
        /// Where the valid records end, and the file now ends.
        offset: u64,
        /// How many bytes were cut (the whole header of a segment created just before a crash
        /// counts too).
        bytes: u64,
    },
    /// Records of WAL segments written since the last checkpoint or flush were replayed: the
    /// store was not shut down cleanly (a crash, `kill -9`, or a failed shutdown).
    Replayed {
        /// The first segment replayed.
        first_segment: u64,
        /// The last segment replayed.
        last_segment: u64,
        /// Records (write requests) replayed.
        records: u64,
    },
    /// A WAL segment that a crash left without a complete header, before anything was written
    /// to it, was removed.
    EmptySegmentRemoved {
        /// The segment.
        path: PathBuf,
    },
    /// A durable root (a meta page, the last manifest edit) failed its checks and the state
    /// before it was recovered instead: a torn checkpoint or flush, or a damaged root.
    DamagedRootSkipped {
        /// The file holding it.
        path: PathBuf,
        /// Its offset in the file.
        offset: u64,
        /// What was wrong with it.
        reason: String,
    },
    /// A file that no durable root names was deleted: the output of a flush, compaction or
    /// checkpoint that a crash interrupted, or an input it had not yet deleted.
    OrphanRemoved {
        /// The file.
        path: PathBuf,
    },
    /// A store whose creation a crash interrupted (before it was ever opened) was created
    /// again from the start.
    CreationRestarted {
        /// The data directory.
        dir: PathBuf,
    },
    /// A store written before stores carried an identity record was given one.
    IdentityAdded {
        /// The data directory.
        dir: PathBuf,
    },
}

impl fmt::Display for RecoveryAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryAction::TailCut {
                path,
                offset,
                bytes,
            } => write!(
                f,
                "cut {bytes} bytes of torn or damaged log tail from {} at offset {offset}",
                path.display()
            ),
            RecoveryAction::Replayed {
                first_segment,
                last_segment,
                records,
            } => write!(
                f,
                "replayed {records} WAL records from segments {first_segment} to {last_segment} \
                 (the store was not shut down cleanly)"
            ),
            RecoveryAction::EmptySegmentRemoved { path } => write!(
                f,
                "removed {}, a WAL segment a crash left before its header was complete",
                path.display()
            ),
            RecoveryAction::DamagedRootSkipped {
                path,
                offset,
                reason,
            } => write!(
                f,
                "skipped the damaged root at offset {offset} of {} ({reason}) and recovered the \
                 state before it",
                path.display()
            ),
            RecoveryAction::OrphanRemoved { path } => write!(
                f,
                "deleted {}, a file no durable root names (an interrupted flush, compaction or \
                 checkpoint)",
                path.display()
            ),
            RecoveryAction::CreationRestarted { dir } => write!(
                f,
                "started over the creation of the store in {}, which a crash had interrupted",
                dir.display()
            ),
            RecoveryAction::IdentityAdded { dir } => write!(
                f,
                "wrote the identity record of the store in {}, which predates identity records",
                dir.display()
            ),
        }
    }
}

/// Everything one open of a store did to recover it, in order. Empty after a clean shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// The actions, in the order they were taken.
    pub actions: Vec<RecoveryAction>,
}

impl RecoveryReport {
    /// Records `action` and logs it at `warn`.
    pub fn record(&mut self, action: RecoveryAction) {
        tracing::warn!(action = %action, "recovery");
        self.actions.push(action);
    }

    /// Whether recovery did nothing.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Number of actions, for [`crate::PersistenceMetrics::recovery_actions`].
    pub fn len(&self) -> u64 {
        self.actions.len() as u64
    }

    /// Whether any action is a [`RecoveryAction::TailCut`].
    pub fn cut_a_tail(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, RecoveryAction::TailCut { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_print_and_serialize_with_their_file() {
        let mut report = RecoveryReport::default();
        assert!(report.is_empty());
        report.record(RecoveryAction::TailCut {
            path: PathBuf::from("/d/wal-0000000000000001.log"),
            offset: 4096,
            bytes: 17,
        });
        assert!(report.cut_a_tail());
        assert_eq!(report.len(), 1);
        let text = report.actions[0].to_string();
        assert!(
            text.contains("17 bytes") && text.contains("wal-0000000000000001.log"),
            "{text}"
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains(r#""action":"tail_cut""#), "{json}");
        let back: RecoveryReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }
}
