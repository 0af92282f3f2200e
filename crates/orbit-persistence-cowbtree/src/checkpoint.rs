//! Checkpoints: write the nodes changed since the last checkpoint to free pages, write the free
//! list, sync, then switch the meta page. A checkpoint runs on its own thread ([`Job`]) over a
//! snapshot of the writer's tree, while the writer goes on committing; the writer then
//! [`adopt`]s the pages written for the nodes it has not changed since.
//!
//! # Page lifecycle
//!
//! 1. A checkpoint writes a node to a page taken from the free pages, or past the end of the file.
//! 2. The writer materializes the page to change it: the page is *retired*. The durable tree
//!    (the last meta page) still uses it, and readers holding an older root may read it.
//! 3. The meta page of the first checkpoint whose snapshot was taken after the retirement is
//!    durable: the page is no longer part of the durable tree. It is handed to the reader guard
//!    of the versions that could see it ([`crate::version`]). (A page retired while a checkpoint
//!    runs is still in that checkpoint's snapshot, so it waits for the next one; so does a page
//!    the checkpoint wrote for a node the writer changed meanwhile.)
//! 4. Every such version is dropped: the page is free again, and goes back to step 1.
//!
//! Nothing a checkpoint writes overwrites a page of the durable tree, so a crash at any point
//! leaves the previous meta page, its tree and its free list intact.
//!
//! The free list a checkpoint writes, and its format, are [`crate::freelist`]'s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use orbit_persistence_core::OrbitResult;
use orbit_persistence_core::fs::FileSystem;

use crate::btree::{Child, Node};
use crate::freelist::{Allocator, write_freelist};
use crate::meta::Meta;
use crate::page::{self, Layout, PageBuilder, PageId};
use crate::pagefile::{PageStore, PageWriter};

/// Writes the nodes of a tree that are in memory.
pub struct NodeWriter<'a> {
    layout: Layout,
    alloc: &'a mut Allocator,
    out: PageWriter<'a>,
    buf: Vec<u8>,
    /// For each node written (by the address of its `Arc`): its page, then its overflow pages.
    pub written: HashMap<usize, Vec<PageId>>,
}

impl<'a> NodeWriter<'a> {
    /// A writer into `store`'s file taking pages from `alloc`.
    pub fn new(store: &'a PageStore, alloc: &'a mut Allocator) -> Self {
        NodeWriter {
            layout: store.layout(),
            alloc,
            out: PageWriter::new(store),
            buf: vec![0; store.layout().page_size],
            written: HashMap::new(),
        }
    }

    /// Writes every in-memory node under `root` (children first) and returns the root's page,
    /// or 0 for an empty tree.
    pub fn write_tree(&mut self, root: &Child) -> OrbitResult<PageId> {
        match root {
            Child::Mem(node) if matches!(&**node, Node::Leaf(l) if l.is_empty()) => Ok(0),
            other => self.write_child(other),
        }
    }

    fn write_child(&mut self, child: &Child) -> OrbitResult<PageId> {
        let node = match child {
            Child::Page(id) => return Ok(*id),
            Child::Mem(node) => node,
        };
        let layout = self.layout;
        // This node's page goes first; `spill` appends overflow pages.
        let mut pages = vec![0];
        let id = match &**node {
            Node::Leaf(leaf) => {
                let mut cells = Vec::with_capacity(leaf.len());
                for i in 0..leaf.len() {
                    let payload = leaf.payload(i);
                    let klen = leaf.key(i).len();
                    let spill = self.spill(payload, &mut pages)?;
                    cells.push((klen, payload.len() - klen, spill));
                }
                let id = self.alloc.alloc();
                self.buf.fill(0);
                let mut b = PageBuilder::leaf(&mut self.buf, layout);
                for (i, (klen, vlen, overflow)) in cells.into_iter().enumerate() {
                    let local = &leaf.payload(i)[..local_len(&layout, klen + vlen)];
                    b.push(klen, vlen, local, overflow, None)?;
                }
                b.finish(id);
                self.out.write(id, &self.buf)?;
                id
            }
            Node::Branch(branch) => {
                let mut children = Vec::with_capacity(branch.children.len());
                for c in &branch.children {
                    children.push(self.write_child(c)?);
                }
                let mut spills = Vec::with_capacity(branch.keys.len());
                for k in branch.keys.iter() {
                    spills.push(self.spill(k, &mut pages)?);
                }
                let id = self.alloc.alloc();
                self.buf.fill(0);
                let mut b = PageBuilder::branch(&mut self.buf, layout, children[0]);
                for (i, k) in branch.keys.iter().enumerate() {
                    let local = &k[..local_len(&layout, k.len())];
                    b.push(k.len(), 0, local, spills[i], Some(children[i + 1]))?;
                }
                b.finish(id);
                self.out.write(id, &self.buf)?;
                id
            }
        };
        pages[0] = id;
        self.written.insert(Arc::as_ptr(node) as usize, pages);
        Ok(id)
    }

    /// Writes the part of `payload` that does not stay inline to an overflow chain.
    fn spill(&mut self, payload: &[u8], pages: &mut Vec<PageId>) -> OrbitResult<Option<PageId>> {
        if payload.len() <= self.layout.max_inline {
            return Ok(None);
        }
        let rest = &payload[self.layout.spill_prefix()..];
        let ids: Vec<PageId> = rest
            .chunks(self.layout.overflow_capacity())
            .map(|_| self.alloc.alloc())
            .collect();
        for (i, chunk) in rest.chunks(self.layout.overflow_capacity()).enumerate() {
            let next = ids.get(i + 1).copied().unwrap_or(0);
            self.buf.fill(0);
            page::write_overflow(&mut self.buf, ids[i], next, chunk);
            self.out.write(ids[i], &self.buf)?;
        }
        pages.extend(&ids);
        Ok(ids.first().copied())
    }

    /// Writes the free list of the next open ([`write_freelist`]) after the nodes.
    pub fn write_freelist(
        &mut self,
        also_free: impl IntoIterator<Item = PageId>,
    ) -> OrbitResult<(PageId, Vec<PageId>, u64)> {
        write_freelist(self.alloc, &mut self.out, &mut self.buf, also_free)
    }

    /// Sends everything queued to the file (not synced) and returns the pages written.
    pub fn finish(mut self) -> OrbitResult<u64> {
        self.out.flush()?;
        Ok(self.out.pages)
    }
}

fn local_len(layout: &Layout, payload: usize) -> usize {
    if payload <= layout.max_inline {
        payload
    } else {
        layout.spill_prefix()
    }
}

/// Everything a checkpoint needs, handed by the writer to the checkpoint thread.
pub struct Job {
    /// Where WAL segments live.
    pub fs: Arc<dyn FileSystem>,
    /// The data directory.
    pub dir: PathBuf,
    /// Pages of the durable tree, and the file to write.
    pub store: Arc<PageStore>,
    /// Free pages (the writer gets it back with [`Done`]).
    pub alloc: Allocator,
    /// The tree to write, as of the moment the WAL was rotated.
    pub snapshot: Child,
    /// Pages free at the next open besides the allocator's: those waiting for readers, those
    /// the snapshot no longer uses, and the current free list's own pages.
    pub also_free: Vec<PageId>,
    /// The current free list's own pages: free in memory once the new meta page is durable.
    pub old_freelist: Vec<PageId>,
    /// The new meta page, but for the tree, page count and free-list fields.
    pub meta: Meta,
    /// WAL segments the new meta page makes unnecessary.
    pub old_segments: std::ops::Range<u64>,
}

/// What a finished checkpoint hands back to the writer.
pub struct Done {
    /// The allocator, free pages updated.
    pub alloc: Allocator,
    /// The meta page now durable.
    pub meta: Meta,
    /// The tree written; kept alive until the writer adopted its nodes (their addresses key
    /// `written`).
    pub snapshot: Child,
    /// Page(s) of each node written, by node address.
    pub written: HashMap<usize, Vec<PageId>>,
    /// The new free list's own pages.
    pub freelist_pages: Vec<PageId>,
    /// Pages written.
    pub pages_written: u64,
}

impl Job {
    /// Writes the snapshot's nodes and the free list, syncs, writes and syncs the meta page,
    /// then deletes the WAL segments it covers. See the module docs for why each step is safe
    /// at any crash point.
    pub fn run(mut self) -> OrbitResult<Done> {
        let mut out = NodeWriter::new(&self.store, &mut self.alloc);
        let root = out.write_tree(&self.snapshot)?;
        let (freelist_head, freelist_pages, free_count) = out.write_freelist(self.also_free)?;
        let written = std::mem::take(&mut out.written);
        let pages_written = out.finish()?;
        let file = self.store.file();
        file.sync_data()?;
        let meta = Meta {
            root,
            page_count: self.alloc.page_count,
            freelist_head,
            free_count,
            ..self.meta
        };
        let page_size = self.store.layout().page_size as u64;
        file.write_at(&meta.encode(), meta.slot() * page_size)?;
        file.sync_data()?;
        // Free pages at the end were trimmed off the allocator: no tree, free list or reader
        // uses them, and the durable meta page no longer counts them. A crash before the cut
        // only leaves the file longer than needed.
        if file.len()? > meta.page_count * page_size {
            file.set_len(meta.page_count * page_size)?;
        }
        for old in self.old_segments {
            let path = orbit_persistence_core::wal::segment_path(&self.dir, old);
            if let Err(e) = self.fs.remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not delete a checkpointed WAL segment; the next open deletes it");
            }
        }
        self.alloc.free.extend(self.old_freelist);
        Ok(Done {
            alloc: self.alloc,
            meta,
            snapshot: self.snapshot,
            written,
            freelist_pages,
            pages_written,
        })
    }
}

/// Replaces, in the writer's tree, every node the checkpoint wrote and the writer has not
/// changed since with its page, removing it from `written`: what is left there was written but
/// replaced since, and is retired.
pub fn adopt(child: &mut Child, written: &mut HashMap<usize, Vec<PageId>>) {
    let Child::Mem(node) = child else {
        return;
    };
    if let Some(pages) = written.remove(&(Arc::as_ptr(node) as usize)) {
        // Its whole subtree is on those pages now: none of it is "replaced".
        forget_subtree(node, written);
        *child = Child::Page(pages[0]);
        return;
    }
    // Changed or created since the snapshot: its subtree may hold written nodes. Copy it only
    // if it has a child in memory (a reader may share it).
    let descend =
        matches!(&**node, Node::Branch(b) if b.children.iter().any(|c| matches!(c, Child::Mem(_))));
    if descend && let Node::Branch(b) = Arc::make_mut(node) {
        for c in &mut b.children {
            adopt(c, written);
        }
    }
}

/// Removes the nodes below `node` (adopted with it) from `written`.
fn forget_subtree(node: &Node, written: &mut HashMap<usize, Vec<PageId>>) {
    if let Node::Branch(b) = node {
        for c in &b.children {
            if let Child::Mem(n) = c {
                written.remove(&(Arc::as_ptr(n) as usize));
                forget_subtree(n, written);
            }
        }
    }
}
