//! The seed corpus of the fuzz targets, made from real stores: `ORBIT_WRITE_CORPUS=1 cargo test
//! --manifest-path fuzz/Cargo.toml` rewrites `fuzz/corpus/`. Without the variable the test
//! checks that every checked-in seed still decodes as its target reads it, so a format change
//! that leaves the corpus stale fails here instead of silently fuzzing dead inputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orbit_persistence_core::backup::{BackupHeader, write_backup};
use orbit_persistence_core::change::{LeaseChange, RemovalCause, encode_changes};
use orbit_persistence_core::encoding::{
    encode_lease, encode_reference, expiry_index_key, node_index_key,
};
use orbit_persistence_core::fs::{FaultFs, FileSystem, read_file};
use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, CowBTreeConfig, Key,
    LsmTreeConfig, ManualClock, NodeId, SyncMode, Timestamp,
};
use orbit_persistence_cowbtree::CowBTreeDirectory;
use orbit_persistence_lsm::LsmDirectory;
use orbit_persistence_lsm::sstable::block::BlockBuilder;

fn lease(i: u32) -> AddressableLease {
    let key = if i.is_multiple_of(5) {
        Key::Int64Key { key: i64::from(i) }
    } else {
        Key::string(format!(
            "actor-{i:05}-{}",
            "x".repeat((i % 7) as usize * 40)
        ))
    };
    let mut l = AddressableLease::new(
        AddressableReference::new(format!("Type{}", i % 3), key),
        NodeId::new(format!("node-{}", i % 4), "orbit"),
        Timestamp(1_700_000_100_000 + u64::from(i) * 1000),
        Timestamp(1_700_000_050_000 + u64::from(i) * 500),
    );
    l.revision = u64::from(i) + 1;
    l
}

async fn write_leases(store: Arc<dyn AddressableDirectoryProvider>) {
    for i in 0..300 {
        store.store_lease(&lease(i)).await.unwrap();
    }
    for i in (0..300).step_by(7) {
        store.remove_lease(&lease(i).reference).await.unwrap();
    }
}

fn files(fs: &FaultFs, dir: &Path, suffix: &str) -> Vec<Vec<u8>> {
    let mut names = fs.list_dir(dir).unwrap();
    names.sort();
    names
        .into_iter()
        .filter(|n| n.ends_with(suffix))
        // A compaction may delete a table between the listing and the read.
        .filter_map(|n| read_file(fs, &dir.join(n)).ok())
        .collect()
}

/// Every target's seeds, by target name.
fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let dir = Path::new("/db");

    // A COW B+tree with 1 KiB pages: a WAL tail after the last checkpoint, and a page file.
    let cow_fs = FaultFs::new();
    let config = CowBTreeConfig {
        data_dir: dir.into(),
        sync: SyncMode::Always,
        page_size: 1024,
        checkpoint_interval_ms: 600_000,
        ..CowBTreeConfig::default()
    };
    let open_cow = || -> Arc<dyn AddressableDirectoryProvider> {
        Arc::new(
            CowBTreeDirectory::open_on(Arc::new(cow_fs.clone()), &config, clock.clone()).unwrap(),
        )
    };
    let store = open_cow();
    runtime.block_on(write_leases(store.clone()));
    runtime.block_on(store.shutdown()).unwrap();
    drop(store);
    // Pages from the shutdown's checkpoint; WAL records from writes after it, read while the
    // store is open (a shutdown checkpoints, emptying the WAL).
    let store = open_cow();
    runtime.block_on(write_leases(store.clone()));
    let cow_wal = files(&cow_fs, dir, ".log");
    let page_file = files(&cow_fs, dir, ".cow").remove(0);
    drop(store);

    // An LSM tree with 4 KiB memtables: tables, a manifest and a WAL.
    let lsm_fs = FaultFs::new();
    let config = LsmTreeConfig {
        data_dir: dir.into(),
        sync: SyncMode::Always,
        memtable_size: 4 << 10,
        block_size: 512,
        ..LsmTreeConfig::default()
    };
    let store: Arc<dyn AddressableDirectoryProvider> =
        Arc::new(LsmDirectory::open_on(Arc::new(lsm_fs.clone()), &config, clock.clone()).unwrap());
    runtime.block_on(write_leases(store.clone()));
    let tables = files(&lsm_fs, dir, ".sst");
    let manifest = files(&lsm_fs, dir, "MANIFEST");
    let lsm_wal = files(&lsm_fs, dir, ".log");
    drop(store);

    let leases: Vec<AddressableLease> = (0..12).map(lease).collect();
    let mut encodings = Vec::new();
    for l in &leases {
        encodings.push(encode_lease(l));
        encodings.push(encode_reference(&l.reference));
        encodings.push(node_index_key(&l.node_id, &l.reference));
        encodings.push(expiry_index_key(l.expires_at, &l.reference));
    }
    let changes: Vec<Vec<u8>> = (1..6)
        .map(|n| {
            let mut out = Vec::new();
            let batch: Vec<LeaseChange> = (0..n)
                .map(|i| match i % 2 {
                    0 => LeaseChange::Put(lease(i)),
                    _ => LeaseChange::Delete {
                        reference: lease(i).reference,
                        revision: u64::from(i) + 7,
                        cause: if i % 4 == 1 {
                            RemovalCause::Released
                        } else {
                            RemovalCause::Evicted
                        },
                    },
                })
                .collect();
            encode_changes(&batch, &mut out);
            out
        })
        .collect();
    let pages: Vec<Vec<u8>> = page_file
        .chunks(1024)
        .skip(2)
        .take(24)
        .map(|p| [&[0u8][..], p].concat())
        .collect();
    let metas: Vec<Vec<u8>> = page_file.chunks(1024).take(2).map(<[u8]>::to_vec).collect();
    let blocks: Vec<Vec<u8>> = [3, 20, 60]
        .iter()
        .map(|&n| {
            let mut entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..n)
                .map(|i| {
                    let l = lease(i);
                    (
                        encode_reference(&l.reference),
                        (i % 4 != 0).then(|| encode_lease(&l)),
                    )
                })
                .collect();
            entries.sort();
            let mut b = BlockBuilder::default();
            for (key, value) in &entries {
                b.add(key, value.as_deref());
            }
            b.finish()
        })
        .collect();
    let logs: Vec<Vec<u8>> = cow_wal
        .iter()
        .chain(&lsm_wal)
        .chain(&manifest)
        .map(|f| [&[0u8][..], f].concat())
        .collect();
    let configs: Vec<Vec<u8>> = [
        "backend = \"memory\"\n[memory]\nmax_entries = 1000\n",
        "backend = \"cow_btree\"\n[cow_btree]\ndata_dir = \"/var/lib/orbit\"\npage_size = 4096\nsync = { interval_ms = 50 }\n",
        "backend = \"lsm_tree\"\n[lsm_tree]\ndata_dir = \"/data\"\nmemtable_size = 16777216\nbloom_filter_fp_rate = 0.01\nsync = \"always\"\n",
        "backend = \"rocksdb\"\n[rocksdb]\ndata_dir = \"/data\"\nblock_cache_size = 1048576\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    // Backups as the stores write them: empty, one chunk, several chunks.
    let backups: Vec<Vec<u8>> = [0u32, 12, 2_500]
        .iter()
        .map(|&n| {
            let fs = FaultFs::new();
            let path = Path::new("/backup.orbak");
            let mut leases: Vec<AddressableLease> = (0..n).map(lease).collect();
            leases.sort_by(|a, b| a.reference.cmp(&b.reference));
            let header = BackupHeader {
                source: "cow_btree".into(),
                revision: u64::from(n) + 1,
                leases: u64::from(n),
                created_at_ms: 1_700_000_000_000,
            };
            write_backup(
                Arc::new(fs.clone()),
                path,
                header,
                leases.into_iter().map(Ok),
            )
            .unwrap();
            read_file(&fs, path).unwrap()
        })
        .collect();
    let all = vec![
        ("lease_encoding", encodings),
        ("wal_changes", changes),
        ("log_file", logs),
        ("cowbtree_page", pages),
        ("cowbtree_meta", metas),
        ("lsm_block", blocks),
        ("lsm_table", tables),
        ("lsm_manifest", manifest),
        ("config_toml", configs),
        ("backup_file", backups),
    ];
    // Only inputs that decode make good seeds (a free page of the page file does not).
    all.into_iter()
        .map(|(target, inputs)| {
            let good = inputs.into_iter().filter(|i| decodes(target, i)).collect();
            (target, good)
        })
        .collect()
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn seed_corpus_is_made_from_real_stores_and_still_decodes() {
    let seeds = seeds();
    for (target, inputs) in &seeds {
        assert!(!inputs.is_empty(), "{target}: no seed decodes");
    }
    if std::env::var_os("ORBIT_WRITE_CORPUS").is_some() {
        for (target, inputs) in &seeds {
            let dir = corpus_dir(target);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, input) in inputs.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:03}")), input).unwrap();
            }
        }
        return;
    }
    for (target, _) in &seeds {
        let dir = corpus_dir(target);
        let mut stored: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}; run with ORBIT_WRITE_CORPUS=1", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        stored.sort();
        assert!(!stored.is_empty(), "{target}: no checked-in seeds");
        for path in stored {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                decodes(target, &bytes),
                "{}: a stale seed; run with ORBIT_WRITE_CORPUS=1",
                path.display()
            );
        }
    }
}

/// Whether `input` gets through `target`'s decoder without an error (what a seed is for).
fn decodes(target: &str, input: &[u8]) -> bool {
    use orbit_persistence_core::encoding::{
        decode_expiry_index_key, decode_lease, decode_node_index_key, decode_reference,
    };
    use orbit_persistence_core::fs::OpenMode;
    let fs = FaultFs::new();
    let file = |name: &str, bytes: &[u8]| {
        fs.create_dir_all(Path::new("/db")).unwrap();
        let path = Path::new("/db").join(name);
        fs.open(&path, OpenMode::CreateNew)
            .unwrap()
            .append(bytes)
            .unwrap();
        path
    };
    match target {
        "lease_encoding" => {
            decode_lease(input).is_ok()
                || decode_reference(input).is_ok()
                || decode_node_index_key(input).is_ok()
                || decode_expiry_index_key(input).is_ok()
        }
        "wal_changes" => orbit_persistence_core::change::decode_changes(input).is_ok(),
        "log_file" => {
            let path = file("x.log", &input[1..]);
            let mut reader = orbit_persistence_core::log::LogReader::open(&fs, &path).unwrap();
            let mut records = 0;
            while reader.next_record().unwrap().is_some() {
                records += 1;
            }
            records > 0 && !reader.torn_tail()
        }
        "cowbtree_page" => {
            let page = &input[1..];
            let layout = orbit_persistence_cowbtree::page::Layout::new(page.len());
            let id = u64::from_le_bytes(page[8..16].try_into().unwrap());
            orbit_persistence_cowbtree::page::check(page, &layout, id).is_ok()
        }
        "cowbtree_meta" => orbit_persistence_cowbtree::meta::Meta::decode(input).is_ok(),
        "lsm_block" => orbit_persistence_lsm::sstable::block::Block::new(input.into()).is_ok(),
        "lsm_table" => {
            let path = file("0000000000000001.sst", input);
            orbit_persistence_lsm::sstable::Table::open(&fs, &path, 1, None)
                .is_ok_and(|t| t.verify().is_empty())
        }
        "lsm_manifest" => {
            file(orbit_persistence_lsm::manifest::MANIFEST, input);
            orbit_persistence_lsm::manifest::Manifest::open(Arc::new(fs.clone()), Path::new("/db"))
                .is_ok()
        }
        "backup_file" => {
            let path = file("b.orbak", input);
            orbit_persistence_core::backup::verify_backup(&fs, &path).is_ok()
        }
        "config_toml" => std::str::from_utf8(input)
            .is_ok_and(|t| orbit_persistence_core::PersistenceConfig::from_toml_str(t).is_ok()),
        other => panic!("no decoder for target {other}"),
    }
}
