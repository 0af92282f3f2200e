//! A whole log file (WAL segment or manifest framing: header, CRC32-framed records), read as
//! recovery reads it: never a panic; a torn tail is reported within the file, every record
//! returned lies inside the valid prefix.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use orbit_persistence_core::fs::{FaultFs, FileSystem, OpenMode};
use orbit_persistence_core::log::{LogReader, header_bytes};

fuzz_target!(|data: &[u8]| {
    let fs = FaultFs::new();
    let path = Path::new("/fuzz.log");
    let file = fs.open(path, OpenMode::CreateNew).unwrap();
    // The first byte picks whether a valid header goes before the rest, so the fuzzer spends
    // its time on the records as well as on the header.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        file.append(&header_bytes()).unwrap();
    }
    file.append(rest).unwrap();
    let Ok(mut reader) = LogReader::open(&fs, path) else {
        return;
    };
    let file_len = reader.file_len();
    while let Ok(Some((offset, payload))) = reader.next_record() {
        assert!(offset + payload.len() as u64 <= file_len);
    }
    assert!(reader.valid_len() <= file_len);
});
