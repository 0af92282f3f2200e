//! Read-only opens of the embedded engines (docs/reliability.md row J): they read every lease of a
//! crash image and change no byte of it, refuse writes, never create a store where there is
//! none, and work on a read-only mount and on a full disk (both real: a bind mount remounted
//! read-only, and a tmpfs filled to the last byte; they need root, as CI has). RocksDB runs
//! too when compiled in.

#![cfg(all(feature = "cowbtree", feature = "lsm"))]

use std::path::Path;
use std::sync::Arc;

use orbit_persistence::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, BackendType, Key, NodeId,
    OrbitError, Timestamp, open, open_read_only,
};

mod support;

use orbit_persistence_conformance::corruption::{contents, copy_dir};
use support::{T0, clock, config, is_root, mount, umount};

const LEASES: usize = 300;

/// The embedded engines of this build.
fn engines() -> Vec<BackendType> {
    let mut all = vec![BackendType::CowBTree, BackendType::LsmTree];
    if cfg!(feature = "rocksdb") {
        all.push(BackendType::RocksDB);
    }
    all
}

fn lease(i: usize) -> AddressableLease {
    let e = Timestamp(T0.0 + 3_600_000);
    AddressableLease::new(
        AddressableReference::new("Greeter", Key::string(format!("key-{i:04}"))),
        NodeId::new(format!("node-{}", i % 3), "test"),
        e,
        e,
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A crash image of `backend` in `image`: half the leases checkpointed or flushed (stored,
/// then the store shut down), half only in the WAL (the directory copied while open).
async fn crash_image(backend: BackendType, live: &Path, image: &Path) {
    let c = config(backend, live);
    let store = blocking(move || open(&c, clock())).await.unwrap();
    let all: Vec<_> = (0..LEASES).map(lease).collect();
    store.store_leases(&all[..LEASES / 2]).await.unwrap();
    store.shutdown().await.unwrap();
    let c = config(backend, live);
    let store = blocking(move || open(&c, clock())).await.unwrap();
    for chunk in all[LEASES / 2..].chunks(10) {
        store.store_leases(chunk).await.unwrap();
    }
    copy_dir(live, image);
    store.shutdown().await.unwrap();
}

/// Opens `dir` read-only and checks it holds every lease, by point reads and node listings;
/// writes are refused.
async fn read_back(backend: BackendType, dir: &Path) -> Arc<dyn AddressableDirectoryProvider> {
    let c = config(backend, dir);
    let store = blocking(move || open_read_only(&c, clock()))
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    for i in 0..LEASES {
        let got = store.get_lease(&lease(i).reference).await.unwrap();
        assert_eq!(
            got.map(|l| l.node_id),
            Some(lease(i).node_id),
            "{backend:?} lease {i}"
        );
    }
    let mut listed = 0;
    for n in 0..3 {
        listed += store
            .list_node_leases(&NodeId::new(format!("node-{n}"), "test"))
            .await
            .unwrap()
            .len();
    }
    assert_eq!(listed, LEASES, "{backend:?}");
    assert_eq!(store.metrics().await.lease_count, LEASES as u64);
    let err = store.store_lease(&lease(LEASES)).await.unwrap_err();
    assert!(matches!(err, OrbitError::ReadOnly(_)), "{backend:?}: {err}");
    let err = store.cleanup_expired_leases().await.unwrap_err();
    assert!(matches!(err, OrbitError::ReadOnly(_)), "{backend:?}: {err}");
    let node = NodeId::new("node-0", "test");
    let err = store.remove_node_leases(&node).await.unwrap_err();
    assert!(matches!(err, OrbitError::ReadOnly(_)), "{backend:?}: {err}");
    assert!(!store.list_node_leases(&node).await.unwrap().is_empty());
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_open_reads_a_crash_image_and_changes_no_byte() {
    let tmp = tempfile::tempdir().unwrap();
    for backend in engines() {
        let (live, image) = (
            tmp.path().join(backend.as_str()),
            tmp.path().join(format!("{}-image", backend.as_str())),
        );
        crash_image(backend, &live, &image).await;
        let before = contents(&image);
        let store = read_back(backend, &image).await;
        // The image was not shut down: its WAL is replayed, in memory, and said so (RocksDB
        // replays its own and reports nothing to us).
        let report = store.recovery_report().await;
        assert!(
            backend == BackendType::RocksDB
                || report
                    .actions
                    .iter()
                    .any(|a| matches!(a, orbit_persistence::RecoveryAction::Replayed { .. })),
            "{backend:?}: {report:?}"
        );
        // Two readers at once; a writer waits for both.
        let second = read_back(backend, &image).await;
        let c = config(backend, &image);
        let writer = blocking(move || open(&c, clock())).await;
        assert!(
            matches!(writer, Err(OrbitError::Locked { .. })),
            "{backend:?}: {:?}",
            writer.err()
        );
        store.shutdown().await.unwrap();
        second.shutdown().await.unwrap();
        assert!(
            contents(&image) == before,
            "{backend:?}: a read-only open changed the files"
        );
        let c = config(backend, &image);
        let verified = orbit_persistence::verify(&c).await.unwrap();
        assert!(verified.is_clean(), "{backend:?}: {:?}", verified.problems);
        assert_eq!(verified.leases, LEASES as u64);
        assert!(
            backend == BackendType::RocksDB || !verified.recovery.is_empty(),
            "{backend:?}"
        );
        let c = config(backend, &image);
        let dumped = orbit_persistence::dump(&c, |_| Ok(())).await.unwrap();
        assert_eq!(dumped, LEASES as u64);
        assert!(
            contents(&image) == before,
            "{backend:?}: verify or dump wrote"
        );

        // No store: an error, and nothing created.
        let missing = tmp.path().join("missing").join(backend.as_str());
        let c = config(backend, &missing);
        let opened = blocking(move || open_read_only(&c, clock())).await;
        assert!(
            matches!(opened, Err(OrbitError::WrongStore { .. })),
            "{:?}",
            opened.err()
        );
        assert!(!tmp.path().join("missing").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_open_works_on_a_read_only_mount_and_a_full_disk() {
    if !is_root() {
        eprintln!("skipped: mounting needs root (CI runs as root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for backend in engines() {
        let name = backend.as_str();
        let (live, image) = (
            tmp.path().join(name),
            tmp.path().join(format!("{name}-image")),
        );
        crash_image(backend, &live, &image).await;
        let before = contents(&image);

        // A read-only bind mount of the image.
        let ro = tmp.path().join(format!("{name}-ro"));
        std::fs::create_dir_all(&ro).unwrap();
        let (src, dst) = (image.to_str().unwrap(), ro.to_str().unwrap());
        assert!(mount(&["--bind", src, dst]), "bind mount");
        let remounted = mount(&["-o", "remount,ro,bind", dst]);
        let probe = std::fs::write(ro.join("probe"), b"x");
        let outcome = if remounted && probe.is_err() {
            let store = read_back(backend, &ro).await;
            let c = config(backend, &ro);
            let verified = orbit_persistence::verify(&c).await;
            store.shutdown().await.unwrap();
            Some(verified)
        } else {
            None
        };
        umount(&ro);
        let verified = outcome.expect("the bind mount could not be made read-only");
        assert_eq!(
            verified.unwrap().leases,
            LEASES as u64,
            "{name} on a ro mount"
        );

        // A tmpfs holding the image, then filled to the last byte.
        let full = tmp.path().join(format!("{name}-full"));
        std::fs::create_dir_all(&full).unwrap();
        assert!(
            mount(&[
                "-t",
                "tmpfs",
                "-o",
                "size=4m",
                "tmpfs",
                full.to_str().unwrap()
            ]),
            "tmpfs mount"
        );
        let result = async {
            let data = full.join("data");
            copy_dir(&image, &data);
            let filler = full.join("filler");
            let chunk = vec![0xAAu8; 64 << 10];
            let mut file = std::fs::File::create(&filler).unwrap();
            use std::io::Write;
            let mut small = vec![0u8; 512];
            loop {
                if file.write_all(&chunk).is_err() {
                    // Top off with small writes until not one byte more fits.
                    while file.write_all(&small).is_ok() {}
                    small.truncate(1);
                    while file.write_all(&small).is_ok() {}
                    break;
                }
            }
            drop(file);
            assert!(
                std::fs::write(full.join("probe"), b"x").is_err()
                    || std::fs::metadata(full.join("probe")).is_ok_and(|m| m.len() == 0),
                "the tmpfs is not full"
            );
            let store = read_back(backend, &data).await;
            store.shutdown().await.unwrap();
            contents(&data)
        }
        .await;
        umount(&full);
        let mut after = result;
        after.remove(Path::new("probe"));
        assert!(
            after == before,
            "{name}: the files on the full disk changed"
        );
    }
}
