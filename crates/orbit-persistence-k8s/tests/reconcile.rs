//! The reconciler against kube's mocked API service (tower-test): the requests it makes, in
//! order, with their bodies, what it writes to the status, and the Event it publishes.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use orbit_persistence_core::BackendType;
use orbit_persistence_k8s::reconcile::{Context, MANAGER, reconcile};
use orbit_persistence_k8s::{Condition, OrbitCluster, OrbitClusterStatus, deploy};
use serde_json::Value;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// The example cluster of `backend` as the API server hands it over: with a UID and a
/// generation.
fn stored(backend: BackendType) -> OrbitCluster {
    let mut cluster = deploy::example(backend);
    cluster.metadata.uid = Some("6b9e1a52-0000-4000-8000-000000000001".into());
    cluster.metadata.generation = Some(4);
    cluster
}

/// One request the mock expects: its method and path, the query server-side apply adds.
async fn next(
    handle: &mut Handle,
    path: &str,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request for {path}"))
        .expect("the service is open");
    assert_eq!(request.method(), Method::PATCH, "{path}");
    assert_eq!(
        request.uri().to_string(),
        format!("{path}?&force=true&fieldManager={MANAGER}")
    );
    assert_eq!(
        request.headers()["content-type"],
        "application/apply-patch+yaml"
    );
    let body = request.into_body().collect_bytes().await.unwrap();
    (serde_json::from_slice(&body).unwrap(), send)
}

/// The Event the reconciler published on the cluster: created in its namespace, answered as
/// the API server does.
async fn event(handle: &mut Handle) -> Value {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("no Event")
        .expect("the service is open");
    assert_eq!(request.method(), Method::POST);
    assert_eq!(
        request.uri().path(),
        "/apis/events.k8s.io/v1/namespaces/orbit/events"
    );
    let body: Value =
        serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
    assert_eq!(body["regarding"]["kind"], "OrbitCluster");
    assert_eq!(body["reportingController"], MANAGER);
    send.send_response(
        Response::builder()
            .status(201)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    body
}

fn reply(send: tower_test::mock::SendResponse<Response<Body>>, body: &Value) {
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

/// The status the reconciler wrote, answered with the whole object as the API server does.
async fn status(handle: &mut Handle, cluster: &OrbitCluster) -> OrbitClusterStatus {
    let name = cluster.metadata.name.clone().unwrap();
    let ns = cluster.metadata.namespace.clone().unwrap();
    let (body, send) = next(
        handle,
        &format!("/apis/orbit-persistence.io/v1alpha1/namespaces/{ns}/orbitclusters/{name}/status"),
    )
    .await;
    assert_eq!(body["kind"], "OrbitCluster");
    let status: OrbitClusterStatus = serde_json::from_value(body["status"].clone()).unwrap();
    let mut whole = cluster.clone();
    whole.status = Some(status.clone());
    reply(send, &serde_json::to_value(&whole).unwrap());
    status
}

#[tokio::test]
async fn a_valid_cluster_is_applied_owned_and_reported() {
    let cluster = stored(BackendType::LsmTree);
    let (client, mut handle) = mock();
    let server = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let ns = "orbit";
            let mut seen = Vec::new();
            for (path, kind) in [
                (
                    "/apis/storage.k8s.io/v1/storageclasses/orbit-lsm-tree-data".to_string(),
                    "StorageClass",
                ),
                (
                    format!("/api/v1/namespaces/{ns}/configmaps/lsm-tree-persistence"),
                    "ConfigMap",
                ),
                (
                    format!("/api/v1/namespaces/{ns}/services/lsm-tree"),
                    "Service",
                ),
                (
                    format!("/apis/apps/v1/namespaces/{ns}/statefulsets/lsm-tree"),
                    "StatefulSet",
                ),
            ] {
                let (body, send) = next(&mut handle, &path).await;
                assert_eq!(body["kind"], kind);
                let owners = &body["metadata"]["ownerReferences"];
                if kind == "StorageClass" {
                    // Cluster-scoped: a namespaced owner would be invalid.
                    assert!(owners.is_null(), "{owners}");
                } else {
                    assert_eq!(owners[0]["kind"], "OrbitCluster");
                    assert_eq!(owners[0]["uid"], cluster.metadata.uid.clone().unwrap());
                    assert_eq!(owners[0]["controller"], true);
                }
                if kind == "StatefulSet" {
                    let claims = &body["spec"]["volumeClaimTemplates"];
                    assert_eq!(claims[0]["metadata"]["name"], "data");
                    let mounts = &body["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
                    assert!(
                        mounts
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|m| m["name"] == "data"
                                && m["mountPath"] == "/var/lib/orbit/lsm_tree"),
                        "{mounts}"
                    );
                }
                seen.push(kind);
                reply(send, &body);
            }
            let status = status(&mut handle, &cluster).await;
            let event = event(&mut handle).await;
            (seen, status, event)
        })
    };
    let action = reconcile(Arc::new(cluster), Arc::new(Context::new(client, None))).await;
    let (seen, status, event) = server.await.expect("the mock's checks");
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Normal"), Some("Applied"))
    );
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("StatefulSet lsm-tree"),
        "{event}"
    );
    action.expect("reconcile");
    assert_eq!(seen.len(), 4);
    assert_eq!(status.observed_generation, Some(4));
    let types: Vec<_> = status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(types, [("SpecValid", "True"), ("Applied", "True")]);
    assert!(
        status.conditions[1]
            .message
            .contains("StatefulSet lsm-tree")
    );
}

#[tokio::test]
async fn an_invalid_persistence_config_is_a_status_condition_naming_the_field_and_nothing_applied()
{
    let mut cluster = stored(BackendType::LsmTree);
    cluster
        .spec
        .persistence
        .lsm_tree
        .as_mut()
        .unwrap()
        .bloom_filter_fp_rate = 1.5;
    let (client, mut handle) = mock();
    let server = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            // The first request is the status: nothing was applied before it.
            let status = status(&mut handle, &cluster).await;
            // Then the Event, naming the field too.
            let event = event(&mut handle).await;
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["reason"], "InvalidSpec");
            assert!(
                event["note"]
                    .as_str()
                    .unwrap()
                    .contains("spec.persistence.lsm_tree.bloom_filter_fp_rate"),
                "{event}"
            );
            // And nothing after it.
            let more =
                tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
            assert!(!matches!(more, Ok(Some(_))), "a request after the status");
            status
        })
    };
    let action = reconcile(Arc::new(cluster), Arc::new(Context::new(client, None))).await;
    let status = server.await.expect("the mock's checks");
    action.expect("an invalid spec is reported, not an error");
    let valid = &status.conditions[0];
    assert_eq!(
        (valid.type_.as_str(), valid.status.as_str()),
        ("SpecValid", "False")
    );
    assert_eq!(valid.reason, "InvalidSpec");
    assert!(
        valid
            .message
            .contains("spec.persistence.lsm_tree.bloom_filter_fp_rate"),
        "{}",
        valid.message
    );
}

#[tokio::test]
async fn an_api_error_fails_the_reconcile_for_a_retry() {
    let cluster = stored(BackendType::Memory);
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = next(
            &mut handle,
            "/api/v1/namespaces/orbit/configmaps/memory-persistence",
        )
        .await;
        let forbidden =
            kube::core::Status::failure("configmaps is forbidden", "Forbidden").with_code(403);
        send.send_response(
            Response::builder()
                .status(403)
                .body(Body::from(serde_json::to_vec(&forbidden).unwrap()))
                .unwrap(),
        );
        event(&mut handle).await
    });
    let result = reconcile(Arc::new(cluster), Arc::new(Context::new(client, None))).await;
    let event = server.await.expect("the mock's checks");
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("ApplyFailed"))
    );
    assert!(
        event["note"].as_str().unwrap().contains("forbidden"),
        "{event}"
    );
    let err = result
        .expect_err("a refused apply fails the reconcile")
        .to_string();
    assert!(err.contains("forbidden"), "{err}");
}

#[tokio::test]
async fn a_condition_keeps_its_transition_time_until_its_status_changes() {
    let mut cluster = stored(BackendType::Memory);
    let since = "2026-01-02T03:04:05Z".to_string();
    cluster.status = Some(OrbitClusterStatus {
        observed_generation: Some(3),
        conditions: vec![Condition {
            type_: "SpecValid".into(),
            status: "True".into(),
            reason: "Valid".into(),
            message: "memory backend".into(),
            last_transition_time: Some(since.clone()),
        }],
    });
    let (client, mut handle) = mock();
    let server = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            for path in [
                "/api/v1/namespaces/orbit/configmaps/memory-persistence",
                "/api/v1/namespaces/orbit/services/memory",
                "/apis/apps/v1/namespaces/orbit/statefulsets/memory",
            ] {
                let (body, send) = next(&mut handle, path).await;
                reply(send, &body);
            }
            let status = status(&mut handle, &cluster).await;
            event(&mut handle).await;
            status
        })
    };
    let action = reconcile(Arc::new(cluster), Arc::new(Context::new(client, None))).await;
    let status = server.await.expect("the mock's checks");
    action.expect("reconcile");
    let valid = &status.conditions[0];
    assert_eq!(
        valid.last_transition_time.as_ref(),
        Some(&since),
        "still valid"
    );
    let applied = &status.conditions[1];
    assert_ne!(
        applied.last_transition_time.as_ref(),
        Some(&since),
        "newly applied"
    );
    assert!(applied.last_transition_time.is_some());
}
