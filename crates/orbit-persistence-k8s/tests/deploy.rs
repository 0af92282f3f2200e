//! `deploy/` against the code: the golden files, the examples against the CRD's schema and as
//! typed objects, the rendered manifests as typed Kubernetes objects, and invalid examples
//! refused with the field named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use orbit_persistence_core::PersistenceConfig;
use orbit_persistence_k8s::render::{CONFIG_KEY, pod_config};
use orbit_persistence_k8s::{OrbitCluster, deploy, schema};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every `.yaml` under `dir`, by path relative to it.
fn yaml_files(dir: &Path, under: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, under, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            let relative = path
                .strip_prefix(under)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(relative, std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn deploy_matches_what_the_code_generates() {
    let generated = deploy::files().unwrap();
    let mut on_disk = BTreeMap::new();
    yaml_files(&deploy_dir(), &deploy_dir(), &mut on_disk);
    let fix =
        "regenerate with `cargo run -p orbit-persistence-cli --features k8s -- k8s deploy deploy`";
    assert_eq!(
        on_disk.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "the files of deploy/ differ: {fix}"
    );
    for (path, text) in &generated {
        assert!(
            on_disk[path] == *text,
            "deploy/{path} differs from what the code generates: {fix}"
        );
    }
}

/// The documents of a YAML stream.
fn documents(yaml: &str) -> Vec<serde_json::Value> {
    yaml.split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).unwrap())
        .collect()
}

#[test]
fn every_example_validates_and_renders_to_typed_objects_whose_config_round_trips() {
    for backend in deploy::BACKENDS {
        let name = backend.as_str();
        let text =
            std::fs::read_to_string(deploy_dir().join(format!("examples/{name}.yaml"))).unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        schema::check(&doc).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        let cluster = schema::parse(&text).unwrap();
        assert_eq!(cluster.spec.persistence.backend, backend);

        let rendered =
            std::fs::read_to_string(deploy_dir().join(format!("rendered/{name}.yaml"))).unwrap();
        let mut kinds = Vec::new();
        let mut claims = 0;
        for doc in documents(&rendered) {
            let kind = doc["kind"].as_str().unwrap().to_string();
            match kind.as_str() {
                "StorageClass" => {
                    serde_json::from_value::<StorageClass>(doc).unwrap();
                }
                "ConfigMap" => {
                    let map: ConfigMap = serde_json::from_value(doc).unwrap();
                    let toml = &map.data.as_ref().unwrap()[CONFIG_KEY];
                    let read = PersistenceConfig::from_toml_str(toml).unwrap();
                    assert_eq!(read, pod_config(&cluster.spec.persistence), "{name}");
                    // The examples spell out their config: the pod reads exactly it.
                    assert_eq!(read, cluster.spec.persistence, "{name}");
                }
                "Service" => {
                    let service: Service = serde_json::from_value(doc).unwrap();
                    let spec = service.spec.unwrap();
                    assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
                }
                "StatefulSet" => {
                    let set: StatefulSet = serde_json::from_value(doc).unwrap();
                    claims = set
                        .spec
                        .unwrap()
                        .volume_claim_templates
                        .map_or(0, |c| c.len());
                }
                other => panic!("{name}: unexpected kind {other}"),
            }
            kinds.push(kind);
        }
        let disk = cluster.spec.persistence.data_dir().is_some();
        let mut want = vec!["ConfigMap", "Service", "StatefulSet"];
        if disk {
            want.insert(0, "StorageClass");
        }
        assert_eq!(kinds, want, "{name}");
        assert_eq!(
            claims,
            usize::from(disk),
            "{name}: one data claim iff a disk backend"
        );
    }
}

/// `example` with `edit` applied to its YAML as JSON.
fn edited(backend: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let text =
        std::fs::read_to_string(deploy_dir().join(format!("examples/{backend}.yaml"))).unwrap();
    let mut doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    edit(&mut doc);
    serde_saphyr::to_string(&doc).unwrap()
}

#[test]
fn an_invalid_example_is_refused_naming_the_field() {
    let cases: Vec<(String, &str)> = vec![
        (
            edited("lsm_tree", |d| {
                d["spec"]["persistence"]["backend"] = "mongodb".into()
            }),
            "spec.persistence.backend",
        ),
        (
            edited("lsm_tree", |d| {
                d["spec"]["persistence"]["lsm_tree"]["memtable_sise"] = 1.into()
            }),
            "spec.persistence.lsm_tree",
        ),
        (
            edited("cow_btree", |d| d["spec"]["storage"]["sise"] = "1Gi".into()),
            "spec.storage",
        ),
        (
            edited("lsm_tree", |d| {
                d["spec"]["persistence"]["lsm_tree"]["bloom_filter_fp_rate"] = 1.5.into()
            }),
            "spec.persistence.lsm_tree.bloom_filter_fp_rate",
        ),
        (
            edited("lsm_tree", |d| {
                d["spec"]["persistence"]["lsm_tree"]["sync"] = "sometimes".into()
            }),
            "spec.persistence.lsm_tree.sync",
        ),
        (
            edited("rocksdb", |d| d["spec"]["replicas"] = 3.into()),
            "spec.replicas",
        ),
        (
            edited("cow_btree", |d| {
                d["spec"]["storage"]["accessMode"] = "ReadWriteMany".into()
            }),
            "spec.storage.accessMode",
        ),
        (
            edited("etcd", |d| {
                d["spec"]["persistence"]["etcd"]["endpoints"] = serde_json::json!([])
            }),
            "spec.persistence.etcd.endpoints",
        ),
    ];
    for (yaml, field) in cases {
        let err = schema::parse(&yaml).expect_err(field).to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    // The valid example is accepted: each case fails for its edit alone.
    let fine = edited("etcd", |_| {});
    let cluster: OrbitCluster = schema::parse(&fine).unwrap();
    assert_eq!(
        cluster.spec.replicas, 3,
        "etcd shares one directory across pods"
    );
}

#[test]
fn the_dockerfile_builds_the_image_the_operator_deployment_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let deployment = deploy::operator_deployment();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(deploy::operator_image().as_str())
    );
    assert!(
        deploy::operator_image().ends_with(env!("CARGO_PKG_VERSION")),
        "the image is tagged with this version"
    );
    // The binary with the operator in it, started as the command the Deployment gives.
    assert!(dockerfile.contains("-p orbit-persistence-cli --features k8s"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/orbit-persistence\"]"));
    assert_eq!(&container.args.as_ref().unwrap()[..2], ["k8s", "operator"]);
    // The user the pod's securityContext runs as.
    let security = pod.security_context.unwrap();
    let user = format!(
        "USER {}:{}",
        security.run_as_user.unwrap(),
        security.run_as_group.unwrap()
    );
    assert!(dockerfile.contains(&user), "the Dockerfile needs `{user}`");
    assert_eq!(security.run_as_non_root, Some(true));
    // The README's install steps build and push exactly that image.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for step in ["docker build -t", "docker push"] {
        assert!(
            readme.contains(&format!("{step} {}", deploy::operator_image())),
            "README: `{step} {}`",
            deploy::operator_image()
        );
    }
}

#[test]
fn the_prometheus_rule_holds_exactly_the_rules_of_the_plain_rule_file() {
    let files = deploy::monitoring_files().unwrap();
    let plain: serde_json::Value =
        serde_saphyr::from_str(&files["monitoring/alerts.yaml"]).unwrap();
    let rule: serde_json::Value =
        serde_saphyr::from_str(&files["monitoring/prometheus-rule.yaml"]).unwrap();
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["spec"]["groups"], plain["groups"]);
    let names: Vec<&str> = plain["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        orbit_persistence_core::exposition::alerts()
            .iter()
            .map(|a| a.name)
            .collect::<Vec<_>>()
    );
}
