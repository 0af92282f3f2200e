//! The binary as a subprocess: exit codes, messages that name the bad field, and the commands
//! against a store written through the library.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orbit_persistence::{
    AddressableLease, AddressableReference, Clock, Key, NodeId, PersistenceConfig, SystemClock,
};

use orbit_persistence_conformance::corruption::{contents, copy_dir};
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

/// A store operated by the commands must exist: nothing is created to find out that it does
/// not, and a config that could only show an empty store is refused with a hint.
#[test]
fn store_commands_refuse_a_missing_dir_the_memory_backend_and_no_config() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not").join("there");
    let file = write_config(
        dir.path(),
        &format!("backend = \"lsm_tree\"\n[lsm_tree]\ndata_dir = {missing:?}\n"),
    );
    for command in ["stats", "dump", "verify", "cleanup"] {
        let out = cli(&[command, "--config", &file]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        let err = text(&out.stderr);
        assert!(
            err.contains("does not exist") && err.contains("not/there"),
            "{command}: {err}"
        );
    }
    let out = cli(&["get", "--config", &file, "Greeter", "alice"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !dir.path().join("not").exists(),
        "a command created the dir"
    );

    let memory = write_config(dir.path(), "backend = \"memory\"\n");
    let out = cli(&["stats", "--config", &memory]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("memory backend"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["list-node", "node-1", "--namespace", "prod"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--config"),
        "{}",
        text(&out.stderr)
    );
}

/// The binary with stdout (or stderr) a pipe whose reader is already gone, as under
/// `| head -1` once head has its line.
fn with_closed(args: &[&str], stream: &str) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_orbit-persistence"))
        .args(args)
        .env_remove("ORBIT_PERSISTENCE_BACKEND")
        .env_remove("ORBIT_PERSISTENCE_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    match stream {
        "stdout" => drop(child.stdout.take()),
        _ => drop(child.stderr.take()),
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_reader_that_goes_away_is_no_panic_and_messages_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "backend = \"cow_btree\"\n[cow_btree]\ndata_dir = \"leases\"\n",
    );
    let [live, short] = live_and_short();
    store_through_library(&file, &[live, short]);
    // The relative data_dir is the config file's neighbour, wherever the command runs.
    assert!(dir.path().join("leases").join("pages.cow").exists());

    let mut commands = inspection_commands(&file);
    commands.push(vec!["config", "check", &file]);
    for args in commands {
        let out = with_closed(&args, "stdout");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).contains("panicked"), "{args:?}");
    }
    // A message to a closed stderr: the exit code still says what happened.
    let out = with_closed(&["get", "--config", &file, "Greeter", "bob"], "stderr");
    assert_eq!(out.status.code(), Some(1));

    let out = cli(&["get", "--config", &file, "Greeter", "bob"]);
    assert!(
        text(&out.stderr).contains(r#"no lease for Greeter "bob""#),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&[
        "get",
        "--config",
        &file,
        "Greeter",
        "x",
        "--key-kind",
        "none",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("takes no KEY"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["list-node", "--config", &file, "node-1"]);
    assert_eq!(out.status.code(), Some(2), "a node without its namespace");
    assert!(
        text(&out.stderr).contains("--namespace"),
        "{}",
        text(&out.stderr)
    );
}

/// What recovery did is shown: a crash image (the directory copied while the store is open)
/// replays its WAL, and the same image with its last bytes torn has them cut; both are
/// reported by `stats` and `verify`, which still exit 0.
#[test]
fn stats_and_verify_report_what_recovery_did() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    let file = crash_image(dir.path(), "cow_btree", &image);
    let torn_copy = dir.path().join("torn");
    copy_dir(&image, &torn_copy);

    let out = cli(&["stats", "--config", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        stats["recovery"]["actions"][0]["action"], "replayed",
        "{stats}"
    );
    assert_eq!(stats["metrics"]["recovery_actions"], 1, "{stats}");
    // stats opened it read-only: the WAL is still to replay. A writing command recovers it
    // for good and closes it cleanly; then there is nothing to report.
    let out = cli(&["stats", "--config", &file]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        stats["recovery"]["actions"][0]["action"], "replayed",
        "{stats}"
    );
    let out = cli(&["cleanup", "--config", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = cli(&["stats", "--config", &file]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        stats["recovery"]["actions"],
        serde_json::json!([]),
        "{stats}"
    );

    // Tear the WAL's last record: cut, and said so.
    let wal = std::fs::read_dir(&torn_copy)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let torn = write_config(
        dir.path(),
        &format!("backend = \"cow_btree\"\n[cow_btree]\ndata_dir = {torn_copy:?}\n"),
    );
    let out = cli(&["verify", "--config", &torn]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions = report["recovery"]["actions"].to_string();
    assert!(
        actions.contains("tail_cut") && actions.contains(".log"),
        "{report}"
    );
    assert_eq!(
        report["leases"], 0,
        "the one record was the torn one: {report}"
    );
}

/// A crash image of a `backend` store holding [`live_and_short`] in `image` (its directory
/// copied while the store is open, under `dir`); returns the path of a config file for it.
fn crash_image(dir: &Path, backend: &str, image: &Path) -> String {
    let live_dir = dir.join(format!("{backend}-live"));
    let config = PersistenceConfig::from_toml_str(&format!(
        "backend = \"{backend}\"\n[{backend}]\ndata_dir = {live_dir:?}\n"
    ))
    .unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = orbit_persistence::open(&config, Arc::new(SystemClock)).unwrap();
        let [live, short] = live_and_short();
        store.store_leases(&[live, short]).await.unwrap();
        copy_dir(&live_dir, image);
        store.shutdown().await.unwrap();
    });
    write_config(
        dir,
        &format!("backend = \"{backend}\"\n[{backend}]\ndata_dir = {image:?}\n"),
    )
}

/// The inspection commands, on the store of [`live_and_short`] that config `file` describes:
/// each must exit 0 and change no byte.
fn inspection_commands(file: &str) -> Vec<Vec<&str>> {
    vec![
        vec!["stats", "--config", file],
        vec!["get", "--config", file, "Greeter", "alice"],
        vec![
            "list-node",
            "--config",
            file,
            "node-1",
            "--namespace",
            "prod",
        ],
        vec!["dump", "--config", file],
        vec!["verify", "--config", file],
    ]
}

/// Inspection changes no byte (docs/reliability.md row J): `stats`, `get`, `list-node`, `dump` and
/// `verify` on a crash image of each of our engines, whose WAL recovery must replay, leave
/// every file as it was.
#[test]
fn inspection_commands_change_no_byte_of_a_crash_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut backends = vec!["cow_btree", "lsm_tree"];
    if cfg!(feature = "rocksdb") {
        backends.push("rocksdb");
    }
    for backend in backends {
        let image = dir.path().join(format!("{backend}-image"));
        let file = crash_image(dir.path(), backend, &image);
        let before = contents(&image);
        for args in inspection_commands(&file) {
            let out = cli(&args);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{backend} {args:?}: {}",
                text(&out.stderr)
            );
            assert!(
                contents(&image) == before,
                "{backend}: {args:?} changed the data directory"
            );
        }
        // `cleanup` writes, as it must: the files change.
        let out = cli(&["cleanup", "--config", &file]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            contents(&image) != before,
            "{backend}: cleanup wrote nothing"
        );
    }
}

/// Inspection on a full disk (docs/reliability.md row J): a crash image on a tmpfs filled to its
/// last byte; every inspection command exits 0 with what it read, and no file changes. Needs
/// root to mount, as CI has.
#[test]
fn inspection_works_on_a_full_disk() {
    use std::process::Command;
    // SAFETY: geteuid has no preconditions.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    if unsafe { geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    crash_image(dir.path(), "lsm_tree", &image);
    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&full)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs");
    let data = full.join("data");
    copy_dir(&image, &data);
    let file = write_config(
        dir.path(),
        &format!("backend = \"lsm_tree\"\n[lsm_tree]\ndata_dir = {data:?}\n"),
    );
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(full.join("filler")).unwrap();
        for size in [64 << 10, 512, 1] {
            while filler.write_all(&vec![0xAA; size]).is_ok() {}
        }
    }
    let before = contents(&data);
    let outcomes: Vec<_> = inspection_commands(&file)
        .into_iter()
        .map(|args| {
            let out = cli(&args);
            (
                args[0],
                out.status.code(),
                text(&out.stdout),
                text(&out.stderr),
            )
        })
        .collect();
    let after = contents(&data);
    let _ = Command::new("umount").arg(&full).status();
    for (command, code, stdout, stderr) in outcomes {
        assert_eq!(code, Some(0), "{command} on a full disk: {stderr}");
        assert!(!stdout.is_empty(), "{command} printed nothing");
    }
    assert!(after == before, "inspection changed files on the full disk");
}

#[test]
fn backup_verify_restore_and_migrate_round_trip_and_refuse_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let config_of = |name: &str, backend: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        let data = dir.path().join(name);
        std::fs::write(
            &path,
            format!("backend = \"{backend}\"\n[{backend}]\ndata_dir = {data:?}\n"),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let source = config_of("source", "cow_btree");
    let [live, short] = live_and_short();
    store_through_library(&source, &[live, short]);
    let dumped = |file: &str| text(&cli(&["dump", "--config", file]).stdout);

    let backup = dir.path().join("store.orbak");
    let backup = backup.to_str().unwrap();
    let out = cli(&["backup", "--config", &source, backup]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["leases"], 2, "{summary}");
    // A backup never replaces a file.
    assert_eq!(
        cli(&["backup", "--config", &source, backup]).status.code(),
        Some(2)
    );

    let out = cli(&["verify-backup", backup]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let verified: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verified, summary);

    let restored = config_of("restored", "lsm_tree");
    let out = cli(&["restore", backup, "--config", &restored]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(dumped(&restored), dumped(&source));
    // Into the same, now non-empty, directory: refused.
    assert_eq!(
        cli(&["restore", backup, "--config", &restored])
            .status
            .code(),
        Some(2)
    );

    let migrated = config_of("migrated", "cow_btree");
    let out = cli(&["migrate", "--from", &restored, "--to", &migrated]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["copied_leases"], 2, "{report}");
    assert_eq!(dumped(&migrated), dumped(&source));
    // The old config follows the migration; a second one into the same place is refused.
    assert_eq!(dumped(&restored), dumped(&source));
    assert_eq!(
        cli(&["migrate", "--from", &restored, "--to", &migrated])
            .status
            .code(),
        Some(2)
    );

    // A flipped byte: exit 3 naming the offset, and restore creates nothing.
    let mut bytes = std::fs::read(backup).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let bad = dir.path().join("bad.orbak");
    std::fs::write(&bad, &bytes).unwrap();
    let bad = bad.to_str().unwrap();
    let out = cli(&["verify-backup", bad]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("offset"),
        "{}",
        text(&out.stderr)
    );
    let nothing = config_of("nothing", "lsm_tree");
    assert_eq!(
        cli(&["restore", bad, "--config", &nothing]).status.code(),
        Some(3)
    );
    assert!(!dir.path().join("nothing").exists());
}

#[test]
fn serve_metrics_serves_a_stores_metrics_and_health_until_sigterm() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("leases");
    let file = write_config(
        dir.path(),
        &format!("backend = \"cow_btree\"\n[cow_btree]\ndata_dir = {data:?}\n"),
    );
    support::store_through_library(&file, &support::live_and_short());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orbit-persistence"))
        .args(["serve-metrics", "--config", &file, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, metrics) = support::first_answer(port, "/metrics").expect("no /metrics");
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("orbit_persistence_leases{backend=\"cow_btree\"} 2\n"),
        "{metrics}"
    );
    let (code, health) = support::http_get(port, "/healthz").unwrap();
    assert_eq!((code, health.trim()), (200, r#"{"status":"healthy"}"#));

    let (status, _) = support::terminate(&mut child).expect("still serving 5 s after SIGTERM");
    assert!(status.success(), "{status:?}");
    // Closed cleanly: the next open has nothing to repair.
    let out = cli(&["stats", "--config", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["metrics"]["lease_count"], 2);
    assert_eq!(stats["metrics"]["recovery_actions"], 0, "{stats}");
}
