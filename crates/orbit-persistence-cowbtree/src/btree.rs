//! The copy-on-write B+tree: lookups and range scans for readers, inserts and removals for
//! the writer.
//!
//! A tree is a [`Child`]: either a page of the last checkpoint ([`Child::Page`], read in place)
//! or a node changed since ([`Child::Mem`], an `Arc<Node>`). Readers hold a root and never see a
//! change: the writer changes nodes through `Arc::make_mut`, which copies a node that a
//! published root still shares, and turns a page into a node ("materializes" it) before
//! changing it, recording the page as *retired* so a checkpoint can free it. The checkpoint
//! writes every node back to pages ([`crate::checkpoint`]).
//!
//! Nodes split when their page image would not fit a page, and merge with a neighbour when they
//! fall below a quarter page and the two fit one page: deleting most leases shrinks the tree.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use orbit_persistence_core::{OrbitError, OrbitResult};

use crate::page::{Layout, NodePage, PageId, RawCell};
use crate::pagefile::PageStore;

/// A subtree: a checkpointed page or a node changed since.
#[derive(Debug, Clone)]
pub enum Child {
    /// A branch or leaf page of the page file.
    Page(PageId),
    /// A node in memory.
    Mem(Arc<Node>),
}

impl Child {
    /// An empty tree.
    pub fn empty(layout: &Layout) -> Child {
        Child::Mem(Arc::new(Node::Leaf(Leaf::new(layout))))
    }
}

/// A node in memory.
#[derive(Debug, Clone)]
pub enum Node {
    /// Keys and values.
    Leaf(Leaf),
    /// Separators and children.
    Branch(Branch),
}

impl Node {
    /// Bytes of its page image.
    pub fn size(&self) -> usize {
        match self {
            Node::Leaf(l) => l.size,
            Node::Branch(b) => b.size,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    off: u32,
    klen: u16,
    vlen: u16,
}

/// A leaf in memory: entries in key order, each `key ++ value` contiguous in one buffer (so a
/// copy is two `memcpy`s, and a cell's payload is one slice).
#[derive(Debug, Clone)]
pub struct Leaf {
    data: Vec<u8>,
    slots: Vec<Slot>,
    garbage: usize,
    size: usize,
    /// Where the last new key went (`usize::MAX`: none yet), to spot ascending runs.
    last_insert: usize,
}

impl Leaf {
    /// An empty leaf.
    pub fn new(layout: &Layout) -> Leaf {
        Leaf {
            data: Vec::new(),
            slots: Vec::new(),
            garbage: 0,
            size: layout.leaf_base(),
            last_insert: usize::MAX,
        }
    }

    /// An empty leaf with room for `entries` entries of `bytes` in all.
    pub fn with_capacity(layout: &Layout, entries: usize, bytes: usize) -> Leaf {
        Leaf {
            data: Vec::with_capacity(bytes),
            slots: Vec::with_capacity(entries + 1),
            garbage: 0,
            size: layout.leaf_base(),
            last_insert: usize::MAX,
        }
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the leaf is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Key `i`.
    pub fn key(&self, i: usize) -> &[u8] {
        let s = self.slots[i];
        &self.data[s.off as usize..s.off as usize + s.klen as usize]
    }

    /// Value `i`.
    pub fn value(&self, i: usize) -> &[u8] {
        let s = self.slots[i];
        let at = s.off as usize + s.klen as usize;
        &self.data[at..at + s.vlen as usize]
    }

    /// `key ++ value` of entry `i`.
    pub fn payload(&self, i: usize) -> &[u8] {
        let s = self.slots[i];
        &self.data[s.off as usize..s.off as usize + s.klen as usize + s.vlen as usize]
    }

    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        self.slots.binary_search_by(|s| {
            self.data[s.off as usize..s.off as usize + s.klen as usize].cmp(key)
        })
    }

    fn lower_bound(&self, key: &[u8]) -> usize {
        self.search(key).unwrap_or_else(|i| i)
    }

    /// Appends an entry after all others (decoding, merging, splitting).
    pub fn push(&mut self, layout: &Layout, key: &[u8], value: &[u8]) {
        let at = self.slots.len();
        self.insert_at(layout, at, key, value);
    }

    fn insert_at(&mut self, layout: &Layout, pos: usize, key: &[u8], value: &[u8]) {
        let off = self.data.len() as u32;
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
        self.slots.insert(
            pos,
            Slot {
                off,
                klen: key.len() as u16,
                vlen: value.len() as u16,
            },
        );
        self.size += layout.leaf_cell_size(key.len(), value.len());
    }

    fn remove_at(&mut self, layout: &Layout, pos: usize) -> Vec<u8> {
        let old = self.value(pos).to_vec();
        let s = self.slots.remove(pos);
        self.size -= layout.leaf_cell_size(s.klen as usize, s.vlen as usize);
        self.garbage += s.klen as usize + s.vlen as usize;
        self.compact_if_wasteful();
        old
    }

    fn replace_at(&mut self, layout: &Layout, pos: usize, value: &[u8]) -> Vec<u8> {
        let s = self.slots[pos];
        let old = self.value(pos).to_vec();
        if value.len() == s.vlen as usize {
            let at = s.off as usize + s.klen as usize;
            self.data[at..at + value.len()].copy_from_slice(value);
            return old;
        }
        let key = self.key(pos).to_vec();
        self.size -= layout.leaf_cell_size(s.klen as usize, s.vlen as usize);
        self.garbage += s.klen as usize + s.vlen as usize;
        self.slots.remove(pos);
        self.insert_at(layout, pos, &key, value);
        self.compact_if_wasteful();
        old
    }

    fn compact_if_wasteful(&mut self) {
        if self.garbage > 256 && self.garbage * 2 > self.data.len() {
            let mut fresh = Leaf {
                data: Vec::with_capacity(self.data.len() - self.garbage),
                slots: Vec::with_capacity(self.slots.len()),
                garbage: 0,
                size: self.size,
                last_insert: self.last_insert,
            };
            for i in 0..self.slots.len() {
                let s = self.slots[i];
                let off = fresh.data.len() as u32;
                fresh.data.extend_from_slice(self.payload(i));
                fresh.slots.push(Slot { off, ..s });
            }
            *self = fresh;
        }
    }

    /// Splits off the upper part; returns its first key (the separator) and the part.
    ///
    /// After an ascending run of inserts ending at `pos` (the leaf's last insert followed the one
    /// before it), the split keeps everything up to `pos` here, so this leaf stays full: an
    /// insert at the very end moves only the new key out, one in the middle (a run of keys
    /// arriving in order inside the tree, as one addressable type's) keeps the run here and the
    /// keys after it go right. Otherwise it splits in the middle by bytes.
    fn split(&mut self, layout: &Layout, run_end: Option<usize>) -> (Vec<u8>, Leaf) {
        let n = self.len();
        let cell = |s: &Slot| layout.leaf_cell_size(s.klen as usize, s.vlen as usize);
        let by_run = run_end
            .map(|pos| if pos + 1 >= n { n - 1 } else { pos + 1 })
            .filter(|&at| {
                layout.leaf_base() + self.slots[..at].iter().map(cell).sum::<usize>()
                    <= layout.page_size
            });
        let at = by_run
            .unwrap_or_else(|| {
                let half = (self.size - layout.leaf_base()) / 2;
                let mut acc = 0;
                for (i, s) in self.slots.iter().enumerate() {
                    acc += cell(s);
                    if acc > half {
                        return i;
                    }
                }
                n / 2
            })
            .clamp(1, n - 1);
        let mut left = Leaf::new(layout);
        let mut right = Leaf::new(layout);
        for i in 0..n {
            let part = if i < at { &mut left } else { &mut right };
            part.push(layout, self.key(i), self.value(i));
        }
        if by_run.is_some() {
            left.last_insert = self.last_insert;
        }
        *self = left;
        (right.key(0).to_vec(), right)
    }
}

/// The separator keys of a branch, back to back in one buffer: copying a branch (which the
/// writer does for every branch on a changed path a reader still shares) is two `memcpy`s, and
/// a binary search touches one allocation.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    data: Vec<u8>,
    /// End of key `i` in `data`; key `i` starts where key `i - 1` ends.
    ends: Vec<u32>,
}

impl Keys {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] as usize }
    }

    /// Key `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[self.start(i)..self.ends[i] as usize]
    }

    /// The keys in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Appends a key.
    pub fn push(&mut self, key: &[u8]) {
        self.data.extend_from_slice(key);
        self.ends.push(self.data.len() as u32);
    }

    fn insert(&mut self, i: usize, key: &[u8]) {
        let at = self.start(i);
        self.data.splice(at..at, key.iter().copied());
        self.ends.insert(i, (at + key.len()) as u32);
        for end in &mut self.ends[i + 1..] {
            *end += key.len() as u32;
        }
    }

    fn remove(&mut self, i: usize) -> Vec<u8> {
        let (from, to) = (self.start(i), self.ends[i] as usize);
        let key: Vec<u8> = self.data.drain(from..to).collect();
        self.ends.remove(i);
        for end in &mut self.ends[i..] {
            *end -= key.len() as u32;
        }
        key
    }

    fn split_off(&mut self, at: usize) -> Keys {
        let cut = self.start(at);
        let data = self.data.split_off(cut);
        let ends = self
            .ends
            .split_off(at)
            .into_iter()
            .map(|e| e - cut as u32)
            .collect();
        Keys { data, ends }
    }

    fn append(&mut self, other: &Keys) {
        for key in other.iter() {
            self.push(key);
        }
    }

    /// Index of the first key for which `pred` is false (keys are sorted).
    fn partition_point(&self, mut pred: impl FnMut(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if pred(self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// A branch in memory: key `i` separates `children[i]` from `children[i + 1]`.
#[derive(Debug, Clone)]
pub struct Branch {
    /// Separators.
    pub keys: Keys,
    /// One more child than separators.
    pub children: Vec<Child>,
    size: usize,
}

impl Branch {
    fn new(layout: &Layout, keys: Keys, children: Vec<Child>) -> Branch {
        let size = layout.branch_base()
            + keys
                .iter()
                .map(|k| layout.branch_cell_size(k.len()))
                .sum::<usize>();
        Branch {
            keys,
            children,
            size,
        }
    }

    /// The child whose range holds `key`.
    fn child_index(&self, key: &[u8]) -> usize {
        self.keys.partition_point(|k| k <= key)
    }

    /// Splits off the upper part; returns the separator that moves up and the part.
    fn split(&mut self, layout: &Layout) -> (Vec<u8>, Branch) {
        let n = self.keys.len();
        let half = (self.size - layout.branch_base()) / 2;
        let mut acc = 0;
        let mut mid = n / 2;
        for (i, k) in self.keys.iter().enumerate() {
            acc += layout.branch_cell_size(k.len());
            if acc > half {
                mid = i;
                break;
            }
        }
        let mid = mid.clamp(1, n.saturating_sub(2).max(1));
        let right_keys = self.keys.split_off(mid + 1);
        let sep = self.keys.remove(mid);
        let right_children = self.children.split_off(mid + 1);
        let right = Branch::new(layout, right_keys, right_children);
        *self = Branch::new(
            layout,
            std::mem::take(&mut self.keys),
            std::mem::take(&mut self.children),
        );
        (sep, right)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading pages

/// Key of a page cell: in place unless the key itself spilled.
fn cell_key<'p>(store: &PageStore, at: PageId, cell: &RawCell<'p>) -> OrbitResult<Cow<'p, [u8]>> {
    match cell.inline_key() {
        Some(k) => Ok(Cow::Borrowed(k)),
        None => {
            let mut payload = store.spilled_payload(at, cell, None)?;
            payload.truncate(cell.klen);
            Ok(Cow::Owned(payload))
        }
    }
}

/// Value of a page cell: in place unless it spilled.
fn cell_value<'p>(store: &PageStore, at: PageId, cell: &RawCell<'p>) -> OrbitResult<Cow<'p, [u8]>> {
    match cell.inline_value() {
        Some(v) => Ok(Cow::Borrowed(v)),
        None => {
            let payload = store.spilled_payload(at, cell, None)?;
            Ok(Cow::Owned(payload[cell.klen..].to_vec()))
        }
    }
}

/// Compares a page cell's key with `key`, reading overflow pages only if the inline prefix
/// cannot decide.
fn cmp_cell_key(
    store: &PageStore,
    at: PageId,
    cell: &RawCell<'_>,
    key: &[u8],
) -> OrbitResult<Ordering> {
    if let Some(k) = cell.inline_key() {
        return Ok(k.cmp(key));
    }
    let prefix = cell.local;
    let n = prefix.len().min(key.len());
    match prefix[..n].cmp(&key[..n]) {
        Ordering::Equal if key.len() > n => Ok(cell_key(store, at, cell)?.as_ref().cmp(key)),
        Ordering::Equal => Ok(Ordering::Greater), // the cell's key is longer than `key`
        other => Ok(other),
    }
}

fn page_cell<'p>(
    store: &PageStore,
    id: PageId,
    page: &NodePage<'p>,
    i: usize,
) -> OrbitResult<RawCell<'p>> {
    page.cell(i).map_err(|e| store.corrupt(id, e))
}

/// First cell of a leaf page with key >= `key` (`Ok` if equal).
fn page_search(
    store: &PageStore,
    id: PageId,
    page: &NodePage<'_>,
    key: &[u8],
) -> OrbitResult<Result<usize, usize>> {
    let (mut lo, mut hi) = (0, page.count());
    while lo < hi {
        let mid = (lo + hi) / 2;
        match cmp_cell_key(store, id, &page_cell(store, id, page, mid)?, key)? {
            Ordering::Less => lo = mid + 1,
            Ordering::Greater => hi = mid,
            Ordering::Equal => return Ok(Ok(mid)),
        }
    }
    Ok(Err(lo))
}

/// Index of the child of a branch page whose range holds `key` (separators <= key).
fn page_child_index(
    store: &PageStore,
    id: PageId,
    page: &NodePage<'_>,
    key: &[u8],
) -> OrbitResult<usize> {
    let (mut lo, mut hi) = (0, page.count());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if cmp_cell_key(store, id, &page_cell(store, id, page, mid)?, key)? == Ordering::Greater {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

fn page_child(store: &PageStore, id: PageId, page: &NodePage<'_>, i: usize) -> OrbitResult<PageId> {
    if i == 0 {
        page.first_child().map_err(|e| store.corrupt(id, e))
    } else {
        Ok(page_cell(store, id, page, i - 1)?.child)
    }
}

/// Most levels a valid tree has; a deeper descent is a cycle of corrupt links.
const MAX_DEPTH: usize = 64;

/// Looks `key` up and hands its value to `f`.
pub fn get<T>(
    store: &PageStore,
    root: &Child,
    key: &[u8],
    f: impl FnOnce(&[u8]) -> OrbitResult<T>,
) -> OrbitResult<Option<T>> {
    let mut child = root;
    let mut id = loop {
        match child {
            Child::Page(id) => break *id,
            Child::Mem(node) => match &**node {
                Node::Leaf(l) => return l.search(key).ok().map(|i| f(l.value(i))).transpose(),
                Node::Branch(b) => child = &b.children[b.child_index(key)],
            },
        }
    };
    for _ in 0..MAX_DEPTH {
        let node = store.node(id)?;
        let page = node.view();
        if page.is_leaf() {
            return match page_search(store, id, &page, key)? {
                Ok(i) => f(&cell_value(store, id, &page_cell(store, id, &page, i)?)?).map(Some),
                Err(_) => Ok(None),
            };
        }
        let i = page_child_index(store, id, &page, key)?;
        id = page_child(store, id, &page, i)?;
    }
    Err(store.corrupt(id, "tree deeper than 64 levels: the links form a cycle"))
}

/// What [`scan`] calls per entry (key, value); `Ok(false)` stops the scan.
pub type Visitor<'f> = dyn FnMut(&[u8], &[u8]) -> OrbitResult<bool> + 'f;

/// Visits the entries with `start <= key < end` in key order; `f` returns `false` to stop.
/// Returns `false` if `f` stopped it.
pub fn scan(
    store: &PageStore,
    root: &Child,
    start: &[u8],
    end: &[u8],
    f: &mut Visitor<'_>,
) -> OrbitResult<bool> {
    scan_child(store, root, start, end, f, 0)
}

fn scan_child(
    store: &PageStore,
    child: &Child,
    start: &[u8],
    end: &[u8],
    f: &mut Visitor<'_>,
    depth: usize,
) -> OrbitResult<bool> {
    match child {
        Child::Mem(node) => match &**node {
            Node::Leaf(l) => {
                for i in l.lower_bound(start)..l.len() {
                    if l.key(i) >= end {
                        return Ok(true);
                    }
                    if !f(l.key(i), l.value(i))? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Node::Branch(b) => {
                for i in b.child_index(start)..b.children.len() {
                    if i > 0 && b.keys.get(i - 1) >= end {
                        break;
                    }
                    if !scan_child(store, &b.children[i], start, end, f, depth + 1)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
        Child::Page(id) => scan_page(store, *id, start, end, f, depth),
    }
}

fn scan_page(
    store: &PageStore,
    id: PageId,
    start: &[u8],
    end: &[u8],
    f: &mut Visitor<'_>,
    depth: usize,
) -> OrbitResult<bool> {
    if depth > MAX_DEPTH {
        return Err(store.corrupt(id, "tree deeper than 64 levels: the links form a cycle"));
    }
    let node = store.node(id)?;
    let page = node.view();
    if page.is_leaf() {
        let first = page_search(store, id, &page, start)?.unwrap_or_else(|i| i);
        for i in first..page.count() {
            let cell = page_cell(store, id, &page, i)?;
            let key = cell_key(store, id, &cell)?;
            if &*key >= end {
                return Ok(true);
            }
            if !f(&key, &cell_value(store, id, &cell)?)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    for i in page_child_index(store, id, &page, start)?..=page.count() {
        if i > 0 && &*cell_key(store, id, &page_cell(store, id, &page, i - 1)?)? >= end {
            break;
        }
        let child = page_child(store, id, &page, i)?;
        if !scan_page(store, child, start, end, f, depth + 1)? {
            return Ok(false);
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Changing the tree (writer only)

/// What the writer's tree changes need besides the tree.
pub struct WriteCtx<'a> {
    /// Pages of the current checkpoint.
    pub store: &'a PageStore,
    /// Pages (and their overflow pages) turned into nodes since the checkpoint: free once the
    /// next checkpoint is durable and no reader can see them.
    pub retired: &'a mut Vec<PageId>,
    /// Pages turned into nodes since the checkpoint, for the memory budget.
    pub loaded: &'a mut u64,
}

/// Decodes page `id` into a node, appending it and its overflow pages to `retired`.
pub fn load_node(store: &PageStore, id: PageId, retired: &mut Vec<PageId>) -> OrbitResult<Node> {
    let layout = store.layout();
    let node = store.node(id)?;
    let page = node.view();
    retired.push(id);
    if page.is_leaf() {
        let mut leaf = Leaf::with_capacity(&layout, page.count(), layout.page_size);
        for i in 0..page.count() {
            let cell = page_cell(store, id, &page, i)?;
            let payload: Cow<'_, [u8]> = match cell.overflow {
                None => Cow::Borrowed(cell.local),
                Some(_) => Cow::Owned(store.spilled_payload(id, &cell, Some(retired))?),
            };
            let (k, v) = payload.split_at(cell.klen);
            if !leaf.is_empty() && leaf.key(leaf.len() - 1) >= k {
                return Err(store.corrupt(id, format!("leaf keys out of order at cell {i}")));
            }
            leaf.push(&layout, k, v);
        }
        Ok(Node::Leaf(leaf))
    } else {
        let mut keys = Keys::default();
        let mut children = Vec::with_capacity(page.count() + 1);
        children.push(Child::Page(
            page.first_child().map_err(|e| store.corrupt(id, e))?,
        ));
        for i in 0..page.count() {
            let cell = page_cell(store, id, &page, i)?;
            match cell.overflow {
                None => keys.push(cell.local),
                Some(_) => {
                    let payload = store.spilled_payload(id, &cell, Some(retired))?;
                    keys.push(&payload[..cell.klen]);
                }
            }
            children.push(Child::Page(cell.child));
        }
        Ok(Node::Branch(Branch::new(&layout, keys, children)))
    }
}

/// Makes `child` a node this writer may change: loads a page, copies a node a reader shares.
fn materialize<'c>(ctx: &mut WriteCtx<'_>, child: &'c mut Child) -> OrbitResult<&'c mut Node> {
    if let Child::Page(id) = *child {
        let node = load_node(ctx.store, id, ctx.retired)?;
        *ctx.loaded += 1;
        *child = Child::Mem(Arc::new(node));
    }
    match child {
        Child::Mem(node) => Ok(Arc::make_mut(node)),
        Child::Page(_) => Err(crate::internal("materialize left a page")),
    }
}

fn check_lengths(key: &[u8], value: &[u8]) -> OrbitResult<()> {
    if key.is_empty() || key.len() > u16::MAX as usize || value.len() > u16::MAX as usize {
        return Err(OrbitError::invalid(format!(
            "tree entries take keys of 1..=65535 bytes and values up to 65535 bytes, got {} and {}",
            key.len(),
            value.len()
        )));
    }
    Ok(())
}

/// A descent deeper than any valid tree follows corrupt links in a cycle: stop before the
/// stack does.
fn check_depth(ctx: &WriteCtx<'_>, depth: usize) -> OrbitResult<()> {
    if depth > MAX_DEPTH {
        return Err(ctx
            .store
            .corrupt(0, "tree deeper than 64 levels: the links form a cycle"));
    }
    Ok(())
}

/// Inserts or replaces `key`; returns the old value.
pub fn insert(
    ctx: &mut WriteCtx<'_>,
    root: &mut Child,
    key: &[u8],
    value: &[u8],
) -> OrbitResult<Option<Vec<u8>>> {
    check_lengths(key, value)?;
    let layout = ctx.store.layout();
    let node = materialize(ctx, root)?;
    let (old, split) = insert_into(ctx, &layout, node, key, value, 0)?;
    if let Some((sep, right)) = split {
        let left = std::mem::replace(root, Child::Page(0));
        let mut keys = Keys::default();
        keys.push(&sep);
        let branch = Branch::new(&layout, keys, vec![left, Child::Mem(Arc::new(right))]);
        *root = Child::Mem(Arc::new(Node::Branch(branch)));
    }
    Ok(old)
}

type Split = Option<(Vec<u8>, Node)>;

fn insert_into(
    ctx: &mut WriteCtx<'_>,
    layout: &Layout,
    node: &mut Node,
    key: &[u8],
    value: &[u8],
    depth: usize,
) -> OrbitResult<(Option<Vec<u8>>, Split)> {
    check_depth(ctx, depth)?;
    match node {
        Node::Leaf(leaf) => {
            let (old, run_end) = match leaf.search(key) {
                Ok(i) => (Some(leaf.replace_at(layout, i, value)), None),
                Err(i) => {
                    let ascending =
                        leaf.last_insert.wrapping_add(1) == i || i + 1 == leaf.len() + 1;
                    leaf.insert_at(layout, i, key, value);
                    leaf.last_insert = i;
                    (None, ascending.then_some(i))
                }
            };
            let split = if leaf.size > layout.page_size && leaf.len() > 1 {
                let (sep, right) = leaf.split(layout, run_end);
                Some((sep, Node::Leaf(right)))
            } else {
                None
            };
            Ok((old, split))
        }
        Node::Branch(branch) => {
            let idx = branch.child_index(key);
            let child = materialize(ctx, &mut branch.children[idx])?;
            let (old, split) = insert_into(ctx, layout, child, key, value, depth + 1)?;
            if let Some((sep, right)) = split {
                branch.size += layout.branch_cell_size(sep.len());
                branch.keys.insert(idx, &sep);
                branch.children.insert(idx + 1, Child::Mem(Arc::new(right)));
            }
            let split = if branch.size > layout.page_size && branch.keys.len() > 2 {
                let (sep, right) = branch.split(layout);
                Some((sep, Node::Branch(right)))
            } else {
                None
            };
            Ok((old, split))
        }
    }
}

/// Removes `key`; returns its value if it was there.
pub fn remove(
    ctx: &mut WriteCtx<'_>,
    root: &mut Child,
    key: &[u8],
) -> OrbitResult<Option<Vec<u8>>> {
    let layout = ctx.store.layout();
    let node = materialize(ctx, root)?;
    let old = remove_from(ctx, &layout, node, key, 0)?;
    // A root branch left with one child hands the root to it.
    while let Some(only) = sole_child(root) {
        *root = only;
    }
    Ok(old)
}

fn sole_child(root: &Child) -> Option<Child> {
    match root {
        Child::Mem(node) => match &**node {
            Node::Branch(b) if b.children.len() == 1 => Some(b.children[0].clone()),
            _ => None,
        },
        Child::Page(_) => None,
    }
}

fn remove_from(
    ctx: &mut WriteCtx<'_>,
    layout: &Layout,
    node: &mut Node,
    key: &[u8],
    depth: usize,
) -> OrbitResult<Option<Vec<u8>>> {
    check_depth(ctx, depth)?;
    match node {
        Node::Leaf(leaf) => Ok(leaf.search(key).ok().map(|i| leaf.remove_at(layout, i))),
        Node::Branch(branch) => {
            let idx = branch.child_index(key);
            let child = materialize(ctx, &mut branch.children[idx])?;
            let old = remove_from(ctx, layout, child, key, depth + 1)?;
            if old.is_some() && child.size() < layout.page_size / 4 {
                merge_with_neighbour(ctx, layout, branch, idx)?;
            }
            Ok(old)
        }
    }
}

/// Bytes of a subtree's root node, without loading a page.
fn child_size(store: &PageStore, child: &Child) -> OrbitResult<usize> {
    match child {
        Child::Mem(node) => Ok(node.size()),
        Child::Page(id) => Ok(store.node(*id)?.view().used()),
    }
}

/// Merges the underfull child `idx` into its left or right neighbour, the first that fits
/// with it in one page (left first: deletes in key order then cascade into one node).
fn merge_with_neighbour(
    ctx: &mut WriteCtx<'_>,
    layout: &Layout,
    branch: &mut Branch,
    idx: usize,
) -> OrbitResult<()> {
    let n = branch.children.len();
    let candidates = [idx.checked_sub(1), (idx + 1 < n).then_some(idx)];
    for left_idx in candidates.into_iter().flatten() {
        let sep_cell = layout.branch_cell_size(branch.keys.get(left_idx).len());
        let (l, r) = (
            child_size(ctx.store, &branch.children[left_idx])?,
            child_size(ctx.store, &branch.children[left_idx + 1])?,
        );
        let leaves =
            matches!(&branch.children[idx], Child::Mem(node) if matches!(&**node, Node::Leaf(_)));
        let merged = if leaves {
            l + r - layout.leaf_base()
        } else {
            l + r - layout.branch_base() + sep_cell
        };
        if merged <= layout.page_size {
            return merge_pair(ctx, layout, branch, left_idx);
        }
    }
    Ok(())
}

/// Merges children `left_idx` and `left_idx + 1` (which fit one page) into the left one.
fn merge_pair(
    ctx: &mut WriteCtx<'_>,
    layout: &Layout,
    branch: &mut Branch,
    left_idx: usize,
) -> OrbitResult<()> {
    let (lo, hi) = branch.children.split_at_mut(left_idx + 1);
    let left = materialize(ctx, &mut lo[left_idx])?;
    let right = materialize(ctx, &mut hi[0])?;
    let sep = branch.keys.get(left_idx);
    match (left, right) {
        (Node::Leaf(l), Node::Leaf(r)) => {
            for i in 0..r.len() {
                l.push(layout, r.key(i), r.value(i));
            }
        }
        (Node::Branch(l), Node::Branch(r)) => {
            l.size += layout.branch_cell_size(sep.len()) + r.size - layout.branch_base();
            l.keys.push(sep);
            l.keys.append(&r.keys);
            l.children.append(&mut r.children);
        }
        _ => {
            return Err(ctx
                .store
                .corrupt(0, "siblings of different levels in the tree"));
        }
    }
    let sep = branch.keys.remove(left_idx);
    branch.size -= layout.branch_cell_size(sep.len());
    branch.children.remove(left_idx + 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_split_keeps_order_and_sizes() {
        let layout = Layout::new(1024);
        let mut leaf = Leaf::new(&layout);
        for i in 0..40u32 {
            leaf.push(&layout, format!("key{i:04}").as_bytes(), &[7u8; 20]);
        }
        let before = leaf.size;
        let (sep, right) = leaf.split(&layout, None);
        assert_eq!(&*sep, right.key(0));
        assert!(leaf.key(leaf.len() - 1) < right.key(0));
        assert_eq!(leaf.size + right.size - layout.leaf_base(), before);
        assert_eq!(leaf.len() + right.len(), 40);
    }
}
