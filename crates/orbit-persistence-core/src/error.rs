//! The one error type of every crate in orbit-persistence.
//!
//! Each variant carries what a user needs to act without reading our code: the file and offset of
//! a corruption, the path of a lock, the field of a bad config, the limit an input broke.

use std::path::PathBuf;

use crate::backend::BackendType;

/// Result alias used by every fallible API of the project.
pub type OrbitResult<T> = Result<T, OrbitError>;

/// Everything that can go wrong in a provider.
#[derive(Debug, thiserror::Error)]
pub enum OrbitError {
    /// An operating-system I/O call failed.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// The operation that failed (`"open"`, `"fdatasync"`, ...).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes failed a checksum or could not be decoded. Never silently skipped.
    #[error("corruption in {} at offset {offset}: {detail}", path.display())]
    Corruption {
        /// The file holding the bad bytes.
        path: PathBuf,
        /// Byte offset of the bad record, block or page within the file.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// The data directory is already open, in this or another process.
    #[error("data directory is locked by another open store: {}", path.display())]
    Locked {
        /// The LOCK file that is held.
        path: PathBuf,
    },
    /// A caller passed a value outside the documented limits; nothing was changed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A configuration value is malformed; the message names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The provider was shut down.
    #[error("the store is closed")]
    Closed,
    /// A durability failure (failed fsync) happened earlier; the store refuses writes until reopened.
    #[error("the store is poisoned and refuses writes until reopened: {0}")]
    Poisoned(String),
    /// The configured backend is not compiled into this binary.
    #[error("backend {0:?} is not compiled in: enable the cargo feature `{feature}`", feature = .0.cargo_feature())]
    BackendNotCompiled(BackendType),
    /// A remote backend cannot be reached.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The store was opened read-only (for inspection); it refuses writes.
    #[error("the store in {} was opened read-only and refuses writes", .0.display())]
    ReadOnly(PathBuf),
    /// The data directory holds something other than the store the config describes: another
    /// engine's store, a newer format than this build reads, or files that belong to no store.
    /// Nothing was changed.
    #[error("{}: {detail}", path.display())]
    WrongStore {
        /// The data directory (or the file in it that told).
        path: PathBuf,
        /// What it holds, and what to do about it.
        detail: String,
    },
    /// A watch asked for changes older than the history the store keeps (`watch_history`, or
    /// etcd's compaction): reload the directory and watch from `oldest` or later. Never a
    /// silently shortened feed.
    #[error(
        "changes after revision {requested} are no longer kept; the oldest revision to watch from is {oldest}"
    )]
    Compacted {
        /// The revision the watch was to start after.
        requested: u64,
        /// The oldest revision a watch can start after now.
        oldest: u64,
    },
    /// A bug in this library, not bad input, bad bytes or an unreachable remote: an invariant
    /// broke, or a background task panicked. The store may be fine; report it with the message.
    #[error("internal error in {component}: {detail}")]
    Internal {
        /// The crate or part that failed (`"lsm"`, `"cowbtree"`, a writer's name).
        component: &'static str,
        /// What broke.
        detail: String,
    },
}

impl OrbitError {
    /// Builds an [`OrbitError::Io`] from an `io::Error`, the operation and the path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OrbitError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`OrbitError::Corruption`].
    pub fn corruption(path: impl Into<PathBuf>, offset: u64, detail: impl Into<String>) -> Self {
        OrbitError::Corruption {
            path: path.into(),
            offset,
            detail: detail.into(),
        }
    }

    /// Builds an [`OrbitError::WrongStore`].
    pub fn wrong_store(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        OrbitError::WrongStore {
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// Builds an [`OrbitError::Internal`].
    pub fn internal(component: &'static str, detail: impl std::fmt::Display) -> Self {
        OrbitError::Internal {
            component,
            detail: detail.to_string(),
        }
    }

    /// Builds an [`OrbitError::InvalidInput`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        OrbitError::InvalidInput(msg.into())
    }
}
