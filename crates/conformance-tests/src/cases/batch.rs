//! `store_leases`: one atomic batch.

use orbit_persistence_core::{Key, OrbitError};

use crate::Backend;
use crate::fixtures::{Ctx, node, reference, without_revision};

/// Every lease of a batch is stored, each with its own revision, indexes included.
pub async fn store_leases_stores_all(b: Backend) {
    let ctx = Ctx::new(b).await;
    ctx.put(&ctx.lease(0, 5)).await;
    let batch: Vec<_> = (0..1_000).map(|i| ctx.lease(i, i % 2)).collect();
    ctx.store.store_leases(&batch).await.unwrap();
    for l in &batch {
        let got = ctx.get(&l.reference).await.expect("batch lease missing");
        assert_eq!(without_revision(got), *l);
    }
    assert_eq!(
        ctx.listed(&node(0)).await.len(),
        500,
        "lease 0 must have moved off node 5"
    );
    assert!(ctx.listed(&node(5)).await.is_empty());
    assert_eq!(ctx.store.metrics().await.lease_count, 1_000);
}

/// One invalid lease rejects the whole batch: nothing of it is stored.
pub async fn store_leases_with_invalid_entry_changes_nothing(b: Backend) {
    let ctx = Ctx::new(b).await;
    let before = ctx.put(&ctx.lease(0, 1)).await;
    let mut batch: Vec<_> = (0..50).map(|i| ctx.lease(i, 2)).collect();
    batch[37].reference.key = Key::string("k".repeat(2_000));
    match ctx.store.store_leases(&batch).await {
        Err(OrbitError::InvalidInput(msg)) => {
            assert!(msg.contains("37"), "message should name the entry: {msg}")
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_eq!(ctx.get(&reference(0)).await, Some(before));
    for i in 1..50 {
        assert_eq!(
            ctx.get(&reference(i)).await,
            None,
            "lease {i} of a rejected batch was stored"
        );
    }
    assert!(ctx.listed(&node(2)).await.is_empty());
}

/// A batch naming one reference twice is ambiguous and rejected whole.
pub async fn store_leases_rejects_duplicate_references(b: Backend) {
    let ctx = Ctx::new(b).await;
    let batch = vec![ctx.lease(1, 1), ctx.lease(2, 1), ctx.lease(1, 2)];
    assert!(matches!(
        ctx.store.store_leases(&batch).await,
        Err(OrbitError::InvalidInput(_))
    ));
    assert_eq!(ctx.get(&reference(1)).await, None);
    assert_eq!(ctx.get(&reference(2)).await, None);
}

/// An empty batch succeeds and changes nothing.
pub async fn store_leases_empty_is_noop(b: Backend) {
    let ctx = Ctx::new(b).await;
    let before = ctx.put(&ctx.lease(1, 1)).await;
    ctx.store.store_leases(&[]).await.unwrap();
    assert_eq!(ctx.get(&reference(1)).await, Some(before));
    assert_eq!(ctx.store.metrics().await.lease_count, 1);
}
