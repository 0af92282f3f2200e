//! The manifest: which tables make up the tree, and where WAL replay starts.
//!
//! # File format
//!
//! `MANIFEST` is one of core's CRC32-framed logs (`orbit_persistence_core::log`: magic
//! `ORBITLOG`, version, a checksum per record). Each record is one [`Edit`], appended and
//! `fdatasync`ed before anything relies on it (a flush deletes WAL segments, a compaction its
//! input tables, only after that):
//!
//! ```text
//! u8      edit format version (1)
//! u64 BE  log_start: first WAL segment recovery replays (older ones are in tables)
//! u64 BE  next_table_id: every table id in use is below it
//! u64 BE  last_revision: highest lease revision in the tables
//! u64 BE  lease_count: leases in the tables
//! u32 BE  n added tables, then n x:
//!           u8 level, u64 BE id, u64 BE file size, u64 BE entries,
//!           varint length + smallest key, varint length + largest key
//! u32 BE  m removed tables, then m x u64 BE id
//! ```
//!
//! The state is the fold of the edits. When the file passes [`REWRITE_BYTES`] it is replaced
//! atomically (`MANIFEST.tmp`, fsync, rename, directory fsync) by a single edit holding the
//! whole state. As with every log, a torn last record is an edit that was never acknowledged;
//! any other bad record is `Corruption`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use orbit_persistence_core::encoding::DecodeError;
use orbit_persistence_core::fs::{FileSystem, write_file_atomic};
use orbit_persistence_core::log::{LogBatch, LogWriter, header_bytes, read_log};
use orbit_persistence_core::{OrbitError, OrbitResult};

use crate::coding::{get_varint, put_varint};
use crate::levels::{MAX_LEVELS, TableMeta};

/// File name of the manifest.
pub const MANIFEST: &str = "MANIFEST";
/// Size past which the manifest is rewritten as one snapshot edit.
pub const REWRITE_BYTES: u64 = 4 << 20;
const EDIT_VERSION: u8 = 1;

/// The tree's durable shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestState {
    /// Live tables by id.
    pub tables: BTreeMap<u64, TableMeta>,
    /// First WAL segment recovery replays.
    pub log_start: u64,
    /// Every table id in use is below it.
    pub next_table_id: u64,
    /// Highest lease revision in the tables.
    pub last_revision: u64,
    /// Leases in the tables.
    pub lease_count: u64,
}

/// One change of the state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    /// Scalars after the edit.
    pub log_start: u64,
    /// Every table id in use is below it.
    pub next_table_id: u64,
    /// Highest lease revision in the tables after the edit.
    pub last_revision: u64,
    /// Leases in the tables after the edit.
    pub lease_count: u64,
    /// Tables added.
    pub added: Vec<TableMeta>,
    /// Ids of tables removed.
    pub removed: Vec<u64>,
}

impl Edit {
    /// An edit keeping the scalars of `state`.
    pub fn keeping(state: &ManifestState) -> Edit {
        Edit {
            log_start: state.log_start,
            next_table_id: state.next_table_id,
            last_revision: state.last_revision,
            lease_count: state.lease_count,
            ..Edit::default()
        }
    }

    /// The record payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![EDIT_VERSION];
        for v in [
            self.log_start,
            self.next_table_id,
            self.last_revision,
            self.lease_count,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&(self.added.len() as u32).to_be_bytes());
        for t in &self.added {
            out.push(t.level);
            for v in [t.id, t.file_size, t.entries] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            for k in [&t.smallest, &t.largest] {
                put_varint(&mut out, k.len() as u64);
                out.extend_from_slice(k);
            }
        }
        out.extend_from_slice(&(self.removed.len() as u32).to_be_bytes());
        for id in &self.removed {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out
    }

    /// Decodes [`Edit::encode`]'s output; the error gives the offset and what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Edit, DecodeError> {
        let mut at = 0usize;
        let take = |at: &mut usize, n: usize| -> Result<&[u8], DecodeError> {
            let s = at
                .checked_add(n)
                .and_then(|end| bytes.get(*at..end))
                .ok_or_else(|| DecodeError::new(*at, format!("edit truncated: need {n} bytes")))?;
            *at += n;
            Ok(s)
        };
        let u64_at = |at: &mut usize| -> Result<u64, DecodeError> {
            Ok(u64::from_be_bytes(
                take(at, 8)?.try_into().unwrap_or_default(),
            ))
        };
        let u32_at = |at: &mut usize| -> Result<usize, DecodeError> {
            Ok(u32::from_be_bytes(take(at, 4)?.try_into().unwrap_or_default()) as usize)
        };
        let version = take(&mut at, 1)?[0];
        if version != EDIT_VERSION {
            return Err(DecodeError::new(
                0,
                format!("unknown manifest edit version {version}"),
            ));
        }
        let mut edit = Edit {
            log_start: u64_at(&mut at)?,
            next_table_id: u64_at(&mut at)?,
            last_revision: u64_at(&mut at)?,
            lease_count: u64_at(&mut at)?,
            ..Edit::default()
        };
        let added = u32_at(&mut at)?;
        // An added table takes at least 27 bytes: bound the allocation by the bytes present.
        if added > bytes.len() / 27 {
            return Err(DecodeError::new(
                at - 4,
                format!("claims {added} tables in {} bytes", bytes.len()),
            ));
        }
        for _ in 0..added {
            let level = take(&mut at, 1)?[0];
            if level as usize >= MAX_LEVELS {
                return Err(DecodeError::new(
                    at - 1,
                    format!("level {level} is deeper than the deepest"),
                ));
            }
            let (id, file_size, entries) = (u64_at(&mut at)?, u64_at(&mut at)?, u64_at(&mut at)?);
            let mut keys = [Vec::new(), Vec::new()];
            for k in &mut keys {
                let len = get_varint(bytes, &mut at)
                    .ok_or_else(|| DecodeError::new(at, "bad key length"))?;
                *k = take(&mut at, len as usize)?.to_vec();
            }
            let [smallest, largest] = keys;
            if smallest > largest {
                return Err(DecodeError::new(
                    at,
                    format!("table {id:016x}: smallest key after largest"),
                ));
            }
            edit.added.push(TableMeta {
                id,
                level,
                file_size,
                entries,
                smallest,
                largest,
            });
        }
        let removed = u32_at(&mut at)?;
        if removed > bytes.len() / 8 {
            return Err(DecodeError::new(
                at - 4,
                format!("claims {removed} removals in {} bytes", bytes.len()),
            ));
        }
        for _ in 0..removed {
            edit.removed.push(u64_at(&mut at)?);
        }
        if at != bytes.len() {
            return Err(DecodeError::new(at, "trailing bytes after the edit"));
        }
        Ok(edit)
    }
}

/// Why an edit does not fit the state it is applied to: corruption when replayed, a bug when
/// committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEdit(String);

impl std::fmt::Display for InvalidEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "manifest edit {}", self.0)
    }
}

impl ManifestState {
    /// Folds `edit` in; the error says why it does not fit.
    fn apply(&mut self, edit: &Edit) -> Result<(), InvalidEdit> {
        for id in &edit.removed {
            if self.tables.remove(id).is_none() {
                return Err(InvalidEdit(format!(
                    "removes table {id:016x}, which is not live"
                )));
            }
        }
        for t in &edit.added {
            if t.id >= edit.next_table_id {
                return Err(InvalidEdit(format!(
                    "adds table {:016x}, not below next_table_id {:016x}",
                    t.id, edit.next_table_id
                )));
            }
            if self.tables.insert(t.id, t.clone()).is_some() {
                return Err(InvalidEdit(format!("adds table {:016x} twice", t.id)));
            }
        }
        if edit.log_start < self.log_start || edit.next_table_id < self.next_table_id {
            return Err(InvalidEdit(
                "moves log_start or next_table_id backwards".into(),
            ));
        }
        self.log_start = edit.log_start;
        self.next_table_id = edit.next_table_id;
        self.last_revision = edit.last_revision;
        self.lease_count = edit.lease_count;
        Ok(())
    }

    /// The whole state as one edit (the rewritten manifest).
    fn snapshot(&self) -> Edit {
        Edit {
            added: self.tables.values().cloned().collect(),
            ..Edit::keeping(self)
        }
    }
}

/// The open manifest: its state and the log it appends to.
#[derive(Debug)]
pub struct Manifest {
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
    /// Opened at the first commit: a torn tail is cut only once recovery has succeeded, so a
    /// failed recovery leaves the file as it found it.
    writer: Option<LogWriter>,
    state: ManifestState,
    /// Where the valid edits ended, if a torn (or damaged) last edit followed them.
    torn_at: Option<u64>,
    /// Why a commit failed, after which the manifest refuses every later one: after a failed
    /// fsync the edit's bytes may be lost while the page cache pretends otherwise, and a later
    /// edit appended and synced behind them would leave a hole in the middle of the log.
    failed: Option<String>,
}

fn file_bytes(edit: &Edit) -> OrbitResult<Vec<u8>> {
    let mut batch = LogBatch::new();
    batch.push(&edit.encode())?;
    let mut bytes = header_bytes().to_vec();
    bytes.extend_from_slice(batch.as_bytes());
    Ok(bytes)
}

impl Manifest {
    /// Creates a new manifest in `dir` (log replay from segment 1, no tables).
    pub fn create(fs: Arc<dyn FileSystem>, dir: &Path) -> OrbitResult<Manifest> {
        let state = ManifestState {
            log_start: 1,
            next_table_id: 1,
            ..ManifestState::default()
        };
        let path = dir.join(MANIFEST);
        write_file_atomic(&*fs, &path, &file_bytes(&state.snapshot())?)?;
        Self::open(fs, dir)
    }

    /// Opens the manifest of `dir` and folds its edits. Reads only: nothing is written until
    /// the first [`Manifest::commit`].
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path) -> OrbitResult<Manifest> {
        let path = dir.join(MANIFEST);
        let replay = read_log(&*fs, &path)?;
        let mut state = ManifestState::default();
        if replay.records.is_empty() {
            return Err(OrbitError::corruption(
                &path,
                0,
                "manifest holds no edit (its first edit is written before it is renamed in place)",
            ));
        }
        for record in &replay.records {
            // The payload starts after the 8-byte record header.
            let at = record.offset + 8;
            let edit = Edit::decode(&record.payload).map_err(|e| e.into_corruption(&path, at))?;
            state
                .apply(&edit)
                .map_err(|e| OrbitError::corruption(&path, at, e.to_string()))?;
        }
        Ok(Manifest {
            fs,
            path,
            writer: None,
            state,
            torn_at: replay.torn_tail.then_some(replay.valid_len),
            failed: None,
        })
    }

    /// The manifest file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the valid edits end, if the last edit was torn (a crash while committing it) or
    /// damaged: recovery then starts from the state before it.
    pub fn torn_at(&self) -> Option<u64> {
        self.torn_at
    }

    /// The current state.
    pub fn state(&self) -> &ManifestState {
        &self.state
    }

    /// Makes `edit` durable, then folds it into the state. On error the manifest must not be
    /// used again (the store is poisoned): the edit may or may not be on disk.
    pub fn commit(&mut self, edit: &Edit) -> OrbitResult<()> {
        if let Some(reason) = &self.failed {
            return Err(OrbitError::Poisoned(format!(
                "an earlier manifest commit failed: {reason}"
            )));
        }
        let result = self.commit_inner(edit);
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    fn commit_inner(&mut self, edit: &Edit) -> OrbitResult<()> {
        let mut next = self.state.clone();
        next.apply(edit)
            .map_err(|e| OrbitError::internal("lsm", e))?;
        let mut batch = LogBatch::new();
        batch.push(&edit.encode())?;
        let writer = match &mut self.writer {
            Some(w) => w,
            // Cuts a torn tail before the first append.
            None => self
                .writer
                .insert(LogWriter::open_for_append(&*self.fs, &self.path)?.0),
        };
        writer.append(&batch)?;
        writer.sync()?;
        let written = writer.len();
        self.state = next;
        if written > REWRITE_BYTES {
            write_file_atomic(&*self.fs, &self.path, &file_bytes(&self.state.snapshot())?)?;
            let dir = self.path.parent().unwrap_or(Path::new("."));
            *self = Self::open(Arc::clone(&self.fs), dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orbit_persistence_core::fs::FaultFs;

    fn table(id: u64, level: u8) -> TableMeta {
        TableMeta {
            id,
            level,
            file_size: 100 * id,
            entries: id,
            smallest: format!("a{id}").into_bytes(),
            largest: format!("z{id}").into_bytes(),
        }
    }

    #[test]
    fn after_a_failed_sync_no_edit_is_ever_appended_again() {
        use orbit_persistence_core::fs::FaultKind;
        let fault = FaultFs::new();
        let dir = Path::new("/db");
        fault.create_dir_all_durable(dir).unwrap();
        let fs: Arc<dyn FileSystem> = Arc::new(fault.clone());
        let mut m = Manifest::create(Arc::clone(&fs), dir).unwrap();
        let edit = |id| Edit {
            log_start: 1,
            next_table_id: id + 1,
            added: vec![table(id, 0)],
            ..Edit::default()
        };
        m.commit(&edit(1)).unwrap();
        fault.fail_nth_op(1, FaultKind::Sync);
        assert!(m.commit(&edit(2)).is_err());
        let ops = fault.op_count();
        let again = m.commit(&edit(3)).unwrap_err();
        assert!(matches!(again, OrbitError::Poisoned(_)), "{again}");
        assert_eq!(fault.op_count(), ops, "a failed manifest wrote again");
        // After a power loss the manifest is whole: the lost edit is gone, nothing follows it.
        let after: Arc<dyn FileSystem> = Arc::new(fault.crash());
        let m = Manifest::open(after, dir).unwrap();
        assert_eq!(m.state().tables.len(), 1);
    }

    #[test]
    fn edits_round_trip_and_fold_across_reopen_and_rewrite() {
        let fs = FaultFs::new();
        let dir = Path::new("/db");
        fs.create_dir_all_durable(dir).unwrap();
        let fs: Arc<dyn FileSystem> = Arc::new(fs);
        let mut m = Manifest::create(Arc::clone(&fs), dir).unwrap();
        let mut expect = ManifestState {
            log_start: 1,
            next_table_id: 1,
            ..ManifestState::default()
        };
        assert_eq!(m.state(), &expect);
        for i in 1..2000u64 {
            let mut edit = Edit::keeping(m.state());
            edit.next_table_id = i + 1;
            edit.log_start = i;
            edit.last_revision = 10 * i;
            edit.added.push(table(i, (i % 7) as u8));
            if i > 1 {
                edit.removed.push(i - 1);
            }
            assert_eq!(Edit::decode(&edit.encode()).unwrap(), edit);
            m.commit(&edit).unwrap();
            expect.apply(&edit).unwrap();
        }
        assert_eq!(m.state(), &expect);
        let again = Manifest::open(Arc::clone(&fs), dir).unwrap();
        assert_eq!(again.state(), &expect);
    }

    #[test]
    fn bad_edits_are_refused() {
        let state = ManifestState::default();
        let mut edit = Edit::keeping(&state);
        edit.removed.push(5);
        assert!(state.clone().apply(&edit).is_err());
        let mut edit = Edit::keeping(&state);
        edit.added.push(table(3, 1));
        assert!(
            state.clone().apply(&edit).is_err(),
            "id not below next_table_id"
        );
        for cut in 0..Edit::keeping(&state).encode().len() {
            assert!(Edit::decode(&Edit::keeping(&state).encode()[..cut]).is_err());
        }
    }
}
