//! The operator's main loop against a fake API server (tests/support): a cluster is applied
//! and followed, shutdown is quick and hands the lease over, two replicas never reconcile at
//! once, and the generated RBAC allows exactly the requests the operator makes.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use orbit_persistence_core::BackendType;
use orbit_persistence_k8s::leader::ElectionConfig;
use orbit_persistence_k8s::operator::{OperatorConfig, OperatorError, run};
use orbit_persistence_k8s::reconcile::{Context, reconcile};
use orbit_persistence_k8s::{OrbitCluster, deploy};
use serde_json::Value;
use support::{Call, FakeApi};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CLUSTERS: &str = "/apis/orbit-persistence.io/v1alpha1/namespaces/orbit/orbitclusters";
const STATEFUL_SET: &str = "/apis/apps/v1/namespaces/orbit/statefulsets/lsm-tree";
const OPERATOR_NS: &str = "orbit-system";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/orbit-system/leases/orbit-op";
const WAIT: Duration = Duration::from_secs(20);

/// The example cluster of `backend` as the API server would hold it.
fn stored(backend: BackendType) -> OrbitCluster {
    let mut cluster = deploy::example(backend);
    cluster.metadata.uid = Some(format!("uid-of-{}", backend.as_str()));
    cluster.metadata.generation = Some(1);
    cluster
}

fn put_cluster(api: &FakeApi, cluster: &OrbitCluster) {
    let name = cluster.metadata.name.clone().unwrap();
    api.put(
        &format!("{CLUSTERS}/{name}"),
        serde_json::to_value(cluster).unwrap(),
    );
}

/// Short election timings, so a test sees takeovers within a second.
fn config(identity: &str) -> OperatorConfig {
    OperatorConfig {
        namespace: None,
        election: ElectionConfig {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(100),
            ..ElectionConfig::new("orbit-op", OPERATOR_NS, identity)
        },
        probe_addr: None,
    }
}

/// An operator replica named `identity`, and the sender that shuts it down.
fn start(
    api: &FakeApi,
    identity: &str,
) -> (JoinHandle<Result<(), OperatorError>>, oneshot::Sender<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(api.client(identity), config(identity), async {
        let _ = stopped.await;
    }));
    (task, stop)
}

/// Shuts a replica down; how long it took.
async fn shut_down(
    replica: (JoinHandle<Result<(), OperatorError>>, oneshot::Sender<()>),
) -> Duration {
    let (task, stop) = replica;
    let start = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the operator stops")
        .expect("the task")
        .expect("the operator ran");
    start.elapsed()
}

/// The applies (server-side apply, not status) `client` made, by path.
fn applies<'a>(calls: &'a [Call], client: &str) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| {
            c.client == client
                && c.method == Method::PATCH
                && c.content_type == "application/apply-patch+yaml"
                && !c.path.ends_with("/status")
        })
        .collect()
}

/// The image the tests change a cluster to.
const NEW_IMAGE: &str = "ghcr.io/orbit/orbit-node:0.2.0";

/// Whether `client` applied the StatefulSet with [`NEW_IMAGE`].
fn upgraded(calls: &[Call], client: &str) -> bool {
    applies(calls, client).iter().any(|c| {
        c.path == STATEFUL_SET
            && c.body["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE
    })
}

fn holder(api: &FakeApi) -> Value {
    api.get(LEASE)
        .map_or(Value::Null, |l| l["spec"]["holderIdentity"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_applies_a_cluster_follows_its_spec_and_stops_within_a_second() {
    let api = FakeApi::default();
    let mut cluster = stored(BackendType::LsmTree);
    put_cluster(&api, &cluster);
    let replica = start(&api, "a");

    let done = |calls: &[Call]| {
        applies(calls, "a").iter().any(|c| c.path == STATEFUL_SET)
            && calls
                .iter()
                .any(|c| c.path.ends_with("orbitclusters/lsm-tree/status"))
            && calls
                .iter()
                .any(|c| c.method == Method::POST && c.path.ends_with("/events"))
    };
    api.until(WAIT, done).await;
    let calls = api.calls();
    let first: Vec<&str> = applies(&calls, "a")
        .iter()
        .take(4)
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(
        first,
        [
            "/apis/storage.k8s.io/v1/storageclasses/orbit-lsm-tree-data",
            "/api/v1/namespaces/orbit/configmaps/lsm-tree-persistence",
            "/api/v1/namespaces/orbit/services/lsm-tree",
            STATEFUL_SET,
        ]
    );
    let status = api.get(&format!("{CLUSTERS}/lsm-tree")).unwrap()["status"].clone();
    assert_eq!(status["conditions"][1]["type"], "Applied");
    assert_eq!(status["conditions"][1]["status"], "True", "{status}");
    assert_eq!(holder(&api), "a");
    // The owned kinds are watched by the renderer's label, not all of them in the cluster.
    for kind in ["/apis/apps/v1/statefulsets", "/api/v1/configmaps"] {
        let watches: Vec<&Call> = calls.iter().filter(|c| c.path == kind).collect();
        assert!(!watches.is_empty());
        assert!(
            watches.iter().all(|c| c
                .query
                .contains("labelSelector=orbit-persistence.io%2Fbackend")),
            "{}",
            support::summary(&calls)
        );
    }
    let sts = api.get(STATEFUL_SET).unwrap();
    assert!(
        sts["metadata"]["labels"]["orbit-persistence.io/backend"].is_string(),
        "{sts}"
    );

    // The spec changes: the StatefulSet follows.
    cluster.spec.image = NEW_IMAGE.into();
    cluster.metadata.generation = Some(2);
    put_cluster(&api, &cluster);
    api.until(WAIT, |calls| upgraded(calls, "a")).await;
    assert_eq!(
        api.get(STATEFUL_SET).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"],
        NEW_IMAGE,
        "the fake holds the update"
    );

    let took = shut_down(replica).await;
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    assert!(
        holder(&api).is_null(),
        "the lease was released: {}",
        holder(&api)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_on_one_lease_only_the_leader_reconciles_and_the_other_takes_over() {
    let api = FakeApi::default();
    put_cluster(&api, &stored(BackendType::LsmTree));
    let a = start(&api, "a");
    let a_applied = |calls: &[Call]| applies(calls, "a").iter().any(|c| c.path == STATEFUL_SET);
    api.until(WAIT, a_applied).await;

    let b = start(&api, "b");
    // Ten retry periods of b's: it reads the lease, and stands by.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = api.calls();
    let by_b: Vec<&Call> = calls.iter().filter(|c| c.client == "b").collect();
    assert!(by_b.len() >= 5, "b takes part in the election: {by_b:#?}");
    assert!(
        by_b.iter().all(|c| c.path == LEASE),
        "a standby touches nothing but the lease: {by_b:#?}"
    );
    assert_eq!(holder(&api), "a");

    // a shuts down and hands over: b leads and reconciles, well before the lease would
    // have expired.
    let handed_over = Instant::now();
    shut_down(a).await;
    let b_applied = |calls: &[Call]| applies(calls, "b").iter().any(|c| c.path == STATEFUL_SET);
    api.until(WAIT, b_applied).await;
    assert!(
        handed_over.elapsed() < Duration::from_secs(3),
        "took over in {:?}",
        handed_over.elapsed()
    );
    assert_eq!(holder(&api), "b");
    let calls = api.calls();
    let after: Vec<&Call> = calls
        .iter()
        .skip_while(|c| !(c.client == "b" && c.path == STATEFUL_SET))
        .filter(|c| c.client == "a")
        .collect();
    assert!(after.is_empty(), "a made requests after b led: {after:#?}");
    shut_down(b).await;
}

/// The rules of `kind` (ClusterRole or Role) in the generated `deploy/operator/10-rbac.yaml`:
/// (group, resource, verb).
fn generated_rules(kind: &str) -> BTreeSet<(String, String, String)> {
    let files = deploy::operator_files().unwrap();
    let yaml = &files["operator/10-rbac.yaml"];
    let mut rules = BTreeSet::new();
    for doc in yaml.split("\n---\n") {
        let doc: Value = serde_saphyr::from_str(doc).unwrap();
        if doc["kind"] != kind {
            continue;
        }
        for rule in doc["rules"].as_array().unwrap() {
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        rules.insert((
                            group.as_str().unwrap().to_string(),
                            resource.as_str().unwrap().to_string(),
                            verb.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    rules
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_rbac_allows_every_request_the_operator_makes_and_nothing_else() {
    let api = FakeApi::default();
    let mut valid = stored(BackendType::LsmTree);
    put_cluster(&api, &valid);
    let mut invalid = stored(BackendType::Memory);
    invalid
        .spec
        .persistence
        .memory
        .as_mut()
        .unwrap()
        .max_entries = Some(0);
    put_cluster(&api, &invalid);

    // Everything the operator does: elect, watch, apply, report, follow a change, hand over.
    let a = start(&api, "a");
    let seen = |calls: &[Call]| {
        applies(calls, "a").iter().any(|c| c.path == STATEFUL_SET)
            && calls
                .iter()
                .any(|c| c.path.ends_with("orbitclusters/memory/status"))
    };
    api.until(WAIT, seen).await;
    let b = start(&api, "b");
    valid.spec.image = NEW_IMAGE.into();
    valid.metadata.generation = Some(2);
    put_cluster(&api, &valid);
    api.until(WAIT, |calls| upgraded(calls, "a")).await;
    shut_down(a).await;
    let b_applied = |calls: &[Call]| applies(calls, "b").iter().any(|c| c.path == STATEFUL_SET);
    api.until(WAIT, b_applied).await;
    shut_down(b).await;
    // A repeated Event is a patch of the first (its count): the reconciler twice on one
    // unchanged cluster.
    let ctx = Arc::new(Context::new(api.client("direct"), None));
    let cluster: OrbitCluster =
        serde_json::from_value(api.get(&format!("{CLUSTERS}/lsm-tree")).unwrap()).unwrap();
    let cluster = Arc::new(cluster);
    reconcile(cluster.clone(), ctx.clone()).await.unwrap();
    reconcile(cluster, ctx).await.unwrap();

    let cluster_rules = generated_rules("ClusterRole");
    let role_rules = generated_rules("Role");
    let mut used = BTreeSet::new();
    for call in api.calls() {
        let target = call.target();
        let resource = target.rbac_resource();
        // The election's Lease is in the operator's namespace, under the Role.
        let rules = match target.namespace.as_deref() {
            Some(OPERATOR_NS) => &role_rules,
            _ => &cluster_rules,
        };
        for verb in call.verbs() {
            let rule = (target.group.clone(), resource.clone(), verb.to_string());
            assert!(
                rules.contains(&rule),
                "{} {} {}: {rule:?} is not granted",
                call.client,
                call.method,
                call.path
            );
            used.insert(rule);
        }
    }
    let unused: Vec<_> = cluster_rules
        .iter()
        .chain(&role_rules)
        .filter(|r| !used.contains(*r))
        .collect();
    assert!(unused.is_empty(), "granted but never used: {unused:?}");
}
