//! A whole SSTable file, with its footer CRC fixed up so the index and bloom handles are
//! followed: opening, verifying, lookups and a full scan never panic.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use orbit_persistence_core::fs::{FaultFs, FileSystem, OpenMode};
use orbit_persistence_lsm::sstable::{Table, TableIter};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() >= 56 {
        let footer = bytes.len() - 56;
        let crc = crc32fast::hash(&bytes[footer..footer + 52]);
        bytes[footer + 52..].copy_from_slice(&crc.to_be_bytes());
    }
    let fs = FaultFs::new();
    let path = Path::new("/0000000000000001.sst");
    fs.open(path, OpenMode::CreateNew)
        .unwrap()
        .append(&bytes)
        .unwrap();
    let Ok(table) = Table::open(&fs, path, 1, None) else {
        return;
    };
    let table = Arc::new(table);
    let _ = table.verify();
    for probe in [&b""[..], b"a", b"\xff"] {
        let _ = table.may_contain(probe);
        let _ = table.get(probe);
    }
    for entry in TableIter::new(table, b"") {
        if entry.is_err() {
            break;
        }
    }
});
