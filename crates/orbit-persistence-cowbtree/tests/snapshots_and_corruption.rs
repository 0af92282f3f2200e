//! Snapshots stay consistent while the writer commits, checkpoints and reuses pages; bad bytes
//! anywhere in the files are a `Corruption` error naming the file and offset, never a panic
//! and never a silently different answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, CowBTreeConfig,
    Key, ManualClock, NodeId, OrbitError, PersistenceProvider, Timestamp,
};
use orbit_persistence_cowbtree::CowBTreeDirectory;

/// Leases in the snapshot test.
const N: u32 = 1_000;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn lease(i: u32, node: &str, round: u64) -> AddressableLease {
    let e = Timestamp(T0.0 + 3_600_000 + round);
    AddressableLease::new(
        AddressableReference::new("Snap", Key::string(format!("key-{i:06}"))),
        NodeId::new(node, "ns"),
        e,
        e,
    )
}

fn small(dir: &Path) -> CowBTreeConfig {
    CowBTreeConfig {
        data_dir: dir.to_path_buf(),
        page_size: 1024,
        // A checkpoint after every batch: pages are retired and reused all the time.
        checkpoint_interval_ms: 1,
        ..CowBTreeConfig::default()
    }
}

fn open(dir: &Path) -> Result<CowBTreeDirectory, OrbitError> {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    CowBTreeDirectory::open(&small(dir), clock)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_snapshot_keeps_its_view_while_pages_are_rewritten_and_reused() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        let first: Vec<_> = (0..N).map(|i| lease(i, "node-a", 0)).collect();
        for chunk in first.chunks(100) {
            store.store_leases(chunk).await.unwrap();
        }
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.lease_count(), u64::from(N));
        let pages_before = store.metrics().await.engine["page_count"];
        // Rewrite everything many times over: without the snapshot, the same pages would be
        // reused; with it, the pages it can reach must stay as they were.
        for round in 1..=3 {
            for chunk in (0..N).collect::<Vec<u32>>().chunks(100) {
                let batch: Vec<_> = chunk.iter().map(|&i| lease(i, "node-b", round)).collect();
                store.store_leases(&batch).await.unwrap();
            }
            for i in (0..N).step_by(3) {
                store
                    .remove_lease(&lease(i, "", 0).reference)
                    .await
                    .unwrap();
            }
        }
        let m = store.metrics().await;
        assert!(m.engine["checkpoints"] >= 20, "{:?}", m.engine);
        for i in (0..N).step_by(7) {
            let got = snap.get(&lease(i, "", 0).reference).unwrap().unwrap();
            assert_eq!(
                (got.node_id.key.as_str(), got.expires_at),
                ("node-a", first[i as usize].expires_at)
            );
        }
        assert_eq!(
            snap.node_leases(&NodeId::new("node-a", "ns"))
                .unwrap()
                .len(),
            N as usize
        );
        let all: Vec<_> = snap.leases().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), N as usize);
        assert!(
            all.windows(2).all(|w| w[0].reference < w[1].reference),
            "in reference order"
        );
        // The live store moved on.
        assert_eq!(
            store.get_lease(&lease(0, "", 0).reference).await.unwrap(),
            None
        );
        assert_eq!(
            store
                .list_node_leases(&NodeId::new("node-a", "ns"))
                .await
                .unwrap()
                .len(),
            0
        );
        let grown = store.metrics().await.engine["page_count"];
        // Once the snapshot is gone, its pages come back: the file stops growing.
        drop(snap);
        for round in 4..=6 {
            for chunk in (0..N).collect::<Vec<u32>>().chunks(100) {
                let batch: Vec<_> = chunk.iter().map(|&i| lease(i, "node-c", round)).collect();
                store.store_leases(&batch).await.unwrap();
            }
        }
        let after = store.metrics().await.engine["page_count"];
        assert!(
            grown > pages_before,
            "the snapshot held pages: {pages_before} -> {grown}"
        );
        assert!(
            after <= grown + grown / 10,
            "pages were not reused: {grown} -> {after}"
        );
        store.shutdown().await.unwrap();
    });
}

/// Stores 500 leases, closes (final checkpoint), and returns the page file's bytes.
fn checkpointed_store(dir: &Path) -> Vec<u8> {
    runtime().block_on(async {
        let store = open(dir).unwrap();
        let leases: Vec<_> = (0..500).map(|i| lease(i, "node-a", 0)).collect();
        store.store_leases(&leases).await.unwrap();
        store.shutdown().await.unwrap();
    });
    std::fs::read(dir.join("pages.cow")).unwrap()
}

/// Opens and reads everything; returns the first error.
fn open_and_read_all(dir: &Path) -> Result<usize, OrbitError> {
    runtime().block_on(async {
        let store = open(dir)?;
        let n = store
            .snapshot()?
            .leases()
            .collect::<Result<Vec<_>, _>>()?
            .len();
        for i in 0..500 {
            store.get_lease(&lease(i, "", 0).reference).await?;
        }
        store.list_node_leases(&NodeId::new("node-a", "ns")).await?;
        store.shutdown().await?;
        Ok(n)
    })
}

#[test]
fn a_flipped_byte_in_any_tree_page_is_corruption_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clean = checkpointed_store(dir.path());
    let page = 1024;
    let pages = clean.len() / page;
    assert!(pages > 10);
    let mut caught = 0;
    for p in 2..pages {
        for at in [p * page + 3, p * page + page / 2, p * page + page - 1] {
            let mut bad = clean.clone();
            bad[at] ^= 0x40;
            std::fs::write(dir.path().join("pages.cow"), &bad).unwrap();
            match open_and_read_all(dir.path()) {
                Err(OrbitError::Corruption { path, offset, .. }) => {
                    assert!(path.ends_with("pages.cow"), "{path:?}");
                    assert_eq!(
                        offset as usize / page,
                        p,
                        "offset {offset} for a flip at {at}"
                    );
                    caught += 1;
                }
                // A free page (or its unused tail) is never read.
                Ok(n) => assert_eq!(n, 500, "flip at {at}: a different answer"),
                Err(other) => panic!("flip at {at}: not a corruption error: {other}"),
            }
        }
    }
    assert!(caught > pages, "most flips must be caught, caught {caught}");
    std::fs::write(dir.path().join("pages.cow"), &clean).unwrap();
    assert_eq!(open_and_read_all(dir.path()).unwrap(), 500);
}

#[test]
fn a_torn_meta_page_falls_back_and_two_bad_ones_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let clean = checkpointed_store(dir.path());
    // The newest meta page is damaged: the older checkpoint is used, and its WAL is gone, so
    // opening must say so instead of serving the older state, naming the damaged meta page
    // (not the WAL segment a later checkpoint rightly deleted).
    let newest = if open_meta_generation(&clean, 0) > open_meta_generation(&clean, 1) {
        0
    } else {
        1
    };
    let mut bad = clean.clone();
    bad[newest * 1024 + 20] ^= 1;
    std::fs::write(dir.path().join("pages.cow"), &bad).unwrap();
    match open_and_read_all(dir.path()) {
        Err(OrbitError::Corruption {
            path,
            offset,
            detail,
        }) => {
            assert!(path.ends_with("pages.cow"), "{path:?}");
            assert_eq!(offset, newest as u64 * 1024);
            assert!(detail.contains("WAL segment named by"), "{detail}");
        }
        other => panic!("expected the missing WAL to be reported, got {other:?}"),
    }
    bad[(1 - newest) * 1024 + 20] ^= 1;
    std::fs::write(dir.path().join("pages.cow"), &bad).unwrap();
    match open_and_read_all(dir.path()) {
        Err(OrbitError::Corruption {
            offset: 0, detail, ..
        }) => assert!(detail.contains("no valid meta page"), "{detail}"),
        other => panic!("expected corruption at offset 0, got {other:?}"),
    }
}

fn open_meta_generation(file: &[u8], slot: usize) -> u64 {
    u64::from_le_bytes(file[slot * 1024 + 16..slot * 1024 + 24].try_into().unwrap())
}

#[test]
fn a_bad_record_inside_the_wal_is_corruption_and_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let config = CowBTreeConfig {
        checkpoint_interval_ms: 3_600_000,
        ..small(dir.path())
    };
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let rt = runtime();
    rt.block_on(async {
        let store = CowBTreeDirectory::open(&config, clock.clone()).unwrap();
        for i in 0..20 {
            store.store_lease(&lease(i, "node-a", 0)).await.unwrap();
        }
        // Abandon it without a checkpoint: the leases live in the WAL only.
        std::mem::forget(store);
    });
    let wal = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("wal-"))
        .unwrap();
    let clean = std::fs::read(&wal).unwrap();
    let reopen = || {
        rt.block_on(async {
            let store = CowBTreeDirectory::open_on(
                Arc::new(orbit_persistence_core::fs::StdFileSystem::new()),
                &config,
                clock.clone(),
            )?;
            let n = store.snapshot()?.lease_count();
            std::mem::forget(store);
            Ok::<u64, OrbitError>(n)
        })
    };
    // A cut in the last record: torn tail, cut, 19 leases left.
    std::fs::write(&wal, &clean[..clean.len() - 5]).unwrap();
    assert_eq!(reopen().unwrap(), 19);
    // A flipped byte in the middle: corruption naming the WAL segment.
    let mut bad = clean.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    std::fs::write(&wal, &bad).unwrap();
    match reopen() {
        Err(OrbitError::Corruption { path, offset, .. }) => {
            assert_eq!(path, wal);
            assert!(
                offset as usize <= mid,
                "offset {offset} after the flip at {mid}"
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let _ = Duration::ZERO;
}

#[test]
fn bad_configs_are_refused_before_any_io_and_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let bad = CowBTreeConfig {
        page_size: 3000,
        ..small(&dir.path().join("never-created"))
    };
    match CowBTreeDirectory::open(&bad, clock.clone()) {
        Err(OrbitError::Config(m)) => assert!(m.contains("cow_btree.page_size"), "{m}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(
        !dir.path().join("never-created").exists(),
        "nothing may be created"
    );
    // A file keeps the page size it was created with.
    checkpointed_store(dir.path());
    let other = CowBTreeConfig {
        page_size: 4096,
        ..small(dir.path())
    };
    match CowBTreeDirectory::open(&other, clock) {
        Err(OrbitError::Config(m)) => {
            assert!(
                m.contains("cow_btree.page_size") && m.contains("1024"),
                "{m}"
            )
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert_eq!(open_and_read_all(dir.path()).unwrap(), 500);
}

fn open_for_image(
    clock: Arc<dyn Clock>,
    dir: &Path,
) -> orbit_persistence_core::OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    // No timed checkpoint: the writes after the reopen stay in the WAL.
    let config = CowBTreeConfig {
        data_dir: dir.to_path_buf(),
        page_size: 1024,
        checkpoint_interval_ms: 600_000,
        cache_size: 256 << 20,
        ..CowBTreeConfig::default()
    };
    Ok(Arc::new(CowBTreeDirectory::open(&config, clock)?))
}

/// The suite's harness (docs/reliability.md row E): every file of a crash image (the page file with
/// its two meta pages, the WAL), flipped at ~60 offsets each and cut short five ways.
#[test]
fn every_file_damaged_anywhere_is_corruption_or_correct_data() {
    let reports = orbit_persistence_conformance::corruption::every_file(open_for_image, 48);
    for r in &reports {
        eprintln!("{r:?}");
    }
    assert!(
        reports
            .iter()
            .any(|r| r.file.to_string_lossy().ends_with(".log") && r.len > 1024),
        "the image's WAL holds no writes: {reports:?}"
    );
    // The lock file's content means nothing (the lock is the kernel's).
    for r in reports.iter().filter(|r| r.file.as_os_str() != "LOCK") {
        assert!(
            r.corruption > 0,
            "no damage to {} was ever caught",
            r.file.display()
        );
    }
}
