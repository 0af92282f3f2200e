//! `open` by config: every compiled backend opens, stores, and (on disk) finds its leases again
//! after a reopen, verifies clean and dumps them; a backend not compiled in, or a bad config,
//! is refused with a message that says what to do. CI runs this file with the default features
//! and with all of them.

use std::sync::Arc;

use orbit_persistence::{
    AddressableLease, AddressableReference, BackendType, Clock, Key, ManualClock, NodeId,
    OrbitError, PersistenceConfig, Timestamp, compiled_backends, open,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn lease() -> AddressableLease {
    let e = Timestamp(T0.0 + 60_000);
    AddressableLease::new(
        AddressableReference::new("Greeter", Key::string("alice")),
        NodeId::new("node-1", "test"),
        e,
        e,
    )
}

fn config(backend: BackendType, dir: &std::path::Path) -> PersistenceConfig {
    let name = backend.as_str();
    let text = if backend == BackendType::Memory {
        format!("backend = \"{name}\"\n")
    } else {
        format!(
            "backend = \"{name}\"\n[{name}]\ndata_dir = {:?}\n",
            dir.join(name)
        )
    };
    PersistenceConfig::from_toml_str(&text).unwrap()
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(T0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compiled_backend_opens_by_config_and_keeps_its_leases() {
    let dir = tempfile::tempdir().unwrap();
    let backends = compiled_backends();
    assert!(!backends.is_empty());
    for backend in backends {
        let config = config(backend, dir.path());
        let c = config.clone();
        let store = tokio::task::spawn_blocking(move || open(&c, clock()))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        store.store_lease(&lease()).await.unwrap();
        let got = store.get_lease(&lease().reference).await.unwrap().unwrap();
        assert_eq!(got.node_id, lease().node_id, "{backend:?}");
        store.shutdown().await.unwrap();
        if backend == BackendType::Memory {
            continue;
        }
        let c = config.clone();
        let again = tokio::task::spawn_blocking(move || open(&c, clock()))
            .await
            .unwrap()
            .unwrap();
        let got = again.get_lease(&lease().reference).await.unwrap();
        assert_eq!(
            got.map(|l| l.node_id),
            Some(lease().node_id),
            "{backend:?} after reopen"
        );
        again.shutdown().await.unwrap();

        // The offline commands open the closed store themselves.
        let report = orbit_persistence::verify(&config).await.unwrap();
        assert!(report.is_clean(), "{backend:?}: {:?}", report.problems);
        assert_eq!(report.leases, 1, "{backend:?}");
        let dumped = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = dumped.clone();
        let n = orbit_persistence::dump(&config, move |l| {
            sink.lock().unwrap().push(l.reference);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(n, 1, "{backend:?}");
        assert_eq!(*dumped.lock().unwrap(), vec![lease().reference]);
    }
}

#[test]
fn a_backend_not_compiled_in_names_its_feature() {
    let dir = tempfile::tempdir().unwrap();
    let all = [
        BackendType::Memory,
        BackendType::CowBTree,
        BackendType::LsmTree,
        BackendType::RocksDB,
        BackendType::Etcd,
    ];
    let missing: Vec<_> = all
        .into_iter()
        .filter(|b| !compiled_backends().contains(b))
        .collect();
    assert!(
        missing.contains(&BackendType::Etcd),
        "etcd has no backend yet"
    );
    for backend in missing {
        let config = PersistenceConfig {
            backend,
            ..PersistenceConfig::default()
        };
        let config = if backend == BackendType::Etcd {
            config
        } else {
            self::config(backend, dir.path())
        };
        let Err(e) = open(&config, clock()) else {
            panic!("{backend:?} opened without its feature");
        };
        assert!(
            matches!(e, OrbitError::BackendNotCompiled(b) if b == backend),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains(&format!("`{}`", backend.cargo_feature())),
            "{e}"
        );
    }
}

#[test]
fn an_invalid_config_is_refused_naming_the_field() {
    let mut config = PersistenceConfig {
        backend: BackendType::LsmTree,
        lsm_tree: Some(Default::default()),
        ..PersistenceConfig::default()
    };
    if let Some(lsm) = config.lsm_tree.as_mut() {
        lsm.bloom_filter_fp_rate = 1.5;
    }
    let Err(e) = open(&config, clock()) else {
        panic!("an invalid config opened");
    };
    assert!(matches!(e, OrbitError::Config(_)), "{e}");
    assert!(
        e.to_string().contains("lsm_tree.bloom_filter_fp_rate"),
        "{e}"
    );
}
