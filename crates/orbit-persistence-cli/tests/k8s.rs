//! `orbit-persistence k8s` (feature `k8s`) as a subprocess: the CRD, rendering the examples of
//! `deploy/` to exactly the checked-in manifests, and a bad cluster refused naming the field.
#![cfg(feature = "k8s")]

mod support;

use std::path::{Path, PathBuf};

use support::{cli, first_answer, http_get, terminate};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

#[test]
fn crd_prints_the_orbit_cluster_definition() {
    let out = cli(&["k8s", "crd"]);
    assert_eq!(out.status.code(), Some(0));
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("kind: CustomResourceDefinition"), "{yaml}");
    assert!(
        yaml.contains("name: orbitclusters.orbit-persistence.io"),
        "{yaml}"
    );
}

#[test]
fn render_prints_what_deploy_holds_and_refuses_a_bad_field() {
    for backend in ["memory", "cow_btree", "lsm_tree", "rocksdb", "etcd"] {
        let example = deploy(&format!("examples/{backend}.yaml"));
        let out = cli(&["k8s", "render", example.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = std::fs::read_to_string(deploy(&format!("rendered/{backend}.yaml"))).unwrap();
        let body = want.split_once('\n').unwrap().1;
        assert_eq!(String::from_utf8(out.stdout).unwrap(), body, "{backend}");
    }

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(deploy("examples/cow_btree.yaml")).unwrap();
    std::fs::write(&bad, text.replace("page_size: 4096", "page_size: 3000")).unwrap();
    let out = cli(&["k8s", "render", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.persistence.cow_btree.page_size"),
        "{err}"
    );
}

#[test]
fn the_operator_answers_probes_and_stops_within_a_second_on_sigterm() {
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    // An API server that refuses every connection: the operator runs, but is not ready.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n\
         contexts: [{name: c, context: {cluster: c, user: u, namespace: orbit-test}}]\n\
         users: [{name: u, user: {}}]\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("operator.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_orbit-persistence"))
        .args(["k8s", "operator", "--identity", "test-0", "--probe-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let health =
        first_answer(port, "/healthz").unwrap_or_else(|| panic!("no /healthz: {}", logs()));
    assert_eq!(health.0, 200, "{health:?}");
    let ready = http_get(port, "/readyz").unwrap();
    assert_eq!(
        ready.0, 503,
        "no API server answered: not ready ({ready:?})"
    );

    let (status, took) = terminate(&mut child)
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM: {}", logs()));
    assert!(status.success(), "{status:?}: {}", logs());
    assert!(took < Duration::from_secs(1), "stopped after {took:?}");
    assert!(logs().contains("SIGTERM"), "{}", logs());
    // The election's Lease namespace came from the kubeconfig's context.
    assert!(
        logs().contains("orbit-test/orbit-persistence-operator"),
        "{}",
        logs()
    );
}

#[test]
fn the_operator_deployment_runs_a_command_this_binary_accepts() {
    let deployment = orbit_persistence_k8s::deploy::operator_deployment();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let mut args = pod.containers[0].args.clone().unwrap();
    // clap checks every argument before it answers --help: an unknown flag or a bad value
    // exits 2 instead.
    args.push("--help".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("--lease-name"));
}
