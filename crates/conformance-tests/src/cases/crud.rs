//! Store, get, remove, upsert and the node index.

use orbit_persistence_core::{AddressableReference, Key, NodeId};

use crate::Backend;
use crate::fixtures::{Ctx, node, reference, without_revision};

/// A stored lease comes back equal, with a store-assigned revision.
pub async fn store_then_get_round_trips(b: Backend) {
    let ctx = Ctx::new(b).await;
    let lease = ctx.lease(1, 1);
    let stored = ctx.put(&lease).await;
    assert!(stored.revision > 0, "the store must assign a revision");
    assert_eq!(without_revision(stored), lease);
}

/// A reference never stored reads as `None`.
pub async fn get_absent_is_none(b: Backend) {
    let ctx = Ctx::new(b).await;
    ctx.put(&ctx.lease(1, 1)).await;
    assert_eq!(ctx.get(&reference(2)).await, None);
}

/// `store_lease` ignores the revision it is given and assigns its own.
pub async fn store_ignores_given_revision(b: Backend) {
    let ctx = Ctx::new(b).await;
    let mut lease = ctx.lease(1, 1);
    lease.revision = u64::MAX - 5;
    let stored = ctx.put(&lease).await;
    assert_ne!(stored.revision, u64::MAX - 5);
    let second = ctx.put(&ctx.lease(2, 1)).await;
    assert!(
        second.revision > stored.revision,
        "{} !> {}",
        second.revision,
        stored.revision
    );
}

/// Upserting a lease onto another node moves it in the node index.
pub async fn upsert_moves_lease_and_node_index_follows(b: Backend) {
    let ctx = Ctx::new(b).await;
    let first = ctx.put(&ctx.lease(1, 1)).await;
    let moved = ctx.put(&ctx.lease(1, 2)).await;
    assert_eq!(moved.node_id, node(2));
    assert!(moved.revision > first.revision);
    assert_eq!(
        ctx.listed(&node(1)).await,
        Vec::<AddressableReference>::new()
    );
    assert_eq!(ctx.listed(&node(2)).await, vec![reference(1)]);
}

/// `remove_lease` answers whether there was a lease.
pub async fn remove_returns_true_then_false(b: Backend) {
    let ctx = Ctx::new(b).await;
    ctx.put(&ctx.lease(1, 1)).await;
    ctx.put(&ctx.lease(2, 1)).await;
    assert!(ctx.store.remove_lease(&reference(1)).await.unwrap());
    assert!(!ctx.store.remove_lease(&reference(1)).await.unwrap());
    assert!(!ctx.store.remove_lease(&reference(3)).await.unwrap());
    assert_eq!(ctx.get(&reference(1)).await, None);
    assert!(
        ctx.get(&reference(2)).await.is_some(),
        "removing one lease removed another"
    );
}

/// A removed lease leaves the node index.
pub async fn remove_clears_node_index(b: Backend) {
    let ctx = Ctx::new(b).await;
    ctx.put(&ctx.lease(1, 1)).await;
    ctx.put(&ctx.lease(2, 1)).await;
    ctx.store.remove_lease(&reference(1)).await.unwrap();
    assert_eq!(ctx.listed(&node(1)).await, vec![reference(2)]);
}

/// `list_node_leases` returns exactly the node's leases, whole and current.
pub async fn list_node_leases_is_exact(b: Backend) {
    let ctx = Ctx::new(b).await;
    let mut expected: Vec<Vec<AddressableReference>> = vec![Vec::new(); 4];
    let batch: Vec<_> = (0..60).map(|i| ctx.lease(i, i % 4)).collect();
    ctx.store.store_leases(&batch).await.unwrap();
    for i in 0..60 {
        expected[(i % 4) as usize].push(reference(i));
    }
    for (n, refs) in expected.iter_mut().enumerate() {
        refs.sort();
        assert_eq!(&ctx.listed(&node(n as u32)).await, refs, "node {n}");
    }
    let leases = ctx.store.list_node_leases(&node(3)).await.unwrap();
    for l in leases {
        assert_eq!(
            Some(l.clone()),
            ctx.get(&l.reference).await,
            "listed lease differs from get"
        );
    }
}

/// Nodes with the same key in different namespaces are different nodes.
pub async fn list_node_distinguishes_namespaces(b: Backend) {
    let ctx = Ctx::new(b).await;
    let a = NodeId::new("node-x", "ns-a");
    let bn = NodeId::new("node-x", "ns-b");
    let mut l1 = ctx.lease(1, 0);
    l1.node_id = a.clone();
    let mut l2 = ctx.lease(2, 0);
    l2.node_id = bn.clone();
    ctx.put(&l1).await;
    ctx.put(&l2).await;
    assert_eq!(ctx.listed(&a).await, vec![reference(1)]);
    assert_eq!(ctx.listed(&bn).await, vec![reference(2)]);
}

/// A node with no leases lists as empty, also when it is a prefix of a node that has some.
pub async fn list_unknown_node_is_empty(b: Backend) {
    let ctx = Ctx::new(b).await;
    let mut l = ctx.lease(1, 0);
    l.node_id = NodeId::new("node-10", "orbit");
    ctx.put(&l).await;
    assert!(
        ctx.listed(&node(1)).await.is_empty(),
        "node-1 must not match node-10"
    );
    assert!(ctx.listed(&NodeId::new("node-1", "orbi")).await.is_empty());
}

/// String, i32, i64 and no key with the same text are four different addressables.
pub async fn key_kinds_never_collide(b: Backend) {
    let ctx = Ctx::new(b).await;
    let keys = [
        Key::string("42"),
        Key::Int32Key { key: 42 },
        Key::Int64Key { key: 42 },
        Key::NoKey,
        Key::Int32Key { key: -42 },
        Key::Int64Key { key: i64::MIN },
    ];
    for (i, key) in keys.iter().enumerate() {
        let mut l = ctx.lease(0, i as u32);
        l.reference = AddressableReference::new("Counter", key.clone());
        ctx.put(&l).await;
    }
    for (i, key) in keys.iter().enumerate() {
        let got = ctx
            .get(&AddressableReference::new("Counter", key.clone()))
            .await;
        assert_eq!(got.map(|l| l.node_id), Some(node(i as u32)), "key {key:?}");
    }
}

/// Separators, NUL bytes, unicode and empty string keys are stored faithfully.
pub async fn unusual_characters_round_trip(b: Backend) {
    let ctx = Ctx::new(b).await;
    let refs = [
        AddressableReference::new("a:b", Key::string("c")),
        AddressableReference::new("a", Key::string("b:c")),
        AddressableReference::new("nul\0type", Key::string("k\0ey")),
        AddressableReference::new("Grüße", Key::string("ключ-🔑")),
        AddressableReference::new("Empty", Key::string("")),
        AddressableReference::new("T".repeat(256), Key::string("k".repeat(1024))),
    ];
    for (i, r) in refs.iter().enumerate() {
        let mut l = ctx.lease(0, i as u32);
        l.reference = r.clone();
        ctx.put(&l).await;
    }
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(
            ctx.get(r).await.map(|l| l.node_id),
            Some(node(i as u32)),
            "{r:?}"
        );
        assert_eq!(ctx.listed(&node(i as u32)).await, vec![r.clone()]);
    }
}
