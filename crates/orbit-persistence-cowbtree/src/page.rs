//! Page formats of the page file, byte by byte. All integers are little-endian.
//!
//! The page file is an array of pages of `page_size` bytes (a power of two, 1 KiB to 64 KiB);
//! page `n` starts at byte `n * page_size`. Pages 0 and 1 are the two meta pages
//! ([`crate::meta`]). Every other page starts with this 16-byte header:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | CRC32 of bytes `4..page_size` |
//! | 4 | 1 | kind: 2 branch, 3 leaf, 4 overflow, 5 free list |
//! | 5 | 1 | page format version, [`PAGE_VERSION`] |
//! | 6 | 2 | count: cells (branch, leaf) or page ids (free list); 0 for overflow |
//! | 8 | 8 | the page's own number: a page written to the wrong place fails the check |
//!
//! **Leaf** (kind 3): after the header, `count` u16 slots, each the offset of a cell, in key
//! order; cells are packed from the end of the page towards the slots. A cell is `u16 key
//! length`, `u16 value length`, then the payload `key ++ value`.
//!
//! **Branch** (kind 2): after the header, `u64 child 0` at offset 16, then `count` u16 slots
//! from offset 24. A cell is `u16 key length`, `u16 0`, the payload (the separator key), then
//! `u64 child`. Cell `i` holds separator `i` and child `i + 1`: keys `k` of child `i + 1` obey
//! `separator i <= k < separator i + 1`, keys of child 0 are below separator 0.
//!
//! **Large payloads.** A payload longer than [`Layout::max_inline`] keeps only its first
//! `max_inline - 8` bytes in the cell, followed by the `u64` number of the first overflow page
//! holding the rest; so a page always holds at least four cells.
//!
//! **Overflow** (kind 4): header, `u64 next` overflow page of the chain (0: last), `u32` bytes
//! used here, then those bytes.
//!
//! **Free list** (kind 5): header, `u64 next` free-list page (0: last), then `count` u64 numbers
//! of free pages. A checkpoint writes the whole list anew; see [`crate::checkpoint`].

use orbit_persistence_core::encoding::DecodeError;
use orbit_persistence_core::{OrbitError, OrbitResult};

/// A page number. 0 and 1 are the meta pages, so 0 doubles as "none" in links.
pub type PageId = u64;

/// Version of the branch/leaf/overflow/free-list page formats.
pub const PAGE_VERSION: u8 = 1;
/// Bytes of the common page header.
pub const HEADER: usize = 16;
/// Bytes of a slot (cell offset).
const SLOT: usize = 2;
/// Bytes of a cell's two length fields.
const CELL_HEADER: usize = 4;
/// Bytes of a page link.
const LINK: usize = 8;
/// Offset of a branch's first slot.
const BRANCH_SLOTS: usize = HEADER + LINK;
/// Bytes of an overflow page's `next` and `used` fields.
const OVERFLOW_HEADER: usize = LINK + 4;

/// The kind byte of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An inner node of the tree.
    Branch = 2,
    /// A node holding keys and values.
    Leaf = 3,
    /// The rest of a large payload.
    Overflow = 4,
    /// A page of the free list.
    FreeList = 5,
}

impl Kind {
    /// The kind of a page that passed [`check`] before.
    pub fn from_checked(bytes: &[u8]) -> Kind {
        Kind::from_byte(bytes[4]).unwrap_or(Kind::Overflow)
    }

    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            2 => Kind::Branch,
            3 => Kind::Leaf,
            4 => Kind::Overflow,
            5 => Kind::FreeList,
            _ => return None,
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Sizes derived from the page size: how much of a payload a cell keeps inline, and how much a
/// node may hold. The in-memory nodes use the same arithmetic, so a node that fits by these
/// numbers always serializes into one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of a page.
    pub page_size: usize,
    /// Longest payload a cell holds inline; longer ones spill to overflow pages.
    pub max_inline: usize,
}

impl Layout {
    /// The layout of pages of `page_size` bytes (validated by the config: 1 KiB..=64 KiB).
    pub fn new(page_size: usize) -> Layout {
        // Four of the largest branch cells fit in a page.
        let max_inline = (page_size - BRANCH_SLOTS) / 4 - SLOT - CELL_HEADER - LINK;
        Layout {
            page_size,
            max_inline,
        }
    }

    /// Bytes the payload takes inside the cell, overflow link included.
    fn local_size(&self, payload: usize) -> usize {
        payload.min(self.max_inline)
    }

    /// Bytes kept inline of a payload that spills.
    pub fn spill_prefix(&self) -> usize {
        self.max_inline - LINK
    }

    /// Bytes of an empty leaf page.
    pub fn leaf_base(&self) -> usize {
        HEADER
    }

    /// Bytes of a branch page with only child 0.
    pub fn branch_base(&self) -> usize {
        BRANCH_SLOTS
    }

    /// Bytes a leaf cell takes, slot included.
    pub fn leaf_cell_size(&self, klen: usize, vlen: usize) -> usize {
        SLOT + CELL_HEADER + self.local_size(klen + vlen)
    }

    /// Bytes a branch cell takes, slot and child link included.
    pub fn branch_cell_size(&self, klen: usize) -> usize {
        SLOT + CELL_HEADER + self.local_size(klen) + LINK
    }

    /// Payload bytes one overflow page holds.
    pub fn overflow_capacity(&self) -> usize {
        self.page_size - HEADER - OVERFLOW_HEADER
    }

    /// Page ids one free-list page holds.
    pub fn freelist_capacity(&self) -> usize {
        (self.page_size - HEADER - LINK) / 8
    }
}

/// Checks a page read from disk: length, CRC, version and own number. The kind is checked by
/// whoever expects one.
pub fn check(bytes: &[u8], layout: &Layout, id: PageId) -> Result<Kind, DecodeError> {
    if bytes.len() != layout.page_size {
        return Err(DecodeError::new(
            0,
            format!(
                "page is {} bytes, expected {}",
                bytes.len(),
                layout.page_size
            ),
        ));
    }
    let stored = u32_at(bytes, 0).unwrap_or_default() as u32;
    let actual = crc32fast::hash(&bytes[4..]);
    if stored != actual {
        return Err(DecodeError::new(
            0,
            format!("page {id}: CRC32 mismatch (stored {stored:#010x}, computed {actual:#010x})"),
        ));
    }
    if bytes[5] != PAGE_VERSION {
        return Err(DecodeError::new(
            5,
            format!("page {id}: unknown page format version {}", bytes[5]),
        ));
    }
    let own = u64_at(bytes, 8).unwrap_or_default();
    if own != id {
        return Err(DecodeError::new(
            8,
            format!("page {id}: header names page {own} (misplaced write)"),
        ));
    }
    Kind::from_byte(bytes[4])
        .ok_or_else(|| DecodeError::new(4, format!("page {id}: unknown page kind {}", bytes[4])))
}

/// Fills in the header of `buf` (a whole page) and its CRC. Call last.
pub fn seal(buf: &mut [u8], kind: Kind, count: usize, id: PageId) {
    buf[4] = kind as u8;
    buf[5] = PAGE_VERSION;
    buf[6..8].copy_from_slice(&(count as u16).to_le_bytes());
    buf[8..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&buf[4..]);
    buf[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// One cell of a branch or leaf page, as stored.
#[derive(Debug, Clone, Copy)]
pub struct RawCell<'a> {
    /// Length of the whole key.
    pub klen: usize,
    /// Length of the whole value (0 in branches).
    pub vlen: usize,
    /// The payload bytes kept in the cell.
    pub local: &'a [u8],
    /// First overflow page of the rest of the payload, if it spilled.
    pub overflow: Option<PageId>,
    /// The child after the separator (branches only).
    pub child: PageId,
}

impl<'a> RawCell<'a> {
    /// The key, if it is entirely inline (always, unless the key alone is longer than the
    /// spill prefix).
    pub fn inline_key(&self) -> Option<&'a [u8]> {
        self.local.get(..self.klen)
    }

    /// The value, if it is entirely inline.
    pub fn inline_value(&self) -> Option<&'a [u8]> {
        self.local.get(self.klen..self.klen + self.vlen)
    }
}

/// A checked branch or leaf page, read in place (from the memory map or a read buffer).
#[derive(Debug, Clone, Copy)]
pub struct NodePage<'a> {
    bytes: &'a [u8],
    layout: Layout,
    kind: Kind,
}

impl<'a> NodePage<'a> {
    /// Wraps a page that passed [`check`] with kind branch or leaf.
    pub fn new(bytes: &'a [u8], layout: Layout, kind: Kind) -> NodePage<'a> {
        NodePage {
            bytes,
            layout,
            kind,
        }
    }

    /// Whether this is a leaf.
    pub fn is_leaf(&self) -> bool {
        self.kind == Kind::Leaf
    }

    /// Cells in the page.
    pub fn count(&self) -> usize {
        u16_at(self.bytes, 6).unwrap_or_default()
    }

    /// Bytes the page's contents take (what the in-memory node of it counts as its size):
    /// header, slots, and the cells, which are packed down from the page end.
    pub fn used(&self) -> usize {
        let (slots, n) = (
            if self.is_leaf() { HEADER } else { BRANCH_SLOTS },
            self.count(),
        );
        let lowest = match n.checked_sub(1) {
            Some(last) => u16_at(self.bytes, slots + last * SLOT).unwrap_or(0),
            None => self.layout.page_size,
        };
        slots + n * SLOT + self.layout.page_size.saturating_sub(lowest)
    }

    /// A branch's child 0.
    pub fn first_child(&self) -> Result<PageId, DecodeError> {
        u64_at(self.bytes, HEADER).ok_or_else(|| DecodeError::new(HEADER, "branch too short"))
    }

    /// Cell `i` (`i < count`).
    pub fn cell(&self, i: usize) -> Result<RawCell<'a>, DecodeError> {
        let slots = if self.is_leaf() { HEADER } else { BRANCH_SLOTS };
        let bad = |at: usize, what: &str| DecodeError::new(at, format!("cell {i}: {what}"));
        let slot = slots + i * SLOT;
        let off = u16_at(self.bytes, slot).ok_or_else(|| bad(slot, "slot out of page"))?;
        let klen = u16_at(self.bytes, off).ok_or_else(|| bad(slot, "offset out of page"))?;
        let vlen = u16_at(self.bytes, off + 2).ok_or_else(|| bad(slot, "offset out of page"))?;
        let payload = klen + vlen;
        let spilled = payload > self.layout.max_inline;
        let local_len = if spilled {
            self.layout.spill_prefix()
        } else {
            payload
        };
        let at = off + CELL_HEADER;
        let local = self
            .bytes
            .get(at..at + local_len)
            .ok_or_else(|| bad(off, "payload out of page"))?;
        let mut end = at + local_len;
        let overflow = if spilled {
            let link =
                u64_at(self.bytes, end).ok_or_else(|| bad(off, "overflow link out of page"))?;
            end += LINK;
            Some(link)
        } else {
            None
        };
        let child = if self.is_leaf() {
            0
        } else {
            u64_at(self.bytes, end).ok_or_else(|| bad(off, "child link out of page"))?
        };
        Ok(RawCell {
            klen,
            vlen,
            local,
            overflow,
            child,
        })
    }
}

/// Builds a branch or leaf page. Cells must be added in key order and fit (the caller sized
/// the node with [`Layout`]); spilled payloads need their overflow chain written first.
pub struct PageBuilder<'b> {
    buf: &'b mut [u8],
    layout: Layout,
    leaf: bool,
    count: usize,
    /// Start of the cell area (cells grow downwards from the page end).
    cells_start: usize,
}

impl<'b> PageBuilder<'b> {
    /// Starts a leaf page in `buf` (zeroed, one page long).
    pub fn leaf(buf: &'b mut [u8], layout: Layout) -> Self {
        let cells_start = buf.len();
        PageBuilder {
            buf,
            layout,
            leaf: true,
            count: 0,
            cells_start,
        }
    }

    /// Starts a branch page in `buf` (zeroed, one page long) whose child 0 is `first_child`.
    pub fn branch(buf: &'b mut [u8], layout: Layout, first_child: PageId) -> Self {
        buf[HEADER..HEADER + LINK].copy_from_slice(&first_child.to_le_bytes());
        let cells_start = buf.len();
        PageBuilder {
            buf,
            layout,
            leaf: false,
            count: 0,
            cells_start,
        }
    }

    /// Adds a cell: the inline part of the payload (`key ++ value`, or its first
    /// `spill_prefix` bytes when `overflow` is set) and, in a branch, the child.
    pub fn push(
        &mut self,
        klen: usize,
        vlen: usize,
        local: &[u8],
        overflow: Option<PageId>,
        child: Option<PageId>,
    ) -> OrbitResult<()> {
        let size = CELL_HEADER
            + local.len()
            + overflow.map_or(0, |_| LINK)
            + if self.leaf { 0 } else { LINK };
        let slots = if self.leaf { HEADER } else { BRANCH_SLOTS };
        let slot_end = slots + (self.count + 1) * SLOT;
        if self.cells_start < slot_end + size {
            return Err(OrbitError::internal(
                "cowbtree",
                format!(
                    "node does not fit a {}-byte page (cell {})",
                    self.layout.page_size, self.count
                ),
            ));
        }
        let off = self.cells_start - size;
        let cell = &mut self.buf[off..self.cells_start];
        cell[0..2].copy_from_slice(&(klen as u16).to_le_bytes());
        cell[2..4].copy_from_slice(&(vlen as u16).to_le_bytes());
        cell[4..4 + local.len()].copy_from_slice(local);
        let mut at = 4 + local.len();
        if let Some(link) = overflow {
            cell[at..at + LINK].copy_from_slice(&link.to_le_bytes());
            at += LINK;
        }
        if let Some(child) = child {
            cell[at..at + LINK].copy_from_slice(&child.to_le_bytes());
        }
        let slot = slots + self.count * SLOT;
        self.buf[slot..slot + SLOT].copy_from_slice(&(off as u16).to_le_bytes());
        self.cells_start = off;
        self.count += 1;
        Ok(())
    }

    /// Writes the header and CRC for page `id`.
    pub fn finish(self, id: PageId) {
        let kind = if self.leaf { Kind::Leaf } else { Kind::Branch };
        seal(self.buf, kind, self.count, id);
    }
}

/// Fills `buf` (zeroed, one page) as overflow page `id` holding `data`, followed by `next`.
pub fn write_overflow(buf: &mut [u8], id: PageId, next: PageId, data: &[u8]) {
    buf[HEADER..HEADER + LINK].copy_from_slice(&next.to_le_bytes());
    buf[HEADER + LINK..HEADER + OVERFLOW_HEADER]
        .copy_from_slice(&(data.len() as u32).to_le_bytes());
    buf[HEADER + OVERFLOW_HEADER..HEADER + OVERFLOW_HEADER + data.len()].copy_from_slice(data);
    seal(buf, Kind::Overflow, 0, id);
}

/// The data and next link of a checked overflow page.
pub fn read_overflow(bytes: &[u8]) -> Result<(&[u8], PageId), DecodeError> {
    let short = || DecodeError::new(HEADER, "overflow page too short");
    let next = u64_at(bytes, HEADER).ok_or_else(short)?;
    let used = u32_at(bytes, HEADER + LINK).ok_or_else(short)?;
    let at = HEADER + OVERFLOW_HEADER;
    let data = bytes.get(at..at + used).ok_or_else(|| {
        DecodeError::new(
            HEADER + LINK,
            format!("overflow page claims {used} bytes, more than it holds"),
        )
    })?;
    Ok((data, next))
}

/// Fills `buf` (zeroed, one page) as free-list page `id` listing `ids`, followed by `next`.
pub fn write_freelist(buf: &mut [u8], id: PageId, next: PageId, ids: &[PageId]) {
    buf[HEADER..HEADER + LINK].copy_from_slice(&next.to_le_bytes());
    for (i, free) in ids.iter().enumerate() {
        let at = HEADER + LINK + i * 8;
        buf[at..at + 8].copy_from_slice(&free.to_le_bytes());
    }
    seal(buf, Kind::FreeList, ids.len(), id);
}

/// The ids and next link of a checked free-list page.
pub fn read_freelist(bytes: &[u8]) -> Result<(Vec<PageId>, PageId), DecodeError> {
    let next = u64_at(bytes, HEADER)
        .ok_or_else(|| DecodeError::new(HEADER, "free-list page too short"))?;
    let count = u16_at(bytes, 6).unwrap_or_default();
    (0..count)
        .map(|i| {
            let at = HEADER + LINK + i * 8;
            u64_at(bytes, at).ok_or_else(|| DecodeError::new(at, "free-list page overrun"))
        })
        .collect::<Result<Vec<_>, DecodeError>>()
        .map(|ids| (ids, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_largest_cells_fit_any_page_size() {
        for shift in 10..=16 {
            let layout = Layout::new(1 << shift);
            let leaf = layout.leaf_base() + 4 * layout.leaf_cell_size(60_000, 0);
            let branch = layout.branch_base() + 4 * layout.branch_cell_size(60_000);
            assert!(
                leaf <= layout.page_size && branch <= layout.page_size,
                "{shift}"
            );
        }
    }

    #[test]
    fn leaf_round_trip_with_a_spilled_cell() {
        let layout = Layout::new(1024);
        let mut buf = vec![0u8; 1024];
        let mut b = PageBuilder::leaf(&mut buf, layout);
        b.push(3, 2, b"keyva", None, None).unwrap();
        let prefix = vec![7u8; layout.spill_prefix()];
        b.push(500, 500, &prefix, Some(42), None).unwrap();
        b.finish(9);
        let kind = check(&buf, &layout, 9).unwrap();
        let page = NodePage::new(&buf, layout, kind);
        assert!(page.is_leaf());
        assert_eq!(page.count(), 2);
        let c = page.cell(0).unwrap();
        assert_eq!(
            (c.inline_key(), c.inline_value()),
            (Some(&b"key"[..]), Some(&b"va"[..]))
        );
        let c = page.cell(1).unwrap();
        assert_eq!((c.klen, c.vlen, c.overflow), (500, 500, Some(42)));
        assert_eq!(c.inline_key(), None);
        assert_eq!(
            check(&buf, &layout, 8).unwrap_err(),
            DecodeError::new(8, "page 8: header names page 9 (misplaced write)")
        );
    }

    #[test]
    fn a_cell_out_of_its_page_names_its_slot() {
        let layout = Layout::new(1024);
        let mut buf = vec![0u8; 1024];
        let mut b = PageBuilder::leaf(&mut buf, layout);
        b.push(3, 2, b"keyva", None, None).unwrap();
        b.push(3, 2, b"kez12", None, None).unwrap();
        b.finish(9);
        // Cell 1's slot points past the page (rot under a valid CRC, or a bug).
        let slot = HEADER + SLOT;
        buf[slot..slot + 2].copy_from_slice(&2000u16.to_le_bytes());
        let page = NodePage::new(&buf, layout, Kind::Leaf);
        assert!(page.cell(0).is_ok());
        let e = page.cell(1).unwrap_err();
        assert_eq!(e.offset, slot, "{e}");
        assert!(e.detail.starts_with("cell 1:"), "{e}");
    }

    #[test]
    fn every_flipped_byte_fails_the_check() {
        let layout = Layout::new(1024);
        let mut buf = vec![0u8; 1024];
        let mut b = PageBuilder::branch(&mut buf, layout, 5);
        b.push(4, 0, b"sepa", None, Some(6)).unwrap();
        b.finish(3);
        for at in (0..1024).step_by(7) {
            let mut bad = buf.clone();
            bad[at] ^= 0x20;
            assert!(check(&bad, &layout, 3).is_err(), "flip at {at} passed");
        }
        let page = NodePage::new(&buf, layout, check(&buf, &layout, 3).unwrap());
        assert_eq!(page.first_child().unwrap(), 5);
        assert_eq!(page.cell(0).unwrap().child, 6);
    }

    #[test]
    fn overflow_and_freelist_round_trip() {
        let layout = Layout::new(1024);
        let mut buf = vec![0u8; 1024];
        write_overflow(&mut buf, 4, 5, b"rest of it");
        assert_eq!(check(&buf, &layout, 4).unwrap(), Kind::Overflow);
        assert_eq!(read_overflow(&buf).unwrap(), (&b"rest of it"[..], 5));
        let mut buf = vec![0u8; 1024];
        write_freelist(&mut buf, 7, 0, &[10, 11, 99]);
        assert_eq!(check(&buf, &layout, 7).unwrap(), Kind::FreeList);
        assert_eq!(read_freelist(&buf).unwrap(), (vec![10, 11, 99], 0));
    }

    #[test]
    fn a_node_too_big_for_the_page_is_refused() {
        let layout = Layout::new(1024);
        let mut buf = vec![0u8; 1024];
        let mut b = PageBuilder::leaf(&mut buf, layout);
        let cell = vec![1u8; layout.max_inline];
        let fits = (1024 - layout.leaf_base()) / layout.leaf_cell_size(cell.len(), 0);
        for _ in 0..fits {
            b.push(cell.len(), 0, &cell, None, None).unwrap();
        }
        assert!(b.push(cell.len(), 0, &cell, None, None).is_err());
    }
}
