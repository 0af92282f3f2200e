//! Write-ahead logs of numbered segments: core's CRC32-framed log ([`crate::log`]), one record
//! per write request, each the request's lease changes ([`crate::change`]). Shared by the disk
//! engines that apply writes in memory and make them durable elsewhere later (the COW B+tree's
//! checkpoints, the LSM's memtable flushes).
//!
//! Segments are `wal-<16 hex digits>.log`. Before the engine makes the data of the segments so
//! far durable elsewhere, it starts a new segment; its durable root (meta page, manifest) then
//! names the first segment recovery must replay, and older segments are deleted (and at open, if
//! a crash came first). Recovery replays the named segment and every later one, which must
//! follow without a gap. Only the last segment may end in a torn write (it is cut); a torn end
//! anywhere else, or a missing segment, is `Corruption`.

use std::path::{Path, PathBuf};

use crate::fs::FileSystem;
use crate::log::{LogRecord, LogWriter, read_log};
use crate::{OrbitError, OrbitResult};

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
    /// Records to apply, in order, with the segment each came from.
    pub records: Vec<(PathBuf, LogRecord)>,
    /// The writer continuing the last segment.
    pub writer: LogWriter,
    /// Number of the last segment.
    pub seq: u64,
}

/// Replays segments `start..` of `dir`, deleting older ones; creates segment `start` if none
/// exists and `fresh` (no durable root ever named a segment that could be missing).
pub fn recover(fs: &dyn FileSystem, dir: &Path, start: u64, fresh: bool) -> OrbitResult<Replayed> {
    let all = list_segments(fs, dir)?;
    for &old in all.iter().filter(|&&s| s < start) {
        fs.remove_file(&segment_path(dir, old))?;
    }
    let live: Vec<u64> = all.into_iter().filter(|&s| s >= start).collect();
    if live.is_empty() {
        if !fresh {
            return Err(OrbitError::corruption(
                segment_path(dir, start),
                0,
                "WAL segment named by the meta page is missing",
            ));
        }
        let writer = LogWriter::create(fs, &segment_path(dir, start))?;
        return Ok(Replayed {
            records: Vec::new(),
            writer,
            seq: start,
        });
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
    let mut records = Vec::new();
    let last = start + live.len() as u64 - 1;
    for seq in start..last {
        let path = segment_path(dir, seq);
        let replay = read_log(fs, &path)?;
        if replay.torn_tail {
            return Err(OrbitError::corruption(
                &path,
                replay.valid_len,
                "incomplete record at the end of a WAL segment that is not the last",
            ));
        }
        records.extend(replay.records.into_iter().map(|r| (path.clone(), r)));
    }
    let path = segment_path(dir, last);
    let (writer, replay) = LogWriter::open_for_append(fs, &path)?;
    records.extend(replay.records.into_iter().map(|r| (path.clone(), r)));
    Ok(Replayed {
        records,
        writer,
        seq: last,
    })
}
