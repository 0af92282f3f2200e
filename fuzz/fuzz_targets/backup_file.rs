//! A whole backup file, read as `verify-backup` and `restore` read it: never a panic; every
//! chunk returned holds leases in strictly ascending reference order with revisions up to the
//! header's, and a file that reads to its end holds exactly the count its header promised.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use orbit_persistence_core::backup::{BackupReader, verify_backup};
use orbit_persistence_core::fs::{FaultFs, FileSystem, OpenMode};

fuzz_target!(|data: &[u8]| {
    let fs = FaultFs::new();
    let path = Path::new("/fuzz.orbak");
    fs.open(path, OpenMode::CreateNew)
        .unwrap()
        .append(data)
        .unwrap();
    let verified = verify_backup(&fs, path);
    let Ok(mut reader) = BackupReader::open(&fs, path) else {
        assert!(verified.is_err());
        return;
    };
    let revision = reader.header().revision;
    let (mut read, mut last) = (0u64, None);
    loop {
        match reader.next_chunk() {
            Ok(Some(chunk)) => {
                for lease in chunk {
                    assert!(lease.revision <= revision);
                    assert!(last.as_ref().is_none_or(|l| *l < lease.reference));
                    last = Some(lease.reference);
                    read += 1;
                }
            }
            Ok(None) => {
                let summary = verified.expect("a file that reads whole verifies");
                assert_eq!(summary.header.leases, read);
                return;
            }
            Err(_) => {
                assert!(verified.is_err(), "verify passed a file the reader refuses");
                return;
            }
        }
    }
});
