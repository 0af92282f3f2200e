//! What the facade's test binaries share: a config by backend, the clock, and a data
//! directory's files.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

/// Every file under `dir` (subdirectories too) with its bytes.
pub fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                let name = entry.path().strip_prefix(dir).unwrap().to_path_buf();
                out.insert(name, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    out
}

/// Copies the tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
