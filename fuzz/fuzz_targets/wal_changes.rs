//! The payload of a WAL record (a batch of lease changes): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orbit_persistence_core::change::decode_changes;

fuzz_target!(|data: &[u8]| {
    let _ = decode_changes(data);
});
