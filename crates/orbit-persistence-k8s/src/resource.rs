//! The `OrbitCluster` custom resource: group `orbit-persistence.io`, version `v1alpha1`,
//! namespaced, short name `orbit`.
//!
//! Its spec carries `persistence`, the core [`PersistenceConfig`] itself (its schema derived
//! behind the core's `schemars` feature), so the resource accepts exactly what a TOML config
//! file accepts. The other spec fields are camelCase, as Kubernetes resources are; the
//! `persistence` section keeps the TOML's snake_case names.

use std::collections::BTreeMap;

use kube::CustomResource;
use orbit_persistence_core::{BackendType, OrbitError, PersistenceConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of [`OrbitCluster`].
pub const GROUP: &str = "orbit-persistence.io";
/// The API version of [`OrbitCluster`] in its group.
pub const VERSION: &str = "v1alpha1";

/// An Orbit cluster: its nodes, their image and resources, and the lease directory they keep
/// (the persistence backend and its volume).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "orbit-persistence.io",
    version = "v1alpha1",
    kind = "OrbitCluster",
    namespaced,
    status = "OrbitClusterStatus",
    shortname = "orbit",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Backend","type":"string","jsonPath":".spec.persistence.backend"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrbitClusterSpec {
    /// Orbit nodes (pods). An embedded backend (memory, cow_btree, lsm_tree, rocksdb) keeps
    /// one directory per pod, so it takes exactly 1: two pods with two directories could both
    /// hold the lease of one actor. etcd shares one directory across any number of pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// Container image of an Orbit node. It reads its persistence config from the file named
    /// by `ORBIT_PERSISTENCE_CONFIG`, and serves its provider's health check on `healthPort`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// The lease directory: exactly the TOML config `PersistenceConfig::from_toml_str` reads.
    /// A relative `data_dir` is taken under `/var/lib/orbit`.
    pub persistence: PersistenceConfig,
    /// The data volume of each pod (disk backends only: memory and etcd have none).
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory of the node container.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// Port of the node's health endpoint (`GET /healthz`), answered from the provider's
    /// `health_check`; the pod is ready while it answers 200.
    #[serde(default = "default_health_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub health_port: i32,
}

/// The persistent volume of each pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageSpec {
    /// An existing StorageClass for the volumes. Absent: the cluster's own, rendered from the
    /// backend's template (see `storage_class`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The provisioner of the rendered StorageClass. Default `kubernetes.io/no-provisioner`
    /// (local persistent volumes an administrator creates on the nodes' disks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<String>,
    /// Size of each pod's volume, as a Kubernetes quantity (`10Gi`).
    #[serde(default = "default_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"))]
    pub size: String,
    /// `ReadWriteOnce` or `ReadWriteOncePod`: a store's directory belongs to one process.
    #[serde(default = "default_access_mode")]
    #[schemars(regex(pattern = r"^ReadWriteOncePod$|^ReadWriteOnce$"))]
    pub access_mode: String,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            storage_class: None,
            provisioner: None,
            size: default_size(),
            access_mode: default_access_mode(),
        }
    }
}

/// Requests and limits of the node container, as Kubernetes quantities by resource name
/// (`cpu: 500m`, `memory: 1Gi`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcesSpec {
    /// What the scheduler reserves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// What the container may use at most.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// What the operator last did with the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrbitClusterStatus {
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `SpecValid` (the spec, its persistence config above all, is valid; else the message
    /// names the field) and `Applied` (the rendered objects were applied).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One status condition, in the Kubernetes convention.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `SpecValid` or `Applied`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    /// What happened, for a person.
    pub message: String,
    /// RFC 3339 time the condition last changed status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

fn default_replicas() -> i32 {
    1
}

fn default_health_port() -> i32 {
    8080
}

fn default_size() -> String {
    "10Gi".to_string()
}

fn default_access_mode() -> String {
    "ReadWriteOnce".to_string()
}

/// A spec the operator refuses, naming the field (`spec.persistence.lsm_tree.block_size ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

impl OrbitClusterSpec {
    /// Checks what the schema cannot: the persistence config's own rules, and one pod per
    /// embedded directory. The message starts with the field's path from `spec`.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        self.persistence
            .validate()
            .map_err(|e| InvalidSpec(format!("spec.persistence.{}", config_message(&e))))?;
        if self.replicas < 1 {
            return Err(InvalidSpec(format!(
                "spec.replicas must be at least 1, got {}",
                self.replicas
            )));
        }
        let backend = self.persistence.backend;
        if backend != BackendType::Etcd && self.replicas != 1 {
            return Err(InvalidSpec(format!(
                "spec.replicas must be 1 with the {} backend, got {}: it keeps one lease \
                 directory per pod, and two directories could each give the same actor to a \
                 different node (use the etcd backend to share one directory)",
                backend.as_str(),
                self.replicas
            )));
        }
        if self.image.is_empty() {
            return Err(InvalidSpec("spec.image must not be empty".into()));
        }
        if !(1..=65535).contains(&self.health_port) {
            return Err(InvalidSpec(format!(
                "spec.healthPort must be in 1..=65535, got {}",
                self.health_port
            )));
        }
        if !["ReadWriteOnce", "ReadWriteOncePod"].contains(&self.storage.access_mode.as_str()) {
            return Err(InvalidSpec(format!(
                "spec.storage.accessMode must be ReadWriteOnce or ReadWriteOncePod (a store's \
                 directory belongs to one process), got {:?}",
                self.storage.access_mode
            )));
        }
        Ok(())
    }
}

/// The text of a config error without its kind's prefix: it starts with the field's path.
fn config_message(e: &OrbitError) -> String {
    match e {
        OrbitError::Config(message) => message.clone(),
        other => other.to_string(),
    }
}
