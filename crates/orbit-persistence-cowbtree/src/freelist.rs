//! The page allocator ([`Allocator`]) and the free list on disk, its chain of free-list pages
//! written by every checkpoint ([`write_freelist`]) and read at open ([`read_freelist`]).
//!
//! Each checkpoint writes the complete free list as seen by the *next open*, which has no
//! readers: the free pages, the retired pages (steps 2 and 3) and the previous free-list pages.
//! Its own pages come from the free pages. The previous free-list pages are free in memory as
//! soon as the new meta page is durable: readers never read them.
//! The page format of a free-list page is in [`crate::page`].

use std::collections::BTreeSet;

use orbit_persistence_core::OrbitResult;

use crate::page::{self, PageId};
use crate::pagefile::{PageStore, PageWriter};

/// Which pages are free, and where the file ends.
#[derive(Debug, Default)]
pub struct Allocator {
    /// Pages free for reuse now, lowest first (keeps the file compact).
    pub free: BTreeSet<PageId>,
    /// One past the highest page ever used: the file's length in pages.
    pub page_count: u64,
}

impl Allocator {
    /// Gives back the free pages at the end of the file (the file is cut to `page_count` once
    /// a meta page saying so is durable); returns how many.
    pub fn trim(&mut self) -> u64 {
        let before = self.page_count;
        while self.page_count > 2 && self.free.remove(&(self.page_count - 1)) {
            self.page_count -= 1;
        }
        before - self.page_count
    }

    /// A free page, or a new one at the end of the file.
    pub fn alloc(&mut self) -> PageId {
        self.free.pop_first().unwrap_or_else(|| {
            self.page_count += 1;
            self.page_count - 1
        })
    }
}

/// Writes the free list of the next open: `alloc`'s free pages plus `also_free` (pages free
/// once this checkpoint is durable and no reader is left), taking the chain's own pages from
/// `alloc`, through `out` (`buf` is a page-sized scratch buffer). Returns the head page (0 if
/// empty), the pages of the chain and how many free pages it lists.
pub fn write_freelist(
    alloc: &mut Allocator,
    out: &mut PageWriter<'_>,
    buf: &mut [u8],
    also_free: impl IntoIterator<Item = PageId>,
) -> OrbitResult<(PageId, Vec<PageId>, u64)> {
    let layout = out.layout();
    let mut free = alloc.free.clone();
    free.extend(also_free);
    let cap = layout.freelist_capacity();
    let mut own = Vec::new();
    while own.len() * cap < free.len() {
        let id = alloc.alloc();
        free.remove(&id);
        own.push(id);
    }
    // Taking pages may have shrunk the list: a chain page may then stay empty.
    let ids: Vec<PageId> = free.into_iter().collect();
    let count = ids.len() as u64;
    for (i, &id) in own.iter().enumerate() {
        let chunk = ids
            .get(i * cap..ids.len().min((i + 1) * cap))
            .unwrap_or(&[]);
        let next = own.get(i + 1).copied().unwrap_or(0);
        buf.fill(0);
        page::write_freelist(buf, id, next, chunk);
        out.write(id, buf)?;
    }
    Ok((own.first().copied().unwrap_or(0), own, count))
}

/// Reads a free-list chain from its head: the free pages it lists and its own pages.
pub fn read_freelist(
    store: &PageStore,
    head: PageId,
    expected: u64,
) -> OrbitResult<(Vec<PageId>, Vec<PageId>)> {
    let (mut free, mut own) = (Vec::new(), Vec::new());
    let mut next = head;
    while next != 0 {
        if own.len() as u64 > expected / store.layout().freelist_capacity() as u64 + 1 {
            return Err(store.corrupt(
                next,
                "free-list chain longer than its count allows (a loop?)",
            ));
        }
        let (bytes, kind) = store.page(next)?;
        if kind != page::Kind::FreeList {
            return Err(store.corrupt(next, format!("expected a free-list page, found {kind:?}")));
        }
        let (ids, link) = page::read_freelist(&bytes).map_err(|e| store.undecodable(next, e))?;
        free.extend(ids);
        own.push(next);
        next = link;
    }
    if free.len() as u64 != expected {
        return Err(store.corrupt(
            head,
            format!(
                "free list holds {} pages, meta page says {expected}",
                free.len()
            ),
        ));
    }
    Ok((free, own))
}
