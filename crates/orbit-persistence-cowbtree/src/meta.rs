//! The two meta pages: which tree, free list and WAL a checkpoint left behind.
//!
//! Pages 0 and 1 of the page file. A checkpoint of generation `g` writes page `g % 2`, so the
//! other page still holds the previous checkpoint if this write is torn by a crash. Opening
//! picks the valid meta page with the higher generation. The first 84 bytes are used, the rest
//! of the page is zero:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `ORBITCOW` |
//! | 8 | 4 | format version, [`META_VERSION`] |
//! | 12 | 4 | page size in bytes |
//! | 16 | 8 | generation (checkpoint number) |
//! | 24 | 8 | root page of the tree (0: empty tree) |
//! | 32 | 8 | page count: the file's high-water mark, in pages |
//! | 40 | 8 | first free-list page (0: no free pages) |
//! | 48 | 8 | number of free pages listed |
//! | 56 | 8 | highest lease revision in the tree |
//! | 64 | 8 | number of leases in the tree |
//! | 72 | 8 | first WAL segment recovery replays (older ones are covered by this tree) |
//! | 80 | 4 | CRC32 of bytes 0..80 |

use orbit_persistence_core::encoding::DecodeError;

use crate::page::PageId;

/// First bytes of a meta page.
pub const MAGIC: &[u8; 8] = b"ORBITCOW";
/// Version of the meta page (and of the page file as a whole).
pub const META_VERSION: u32 = 1;
/// Bytes of a meta page that carry data.
pub const META_LEN: usize = 84;

/// The contents of a meta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// Page size of the file.
    pub page_size: u32,
    /// Checkpoint number; the meta page is `generation % 2`.
    pub generation: u64,
    /// Root page of the tree, 0 if empty.
    pub root: PageId,
    /// Pages in use or free: the file holds at least this many.
    pub page_count: u64,
    /// First free-list page, 0 if none.
    pub freelist_head: PageId,
    /// Free pages the list holds.
    pub free_count: u64,
    /// Highest revision in the tree.
    pub last_revision: u64,
    /// Leases in the tree.
    pub lease_count: u64,
    /// First WAL segment to replay.
    pub wal_start: u64,
}

impl Meta {
    /// Which meta page this generation goes to.
    pub fn slot(&self) -> PageId {
        self.generation % 2
    }

    /// The meta page's bytes (a whole page, zero after [`META_LEN`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.page_size as usize];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&META_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.page_size.to_le_bytes());
        let fields = [
            self.generation,
            self.root,
            self.page_count,
            self.freelist_head,
            self.free_count,
            self.last_revision,
            self.lease_count,
            self.wal_start,
        ];
        for (i, v) in fields.iter().enumerate() {
            b[16 + i * 8..24 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[..80]);
        b[80..84].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses the first [`META_LEN`] bytes of a meta page; `Err` says why it is not valid.
    pub fn decode(b: &[u8]) -> Result<Meta, DecodeError> {
        if b.len() < META_LEN {
            return Err(DecodeError::new(
                b.len(),
                format!("meta page is {} bytes, shorter than {META_LEN}", b.len()),
            ));
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        if &b[0..8] != MAGIC {
            return Err(DecodeError::new(
                0,
                "bad magic (not a cowbtree page file, or a torn meta write)",
            ));
        }
        let (stored, actual) = (u32_at(80), crc32fast::hash(&b[..80]));
        if stored != actual {
            return Err(DecodeError::new(
                80,
                format!("CRC32 mismatch (stored {stored:#010x}, computed {actual:#010x})"),
            ));
        }
        let version = u32_at(8);
        if version != META_VERSION {
            return Err(DecodeError::new(
                8,
                format!("unknown format version {version} (this build reads {META_VERSION})"),
            ));
        }
        let meta = Meta {
            page_size: u32_at(12),
            generation: u64_at(16),
            root: u64_at(24),
            page_count: u64_at(32),
            freelist_head: u64_at(40),
            free_count: u64_at(48),
            last_revision: u64_at(56),
            lease_count: u64_at(64),
            wal_start: u64_at(72),
        };
        let ps = meta.page_size;
        if !(1024..=65536).contains(&ps) || !ps.is_power_of_two() {
            return Err(DecodeError::new(12, format!("invalid page size {ps}")));
        }
        let in_file = |p: PageId| p == 0 || (2..meta.page_count).contains(&p);
        if meta.page_count < 2 || !in_file(meta.root) || !in_file(meta.freelist_head) {
            return Err(DecodeError::new(
                24,
                format!("page links out of the file's {} pages", meta.page_count),
            ));
        }
        Ok(meta)
    }
}

/// Of two decoded meta pages, the one recovery starts from: the valid one with the higher
/// generation. `Err` carries both reasons when neither is valid.
pub fn newest(
    first: Result<Meta, DecodeError>,
    second: Result<Meta, DecodeError>,
) -> Result<Meta, (DecodeError, DecodeError)> {
    match (first, second) {
        (Ok(a), Ok(b)) => Ok(if b.generation > a.generation { b } else { a }),
        (Ok(a), Err(_)) | (Err(_), Ok(a)) => Ok(a),
        (Err(a), Err(b)) => Err((a, b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(generation: u64) -> Meta {
        Meta {
            page_size: 4096,
            generation,
            root: 7,
            page_count: 10,
            freelist_head: 9,
            free_count: 3,
            last_revision: 1234,
            lease_count: 99,
            wal_start: 5,
        }
    }

    #[test]
    fn round_trip_and_slot() {
        let m = meta(3);
        let b = m.encode();
        assert_eq!(b.len(), 4096);
        assert_eq!(Meta::decode(&b).unwrap(), m);
        assert_eq!(m.slot(), 1);
    }

    #[test]
    fn any_flipped_byte_of_the_used_part_is_rejected() {
        let b = meta(3).encode();
        for at in 0..META_LEN {
            let mut bad = b.clone();
            bad[at] ^= 1;
            assert!(Meta::decode(&bad).is_err(), "flip at {at} accepted");
        }
    }

    #[test]
    fn newest_valid_wins() {
        let (a, b) = (meta(4), meta(5));
        assert_eq!(newest(Ok(a), Ok(b)).unwrap().generation, 5);
        assert_eq!(
            newest(Ok(a), Err(DecodeError::new(0, "torn")))
                .unwrap()
                .generation,
            4
        );
        assert_eq!(
            newest(Err(DecodeError::new(0, "torn")), Ok(b))
                .unwrap()
                .generation,
            5
        );
        assert!(newest(Err(DecodeError::new(0, "x")), Err(DecodeError::new(0, "y"))).is_err());
    }

    #[test]
    fn links_outside_the_file_are_rejected() {
        let mut m = meta(2);
        m.root = 10;
        let e = Meta::decode(&m.encode()).unwrap_err();
        assert!(e.detail.contains("out of the file"), "{e}");
        assert_eq!(e.offset, 24, "the root link");
    }
}
