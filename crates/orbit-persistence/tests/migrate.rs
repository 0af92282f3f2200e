//! Live migration between backends through `SwappableProvider`: under four writers nothing
//! acknowledged is lost or duplicated, no renew of a valid revision is refused, and a watch
//! follows across the switch without a gap; refused migrations change nothing; and kill -9 at
//! every step leaves one authoritative store holding every acknowledged write. Pairs whose
//! backends are not compiled in are skipped (CI runs this file with all features).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orbit_persistence::migrate::{MigrationReport, MigrationStep, SwappableProvider, marker};
use orbit_persistence::{
    Acquire, AddressableDirectoryProvider, AddressableLease, AddressableReference, BackendType,
    Clock, Key, LeaseEvent, LeaseEventKind, ManualClock, NodeId, OrbitError, PersistenceConfig,
    PersistenceProvider, Renew, Timestamp, compiled_backends,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);
type Leases = BTreeMap<AddressableReference, AddressableLease>;

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(T0))
}

fn config(backend: BackendType, dir: &Path) -> PersistenceConfig {
    let name = backend.as_str();
    let text = match backend {
        BackendType::Memory | BackendType::Etcd => format!("backend = \"{name}\"\n"),
        _ => format!("backend = \"{name}\"\n[{name}]\ndata_dir = {:?}\n", dir),
    };
    PersistenceConfig::from_toml_str(&text).unwrap()
}

fn compiled(backends: &[BackendType]) -> bool {
    backends.iter().all(|b| compiled_backends().contains(b))
}

fn reference(i: u32) -> AddressableReference {
    AddressableReference::new("Greeter", Key::Int32Key { key: i as i32 })
}

fn lease(i: u32, node: u32) -> AddressableLease {
    let expires = Timestamp(T0.0 + 600_000);
    AddressableLease::new(
        reference(i),
        NodeId::new(format!("node-{node}"), "test"),
        expires,
        expires,
    )
}

async fn open_swappable(config: &PersistenceConfig) -> Arc<SwappableProvider> {
    let config = config.clone();
    Arc::new(
        tokio::task::spawn_blocking(move || SwappableProvider::open(&config, clock()))
            .await
            .unwrap()
            .unwrap(),
    )
}

async fn contents(store: &dyn AddressableDirectoryProvider) -> Leases {
    let snapshot = store.snapshot_leases().await.unwrap();
    snapshot
        .leases
        .into_iter()
        .map(|l| (l.reference.clone(), l))
        .collect()
}

fn replay(mut base: Leases, events: &[LeaseEvent]) -> Leases {
    for e in events {
        match e.kind {
            LeaseEventKind::Put => base.insert(e.reference().clone(), e.lease.clone()),
            _ => base.remove(e.reference()),
        };
    }
    base
}

/// Four writers acquire, renew and release their own leases through the whole migration;
/// each panics if a renew or release of the revision it holds is refused. Returns the
/// migration's report after checking that every acknowledged write is in the target, the
/// watch opened before the migration saw every change once, in order, across the switch, and
/// reopening either config gives the target's leases.
async fn migrate_under_load(from: BackendType, to: BackendType) -> MigrationReport {
    let dir = tempfile::tempdir().unwrap();
    let (source_config, target_config) = (
        config(from, &dir.path().join("source")),
        config(to, &dir.path().join("target")),
    );
    let store = open_swappable(&source_config).await;
    let preload: Vec<_> = (0..3_000).map(|i| lease(100_000 + i, i % 7)).collect();
    store.store_leases(&preload).await.unwrap();
    let start = store.snapshot_leases().await.unwrap();
    let mut watch = store.watch(start.revision).await.unwrap();
    // A watcher that keeps up, as a cache would, from before the migration to after it.
    let watcher = tokio::spawn(async move {
        let mut events = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(3), watch.next()).await {
                Ok(Some(Ok(event))) => events.push(event),
                Err(_) => return events,
                other => panic!("after {} events: {other:?}", events.len()),
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut acked: BTreeMap<AddressableReference, Option<AddressableLease>> =
                    BTreeMap::new();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) || round < 2 {
                    for i in 0..25u32 {
                        let wanted = lease(w * 1_000 + i, w);
                        let r = wanted.reference.clone();
                        let held = match acked.get(&r).cloned().flatten() {
                            None => match store.acquire_lease(&wanted).await.unwrap() {
                                Acquire::Acquired(l) => Some(l),
                                Acquire::Held(l) => panic!("nobody else writes {r:?}: {l:?}"),
                            },
                            Some(l) if round % 3 == 2 => {
                                let released = store
                                    .release_lease(&r, &l.node_id, l.revision)
                                    .await
                                    .unwrap();
                                assert!(released, "the owner's release of {r:?} was refused");
                                None
                            }
                            Some(l) => {
                                let until = Timestamp(l.expires_at.0 + 1);
                                match store
                                    .renew_lease(&r, &l.node_id, l.revision, until, until)
                                    .await
                                    .unwrap()
                                {
                                    Renew::Renewed(l) => Some(l),
                                    Renew::Lost(now) => panic!("renew of {r:?} refused: {now:?}"),
                                }
                            }
                        };
                        acked.insert(r, held);
                        // The memory backend never waits: let the migration run.
                        tokio::task::yield_now().await;
                    }
                    round += 1;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = store.migrate_to(&target_config).await.unwrap();
    assert_eq!(store.config().backend, to);
    // Writers go on against the target before they stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.current_revision().await.unwrap() < report.switched_at_revision + 200 {
        assert!(tokio::time::Instant::now() < deadline, "writers stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }

    assert!(report.copied_leases as usize >= start.leases.len());
    assert!(report.copied_at_revision >= start.revision);
    assert!(report.switched_at_revision >= report.copied_at_revision);
    let now = store.current_revision().await.unwrap();
    let events = watcher.await.unwrap();
    assert_eq!(events.len() as u64, now - start.revision);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.revision,
            start.revision + 1 + i as u64,
            "a gap or a repeat"
        );
    }
    let start_map: Leases = start
        .leases
        .iter()
        .map(|l| (l.reference.clone(), l.clone()))
        .collect();
    let migrated = contents(&*store).await;
    assert_eq!(migrated, replay(start_map, &events));
    for (r, last) in &acked {
        assert_eq!(migrated.get(r), last.as_ref(), "{r:?}");
    }
    store.shutdown().await.unwrap();
    drop(store);

    // Both configs now open the target, with everything.
    for config in [&target_config, &source_config] {
        if config.data_dir().is_none() {
            continue;
        }
        let reopened = open_swappable(config).await;
        assert_eq!(reopened.config().backend, to);
        assert_eq!(contents(&*reopened).await, migrated);
        assert_eq!(reopened.current_revision().await.unwrap(), now);
        reopened.shutdown().await.unwrap();
    }
    eprintln!("{from:?} -> {to:?}: {report:?}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_to_lsm_under_load() {
    if compiled(&[BackendType::Memory, BackendType::LsmTree]) {
        migrate_under_load(BackendType::Memory, BackendType::LsmTree).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lsm_to_cowbtree_under_load() {
    if compiled(&[BackendType::LsmTree, BackendType::CowBTree]) {
        migrate_under_load(BackendType::LsmTree, BackendType::CowBTree).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cowbtree_to_rocksdb_under_load() {
    if compiled(&[BackendType::CowBTree, BackendType::RocksDB]) {
        migrate_under_load(BackendType::CowBTree, BackendType::RocksDB).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_to_lsm_under_load() {
    if compiled(&[BackendType::RocksDB, BackendType::LsmTree]) {
        migrate_under_load(BackendType::RocksDB, BackendType::LsmTree).await;
    }
}

/// Refused migrations change nothing: a non-empty target directory, the source's own
/// directory, and targets that cannot keep revisions (etcd, memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_migrations_change_nothing() {
    let local = [BackendType::LsmTree, BackendType::CowBTree]
        .into_iter()
        .find(|b| compiled_backends().contains(b));
    let Some(backend) = local else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source_dir = dir.path().join("source");
    let store = open_swappable(&config(backend, &source_dir)).await;
    store.store_lease(&lease(1, 1)).await.unwrap();
    let before = contents(&*store).await;
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), b"mine").unwrap();
    let refusals = [
        (config(backend, &full), "a non-empty directory"),
        (config(backend, &source_dir), "the source's directory"),
        (config(BackendType::Etcd, &full), "etcd"),
        (config(BackendType::Memory, &full), "memory"),
    ];
    for (target, what) in refusals {
        match store.migrate_to(&target).await {
            Err(OrbitError::InvalidInput(_) | OrbitError::Config(_)) => {}
            other => panic!("a migration into {what}: {other:?}"),
        }
        assert_eq!(contents(&*store).await, before, "{what}");
        assert_eq!(store.config().backend, backend);
        assert!(!marker::marker_path(&source_dir).exists(), "{what}");
    }
    assert_eq!(std::fs::read(full.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    store.store_lease(&lease(2, 1)).await.unwrap();
    store.shutdown().await.unwrap();
}

/// The steps a crash test kills the child at, by name.
const KILL_STEPS: [&str; 9] = [
    "Marked",
    "Copied",
    "CaughtUp(1)",
    "Barrier",
    "Drained",
    "TargetClosed",
    "Switched",
    "Renamed",
    "Reopened",
];
const CHILD_ENV: &str = "ORBIT_MIGRATE_CHILD";

/// The child of [`kill9_at_every_step_leaves_one_authoritative_store`]: returns at once unless
/// started by it. Opens an LSM store in the given directory, preloads it, starts two writers
/// that acquire new leases and print `ACK <key> <revision>` for each acknowledged one, and
/// migrates to the COW B+tree, printing `STEP` and waiting to be killed at the chosen step.
#[test]
fn migrate_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (step, dir) = spec.split_once(';').unwrap();
    let (step, dir) = (step.to_string(), Path::new(dir).to_path_buf());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let store = open_swappable(&config(BackendType::LsmTree, &dir.join("source"))).await;
            let preload: Vec<_> = (0..2_000).map(|i| lease(500_000 + i, i % 3)).collect();
            store.store_leases(&preload).await.unwrap();
            for w in 0..2u32 {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for i in 0.. {
                        let key = w * 100_000 + i;
                        match store.acquire_lease(&lease(key, w)).await {
                            Ok(Acquire::Acquired(l)) => {
                                let mut out = std::io::stdout().lock();
                                writeln!(out, "ACK {key} {}", l.revision).unwrap();
                                out.flush().unwrap();
                            }
                            other => panic!("acquire of {key}: {other:?}"),
                        }
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            let target = config(BackendType::CowBTree, &dir.join("target"));
            let observe = move |at: MigrationStep| {
                if format!("{at:?}") == step {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "STEP").unwrap();
                    out.flush().unwrap();
                    std::thread::sleep(Duration::from_secs(600));
                }
            };
            store.migrate_to_observed(&target, &observe).await.unwrap();
            let mut out = std::io::stdout().lock();
            writeln!(out, "DONE").unwrap();
            out.flush().unwrap();
            std::thread::sleep(Duration::from_secs(600));
        });
}

/// kill -9 at every step of an LSM -> COW B+tree migration under writers: reopening the
/// source's config gives one store (the source before the switch, the target from it on)
/// holding every acknowledged lease with its revision, nothing of the migration left behind,
/// and revisions that go on above every acknowledged one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_every_step_leaves_one_authoritative_store() {
    if !compiled(&[BackendType::LsmTree, BackendType::CowBTree]) {
        return;
    }
    for step in KILL_STEPS {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "migrate_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{step};{}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked: BTreeMap<u32, u64> = BTreeMap::new();
        let mut reached = false;
        for line in lines.by_ref() {
            let line = line.unwrap();
            // libtest's "test migrate_child ... " has no newline: the first line follows it.
            if line.ends_with("STEP") {
                reached = true;
                break;
            }
            assert!(
                !line.ends_with("DONE"),
                "{step}: the migration never came to it"
            );
            if let Some((_, ack)) = line.split_once("ACK ") {
                let (key, revision) = ack.split_once(' ').unwrap();
                acked.insert(key.parse().unwrap(), revision.parse().unwrap());
            }
        }
        assert!(reached, "{step}: the child ended before the step");
        child.kill().unwrap();
        child.wait().unwrap();
        // Acknowledgements printed before the kill are still in the pipe.
        for line in lines {
            if let Some((_, ack)) = line.unwrap().split_once("ACK ") {
                let (key, revision) = ack.split_once(' ').unwrap();
                acked.insert(key.parse().unwrap(), revision.parse().unwrap());
            }
        }
        assert!(!acked.is_empty(), "{step}: no write was acknowledged");

        let store = open_swappable(&config(BackendType::LsmTree, &dir.path().join("source"))).await;
        let switched = KILL_STEPS.iter().position(|s| *s == step).unwrap()
            >= KILL_STEPS.iter().position(|s| *s == "Switched").unwrap();
        let expected = match switched {
            true => BackendType::CowBTree,
            false => BackendType::LsmTree,
        };
        assert_eq!(store.config().backend, expected, "{step}");
        let held = contents(&*store).await;
        // Each writer may have had one acquire done but not yet printed.
        let extra = held.len() - (2_000 + acked.len()).min(held.len());
        let unacked: Vec<_> = held
            .keys()
            .filter(|r| {
                !matches!(&r.key, Key::Int32Key { key } if *key >= 500_000
                    || acked.contains_key(&(*key as u32)))
            })
            .collect();
        assert!(
            held.len() >= 2_000 + acked.len() && extra <= 2,
            "{step}: {} leases for {} acknowledged; unacknowledged: {unacked:?}",
            held.len(),
            acked.len()
        );
        for (key, revision) in &acked {
            let lease = held
                .get(&reference(*key))
                .unwrap_or_else(|| panic!("{step}: acknowledged lease {key} lost"));
            assert_eq!(lease.revision, *revision, "{step}: lease {key}");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".migrating")),
            "{step}: a staging directory is left: {names:?}"
        );
        let marker = marker::read(
            &orbit_persistence::fs::StdFileSystem::new(),
            &dir.path().join("source"),
        )
        .unwrap();
        assert_eq!(marker.is_some(), switched, "{step}: {marker:?}");
        let top = acked.values().max().copied().unwrap();
        match store.acquire_lease(&lease(999_999, 1)).await.unwrap() {
            Acquire::Acquired(l) => assert!(l.revision > top, "{step}: a revision repeats"),
            other => panic!("{other:?}"),
        }
        store.shutdown().await.unwrap();
    }
}
