//! A meta page of the COW B+tree, with its CRC fixed up so the field checks are reached: never
//! a panic, and whatever decodes encodes back to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orbit_persistence_cowbtree::meta::Meta;

fuzz_target!(|data: &[u8]| {
    let mut page = data.to_vec();
    if page.len() >= 84 {
        let crc = crc32fast::hash(&page[..80]);
        page[80..84].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(meta) = Meta::decode(&page) {
        let again = Meta::decode(&meta.encode()).expect("an encoded meta page decodes");
        assert_eq!(format!("{meta:?}"), format!("{again:?}"));
    }
});
