//! Backup and restore across backends: a backup of each compiled backend restores into each
//! compiled backend with the same leases, revisions and revision; `restore` verifies first and
//! touches nothing when it refuses. CI runs this file with the default features and with all
//! of them.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence::backup::BackupSummary;
use orbit_persistence::fs::{FileSystem, StdFileSystem};
use orbit_persistence::restore::restore_into;
use orbit_persistence::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, BackendType, Clock, Key,
    LeaseSnapshot, ManualClock, NodeId, OrbitError, PersistenceConfig, Timestamp, backup_store,
    compiled_backends, open, restore,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(T0))
}

fn fs() -> Arc<dyn FileSystem> {
    Arc::new(StdFileSystem::new())
}

fn config(backend: BackendType, dir: &Path) -> PersistenceConfig {
    let name = backend.as_str();
    let text = match backend {
        BackendType::Memory | BackendType::Etcd => format!("backend = \"{name}\"\n"),
        _ => format!("backend = \"{name}\"\n[{name}]\ndata_dir = {:?}\n", dir),
    };
    PersistenceConfig::from_toml_str(&text).unwrap()
}

/// The compiled backends a test can open here (etcd needs a cluster: its conformance suite
/// covers its backup).
fn local_backends() -> Vec<BackendType> {
    compiled_backends()
        .into_iter()
        .filter(|b| *b != BackendType::Etcd)
        .collect()
}

async fn open_at(config: &PersistenceConfig) -> Arc<dyn AddressableDirectoryProvider> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || open(&config, clock()))
        .await
        .unwrap()
        .unwrap()
}

fn lease(i: u32) -> AddressableLease {
    let e = Timestamp(T0.0 + 60_000 + u64::from(i));
    AddressableLease::new(
        AddressableReference::new("Greeter", Key::Int32Key { key: i as i32 }),
        NodeId::new(format!("node-{}", i % 5), "test"),
        e,
        e,
    )
}

/// A store of `backend` with 3,000 leases written in batches, then 500 removed, so the last
/// revisions are removals, backed up to `file`.
async fn source(backend: BackendType, dir: &Path, file: &Path) -> (LeaseSnapshot, BackupSummary) {
    let store = open_at(&config(backend, &dir.join("source"))).await;
    let leases: Vec<_> = (0..3_000).map(lease).collect();
    for batch in leases.chunks(1_000) {
        store.store_leases(batch).await.unwrap();
    }
    for l in leases.iter().step_by(6) {
        assert!(store.remove_lease(&l.reference).await.unwrap());
    }
    let summary = store.backup(file).await.unwrap();
    let snapshot = store.snapshot_leases().await.unwrap();
    store.shutdown().await.unwrap();
    assert_eq!(summary.header.revision, snapshot.revision);
    assert_eq!(summary.header.leases, snapshot.leases.len() as u64);
    (snapshot, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_restores_every_backends_backup() {
    for from in local_backends() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backup.orbak");
        let (expected, summary) = source(from, dir.path(), &file).await;
        assert_eq!(summary.header.source, from_name(from));
        for to in local_backends() {
            let target = config(to, &dir.path().join(format!("to-{}", to.as_str())));
            let store = match to {
                BackendType::Memory => {
                    let store = open_at(&target).await;
                    restore_into(fs(), &file, &*store, "memory").await.unwrap();
                    store
                }
                _ => {
                    let restored = restore(&file, &target).await.unwrap();
                    assert_eq!(restored.revision, expected.revision);
                    let staging = dir.path().join(format!(".to-{}.restoring", to.as_str()));
                    assert!(!staging.exists(), "the staging directory was renamed");
                    open_at(&target).await
                }
            };
            let got = store.snapshot_leases().await.unwrap();
            assert_eq!(got, expected, "{from:?} -> {to:?}");
            // The next write is above the backup's revision: tokens never go backwards.
            let next = store.store_lease(&lease(9_999)).await;
            next.unwrap();
            let stored = store.get_lease(&lease(9_999).reference).await.unwrap();
            assert_eq!(stored.unwrap().revision, expected.revision + 1, "{to:?}");
            store.shutdown().await.unwrap();
        }
    }
}

fn from_name(backend: BackendType) -> &'static str {
    match backend {
        BackendType::CowBTree => "cowbtree",
        BackendType::LsmTree => "lsm",
        other => other.as_str(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_damage_a_non_empty_dir_and_targets_without_one() {
    let Some(&disk) = local_backends().iter().find(|b| **b != BackendType::Memory) else {
        return; // default features: memory only, covered by its conformance suite
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.orbak");
    source(disk, dir.path(), &file).await;
    let good = std::fs::read(&file).unwrap();

    // A flipped bit, a cut and a future version: refused, nothing created.
    let target_dir = dir.path().join("target");
    let target = config(disk, &target_dir);
    for (name, bytes) in [
        ("flipped", {
            let mut b = good.clone();
            b[good.len() / 3] ^= 4;
            b
        }),
        ("cut", good[..good.len() - 1].to_vec()),
        ("future", {
            let mut b = good.clone();
            b[8..10].copy_from_slice(&9u16.to_be_bytes());
            b
        }),
    ] {
        let bad = dir.path().join(name);
        std::fs::write(&bad, &bytes).unwrap();
        match restore(&bad, &target).await {
            Err(OrbitError::Corruption { path, .. }) if name != "future" => assert_eq!(path, bad),
            Err(OrbitError::WrongStore { .. }) if name == "future" => {}
            other => panic!("{name}: {other:?}"),
        }
        assert!(!target_dir.exists(), "{name}: nothing is created");
        assert!(!dir.path().join(".target.restoring").exists());
    }

    // A non-empty directory: refused, untouched.
    std::fs::create_dir(&target_dir).unwrap();
    std::fs::write(target_dir.join("keep"), b"mine").unwrap();
    assert!(matches!(
        restore(&file, &target).await,
        Err(OrbitError::InvalidInput(_))
    ));
    assert_eq!(std::fs::read(target_dir.join("keep")).unwrap(), b"mine");

    // An empty directory is fine, and a staging directory a crash left is cleared first.
    std::fs::remove_file(target_dir.join("keep")).unwrap();
    let staging = dir.path().join(".target.restoring");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("half-made"), b"x").unwrap();
    restore(&file, &target).await.unwrap();
    assert!(!staging.exists());

    // Memory and etcd have no directory to restore into.
    for backend in [BackendType::Memory, BackendType::Etcd] {
        assert!(matches!(
            restore(&file, &config(backend, dir.path())).await,
            Err(OrbitError::Config(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_is_backed_up_read_only() {
    let Some(&disk) = local_backends().iter().find(|b| **b != BackendType::Memory) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (expected, _) = source(disk, dir.path(), &dir.path().join("first")).await;
    let file = dir.path().join("offline.orbak");
    let summary = backup_store(&config(disk, &dir.path().join("source")), &file)
        .await
        .unwrap();
    assert_eq!(summary.header.revision, expected.revision);
    assert_eq!(summary.header.leases, expected.leases.len() as u64);
    assert!(matches!(
        backup_store(
            &config(BackendType::Memory, dir.path()),
            &dir.path().join("m")
        )
        .await,
        Err(OrbitError::Config(_))
    ));
}
