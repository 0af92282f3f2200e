//! A data block of an SSTable (after its CRC): opening, point lookups and a full scan from
//! several start keys never panic and never allocate past the block. (Key order is the
//! writer's guarantee, kept by the CRC: an arbitrary block may decode out of order.)
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use orbit_persistence_lsm::sstable::block::{Block, BlockCursor};

fuzz_target!(|data: &[u8]| {
    let Ok(block) = Block::new(data.to_vec().into_boxed_slice()) else {
        return;
    };
    let block = Arc::new(block);
    for probe in [&b""[..], b"a", b"\xff\xff", data.get(..8).unwrap_or(b"")] {
        let _ = block.get(probe);
        let Ok(mut cursor) = BlockCursor::seek(block.clone(), probe) else {
            continue;
        };
        while let Ok(Some(entry)) = cursor.next_entry() {
            assert!(entry.0.len() <= block.len(), "a key longer than its block");
        }
    }
});
