//! `verify` and `for_each_lease`: a healthy store verifies clean and dumps every lease once, in
//! reference order; each kind of damage, planted with the raw rocksdb crate between two opens,
//! is reported, naming the column family.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence_core::encoding::{encode_reference, expiry_index_key, node_index_key};
use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, Key, ManualClock,
    NodeId, PersistenceProvider, RocksDbConfig, Timestamp,
};
use orbit_persistence_rocksdb::RocksDbDirectory;
use orbit_persistence_rocksdb::options::{self, CF_BY_EXPIRY, CF_BY_NODE, CF_LEASES};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn lease(i: u32) -> AddressableLease {
    AddressableLease::new(
        AddressableReference::new("Greeter", Key::string(format!("actor-{i:05}"))),
        NodeId::new(format!("node-{}", i % 7), "test"),
        Timestamp(T0.0 + 60_000 + u64::from(i)),
        Timestamp(T0.0 + 30_000),
    )
}

fn config(dir: &Path) -> RocksDbConfig {
    RocksDbConfig {
        data_dir: dir.to_path_buf(),
        ..RocksDbConfig::default()
    }
}

/// A closed store of 3,000 leases (some flushed to table files, the rest in the WAL).
async fn populated(dir: &Path) {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let store = RocksDbDirectory::open(&config(dir), clock).unwrap();
    let leases: Vec<_> = (0..3_000).map(lease).collect();
    store.store_leases(&leases[..2_000]).await.unwrap();
    store.shutdown().await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let store = RocksDbDirectory::open(&config(dir), clock).unwrap();
    store.store_leases(&leases[2_000..]).await.unwrap();
    store.shutdown().await.unwrap();
}

async fn verify(dir: &Path) -> orbit_persistence_core::verify::VerifyReport {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let store = RocksDbDirectory::open(&config(dir), clock).unwrap();
    let report = store.verify().await.unwrap();
    store.shutdown().await.unwrap();
    report
}

/// Applies `damage` to the closed database with the raw crate.
fn plant(dir: &Path, damage: impl FnOnce(&rocksdb::DB)) {
    let (opts, cfs) = options::build(&config(dir));
    let db = rocksdb::DB::open_cf_descriptors(&opts, dir.join("db"), cfs).unwrap();
    damage(&db);
    db.flush_wal(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_store_verifies_clean_and_dumps_every_lease_in_order() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let report = verify(dir.path()).await;
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.leases, 3_000);
    assert!(
        report.files_checked >= 1 && report.bytes_checked > 0,
        "{report:?}"
    );

    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let store = RocksDbDirectory::open(&config(dir.path()), clock).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let n = store
        .for_each_lease(move |l| {
            sink.lock().unwrap().push(l);
            Ok(())
        })
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(n, 3_000);
    let keys: Vec<_> = seen
        .iter()
        .map(|l| encode_reference(&l.reference))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "reference order");
    assert_eq!(seen[17].node_id, lease(17).node_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_index_damage_is_reported() {
    // (what is planted, what the report must say)
    type Damage = fn(&rocksdb::DB);
    let cases: [(Damage, &str); 5] = [
        (
            |db| {
                let l = lease(10);
                let cf = db.cf_handle(CF_BY_NODE).unwrap();
                db.delete_cf(cf, node_index_key(&l.node_id, &l.reference))
                    .unwrap();
            },
            "by_node: no entry for the lease",
        ),
        (
            |db| {
                let l = lease(11);
                let cf = db.cf_handle(CF_BY_EXPIRY).unwrap();
                db.delete_cf(cf, expiry_index_key(l.expires_at, &l.reference))
                    .unwrap();
            },
            "by_expiry: no entry for the lease",
        ),
        (
            |db| {
                let ghost = lease(9_999);
                let cf = db.cf_handle(CF_BY_NODE).unwrap();
                db.put_cf(cf, node_index_key(&ghost.node_id, &ghost.reference), [])
                    .unwrap();
            },
            "has no lease",
        ),
        (
            |db| {
                let l = lease(12);
                let cf = db.cf_handle(CF_BY_EXPIRY).unwrap();
                db.put_cf(cf, expiry_index_key(Timestamp(1), &l.reference), [])
                    .unwrap();
            },
            "disagrees with its lease",
        ),
        (
            |db| {
                let cf = db.cf_handle(CF_LEASES).unwrap();
                db.delete_cf(cf, encode_reference(&lease(13).reference))
                    .unwrap();
            },
            "the lease counter says 3000, 2999 leases were read",
        ),
    ];
    for (damage, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        populated(dir.path()).await;
        plant(dir.path(), damage);
        let report = verify(dir.path()).await;
        assert!(
            report.problems.iter().any(|p| p.contains(expected)),
            "expected {expected:?} in {:?}",
            report.problems
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_table_file_is_found() {
    let dir = tempfile::tempdir().unwrap();
    populated(dir.path()).await;
    let table = std::fs::read_dir(dir.path().join("db"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a table file");
    let mut bytes = std::fs::read(&table).unwrap();
    // A third into the file: a data block (they come first; index, filter and footer, which
    // the open reads, are at the end).
    let at = bytes.len() / 3;
    bytes[at] ^= 0x55;
    std::fs::write(&table, bytes).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    // The open reads no data block: only verify's scan can find the flip.
    let store = RocksDbDirectory::open(&config(dir.path()), clock).unwrap();
    let report = store.verify().await.unwrap();
    let _ = store.shutdown().await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.to_lowercase().contains("corrupt") || p.contains("checksum")),
        "{:?}",
        report.problems
    );
}
