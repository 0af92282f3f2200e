//! # orbit-persistence-conformance
//!
//! One suite of lease tests that every backend crate, ours or a user's own, runs against itself
//! (docs/contract.md). A backend passes only if it passes the whole suite unchanged.
//!
//! In the backend crate's `tests/conformance.rs`:
//!
//! ```ignore
//! use std::{path::Path, sync::Arc};
//! use orbit_persistence_conformance::{conformance_suite, Backend, Capabilities};
//! use orbit_persistence_core::{AddressableDirectoryProvider, Clock, OrbitResult};
//!
//! fn open(clock: Arc<dyn Clock>, dir: &Path) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
//!     // Open your store in `dir` with SyncMode::Always, using `clock` for expiry.
//!     # unimplemented!()
//! }
//!
//! const BACKEND: Backend = Backend {
//!     name: "mine",
//!     open,
//!     capabilities: Capabilities { durable: true, exclusive: true },
//! };
//!
//! conformance_suite!(BACKEND, durable = true);
//! ```
//!
//! `durable = true` adds the cases that reopen the store, open it twice, and kill a writing child
//! process with SIGKILL; the `durable` flag must match `capabilities.durable`. A store that many
//! processes share by design (a client of etcd) says `durable = true, exclusive = false`: the
//! directory-lock cases are left out, and the kill -9 case opens it beside the live child
//! instead of expecting `Locked`. The macro expands
//! into one `#[test]` per case, each on its own multi-threaded tokio runtime, so the backend
//! crate needs no tokio dev-dependency for it. The kill -9 case re-runs the test binary as the
//! writing child (see [`kill9`]).
#![warn(missing_docs)]

pub mod cases;
pub mod corruption;
pub mod fixtures;
pub mod follow;
pub mod kill9;
pub mod model;
pub mod power_loss;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use orbit_persistence_core::{AddressableDirectoryProvider, Clock, OrbitResult};

pub use fixtures::Ctx;

/// Opens (or reopens) a store in a directory. It must use `clock` for every expiry decision and
/// `SyncMode::Always`, so that every acknowledged write is durable. Called on a blocking thread
/// inside a tokio runtime.
pub type OpenFn = fn(Arc<dyn Clock>, &Path) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>>;

/// What a backend supports; cases that need more than it has are not generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Survives reopen, `kill -9` and power loss.
    pub durable: bool,
    /// Owns its data directory alone: a second open, from this or another process, is
    /// `Locked`, and a directory it cannot write is a typed error. False for a client of a
    /// shared remote store (etcd), which many processes open at once by design.
    pub exclusive: bool,
}

/// A backend under test.
#[derive(Debug, Clone, Copy)]
pub struct Backend {
    /// Name used in messages.
    pub name: &'static str,
    /// Opens the store.
    pub open: OpenFn,
    /// What the backend supports.
    pub capabilities: Capabilities,
}

/// Runs one case on a fresh two-worker tokio runtime.
pub fn run<F: Future<Output = ()>>(case: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("failed to build the tokio runtime for a conformance case");
    runtime.block_on(case);
}

/// Expands the conformance suite into `#[test]` functions; see the crate docs.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr, durable = false) => {
        $crate::conformance_suite!(@cases $backend);
    };
    ($backend:expr, durable = true) => {
        $crate::conformance_suite!(@cases $backend);
        $crate::conformance_suite!(@durable $backend);
        $crate::conformance_suite!(@exclusive $backend);
    };
    ($backend:expr, durable = true, exclusive = false) => {
        $crate::conformance_suite!(@cases $backend);
        $crate::conformance_suite!(@durable $backend);
    };
    (@cases $backend:expr) => {
        $crate::__conformance_cases!($backend;
            store_then_get_round_trips,
            get_absent_is_none,
            store_ignores_given_revision,
            upsert_moves_lease_and_node_index_follows,
            remove_returns_true_then_false,
            remove_clears_node_index,
            list_node_leases_is_exact,
            list_node_distinguishes_namespaces,
            list_unknown_node_is_empty,
            key_kinds_never_collide,
            unusual_characters_round_trip,
            expired_lease_is_still_returned_by_get,
            cleanup_removes_exactly_the_expired,
            cleanup_is_idempotent,
            cleanup_follows_renewals,
            cleanup_clears_node_index,
            cleanup_of_many_is_exact,
            cleanup_of_many_expiring_at_once,
            remove_node_removes_exactly_that_node,
            remove_unknown_node_removes_nothing,
            remove_node_of_many_is_exact,
            remove_node_under_concurrent_writers,
            remove_node_rejects_an_invalid_node,
            watch_sees_every_change_with_its_kind,
            watch_under_concurrent_writers_has_no_gap,
            watch_resumes_after_the_last_revision_seen,
            watch_from_a_future_revision_waits_for_it,
            watch_ends_with_closed_at_shutdown,
            backup_under_writers_is_the_state_at_its_revision,
            restore_refuses_damage_and_a_store_that_wrote,
            replicate_continues_a_copy_with_its_sources_history,
            acquire_absent_acquires,
            acquire_held_returns_holder,
            acquire_expired_takes_over,
            racing_acquirers_exactly_one_wins,
            renew_by_owner_extends,
            renew_with_stale_revision_loses,
            renew_by_other_node_loses,
            renew_absent_is_lost,
            release_by_owner_removes,
            release_with_stale_revision_keeps_lease,
            revisions_strictly_increase,
            store_leases_stores_all,
            store_leases_with_invalid_entry_changes_nothing,
            store_leases_rejects_duplicate_references,
            store_leases_empty_is_noop,
            invalid_store_inputs_are_rejected,
            invalid_acquire_inputs_are_rejected,
            invalid_renew_inputs_are_rejected,
            invalid_read_inputs_are_rejected,
            concurrent_writers_all_land,
            contended_owners_never_overlap,
            linearizable_under_contention,
            operations_after_shutdown_are_closed,
            health_and_metrics_reflect_the_store,
            model_based_random_operations,
        );
    };
    (@durable $backend:expr) => {
        $crate::__conformance_cases!($backend;
            reopen_keeps_everything,
            revisions_increase_across_reopen,
            reopen_keeps_removals_and_cleanup,
            eviction_survives_reopen,
            watch_history_survives_reopen,
            kill9_acknowledged_writes_survive,
            a_clean_reopen_reports_no_recovery,
        );
        /// Not a test on its own: the child process of the kill -9 case. Returns at once unless
        /// the parent started this binary with the child environment variable set.
        #[test]
        fn conformance_kill9_child_entry() {
            $crate::kill9::child_entry($backend);
        }
    };
    (@exclusive $backend:expr) => {
        $crate::__conformance_cases!($backend;
            second_open_is_locked,
            open_where_nothing_can_be_written_is_a_typed_error,
            a_directory_of_other_files_is_refused_untouched,
        );
    };
}

/// The change-feed cases that need a backend configured for them. `open_with(clock, dir,
/// watch_history)` opens the store with a change history of that many changes; the cases open
/// it with `history` (a small one) and with 0 (none), each under its own backend name
/// (`name` with `-small-history` or `-no-history`), so the rest of the suite runs once, on
/// the default configuration.
#[macro_export]
macro_rules! watch_history_cases {
    (name = $name:literal, capabilities = $caps:expr, history = $history:expr, open_with = $open_with:path) => {
        #[test]
        fn watch_past_the_history_is_compacted() {
            let backend = $crate::Backend {
                name: concat!($name, "-small-history"),
                open: |clock, dir| $open_with(clock, dir, $history),
                capabilities: $caps,
            };
            $crate::run($crate::cases::watch_past_the_history_is_compacted(
                backend, $history,
            ));
        }

        #[test]
        fn watch_without_history_is_a_config_error() {
            let backend = $crate::Backend {
                name: concat!($name, "-no-history"),
                open: |clock, dir| $open_with(clock, dir, 0),
                capabilities: $caps,
            };
            $crate::run($crate::cases::watch_without_history_is_a_config_error(
                backend,
            ));
        }
    };
}

/// Implementation detail of [`conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::run($crate::cases::$case($backend));
            }
        )*
    };
}
