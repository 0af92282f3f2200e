//! What the facade's test binaries share: a config by backend, the clock, and mounting. (A
//! data directory's files and copies of it: the conformance crate's `corruption` module.)

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use orbit_persistence::{BackendType, Clock, ManualClock, PersistenceConfig, Timestamp};

/// The tests' clock starts here.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

/// A manual clock at [`T0`].
pub fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(T0))
}

/// The config of a `backend` store in `dir` (the memory backend has no directory: `dir` is
/// unused).
pub fn config(backend: BackendType, dir: &Path) -> PersistenceConfig {
    let name = backend.as_str();
    let text = match backend {
        BackendType::Memory => format!("backend = \"{name}\"\n"),
        _ => format!("backend = \"{name}\"\n[{name}]\ndata_dir = {dir:?}\n"),
    };
    PersistenceConfig::from_toml_str(&text).unwrap()
}

/// Runs `mount` with `args`; false if this process may not mount (not root).
pub fn mount(args: &[&str]) -> bool {
    let status = Command::new("mount").args(args).status();
    matches!(status, Ok(s) if s.success())
}

pub fn umount(dir: &Path) {
    let _ = Command::new("umount").arg(dir).status();
}

pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() == 0 }
}
