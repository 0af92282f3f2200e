//! # orbit-persistence-bench
//!
//! The lease workload of `BENCHMARK.md`, shared by every benchmark of the project:
//!
//! - [`workload`]: the data set and its random streams;
//! - [`phases`]: the timed phases, for our providers (async) and for peers (threads);
//! - [`peer`]: the [`peer::Peer`] interface and the stores written directly on other engines
//!   ([`peer::RedbPeer`]), holding the same leases and the same two indexes, each change one
//!   atomic transaction;
//! - [`report`]: rows and the Markdown table.
#![warn(missing_docs)]

pub mod peer;
pub mod phases;
pub mod report;
pub mod workload;
