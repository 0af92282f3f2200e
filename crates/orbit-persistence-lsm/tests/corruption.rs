//! Bad bytes on disk are found and named, never served and never a panic (docs/reliability.md row
//! E): a flipped byte anywhere in a table gives `Corruption` naming that table, from the open
//! or from the read that needs the bad block (or, if a background compaction meets it first,
//! a poisoned store whose reason names it), and every answer that does come back is right.
//! A bad manifest edit in the middle is `Corruption`; a lost last edit cannot lose data
//! silently, because what it made unnecessary is only deleted after it was durable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use orbit_persistence_conformance::corruption::copy_dir;
use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, Key,
    LsmTreeConfig, ManualClock, NodeId, OrbitError, PersistenceProvider, Timestamp,
};
use orbit_persistence_lsm::Compact;
use orbit_persistence_lsm::LsmDirectory;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const NODES: u32 = 20;

fn lease(i: u32) -> AddressableLease {
    let e = Timestamp(T0.0 + 3_600_000 + u64::from(i));
    AddressableLease::new(
        AddressableReference::new(format!("Type{}", i % 4), Key::string(format!("key-{i:06}"))),
        NodeId::new(format!("node-{}", i % NODES), "ns"),
        e,
        e,
    )
}

fn config(dir: &Path) -> LsmTreeConfig {
    LsmTreeConfig {
        data_dir: dir.to_path_buf(),
        memtable_size: 64 << 10,
        block_size: 1024,
        level1_size: 64 << 10,
        level_fanout: 4,
        block_cache_size: 0,
        ..LsmTreeConfig::default()
    }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(T0))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn tables(dir: &Path) -> Vec<PathBuf> {
    let mut t: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .collect();
    t.sort();
    t
}

/// 3,000 leases, compacted into one sorted run (every block holds live, newest data, so
/// reading every lease, both indexes and the change history reads every block), then closed.
async fn populate(dir: &Path) -> Vec<AddressableLease> {
    let store = LsmDirectory::open(&config(dir), clock()).unwrap();
    let all: Vec<_> = (0..3_000).map(lease).collect();
    for chunk in all.chunks(250) {
        store.store_leases(chunk).await.unwrap();
    }
    store.compact().await.unwrap();
    store.shutdown().await.unwrap();
    all
}

/// Reads every lease, every node's leases, the whole change history, and the whole expiry
/// index (a cleanup at the end of time). Returns the errors; panics on a wrong answer or an error of another kind.
async fn read_everything(dir: &Path, all: &[AddressableLease], bad: &Path) -> Vec<OrbitError> {
    let mut errors = Vec::new();
    let check = |e: OrbitError, errors: &mut Vec<OrbitError>| {
        let named = format!("corruption in {} at offset", bad.display());
        match &e {
            OrbitError::Corruption { path, .. } if path == bad => {}
            // A background compaction met the bad block first: the store refuses writes,
            // naming the cause.
            OrbitError::Poisoned(why) if why.contains(&named) => {}
            _ => panic!("expected Corruption naming {}, got {e}", bad.display()),
        }
        errors.push(e);
    };
    let clock = Arc::new(ManualClock::new(T0));
    let store = match LsmDirectory::open(&config(dir), clock.clone() as Arc<dyn Clock>) {
        Ok(s) => s,
        Err(e) => {
            check(e, &mut errors);
            return errors;
        }
    };
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for l in all {
        *by_node.entry(l.node_id.key.clone()).or_default() += 1;
        match store.get_lease(&l.reference).await {
            Ok(got) => {
                let got = got.expect("a lease served as missing");
                assert_eq!((&got.node_id, got.expires_at), (&l.node_id, l.expires_at));
            }
            Err(e) => check(e, &mut errors),
        }
    }
    for n in 0..NODES {
        let node = NodeId::new(format!("node-{n}"), "ns");
        match store.list_node_leases(&node).await {
            Ok(listed) => assert_eq!(listed.len(), by_node[&node.key], "{node:?}"),
            Err(e) => check(e, &mut errors),
        }
    }
    // The whole change history: one event per lease stored.
    match store.watch(0).await {
        Ok(mut watch) => {
            for i in 0..all.len() {
                match watch.next().await {
                    Some(Ok(event)) => assert_eq!(event.revision, i as u64 + 1),
                    Some(Err(e)) => {
                        check(e, &mut errors);
                        break;
                    }
                    None => panic!("the watch ended without an error"),
                }
            }
        }
        Err(e) => check(e, &mut errors),
    }
    clock.set(Timestamp(u64::MAX - 1));
    match store.cleanup_expired_leases().await {
        Ok(removed) => assert_eq!(removed, all.len() as u64),
        Err(e) => check(e, &mut errors),
    }
    let _ = store.shutdown().await;
    errors
}

#[test]
fn a_flipped_byte_anywhere_in_a_table_is_corruption_naming_it() {
    runtime().block_on(async {
        let pristine = tempfile::tempdir().unwrap();
        let all = populate(pristine.path()).await;
        let tables = tables(pristine.path());
        assert!(tables.len() >= 2, "want several tables: {tables:?}");
        let mut cases = 0;
        for table in &tables {
            let len = std::fs::metadata(table).unwrap().len();
            // Header, first block, middle, the bloom/index region, the footer, the last byte.
            let offsets = [
                0,
                9,
                20,
                len / 3,
                len / 2,
                len * 9 / 10,
                len - 50,
                len - 20,
                len - 1,
            ];
            for offset in offsets {
                let scratch = tempfile::tempdir().unwrap();
                copy_dir(pristine.path(), scratch.path());
                let bad = scratch.path().join(table.file_name().unwrap());
                flip(&bad, offset);
                let errors = read_everything(scratch.path(), &all, &bad).await;
                assert!(
                    !errors.is_empty(),
                    "byte {offset} of {} flipped, and nothing noticed",
                    bad.display()
                );
                cases += 1;
            }
        }
        assert!(cases >= 18);
        // And the pristine copy reads clean.
        let errors = read_everything(pristine.path(), &all, Path::new("/none")).await;
        assert!(errors.is_empty());
    });
}

#[test]
fn a_bad_manifest_edit_is_corruption_and_a_lost_last_edit_loses_nothing_silently() {
    runtime().block_on(async {
        let pristine = tempfile::tempdir().unwrap();
        populate(pristine.path()).await;
        let manifest = pristine.path().join("MANIFEST");
        let len = std::fs::metadata(&manifest).unwrap().len();
        // In the middle of the edits: Corruption naming the manifest.
        let scratch = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), scratch.path());
        flip(&scratch.path().join("MANIFEST"), len / 2);
        let err = LsmDirectory::open(&config(scratch.path()), clock()).unwrap_err();
        assert!(
            matches!(&err, OrbitError::Corruption { path, .. } if path.ends_with("MANIFEST")),
            "{err}"
        );
        // In the last edit (read like a torn write): the state goes back one edit, which
        // names a table or a WAL segment deleted after it. Reopening must say so, name the
        // manifest (not the file that edit retired), and leave the manifest as it was, every
        // time it is tried.
        let scratch = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), scratch.path());
        flip(&scratch.path().join("MANIFEST"), len - 3);
        let damaged = std::fs::read(scratch.path().join("MANIFEST")).unwrap();
        for _ in 0..2 {
            let err = LsmDirectory::open(&config(scratch.path()), clock()).unwrap_err();
            assert!(
                matches!(&err, OrbitError::Corruption { path, .. } if path.ends_with("MANIFEST")),
                "{err}"
            );
            assert_eq!(
                std::fs::read(scratch.path().join("MANIFEST")).unwrap(),
                damaged,
                "a failed recovery cut the manifest"
            );
        }
    });
}

fn open_small(
    clock: Arc<dyn Clock>,
    dir: &Path,
) -> orbit_persistence_core::OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    Ok(Arc::new(LsmDirectory::open(&config(dir), clock)?))
}

/// The suite's harness (docs/reliability.md row E): every file of a crash image (WAL segments,
/// tables, manifest), flipped at ~60 offsets each and cut short five ways.
#[test]
fn every_file_damaged_anywhere_is_corruption_or_correct_data() {
    let reports = orbit_persistence_conformance::corruption::every_file(open_small, 48);
    for r in &reports {
        eprintln!("{r:?}");
    }
    let caught = |suffix: &str| {
        reports
            .iter()
            .filter(|r| r.file.to_string_lossy().ends_with(suffix))
            .map(|r| r.corruption)
            .sum::<usize>()
    };
    for suffix in [".sst", ".log", "MANIFEST"] {
        assert!(
            caught(suffix) > 0,
            "no damage to a {suffix} file was caught"
        );
    }
}
