//! Reading the tree: point lookups ([`get`]) and range scans ([`scan`]) over a root, walking
//! changed nodes in memory and checkpointed pages in place (no copy unless a key or value
//! spilled to overflow pages).

use std::borrow::Cow;
use std::cmp::Ordering;

use orbit_persistence_core::OrbitResult;

use crate::page::{NodePage, PageId, RawCell};
use crate::pagefile::PageStore;

use super::node::{Child, Node};

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

pub(super) fn page_cell<'p>(
    store: &PageStore,
    id: PageId,
    page: &NodePage<'p>,
    i: usize,
) -> OrbitResult<RawCell<'p>> {
    page.cell(i).map_err(|e| store.undecodable(id, e))
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
        page.first_child().map_err(|e| store.undecodable(id, e))
    } else {
        Ok(page_cell(store, id, page, i - 1)?.child)
    }
}

/// Most levels a valid tree has; a deeper descent is a cycle of corrupt links.
pub(super) const MAX_DEPTH: usize = 64;

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
