//! `orbit-persistence bench` as a subprocess, at a tiny size: it writes the table, the JSON
//! and the charts, every subject gets a value on every phase that applies to it, and the kill -9
//! phase really starts and kills its child.

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orbit-persistence"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run the binary")
}

#[test]
fn quick_bench_writes_the_table_the_json_and_the_charts() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().to_str().unwrap();
    // A work directory that does not exist yet is created, like the output directory.
    let work = out_dir.path().join("stores").join("nested");
    let run = bench(&[
        "--work-dir",
        work.to_str().unwrap(),
        "--quick",
        "-n",
        "2000",
        "--gets",
        "2000",
        "--mixed-ops",
        "2000",
        "--reps",
        "1",
        "--out",
        out,
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "the run's stores are removed: {left:?}");
    // Not a terminal: no progress bars, only the closing line.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let md = std::fs::read_to_string(out_dir.path().join("report.md")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        md,
        "stdout is the table"
    );
    for phase in [
        "bulk_load",
        "durable_renew 64 tasks p99",
        "get 2 tasks",
        "list_node",
        "cleanup (",
        "mixed 90/10",
        "reopen after clean shutdown",
        "reopen after kill -9",
        "space after cleanup",
    ] {
        assert!(md.contains(&format!("| {phase}")), "{phase} missing:\n{md}");
    }
    assert!(md.contains("| lsm_tree vs best peer |"), "{md}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("report.json")).unwrap())
            .unwrap();
    let subjects: Vec<&str> = json["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in [
        "memory",
        "cow_btree",
        "lsm_tree",
        "redb (peer)",
        "fjall (peer)",
    ] {
        assert!(subjects.contains(&s), "{s} missing from {subjects:?}");
    }
    assert_eq!(json["n"], 2000);
    assert!(json["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert!(json["floor_append_per_s"].as_f64().unwrap() > 0.0);
    // Every durable subject has a positive figure on every row; the memory backend has none
    // where the phase needs a disk, a peer none where it needs a change feed.
    for row in json["rows"].as_array().unwrap() {
        let phase = row["phase"].as_str().unwrap();
        for (i, v) in row["values"].as_array().unwrap().iter().enumerate() {
            let peer = subjects[i].ends_with("(peer)");
            if subjects[i] == "memory"
                && (phase.starts_with("space")
                    || phase.starts_with("reopen")
                    || phase.starts_with("durable_renew"))
            {
                assert!(v.is_null(), "{phase}: memory has {v}");
            } else if peer
                && (phase.starts_with("watch")
                    || phase.starts_with("backup")
                    || phase.starts_with("restore")
                    || phase.starts_with("live migration")
                    || phase.contains("during backups"))
            {
                assert!(
                    v.is_null(),
                    "{phase}: the peer {} has a feed, a backup or a migration: {v}",
                    subjects[i]
                );
            } else {
                assert!(
                    v.as_f64().is_some_and(|x| x > 0.0 || phase.contains("p50")),
                    "{phase}: {} has {v}",
                    subjects[i]
                );
            }
        }
    }

    for (chart, must_name) in [
        ("throughput.svg", "bulk_load (leases/s, higher is better)"),
        (
            "costs.svg",
            "reopen after clean shutdown (ms, lower is better)",
        ),
        ("durable_renew.svg", "concurrent tasks"),
    ] {
        let svg = std::fs::read_to_string(out_dir.path().join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
        assert!(svg.contains(must_name), "{chart} lacks {must_name:?}");
        assert!(
            svg.contains("lsm_tree") && svg.contains("fjall (peer)"),
            "{chart}: labels"
        );
    }
}

#[test]
fn bench_rejects_an_unknown_subject_and_a_tiny_n() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().to_str().unwrap();
    let run = bench(&["--only", "lsm_tree,nope", "--out", out]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("\"nope\"") && stderr.contains("redb"),
        "{stderr}"
    );
    let run = bench(&["-n", "10", "--out", out]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("at least 1000"));
}
