//! The nodes of the tree in memory: [`Child`] (a checkpointed page or a changed node),
//! [`Node`], [`Leaf`], [`Branch`] and the packed [`Keys`] they hold, with the sizes their page
//! images would take, which decide splits and merges.

use std::sync::Arc;

use crate::page::{Layout, PageId};

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
pub(super) struct Slot {
    pub(super) off: u32,
    pub(super) klen: u16,
    pub(super) vlen: u16,
}

/// A leaf in memory: entries in key order, each `key ++ value` contiguous in one buffer (so a
/// copy is two `memcpy`s, and a cell's payload is one slice).
#[derive(Debug, Clone)]
pub struct Leaf {
    pub(super) data: Vec<u8>,
    pub(super) slots: Vec<Slot>,
    pub(super) garbage: usize,
    pub(super) size: usize,
    /// Where the last new key went (`usize::MAX`: none yet), to spot ascending runs.
    pub(super) last_insert: usize,
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

    pub(super) fn search(&self, key: &[u8]) -> Result<usize, usize> {
        self.slots.binary_search_by(|s| {
            self.data[s.off as usize..s.off as usize + s.klen as usize].cmp(key)
        })
    }

    pub(super) fn lower_bound(&self, key: &[u8]) -> usize {
        self.search(key).unwrap_or_else(|i| i)
    }

    /// Appends an entry after all others (decoding, merging, splitting).
    pub fn push(&mut self, layout: &Layout, key: &[u8], value: &[u8]) {
        let at = self.slots.len();
        self.insert_at(layout, at, key, value);
    }

    pub(super) fn insert_at(&mut self, layout: &Layout, pos: usize, key: &[u8], value: &[u8]) {
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

    pub(super) fn remove_at(&mut self, layout: &Layout, pos: usize) -> Vec<u8> {
        let old = self.value(pos).to_vec();
        let s = self.slots.remove(pos);
        self.size -= layout.leaf_cell_size(s.klen as usize, s.vlen as usize);
        self.garbage += s.klen as usize + s.vlen as usize;
        self.compact_if_wasteful();
        old
    }

    pub(super) fn replace_at(&mut self, layout: &Layout, pos: usize, value: &[u8]) -> Vec<u8> {
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

    pub(super) fn compact_if_wasteful(&mut self) {
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
    pub(super) fn split(&mut self, layout: &Layout, run_end: Option<usize>) -> (Vec<u8>, Leaf) {
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
    pub(super) data: Vec<u8>,
    /// End of key `i` in `data`; key `i` starts where key `i - 1` ends.
    pub(super) ends: Vec<u32>,
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

    pub(super) fn start(&self, i: usize) -> usize {
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

    pub(super) fn insert(&mut self, i: usize, key: &[u8]) {
        let at = self.start(i);
        self.data.splice(at..at, key.iter().copied());
        self.ends.insert(i, (at + key.len()) as u32);
        for end in &mut self.ends[i + 1..] {
            *end += key.len() as u32;
        }
    }

    pub(super) fn remove(&mut self, i: usize) -> Vec<u8> {
        let (from, to) = (self.start(i), self.ends[i] as usize);
        let key: Vec<u8> = self.data.drain(from..to).collect();
        self.ends.remove(i);
        for end in &mut self.ends[i..] {
            *end -= key.len() as u32;
        }
        key
    }

    pub(super) fn split_off(&mut self, at: usize) -> Keys {
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

    pub(super) fn append(&mut self, other: &Keys) {
        for key in other.iter() {
            self.push(key);
        }
    }

    /// Index of the first key for which `pred` is false (keys are sorted).
    pub(super) fn partition_point(&self, mut pred: impl FnMut(&[u8]) -> bool) -> usize {
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
    pub(super) size: usize,
}

impl Branch {
    pub(super) fn new(layout: &Layout, keys: Keys, children: Vec<Child>) -> Branch {
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
    pub(super) fn child_index(&self, key: &[u8]) -> usize {
        self.keys.partition_point(|k| k <= key)
    }

    /// Splits off the upper part; returns the separator that moves up and the part.
    pub(super) fn split(&mut self, layout: &Layout) -> (Vec<u8>, Branch) {
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
