//! Changing the tree (the writer only): [`insert`] and [`remove`] copy on write, materialize
//! pages into nodes (retiring the pages), split nodes that outgrow a page and merge ones that
//! fall below a quarter of one.

use std::borrow::Cow;
use std::sync::Arc;

use orbit_persistence_core::{OrbitError, OrbitResult};

use crate::page::{Layout, PageId};
use crate::pagefile::PageStore;

use super::node::{Branch, Child, Keys, Leaf, Node};
use super::read::{MAX_DEPTH, page_cell};

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
            page.first_child().map_err(|e| store.undecodable(id, e))?,
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
        Child::Page(_) => Err(OrbitError::internal("cowbtree", "materialize left a page")),
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
