//! The file-system seam: every byte a disk backend reads or writes goes through [`FileSystem`] and
//! [`FsFile`], so tests can swap the real disk for `FaultFs` (feature `testing`), which drops
//! unsynced data on a simulated power loss, tears appends, fails the Nth write/sync/rename and
//! runs out of space.
//!
//! The seam is deliberately small and positional (`read_at`/`write_at`, no seek cursor), so one
//! open file can be shared by a writer thread and readers without locking, and so every call is
//! one durability-relevant step that fault tests can enumerate.
//!
//! # Durability contract
//!
//! The rules a backend must follow, and that `FaultFs` enforces when it simulates a crash:
//!
//! - data written to a file is durable only after a successful [`FsFile::sync_data`] or
//!   [`FsFile::sync_all`] of that file;
//! - creating, renaming or removing a file changes its directory; that change is durable only
//!   after a successful [`FileSystem::sync_dir`] of that directory (for a rename across
//!   directories, of both);
//! - a failed sync makes nothing durable and must never be retried as if the data were safe
//!   ("fsyncgate": Linux marks the pages clean after reporting the error once); the caller
//!   stops writing (the store is poisoned).
//!
//! # On-disk format
//!
//! None: this module moves bytes, it defines no file format. New files are created with mode
//! `0600` ([`FILE_MODE`]) and new directories with `0700` ([`DIR_MODE`]).

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use crate::error::{OrbitError, OrbitResult};

#[cfg(any(test, feature = "testing"))]
mod fault;
mod std_fs;

#[cfg(any(test, feature = "testing"))]
pub use fault::{FaultFs, FaultKind};
pub use std_fs::StdFileSystem;

/// Permission bits of every file a store creates: owner read/write only.
pub const FILE_MODE: u32 = 0o600;
/// Permission bits of every directory a store creates: owner only.
pub const DIR_MODE: u32 = 0o700;

/// How [`FileSystem::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpenMode {
    /// Read only; the file must exist. Writes through the handle fail.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet (`O_CREAT | O_EXCL`), so a store never
    /// clobbers a file it did not expect.
    CreateNew,
    /// Read and write; created if missing, emptied if present (`O_CREAT | O_TRUNC`).
    CreateOrTruncate,
}

impl OpenMode {
    /// Whether this mode may create the file (and so change its directory).
    pub fn creates(self) -> bool {
        matches!(self, OpenMode::CreateNew | OpenMode::CreateOrTruncate)
    }

    /// Whether a handle opened in this mode may write.
    pub fn writable(self) -> bool {
        !matches!(self, OpenMode::Read)
    }
}

/// A file system: directories and files by path.
///
/// Object safe, so a store holds an `Arc<dyn FileSystem>` and tests pass a `FaultFs`. Every error
/// is an [`OrbitError::Io`] naming the operation and the path.
pub trait FileSystem: Send + Sync + Debug {
    /// Creates `path` and any missing parents (new ones with mode [`DIR_MODE`]). Not durable
    /// until the parent of each new directory is synced with [`FileSystem::sync_dir`].
    fn create_dir_all(&self, path: &Path) -> OrbitResult<()>;

    /// Opens (or creates, per `mode`) the file at `path`. A created file has mode [`FILE_MODE`]
    /// and its directory entry is durable only after [`FileSystem::sync_dir`] of its parent.
    fn open(&self, path: &Path, mode: OpenMode) -> OrbitResult<Box<dyn FsFile>>;

    /// Atomically replaces `to` with `from` (both files). Durable only after the directories
    /// involved are synced. Errors name `from`.
    fn rename(&self, from: &Path, to: &Path) -> OrbitResult<()>;

    /// Removes a file. Durable only after its directory is synced.
    fn remove_file(&self, path: &Path) -> OrbitResult<()>;

    /// The names (not paths) of the entries of a directory, sorted. Names that are not UTF-8
    /// cannot belong to a store and are skipped.
    fn list_dir(&self, path: &Path) -> OrbitResult<Vec<String>>;

    /// Makes the directory's entries (creates, renames, removes) durable: `fsync` of the
    /// directory.
    fn sync_dir(&self, path: &Path) -> OrbitResult<()>;

    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> OrbitResult<bool>;
}

/// An open file with positional I/O. Shared between threads as `&self`: positional calls carry
/// their own offset, so there is no cursor to race on.
pub trait FsFile: Send + Sync + Debug {
    /// The path the file was opened at (used in error messages).
    fn path(&self) -> &Path;

    /// Current length in bytes.
    fn len(&self) -> OrbitResult<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> OrbitResult<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read, 0 at or past the
    /// end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> OrbitResult<usize>;

    /// Fills `buf` from `offset`, or fails with `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> OrbitResult<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(OrbitError::io(
                    "read",
                    self.path(),
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "file ended at {} while reading {} bytes at offset {offset}",
                            offset + done as u64,
                            buf.len()
                        ),
                    ),
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`, extending the file (with zeros over any gap) if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> OrbitResult<()>;

    /// Writes all of `buf` at the current end of the file; returns the offset it was written
    /// at. Concurrent appends through one handle do not interleave.
    fn append(&self, buf: &[u8]) -> OrbitResult<u64>;

    /// Truncates or zero-extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> OrbitResult<()>;

    /// Makes the contents (and the length) durable: `fdatasync`.
    fn sync_data(&self) -> OrbitResult<()>;

    /// Makes the contents and all metadata durable: `fsync`.
    fn sync_all(&self) -> OrbitResult<()>;

    /// The OS file behind this handle, if there is one, so an engine can memory-map it for
    /// reads. Simulated files (`FaultFs`) have none, and engines then read through
    /// [`FsFile::read_at`]: everything that changes the file still goes through the seam.
    fn as_std_file(&self) -> Option<&std::fs::File> {
        None
    }
}

/// The directory to [`FileSystem::sync_dir`] after creating, renaming or removing `path`: its
/// parent, or `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads a whole file. Allocates the file's length, which the file itself justifies.
pub fn read_file(fs: &dyn FileSystem, path: &Path) -> OrbitResult<Vec<u8>> {
    let file = fs.open(path, OpenMode::Read)?;
    let len = usize::try_from(file.len()?).map_err(|_| {
        OrbitError::io(
            "read",
            path,
            std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "file does not fit in memory",
            ),
        )
    })?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Replaces the file at `path` with `bytes` atomically and durably: writes `<path>.tmp`,
/// `fdatasync`s it, renames it over `path` and syncs the directory. After a crash at any point,
/// `path` holds either its old contents or all of `bytes`, never a mix (a stale `.tmp` may
/// remain and is overwritten by the next call). For small files: manifests, `CURRENT` pointers.
pub fn write_file_atomic(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> OrbitResult<()> {
    let tmp = tmp_path(path);
    let file = fs.open(&tmp, OpenMode::CreateOrTruncate)?;
    file.write_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, path)?;
    fs.sync_dir(parent_dir(path))
}

/// Bytes free for this (unprivileged) user on the file system holding `dir`: what a store can
/// still write before it fails with a full disk. `None` if the file system cannot say.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    stat.f_bavail.checked_mul(stat.f_frsize)
}

/// Bytes of the files directly in `dir` (0 if it cannot be listed): a store's disk use.
pub fn dir_bytes(fs: &dyn FileSystem, dir: &Path) -> u64 {
    let Ok(names) = fs.list_dir(dir) else {
        return 0;
    };
    names
        .iter()
        .filter_map(|n| fs.open(&dir.join(n), OpenMode::Read).ok())
        .filter_map(|f| f.len().ok())
        .sum()
}

/// `<path>.tmp`: the temporary file [`write_file_atomic`] writes before renaming.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The behaviour both implementations must share, run against each.
    fn round_trip_and_rename(fs: &dyn FileSystem, dir: &Path) {
        fs.create_dir_all(dir).unwrap();
        let a = dir.join("a");
        let f = fs.open(&a, OpenMode::CreateNew).unwrap();
        assert!(f.is_empty().unwrap());
        assert_eq!(f.append(b"hello ").unwrap(), 0);
        assert_eq!(f.append(b"world").unwrap(), 6);
        f.write_at(b"W", 6).unwrap();
        f.write_at(b"!", 13).unwrap(); // gap at 11..13 is zero-filled
        f.sync_data().unwrap();
        assert_eq!(f.len().unwrap(), 14);
        let mut buf = vec![0; 14];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello World\0\0!");
        // Reads past the end return 0 and read_exact_at names the shortfall.
        assert_eq!(f.read_at(&mut buf, 100).unwrap(), 0);
        let err = f.read_exact_at(&mut buf, 5).unwrap_err();
        assert!(err.to_string().contains("read"), "{err}");
        f.set_len(5).unwrap();
        f.sync_all().unwrap();
        drop(f);
        assert_eq!(read_file(fs, &a).unwrap(), b"hello");

        // CreateNew refuses to clobber; Read and ReadWrite need the file.
        assert!(fs.open(&a, OpenMode::CreateNew).is_err());
        assert!(fs.open(&dir.join("missing"), OpenMode::Read).is_err());
        assert!(fs.open(&dir.join("missing"), OpenMode::ReadWrite).is_err());
        let ro = fs.open(&a, OpenMode::Read).unwrap();
        assert!(
            ro.write_at(b"x", 0).is_err(),
            "read-only handle must not write"
        );

        // Atomic replace through rename + dir sync.
        write_file_atomic(fs, &dir.join("b"), b"v1").unwrap();
        write_file_atomic(fs, &dir.join("b"), b"v2").unwrap();
        assert_eq!(read_file(fs, &dir.join("b")).unwrap(), b"v2");
        assert!(!fs.exists(&tmp_path(&dir.join("b"))).unwrap());
        fs.rename(&a, &dir.join("c")).unwrap();
        fs.sync_dir(dir).unwrap();
        assert!(!fs.exists(&a).unwrap());
        assert_eq!(read_file(fs, &dir.join("c")).unwrap(), b"hello");
        assert_eq!(fs.list_dir(dir).unwrap(), vec!["b", "c"]);
        fs.remove_file(&dir.join("c")).unwrap();
        assert_eq!(fs.list_dir(dir).unwrap(), vec!["b"]);
        let err = fs.remove_file(&dir.join("c")).unwrap_err();
        assert!(
            matches!(&err, OrbitError::Io { op: "remove_file", path, .. } if path.ends_with("c")),
            "{err}"
        );
        let t = fs.open(&dir.join("b"), OpenMode::CreateOrTruncate).unwrap();
        assert_eq!(t.len().unwrap(), 0);
    }

    #[test]
    fn std_fs_round_trip_rename_and_dir_sync() {
        let tmp = tempfile::tempdir().unwrap();
        round_trip_and_rename(&StdFileSystem::new(), &tmp.path().join("data"));
    }

    #[test]
    fn fault_fs_round_trip_rename_and_dir_sync() {
        round_trip_and_rename(&FaultFs::new(), Path::new("/data"));
    }

    #[test]
    fn std_fs_creates_private_files_and_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let fs = StdFileSystem::new();
        let dir = tmp.path().join("d1").join("d2");
        fs.create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        fs.open(&f, OpenMode::CreateNew).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&tmp.path().join("d1")), DIR_MODE);
        assert_eq!(mode(&f), FILE_MODE);
    }

    #[test]
    fn parent_dir_of_bare_name_is_current_dir() {
        assert_eq!(parent_dir(Path::new("wal")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/db/wal")), Path::new("/db"));
        assert_eq!(
            tmp_path(Path::new("/db/MANIFEST")),
            Path::new("/db/MANIFEST.tmp")
        );
    }
}
