//! The CRC32-framed, append-only log segment: the write-ahead-log format of every disk backend.
//!
//! # File format (version 1)
//!
//! All integers are little-endian. A segment is a 16-byte header followed by records.
//!
//! Header, at offset 0:
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! | 0      | 8    | magic, the ASCII bytes `ORBITLOG`                  |
//! | 8      | 4    | format version, `u32` = 1                          |
//! | 12     | 4    | CRC32 (`crc32fast`, IEEE) of bytes 0..12, `u32`    |
//!
//! Each record, at offset `o` (the first at 16, each next one right after the previous):
//!
//! | offset  | size  | field                                                        |
//! |--------:|------:|--------------------------------------------------------------|
//! | o       | 4     | payload length `n`, `u32`, at most [`MAX_RECORD_SIZE`]       |
//! | o + 4   | 4     | CRC32 of the 4 length bytes followed by the `n` payload bytes |
//! | o + 8   | `n`   | payload (opaque to this module)                              |
//!
//! Covering the length by the checksum means a flipped length bit is caught, not followed; the
//! cap on the length means a corrupt length never allocates more than 64 MiB (and never more
//! than the bytes actually left in the file). An all-zero record header never verifies (the
//! CRC32 of four zero bytes is `0x2144DF1C`), so a zero-filled tail is never mistaken for data.
//!
//! # Recovery rules
//!
//! A crash can leave the last append incomplete. [`LogReader`] tells that *torn tail* apart from
//! corruption, and only the last segment of a log may have one (the caller checks that):
//!
//! - Header: a file shorter than 16 bytes that is empty, all zeros, or a prefix of the header
//!   bytes is a crash during [`LogWriter::create`] (before its first sync): a torn log with no
//!   records and `valid_len` 0; [`LogWriter::open_for_append`] rewrites the header. Any other
//!   bad header (wrong magic, checksum or version) is [`OrbitError::Corruption`] at offset 0.
//! - A record is a torn tail, and the log ends at its offset, when its 8-byte header does not
//!   fit before end of file; when it is bad (its payload runs past end of file, its length is
//!   too large, or its checksum fails) and its claimed end reaches or passes end of file, and
//!   no valid record starts anywhere after it; or when it is bad and only zero bytes follow its
//!   claimed end up to end of file (a preallocated or zero-filled tail).
//! - Any other bad record (bad checksum or length with other bytes after it) is
//!   [`OrbitError::Corruption`] naming the file and the record's offset. Nothing is skipped.
//!   In particular a flipped bit in the length of a record in the middle makes it claim to run
//!   past end of file like a torn append, but the valid records after it give it away: without
//!   that search, recovery would cut every acknowledged record after it, silently.
//!
//! [`LogWriter::open_for_append`] cuts a torn tail (`set_len` + `fdatasync`) before appending.

use std::path::{Path, PathBuf};

use crate::error::{OrbitError, OrbitResult};
use crate::fs::{FileSystem, FsFile, OpenMode, parent_dir};

/// The 8 magic bytes a log segment starts with.
pub const MAGIC: [u8; 8] = *b"ORBITLOG";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the segment header in bytes.
pub const HEADER_LEN: u64 = 16;
/// Length of a record's header (length + checksum) in bytes.
pub const RECORD_HEADER_LEN: u64 = 8;
/// Largest payload a record may carry: 64 MiB. Bounds what a corrupt length can allocate.
pub const MAX_RECORD_SIZE: u32 = 64 << 20;

/// How many bytes the reader fetches per read when records are small.
const READ_CHUNK: usize = 256 << 10;

/// The 16 header bytes of a version-1 segment.
pub fn header_bytes() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn record_crc(len_bytes: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Records encoded and framed in memory, written by [`LogWriter::append`] in one call.
///
/// A group-commit batch is one `LogBatch`: each request's records are pushed as it is staged,
/// and the whole batch reaches the file in one write.
#[derive(Debug, Clone, Default)]
pub struct LogBatch {
    buf: Vec<u8>,
    records: usize,
}

/// A position in a [`LogBatch`] to roll back to; see [`LogBatch::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMark {
    bytes: usize,
    records: usize,
}

impl LogBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames `payload` as one record. Fails with `InvalidInput` if it is larger than
    /// [`MAX_RECORD_SIZE`]; the batch is then unchanged.
    pub fn push(&mut self, payload: &[u8]) -> OrbitResult<()> {
        self.push_with(|buf| {
            buf.extend_from_slice(payload);
            Ok(())
        })
    }

    /// Frames one record whose payload `encode` appends to the given buffer, so callers encode
    /// in place without an intermediate `Vec`. If `encode` fails, or the payload is larger than
    /// [`MAX_RECORD_SIZE`], the batch is unchanged and the error returned.
    pub fn push_with<T>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> OrbitResult<T>,
    ) -> OrbitResult<T> {
        let start = self.buf.len();
        self.buf
            .extend_from_slice(&[0u8; RECORD_HEADER_LEN as usize]);
        let value = match encode(&mut self.buf) {
            Ok(v) => v,
            Err(e) => {
                self.buf.truncate(start);
                return Err(e);
            }
        };
        let payload_start = start + RECORD_HEADER_LEN as usize;
        let len = match u32::try_from(self.buf.len() - payload_start) {
            Ok(len) if len <= MAX_RECORD_SIZE => len,
            _ => {
                let n = self.buf.len() - payload_start;
                self.buf.truncate(start);
                return Err(OrbitError::invalid(format!(
                    "log record of {n} bytes exceeds the maximum of {MAX_RECORD_SIZE} bytes"
                )));
            }
        };
        let len_bytes = len.to_le_bytes();
        let crc = record_crc(&len_bytes, &self.buf[payload_start..]);
        self.buf[start..start + 4].copy_from_slice(&len_bytes);
        self.buf[start + 4..payload_start].copy_from_slice(&crc.to_le_bytes());
        self.records += 1;
        Ok(value)
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Number of records in the batch.
    pub fn record_count(&self) -> usize {
        self.records
    }

    /// Encoded size of the batch in bytes (headers included): what the append will write.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// The framed bytes, exactly as they will be written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Empties the batch, keeping its allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.records = 0;
    }

    /// The current end of the batch, to undo what a rejected request pushed.
    pub fn mark(&self) -> BatchMark {
        BatchMark {
            bytes: self.buf.len(),
            records: self.records,
        }
    }

    /// Drops every record pushed after `mark` was taken. A mark from a longer state (taken
    /// before a [`LogBatch::clear`]) is ignored.
    pub fn rollback(&mut self, mark: BatchMark) {
        if mark.bytes <= self.buf.len() && mark.records <= self.records {
            self.buf.truncate(mark.bytes);
            self.records = mark.records;
        }
    }
}

/// The single writer of a log segment. Tracks the end of the file itself, so an append is one
/// positional write and no `stat`.
///
/// After any error from [`LogWriter::append`] or [`LogWriter::sync`], the bytes on disk past the
/// last successful sync are unknown: discard the writer and poison the store (see
/// [`crate::group_commit`]); reopening recovers through [`LogWriter::open_for_append`].
#[derive(Debug)]
pub struct LogWriter {
    file: Box<dyn FsFile>,
    len: u64,
}

impl LogWriter {
    /// Creates a new segment at `path` (which must not exist): writes the header, `fdatasync`s
    /// it and syncs the parent directory, so the empty segment is durable when this returns.
    pub fn create(fs: &dyn FileSystem, path: &Path) -> OrbitResult<Self> {
        let file = fs.open(path, OpenMode::CreateNew)?;
        file.write_at(&header_bytes(), 0)?;
        file.sync_data()?;
        fs.sync_dir(parent_dir(path))?;
        Ok(LogWriter {
            file,
            len: HEADER_LEN,
        })
    }

    /// Opens an existing segment to continue it: replays it, cuts a torn tail (`set_len` +
    /// `fdatasync`; a torn header is rewritten), syncs the parent directory (the entry of a file
    /// created just before a `kill -9` may not be durable yet) and returns the writer, positioned
    /// at the end of the last valid record, with the replay. Corruption is returned, not cut.
    pub fn open_for_append(fs: &dyn FileSystem, path: &Path) -> OrbitResult<(Self, LogReplay)> {
        let replay = read_log(fs, path)?;
        let writer = Self::resume(fs, path, &replay)?;
        Ok((writer, replay))
    }

    /// [`LogWriter::open_for_append`] for a segment the caller has already read into `replay`
    /// (and decided to continue): cuts its torn tail, syncs, and stands at its valid end,
    /// without reading it again.
    pub fn resume(fs: &dyn FileSystem, path: &Path, replay: &LogReplay) -> OrbitResult<Self> {
        let file = fs.open(path, OpenMode::ReadWrite)?;
        let mut len = replay.valid_len;
        if len < HEADER_LEN {
            file.set_len(0)?;
            file.write_at(&header_bytes(), 0)?;
            file.sync_data()?;
            len = HEADER_LEN;
        } else if replay.file_len > len {
            // Not logged here: the caller reports the cut (`crate::recovery`).
            file.set_len(len)?;
            file.sync_data()?;
        }
        fs.sync_dir(parent_dir(path))?;
        Ok(LogWriter { file, len })
    }

    /// A writer standing at the valid end (`replay.valid_len`) of a segment the caller has
    /// read, for a store opened read-only: nothing is changed (a torn tail stays on disk), and
    /// the file is opened for reading only, so an append through this writer fails.
    pub fn read_only(fs: &dyn FileSystem, path: &Path, replay: &LogReplay) -> OrbitResult<Self> {
        Ok(LogWriter {
            file: fs.open(path, OpenMode::Read)?,
            len: replay.valid_len,
        })
    }

    /// Writes every record of `batch` with one positional write at the end of the segment and
    /// returns the offset of its first record. Not durable until [`LogWriter::sync`]. An empty
    /// batch writes nothing.
    pub fn append(&mut self, batch: &LogBatch) -> OrbitResult<u64> {
        let offset = self.len;
        if batch.is_empty() {
            return Ok(offset);
        }
        self.file.write_at(batch.as_bytes(), offset)?;
        self.len += batch.byte_len() as u64;
        Ok(offset)
    }

    /// Makes every appended record durable: `fdatasync`.
    pub fn sync(&self) -> OrbitResult<()> {
        self.file.sync_data()
    }

    /// Length of the segment in bytes, header included (what a reader will find after a sync).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the segment holds no record yet.
    pub fn is_empty(&self) -> bool {
        self.len <= HEADER_LEN
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// One record read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Offset of the record's header in the segment.
    pub offset: u64,
    /// The payload as appended.
    pub payload: Vec<u8>,
}

/// Everything [`read_log`] found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReplay {
    /// The valid records, in order.
    pub records: Vec<LogRecord>,
    /// End of the last valid record (`HEADER_LEN` if none); 0 if even the header is torn.
    pub valid_len: u64,
    /// Length of the file as found.
    pub file_len: u64,
    /// Whether the segment ends in an incomplete write: bytes past `valid_len` to cut, or a torn
    /// header (`valid_len` 0).
    pub torn_tail: bool,
}

/// Reads a whole segment (see the module docs for what counts as torn and what as corruption).
pub fn read_log(fs: &dyn FileSystem, path: &Path) -> OrbitResult<LogReplay> {
    let mut reader = LogReader::open(fs, path)?;
    let records = reader.collect_records()?;
    Ok(LogReplay {
        records,
        valid_len: reader.valid_len(),
        file_len: reader.file_len(),
        torn_tail: reader.torn_tail(),
    })
}

/// Where a [`LogReader`] is.
#[derive(Debug, Clone)]
enum ReadState {
    Reading,
    /// At the valid end; `torn` if bytes past it (or a torn header) were found.
    Done {
        torn: bool,
    },
    /// Corruption found: every later call returns it again.
    Failed {
        offset: u64,
        detail: String,
    },
}

/// Streams the records of a segment without loading it whole: memory is bounded by one record
/// (at most [`MAX_RECORD_SIZE`], never more than the file holds) plus a 256 KiB read buffer.
#[derive(Debug)]
pub struct LogReader {
    file: Box<dyn FsFile>,
    path: PathBuf,
    file_len: u64,
    /// Offset of the next record; once done, the valid end.
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
    state: ReadState,
}

impl LogReader {
    /// Opens the segment at `path` read-only and checks its header.
    pub fn open(fs: &dyn FileSystem, path: &Path) -> OrbitResult<Self> {
        Self::from_file(fs.open(path, OpenMode::Read)?)
    }

    /// Reads from an already open file and checks its header.
    pub fn from_file(file: Box<dyn FsFile>) -> OrbitResult<Self> {
        let file_len = file.len()?;
        let mut reader = LogReader {
            path: file.path().to_path_buf(),
            file,
            file_len,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
            state: ReadState::Reading,
        };
        reader.check_header()?;
        Ok(reader)
    }

    fn check_header(&mut self) -> OrbitResult<()> {
        let expected = header_bytes();
        if self.file_len < HEADER_LEN {
            self.fill(0, self.file_len as usize)?;
            let got = &self.buf[..self.file_len as usize];
            if got.iter().all(|&b| b == 0) || expected.starts_with(got) {
                self.state = ReadState::Done { torn: true };
                return Ok(());
            }
            return Err(self.corruption(
                0,
                format!(
                    "log header truncated to {} bytes and not a prefix of one",
                    self.file_len
                ),
            ));
        }
        self.fill(0, HEADER_LEN as usize)?;
        let h = &self.buf[..HEADER_LEN as usize];
        if h[..8] != MAGIC {
            return Err(self.corruption(0, "bad magic: not an orbit log segment"));
        }
        if u32_at(h, 12) != crc32fast::hash(&h[..12]) {
            return Err(self.corruption(0, "log header checksum mismatch"));
        }
        let version = u32_at(h, 8);
        if version != FORMAT_VERSION {
            return Err(self.corruption(
                0,
                format!(
                    "unsupported log format version {version} (this build reads {FORMAT_VERSION})"
                ),
            ));
        }
        self.pos = HEADER_LEN;
        Ok(())
    }

    fn corruption(&mut self, offset: u64, detail: impl Into<String>) -> OrbitError {
        let detail = detail.into();
        self.state = ReadState::Failed {
            offset,
            detail: detail.clone(),
        };
        OrbitError::corruption(&self.path, offset, detail)
    }

    /// Makes `self.buf[off - buf_start ..][..n]` hold the file's bytes `[off, off + n)`; the
    /// caller guarantees `off + n <= file_len`.
    fn fill(&mut self, off: u64, n: usize) -> OrbitResult<()> {
        let end = off + n as u64;
        if off >= self.buf_start && end <= self.buf_start + self.buf.len() as u64 {
            return Ok(());
        }
        // `file_len - off` bounds the read, so a corrupt length never allocates past the file.
        let want = n.max(READ_CHUNK).min((self.file_len - off) as usize);
        self.buf.resize(want, 0);
        self.buf_start = off;
        if let Err(e) = self.file.read_exact_at(&mut self.buf, off) {
            self.buf.clear();
            return Err(e);
        }
        Ok(())
    }

    /// Whether `[from, file_len)` holds only zero bytes.
    fn zeros_to_end(&mut self, from: u64) -> OrbitResult<bool> {
        let mut at = from;
        while at < self.file_len {
            let n = ((self.file_len - at) as usize).min(READ_CHUNK);
            self.fill(at, n)?;
            let s = (at - self.buf_start) as usize;
            if self.buf[s..s + n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// A record at `offset` failed: a torn tail or corruption, by the module's rules.
    fn bad_record(&mut self, offset: u64, claimed_end: u64, detail: String) -> OrbitResult<()> {
        let torn = if claimed_end >= self.file_len {
            !self.valid_record_after(offset)?
        } else {
            self.zeros_to_end(claimed_end)?
        };
        if torn {
            self.state = ReadState::Done { torn: true };
            return Ok(());
        }
        Err(self.corruption(offset, detail))
    }

    /// Whether a record that verifies starts anywhere in `(offset, file_len)`. A torn append
    /// is the last thing in the file, so nothing valid can follow it. Only runs when a record
    /// is bad, over the bytes after it (a few records after a real torn tail).
    fn valid_record_after(&mut self, offset: u64) -> OrbitResult<bool> {
        let first = offset + 1;
        if first + RECORD_HEADER_LEN > self.file_len {
            return Ok(false);
        }
        self.fill(first, (self.file_len - first) as usize)?;
        let base = (first - self.buf_start) as usize;
        let rest = &self.buf[base..base + (self.file_len - first) as usize];
        let header = RECORD_HEADER_LEN as usize;
        for at in 0..=rest.len() - header {
            let len = u32_at(rest, at);
            let Some(end) = (len <= MAX_RECORD_SIZE)
                .then(|| at + header + len as usize)
                .filter(|&end| end <= rest.len())
            else {
                continue;
            };
            if record_crc(&rest[at..at + 4], &rest[at + header..end]) == u32_at(rest, at + 4) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The next record as `(offset, payload)`, or `None` at the valid end of the segment.
    /// After an error the reader is finished and returns the same error again.
    pub fn next_record(&mut self) -> OrbitResult<Option<(u64, &[u8])>> {
        match &self.state {
            ReadState::Reading => {}
            ReadState::Done { .. } => return Ok(None),
            ReadState::Failed { offset, detail } => {
                return Err(OrbitError::corruption(&self.path, *offset, detail.clone()));
            }
        }
        let off = self.pos;
        let left = self.file_len - off;
        if left < RECORD_HEADER_LEN {
            self.state = ReadState::Done { torn: left > 0 };
            return Ok(None);
        }
        self.fill(off, RECORD_HEADER_LEN as usize)?;
        let s = (off - self.buf_start) as usize;
        let len = u32_at(&self.buf, s);
        let stored_crc = u32_at(&self.buf, s + 4);
        let claimed_end = off + RECORD_HEADER_LEN + u64::from(len);
        if len > MAX_RECORD_SIZE {
            self.bad_record(
                off,
                claimed_end,
                format!("record length {len} exceeds the maximum of {MAX_RECORD_SIZE}"),
            )?;
            return Ok(None);
        }
        if claimed_end > self.file_len {
            self.bad_record(
                off,
                claimed_end,
                format!("record of {len} bytes runs past the end of the file"),
            )?;
            return Ok(None);
        }
        let total = RECORD_HEADER_LEN as usize + len as usize;
        self.fill(off, total)?;
        let s = (off - self.buf_start) as usize;
        let payload = s + RECORD_HEADER_LEN as usize..s + total;
        let actual = record_crc(&self.buf[s..s + 4], &self.buf[payload.clone()]);
        if actual != stored_crc {
            self.bad_record(
                off,
                claimed_end,
                format!(
                    "record checksum mismatch (stored {stored_crc:#010x}, computed {actual:#010x})"
                ),
            )?;
            return Ok(None);
        }
        self.pos = claimed_end;
        Ok(Some((off, &self.buf[payload])))
    }

    fn collect_records(&mut self) -> OrbitResult<Vec<LogRecord>> {
        let mut records = Vec::new();
        while let Some((offset, payload)) = self.next_record()? {
            records.push(LogRecord {
                offset,
                payload: payload.to_vec(),
            });
        }
        Ok(records)
    }

    /// End of the last valid record read so far (`HEADER_LEN` before the first; 0 if the header
    /// itself is torn). Once [`LogReader::next_record`] returned `None`, where a writer resumes.
    pub fn valid_len(&self) -> u64 {
        self.pos
    }

    /// Whether the reader stopped at a torn tail (meaningful once it returned `None`).
    pub fn torn_tail(&self) -> bool {
        matches!(self.state, ReadState::Done { torn: true })
    }

    /// Length of the file when it was opened.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the open file back (to continue writing it).
    pub fn into_file(self) -> Box<dyn FsFile> {
        self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FaultFs, FileSystem};
    use proptest::prelude::*;

    fn setup() -> (FaultFs, PathBuf) {
        let fs = FaultFs::new();
        fs.create_dir_all_durable(Path::new("/db")).unwrap();
        (fs, PathBuf::from("/db/wal-000001.log"))
    }

    fn write_log(fs: &FaultFs, path: &Path, payloads: &[Vec<u8>]) -> Vec<u64> {
        let mut w = LogWriter::create(fs, path).unwrap();
        let mut offsets = Vec::new();
        for p in payloads {
            let mut b = LogBatch::new();
            b.push(p).unwrap();
            offsets.push(w.append(&b).unwrap());
        }
        w.sync().unwrap();
        offsets
    }

    fn payloads(r: &LogReplay) -> Vec<Vec<u8>> {
        r.records.iter().map(|r| r.payload.clone()).collect()
    }

    /// Rewrites the file with `bytes` (durably), for corruption tests.
    fn overwrite(fs: &FaultFs, path: &Path, bytes: &[u8]) {
        let f = fs.open(path, OpenMode::CreateOrTruncate).unwrap();
        f.write_at(bytes, 0).unwrap();
        f.sync_data().unwrap();
    }

    #[test]
    fn header_layout_is_as_documented() {
        let h = header_bytes();
        assert_eq!(&h[..8], b"ORBITLOG");
        assert_eq!(&h[8..12], &[1, 0, 0, 0]);
        assert_eq!(u32_at(&h, 12), crc32fast::hash(&h[..12]));
        let mut b = LogBatch::new();
        b.push(b"abc").unwrap();
        let bytes = b.as_bytes();
        assert_eq!(&bytes[..4], &[3, 0, 0, 0]);
        assert_eq!(
            u32_at(bytes, 4),
            crc32fast::hash(&[3, 0, 0, 0, b'a', b'b', b'c'])
        );
        assert_eq!(&bytes[8..], b"abc");
    }

    #[test]
    fn batch_of_records_round_trips_in_one_append() {
        let (fs, path) = setup();
        let mut w = LogWriter::create(&fs, &path).unwrap();
        assert!(w.is_empty());
        let mut b = LogBatch::new();
        b.push(b"one").unwrap();
        b.push(b"").unwrap();
        let n = b
            .push_with(|buf| {
                buf.extend_from_slice(b"three");
                Ok(5)
            })
            .unwrap();
        assert_eq!((n, b.record_count()), (5, 3));
        let writes = fs.op_count();
        assert_eq!(w.append(&b).unwrap(), HEADER_LEN);
        assert_eq!(fs.op_count(), writes + 1, "a batch is one write");
        w.sync().unwrap();
        let r = read_log(&fs, &path).unwrap();
        assert_eq!(
            payloads(&r),
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
        assert_eq!(r.records[1].offset, HEADER_LEN + 11);
        assert_eq!((r.valid_len, r.torn_tail), (w.len(), false));
        // The empty log replays as empty and not torn.
        let (fs, path) = setup();
        LogWriter::create(&fs, &path).unwrap();
        let r = read_log(&fs, &path).unwrap();
        assert_eq!(
            (r.records.len(), r.valid_len, r.torn_tail),
            (0, HEADER_LEN, false)
        );
    }

    #[test]
    fn batch_rejects_oversized_and_failed_records_and_rolls_back() {
        let mut b = LogBatch::new();
        b.push(b"keep").unwrap();
        let mark = b.mark();
        let err = b
            .push_with(|buf| {
                buf.resize(buf.len() + MAX_RECORD_SIZE as usize + 1, 7);
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, OrbitError::InvalidInput(_)), "{err}");
        assert_eq!(b.mark(), mark);
        let err = b
            .push_with(|buf| -> OrbitResult<()> {
                buf.push(1);
                Err(OrbitError::invalid("encode failed"))
            })
            .unwrap_err();
        assert!(err.to_string().contains("encode failed"));
        assert_eq!(b.mark(), mark);
        b.push(b"drop").unwrap();
        b.rollback(mark);
        assert_eq!((b.record_count(), b.byte_len()), (1, 12));
        b.clear();
        b.rollback(mark); // stale mark: ignored
        assert!(b.is_empty());
    }

    #[test]
    fn create_is_durable_and_refuses_to_clobber() {
        let (fs, path) = setup();
        LogWriter::create(&fs, &path).unwrap();
        let after = fs.crash();
        assert_eq!(read_log(&after, &path).unwrap().valid_len, HEADER_LEN);
        assert!(LogWriter::create(&fs, &path).is_err());
    }

    #[test]
    fn torn_tail_is_truncated_and_appending_continues() {
        let (fs, path) = setup();
        let all: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + i as usize]).collect();
        let offsets = write_log(&fs, &path, &all);
        let full = crate::fs::read_file(&fs, &path).unwrap();
        // Cut inside the 4th record's payload.
        overwrite(&fs, &path, &full[..offsets[3] as usize + 12]);
        let (mut w, replay) = LogWriter::open_for_append(&fs, &path).unwrap();
        assert_eq!(payloads(&replay), all[..3].to_vec());
        assert!(replay.torn_tail);
        assert_eq!(replay.valid_len, offsets[3]);
        let after = fs.crash();
        assert_eq!(
            fs.open(&path, OpenMode::Read).unwrap().len().unwrap(),
            offsets[3]
        );
        assert_eq!(read_log(&after, &path).unwrap().valid_len, offsets[3]);
        let mut b = LogBatch::new();
        b.push(b"next").unwrap();
        assert_eq!(w.append(&b).unwrap(), offsets[3]);
        w.sync().unwrap();
        let r = read_log(&fs, &path).unwrap();
        assert_eq!(r.records.len(), 4);
        assert_eq!(r.records[3].payload, b"next");
        assert!(!r.torn_tail);
    }

    #[test]
    fn bad_checksum_in_the_middle_is_corruption_naming_file_and_offset() {
        let (fs, path) = setup();
        let offsets = write_log(&fs, &path, &[vec![1; 20], vec![2; 20], vec![3; 20]]);
        let mut bytes = crate::fs::read_file(&fs, &path).unwrap();
        bytes[offsets[1] as usize + 10] ^= 0x40;
        overwrite(&fs, &path, &bytes);
        let err = read_log(&fs, &path).unwrap_err();
        match &err {
            OrbitError::Corruption {
                path: p, offset, ..
            } => {
                assert_eq!((p.as_path(), *offset), (path.as_path(), offsets[1]));
            }
            other => panic!("expected corruption, got {other}"),
        }
        assert!(
            LogWriter::open_for_append(&fs, &path).is_err(),
            "corruption is never cut"
        );
        // A flipped length bit is caught by the checksum too.
        let mut bytes = crate::fs::read_file(&fs, &path).unwrap();
        bytes[offsets[1] as usize + 10] ^= 0x40;
        bytes[offsets[0] as usize] ^= 0x01;
        overwrite(&fs, &path, &bytes);
        assert!(matches!(
            read_log(&fs, &path),
            Err(OrbitError::Corruption { offset, .. }) if offset == offsets[0]
        ));
    }

    #[test]
    fn bad_last_record_reaching_eof_or_followed_by_zeros_is_torn() {
        let (fs, path) = setup();
        let offsets = write_log(&fs, &path, &[vec![1; 20], vec![2; 20]]);
        let mut bytes = crate::fs::read_file(&fs, &path).unwrap();
        bytes[offsets[1] as usize + 10] ^= 0xff; // last record, claimed end == EOF
        overwrite(&fs, &path, &bytes);
        let r = read_log(&fs, &path).unwrap();
        assert_eq!(
            (r.records.len(), r.valid_len, r.torn_tail),
            (1, offsets[1], true)
        );
        // A bad record followed only by zeros (preallocated tail).
        bytes.extend_from_slice(&[0u8; 5000]);
        overwrite(&fs, &path, &bytes);
        let r = read_log(&fs, &path).unwrap();
        assert_eq!(
            (r.records.len(), r.valid_len, r.torn_tail),
            (1, offsets[1], true)
        );
        // A zero-filled tail after valid records.
        let mut good = crate::fs::read_file(&fs, &path).unwrap();
        good.truncate(offsets[1] as usize);
        good.extend_from_slice(&[0u8; 300]);
        overwrite(&fs, &path, &good);
        let r = read_log(&fs, &path).unwrap();
        assert_eq!((r.records.len(), r.torn_tail), (1, true));
        // A huge length at the tail is torn, in the middle corruption; neither allocates it.
        let mut huge = good[..offsets[1] as usize].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[9u8; 4]);
        overwrite(&fs, &path, &huge);
        assert!(read_log(&fs, &path).unwrap().torn_tail);
        let mut huge = good[..offsets[1] as usize].to_vec();
        huge.extend_from_slice(&(MAX_RECORD_SIZE + 1).to_le_bytes());
        huge.extend_from_slice(&[9u8; 4]);
        huge.extend_from_slice(&vec![1u8; (MAX_RECORD_SIZE + 64) as usize]);
        overwrite(&fs, &path, &huge);
        assert!(matches!(
            read_log(&fs, &path),
            Err(OrbitError::Corruption { offset, .. }) if offset == offsets[1]
        ));
    }

    #[test]
    fn a_flipped_length_bit_in_the_middle_is_corruption_not_a_torn_tail() {
        let (fs, path) = setup();
        let offsets = write_log(&fs, &path, &[vec![1; 20], vec![2; 20], vec![3; 20]]);
        let good = crate::fs::read_file(&fs, &path).unwrap();
        // The high bits of the middle record's length: it now claims to run past end of file.
        for (byte, mask) in [(1, 0x80), (2, 0x01), (3, 0x40)] {
            let mut bytes = good.clone();
            bytes[offsets[1] as usize + byte] ^= mask;
            overwrite(&fs, &path, &bytes);
            assert!(
                matches!(
                    read_log(&fs, &path),
                    Err(OrbitError::Corruption { offset, .. }) if offset == offsets[1]
                ),
                "length byte {byte} ^ {mask:#x} was read as a torn tail"
            );
        }
        // The same flip in the last record is a torn tail: nothing valid follows it.
        let mut bytes = good.clone();
        bytes[offsets[2] as usize + 1] ^= 0x80;
        overwrite(&fs, &path, &bytes);
        let r = read_log(&fs, &path).unwrap();
        assert_eq!((r.records.len(), r.torn_tail), (2, true));
    }

    #[test]
    fn header_rules() {
        let (fs, path) = setup();
        let h = header_bytes();
        for torn in [&[][..], &h[..5], &[0u8; 9][..]] {
            overwrite(&fs, &path, torn);
            let r = read_log(&fs, &path).unwrap();
            assert_eq!((r.records.len(), r.valid_len, r.torn_tail), (0, 0, true));
            let (mut w, _) = LogWriter::open_for_append(&fs, &path).unwrap();
            let mut b = LogBatch::new();
            b.push(b"x").unwrap();
            assert_eq!(w.append(&b).unwrap(), HEADER_LEN);
            w.sync().unwrap();
            assert_eq!(read_log(&fs, &path).unwrap().records.len(), 1);
        }
        let mut bad_magic = h;
        bad_magic[0] = b'X';
        let mut bad_crc = h;
        bad_crc[13] ^= 1;
        let mut v2 = h;
        v2[8] = 2;
        let crc = crc32fast::hash(&v2[..12]);
        v2[12..].copy_from_slice(&crc.to_le_bytes());
        for (bytes, what) in [
            (&bad_magic[..], "magic"),
            (&bad_crc[..], "checksum"),
            (&v2[..], "version 2"),
            (&b"ORBITLOX"[..], "not a prefix"),
            (&[0u8; 16][..], "magic"),
        ] {
            overwrite(&fs, &path, bytes);
            let err = read_log(&fs, &path).unwrap_err();
            assert!(
                matches!(&err, OrbitError::Corruption { offset: 0, .. }),
                "{what}: {err}"
            );
            assert!(err.to_string().contains(what), "{what}: {err}");
            assert!(err.to_string().contains("wal-000001.log"), "{err}");
        }
    }

    #[test]
    fn reader_streams_records_larger_than_its_buffer() {
        let (fs, path) = setup();
        let all: Vec<Vec<u8>> = (0..40u32)
            .map(|i| {
                vec![
                    i as u8;
                    if i % 7 == 0 {
                        300_000
                    } else {
                        i as usize * 100
                    }
                ]
            })
            .collect();
        write_log(&fs, &path, &all);
        let mut reader = LogReader::open(&fs, &path).unwrap();
        let mut n = 0;
        while let Some((_, p)) = reader.next_record().unwrap() {
            assert_eq!(p, &all[n][..]);
            n += 1;
        }
        assert_eq!(n, all.len());
        assert!(!reader.torn_tail());
        assert!(reader.next_record().unwrap().is_none());
    }

    #[test]
    fn torn_crash_of_unsynced_appends_recovers_a_prefix() {
        for seed in 0..50 {
            let (fs, path) = setup();
            let mut w = LogWriter::create(&fs, &path).unwrap();
            let mut written = Vec::new();
            for i in 0..20u32 {
                let mut b = LogBatch::new();
                for j in 0..3 {
                    let p = vec![(i * 3 + j) as u8; 50 + (i as usize * 37) % 200];
                    b.push(&p).unwrap();
                    written.push(p);
                }
                w.append(&b).unwrap();
                if i == 4 {
                    w.sync().unwrap();
                }
            }
            let after = fs.crash_torn(seed);
            let (_, replay) = LogWriter::open_for_append(&after, &path).unwrap();
            let got = payloads(&replay);
            assert!(got.len() >= 15, "synced records survive (seed {seed})");
            assert_eq!(got, written[..got.len()].to_vec(), "seed {seed}");
            let again = read_log(&after, &path).unwrap();
            assert!(!again.torn_tail);
            assert_eq!(again.records, replay.records);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                    with_header in any::<bool>()) {
            let (fs, path) = setup();
            let mut data = if with_header { header_bytes().to_vec() } else { Vec::new() };
            data.extend_from_slice(&bytes);
            overwrite(&fs, &path, &data);
            if let Ok(r) = read_log(&fs, &path) {
                prop_assert!(r.valid_len <= r.file_len);
            }
        }

        #[test]
        fn mutated_logs_yield_a_prefix_or_an_error(
            all in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..12),
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..3),
        ) {
            let (fs, path) = setup();
            let offsets = write_log(&fs, &path, &all);
            let full = crate::fs::read_file(&fs, &path).unwrap();
            // Only the tail cut: always Ok, exactly the records that fit.
            let cut = cut.index(full.len() + 1);
            overwrite(&fs, &path, &full[..cut]);
            let r = read_log(&fs, &path).unwrap();
            let fit = offsets.iter().enumerate()
                .filter(|&(i, _)| {
                    let end = offsets.get(i + 1).copied().unwrap_or(full.len() as u64);
                    end <= cut as u64
                })
                .count();
            prop_assert_eq!(payloads(&r), all[..fit].to_vec());
            prop_assert_eq!(r.torn_tail, cut < HEADER_LEN as usize || r.valid_len < cut as u64);
            // Byte flips anywhere: never a panic; an Ok result is a prefix of what was written.
            let mut bytes = full.clone();
            for (at, x) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            overwrite(&fs, &path, &bytes);
            if let Ok(r) = read_log(&fs, &path) {
                prop_assert!(r.records.len() <= all.len());
                prop_assert_eq!(payloads(&r), all[..r.records.len()].to_vec());
            }
        }
    }
}
