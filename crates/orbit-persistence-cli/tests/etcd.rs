//! The binary on the etcd backend (feature `etcd`), against a real single-member etcd on
//! loopback: the store commands on an etcd config, and `bench --etcd-endpoints`, which must
//! give etcd a figure on every phase but the space rows and leave nothing in the cluster (but
//! each directory's removal-cause key).
#![cfg(feature = "etcd")]

mod support;

use std::path::Path;

use orbit_persistence_etcd::local_cluster::LocalCluster;

use support::{check_store_commands, cli, live_and_short, store_through_library, text};

fn etcd_config(dir: &Path, endpoint: &str) -> String {
    let path = dir.join("persistence.toml");
    let body = format!(
        "backend = \"etcd\"\n[etcd]\nendpoints = [{endpoint:?}]\nkey_prefix = \"/cli-test/\"\n\
         connect_timeout_ms = 3000\nrequest_timeout_ms = 3000\n"
    );
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

/// Every key in the cluster, whoever wrote it, but a directory's removal-cause key (the one
/// key a directory keeps once it has removed a lease: why it removed the last one, for the
/// change feed).
fn keys_in(endpoint: &str) -> usize {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        let all = etcd_client::GetOptions::new()
            .with_all_keys()
            .with_keys_only();
        let response = client.get("", Some(all)).await.unwrap();
        response
            .kvs()
            .iter()
            .filter(|kv| !kv.key().ends_with(b"/K"))
            .count()
    })
}

#[test]
fn stats_get_list_node_and_cleanup_operate_a_store_on_etcd() {
    let cluster = LocalCluster::single().unwrap();
    let endpoint = cluster.endpoint(0);
    let dir = tempfile::tempdir().unwrap();
    let file = etcd_config(dir.path(), &endpoint);
    store_through_library(&file, &live_and_short());
    let live = check_store_commands(&file);
    assert!(live.revision > 0, "etcd's mod revision: {live:?}");

    // dump and verify read a local data directory: a usage error that says so.
    for command in ["dump", "verify"] {
        let out = cli(&[command, "--config", &file]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        assert!(
            text(&out.stderr).contains("local data directory"),
            "{command}"
        );
    }

    // The cluster gone: stats prints the health naming the endpoint and exits 3; get fails
    // with Unavailable within the timeouts, not a hang.
    drop(cluster);
    let out = cli(&["stats", "--config", &file]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        stats["health"]["Unhealthy"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&endpoint)),
        "{stats}"
    );
    let out = cli(&["get", "--config", &file, "Greeter", "alice"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("unavailable"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bench_runs_the_lease_workload_on_etcd_and_leaves_nothing_behind() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().to_str().unwrap();
    let tiny = [
        "-n",
        "2000",
        "--gets",
        "500",
        "--mixed-ops",
        "500",
        "--reps",
        "1",
        "--out",
        out,
    ];

    // etcd without a cluster is a usage error naming the flag.
    let run = cli(&[&["bench", "--only", "etcd"][..], &tiny].concat());
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("--etcd-endpoints"),
        "{}",
        text(&run.stderr)
    );

    let cluster = LocalCluster::single().unwrap();
    let endpoint = cluster.endpoint(0);
    let run = cli(&[
        &[
            "bench",
            "--only",
            "memory,etcd",
            "--etcd-endpoints",
            &endpoint,
        ][..],
        &tiny,
    ]
    .concat());
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["subjects"], serde_json::json!(["memory", "etcd"]));
    let mut rows = 0;
    for row in json["rows"].as_array().unwrap() {
        let phase = row["phase"].as_str().unwrap();
        let etcd = &row["values"][1];
        if phase.starts_with("space") {
            assert!(
                etcd.is_null(),
                "{phase}: etcd has no local directory, got {etcd}"
            );
        } else if phase.starts_with("restore") || phase.starts_with("live migration") {
            // etcd cannot keep a restored or migrated lease's revision.
            assert!(etcd.is_null(), "{phase}: etcd has {etcd}");
        } else {
            // The kill -9 row too: its child's acknowledged writes were read back.
            assert!(
                etcd.as_f64()
                    .is_some_and(|x| x > 0.0 || phase.contains("p50")),
                "{phase}: etcd has {etcd}"
            );
            rows += 1;
        }
    }
    assert!(rows >= 20, "{rows} rows");
    assert_eq!(
        keys_in(&endpoint),
        0,
        "the run's leases are removed at the end"
    );
}
