//! The B+tree alone against a `BTreeMap`: random inserts, replacements and removals of keys
//! and values of every size (spilling to overflow pages on 1 KiB pages), with checkpoints in
//! between that write the tree to pages and continue from them, and gets and range scans
//! checked after every step. Runs on a real memory-mapped file.

use std::collections::BTreeMap;
use std::sync::Arc;

use orbit_persistence_core::fs::{FileSystem, OpenMode, StdFileSystem};
use orbit_persistence_cowbtree::btree::{self, Child, WriteCtx};
use orbit_persistence_cowbtree::checkpoint::NodeWriter;
use orbit_persistence_cowbtree::freelist::Allocator;
use orbit_persistence_cowbtree::page::Layout;
use orbit_persistence_cowbtree::pagefile::PageStore;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Insert(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    Checkpoint,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Small keys over a small alphabet: many collisions, replacements and removals.
        8 => proptest::collection::vec(0u8..4, 1..6),
        // Long keys: spill to overflow pages, compare through the overflow chain.
        1 => proptest::collection::vec(0u8..2, 200..700),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), prop_oneof![4 => proptest::collection::vec(any::<u8>(), 0..40), 1 => proptest::collection::vec(any::<u8>(), 200..900)])
            .prop_map(|(k, v)| Op::Insert(k, v)),
        3 => key().prop_map(Op::Remove),
        1 => Just(Op::Checkpoint),
    ]
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<PageStore>,
    alloc: Allocator,
    root: Child,
    retired: Vec<u64>,
    loaded: u64,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFileSystem::new();
        let path = dir.path().join("pages");
        let file = fs.open(&path, OpenMode::CreateNew).unwrap();
        file.write_at(&[0u8; 2048], 0).unwrap();
        let layout = Layout::new(1024);
        let store = PageStore::new(&path, layout, Arc::from(file), 2).unwrap();
        Harness {
            _dir: dir,
            store: Arc::new(store),
            alloc: Allocator {
                page_count: 2,
                ..Allocator::default()
            },
            root: Child::empty(&layout),
            retired: Vec::new(),
            loaded: 0,
        }
    }

    fn ctx(&mut self) -> (WriteCtx<'_>, &mut Child) {
        (
            WriteCtx {
                store: &self.store,
                retired: &mut self.retired,
                loaded: &mut self.loaded,
            },
            &mut self.root,
        )
    }

    fn checkpoint(&mut self) {
        let mut out = NodeWriter::new(&self.store, &mut self.alloc);
        let root = out.write_tree(&self.root).unwrap();
        out.finish().unwrap();
        let file = Arc::clone(self.store.file());
        let pages = file.len().unwrap() / 1024;
        self.store =
            Arc::new(PageStore::new(self.store.path(), self.store.layout(), file, pages).unwrap());
        self.root = if root == 0 {
            Child::empty(&self.store.layout())
        } else {
            Child::Page(root)
        };
    }

    fn scan(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        btree::scan(&self.store, &self.root, start, end, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })
        .unwrap();
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn tree_matches_a_btreemap(ops in proptest::collection::vec(op(), 1..400), probes in proptest::collection::vec((key(), key()), 8)) {
        let mut h = Harness::new();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => {
                    let (mut ctx, root) = h.ctx();
                    let old = btree::insert(&mut ctx, root, &k, &v).unwrap();
                    prop_assert_eq!(old, model.insert(k, v));
                }
                Op::Remove(k) => {
                    let (mut ctx, root) = h.ctx();
                    let old = btree::remove(&mut ctx, root, &k).unwrap();
                    prop_assert_eq!(old, model.remove(&k));
                }
                Op::Checkpoint => h.checkpoint(),
            }
        }
        for (k, v) in &model {
            let got = btree::get(&h.store, &h.root, k, |v| Ok(v.to_vec())).unwrap();
            prop_assert_eq!(got.as_ref(), Some(v));
        }
        let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(h.scan(&[], &[0xFF; 800]), all.clone());
        for (a, b) in probes {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let expected: Vec<_> = model.range(lo.clone()..hi.clone()).map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(h.scan(&lo, &hi), expected);
            prop_assert_eq!(btree::get(&h.store, &h.root, &lo, |v| Ok(v.to_vec())).unwrap(), model.get(&lo).cloned());
        }
        // Written to pages and read back the same.
        h.checkpoint();
        prop_assert_eq!(h.scan(&[], &[0xFF; 800]), all);
    }
}

#[test]
fn deleting_most_keys_merges_nodes_back() {
    let mut h = Harness::new();
    let value = [7u8; 30];
    for i in 0..5_000u32 {
        let (mut ctx, root) = h.ctx();
        btree::insert(&mut ctx, root, &i.to_be_bytes(), &value).unwrap();
    }
    h.checkpoint();
    let full = h.alloc.page_count;
    for i in 0..5_000u32 {
        if i % 10 != 0 {
            let (mut ctx, root) = h.ctx();
            btree::remove(&mut ctx, root, &i.to_be_bytes()).unwrap();
        }
    }
    let before = h.alloc.page_count;
    h.checkpoint();
    let tree_pages = h.alloc.page_count - before;
    assert!(
        tree_pages * 5 < full,
        "a tree holding a tenth of the keys took {tree_pages} pages, the full one {full}"
    );
    assert_eq!(h.scan(&[], &[0xFF; 5]).len(), 500);
}
