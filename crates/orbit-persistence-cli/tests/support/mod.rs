//! What the CLI's test binaries share: running the binary, and reading its output.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs the `orbit-persistence` binary with `args`, without the environment's store
/// variables (a test says what it opens).
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orbit-persistence"))
        .args(args)
        .env_remove("ORBIT_PERSISTENCE_BACKEND")
        .env_remove("ORBIT_PERSISTENCE_DATA_DIR")
        .output()
        .expect("run the binary")
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
