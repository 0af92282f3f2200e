//! What a backend's `verify` reports: the result of reading a whole store back, checking every
//! checksum it meets and that the leases and both indexes agree
//! ([`crate::keyspace::LeaseKv::index_problems`]).

use serde::{Deserialize, Serialize};

use crate::recovery::RecoveryReport;

/// Most problems a report lists; the count goes on.
pub const MAX_PROBLEMS: usize = 100;

/// The result of verifying a store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Files read in full (tables, page files).
    pub files_checked: u64,
    /// Bytes of those files.
    pub bytes_checked: u64,
    /// Leases read.
    pub leases: u64,
    /// What is wrong, each naming the file and offset where it can (at most [`MAX_PROBLEMS`]).
    pub problems: Vec<String>,
    /// What opening the store did to recover it: not a problem (nothing acknowledged is
    /// known lost), but what an operator must hear of.
    #[serde(default)]
    pub recovery: RecoveryReport,
}

impl VerifyReport {
    /// Adds a problem, up to [`MAX_PROBLEMS`].
    pub fn problem(&mut self, p: impl Into<String>) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p.into());
        }
    }

    /// Takes in the result of
    /// [`LeaseKv::index_problems`](crate::keyspace::LeaseKv::index_problems): its problems and
    /// lease count, or the error that stopped it.
    pub fn add_index_check(&mut self, checked: crate::OrbitResult<(Vec<String>, u64)>) {
        match checked {
            Ok((problems, leases)) => {
                self.leases = leases;
                problems.into_iter().for_each(|p| self.problem(p));
            }
            Err(e) => self.problem(e.to_string()),
        }
    }

    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}
