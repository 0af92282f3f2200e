//! Backups: every lease of a store at one revision, in one portable file that restores into any
//! backend.
//!
//! A provider writes its backup ([`crate::AddressableDirectoryProvider::backup`]) from one
//! consistent snapshot at revision R while its writers go on, streaming the leases through a
//! [`BackupWriter`] so a large store never sits in memory. [`verify_backup`] reads a file back
//! and checks every checksum; [`crate::restore::restore_into`] verifies first, then loads the
//! leases with their revisions into an empty store and raises its revision counter to R, so a fencing token
//! handed out before the backup is never handed out again.
//!
//! # Format (version 1)
//!
//! Integers are big-endian. A file is a header, chunks of leases, and a trailer:
//!
//! ```text
//! header   8  magic "ORBITBAK"
//!          2  u16 format version = 1
//!          1  u8 length s, then s bytes: the source backend's name (UTF-8)
//!          8  u64 revision R the leases are as of
//!          8  u64 lease count
//!          8  u64 created at, milliseconds since the Unix epoch
//!          4  u32 CRC32 of the header bytes before it
//! chunk    1  tag 'C'
//!          4  u32 leases in the chunk n (1 ..= CHUNK_LEASES)
//!          4  u32 payload length p (at most MAX_CHUNK_BYTES)
//!          4  u32 CRC32 of the tag, n, p and the payload
//!          p  payload: n x (u32 length, the lease in crate::encoding's encode_lease)
//! trailer  1  tag 'T'
//!          8  u64 chunk count
//!          8  u64 lease count (the header's)
//!          4  u32 CRC32 of every byte of the file before it
//! ```
//!
//! The leases are in strictly ascending reference order across the file (so a duplicate is
//! corruption), and none has a revision above R. A file ends exactly after its trailer. The
//! writer writes `<dest>.tmp`, `fdatasync`s it, renames it to `dest` and syncs the directory:
//! after a crash `dest` is either absent or whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::encoding::{self, DecodeError};
use crate::error::{OrbitError, OrbitResult};
use crate::feed::LeaseSnapshot;
use crate::fs::{FileSystem, FsFile, OpenMode, StdFileSystem, parent_dir, tmp_path};
use crate::types::{AddressableLease, AddressableReference};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"ORBITBAK";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Most leases in one chunk: also how many a restore writes in one batch.
pub const CHUNK_LEASES: usize = 1024;
/// Largest chunk payload a reader accepts (1024 leases of the largest encoding fit), so a
/// damaged length never makes it allocate more.
pub const MAX_CHUNK_BYTES: usize = 16 << 20;

const CHUNK_TAG: u8 = b'C';
const TRAILER_TAG: u8 = b'T';
const CHUNK_HEADER_LEN: usize = 13;
const TRAILER_LEN: usize = 21;

/// What a backup holds, as its header says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The backend the backup was taken from (`"lsm"`, `"rocksdb"`...).
    pub source: String,
    /// The store's revision the leases are as of.
    pub revision: u64,
    /// How many leases follow.
    pub leases: u64,
    /// When the backup was taken, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

impl BackupHeader {
    /// The header of a backup of `leases` leases at `revision` from `source`, taken now.
    pub fn now(source: &str, revision: u64, leases: u64) -> Self {
        let created_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        BackupHeader {
            source: source.to_string(),
            revision,
            leases,
            created_at_ms,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let source = &self.source.as_bytes()[..self.source.len().min(255)];
        let mut out = Vec::with_capacity(8 + 2 + 1 + source.len() + 28);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.push(source.len() as u8);
        out.extend_from_slice(source);
        out.extend_from_slice(&self.revision.to_be_bytes());
        out.extend_from_slice(&self.leases.to_be_bytes());
        out.extend_from_slice(&self.created_at_ms.to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }
}

/// What a written or verified backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The backup file.
    pub file: PathBuf,
    /// Its header.
    #[serde(flatten)]
    pub header: BackupHeader,
    /// Chunks of leases in it.
    pub chunks: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What [`crate::restore::restore_into`] loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSummary {
    /// The backup it read.
    pub backup: BackupSummary,
    /// The backend it restored into.
    pub target: String,
    /// Leases restored.
    pub leases: u64,
    /// The restored store's revision (the backup's R): its next write gets a higher one.
    pub revision: u64,
}

/// Streams leases into a new backup file; see the module docs. [`BackupWriter::finish`] makes
/// it durable and visible; dropping the writer before that leaves only the temporary file.
pub struct BackupWriter {
    fs: Arc<dyn FileSystem>,
    dest: PathBuf,
    tmp: PathBuf,
    file: Box<dyn FsFile>,
    header: BackupHeader,
    whole: crc32fast::Hasher,
    /// The chunk being filled: its payload and lease count.
    payload: Vec<u8>,
    in_chunk: u32,
    leases: u64,
    chunks: u64,
    bytes: u64,
    last: Option<AddressableReference>,
    /// Renamed into place: nothing to clean up.
    finished: bool,
}

impl Drop for BackupWriter {
    /// A backup that failed or was abandoned leaves no temporary file behind (best effort:
    /// the next backup to the same name truncates it anyway).
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.fs.remove_file(&self.tmp);
        }
    }
}

impl BackupWriter {
    /// Starts the backup `dest` described by `header`. Refused with `InvalidInput` if `dest`
    /// exists: a backup never replaces a file.
    pub fn create(fs: Arc<dyn FileSystem>, dest: &Path, header: BackupHeader) -> OrbitResult<Self> {
        if fs.exists(dest)? {
            return Err(OrbitError::invalid(format!(
                "{} exists: a backup never replaces a file",
                dest.display()
            )));
        }
        let tmp = tmp_path(dest);
        let file = fs.open(&tmp, OpenMode::CreateOrTruncate)?;
        let mut writer = BackupWriter {
            fs,
            dest: dest.to_path_buf(),
            tmp,
            file,
            header,
            whole: crc32fast::Hasher::new(),
            payload: Vec::with_capacity(64 * CHUNK_LEASES),
            in_chunk: 0,
            leases: 0,
            chunks: 0,
            bytes: 0,
            last: None,
            finished: false,
        };
        let header = writer.header.encode();
        writer.write(&header)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> OrbitResult<()> {
        self.whole.update(bytes);
        self.file.append(bytes)?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Adds the next lease. Leases must come in strictly ascending reference order, with
    /// revisions at or below the header's: anything else is a bug in the snapshot that feeds
    /// the writer (`Internal`).
    pub fn push(&mut self, lease: &AddressableLease) -> OrbitResult<()> {
        if self
            .last
            .as_ref()
            .is_some_and(|last| *last >= lease.reference)
        {
            return Err(OrbitError::internal(
                "backup",
                format!("leases out of order at {:?}", lease.reference),
            ));
        }
        if lease.revision > self.header.revision {
            return Err(OrbitError::internal(
                "backup",
                format!(
                    "lease {:?} has revision {} above the snapshot's {}",
                    lease.reference, lease.revision, self.header.revision
                ),
            ));
        }
        let encoded = encoding::encode_lease(lease);
        self.payload
            .extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        self.payload.extend_from_slice(&encoded);
        self.in_chunk += 1;
        self.leases += 1;
        self.last = Some(lease.reference.clone());
        if self.in_chunk as usize == CHUNK_LEASES {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> OrbitResult<()> {
        if self.in_chunk == 0 {
            return Ok(());
        }
        let mut head = [0u8; CHUNK_HEADER_LEN];
        head[0] = CHUNK_TAG;
        head[1..5].copy_from_slice(&self.in_chunk.to_be_bytes());
        head[5..9].copy_from_slice(&(self.payload.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[..9]);
        crc.update(&self.payload);
        head[9..13].copy_from_slice(&crc.finalize().to_be_bytes());
        let payload = std::mem::take(&mut self.payload);
        self.write(&head)?;
        self.write(&payload)?;
        self.payload = payload;
        self.payload.clear();
        self.in_chunk = 0;
        self.chunks += 1;
        Ok(())
    }

    /// Writes the last chunk and the trailer, makes the file durable and renames it into
    /// place. Fails (`Internal`, no file made) if fewer or more leases came than the header
    /// announced.
    pub fn finish(mut self) -> OrbitResult<BackupSummary> {
        self.flush_chunk()?;
        if self.leases != self.header.leases {
            return Err(OrbitError::internal(
                "backup",
                format!(
                    "the snapshot announced {} leases and gave {}",
                    self.header.leases, self.leases
                ),
            ));
        }
        let mut trailer = Vec::with_capacity(TRAILER_LEN);
        trailer.push(TRAILER_TAG);
        trailer.extend_from_slice(&self.chunks.to_be_bytes());
        trailer.extend_from_slice(&self.leases.to_be_bytes());
        self.whole.update(&trailer);
        let whole = std::mem::take(&mut self.whole).finalize();
        trailer.extend_from_slice(&whole.to_be_bytes());
        self.file.append(&trailer)?;
        self.bytes += trailer.len() as u64;
        self.file.sync_data()?;
        self.fs.rename(&self.tmp, &self.dest)?;
        self.finished = true;
        self.fs.sync_dir(parent_dir(&self.dest))?;
        Ok(BackupSummary {
            file: self.dest.clone(),
            header: self.header.clone(),
            chunks: self.chunks,
            bytes: self.bytes,
        })
    }
}

/// Writes the backup `dest` of `leases` (ascending by reference, at `header.revision`).
/// Blocking: run it off the async workers.
pub fn write_backup(
    fs: Arc<dyn FileSystem>,
    dest: &Path,
    header: BackupHeader,
    leases: impl IntoIterator<Item = OrbitResult<AddressableLease>>,
) -> OrbitResult<BackupSummary> {
    let mut writer = BackupWriter::create(fs, dest, header)?;
    for lease in leases {
        writer.push(&lease?)?;
    }
    writer.finish()
}

/// Writes the backup `dest` of a snapshot already in memory (a store whose leases live there),
/// on the blocking pool.
pub async fn write_snapshot(
    source: &'static str,
    snapshot: LeaseSnapshot,
    dest: &Path,
) -> OrbitResult<BackupSummary> {
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let header = BackupHeader::now(source, snapshot.revision, snapshot.leases.len() as u64);
        let leases = snapshot.leases.into_iter().map(Ok);
        write_backup(Arc::new(StdFileSystem::new()), &dest, header, leases)
    })
    .await
    .map_err(|e| OrbitError::internal(source, format!("the backup task failed: {e}")))?
}

/// Reads a backup chunk by chunk, checking every checksum on the way; see the module docs.
/// Every problem is `Corruption` naming the file and offset, except a newer format version
/// (`WrongStore`).
pub struct BackupReader {
    file: Box<dyn FsFile>,
    path: PathBuf,
    len: u64,
    header: BackupHeader,
    whole: crc32fast::Hasher,
    at: u64,
    leases: u64,
    chunks: u64,
    last: Option<AddressableReference>,
    done: bool,
}

impl BackupReader {
    /// Opens `path` and checks its header.
    pub fn open(fs: &dyn FileSystem, path: &Path) -> OrbitResult<Self> {
        let file = fs.open(path, OpenMode::Read)?;
        let len = file.len()?;
        let mut reader = BackupReader {
            file,
            path: path.to_path_buf(),
            len,
            header: BackupHeader::default(),
            whole: crc32fast::Hasher::new(),
            at: 0,
            leases: 0,
            chunks: 0,
            last: None,
            done: false,
        };
        reader.header = reader.read_header()?;
        Ok(reader)
    }

    /// The header.
    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    fn corrupt(&self, offset: u64, detail: impl Into<String>) -> OrbitError {
        OrbitError::corruption(&self.path, offset, detail)
    }

    /// The next `n` bytes, or `Corruption` at the offset where the file ends too soon.
    fn read(&mut self, n: usize, what: &str) -> OrbitResult<Vec<u8>> {
        if self.len.saturating_sub(self.at) < n as u64 {
            return Err(self.corrupt(
                self.len,
                format!(
                    "the backup is truncated: it ends at byte {} inside the {what} at {}",
                    self.len, self.at
                ),
            ));
        }
        let mut buf = vec![0; n];
        self.file.read_exact_at(&mut buf, self.at)?;
        self.whole.update(&buf);
        self.at += n as u64;
        Ok(buf)
    }

    fn read_header(&mut self) -> OrbitResult<BackupHeader> {
        let fixed = self.read(11, "header")?;
        if &fixed[..8] != MAGIC {
            return Err(self.corrupt(0, "not a backup: the magic \"ORBITBAK\" is missing"));
        }
        let version = u16::from_be_bytes([fixed[8], fixed[9]]);
        if version != FORMAT_VERSION {
            return Err(OrbitError::wrong_store(
                &self.path,
                format!(
                    "backup format version {version}; this build reads version {FORMAT_VERSION} \
                     (use a newer orbit-persistence to read it)"
                ),
            ));
        }
        let source_len = fixed[10] as usize;
        let rest = self.read(source_len + 28, "header")?;
        let (source, rest) = rest.split_at(source_len);
        let u64_at = |i: usize| u64::from_be_bytes(rest[i..i + 8].try_into().unwrap_or_default());
        let stored_crc = u32::from_be_bytes(rest[24..28].try_into().unwrap_or_default());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&fixed);
        crc.update(source);
        crc.update(&rest[..24]);
        if crc.finalize() != stored_crc {
            return Err(self.corrupt(
                self.at - 4,
                "the header's checksum does not match its bytes",
            ));
        }
        let source = String::from_utf8(source.to_vec())
            .map_err(|_| self.corrupt(11, "the source backend's name is not UTF-8"))?;
        Ok(BackupHeader {
            source,
            revision: u64_at(0),
            leases: u64_at(8),
            created_at_ms: u64_at(16),
        })
    }

    /// The next chunk's leases; `None` after the trailer, which is checked then (counts, the
    /// whole file's checksum, and that nothing follows it).
    pub fn next_chunk(&mut self) -> OrbitResult<Option<Vec<AddressableLease>>> {
        if self.done {
            return Ok(None);
        }
        let start = self.at;
        let tag = self.read(1, "chunk or trailer")?[0];
        match tag {
            CHUNK_TAG => self.read_chunk(start).map(Some),
            TRAILER_TAG => {
                self.read_trailer(start)?;
                self.done = true;
                Ok(None)
            }
            other => Err(self.corrupt(
                start,
                format!("expected a chunk ('C') or the trailer ('T'), found byte {other:#04x}"),
            )),
        }
    }

    fn read_chunk(&mut self, start: u64) -> OrbitResult<Vec<AddressableLease>> {
        let head = self.read(CHUNK_HEADER_LEN - 1, "chunk header")?;
        let count = u32::from_be_bytes(head[0..4].try_into().unwrap_or_default()) as usize;
        let len = u32::from_be_bytes(head[4..8].try_into().unwrap_or_default()) as usize;
        let stored_crc = u32::from_be_bytes(head[8..12].try_into().unwrap_or_default());
        if count == 0 || count > CHUNK_LEASES || len > MAX_CHUNK_BYTES {
            return Err(self.corrupt(start, format!("chunk claims {count} leases in {len} bytes")));
        }
        let payload_at = self.at;
        let payload = self.read(len, "chunk")?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[CHUNK_TAG]);
        crc.update(&head[..8]);
        crc.update(&payload);
        if crc.finalize() != stored_crc {
            return Err(self.corrupt(start, "the chunk's checksum does not match its bytes"));
        }
        let mut leases = Vec::with_capacity(count);
        let mut at = 0usize;
        let bad = |at: usize, e: DecodeError| {
            OrbitError::corruption(&self.path, payload_at + (at + e.offset) as u64, e.detail)
        };
        for _ in 0..count {
            let size = payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap_or_default()) as usize)
                .ok_or_else(|| bad(at, DecodeError::new(0, "lease length past the chunk")))?;
            let body = payload
                .get(at + 4..at + 4 + size)
                .ok_or_else(|| bad(at, DecodeError::new(0, "lease past the chunk")))?;
            let lease = encoding::decode_lease(body).map_err(|e| bad(at + 4, e))?;
            if self
                .last
                .as_ref()
                .is_some_and(|last| *last >= lease.reference)
            {
                return Err(bad(
                    at,
                    DecodeError::new(0, format!("lease {:?} out of order", lease.reference)),
                ));
            }
            if lease.revision > self.header.revision {
                return Err(bad(
                    at,
                    DecodeError::new(
                        0,
                        format!(
                            "lease {:?} has revision {} above the backup's {}",
                            lease.reference, lease.revision, self.header.revision
                        ),
                    ),
                ));
            }
            self.last = Some(lease.reference.clone());
            leases.push(lease);
            at += 4 + size;
        }
        if at != payload.len() {
            return Err(bad(
                at,
                DecodeError::new(0, "bytes after the chunk's last lease"),
            ));
        }
        self.leases += count as u64;
        self.chunks += 1;
        Ok(leases)
    }

    fn read_trailer(&mut self, start: u64) -> OrbitResult<()> {
        let body = self.read(16, "trailer")?;
        let expected = self.whole.clone().finalize();
        let stored = self.read(4, "trailer")?;
        let stored = u32::from_be_bytes(stored[..4].try_into().unwrap_or_default());
        if stored != expected {
            return Err(self.corrupt(
                start,
                "the checksum of the whole file does not match its bytes",
            ));
        }
        let chunks = u64::from_be_bytes(body[0..8].try_into().unwrap_or_default());
        let leases = u64::from_be_bytes(body[8..16].try_into().unwrap_or_default());
        if chunks != self.chunks || leases != self.leases || leases != self.header.leases {
            return Err(self.corrupt(
                start,
                format!(
                    "the trailer counts {leases} leases in {chunks} chunks, the header {} leases, \
                     and the file holds {} in {}",
                    self.header.leases, self.leases, self.chunks
                ),
            ));
        }
        if self.at != self.len {
            return Err(self.corrupt(
                self.at,
                format!("{} bytes after the trailer", self.len - self.at),
            ));
        }
        Ok(())
    }

    /// The summary of the whole file, once [`BackupReader::next_chunk`] returned `None`.
    pub fn summary(&self) -> BackupSummary {
        BackupSummary {
            file: self.path.clone(),
            header: self.header.clone(),
            chunks: self.chunks,
            bytes: self.len,
        }
    }
}

/// Reads the whole backup at `path` and checks every checksum, the order and the counts.
/// Blocking. `Corruption` names the file and offset of the first problem.
pub fn verify_backup(fs: &dyn FileSystem, path: &Path) -> OrbitResult<BackupSummary> {
    let mut reader = BackupReader::open(fs, path)?;
    while reader.next_chunk()?.is_some() {}
    Ok(reader.summary())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFileSystem;
    use crate::types::{Key, NodeId, Timestamp};

    fn lease(i: u64) -> AddressableLease {
        let mut lease = AddressableLease::new(
            AddressableReference::new("T", Key::Int64Key { key: i as i64 }),
            NodeId::new(format!("n{}", i % 3), "ns"),
            Timestamp(1_000 + i),
            Timestamp(500 + i),
        );
        lease.revision = i + 1;
        lease
    }

    fn fs() -> Arc<dyn FileSystem> {
        Arc::new(StdFileSystem::new())
    }

    fn write(dir: &Path, n: u64) -> (PathBuf, Vec<AddressableLease>) {
        let leases: Vec<_> = (0..n).map(lease).collect();
        let path = dir.join("b.orbak");
        let header = BackupHeader::now("test", n + 7, n);
        write_backup(fs(), &path, header, leases.iter().cloned().map(Ok)).unwrap();
        (path, leases)
    }

    fn read_all(path: &Path) -> OrbitResult<Vec<AddressableLease>> {
        let mut reader = BackupReader::open(&StdFileSystem::new(), path)?;
        let mut out = Vec::new();
        while let Some(chunk) = reader.next_chunk()? {
            out.extend(chunk);
        }
        Ok(out)
    }

    fn corruption_offset(result: OrbitResult<BackupSummary>) -> u64 {
        match result {
            Err(OrbitError::Corruption { offset, .. }) => offset,
            other => panic!("expected Corruption, got {other:?}"),
        }
    }

    #[test]
    fn leases_round_trip_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let n = 2 * CHUNK_LEASES as u64 + 5;
        let (path, leases) = write(dir.path(), n);
        assert_eq!(read_all(&path).unwrap(), leases);
        let summary = verify_backup(&StdFileSystem::new(), &path).unwrap();
        assert_eq!(summary.header.source, "test");
        assert_eq!(summary.header.revision, n + 7);
        assert_eq!(summary.header.leases, n);
        assert_eq!(summary.chunks, 3);
        assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
        assert!(!tmp_path(&path).exists(), "the temporary file was renamed");
    }

    #[test]
    fn an_empty_store_backs_up_to_header_and_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(dir.path(), 0);
        let summary = verify_backup(&StdFileSystem::new(), &path).unwrap();
        assert_eq!((summary.header.leases, summary.chunks), (0, 0));
    }

    #[test]
    fn every_flipped_bit_is_corruption_or_a_wrong_version() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(dir.path(), 40);
        let good = std::fs::read(&path).unwrap();
        let bad = dir.path().join("bad");
        for byte in 0..good.len() {
            let mut bytes = good.clone();
            bytes[byte] ^= 1 << (byte % 8);
            std::fs::write(&bad, &bytes).unwrap();
            match verify_backup(&StdFileSystem::new(), &bad) {
                Err(OrbitError::Corruption { offset, .. }) => {
                    assert!(
                        offset <= bytes.len() as u64,
                        "offset {offset} of byte {byte}"
                    )
                }
                // The version's own bytes: a newer (or unknown) format.
                Err(OrbitError::WrongStore { .. }) if (8..10).contains(&byte) => {}
                other => panic!("flipped bit in byte {byte}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_truncation_is_corruption_at_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(dir.path(), 40);
        let good = std::fs::read(&path).unwrap();
        let bad = dir.path().join("bad");
        for len in 0..good.len() {
            std::fs::write(&bad, &good[..len]).unwrap();
            let offset = corruption_offset(verify_backup(&StdFileSystem::new(), &bad));
            assert!(offset <= len as u64, "cut at {len}: offset {offset}");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&bad, &longer).unwrap();
        assert_eq!(
            corruption_offset(verify_backup(&StdFileSystem::new(), &bad)),
            good.len() as u64
        );
    }

    #[test]
    fn a_future_version_is_a_wrong_store_naming_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(dir.path(), 3);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..10].copy_from_slice(&2u16.to_be_bytes());
        std::fs::write(&path, &bytes).unwrap();
        match verify_backup(&StdFileSystem::new(), &path) {
            Err(OrbitError::WrongStore { detail, .. }) => {
                assert!(detail.contains("version 2"), "{detail}")
            }
            other => panic!("expected WrongStore, got {other:?}"),
        }
    }

    #[test]
    fn the_writer_refuses_disorder_a_revision_above_r_a_wrong_count_and_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x");
        let mut w = BackupWriter::create(fs(), &dest, BackupHeader::now("t", 10, 2)).unwrap();
        w.push(&lease(2)).unwrap();
        assert!(matches!(
            w.push(&lease(1)),
            Err(OrbitError::Internal { .. })
        ));
        let mut high = lease(3);
        high.revision = 11;
        assert!(matches!(w.push(&high), Err(OrbitError::Internal { .. })));
        assert!(matches!(w.finish(), Err(OrbitError::Internal { .. })));
        assert!(!dest.exists() && !tmp_path(&dest).exists());

        std::fs::write(&dest, b"keep").unwrap();
        assert!(matches!(
            BackupWriter::create(fs(), &dest, BackupHeader::now("t", 0, 0)),
            Err(OrbitError::InvalidInput(_))
        ));
        assert_eq!(std::fs::read(&dest).unwrap(), b"keep");
    }
}
