//! Backups: `backup` under concurrent writers, and `restore_leases` through core's
//! `backup::restore_into`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orbit_persistence_core::backup::BackupReader;
use orbit_persistence_core::fs::{FileSystem, StdFileSystem};
use orbit_persistence_core::restore::restore_into;
use orbit_persistence_core::{Acquire, AddressableLease, AddressableReference, OrbitError, Renew};

use crate::Backend;
use crate::fixtures::{Ctx, node};
use crate::follow::{contents, drain, own_revisions, replay};

type Leases = BTreeMap<AddressableReference, AddressableLease>;

fn fs() -> Arc<dyn FileSystem> {
    Arc::new(StdFileSystem::new())
}

/// Every lease in the backup file, checked as it is read.
fn read_backup(path: &Path) -> Leases {
    let mut reader = BackupReader::open(&StdFileSystem::new(), path).unwrap();
    let mut out = Leases::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        out.extend(chunk.into_iter().map(|l| (l.reference.clone(), l)));
    }
    out
}

/// Whether the backend keeps a restored lease's revision (etcd assigns its own).
fn restores(b: Backend) -> bool {
    own_revisions(b)
}

/// Four writers acquire, renew and release their own leases while a backup is taken: the
/// backup holds exactly the state at its revision R (the feed replayed up to R), no write
/// acknowledged after R, and the source every acknowledged write. Restored into a fresh store,
/// it gives back exactly those leases at revision R; a revision handed out before the backup
/// still renews there, the next one is above R, and a watch from before R is `Compacted`.
pub async fn backup_under_writers_is_the_state_at_its_revision(b: Backend) {
    let ctx = Ctx::new(b).await;
    let preload: Vec<_> = (0..300).map(|i| ctx.lease(50_000 + i, i % 4)).collect();
    ctx.store.store_leases(&preload).await.unwrap();
    let start = ctx.store.snapshot_leases().await.unwrap();
    let mut watch = ctx.store.watch(start.revision).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let (store, stop) = (Arc::clone(&ctx.store), Arc::clone(&stop));
            let leases: Vec<_> = (0..25u32).map(|i| ctx.lease(w * 1_000 + i, w)).collect();
            tokio::spawn(async move {
                // What this writer was told, per reference: the last acknowledged state.
                let mut acked: BTreeMap<AddressableReference, Option<AddressableLease>> =
                    BTreeMap::new();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) || round < 2 {
                    for lease in &leases {
                        let r = &lease.reference;
                        let held = match acked.get(r).cloned().flatten() {
                            None => match store.acquire_lease(lease).await.unwrap() {
                                Acquire::Acquired(l) => Some(l),
                                Acquire::Held(l) => panic!("nobody else writes {r:?}: {l:?}"),
                            },
                            Some(l) if round % 3 == 2 => {
                                let released = store
                                    .release_lease(r, &l.node_id, l.revision)
                                    .await
                                    .unwrap();
                                assert!(released, "the owner's release of {r:?} failed");
                                None
                            }
                            Some(l) => {
                                let until = l.expires_at.saturating_add(Duration::from_millis(1));
                                match store
                                    .renew_lease(r, &l.node_id, l.revision, until, until)
                                    .await
                                    .unwrap()
                                {
                                    Renew::Renewed(l) => Some(l),
                                    Renew::Lost(now) => panic!("renew of {r:?} lost: {now:?}"),
                                }
                            }
                        };
                        acked.insert(r.clone(), held);
                        // A store that never waits (memory) would otherwise hold the worker
                        // and starve the timer the case waits on.
                        tokio::task::yield_now().await;
                    }
                    round += 1;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("directory.orbak");
    let summary = ctx.store.backup(&file).await.unwrap();
    let r = summary.header.revision;
    // Writes go on after R before the writers stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ctx.store.current_revision().await.unwrap() < r + 50 {
        assert!(tokio::time::Instant::now() < deadline, "writers stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }

    let backup = read_backup(&file);
    assert_eq!(backup.len() as u64, summary.header.leases);
    assert!(backup.values().all(|l| l.revision <= r));
    // The backup is the state at R: the start replayed with every event up to R.
    let start_map: Leases = start
        .leases
        .iter()
        .map(|l| (l.reference.clone(), l.clone()))
        .collect();
    let events = drain(&mut watch).await;
    let upto_r: Vec<_> = events.iter().filter(|e| e.revision <= r).cloned().collect();
    assert!(upto_r.len() < events.len(), "no write landed after R");
    assert_eq!(
        backup,
        replay(start_map.clone(), &upto_r),
        "backup != state at R"
    );
    // The source holds every acknowledged write; the backup none acknowledged after R.
    let source = contents(&ctx).await;
    assert_eq!(source, replay(start_map, &events));
    for (reference, last) in &acked {
        assert_eq!(source.get(reference), last.as_ref(), "{reference:?}");
        if let Some(l) = last.as_ref().filter(|l| l.revision > r) {
            assert_ne!(
                backup.get(reference),
                Some(l),
                "a write after R is in the backup"
            );
        }
    }

    let target = Ctx::new(b).await;
    let restored = restore_into(fs(), &file, &*target.store, b.name).await;
    if !restores(b) {
        assert!(restored.is_err(), "{}: a restore must be refused", b.name);
        assert!(contents(&target).await.is_empty());
        return;
    }
    let restored = restored.unwrap();
    assert_eq!(
        (restored.leases, restored.revision),
        (backup.len() as u64, r)
    );
    assert_eq!(contents(&target).await, backup);
    assert_eq!(target.store.current_revision().await.unwrap(), r);
    // A revision handed out before the backup still renews; a new one is above R.
    let held = backup
        .values()
        .next()
        .expect("the backup holds leases")
        .clone();
    let later = held.expires_at.saturating_add(Duration::from_millis(5));
    let renewed = target
        .store
        .renew_lease(&held.reference, &held.node_id, held.revision, later, later)
        .await
        .unwrap();
    assert!(matches!(renewed, Renew::Renewed(l) if l.revision == r + 1));
    match target.store.watch(0).await.unwrap().next().await {
        Some(Err(OrbitError::Compacted { requested, oldest })) => {
            assert_eq!((requested, oldest), (0, r))
        }
        other => panic!("a watch from before the restore: {other:?}"),
    }
}

/// A damaged or truncated backup is refused before anything is written, and so is a target
/// that has written already (its revisions could repeat); `restore_leases` checks its input.
pub async fn restore_refuses_damage_and_a_store_that_wrote(b: Backend) {
    let ctx = Ctx::new(b).await;
    let leases: Vec<_> = (0..40).map(|i| ctx.lease(i, i % 3)).collect();
    ctx.store.store_leases(&leases).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.orbak");
    ctx.store.backup(&file).await.unwrap();
    assert!(
        matches!(
            ctx.store.backup(&file).await,
            Err(OrbitError::InvalidInput(_))
        ),
        "a backup never replaces a file"
    );
    let good = std::fs::read(&file).unwrap();

    let target = Ctx::new(b).await;
    let (flipped, cut) = (dir.path().join("flipped"), dir.path().join("cut"));
    let mut bytes = good.clone();
    bytes[good.len() / 2] ^= 0x10;
    std::fs::write(&flipped, &bytes).unwrap();
    std::fs::write(&cut, &good[..good.len() - 7]).unwrap();
    let before = target.store.current_revision().await.unwrap();
    for bad in [&flipped, &cut] {
        match restore_into(fs(), bad, &*target.store, b.name).await {
            Err(OrbitError::Corruption { path, offset, .. }) => {
                assert_eq!(&path, bad);
                assert!(offset < good.len() as u64);
            }
            other => panic!("{}: a damaged backup: {other:?}", bad.display()),
        }
        assert!(contents(&target).await.is_empty(), "nothing is written");
        if own_revisions(b) {
            assert_eq!(target.store.current_revision().await.unwrap(), before);
        }
    }

    // A store that wrote: refused, unchanged.
    let own = target.put(&target.lease(900, 1)).await;
    assert!(matches!(
        restore_into(fs(), &file, &*target.store, b.name).await,
        Err(OrbitError::InvalidInput(_))
    ));
    assert_eq!(
        contents(&target).await.into_values().collect::<Vec<_>>(),
        [own]
    );

    if restores(b) {
        let mut lease = ctx.lease(7, 1);
        lease.revision = 10;
        let s = &Ctx::new(b).await.store;
        for (leases, floor) in [
            (vec![lease.clone()], 9),                 // a revision above the floor
            (vec![lease.clone(), lease.clone()], 10), // a reference twice
        ] {
            assert!(matches!(
                s.restore_leases(&leases, floor).await,
                Err(OrbitError::InvalidInput(_))
            ));
        }
        s.restore_leases(&[lease.clone()], 10).await.unwrap();
        assert!(matches!(
            s.restore_leases(&[], 9).await,
            Err(OrbitError::InvalidInput(_))
        ));
        assert_eq!(s.get_lease(&lease.reference).await.unwrap(), Some(lease));
        assert_eq!(s.list_node_leases(&node(1)).await.unwrap().len(), 1);
    }
}
