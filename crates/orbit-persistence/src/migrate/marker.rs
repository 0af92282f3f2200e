//! The migration marker: the one file that says which store is authoritative while a live
//! migration runs, and after one ends.
//!
//! # File format (`MIGRATION` in the source store's data directory)
//!
//! ```text
//! 8 bytes  magic "ORBITMIG"
//! u16 BE   format version = 1
//! u8       state: 1 = copying (the source is authoritative; the target is being built in its
//!          staging directory), 2 = switched (the target is authoritative)
//! u32 BE   length n of the target's config
//! n bytes  the target's config, TOML, with its final data directory
//! u32 BE   CRC32 of every byte before it
//! ```
//!
//! It is replaced atomically (`fs::write_file_atomic`: temporary file, fdatasync, rename,
//! directory fsync), so after a crash it holds one whole state or is absent. A marker that
//! fails its checks is `Corruption` naming the file and offset: a store never guesses which
//! copy is authoritative.

use std::path::{Path, PathBuf};

use orbit_persistence_core::fs::{self, FileSystem};
use orbit_persistence_core::{OrbitError, OrbitResult, PersistenceConfig};

/// The marker's file name in the source's data directory.
pub const MARKER_FILE: &str = "MIGRATION";
const MAGIC: &[u8; 8] = b"ORBITMIG";
const VERSION: u16 = 1;
/// Magic, version, state, length.
const HEADER_LEN: usize = 8 + 2 + 1 + 4;
/// Largest target config a marker holds: the limit of a config file.
const MAX_CONFIG_LEN: usize = orbit_persistence_core::config::MAX_CONFIG_BYTES as usize;

/// Where a migration stands, as its marker records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerState {
    /// The source is authoritative; the target in its staging directory is incomplete.
    Copying,
    /// The target is authoritative; the source is a stale copy.
    Switched,
}

impl MarkerState {
    fn byte(self) -> u8 {
        match self {
            MarkerState::Copying => 1,
            MarkerState::Switched => 2,
        }
    }
}

/// A decoded marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Where the migration stands.
    pub state: MarkerState,
    /// The target's config, with its final data directory.
    pub target: PersistenceConfig,
}

/// The marker's path in the data directory `dir`.
pub fn marker_path(dir: &Path) -> PathBuf {
    dir.join(MARKER_FILE)
}

/// Writes `marker` into `dir`, atomically and durably.
pub fn write(fs: &dyn FileSystem, dir: &Path, marker: &Marker) -> OrbitResult<()> {
    let config = marker.target.to_toml_string()?;
    let mut out = Vec::with_capacity(HEADER_LEN + config.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.push(marker.state.byte());
    out.extend_from_slice(&(config.len() as u32).to_be_bytes());
    out.extend_from_slice(config.as_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    fs::write_file_atomic(fs, &marker_path(dir), &out)
}

/// The marker in `dir`, if there is one.
pub fn read(fs: &dyn FileSystem, dir: &Path) -> OrbitResult<Option<Marker>> {
    let path = marker_path(dir);
    if !fs.exists(&path)? {
        return Ok(None);
    }
    decode(&path, &fs::read_file(fs, &path)?).map(Some)
}

/// Removes the marker in `dir` durably (absent already is fine).
pub fn remove(fs: &dyn FileSystem, dir: &Path) -> OrbitResult<()> {
    let path = marker_path(dir);
    if fs.exists(&path)? {
        fs.remove_file(&path)?;
        fs.sync_dir(dir)?;
    }
    Ok(())
}

fn decode(path: &Path, bytes: &[u8]) -> OrbitResult<Marker> {
    let bad = |offset: usize, detail: String| OrbitError::Corruption {
        path: path.to_path_buf(),
        offset: offset as u64,
        detail,
    };
    if bytes.len() < HEADER_LEN + 4 {
        return Err(bad(
            bytes.len(),
            format!("a migration marker of {} bytes is cut short", bytes.len()),
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err(bad(0, "not a migration marker (bad magic)".into()));
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(OrbitError::WrongStore {
            path: path.to_path_buf(),
            detail: format!(
                "migration marker version {version}; this build reads version {VERSION}"
            ),
        });
    }
    let body_end = bytes.len() - 4;
    let stored = u32::from_be_bytes(bytes[body_end..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..body_end]) != stored {
        return Err(bad(body_end, "migration marker checksum mismatch".into()));
    }
    let state = match bytes[10] {
        1 => MarkerState::Copying,
        2 => MarkerState::Switched,
        other => return Err(bad(10, format!("unknown migration state {other}"))),
    };
    let len = u32::from_be_bytes(bytes[11..15].try_into().expect("4 bytes")) as usize;
    if len > MAX_CONFIG_LEN || HEADER_LEN + len != body_end {
        return Err(bad(
            11,
            format!("target config length {len} does not fit the file"),
        ));
    }
    let text = std::str::from_utf8(&bytes[HEADER_LEN..body_end])
        .map_err(|e| bad(HEADER_LEN, format!("target config is not UTF-8: {e}")))?;
    let target = PersistenceConfig::from_toml_str(text)
        .map_err(|e| bad(HEADER_LEN, format!("target config: {e}")))?;
    Ok(Marker { state, target })
}

#[cfg(test)]
mod tests {
    use orbit_persistence_core::fs::StdFileSystem;

    use super::*;

    fn marker() -> Marker {
        let target = PersistenceConfig::from_toml_str(
            "backend = \"lsm_tree\"\n[lsm_tree]\ndata_dir = \"/srv/orbit/target\"\n",
        )
        .unwrap();
        Marker {
            state: MarkerState::Switched,
            target,
        }
    }

    #[test]
    fn round_trips_and_every_damage_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFileSystem::new();
        assert_eq!(read(&fs, dir.path()).unwrap(), None);
        write(&fs, dir.path(), &marker()).unwrap();
        assert_eq!(read(&fs, dir.path()).unwrap(), Some(marker()));
        let good = std::fs::read(marker_path(dir.path())).unwrap();
        let path = marker_path(dir.path());
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x04;
            match decode(&path, &bytes) {
                Err(OrbitError::Corruption { offset, .. }) => {
                    assert!(offset <= good.len() as u64)
                }
                Err(OrbitError::WrongStore { .. }) => assert!((8..10).contains(&i)),
                other => panic!("flip at {i}: {other:?}"),
            }
        }
        for cut in 0..good.len() {
            assert!(decode(&path, &good[..cut]).is_err(), "cut at {cut}");
        }
        remove(&fs, dir.path()).unwrap();
        assert_eq!(read(&fs, dir.path()).unwrap(), None);
    }
}
