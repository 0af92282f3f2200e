//! A check of RocksDB's write-ahead logs before RocksDB replays them, applying our torn-tail
//! rule (docs/design-decisions.md) to RocksDB's log format.
//!
//! Why: even under `TolerateCorruptedTailRecords`, RocksDB's log reader takes two kinds of
//! damage for the end of the log and opens without every write after it, silently:
//! - a flipped type byte that reads as a *recycled-log* record type (`1 ^ 4 == 5`): RocksDB then
//!   compares a log number, finds it wrong, and treats the record as left over from an earlier
//!   use of the file, which ends the log (CI found this: a bit flip at offset 6 of a WAL lost
//!   every acknowledged write in it);
//! - a flipped length in the file's last 32 KiB block, so that the record seems to run past end
//!   of file: read as a torn write.
//!
//! So before RocksDB opens the database, every `*.log` file in it is read here. A record that
//! does not verify is a torn tail (allowed: RocksDB drops it, nothing acknowledged is lost) only
//! when no record that verifies starts anywhere after it; otherwise the open fails with
//! `Corruption` naming the file and the record's offset.
//!
//! # Format (RocksDB `db/log_format.h`, `db/log_writer.cc`)
//!
//! The file is a sequence of 32 KiB blocks; a record never crosses a block boundary (a long
//! write batch is split into First/Middle/Last fragments), and a block's last 0-6 bytes, too few
//! for a header, are zero padding. A record is:
//!
//! ```text
//! masked crc32c: u32 LE   over the type byte and the payload
//! length:        u16 LE   of the payload
//! type:          u8       1 full, 2 first, 3 middle, 4 last, 9 compression type,
//!                         10 timestamp size, 130 predecessor WAL info
//! payload:       length bytes
//! ```
//!
//! The recycled-log types (5-8, 11, 131) carry a log number in a longer header; this backend
//! never enables log recycling, so in our WALs they are damage like any other bad byte.

use std::path::Path;

use orbit_persistence_core::{OrbitError, OrbitResult};

const BLOCK_SIZE: usize = 32 * 1024;
const HEADER_SIZE: usize = 7;
/// RocksDB's `crc32c::Mask` delta: stored checksums are rotated and offset, so that a CRC of
/// data that itself holds CRCs does not look like a valid record.
const MASK_DELTA: u32 = 0xa282_ead8;

/// Whether `t` is a record type a non-recycled RocksDB WAL can hold.
fn known_type(t: u8) -> bool {
    matches!(t, 1..=4 | 9 | 10 | 130)
}

fn masked_crc(type_and_payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(type_and_payload);
    (crc.rotate_right(15)).wrapping_add(MASK_DELTA)
}

/// The end of the record at `at` if one that verifies starts there: a known type, a payload
/// inside both the file and the record's block, and a matching checksum.
fn valid_record_at(log: &[u8], at: usize) -> Option<usize> {
    let block_end = ((at / BLOCK_SIZE + 1) * BLOCK_SIZE).min(log.len());
    let header = log.get(at..at + HEADER_SIZE)?;
    let length = u16::from_le_bytes([header[4], header[5]]) as usize;
    let end = at + HEADER_SIZE + length;
    if !known_type(header[6]) || end > block_end {
        return None;
    }
    let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    (masked_crc(&log[at + 6..end]) == stored).then_some(end)
}

/// Whether a record that verifies starts anywhere after `bad` (the offset of a record that
/// did not). A torn write is the last thing in the file, so nothing valid follows it. Runs only
/// when a record is bad; the type and length tests reject almost every offset before the CRC.
fn valid_record_after(log: &[u8], bad: usize) -> bool {
    (bad + 1..log.len().saturating_sub(HEADER_SIZE - 1))
        .any(|at| valid_record_at(log, at).is_some())
}

/// Checks one WAL's bytes; `Err` holds the offset of the first bad record and what is wrong.
fn check_log(log: &[u8]) -> Result<(), (usize, String)> {
    let mut at = 0;
    while at < log.len() {
        let left_in_block = BLOCK_SIZE - at % BLOCK_SIZE;
        if left_in_block < HEADER_SIZE {
            at += left_in_block; // padding
            continue;
        }
        match valid_record_at(log, at) {
            Some(end) => at = end,
            None if valid_record_after(log, at) => {
                let what = match log.get(at + 6) {
                    Some(&t) if !known_type(t) => {
                        format!("has type {t}, which our WALs never hold")
                    }
                    _ => "fails its checksum or length".to_owned(),
                };
                return Err((
                    at,
                    format!("the WAL record at offset {at} {what}, yet records after it verify"),
                ));
            }
            None => return Ok(()), // a torn tail: RocksDB drops it
        }
    }
    Ok(())
}

/// Checks every WAL of the RocksDB database in `db_dir` (none if it does not exist yet).
pub fn check_wals(db_dir: &Path) -> OrbitResult<()> {
    let entries = match std::fs::read_dir(db_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(OrbitError::io("list the RocksDB directory", db_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| OrbitError::io("list the RocksDB directory", db_dir, e))?;
        let name = entry.file_name();
        let is_wal = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()));
        if !is_wal {
            continue;
        }
        let path = entry.path();
        let log =
            std::fs::read(&path).map_err(|e| OrbitError::io("read a RocksDB WAL", &path, e))?;
        check_log(&log)
            .map_err(|(offset, detail)| OrbitError::corruption(&path, offset as u64, detail))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL as RocksDB's writer lays it out: `payloads` as records, fragmented at block ends.
    fn write_log(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut log = Vec::new();
        let mut starts = Vec::new();
        for payload in payloads {
            let mut rest: &[u8] = payload;
            let mut first = true;
            loop {
                let left_in_block = BLOCK_SIZE - log.len() % BLOCK_SIZE;
                if left_in_block < HEADER_SIZE {
                    log.resize(log.len() + left_in_block, 0);
                    continue;
                }
                let take = rest.len().min(left_in_block - HEADER_SIZE);
                let last = take == rest.len();
                let record_type: u8 = match (first, last) {
                    (true, true) => 1,
                    (true, false) => 2,
                    (false, false) => 3,
                    (false, true) => 4,
                };
                starts.push(log.len());
                let mut type_and_payload = vec![record_type];
                type_and_payload.extend_from_slice(&rest[..take]);
                log.extend_from_slice(&masked_crc(&type_and_payload).to_le_bytes());
                log.extend_from_slice(&(take as u16).to_le_bytes());
                log.extend_from_slice(&type_and_payload);
                rest = &rest[take..];
                first = false;
                if last {
                    break;
                }
            }
        }
        (log, starts)
    }

    fn payloads() -> Vec<Vec<u8>> {
        (0..40u32)
            .map(|i| {
                (0..(i * 397 % 3000 + 1))
                    .map(|b| (b * 7 + i) as u8)
                    .collect()
            })
            .chain(std::iter::once(vec![0xAB; 40_000])) // crosses a block boundary
            .chain((0..20u8).map(|i| vec![i; 100]))
            .collect()
    }

    #[test]
    fn an_intact_log_and_every_torn_tail_of_it_pass() {
        let (log, _) = write_log(&payloads());
        assert!(log.len() > BLOCK_SIZE * 2);
        assert_eq!(check_log(&log), Ok(()));
        for len in (0..log.len()).step_by(97).chain(log.len() - 50..log.len()) {
            assert_eq!(check_log(&log[..len]), Ok(()), "cut at {len}");
        }
        let mut zero_tail = log.clone();
        zero_tail.resize(log.len() + 5000, 0);
        assert_eq!(
            check_log(&zero_tail),
            Ok(()),
            "a preallocated, zero tail is torn"
        );
    }

    #[test]
    fn a_recycled_type_or_a_long_length_before_valid_records_is_corruption() {
        let (log, starts) = write_log(&payloads());
        // The flips RocksDB itself reads as the end of the log.
        let mut recycled = log.clone();
        recycled[6] ^= 4; // full (1) -> recyclable full (5)
        let (offset, detail) = check_log(&recycled).unwrap_err();
        assert_eq!(offset, 0);
        assert!(detail.contains("type 5"), "{detail}");
        let in_last_block = *starts.iter().rev().nth(2).unwrap();
        assert!(in_last_block > log.len() / BLOCK_SIZE * BLOCK_SIZE);
        let mut long = log.clone();
        long[in_last_block + 5] ^= 0x80; // runs past end of file
        assert_eq!(check_log(&long).unwrap_err().0, in_last_block);
    }

    #[test]
    fn a_bit_flip_in_any_record_but_the_last_is_corruption_at_that_record() {
        let (log, starts) = write_log(&payloads()[36..]);
        let last = *starts.last().unwrap();
        let record_of = |offset: usize| {
            starts.iter().copied().rev().find(|&s| {
                let length = u16::from_le_bytes([log[s + 4], log[s + 5]]) as usize;
                s <= offset && offset < s + HEADER_SIZE + length
            })
        };
        let mut flips = 0;
        for offset in 0..last {
            let Some(record) = record_of(offset) else {
                continue; // block padding, which RocksDB skips unread
            };
            // Every bit of every header byte; one bit of every 61st payload byte.
            let bits = if offset - record < HEADER_SIZE {
                0..8
            } else if offset % 61 == 0 {
                offset % 8..offset % 8 + 1
            } else {
                continue;
            };
            for bit in bits {
                let mut damaged = log.clone();
                damaged[offset] ^= 1 << bit;
                match check_log(&damaged) {
                    Err((at, _)) => assert_eq!(at, record, "flip {offset}/{bit}"),
                    Ok(()) => panic!("flip {offset}/{bit} passed"),
                }
                flips += 1;
            }
        }
        assert!(flips > 500, "{flips}");
    }

    #[test]
    fn check_wals_names_the_damaged_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_wals(&dir.path().join("missing")).is_ok());
        let (mut log, _) = write_log(&payloads());
        std::fs::write(dir.path().join("000007.log"), &log).unwrap();
        std::fs::write(dir.path().join("LOG"), b"not a WAL").unwrap();
        assert!(check_wals(dir.path()).is_ok());
        log[6] ^= 4;
        std::fs::write(dir.path().join("000009.log"), &log).unwrap();
        match check_wals(dir.path()) {
            Err(OrbitError::Corruption { path, offset, .. }) => {
                assert!(path.ends_with("000009.log"));
                assert_eq!(offset, 0);
            }
            other => panic!("expected Corruption, got {other:?}"),
        }
    }
}
