//! Cases for durable backends: reopen, revisions across reopen, the directory lock.

use orbit_persistence_core::{Acquire, OrbitError};

use crate::Backend;
use crate::fixtures::{Ctx, node, reference};

/// Everything written before a clean shutdown is there after reopen, indexes included.
pub async fn reopen_keeps_everything(b: Backend) {
    let mut ctx = Ctx::new(b).await;
    let batch: Vec<_> = (0..200).map(|i| ctx.lease(i, i % 5)).collect();
    ctx.store.store_leases(&batch).await.unwrap();
    let single = ctx.put(&ctx.lease(500, 9)).await;
    let mut before = Vec::new();
    for i in 0..200 {
        before.push(ctx.get(&reference(i)).await.unwrap());
    }
    ctx.reopen().await;
    for (i, l) in before.iter().enumerate() {
        assert_eq!(
            ctx.get(&reference(i as u32)).await.as_ref(),
            Some(l),
            "lease {i} after reopen"
        );
    }
    assert_eq!(ctx.get(&reference(500)).await, Some(single));
    assert_eq!(ctx.listed(&node(9)).await, vec![reference(500)]);
    assert_eq!(ctx.listed(&node(0)).await.len(), 40);
    assert_eq!(ctx.store.metrics().await.lease_count, 201);
    // The expiry index survived too: cleanup after reopen finds them.
    ctx.advance(crate::fixtures::TTL_MS);
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 201);
}

/// Revisions are never reused after reopen: a fencing token stays unique forever.
pub async fn revisions_increase_across_reopen(b: Backend) {
    let mut ctx = Ctx::new(b).await;
    let mut last = 0;
    for round in 0..3u32 {
        for i in 0..5u32 {
            let l = ctx.put(&ctx.lease(round * 10 + i, 0)).await;
            assert!(l.revision > last, "round {round}: {} !> {last}", l.revision);
            last = l.revision;
        }
        // A removal and a cleanup are writes too; they must not let a revision repeat.
        ctx.store
            .remove_lease(&reference(round * 10))
            .await
            .unwrap();
        ctx.reopen().await;
    }
    let Acquire::Acquired(l) = ctx.store.acquire_lease(&ctx.lease(99, 1)).await.unwrap() else {
        panic!("acquire of a free reference was refused");
    };
    assert!(l.revision > last);
}

/// Removals and cleanups are as durable as stores.
pub async fn reopen_keeps_removals_and_cleanup(b: Backend) {
    let mut ctx = Ctx::new(b).await;
    for i in 0..10 {
        let mut l = ctx.lease(i, 1);
        if i < 4 {
            l.expires_at.0 = ctx.now().0 + 10;
            l.renew_at = l.expires_at;
        }
        ctx.put(&l).await;
    }
    ctx.store.remove_lease(&reference(9)).await.unwrap();
    ctx.advance(10);
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 4);
    ctx.reopen().await;
    let mut left: Vec<_> = (4..9).map(reference).collect();
    left.sort();
    assert_eq!(ctx.listed(&node(1)).await, left);
    assert_eq!(ctx.get(&reference(9)).await, None);
    assert_eq!(ctx.get(&reference(0)).await, None);
    assert_eq!(ctx.store.cleanup_expired_leases().await.unwrap(), 0);
}

/// A second open of the same directory while the first is open is `Locked`; after shutdown it
/// opens.
pub async fn second_open_is_locked(b: Backend) {
    let mut ctx = Ctx::new(b).await;
    let l = ctx.put(&ctx.lease(1, 1)).await;
    match ctx.open_again().await {
        Err(OrbitError::Locked { path }) => {
            assert!(
                path.starts_with(ctx.dir()),
                "lock path {path:?} is outside the data dir"
            )
        }
        Err(e) => panic!("second open: expected Locked, got {e}"),
        Ok(_) => panic!("second open of a locked data dir succeeded"),
    }
    // The failed open changed nothing.
    assert_eq!(ctx.get(&reference(1)).await, Some(l.clone()));
    ctx.reopen().await;
    assert_eq!(ctx.get(&reference(1)).await, Some(l));
}

/// A data dir that cannot be a directory (an existing file), or that no one may create (under
/// `/proc`, read-only even for root), is a typed error from open, and the file is untouched.
pub async fn open_where_nothing_can_be_written_is_a_typed_error(b: Backend) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"precious").expect("write the file");
    let clock: std::sync::Arc<dyn orbit_persistence_core::Clock> = std::sync::Arc::new(
        orbit_persistence_core::ManualClock::new(crate::fixtures::T0),
    );
    for dir in [file.clone(), "/proc/orbit-persistence-conformance".into()] {
        match crate::fixtures::open_in(b, clock.clone(), &dir).await {
            Err(OrbitError::Io { .. } | OrbitError::Config(_)) => {}
            Err(e) => panic!(
                "open in {}: expected an I/O error, got {e:?}",
                dir.display()
            ),
            Ok(_) => panic!("opened a store in {}", dir.display()),
        }
    }
    assert_eq!(std::fs::read(&file).expect("read the file"), b"precious");
}

/// A data dir full of someone else's files is refused with `WrongStore` naming one of them,
/// and left exactly as it was: no store, no lock file, no byte changed (docs/reliability.md row J).
pub async fn a_directory_of_other_files_is_refused_untouched(b: Backend) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("home");
    std::fs::create_dir_all(dir.join("photos")).expect("create the dir");
    std::fs::write(dir.join("notes.txt"), b"precious").expect("write a file");
    let listing = |d: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing(&dir);
    let clock: std::sync::Arc<dyn orbit_persistence_core::Clock> = std::sync::Arc::new(
        orbit_persistence_core::ManualClock::new(crate::fixtures::T0),
    );
    match crate::fixtures::open_in(b, clock, &dir).await {
        Err(e @ OrbitError::WrongStore { .. }) => {
            assert!(e.to_string().contains("notes.txt"), "{e}");
        }
        Err(e) => panic!("expected WrongStore, got {e:?}"),
        Ok(_) => panic!("opened a store among someone else's files"),
    }
    assert_eq!(
        listing(&dir),
        before,
        "the failed open changed the directory"
    );
    assert_eq!(
        std::fs::read(dir.join("notes.txt")).expect("read the file"),
        b"precious"
    );
}

/// After a clean shutdown the next open has nothing to recover: its recovery report is empty
/// and counted as 0 (a store that reports repairs after every clean restart trains its
/// operators to ignore them).
pub async fn a_clean_reopen_reports_no_recovery(b: Backend) {
    let mut ctx = Ctx::new(b).await;
    for i in 0..50 {
        ctx.put(&ctx.lease(i, i % 3)).await;
    }
    ctx.store.remove_lease(&reference(7)).await.expect("remove");
    ctx.reopen().await;
    let report = ctx.store.recovery_report().await;
    assert!(report.is_empty(), "a clean reopen reported {report:?}");
    assert_eq!(ctx.store.metrics().await.recovery_actions, 0);
    assert_eq!(
        ctx.get(&reference(3)).await.map(|l| l.reference),
        Some(reference(3))
    );
}
