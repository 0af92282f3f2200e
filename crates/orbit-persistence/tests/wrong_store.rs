//! A data directory opened as the wrong engine, or pointed at someone else's files, is refused
//! with `WrongStore` before a byte is written (docs/reliability.md row J). Runs on every compiled
//! embedded engine, each against every other.

use orbit_persistence::{
    AddressableLease, AddressableReference, BackendType, Key, NodeId, OrbitError,
    PersistenceConfig, Timestamp, compiled_backends, open,
};

mod support;

use orbit_persistence_conformance::corruption::contents;
use support::{T0, clock, config};

fn embedded() -> Vec<BackendType> {
    compiled_backends()
        .into_iter()
        .filter(|b| {
            matches!(
                b,
                BackendType::CowBTree | BackendType::LsmTree | BackendType::RocksDB
            )
        })
        .collect()
}

async fn open_blocking(config: &PersistenceConfig) -> orbit_persistence::OrbitResult<()> {
    let c = config.clone();
    let store = tokio::task::spawn_blocking(move || open(&c, clock()))
        .await
        .unwrap()?;
    store.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opened_as_another_engine_is_refused_untouched() {
    let engines = embedded();
    if engines.len() < 2 {
        return; // built without two embedded engines: nothing to cross
    }
    let tmp = tempfile::tempdir().unwrap();
    for &owner in &engines {
        let dir = tmp.path().join(owner.as_str());
        let c = config(owner, &dir);
        let store = tokio::task::spawn_blocking(move || open(&c, clock()))
            .await
            .unwrap()
            .unwrap();
        let e = Timestamp(T0.0 + 60_000);
        store
            .store_lease(&AddressableLease::new(
                AddressableReference::new("Greeter", Key::string("alice")),
                NodeId::new("node-1", "test"),
                e,
                e,
            ))
            .await
            .unwrap();
        store.shutdown().await.unwrap();
        let before = contents(&dir);
        for &other in engines.iter().filter(|&&b| b != owner) {
            let err = open_blocking(&config(other, &dir)).await.unwrap_err();
            assert!(
                matches!(&err, OrbitError::WrongStore { .. })
                    && err
                        .to_string()
                        .contains(&format!("holds a {} store", owner.as_str())),
                "{} opened as {}: {err}",
                owner.as_str(),
                other.as_str()
            );
            assert_eq!(
                contents(&dir),
                before,
                "{} opened as {} changed its files",
                owner.as_str(),
                other.as_str()
            );
        }
        // Its own engine still opens it.
        open_blocking(&config(owner, &dir)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_someone_elses_files_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    for backend in embedded() {
        let dir = tmp.path().join(backend.as_str());
        std::fs::create_dir_all(dir.join("photos")).unwrap();
        std::fs::write(dir.join("notes.txt"), b"do not delete").unwrap();
        let before = contents(&dir);
        let err = open_blocking(&config(backend, &dir)).await.unwrap_err();
        assert!(
            matches!(&err, OrbitError::WrongStore { .. }) && err.to_string().contains("notes.txt"),
            "{}: {err}",
            backend.as_str()
        );
        assert_eq!(contents(&dir), before, "{}", backend.as_str());
        assert!(!dir.join("LOCK").exists(), "{}", backend.as_str());
    }
}
