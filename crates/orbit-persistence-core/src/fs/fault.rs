//! [`FaultFs`]: an in-memory file system that models what survives a power loss, for crash and
//! I/O-error tests (docs/reliability.md rows B, C, D).
//!
//! # Model
//!
//! - A file (inode) has *current* contents, what reads return, and *durable* contents, what a
//!   successful `sync_data`/`sync_all` last made durable.
//! - A directory has *current* entries and *durable* entries, as of its last successful
//!   `sync_dir`. Creating, renaming and removing a file change current entries only. Directories
//!   created by `create_dir_all` are themselves entries of their parent. The roots (`/`, and
//!   `` for relative paths; a leading `.` is ignored) always exist.
//! - [`FaultFs::crash`] builds the machine after a power loss: each directory that is reachable
//!   through durable entries keeps its durable entries, each file they name keeps its durable
//!   contents, everything else is gone. [`FaultFs::crash_torn`] is the pessimistic,
//!   seeded variant: each directory keeps either its durable or its current entries (the
//!   journal committed or not), each file keeps its durable contents plus a random prefix of the
//!   bytes appended since its last sync (a torn append), and each unsynced overwrite within the
//!   durable length lands or not per 512-byte sector.
//! - A failed sync makes nothing durable and, as on Linux ("fsyncgate"), loses the data it was
//!   flushing: the byte range dirtied since the previous sync is marked lost, a later sync that
//!   succeeds does not make those bytes durable (they keep their old durable value, or zeros),
//!   unless they are written again.
//! - Write-type operations that fail (injected fault, space limit) change nothing.
//!
//! Not modelled: hard links, directory renames and removals, `..` in paths, partial writes,
//! file metadata other than the length.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{FileSystem, FsFile, OpenMode};
use crate::error::{OrbitError, OrbitResult};

/// Which calls a fault armed with [`FaultFs::fail_nth_op`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `write_at`, `append`, `set_len`.
    Write,
    /// `sync_data`, `sync_all`, `sync_dir`.
    Sync,
    /// `rename`.
    Rename,
    /// `open` with a creating [`OpenMode`], `create_dir_all`.
    Create,
    /// `remove_file`.
    Remove,
    /// Any of the above: every call that counts in [`FaultFs::op_count`].
    Any,
}

/// Granularity at which [`FaultFs::crash_torn`] lands or drops unsynced overwrites.
const SECTOR: usize = 512;

/// An in-memory, fault-injecting [`FileSystem`] for tests. Cloning gives another handle on the
/// same simulated machine; [`FaultFs::crash`] gives a new machine holding what survived.
#[derive(Debug, Clone)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

impl Default for FaultFs {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Clone, Default)]
struct Dir {
    current: BTreeMap<String, Entry>,
    durable: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Lowest offset written since the last sync, if any.
    dirty_from: Option<u64>,
    /// Byte ranges a failed sync dropped: never made durable unless written again.
    lost: Vec<(u64, u64)>,
    /// Whether a current directory entry names this inode (counts toward the space limit).
    linked: bool,
}

#[derive(Debug)]
struct ArmedFault {
    kind: FaultKind,
    remaining: u64,
}

#[derive(Debug)]
struct State {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    ops: u64,
    faults: Vec<ArmedFault>,
    /// Counted calls left before the machine halts.
    halt_in: Option<u64>,
    halted: bool,
    space_limit: Option<u64>,
    /// Calls that failed because of an armed fault or the space limit.
    injected_failures: u64,
}

impl State {
    fn new() -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::from("/"), Dir::default());
        dirs.insert(PathBuf::new(), Dir::default());
        State {
            dirs,
            inodes: HashMap::new(),
            next_ino: 1,
            ops: 0,
            faults: Vec::new(),
            halt_in: None,
            halted: false,
            space_limit: None,
            injected_failures: 0,
        }
    }

    /// Every call checks this: a halted machine answers nothing.
    fn check_running(&self, op: &'static str, path: &Path) -> OrbitResult<()> {
        if self.halted {
            return Err(OrbitError::io(
                op,
                path,
                io::Error::other("injected crash: the simulated machine has halted"),
            ));
        }
        Ok(())
    }

    /// Counts one durability-relevant call of `kind` and fires any fault or halt it triggers.
    fn count(&mut self, kind: FaultKind, op: &'static str, path: &Path) -> OrbitResult<()> {
        self.check_running(op, path)?;
        self.ops += 1;
        if let Some(n) = self.halt_in.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.halt_in = None;
                self.halted = true;
                return self.check_running(op, path);
            }
        }
        let mut fire = false;
        self.faults.retain_mut(|f| {
            if f.kind == FaultKind::Any || f.kind == kind {
                f.remaining -= 1;
                if f.remaining == 0 {
                    fire = true;
                    return false;
                }
            }
            true
        });
        if fire {
            self.injected_failures += 1;
            return Err(OrbitError::io(op, path, io::Error::other("injected fault")));
        }
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .filter(|i| i.linked)
            .map(|i| i.current.len() as u64)
            .sum()
    }

    /// Fails with `StorageFull` if growing a file by `grow` bytes would pass the limit.
    fn check_space(&mut self, grow: u64, op: &'static str, path: &Path) -> OrbitResult<()> {
        if let Some(limit) = self.space_limit
            && grow > 0
            && self.used_bytes().saturating_add(grow) > limit
        {
            self.injected_failures += 1;
            return Err(OrbitError::io(
                op,
                path,
                io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("injected ENOSPC: space limit of {limit} bytes reached"),
                ),
            ));
        }
        Ok(())
    }

    fn dir(&self, path: &Path, op: &'static str, orig: &Path) -> OrbitResult<&Dir> {
        self.dirs.get(path).ok_or_else(|| not_found(op, orig))
    }

    fn dir_mut(&mut self, path: &Path, op: &'static str, orig: &Path) -> OrbitResult<&mut Dir> {
        self.dirs.get_mut(path).ok_or_else(|| not_found(op, orig))
    }

    fn inode_mut(&mut self, ino: u64, op: &'static str, path: &Path) -> OrbitResult<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| not_found(op, path))
    }

    fn lookup(&self, path: &Path, op: &'static str) -> OrbitResult<Option<Entry>> {
        let (parent, name) = split(path, op)?;
        Ok(self.dir(&parent, op, path)?.current.get(&name).copied())
    }
}

impl Inode {
    /// Records that `[from, to)` was written: dirty, and no longer lost.
    fn touch(&mut self, from: u64, to: u64) {
        self.dirty_from = Some(self.dirty_from.map_or(from, |d| d.min(from)));
        let mut kept = Vec::with_capacity(self.lost.len());
        for &(a, b) in &self.lost {
            if b <= from || a >= to {
                kept.push((a, b));
            } else {
                if a < from {
                    kept.push((a, from));
                }
                if b > to {
                    kept.push((to, b));
                }
            }
        }
        self.lost = kept;
    }

    /// What the device would write back: current contents with lost ranges reverted.
    fn writeback(&self) -> Vec<u8> {
        let mut data = self.current.clone();
        for &(a, b) in &self.lost {
            let end = (b as usize).min(data.len());
            for (i, byte) in data.iter_mut().enumerate().take(end).skip(a as usize) {
                *byte = self.durable.get(i).copied().unwrap_or(0);
            }
        }
        data
    }

    /// Lost ranges stay lost: their pages are clean in the cache, so no later sync writes them.
    fn sync_succeeded(&mut self) {
        self.durable = self.writeback();
        self.dirty_from = None;
    }

    fn sync_failed(&mut self) {
        let end = self.current.len() as u64;
        if let Some(from) = self.dirty_from.take()
            && from < end
        {
            self.lost.push((from, end));
        }
    }

    /// The contents after a torn crash: see the module docs.
    fn torn(&self, rng: &mut SplitMix64) -> Vec<u8> {
        let wb = self.writeback();
        let d = &self.durable;
        let len = if wb.len() >= d.len() {
            d.len() + rng.below((wb.len() - d.len()) as u64 + 1) as usize
        } else if rng.coin() {
            wb.len()
        } else {
            d.len()
        };
        let mut out = vec![0u8; len];
        let overlap = d.len().min(wb.len()).min(len);
        for start in (0..overlap).step_by(SECTOR) {
            let end = (start + SECTOR).min(overlap);
            let src = if rng.coin() { &wb } else { d };
            out[start..end].copy_from_slice(&src[start..end]);
        }
        // Past the overlap only one version has bytes: the appended prefix or the old tail.
        let longer = if wb.len() >= d.len() { &wb } else { d };
        out[overlap..len].copy_from_slice(&longer[overlap..len]);
        out
    }
}

/// A tiny deterministic RNG (SplitMix64), so torn crashes replay from a seed.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n`; `n` must be at least 1.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

fn not_found(op: &'static str, path: &Path) -> OrbitError {
    OrbitError::io(op, path, io::Error::from(io::ErrorKind::NotFound))
}

fn io_err(op: &'static str, path: &Path, kind: io::ErrorKind, msg: &str) -> OrbitError {
    OrbitError::io(op, path, io::Error::new(kind, msg.to_string()))
}

/// `path` without `.` components; `..` is not supported.
fn normalize(path: &Path, op: &'static str) -> OrbitResult<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(io_err(
                    op,
                    path,
                    io::ErrorKind::InvalidInput,
                    "FaultFs does not resolve `..`",
                ));
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// (normalized parent, file name) of a path that names an entry.
fn split(path: &Path, op: &'static str) -> OrbitResult<(PathBuf, String)> {
    let norm = normalize(path, op)?;
    let name = norm.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io_err(
            op,
            path,
            io::ErrorKind::InvalidInput,
            "path has no UTF-8 file name",
        )
    })?;
    let parent = norm.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((parent, name.to_string()))
}

impl FaultFs {
    /// An empty machine: only the roots `/` and `` (relative paths) exist.
    pub fn new() -> Self {
        FaultFs {
            state: Arc::new(Mutex::new(State::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a failing test) leaves the model usable enough.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms a one-shot fault: the `n`th call of `kind` from now (`n = 1`: the very next one)
    /// fails with `io::Error::other("injected fault")` and changes nothing; later calls succeed
    /// again, which is how tests catch a store that retries a failed sync. Several faults may
    /// be armed at once.
    ///
    /// # Panics
    ///
    /// If `n` is 0 (a test bug: there is no zeroth call).
    pub fn fail_nth_op(&self, n: u64, kind: FaultKind) {
        assert!(n >= 1, "fail_nth_op counts from 1");
        self.lock().faults.push(ArmedFault { kind, remaining: n });
    }

    /// Disarms every fault armed with [`FaultFs::fail_nth_op`].
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Halts the machine at the `n`th counted call from now (`n = 1`: the next one): that call
    /// and every call after it, reads included, fail and change nothing. A [`FaultFs::crash`]
    /// afterwards therefore yields exactly the durable state just before that call, which is
    /// how a test crashes "right before durability point `n`" (docs/reliability.md row C).
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn halt_at_op(&self, n: u64) {
        assert!(n >= 1, "halt_at_op counts from 1");
        self.lock().halt_in = Some(n);
    }

    /// Whether the machine halted (see [`FaultFs::halt_at_op`]).
    pub fn is_halted(&self) -> bool {
        self.lock().halted
    }

    /// Limits the bytes held by all linked files; a write, append or `set_len` that would pass
    /// it fails with `io::ErrorKind::StorageFull` (ENOSPC) and writes nothing. `None` removes
    /// the limit.
    pub fn set_space_limit(&self, bytes: Option<u64>) {
        self.lock().space_limit = bytes;
    }

    /// How many calls failed because of an armed fault or the space limit: zero after a run
    /// means the fault never fired, so a test sweeping `n` upwards knows when to stop.
    pub fn injected_failures(&self) -> u64 {
        self.lock().injected_failures
    }

    /// Bytes currently held by linked files (what the space limit counts).
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// How many counted calls (every [`FaultKind`] except reads, `exists`, `list_dir` and
    /// non-creating opens) this machine has seen: run a workload once, then replay it with a
    /// fault or a halt at each of `1..=op_count()`.
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    /// Simulates a power loss: returns a new machine holding only what was durable (see the
    /// module docs), with no armed faults, halt or space limit. This handle keeps working on
    /// the old machine, so threads of a store that "died" write where nobody looks.
    pub fn crash(&self) -> FaultFs {
        self.crash_with(None)
    }

    /// Like [`FaultFs::crash`], but pessimistic and seeded: unsynced directory changes land or
    /// not per directory, unsynced appends survive as a random prefix (torn writes), unsynced
    /// overwrites land or not per 512-byte sector. Same seed, same result.
    pub fn crash_torn(&self, seed: u64) -> FaultFs {
        self.crash_with(Some(SplitMix64(seed)))
    }

    fn crash_with(&self, mut rng: Option<SplitMix64>) -> FaultFs {
        let old = self.lock();
        let mut new = State::new();
        new.dirs.clear();
        // Parents sort before their children, so each parent is decided first.
        for (path, dir) in &old.dirs {
            let survives = match path.parent() {
                None => true,
                Some(parent) => {
                    let name = path.file_name().and_then(|n| n.to_str());
                    match (new.dirs.get(parent), name) {
                        (Some(p), Some(name)) => p.current.get(name) == Some(&Entry::Dir),
                        _ => false,
                    }
                }
            };
            if !survives {
                continue;
            }
            let journal_committed = rng.as_mut().is_some_and(SplitMix64::coin);
            let entries = if journal_committed {
                &dir.current
            } else {
                &dir.durable
            };
            let mut kept = BTreeMap::new();
            for (name, entry) in entries {
                let entry = match *entry {
                    Entry::Dir => Entry::Dir,
                    Entry::File(ino) => {
                        let Some(inode) = old.inodes.get(&ino) else {
                            continue;
                        };
                        let contents = match rng.as_mut() {
                            Some(r) => inode.torn(r),
                            None => inode.durable.clone(),
                        };
                        // A fresh inode per entry: an unsynced cross-directory rename can
                        // leave the file in both places, as two independent files.
                        let new_ino = new.next_ino;
                        new.next_ino += 1;
                        new.inodes.insert(
                            new_ino,
                            Inode {
                                current: contents.clone(),
                                durable: contents,
                                linked: true,
                                ..Inode::default()
                            },
                        );
                        Entry::File(new_ino)
                    }
                };
                kept.insert(name.clone(), entry);
            }
            new.dirs.insert(
                path.clone(),
                Dir {
                    current: kept.clone(),
                    durable: kept,
                },
            );
        }
        FaultFs {
            state: Arc::new(Mutex::new(new)),
        }
    }

    /// Makes `path` and all its ancestors exist durably, as if they predated the test.
    pub fn create_dir_all_durable(&self, path: &Path) -> OrbitResult<()> {
        self.create_dir_all(path)?;
        let norm = normalize(path, "create_dir_all")?;
        let mut st = self.lock();
        for dir in norm.ancestors() {
            if let Some(d) = st.dirs.get_mut(dir) {
                d.durable = d.current.clone();
            }
        }
        Ok(())
    }
}

impl FileSystem for FaultFs {
    fn create_dir_all(&self, path: &Path) -> OrbitResult<()> {
        const OP: &str = "create_dir_all";
        let norm = normalize(path, OP)?;
        let mut st = self.lock();
        st.count(FaultKind::Create, OP, path)?;
        let mut cur = PathBuf::new();
        for c in norm.components() {
            let parent = cur.clone();
            cur.push(c);
            if st.dirs.contains_key(&cur) {
                continue;
            }
            let Some(name) = cur.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                // A root component (`/`): always present.
                st.dirs.entry(cur.clone()).or_default();
                continue;
            };
            let pdir = st.dir_mut(&parent, OP, path)?;
            if pdir.current.contains_key(&name) {
                return Err(io_err(
                    OP,
                    path,
                    io::ErrorKind::NotADirectory,
                    "a file is in the way",
                ));
            }
            pdir.current.insert(name, Entry::Dir);
            st.dirs.insert(cur.clone(), Dir::default());
        }
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> OrbitResult<Box<dyn FsFile>> {
        const OP: &str = "open";
        let mut st = self.lock();
        if mode.creates() {
            st.count(FaultKind::Create, OP, path)?;
        } else {
            st.check_running(OP, path)?;
        }
        let (parent, name) = split(path, OP)?;
        let existing = st.dir(&parent, OP, path)?.current.get(&name).copied();
        let ino = match (existing, mode) {
            (Some(Entry::Dir), _) => {
                return Err(io_err(
                    OP,
                    path,
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                ));
            }
            (Some(Entry::File(_)), OpenMode::CreateNew) => {
                return Err(OrbitError::io(
                    OP,
                    path,
                    io::Error::from(io::ErrorKind::AlreadyExists),
                ));
            }
            (Some(Entry::File(ino)), OpenMode::CreateOrTruncate) => {
                let inode = st.inode_mut(ino, OP, path)?;
                if !inode.current.is_empty() {
                    inode.current.clear();
                    inode.touch(0, 0);
                }
                ino
            }
            (Some(Entry::File(ino)), OpenMode::Read | OpenMode::ReadWrite) => ino,
            (None, OpenMode::Read | OpenMode::ReadWrite) => return Err(not_found(OP, path)),
            (None, OpenMode::CreateNew | OpenMode::CreateOrTruncate) => {
                let ino = st.next_ino;
                st.next_ino += 1;
                st.inodes.insert(
                    ino,
                    Inode {
                        linked: true,
                        ..Inode::default()
                    },
                );
                st.dir_mut(&parent, OP, path)?
                    .current
                    .insert(name, Entry::File(ino));
                ino
            }
        };
        Ok(Box::new(FaultFile {
            state: Arc::clone(&self.state),
            ino,
            path: path.to_path_buf(),
            writable: mode.writable(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> OrbitResult<()> {
        const OP: &str = "rename";
        let mut st = self.lock();
        st.count(FaultKind::Rename, OP, from)?;
        let (from_parent, from_name) = split(from, OP)?;
        let (to_parent, to_name) = split(to, OP)?;
        let Some(Entry::File(ino)) = st.lookup(from, OP)? else {
            return Err(not_found(OP, from));
        };
        st.dir(&to_parent, OP, to)?;
        if (&from_parent, &from_name) == (&to_parent, &to_name) {
            return Ok(());
        }
        match st.lookup(to, OP)? {
            Some(Entry::Dir) => {
                return Err(io_err(
                    OP,
                    from,
                    io::ErrorKind::IsADirectory,
                    "target is a directory",
                ));
            }
            Some(Entry::File(old)) => st.inode_mut(old, OP, to)?.linked = false,
            None => {}
        }
        st.dir_mut(&from_parent, OP, from)?
            .current
            .remove(&from_name);
        st.dir_mut(&to_parent, OP, to)?
            .current
            .insert(to_name, Entry::File(ino));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> OrbitResult<()> {
        const OP: &str = "remove_file";
        let mut st = self.lock();
        st.count(FaultKind::Remove, OP, path)?;
        let (parent, name) = split(path, OP)?;
        let Some(Entry::File(ino)) = st.lookup(path, OP)? else {
            return Err(not_found(OP, path));
        };
        st.dir_mut(&parent, OP, path)?.current.remove(&name);
        st.inode_mut(ino, OP, path)?.linked = false;
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> OrbitResult<Vec<String>> {
        const OP: &str = "list_dir";
        let st = self.lock();
        st.check_running(OP, path)?;
        let norm = normalize(path, OP)?;
        Ok(st.dir(&norm, OP, path)?.current.keys().cloned().collect())
    }

    fn sync_dir(&self, path: &Path) -> OrbitResult<()> {
        const OP: &str = "sync_dir";
        let mut st = self.lock();
        let norm = normalize(path, OP)?;
        st.dir(&norm, OP, path)?;
        st.count(FaultKind::Sync, OP, path)?;
        let dir = st.dir_mut(&norm, OP, path)?;
        dir.durable = dir.current.clone();
        Ok(())
    }

    fn exists(&self, path: &Path) -> OrbitResult<bool> {
        const OP: &str = "exists";
        let st = self.lock();
        st.check_running(OP, path)?;
        let norm = normalize(path, OP)?;
        if st.dirs.contains_key(&norm) {
            return Ok(true);
        }
        let (parent, name) = split(path, OP)?;
        Ok(st
            .dirs
            .get(&parent)
            .is_some_and(|d| d.current.contains_key(&name)))
    }
}

/// An open [`FaultFs`] file: a handle on an inode, so it survives renames like a real fd.
#[derive(Debug)]
struct FaultFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    path: PathBuf,
    writable: bool,
}

impl FaultFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_writable(&self, op: &'static str) -> OrbitResult<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io_err(
                op,
                &self.path,
                io::ErrorKind::PermissionDenied,
                "file was opened read-only",
            ))
        }
    }

    /// The shared body of `write_at` and `append` (`offset = None`: at the end).
    fn write(&self, op: &'static str, buf: &[u8], offset: Option<u64>) -> OrbitResult<u64> {
        self.check_writable(op)?;
        let mut st = self.lock();
        st.count(FaultKind::Write, op, &self.path)?;
        let cur_len = st.inode_mut(self.ino, op, &self.path)?.current.len() as u64;
        let offset = offset.unwrap_or(cur_len);
        let end = offset.checked_add(buf.len() as u64).ok_or_else(|| {
            io_err(
                op,
                &self.path,
                io::ErrorKind::InvalidInput,
                "offset overflow",
            )
        })?;
        let linked = st.inode_mut(self.ino, op, &self.path)?.linked;
        if linked {
            st.check_space(end.saturating_sub(cur_len), op, &self.path)?;
        }
        let inode = st.inode_mut(self.ino, op, &self.path)?;
        let (start, end) = (offset as usize, end as usize);
        if inode.current.len() < end {
            inode.current.resize(end, 0);
        }
        inode.current[start..end].copy_from_slice(buf);
        inode.touch(offset.min(cur_len), end as u64);
        Ok(offset)
    }

    fn sync(&self, op: &'static str) -> OrbitResult<()> {
        let mut st = self.lock();
        match st.count(FaultKind::Sync, op, &self.path) {
            Ok(()) => {
                st.inode_mut(self.ino, op, &self.path)?.sync_succeeded();
                Ok(())
            }
            Err(e) => {
                // A halt is a power loss just before this call, not an fsync error: the dirty
                // data is not dropped, so a torn crash may still find any of it written back.
                if !st.halted
                    && let Some(inode) = st.inodes.get_mut(&self.ino)
                {
                    inode.sync_failed();
                }
                Err(e)
            }
        }
    }
}

impl FsFile for FaultFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> OrbitResult<u64> {
        let mut st = self.lock();
        st.check_running("stat", &self.path)?;
        Ok(st.inode_mut(self.ino, "stat", &self.path)?.current.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> OrbitResult<usize> {
        let mut st = self.lock();
        st.check_running("read", &self.path)?;
        let data = &st.inode_mut(self.ino, "read", &self.path)?.current;
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= data.len() {
            return Ok(0);
        }
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> OrbitResult<()> {
        self.write("write", buf, Some(offset)).map(|_| ())
    }

    fn append(&self, buf: &[u8]) -> OrbitResult<u64> {
        self.write("append", buf, None)
    }

    fn set_len(&self, len: u64) -> OrbitResult<()> {
        const OP: &str = "set_len";
        self.check_writable(OP)?;
        let mut st = self.lock();
        st.count(FaultKind::Write, OP, &self.path)?;
        let inode = st.inode_mut(self.ino, OP, &self.path)?;
        let cur_len = inode.current.len() as u64;
        if inode.linked {
            st.check_space(len.saturating_sub(cur_len), OP, &self.path)?;
        }
        let new_len = usize::try_from(len).map_err(|_| {
            io_err(
                OP,
                &self.path,
                io::ErrorKind::InvalidInput,
                "length too large",
            )
        })?;
        let inode = st.inode_mut(self.ino, OP, &self.path)?;
        inode.current.resize(new_len, 0);
        inode.touch(cur_len.min(len), cur_len.max(len));
        Ok(())
    }

    fn sync_data(&self) -> OrbitResult<()> {
        self.sync("fdatasync")
    }

    fn sync_all(&self) -> OrbitResult<()> {
        self.sync("fsync")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::read_file;

    fn dir() -> (FaultFs, PathBuf) {
        let fs = FaultFs::new();
        let d = PathBuf::from("/db");
        fs.create_dir_all_durable(&d).unwrap();
        (fs, d)
    }

    fn is_injected(e: &OrbitError) -> bool {
        matches!(e, OrbitError::Io { source, .. } if source.to_string() == "injected fault")
    }

    #[test]
    fn unsynced_appends_vanish_after_crash_and_synced_data_survives() {
        let (fs, d) = dir();
        let p = d.join("log");
        let f = fs.open(&p, OpenMode::CreateNew).unwrap();
        fs.sync_dir(&d).unwrap();
        f.append(b"durable").unwrap();
        f.sync_data().unwrap();
        f.append(b" volatile").unwrap();
        assert_eq!(read_file(&fs, &p).unwrap(), b"durable volatile");
        let after = fs.crash();
        assert_eq!(read_file(&after, &p).unwrap(), b"durable");
        // The old handle still writes to the old machine, invisible to the new one.
        f.append(b"!").unwrap();
        assert_eq!(read_file(&after, &p).unwrap(), b"durable");
    }

    #[test]
    fn file_created_without_dir_sync_vanishes_after_crash() {
        let (fs, d) = dir();
        let p = d.join("new");
        let f = fs.open(&p, OpenMode::CreateNew).unwrap();
        f.append(b"data").unwrap();
        f.sync_data().unwrap(); // the data is durable, the name is not
        let after = fs.crash();
        assert!(!after.exists(&p).unwrap());
        assert!(after.list_dir(&d).unwrap().is_empty());
        // With the dir synced, it survives.
        fs.sync_dir(&d).unwrap();
        assert_eq!(read_file(&fs.crash(), &p).unwrap(), b"data");
    }

    #[test]
    fn unsynced_directory_creation_vanishes_after_crash() {
        let fs = FaultFs::new();
        fs.create_dir_all(Path::new("/a/b")).unwrap();
        fs.sync_dir(Path::new("/a")).unwrap(); // b is durable in a, but a is not durable in /
        assert!(!fs.crash().exists(Path::new("/a")).unwrap());
        fs.sync_dir(Path::new("/")).unwrap();
        let after = fs.crash();
        assert!(after.exists(Path::new("/a/b")).unwrap());
        // Relative paths live under their own root.
        fs.create_dir_all(Path::new("rel/x")).unwrap();
        fs.sync_dir(Path::new(".")).unwrap();
        fs.sync_dir(Path::new("./rel")).unwrap();
        assert!(fs.crash().exists(Path::new("rel/x")).unwrap());
    }

    #[test]
    fn unsynced_rename_reverts_after_crash() {
        let (fs, d) = dir();
        let (old, new) = (d.join("MANIFEST.tmp"), d.join("MANIFEST"));
        let f = fs.open(&new, OpenMode::CreateNew).unwrap();
        f.append(b"v1").unwrap();
        f.sync_data().unwrap();
        let t = fs.open(&old, OpenMode::CreateNew).unwrap();
        t.append(b"v2").unwrap();
        t.sync_data().unwrap();
        fs.sync_dir(&d).unwrap();
        fs.rename(&old, &new).unwrap();
        assert_eq!(read_file(&fs, &new).unwrap(), b"v2");
        let after = fs.crash();
        assert_eq!(read_file(&after, &new).unwrap(), b"v1");
        assert_eq!(read_file(&after, &old).unwrap(), b"v2");
        fs.sync_dir(&d).unwrap();
        let after = fs.crash();
        assert_eq!(read_file(&after, &new).unwrap(), b"v2");
        assert!(!after.exists(&old).unwrap());
    }

    #[test]
    fn nth_op_of_a_kind_fails_once_and_changes_nothing() {
        let (fs, d) = dir();
        let f = fs.open(&d.join("f"), OpenMode::CreateNew).unwrap();
        fs.fail_nth_op(2, FaultKind::Write);
        f.append(b"one").unwrap();
        f.sync_data().unwrap(); // a sync does not count toward a Write fault
        let err = f.append(b"two").unwrap_err();
        assert!(is_injected(&err), "{err}");
        assert!(
            matches!(&err, OrbitError::Io { op: "append", path, .. } if path.ends_with("f")),
            "{err}"
        );
        assert_eq!(f.len().unwrap(), 3, "a failed write writes nothing");
        f.append(b"three").unwrap(); // one-shot
        fs.fail_nth_op(1, FaultKind::Rename);
        assert!(is_injected(
            &fs.rename(&d.join("f"), &d.join("g")).unwrap_err()
        ));
        assert!(fs.exists(&d.join("f")).unwrap());
        let before = fs.op_count();
        fs.fail_nth_op(3, FaultKind::Any);
        f.set_len(1).unwrap();
        fs.sync_dir(&d).unwrap();
        assert!(is_injected(&fs.remove_file(&d.join("f")).unwrap_err()));
        assert_eq!(fs.op_count(), before + 3);
    }

    #[test]
    fn failed_sync_makes_nothing_durable_and_loses_the_dirty_range() {
        let (fs, d) = dir();
        let p = d.join("wal");
        let f = fs.open(&p, OpenMode::CreateNew).unwrap();
        fs.sync_dir(&d).unwrap();
        f.append(b"AAAA").unwrap();
        f.sync_data().unwrap();
        f.append(b"BBBB").unwrap();
        fs.fail_nth_op(1, FaultKind::Sync);
        assert!(is_injected(&f.sync_data().unwrap_err()));
        assert_eq!(read_file(&fs.crash(), &p).unwrap(), b"AAAA");
        // fsyncgate: a retried sync "succeeds" but the pages it reported lost stay lost.
        f.append(b"CCCC").unwrap();
        f.sync_data().unwrap();
        assert_eq!(read_file(&fs, &p).unwrap(), b"AAAABBBBCCCC");
        assert_eq!(read_file(&fs.crash(), &p).unwrap(), b"AAAA\0\0\0\0CCCC");
        f.append(b"D").unwrap();
        f.sync_data().unwrap();
        assert_eq!(read_file(&fs.crash(), &p).unwrap(), b"AAAA\0\0\0\0CCCCD");
        // Writing the lost bytes again and syncing makes them durable.
        f.write_at(b"BBBB", 4).unwrap();
        f.sync_data().unwrap();
        assert_eq!(read_file(&fs.crash(), &p).unwrap(), b"AAAABBBBCCCCD");
    }

    #[test]
    fn space_limit_fails_with_storage_full() {
        let (fs, d) = dir();
        fs.set_space_limit(Some(10));
        let f = fs.open(&d.join("f"), OpenMode::CreateNew).unwrap();
        f.append(b"12345678").unwrap();
        let err = f.append(b"abc").unwrap_err();
        assert!(
            matches!(&err, OrbitError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull),
            "{err}"
        );
        assert_eq!(f.len().unwrap(), 8);
        assert!(f.set_len(11).is_err());
        f.write_at(b"xy", 0).unwrap(); // overwrites need no space
        f.append(b"90").unwrap();
        assert_eq!(fs.used_bytes(), 10);
        fs.remove_file(&d.join("f")).unwrap(); // frees the space
        let g = fs.open(&d.join("g"), OpenMode::CreateNew).unwrap();
        g.append(b"0123456789").unwrap();
        fs.set_space_limit(None);
        g.append(b"more").unwrap();
    }

    #[test]
    fn halt_freezes_the_durable_state() {
        let (fs, d) = dir();
        let f = fs.open(&d.join("f"), OpenMode::CreateNew).unwrap(); // op 1 after setup
        fs.sync_dir(&d).unwrap();
        fs.halt_at_op(2);
        f.append(b"x").unwrap();
        assert!(f.sync_data().is_err());
        assert!(fs.is_halted());
        assert!(f.len().is_err(), "a halted machine answers nothing");
        assert_eq!(read_file(&fs.crash(), &d.join("f")).unwrap(), b"");
    }

    #[test]
    fn a_halt_at_a_sync_leaves_the_unsynced_data_to_the_torn_crash() {
        let (fs, d) = dir();
        let p = d.join("f");
        let f = fs.open(&p, OpenMode::CreateNew).unwrap();
        fs.sync_dir(&d).unwrap();
        f.write_at(&[1u8; 4096], 0).unwrap();
        f.sync_data().unwrap();
        f.write_at(&[2u8; 4096], 0).unwrap();
        fs.halt_at_op(1);
        assert!(f.sync_data().is_err());
        // Not an fsync error: each sector may or may not have reached the disk.
        let mut landed = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let got = read_file(&fs.crash_torn(seed), &p).unwrap();
            landed.extend(got.chunks(SECTOR).map(|s| s[0]));
        }
        assert_eq!(landed, [1u8, 2].into_iter().collect());
        assert_eq!(read_file(&fs.crash(), &p).unwrap(), vec![1u8; 4096]);
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_unsynced_appends() {
        let (fs, d) = dir();
        let p = d.join("log");
        let f = fs.open(&p, OpenMode::CreateNew).unwrap();
        fs.sync_dir(&d).unwrap();
        f.append(b"synced|").unwrap();
        f.sync_data().unwrap();
        let tail: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8 + 1).collect();
        f.append(&tail).unwrap();
        let full = read_file(&fs, &p).unwrap();
        let mut lens = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let got = read_file(&fs.crash_torn(seed), &p).unwrap();
            assert!(got.len() >= 7 && full.starts_with(&got), "seed {seed}");
            lens.insert(got.len());
            assert_eq!(got, read_file(&fs.crash_torn(seed), &p).unwrap());
        }
        assert!(lens.len() > 10, "torn lengths should vary: {lens:?}");
    }

    #[test]
    fn torn_crash_mixes_unsynced_overwrites_per_sector() {
        let (fs, d) = dir();
        let p = d.join("pages");
        let f = fs.open(&p, OpenMode::CreateNew).unwrap();
        fs.sync_dir(&d).unwrap();
        f.write_at(&[1u8; 4096], 0).unwrap();
        f.sync_data().unwrap();
        f.write_at(&[2u8; 4096], 0).unwrap();
        let mut mixed = false;
        for seed in 0..16 {
            let got = read_file(&fs.crash_torn(seed), &p).unwrap();
            assert_eq!(got.len(), 4096);
            for sector in got.chunks(SECTOR) {
                assert!(
                    sector.iter().all(|&b| b == sector[0]),
                    "torn inside a sector"
                );
            }
            mixed |= got.contains(&1) && got.contains(&2);
        }
        assert!(mixed);
    }

    #[test]
    fn rename_moves_the_inode_and_open_handles_follow() {
        let (fs, d) = dir();
        fs.create_dir_all(&d.join("sub")).unwrap();
        let f = fs.open(&d.join("a"), OpenMode::CreateNew).unwrap();
        fs.rename(&d.join("a"), &d.join("sub/b")).unwrap();
        f.append(b"hi").unwrap();
        assert_eq!(read_file(&fs, &d.join("sub/b")).unwrap(), b"hi");
        assert!(fs.open(&d.join("sub"), OpenMode::Read).is_err());
        assert!(fs.create_dir_all(&d.join("sub/b")).is_err());
        assert!(fs.open(Path::new("/db/../x"), OpenMode::CreateNew).is_err());
    }
}
