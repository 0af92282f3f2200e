//! A page of the COW B+tree's page file: the check, then every cell, child link, overflow and
//! free-list field. The input's CRC is fixed up first, so the fuzzer gets past the checksum to
//! the structure a bit flip that beats CRC32 (or a bug writing pages) would expose.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orbit_persistence_cowbtree::page::{
    Kind, Layout, NodePage, check, read_freelist, read_overflow,
};

fuzz_target!(|data: &[u8]| {
    let Some((&size_pick, rest)) = data.split_first() else {
        return;
    };
    let page_size = 1024usize << (size_pick % 3);
    let mut page = vec![0u8; page_size];
    let n = rest.len().min(page_size);
    page[..n].copy_from_slice(&rest[..n]);
    let crc = crc32fast::hash(&page[4..]);
    page[0..4].copy_from_slice(&crc.to_le_bytes());
    let layout = Layout::new(page_size);
    let id = u64::from_le_bytes(page[8..16].try_into().unwrap());
    let Ok(kind) = check(&page, &layout, id) else {
        return;
    };
    match kind {
        Kind::Branch | Kind::Leaf => {
            let node = NodePage::new(&page, layout, kind);
            let _ = node.used();
            if !node.is_leaf() {
                let _ = node.first_child();
            }
            // A page holds at most page_size / 2 slots; a bigger count is caught cell by cell,
            // but 65,535 failing cells per input would slow the fuzzer to a crawl.
            for i in 0..node.count().min(page_size / 2) {
                if let Ok(cell) = node.cell(i) {
                    let _ = (cell.inline_key(), cell.inline_value());
                }
            }
        }
        Kind::Overflow => {
            let _ = read_overflow(&page);
        }
        Kind::FreeList => {
            let _ = read_freelist(&page);
        }
    }
});
