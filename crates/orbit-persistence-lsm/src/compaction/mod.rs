//! Compaction: choosing which tables to merge ([`CompactionStrategy`], one value per strategy;
//! [`Leveled`] is the one in use) and running the merge ([`job::run`]).
//!
//! | module | concept |
//! |---|---|
//! | [`strategy`] | a compaction [`Task`], the [`CompactionStrategy`] trait, the full compaction |
//! | [`leveled`] | leveled compaction |
//! | [`job`] | running a task: merge, write, record, publish, delete the inputs |

pub mod job;
pub mod leveled;
pub mod strategy;

pub use leveled::Leveled;
pub use strategy::{CompactionStrategy, Task, full_compaction};
