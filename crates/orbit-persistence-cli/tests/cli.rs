//! The binary as a subprocess: exit codes, messages that name the bad field, and the commands
//! against a store written through the library.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orbit_persistence::{
    AddressableLease, AddressableReference, Clock, Key, NodeId, PersistenceConfig, SystemClock,
};

use support::{check_store_commands, cli, live_and_short, store_through_library, text};

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("persistence.toml");
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn config_check_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "backend = \"lsm_tree\"\n");
    let out = cli(&["config", "check", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("backend = \"lsm_tree\""), "{printed}");
    assert!(
        printed.contains("memtable_size = "),
        "defaults filled in: {printed}"
    );
    // What it prints reads back as the same config.
    let back = PersistenceConfig::from_toml_str(&printed).unwrap();
    assert_eq!(
        back.lsm_tree_or_default(),
        PersistenceConfig::from_path(&file)
            .unwrap()
            .lsm_tree_or_default()
    );
}

#[test]
fn a_bad_config_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (body, field) in [
        (
            "backend = \"lsm_tree\"\n[lsm_tree]\nbloom_filter_fp_rate = 1.5\n",
            "lsm_tree.bloom_filter_fp_rate",
        ),
        (
            "backend = \"cow_btree\"\n[cow_btree]\npage_sise = 4096\n",
            "page_sise",
        ),
        ("backend = \"mongodb\"\n", "backend"),
    ] {
        let file = write_config(dir.path(), body);
        for args in [
            vec!["config", "check", &file],
            vec!["stats", "--config", &file],
        ] {
            let out = cli(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?} {body}");
            let err = text(&out.stderr);
            assert!(err.contains(field), "{args:?}: {err}");
        }
    }
    let out = cli(&["config", "check", "/nonexistent/persistence.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = cli(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn stats_get_list_node_and_cleanup_operate_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("leases");
    let file = write_config(
        dir.path(),
        &format!("backend = \"cow_btree\"\n[cow_btree]\ndata_dir = {data:?}\n"),
    );
    let [live, short] = live_and_short();
    store_through_library(&file, &[live.clone(), short.clone()]);

    let out = cli(&["dump", "--config", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dumped: Vec<AddressableLease> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut refs: Vec<_> = dumped.iter().map(|l| l.reference.clone()).collect();
    refs.sort();
    let mut want = vec![live.reference.clone(), short.reference.clone()];
    want.sort();
    assert_eq!(refs, want);

    assert_eq!(check_store_commands(&file).reference, live.reference);

    let config = PersistenceConfig::from_path(&file).unwrap();
    // A store held open elsewhere: exit 3, and the message says it is locked.
    let held = orbit_persistence::open(&config, Arc::new(SystemClock)).unwrap();
    let out = cli(&["stats", "--config", &file]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("locked"),
        "{}",
        text(&out.stderr)
    );
    drop(held);
}

#[test]
fn verify_finds_a_flipped_byte_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("lsm");
    let file = write_config(
        dir.path(),
        &format!(
            "backend = \"lsm_tree\"\n[lsm_tree]\ndata_dir = {data:?}\nmemtable_size = 65536\nblock_size = 1024\n"
        ),
    );
    let config = PersistenceConfig::from_path(&file).unwrap();
    let now = SystemClock.now();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = orbit_persistence::open(&config, Arc::new(SystemClock)).unwrap();
        let leases: Vec<_> = (0..2_000)
            .map(|i| {
                AddressableLease::new(
                    AddressableReference::new("Greeter", Key::string(format!("key-{i:05}"))),
                    NodeId::new(format!("node-{}", i % 10), "prod"),
                    now.saturating_add(Duration::from_secs(3600)),
                    now.saturating_add(Duration::from_secs(1800)),
                )
            })
            .collect();
        for chunk in leases.chunks(200) {
            store.store_leases(chunk).await.unwrap();
        }
        store.shutdown().await.unwrap();
    });
    let out = cli(&["verify", "--config", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["leases"], 2_000, "{report}");
    let out = cli(&["dump", "--config", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2_000);
    assert!(report["files_checked"].as_u64().unwrap() >= 1, "{report}");

    // Flip a byte inside the first data block of the biggest table.
    let table = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a table");
    let mut bytes = std::fs::read(&table).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&table, bytes).unwrap();
    let out = cli(&["verify", "--config", &file]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].to_string();
    let name = table.file_name().unwrap().to_str().unwrap();
    assert!(
        problems.contains(name) && problems.contains("offset"),
        "{problems}"
    );
}
