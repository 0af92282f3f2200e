//! One manifest edit, and a whole MANIFEST file replayed as recovery replays it: never a panic;
//! whatever edit decodes encodes back to the same bytes.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use orbit_persistence_core::fs::{FaultFs, FileSystem, OpenMode};
use orbit_persistence_lsm::manifest::{Edit, MANIFEST, Manifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(edit) = Edit::decode(data) {
        assert_eq!(edit.encode(), data, "an edit with two encodings");
    }
    let fs = FaultFs::new();
    fs.create_dir_all(Path::new("/db")).unwrap();
    fs.open(&Path::new("/db").join(MANIFEST), OpenMode::CreateNew)
        .unwrap()
        .append(data)
        .unwrap();
    let _ = Manifest::open(Arc::new(fs), Path::new("/db"));
});
