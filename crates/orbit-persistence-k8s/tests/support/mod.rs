//! A fake Kubernetes API server, in process: a tower service that a `kube::Client` calls, with
//! just enough of the API for the operator (list and watch, get, create, update with
//! `resourceVersion` conflicts, server-side apply as an upsert, status patches, merge patches),
//! recording every request with the client that made it.
//!
//! Like the real API server, a write that changes nothing (an apply of the same object) does
//! not bump the `resourceVersion` and sends no watch event, so reconciles settle.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// One request, as the fake received it.
#[derive(Clone, Debug)]
pub struct Call {
    /// The client that sent it (see [`FakeApi::client`]).
    pub client: String,
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Call {
    /// The object or collection the path names.
    pub fn target(&self) -> Target {
        Target::parse(&self.path)
    }

    /// Whether this is a watch (a GET of a collection with `watch=true`).
    pub fn is_watch(&self) -> bool {
        self.query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1")
    }

    /// The RBAC verbs the API server checks for this request. A server-side apply of a main
    /// resource may create the object, and is then authorized as `create` as well.
    pub fn verbs(&self) -> Vec<&'static str> {
        let target = self.target();
        match self.method {
            Method::GET if target.name.is_none() && self.is_watch() => vec!["watch"],
            Method::GET if target.name.is_none() => vec!["list"],
            Method::GET => vec!["get"],
            Method::POST => vec!["create"],
            Method::PUT => vec!["update"],
            Method::PATCH
                if self.content_type == "application/apply-patch+yaml"
                    && target.subresource.is_none() =>
            {
                vec!["patch", "create"]
            }
            Method::PATCH => vec!["patch"],
            Method::DELETE => vec!["delete"],
            _ => vec!["unknown"],
        }
    }
}

/// What an API path names: `/api/v1/...` (group "") or `/apis/GROUP/VERSION/...`, then
/// `namespaces/NS/` if namespaced, the resource, a name, a subresource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    pub fn parse(path: &str) -> Target {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match parts[0] {
            "api" => (String::new(), parts[1].to_string(), &parts[2..]),
            "apis" => (parts[1].to_string(), parts[2].to_string(), &parts[3..]),
            other => panic!("not an API path: {other} in {path}"),
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            rest => (None, rest),
        };
        Target {
            group,
            version,
            namespace,
            resource: rest[0].to_string(),
            name: rest.get(1).map(|s| s.to_string()),
            subresource: rest.get(2).map(|s| s.to_string()),
        }
    }

    /// The RBAC resource: `resource` or `resource/subresource`.
    pub fn rbac_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// The key of the object this target names (without a subresource).
    fn object(&self) -> Key {
        (
            self.group.clone(),
            self.resource.clone(),
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }

    /// Whether the object at `key` is in this collection.
    fn holds(&self, key: &Key) -> bool {
        key.0 == self.group
            && key.1 == self.resource
            && self.namespace.as_ref().is_none_or(|ns| *ns == key.2)
    }
}

/// group, resource, namespace ("" if cluster-scoped), name.
type Key = (String, String, String, String);

#[derive(Default)]
struct State {
    version: u64,
    objects: BTreeMap<Key, Value>,
    /// Every change, for watches: (resourceVersion, key, ADDED/MODIFIED, object).
    changes: Vec<(u64, Key, &'static str, Value)>,
    calls: Vec<Call>,
}

impl State {
    /// Stores `object` at `key` unless it is unchanged; the object as stored.
    fn store(&mut self, key: Key, mut object: Value) -> Value {
        if !key.2.is_empty() {
            object["metadata"]["namespace"] = json!(key.2);
        }
        let previous = self.objects.get(&key);
        let without_version = |o: &Value| {
            let mut o = o.clone();
            if let Some(meta) = o["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
            }
            o
        };
        if let Some(previous) = previous.filter(|p| without_version(p) == without_version(&object))
        {
            return previous.clone();
        }
        let kind = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.objects.insert(key.clone(), object.clone());
        self.changes.push((self.version, key, kind, object.clone()));
        object
    }
}

/// The fake API server (cheap to clone: every clone is the same server).
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// `a` with `b` merged in (JSON merge patch).
fn merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (a, b) => *a = b.clone(),
    }
}

impl FakeApi {
    /// A client of this server whose requests are recorded as `name`'s.
    pub fn client(&self, name: &str) -> kube::Client {
        let (api, name) = (self.clone(), name.to_string());
        let service = tower::service_fn(move |request: Request<Body>| {
            let (api, name) = (api.clone(), name.clone());
            async move { Ok::<_, std::convert::Infallible>(api.handle(&name, request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Creates or replaces an object as a user would (`kubectl apply`): watches see it.
    pub fn put(&self, path: &str, object: Value) {
        let key = Target::parse(path).object();
        self.state.lock().unwrap().store(key, object);
    }

    /// The object at `path`, if any.
    pub fn get(&self, path: &str) -> Option<Value> {
        let key = Target::parse(path).object();
        self.state.lock().unwrap().objects.get(&key).cloned()
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Waits (up to `timeout`) until `done` holds for the requests so far; whether it did.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[Call]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.state.lock().unwrap().calls) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// As [`FakeApi::wait_for`], failing the test (with every request so far) if `done` never
    /// holds.
    pub async fn until(&self, timeout: Duration, done: impl Fn(&[Call]) -> bool) {
        if !self.wait_for(timeout, done).await {
            panic!(
                "not within {timeout:?}; the requests:\n{}",
                summary(&self.calls())
            );
        }
    }

    async fn handle(&self, client: &str, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let call = Call {
            client: client.to_string(),
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        self.state.lock().unwrap().calls.push(call.clone());
        let target = call.target();
        if call.method == Method::GET && target.name.is_none() {
            return if call.is_watch() {
                self.watch(&call, &target).await
            } else {
                self.list(&target)
            };
        }
        let key = target.object();
        let mut state = self.state.lock().unwrap();
        let current = state.objects.get(&key).cloned();
        match (&call.method, current) {
            (&Method::GET, Some(object)) => ok(StatusCode::OK, &object),
            (&Method::GET, None) => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            (&Method::POST, _) => {
                let name = call.body["metadata"]["name"].as_str().unwrap_or_default();
                let key = (key.0, key.1, key.2, name.to_string());
                if state.objects.contains_key(&key) {
                    status(StatusCode::CONFLICT, "AlreadyExists", "already exists")
                } else {
                    ok(StatusCode::CREATED, &state.store(key, call.body.clone()))
                }
            }
            (&Method::PUT, None) => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            (&Method::PUT, Some(object)) => {
                if call.body["metadata"]["resourceVersion"] != object["metadata"]["resourceVersion"]
                {
                    status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified",
                    )
                } else {
                    ok(StatusCode::OK, &state.store(key, call.body.clone()))
                }
            }
            (&Method::PATCH, current) if target.subresource.as_deref() == Some("status") => {
                match current {
                    None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
                    Some(mut object) => {
                        object["status"] = call.body["status"].clone();
                        ok(StatusCode::OK, &state.store(key, object))
                    }
                }
            }
            (&Method::PATCH, current) if call.content_type == "application/apply-patch+yaml" => {
                // An apply names every field the manager owns: the object becomes it.
                let mut object = call.body.clone();
                if let Some(current) = current {
                    object["status"] = current["status"].clone();
                }
                ok(StatusCode::OK, &state.store(key, object))
            }
            (&Method::PATCH, Some(mut object)) => {
                merge(&mut object, &call.body);
                ok(StatusCode::OK, &state.store(key, object))
            }
            (&Method::PATCH, None) => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not in the fake",
            ),
        }
    }

    fn list(&self, target: &Target) -> Response<Body> {
        let state = self.state.lock().unwrap();
        let items: Vec<&Value> = state
            .objects
            .iter()
            .filter(|(key, _)| target.holds(key))
            .map(|(_, object)| object)
            .collect();
        ok(
            StatusCode::OK,
            &json!({
                "apiVersion": "v1", "kind": "List",
                "metadata": { "resourceVersion": state.version.to_string() },
                "items": items,
            }),
        )
    }

    /// A watch answered as a long poll: the changes after its `resourceVersion`, as soon as
    /// there are any (or none after a while); the watcher then watches again from there.
    async fn watch(&self, call: &Call, target: &Target) -> Response<Body> {
        let since: u64 = call
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("resourceVersion="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            let lines: Vec<String> = {
                let state = self.state.lock().unwrap();
                state
                    .changes
                    .iter()
                    .filter(|(version, key, ..)| *version > since && target.holds(key))
                    .map(|(_, _, kind, object)| json!({"type": kind, "object": object}).to_string())
                    .collect()
            };
            if !lines.is_empty() || tokio::time::Instant::now() >= deadline {
                let body = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
                return Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from(body.into_bytes()))
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One line per request (client, method, path, query), for assertion messages.
pub fn summary(calls: &[Call]) -> String {
    calls
        .iter()
        .map(|c| format!("{} {} {}?{}\n", c.client, c.method, c.path, c.query))
        .collect()
}
