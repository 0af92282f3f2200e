//! What the facade's test binaries share: a config by backend and the clock. (A data
//! directory's files and copies of it: the conformance crate's `corruption` module.)

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use orbit_persistence::{BackendType, Clock, ManualClock, PersistenceConfig, Timestamp};

/// The tests' clock starts here.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

/// A manual clock at [`T0`].
pub fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(T0))
}

/// The config of a `backend` store in `dir`.
pub fn config(backend: BackendType, dir: &Path) -> PersistenceConfig {
    let name = backend.as_str();
    PersistenceConfig::from_toml_str(&format!(
        "backend = \"{name}\"\n[{name}]\ndata_dir = {dir:?}\n"
    ))
    .unwrap()
}
