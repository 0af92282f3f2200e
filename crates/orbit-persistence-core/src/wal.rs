//! Write-ahead logs of numbered segments: core's CRC32-framed log ([`crate::log`]), one record
//! per write request, each the request's lease changes ([`crate::change`]). Shared by the disk
//! engines that apply writes in memory and make them durable elsewhere later (the COW B+tree's
//! checkpoints, the LSM's memtable flushes).
//!
//! # Layout
//!
//! Segments are `wal-<16 hex digits>.log`. A new store creates its first segment before it is
//! ready ([`crate::identity`]). Before the engine makes the data of the segments so far durable
//! elsewhere, it starts a new segment ([`rotate`]); its durable root (meta page, manifest) then
//! names the first segment recovery must replay, and older segments are deleted (and at open,
//! if a crash came first).
//!
//! [`rotate`] creates the next segment (header synced, directory synced), then appends a *seal*
//! to the old one and syncs it: a last record whose payload is `0x00 "SEAL"` followed by the
//! next segment's number (u64 BE). A change record starts with its format version (1), so no
//! change record reads as a seal. The seal is what lets recovery tell a segment that never
//! existed from one that was deleted or emptied.
//!
//! # Recovery rules
//!
//! Recovery replays the named segment and every later one, which must follow without a gap.
//! Nothing acknowledged may vanish without an error:
//!
//! - The named segment missing, or its header torn (it was durable before the root named it):
//!   `Corruption`.
//! - A sealed segment whose successor is missing, or whose successor's header is torn:
//!   `Corruption` (the successor was durable before the seal was written).
//! - The last segment holding no record, when the one before it is not sealed: a crash came
//!   between creating it and the seal. It is removed, reported, and the one before continues.
//! - Only the last segment may end in a torn write (it is cut, and reported); a segment before
//!   it may end in a torn seal only if every segment after it is empty. Any other torn end is
//!   `Corruption`.
//!
//! Segments written by a build that did not seal are read as before: their deletion after
//! the last rotation is the one loss these rules cannot see.

use std::path::{Path, PathBuf};

use crate::fs::FileSystem;
use crate::log::{LogBatch, LogRecord, LogReplay, LogWriter, RECORD_HEADER_LEN, read_log};
use crate::recovery::{RecoveryAction, RecoveryReport};
use crate::{OrbitError, OrbitResult};

/// Bytes of a whole seal record: record header and payload.
const SEAL_RECORD_LEN: u64 = RECORD_HEADER_LEN + SEAL_PAYLOAD_LEN as u64;

/// Path of segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:016x}.log"))
}

/// The WAL segments in `dir`, by number.
pub fn list_segments(fs: &dyn FileSystem, dir: &Path) -> OrbitResult<Vec<u64>> {
    let mut seqs: Vec<u64> = fs
        .list_dir(dir)?
        .iter()
        .filter_map(|name| {
            let hex = name.strip_prefix("wal-")?.strip_suffix(".log")?;
            if hex.len() != 16 {
                return None;
            }
            u64::from_str_radix(hex, 16).ok()
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// What recovery found in the WAL.
pub struct Replayed {
    /// Records to apply, in order, with the segment each came from (seals left out).
    pub records: Vec<(PathBuf, LogRecord)>,
    /// The writer continuing the last segment.
    pub writer: LogWriter,
    /// Number of the last segment.
    pub seq: u64,
}

/// The payload of a seal record: `0x00 "SEAL"` and the next segment's number, u64 BE. A change
/// record starts with its format version (1), so no change record ever reads as a seal.
fn seal_payload(next: u64) -> [u8; SEAL_PAYLOAD_LEN] {
    let mut out = [0u8; SEAL_PAYLOAD_LEN];
    out[..5].copy_from_slice(SEAL_TAG);
    out[5..].copy_from_slice(&next.to_be_bytes());
    out
}

const SEAL_TAG: &[u8; 5] = b"\0SEAL";
const SEAL_PAYLOAD_LEN: usize = 13;

/// The next segment a seal record names, if `payload` is one.
fn sealed_to(payload: &[u8]) -> Option<u64> {
    let next = payload.strip_prefix(SEAL_TAG.as_slice())?;
    Some(u64::from_be_bytes(next.try_into().ok()?))
}

/// Starts segment `next` after `current`: syncs `current`, creates `next` (durable), then seals
/// `current` (see the module docs for why in that order). Returns the new segment's writer.
pub fn rotate(
    fs: &dyn FileSystem,
    dir: &Path,
    current: &mut LogWriter,
    next: u64,
) -> OrbitResult<LogWriter> {
    current.sync()?;
    let writer = LogWriter::create(fs, &segment_path(dir, next))?;
    let mut seal = LogBatch::new();
    seal.push(&seal_payload(next))?;
    current.append(&seal)?;
    current.sync()?;
    Ok(writer)
}

/// Creates segment `seq` of a new store (durable when this returns).
pub fn create_first(fs: &dyn FileSystem, dir: &Path, seq: u64) -> OrbitResult<LogWriter> {
    LogWriter::create(fs, &segment_path(dir, seq))
}

/// Whether recovery may change the files it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Recovery deletes old and empty segments and cuts a torn tail, and the log goes on.
    ReadWrite,
    /// Nothing is changed on disk: what recovery would cut or delete is only left out of the
    /// replay (and reported alike), and the returned writer cannot append.
    ReadOnly,
}

/// Replays segments `start..` of `dir` for the durable root `root` (the meta page or manifest
/// that names `start`; used in messages), deleting older ones, and records what it did in
/// `report`. Every segment from `start` on must be there: see the module docs.
pub fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
    start: u64,
    root: &Path,
    access: Access,
    report: &mut RecoveryReport,
) -> OrbitResult<Replayed> {
    let writable = access == Access::ReadWrite;
    let all = list_segments(fs, dir)?;
    if writable {
        for &old in all.iter().filter(|&&s| s < start) {
            let path = segment_path(dir, old);
            fs.remove_file(&path)?;
            report.record(RecoveryAction::OrphanRemoved { path });
        }
    }
    let live: Vec<u64> = all.into_iter().filter(|&s| s >= start).collect();
    if live.first() != Some(&start) {
        return Err(OrbitError::corruption(
            segment_path(dir, start),
            0,
            format!(
                "WAL segment named by {} is missing (deleted?): the writes it held are lost",
                root.display()
            ),
        ));
    }
    for (i, &seq) in live.iter().enumerate() {
        if seq != start + i as u64 {
            return Err(OrbitError::corruption(
                segment_path(dir, start + i as u64),
                0,
                format!("WAL segment missing before segment {seq:016x}"),
            ));
        }
    }
    let mut last = start + live.len() as u64 - 1;
    let mut records = Vec::new();
    // Where the segment read last ends (its records moved into `records`): the log goes on
    // there, without reading it again.
    let mut tail: Option<LogReplay> = None;
    // Whether segment `seq - 1` ended in a valid seal naming `seq`.
    let mut sealed = false;
    // Where segment `seq - 1` ended in a torn write (its seal, torn by a crash).
    let mut torn_before: Option<(PathBuf, u64)> = None;
    for seq in start..=last {
        let path = segment_path(dir, seq);
        let mut replay = read_log(fs, &path)?;
        let is_last = seq == last;
        if replay.records.is_empty() && is_last && seq > start && !sealed {
            // Created just before a crash, before the segment before it was sealed (or by a
            // build that did not seal): nothing was ever written to it.
            if writable {
                fs.remove_file(&path)?;
                fs.sync_dir(dir)?;
            }
            report.record(RecoveryAction::EmptySegmentRemoved { path });
            last = seq - 1;
            break;
        }
        if let Some((path, at)) = torn_before.take() {
            return Err(OrbitError::corruption(
                path,
                at,
                "incomplete record at the end of a WAL segment that is not the last",
            ));
        }
        if replay.valid_len == 0 && (sealed || seq == start || !is_last) {
            return Err(OrbitError::corruption(
                &path,
                0,
                format!(
                    "WAL segment is empty or its header is damaged, but it was durable before \
                     {} named it or the segment before it was sealed: its writes are lost",
                    root.display()
                ),
            ));
        }
        let seal = replay.records.last().and_then(|r| sealed_to(&r.payload));
        if let Some(next) = seal {
            let at = replay.records.last().map_or(0, |r| r.offset);
            if next != seq + 1 {
                return Err(OrbitError::corruption(
                    &path,
                    at,
                    format!("seal names segment {next:016x}, not the next one"),
                ));
            }
            if is_last {
                return Err(OrbitError::corruption(
                    segment_path(dir, next),
                    0,
                    format!(
                        "WAL segment is missing (deleted?): {} was sealed after it was created, \
                         so its writes are lost",
                        path.display()
                    ),
                ));
            }
            replay.records.pop();
        }
        if let Some(r) = replay
            .records
            .iter()
            .find(|r| sealed_to(&r.payload).is_some())
        {
            return Err(OrbitError::corruption(
                &path,
                r.offset,
                "seal record before the end of a WAL segment",
            ));
        }
        if !is_last && replay.torn_tail {
            // A seal torn by a crash is the one torn end a segment before the last may have;
            // the next segment must then be empty, and is removed above.
            if replay.file_len - replay.valid_len > SEAL_RECORD_LEN || seal.is_some() {
                return Err(OrbitError::corruption(
                    &path,
                    replay.valid_len,
                    "incomplete record at the end of a WAL segment that is not the last",
                ));
            }
            torn_before = Some((path.clone(), replay.valid_len));
        }
        sealed = seal.is_some();
        records.extend(
            std::mem::take(&mut replay.records)
                .into_iter()
                .map(|r| (path.clone(), r)),
        );
        tail = Some(replay);
    }
    // The named segment is never removed, so at least it was read.
    let replay = tail.ok_or_else(|| {
        OrbitError::corruption(segment_path(dir, start), 0, "no WAL segment was read")
    })?;
    let path = segment_path(dir, last);
    let writer = match access {
        Access::ReadWrite => LogWriter::resume(fs, &path, &replay)?,
        Access::ReadOnly => LogWriter::read_only(fs, &path, &replay)?,
    };
    if replay.torn_tail {
        report.record(RecoveryAction::TailCut {
            path: path.clone(),
            offset: replay.valid_len,
            bytes: replay.file_len - replay.valid_len,
        });
    }
    if !records.is_empty() {
        report.record(RecoveryAction::Replayed {
            first_segment: start,
            last_segment: last,
            records: records.len() as u64,
        });
    }
    Ok(Replayed {
        records,
        writer,
        seq: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FaultFs, OpenMode};

    const DIR: &str = "/store";
    const ROOT: &str = "/store/MANIFEST";

    /// A WAL of segments 1..=3 (1 and 2 sealed), one record in each.
    fn three_segments(fs: &FaultFs) -> LogWriter {
        let dir = Path::new(DIR);
        fs.create_dir_all_durable(dir).unwrap();
        let mut w = create_first(fs, dir, 1).unwrap();
        for next in 2..=3 {
            let mut b = LogBatch::new();
            b.push(format!("record of segment {}", next - 1).as_bytes())
                .unwrap();
            w.append(&b).unwrap();
            w = rotate(fs, dir, &mut w, next).unwrap();
        }
        let mut b = LogBatch::new();
        b.push(b"record of segment 3").unwrap();
        w.append(&b).unwrap();
        w.sync().unwrap();
        w
    }

    fn recover_at(fs: &FaultFs, start: u64) -> (OrbitResult<Replayed>, RecoveryReport) {
        let mut report = RecoveryReport::default();
        let out = recover(
            fs,
            Path::new(DIR),
            start,
            Path::new(ROOT),
            Access::ReadWrite,
            &mut report,
        );
        (out, report)
    }

    fn corruption_of(out: OrbitResult<Replayed>) -> (PathBuf, String) {
        match out {
            Err(OrbitError::Corruption { path, detail, .. }) => (path, detail),
            Err(e) => panic!("expected Corruption, got {e}"),
            Ok(r) => panic!("expected Corruption, replayed {} records", r.records.len()),
        }
    }

    fn set_len(fs: &FaultFs, seq: u64, len: u64) {
        let f = fs
            .open(&segment_path(Path::new(DIR), seq), OpenMode::ReadWrite)
            .unwrap();
        f.set_len(len).unwrap();
    }

    #[test]
    fn seals_are_left_out_and_replays_are_reported() {
        let fs = FaultFs::new();
        drop(three_segments(&fs));
        let (out, report) = recover_at(&fs, 1);
        let replayed = out.unwrap();
        let payloads: Vec<_> = replayed.records.iter().map(|(_, r)| &r.payload).collect();
        assert_eq!(
            payloads,
            [
                b"record of segment 1".as_slice(),
                b"record of segment 2",
                b"record of segment 3"
            ]
        );
        assert_eq!(replayed.seq, 3);
        assert_eq!(
            report.actions,
            [RecoveryAction::Replayed {
                first_segment: 1,
                last_segment: 3,
                records: 3
            }]
        );
        // From segment 3 on: 1 and 2 are deleted, and that is reported too.
        drop(replayed);
        let (out, report) = recover_at(&fs, 3);
        assert_eq!(out.unwrap().records.len(), 1);
        assert_eq!(report.len(), 3, "{report:?}");
        assert_eq!(list_segments(&fs, Path::new(DIR)).unwrap(), [3]);
    }

    #[test]
    fn a_deleted_or_emptied_segment_is_corruption_never_a_shorter_log() {
        // The last segment, after a sealed one: deleted, or emptied.
        let fs = FaultFs::new();
        drop(three_segments(&fs));
        fs.remove_file(&segment_path(Path::new(DIR), 3)).unwrap();
        let (path, detail) = corruption_of(recover_at(&fs, 1).0);
        assert!(path.ends_with("wal-0000000000000003.log"), "{path:?}");
        assert!(detail.contains("missing"), "{detail}");

        let fs = FaultFs::new();
        drop(three_segments(&fs));
        set_len(&fs, 3, 0);
        let (path, _) = corruption_of(recover_at(&fs, 1).0);
        assert!(path.ends_with("wal-0000000000000003.log"), "{path:?}");

        // The segment the root names: deleted, or emptied (a store before its first flush).
        let fs = FaultFs::new();
        drop(three_segments(&fs));
        fs.remove_file(&segment_path(Path::new(DIR), 1)).unwrap();
        let (path, detail) = corruption_of(recover_at(&fs, 1).0);
        assert!(path.ends_with("wal-0000000000000001.log"), "{path:?}");
        assert!(detail.contains(ROOT), "{detail}");
        let fs = FaultFs::new();
        drop(three_segments(&fs));
        set_len(&fs, 1, 0);
        let (path, _) = corruption_of(recover_at(&fs, 1).0);
        assert!(path.ends_with("wal-0000000000000001.log"), "{path:?}");

        // A segment in the middle.
        let fs = FaultFs::new();
        drop(three_segments(&fs));
        fs.remove_file(&segment_path(Path::new(DIR), 2)).unwrap();
        let (path, _) = corruption_of(recover_at(&fs, 1).0);
        assert!(path.ends_with("wal-0000000000000002.log"), "{path:?}");
    }

    #[test]
    fn a_crash_between_creating_a_segment_and_sealing_the_last_loses_nothing() {
        let dir = Path::new(DIR);
        // Created, not sealed: the empty segment is removed and the one before goes on.
        let fs = FaultFs::new();
        let mut w = three_segments(&fs);
        drop(LogWriter::create(&fs, &segment_path(dir, 4)).unwrap());
        let (out, report) = recover_at(&fs, 1);
        let mut replayed = out.unwrap();
        assert_eq!((replayed.seq, replayed.records.len()), (3, 3));
        assert!(matches!(
            report.actions[..],
            [
                RecoveryAction::EmptySegmentRemoved { .. },
                RecoveryAction::Replayed { .. }
            ]
        ));
        assert!(!fs.exists(&segment_path(dir, 4)).unwrap());
        // The log goes on in segment 3 and rotates again.
        let mut b = LogBatch::new();
        b.push(b"after").unwrap();
        replayed.writer.append(&b).unwrap();
        drop(rotate(&fs, dir, &mut replayed.writer, 4).unwrap());
        assert_eq!(recover_at(&fs, 1).0.unwrap().records.len(), 4);

        // The seal torn by the crash: cut and reported, the empty segment removed.
        let fs = FaultFs::new();
        w = {
            drop(w);
            three_segments(&fs)
        };
        drop(LogWriter::create(&fs, &segment_path(dir, 4)).unwrap());
        let mut seal = LogBatch::new();
        seal.push(&seal_payload(4)).unwrap();
        let torn = &seal.as_bytes()[..seal.byte_len() - 3];
        let f = fs.open(&segment_path(dir, 3), OpenMode::ReadWrite).unwrap();
        f.append(torn).unwrap();
        let (out, report) = recover_at(&fs, 1);
        assert_eq!(out.unwrap().records.len(), 3);
        assert!(report.cut_a_tail(), "{report:?}");

        // A torn seal with writes after it in the next segment is not a crash: corruption.
        let fs = FaultFs::new();
        drop(w);
        drop(three_segments(&fs));
        let f = fs.open(&segment_path(dir, 2), OpenMode::ReadWrite).unwrap();
        let len = f.len().unwrap();
        f.set_len(len - 3).unwrap();
        let (path, _) = corruption_of(recover_at(&fs, 1).0);
        assert!(path.ends_with("wal-0000000000000002.log"), "{path:?}");
    }

    #[test]
    fn a_torn_last_record_is_cut_and_reported() {
        let fs = FaultFs::new();
        let w = three_segments(&fs);
        let len = w.len();
        drop(w);
        set_len(&fs, 3, len - 2);
        let (out, report) = recover_at(&fs, 1);
        assert_eq!(out.unwrap().records.len(), 2);
        let cut = report
            .actions
            .iter()
            .find_map(|a| match a {
                RecoveryAction::TailCut { offset, bytes, .. } => Some((*offset, *bytes)),
                _ => None,
            })
            .expect("a tail cut reported");
        assert_eq!(
            cut,
            (crate::log::HEADER_LEN, len - 2 - crate::log::HEADER_LEN)
        );
    }
}
