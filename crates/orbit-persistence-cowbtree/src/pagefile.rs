//! Reading and writing pages of the page file.
//!
//! Readers get pages from a [`PageStore`]: in place from a read-only memory map when the file
//! system hands out a real file, through [`FsFile::read_at`] otherwise (the fault-injecting
//! file system of the tests). Every page's CRC is checked the first time it is read through a
//! given store (a bit per page remembers it), so a hot lookup does not hash 4 KiB per level.
//! Writes never go through the map: the checkpoint writes pages with positional writes through
//! the file-system seam, and only to pages no reader can reach (free pages), whose bits it
//! clears first.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};
use orbit_persistence_core::encoding::DecodeError;
use orbit_persistence_core::fs::FsFile;
use orbit_persistence_core::{OrbitError, OrbitResult};

use crate::page::{self, Kind, Layout, NodePage, PageId};

/// The bytes of one page: borrowed from the map or read into a buffer.
pub enum PageBytes<'a> {
    /// In place in the memory map.
    Mapped(&'a [u8]),
    /// Read through the file-system seam.
    Owned(Vec<u8>),
}

impl Deref for PageBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PageBytes::Mapped(b) => b,
            PageBytes::Owned(v) => v,
        }
    }
}

/// Read access to the pages of one page file, as of one mapping.
pub struct PageStore {
    path: PathBuf,
    layout: Layout,
    file: Arc<dyn FsFile>,
    map: Option<Mmap>,
    /// Pages covered by `map`.
    mapped_pages: u64,
    /// One bit per mapped page: its CRC was checked.
    verified: Box<[AtomicU64]>,
}

impl std::fmt::Debug for PageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageStore")
            .field("path", &self.path)
            .field("page_size", &self.layout.page_size)
            .field("mapped_pages", &self.mapped_pages)
            .finish()
    }
}

impl PageStore {
    /// A store over `file`, mapping its first `pages` pages if the file is a real one.
    pub fn new(
        path: &Path,
        layout: Layout,
        file: Arc<dyn FsFile>,
        pages: u64,
    ) -> OrbitResult<Self> {
        let len = pages * layout.page_size as u64;
        let map = match file.as_std_file() {
            Some(std_file) if len > 0 => {
                // SAFETY: the mapping is read-only, and the data directory is locked for this
                // process (`DirLock`), so no other process changes the file. This process writes
                // only pages that no reader can reach (free pages, after every snapshot that
                // could see them is gone) and never shrinks the file below a page in use, so a
                // mapped page a reader looks at never changes under it nor disappears.
                let map = unsafe { MmapOptions::new().len(len as usize).map(std_file) }
                    .map_err(|e| OrbitError::io("mmap", path, e))?;
                // Ask the kernel to bring the whole file into the page cache in the background
                // (reads run in place on async tasks: a resident page never blocks them), then
                // not to read ahead on the faults that remain: lookups jump around.
                let _ = map.advise(memmap2::Advice::WillNeed);
                let _ = map.advise(memmap2::Advice::Random);
                Some(map)
            }
            _ => None,
        };
        let mapped_pages = if map.is_some() { pages } else { 0 };
        let words = mapped_pages.div_ceil(64) as usize;
        Ok(PageStore {
            path: path.to_path_buf(),
            layout,
            file,
            map,
            mapped_pages,
            verified: (0..words).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The page layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Path of the page file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file handle, for the writer.
    pub fn file(&self) -> &Arc<dyn FsFile> {
        &self.file
    }

    /// Pages this store maps (0 without a map).
    pub fn mapped_pages(&self) -> u64 {
        self.mapped_pages
    }

    /// Pages of the mapping whose checksum has been checked so far.
    pub fn checked_pages(&self) -> u64 {
        self.verified
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// The `Corruption` of a page `id` that did not decode, at the byte where it failed.
    pub fn undecodable(&self, id: PageId, e: DecodeError) -> OrbitError {
        let page = id.saturating_mul(self.layout.page_size as u64);
        e.into_corruption(&self.path, page)
    }

    /// A `Corruption` error at page `id`.
    pub fn corrupt(&self, id: PageId, detail: impl Into<String>) -> OrbitError {
        // A corrupt link can name any number: no overflow on the way to the error.
        let offset = id.saturating_mul(self.layout.page_size as u64);
        OrbitError::corruption(&self.path, offset, detail)
    }

    /// Page `id`, checked (CRC, version, own number); returns its kind too.
    pub fn page(&self, id: PageId) -> OrbitResult<(PageBytes<'_>, Kind)> {
        let ps = self.layout.page_size;
        if id < 2 {
            return Err(self.corrupt(id, format!("link to meta page {id} inside the tree")));
        }
        if let (Some(map), true) = (&self.map, id < self.mapped_pages) {
            let at = id as usize * ps;
            let bytes = &map[at..at + ps];
            let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
            let checked = self.verified[word].load(Ordering::Acquire) & bit != 0;
            let kind = if checked {
                // Checked before: the kind byte is known to be valid.
                Kind::from_checked(bytes)
            } else {
                let kind =
                    page::check(bytes, &self.layout, id).map_err(|e| self.undecodable(id, e))?;
                self.verified[word].fetch_or(bit, Ordering::AcqRel);
                kind
            };
            return Ok((PageBytes::Mapped(bytes), kind));
        }
        let offset = id
            .checked_mul(ps as u64)
            .ok_or_else(|| self.corrupt(id, format!("link to page {id}, beyond any file")))?;
        let mut buf = vec![0u8; ps];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| match e {
                OrbitError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    self.corrupt(id, "page beyond the end of the file")
                }
                other => other,
            })?;
        let kind = page::check(&buf, &self.layout, id).map_err(|e| self.undecodable(id, e))?;
        Ok((PageBytes::Owned(buf), kind))
    }

    /// Forgets that page `id` was checked: it is about to be rewritten.
    pub fn forget(&self, id: PageId) {
        if id < self.mapped_pages {
            let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
            self.verified[word].fetch_and(!bit, Ordering::AcqRel);
        }
    }
}

/// A branch or leaf page, owned or mapped.
pub struct NodeRef<'a> {
    bytes: PageBytes<'a>,
    kind: Kind,
    layout: Layout,
}

impl NodeRef<'_> {
    /// The page, for reading cells.
    pub fn view(&self) -> NodePage<'_> {
        NodePage::new(&self.bytes, self.layout, self.kind)
    }
}

impl PageStore {
    /// Page `id`, which must be a branch or a leaf.
    pub fn node(&self, id: PageId) -> OrbitResult<NodeRef<'_>> {
        let (bytes, kind) = self.page(id)?;
        if !matches!(kind, Kind::Branch | Kind::Leaf) {
            return Err(self.corrupt(id, format!("expected a tree node, found a {kind:?} page")));
        }
        Ok(NodeRef {
            bytes,
            kind,
            layout: self.layout,
        })
    }

    /// The whole payload of a cell whose payload spilled to overflow pages; appends the
    /// overflow pages it read to `pages` if given.
    pub fn spilled_payload(
        &self,
        at: PageId,
        cell: &page::RawCell<'_>,
        mut pages: Option<&mut Vec<PageId>>,
    ) -> OrbitResult<Vec<u8>> {
        let total = cell.klen + cell.vlen;
        let mut payload = Vec::with_capacity(total);
        payload.extend_from_slice(cell.local);
        let mut next = cell.overflow.unwrap_or(0);
        // A chain never needs more pages than this; a longer one is a loop.
        let mut budget = total.div_ceil(self.layout.overflow_capacity()) + 1;
        while payload.len() < total {
            if next == 0 || budget == 0 {
                return Err(self.corrupt(
                    at,
                    format!(
                        "overflow chain ends after {} of {total} bytes",
                        payload.len()
                    ),
                ));
            }
            budget -= 1;
            let (bytes, kind) = self.page(next)?;
            if kind != Kind::Overflow {
                return Err(
                    self.corrupt(next, format!("expected an overflow page, found {kind:?}"))
                );
            }
            let (data, link) =
                page::read_overflow(&bytes).map_err(|e| self.undecodable(next, e))?;
            payload.extend_from_slice(data);
            if let Some(pages) = pages.as_deref_mut() {
                pages.push(next);
            }
            next = link;
        }
        if payload.len() != total {
            return Err(self.corrupt(
                at,
                format!(
                    "overflow chain holds {} bytes, cell says {total}",
                    payload.len()
                ),
            ));
        }
        Ok(payload)
    }
}

/// Writes pages at their places, coalescing runs of consecutive pages into one write.
pub struct PageWriter<'s> {
    store: &'s PageStore,
    run_start: PageId,
    run: Vec<u8>,
    /// Pages written.
    pub pages: u64,
}

/// Largest coalesced write.
const MAX_RUN: usize = 1 << 20;

impl<'s> PageWriter<'s> {
    /// The page layout of the file.
    pub fn layout(&self) -> Layout {
        self.store.layout()
    }

    /// A writer into the file of `store` (whose checked-bits it clears for written pages).
    pub fn new(store: &'s PageStore) -> Self {
        PageWriter {
            store,
            run_start: 0,
            run: Vec::new(),
            pages: 0,
        }
    }

    /// Queues page `id` (a whole sealed page).
    pub fn write(&mut self, id: PageId, bytes: &[u8]) -> OrbitResult<()> {
        let ps = self.store.layout.page_size;
        let run_end = self.run_start + (self.run.len() / ps) as u64;
        if self.run.is_empty() || id != run_end || self.run.len() >= MAX_RUN {
            self.flush()?;
            self.run_start = id;
        }
        self.store.forget(id);
        self.run.extend_from_slice(bytes);
        self.pages += 1;
        Ok(())
    }

    /// Writes what is queued.
    pub fn flush(&mut self) -> OrbitResult<()> {
        if !self.run.is_empty() {
            let at = self.run_start * self.store.layout.page_size as u64;
            self.store.file.write_at(&self.run, at)?;
            self.run.clear();
        }
        Ok(())
    }
}
