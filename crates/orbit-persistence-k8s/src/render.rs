//! From an [`OrbitCluster`] to the objects that run it:
//!
//! - a **ConfigMap** `<name>-persistence` whose `persistence.toml` is the effective
//!   persistence config (every default spelled out, `data_dir` where the volume is mounted),
//!   exactly what `PersistenceConfig::from_toml_str` reads;
//! - a headless **Service** `<name>` (stable DNS names for the pods);
//! - a **StatefulSet** `<name>`: the config mounted at `/etc/orbit-persistence`,
//!   `ORBIT_PERSISTENCE_CONFIG` and `ORBIT_PERSISTENCE_BACKEND` set, readiness from the node's
//!   health endpoint, and for a disk backend a `data` volumeClaimTemplate mounted at the
//!   backend's `data_dir` (claims kept when the set is deleted or scaled down);
//! - for a disk backend with no `storage.storageClass`, the backend's **StorageClass**
//!   `<namespace>-<name>-data` ([`crate::storage_class`]).
//!
//! Rendering is pure: the same cluster gives the same objects, so `deploy/` can be checked
//! against it. Owner references are the reconciler's to add (they need the object's UID).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use orbit_persistence_core::PersistenceConfig;
use orbit_persistence_core::config::{ENV_BACKEND, ENV_DATA_DIR};

use crate::resource::{InvalidSpec, OrbitCluster};
use crate::storage_class;

/// Where a relative `data_dir` is taken from in a pod.
pub const DATA_ROOT: &str = "/var/lib/orbit";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/orbit-persistence";
/// The ConfigMap's key holding the persistence config.
pub const CONFIG_KEY: &str = "persistence.toml";
/// The variable naming the config file in the node container.
pub const ENV_CONFIG: &str = "ORBIT_PERSISTENCE_CONFIG";
/// The pod annotation holding a checksum of the config: a changed config rolls the pods.
pub const CONFIG_CHECKSUM: &str = "orbit-persistence.io/config-crc32";
/// The label naming the backend on every rendered object.
pub const BACKEND_LABEL: &str = "orbit-persistence.io/backend";

/// The objects of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The persistence config.
    pub config_map: ConfigMap,
    /// The headless service of the pods.
    pub service: Service,
    /// The Orbit nodes.
    pub stateful_set: StatefulSet,
    /// The backend's class, when the cluster names none and the backend uses a disk.
    pub storage_class: Option<StorageClass>,
}

impl Rendered {
    /// The objects as one multi-document YAML stream, in the order they are applied.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::ser::Error> {
        let mut docs = Vec::new();
        if let Some(class) = &self.storage_class {
            docs.push(serde_saphyr::to_string(class)?);
        }
        docs.push(serde_saphyr::to_string(&self.config_map)?);
        docs.push(serde_saphyr::to_string(&self.service)?);
        docs.push(serde_saphyr::to_string(&self.stateful_set)?);
        Ok(docs.join("---\n"))
    }
}

/// The persistence config a pod reads: every default spelled out, and a disk backend's
/// `data_dir` absolute (a relative one taken under [`DATA_ROOT`]).
pub fn pod_config(persistence: &PersistenceConfig) -> PersistenceConfig {
    match persistence.data_dir() {
        Some(dir) if dir.is_relative() => persistence.with_data_dir(Path::new(DATA_ROOT).join(dir)),
        _ => persistence.effective(),
    }
}

/// Renders `cluster`, after checking its spec ([`crate::OrbitClusterSpec::validate`]).
pub fn render(cluster: &OrbitCluster) -> Result<Rendered, InvalidSpec> {
    let spec = &cluster.spec;
    spec.validate()?;
    let name = cluster.name_any();
    if name.is_empty() {
        return Err(InvalidSpec("metadata.name must not be empty".into()));
    }
    let namespace = cluster.namespace();
    let backend = spec.persistence.backend;
    let config = pod_config(&spec.persistence);
    let toml = toml::to_string(&config)
        .map_err(|e| InvalidSpec(format!("spec.persistence cannot be written as TOML: {e}")))?;
    let data_dir: Option<PathBuf> = config.data_dir();

    let selector = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "orbit".to_string()),
        ("app.kubernetes.io/instance".to_string(), name.clone()),
    ]);
    let mut labels = selector.clone();
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "orbit-persistence-k8s".to_string(),
    );
    labels.insert(BACKEND_LABEL.to_string(), backend.as_str().to_string());
    let meta = |object_name: String| ObjectMeta {
        name: Some(object_name),
        namespace: namespace.clone(),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };

    let config_map_name = format!("{name}-persistence");
    let config_map = ConfigMap {
        metadata: meta(config_map_name.clone()),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), toml.clone())])),
        ..ConfigMap::default()
    };

    let service = Service {
        metadata: meta(name.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(selector.clone()),
            ports: Some(vec![ServicePort {
                name: Some("health".to_string()),
                port: spec.health_port,
                target_port: Some(IntOrString::String("health".to_string())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let storage_class = match (&data_dir, &spec.storage.storage_class) {
        (Some(_), None) => {
            // Cluster-scoped: the namespace keeps two clusters' classes apart.
            let class_name = match &namespace {
                Some(ns) => format!("{ns}-{name}-data"),
                None => format!("{name}-data"),
            };
            storage_class::template(
                backend,
                class_name,
                spec.storage.provisioner.as_deref(),
                labels.clone(),
            )
        }
        _ => None,
    };
    let class_name = spec
        .storage
        .storage_class
        .clone()
        .or_else(|| storage_class.as_ref().and_then(|c| c.metadata.name.clone()));

    let mut env = vec![
        EnvVar {
            name: ENV_CONFIG.to_string(),
            value: Some(format!("{CONFIG_DIR}/{CONFIG_KEY}")),
            ..EnvVar::default()
        },
        EnvVar {
            name: ENV_BACKEND.to_string(),
            value: Some(backend.as_str().to_string()),
            ..EnvVar::default()
        },
    ];
    let mut mounts = vec![VolumeMount {
        name: "config".to_string(),
        mount_path: CONFIG_DIR.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut claims = None;
    if let Some(dir) = &data_dir {
        let dir = dir.to_string_lossy().into_owned();
        env.push(EnvVar {
            name: ENV_DATA_DIR.to_string(),
            value: Some(dir.clone()),
            ..EnvVar::default()
        });
        mounts.push(VolumeMount {
            name: "data".to_string(),
            mount_path: dir,
            ..VolumeMount::default()
        });
        claims = Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".to_string()),
                labels: Some(selector.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec![spec.storage.access_mode.clone()]),
                storage_class_name: class_name,
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(spec.storage.size.clone()),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }]);
    }
    let quantities = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect::<BTreeMap<_, _>>()
        })
    };
    let resources = (!spec.resources.requests.is_empty() || !spec.resources.limits.is_empty())
        .then(|| ResourceRequirements {
            requests: quantities(&spec.resources.requests),
            limits: quantities(&spec.resources.limits),
            ..ResourceRequirements::default()
        });
    let container = Container {
        name: "orbit".to_string(),
        image: Some(spec.image.clone()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("health".to_string()),
            container_port: spec.health_port,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".to_string()),
                port: IntOrString::String("health".to_string()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        resources,
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let checksum = crc32fast::hash(toml.as_bytes());
    let stateful_set = StatefulSet {
        metadata: meta(name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: claims.as_ref().map(|_| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_string()),
                    when_scaled: Some("Retain".to_string()),
                }
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_CHECKSUM.to_string(),
                        format!("{checksum:08x}"),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".to_string(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: config_map_name,
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: claims,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    Ok(Rendered {
        config_map,
        service,
        stateful_set,
        storage_class,
    })
}

#[cfg(test)]
mod tests {
    use orbit_persistence_core::{BackendType, LsmTreeConfig};

    use super::*;
    use crate::deploy::example;

    fn container(r: &Rendered) -> &Container {
        &r.stateful_set
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    fn env(r: &Rendered, name: &str) -> Option<String> {
        container(r)
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    fn toml_of(r: &Rendered) -> PersistenceConfig {
        PersistenceConfig::from_toml_str(&r.config_map.data.as_ref().unwrap()[CONFIG_KEY]).unwrap()
    }

    #[test]
    fn memory_and_etcd_render_no_claim_no_class_and_no_data_mount() {
        for backend in [BackendType::Memory, BackendType::Etcd] {
            let r = render(&example(backend)).unwrap();
            let set = r.stateful_set.spec.as_ref().unwrap();
            assert!(set.volume_claim_templates.is_none(), "{backend:?}");
            assert!(r.storage_class.is_none(), "{backend:?}");
            let mounts = container(&r).volume_mounts.as_ref().unwrap();
            assert_eq!(mounts.len(), 1, "only the config: {mounts:?}");
            assert_eq!(env(&r, ENV_BACKEND).as_deref(), Some(backend.as_str()));
            assert_eq!(env(&r, ENV_DATA_DIR), None);
        }
    }

    #[test]
    fn a_relative_data_dir_lands_under_the_data_root_and_the_volume_is_mounted_there() {
        let mut cluster = example(BackendType::LsmTree);
        cluster.spec.persistence.lsm_tree = Some(LsmTreeConfig {
            data_dir: "leases".into(),
            ..LsmTreeConfig::default()
        });
        let r = render(&cluster).unwrap();
        let dir = toml_of(&r).data_dir().unwrap();
        assert_eq!(dir, Path::new(DATA_ROOT).join("leases"));
        let data = container(&r)
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "data")
            .expect("a data mount");
        assert_eq!(Path::new(&data.mount_path), dir);
        assert_eq!(env(&r, ENV_DATA_DIR), Some(data.mount_path.clone()));
        assert_eq!(
            env(&r, ENV_CONFIG).unwrap(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}")
        );
    }

    #[test]
    fn a_named_storage_class_is_used_and_none_is_rendered() {
        let mut cluster = example(BackendType::RocksDB);
        let r = render(&cluster).unwrap();
        let own = r.storage_class.as_ref().unwrap();
        assert_eq!(own.metadata.name.as_deref(), Some("orbit-rocksdb-data"));
        assert_eq!(own.allow_volume_expansion, Some(false), "local NVMe");
        cluster.spec.storage.storage_class = Some("fast-nvme".into());
        let r = render(&cluster).unwrap();
        assert!(r.storage_class.is_none());
        let claims = r.stateful_set.spec.unwrap().volume_claim_templates.unwrap();
        assert_eq!(
            claims[0]
                .spec
                .as_ref()
                .unwrap()
                .storage_class_name
                .as_deref(),
            Some("fast-nvme")
        );
    }

    #[test]
    fn a_changed_config_changes_the_pods_checksum() {
        let checksum = |c: &OrbitCluster| {
            let r = render(c).unwrap();
            let template = r.stateful_set.spec.unwrap().template;
            template.metadata.unwrap().annotations.unwrap()[CONFIG_CHECKSUM].clone()
        };
        let mut cluster = example(BackendType::CowBTree);
        let before = checksum(&cluster);
        assert_eq!(before, checksum(&cluster), "rendering is deterministic");
        cluster
            .spec
            .persistence
            .cow_btree
            .as_mut()
            .unwrap()
            .cache_size += 4096;
        assert_ne!(before, checksum(&cluster));
    }
}
