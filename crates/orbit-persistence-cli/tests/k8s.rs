//! `orbit-persistence k8s` (feature `k8s`) as a subprocess: the CRD, rendering the examples of
//! `deploy/` to exactly the checked-in manifests, and a bad cluster refused naming the field.
#![cfg(feature = "k8s")]

mod support;

use std::path::{Path, PathBuf};

use support::cli;

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
