//! [`DirLock`]: one open store per data directory, across threads and processes.
//!
//! # File format
//!
//! `<data_dir>/LOCK`, mode `0600`: the ASCII decimal id of the process holding the lock,
//! followed by `\n`. Informational only, for humans and `ps`: it is never read back. The lock
//! itself is an exclusive OS lock on the open file (`flock(LOCK_EX | LOCK_NB)` through
//! [`std::fs::File::try_lock`]), so it belongs to the open file, is released when the
//! [`DirLock`] is dropped, and dies with the process: after a `kill -9` there is no stale lock
//! to clean up, and a leftover `LOCK` file with a dead pid is harmless.
//!
//! The lock deliberately bypasses the [`crate::fs`] seam: the OS lock is the point, and an
//! in-memory file system cannot exclude another process.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{OrbitError, OrbitResult};
use crate::fs::{DIR_MODE, FILE_MODE, parent_dir};

/// An exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    /// Holding the open file holds the lock.
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Name of the lock file inside the data directory.
    pub const FILE_NAME: &'static str = "LOCK";

    /// Creates `dir` (mode `0700`, parent synced so the new directory survives a power loss) if
    /// it is missing, then opens or creates `dir/LOCK` (mode `0600`) and takes an exclusive,
    /// non-blocking OS lock on it.
    ///
    /// Fails with [`OrbitError::Locked`] naming the lock file if another [`DirLock`] on `dir`
    /// is alive, in this process or any other.
    pub fn acquire(dir: &Path) -> OrbitResult<DirLock> {
        let existed = dir
            .try_exists()
            .map_err(|e| OrbitError::io("stat", dir, e))?;
        if !existed {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|e| OrbitError::io("create_dir_all", dir, e))?;
            let parent = parent_dir(dir);
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| OrbitError::io("sync_dir", parent, e))?;
        }
        let path = dir.join(Self::FILE_NAME);
        // No truncate on open: the file may belong to a live holder until we have the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| OrbitError::io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(OrbitError::Locked { path }),
            Err(TryLockError::Error(e)) => return Err(OrbitError::io("lock", &path, e)),
        }
        // Informational: a failure to record the pid must not fail the open.
        let record = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        if let Err(e) = record {
            tracing::debug!(path = %path.display(), error = %e, "could not write pid to LOCK");
        }
        Ok(DirLock { _file: file, path })
    }

    /// Takes a shared OS lock on `dir/LOCK` for a read-only open: many readers at once, but
    /// never beside a writer (whose exclusive lock it waits for no more than
    /// [`DirLock::acquire`] does). Creates nothing and writes nothing, so it works on a
    /// read-only mount and a full disk; without a `LOCK` file (a copy of a store, say) there
    /// is nothing to lock and `None` is returned.
    ///
    /// Fails with [`OrbitError::Locked`] while a writer holds the directory.
    pub fn acquire_shared(dir: &Path) -> OrbitResult<Option<DirLock>> {
        let path = dir.join(Self::FILE_NAME);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OrbitError::io("open", &path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(DirLock { _file: file, path })),
            Err(TryLockError::WouldBlock) => Err(OrbitError::Locked { path }),
            Err(TryLockError::Error(e)) => Err(OrbitError::io("lock", &path, e)),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    /// Unlocks explicitly before closing. A process that forks (to run a child) gives the child
    /// a copy of every descriptor until the child's `exec`; closing our descriptor in that window
    /// would leave the lock held by the child's copy. `flock(LOCK_UN)` releases the lock of the
    /// open file itself, whoever else still has it open.
    fn drop(&mut self) {
        if let Err(e) = self._file.unlock() {
            tracing::warn!(path = %self.path.display(), error = %e, "could not unlock LOCK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    const CHILD_ENV: &str = "ORBIT_LOCK_TEST_CHILD_DIR";
    const CHILD_READY: &str = "ORBIT_CHILD_HOLDS_LOCK";

    #[test]
    fn drop_releases_the_lock_even_while_a_copy_of_the_descriptor_lives() {
        // What a child process forked by another thread holds until its exec.
        let tmp = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(tmp.path()).unwrap();
        let inherited = lock._file.try_clone().unwrap();
        drop(lock);
        let again = DirLock::acquire(tmp.path());
        assert!(
            again.is_ok(),
            "lock still held through a copied descriptor: {again:?}"
        );
        drop(inherited);
    }

    #[test]
    fn second_acquire_in_process_is_locked_until_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let first = DirLock::acquire(&dir).unwrap();
        assert_eq!(first.path(), dir.join("LOCK"));
        let err = DirLock::acquire(&dir).unwrap_err();
        match &err {
            OrbitError::Locked { path } => assert_eq!(path, &dir.join("LOCK")),
            other => panic!("expected Locked, got {other}"),
        }
        assert!(err.to_string().contains("LOCK"), "{err}");
        drop(first);
        let again = DirLock::acquire(&dir).unwrap();
        let pid = std::fs::read_to_string(again.path()).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
    }

    #[test]
    fn creates_a_private_data_dir_and_lock_file() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b");
        let lock = DirLock::acquire(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(lock.path()), 0o600);
    }

    #[test]
    fn lock_in_a_file_path_fails_with_io() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let err = DirLock::acquire(&file).unwrap_err();
        assert!(matches!(err, OrbitError::Io { .. }), "{err}");
    }

    /// Not a test on its own: the body of the child process of
    /// [`another_process_holding_the_lock_excludes_us_and_kill_9_releases_it`]. Without the
    /// environment variable it does nothing.
    #[test]
    fn lock_holder_child_process() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let _lock = DirLock::acquire(Path::new(&dir)).unwrap();
        println!("{CHILD_READY}");
        // Hold the lock until the parent kills us (or closes stdin).
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }

    #[test]
    fn another_process_holding_the_lock_excludes_us_and_kill_9_releases_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock::tests::lock_holder_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Read the child's output on a thread so a child that never gets ready cannot hang us.
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // libtest may print "test <name> ... " on the same line before the marker.
            let ready = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains(CHILD_READY));
            let _ = ready_tx.send(ready);
        });
        let ready = ready_rx.recv_timeout(std::time::Duration::from_secs(60));
        if ready != Ok(true) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child never reported holding the lock: {ready:?}");
        }
        let err = DirLock::acquire(&dir).unwrap_err();
        assert!(matches!(err, OrbitError::Locked { .. }), "{err}");
        // kill -9: no cleanup runs in the child, the kernel drops the lock with the process.
        child.kill().unwrap();
        child.wait().unwrap();
        DirLock::acquire(&dir).unwrap();
    }
}
