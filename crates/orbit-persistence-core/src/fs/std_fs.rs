//! [`StdFileSystem`]: the real disk, through `std::fs` and Unix positional I/O.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::{DIR_MODE, FILE_MODE, FileSystem, FsFile, OpenMode};
use crate::error::{OrbitError, OrbitResult};

/// The real file system. New files get mode [`FILE_MODE`], new directories [`DIR_MODE`];
/// [`FsFile::sync_data`] is `fdatasync`, [`FsFile::sync_all`] is `fsync`, and
/// [`FileSystem::sync_dir`] opens the directory and `fsync`s it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFileSystem;

impl StdFileSystem {
    /// The real file system.
    pub fn new() -> Self {
        StdFileSystem
    }
}

impl FileSystem for StdFileSystem {
    fn create_dir_all(&self, path: &Path) -> OrbitResult<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(path)
            .map_err(|e| OrbitError::io("create_dir_all", path, e))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> OrbitResult<Box<dyn FsFile>> {
        let mut options = OpenOptions::new();
        options.read(true).mode(FILE_MODE);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                options.write(true);
            }
            OpenMode::CreateNew => {
                options.write(true).create_new(true);
            }
            OpenMode::CreateOrTruncate => {
                options.write(true).create(true).truncate(true);
            }
        }
        let file = options
            .open(path)
            .map_err(|e| OrbitError::io("open", path, e))?;
        Ok(Box::new(StdFile {
            file,
            path: path.to_path_buf(),
            append_lock: Mutex::new(()),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> OrbitResult<()> {
        std::fs::rename(from, to).map_err(|e| OrbitError::io("rename", from, e))
    }

    fn remove_file(&self, path: &Path) -> OrbitResult<()> {
        std::fs::remove_file(path).map_err(|e| OrbitError::io("remove_file", path, e))
    }

    fn list_dir(&self, path: &Path) -> OrbitResult<Vec<String>> {
        let err = |e| OrbitError::io("list_dir", path, e);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(err)? {
            match entry.map_err(err)?.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(name) => tracing::debug!(
                    dir = %path.display(),
                    name = ?name,
                    "skipping a directory entry whose name is not UTF-8"
                ),
            }
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> OrbitResult<()> {
        let dir = File::open(path).map_err(|e| OrbitError::io("sync_dir", path, e))?;
        dir.sync_all()
            .map_err(|e| OrbitError::io("sync_dir", path, e))
    }

    fn exists(&self, path: &Path) -> OrbitResult<bool> {
        path.try_exists()
            .map_err(|e| OrbitError::io("exists", path, e))
    }
}

/// An open real file.
#[derive(Debug)]
struct StdFile {
    file: File,
    path: PathBuf,
    /// Serializes [`FsFile::append`] (length lookup + write) so two appends never overlap.
    append_lock: Mutex<()>,
}

impl StdFile {
    fn err(&self, op: &'static str) -> impl FnOnce(io::Error) -> OrbitError + '_ {
        move |e| OrbitError::io(op, &self.path, e)
    }
}

impl FsFile for StdFile {
    fn as_std_file(&self) -> Option<&File> {
        Some(&self.file)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> OrbitResult<u64> {
        Ok(self.file.metadata().map_err(self.err("stat"))?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> OrbitResult<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map_err(self.err("read")),
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> OrbitResult<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(self.err("write"))
    }

    fn append(&self, buf: &[u8]) -> OrbitResult<u64> {
        // The guarded value is `()`: a panic elsewhere cannot leave it inconsistent.
        let _guard = self
            .append_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let offset = self.file.metadata().map_err(self.err("append"))?.len();
        self.file
            .write_all_at(buf, offset)
            .map_err(self.err("append"))?;
        Ok(offset)
    }

    fn set_len(&self, len: u64) -> OrbitResult<()> {
        self.file.set_len(len).map_err(self.err("set_len"))
    }

    fn sync_data(&self) -> OrbitResult<()> {
        self.file.sync_data().map_err(self.err("fdatasync"))
    }

    fn sync_all(&self) -> OrbitResult<()> {
        self.file.sync_all().map_err(self.err("fsync"))
    }
}
