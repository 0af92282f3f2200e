//! # orbit-persistence-k8s
//!
//! Run an Orbit cluster on Kubernetes with any orbit-persistence backend on persistent
//! volumes:
//!
//! - [`resource`]: the `OrbitCluster` custom resource (`orbit-persistence.io/v1alpha1`), whose
//!   spec embeds the core `PersistenceConfig` as it is;
//! - [`schema`]: its CRD, and checking a document against the CRD's schema as the API server
//!   would, naming each bad field;
//! - [`render()`]: the ConfigMap, headless Service, StatefulSet and (for a disk backend)
//!   StorageClass that run a cluster; [`storage_class`] says which disk each backend wants
//!   and why;
//! - [`reconcile`]: the operator's reconcile step, in kube-runtime's controller shape, applying
//!   those objects with server-side apply and reporting in the status and in Events;
//! - [`leader`]: leader election on a Lease, so one replica of the operator reconciles;
//! - [`operator`]: the operator process (election, controller, probes, shutdown);
//! - [`rbac`]: exactly the API permissions the operator uses;
//! - [`deploy`]: the repository's `deploy/` directory, generated, with the operator's own
//!   manifests.
//!
//! The `orbit-persistence` CLI prints the CRD (`k8s crd`) and renders a cluster's manifests
//! (`k8s render FILE`), and runs the operator (`k8s operator`), with the `k8s` feature.
#![warn(missing_docs)]

pub mod deploy;
pub mod leader;
pub mod operator;
pub mod rbac;
pub mod reconcile;
pub mod render;
pub mod resource;
pub mod schema;
pub mod storage_class;

pub use render::{Rendered, render};
pub use resource::{
    Condition, GROUP, InvalidSpec, OrbitCluster, OrbitClusterSpec, OrbitClusterStatus,
    ResourcesSpec, StorageSpec, VERSION,
};
/// Why writing an object as YAML failed.
pub use serde_saphyr::ser::Error as YamlError;
