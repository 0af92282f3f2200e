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
        if backend == BackendType::Etcd {
            continue; // needs a cluster: its crate's tests run one; here, its errors (below)
        }
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
    for backend in missing {
        let config = PersistenceConfig {
            backend,
            ..PersistenceConfig::default()
        };
        let config = match backend {
            BackendType::Etcd => config,
            _ => self::config(backend, dir.path()),
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

/// With no member listening, the etcd backend is `Unavailable` within its timeouts; outside a
/// multi-thread runtime it is a `Config` error naming what it needs. Never a panic.
#[cfg(feature = "etcd")]
#[test]
fn etcd_by_config_is_unavailable_without_a_cluster_and_needs_a_runtime() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // free once the listener is dropped: nobody answers there
    let config = PersistenceConfig::from_toml_str(&format!(
        "backend = \"etcd\"\n[etcd]\nendpoints = [\"http://127.0.0.1:{port}\"]\n\
         connect_timeout_ms = 300\nrequest_timeout_ms = 300\n"
    ))
    .unwrap();
    let Err(e) = open(&config, clock()) else {
        panic!("etcd opened outside a runtime");
    };
    assert!(
        matches!(&e, OrbitError::Config(m) if m.contains("tokio")),
        "{e}"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    let out = runtime.block_on(async { open(&config, clock()).map(|_| ()) });
    match out {
        Err(OrbitError::Unavailable(m)) => assert!(m.contains(&port.to_string()), "{m}"),
        Ok(()) => {
            // The client connects lazily: the first call must fail instead.
            let store = runtime.block_on(async { open(&config, clock()) }).unwrap();
            let got = runtime.block_on(store.get_lease(&lease().reference));
            assert!(matches!(got, Err(OrbitError::Unavailable(_))), "{got:?}");
        }
        Err(e) => panic!("expected Unavailable, got {e:?}"),
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}
