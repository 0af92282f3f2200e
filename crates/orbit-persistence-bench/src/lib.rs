//! # orbit-persistence-bench
//!
//! The lease workload (`docs/benchmark.md`), run side by side on our backends and on peer stores.
//! The `orbit-persistence bench` command of `orbit-persistence-cli` is its front end.
//!
//! - [`workload`]: the data set and its random streams;
//! - [`subject`]: what is measured: our backends (opened through the `orbit-persistence`
//!   facade) and the peers;
//! - [`peer`]: the stores written directly on other engines (redb, fjall, RocksDB), holding the
//!   same leases and the same two indexes, each change one atomic transaction;
//! - [`phases`]: the timed phases, for our providers (async tasks) and peers (threads);
//! - [`operations`]: the operator's phases (backup, restore, live migration), ours only;
//! - [`suite`]: the whole benchmark in one run, including the kill -9 child;
//! - [`report`], [`chart`]: the Markdown table, the JSON and the SVG charts.
#![warn(missing_docs)]

pub mod chart;
pub mod operations;
pub mod peer;
pub mod phases;
pub mod report;
pub mod subject;
pub mod suite;
pub mod workload;
