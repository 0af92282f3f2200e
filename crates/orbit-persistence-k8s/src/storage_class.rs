//! The StorageClass each disk backend wants, when the cluster names none of its own.
//!
//! All three keep a lease directory that must outlive its pod and never move between nodes
//! behind the store's back, so every template has `reclaimPolicy: Retain` (deleting a claim
//! keeps the data) and `volumeBindingMode: WaitForFirstConsumer` (the volume is made where the
//! pod is scheduled). The default provisioner is `kubernetes.io/no-provisioner`: local
//! persistent volumes on the nodes' own disks; a cluster may name another
//! (`spec.storage.provisioner`).
//!
//! - **lsm_tree and rocksdb want fast local SSD (NVMe).** Every acknowledged write is a WAL
//!   fdatasync, so the write rate is bounded by the disk's sync latency (0.05 ms on local
//!   NVMe, 1-3 ms on network block storage), and compaction rewrites each byte about ten times
//!   (write amplification), so throughput and device endurance matter. Their class is labelled
//!   `orbit-persistence.io/disk: local-nvme` and does not allow expansion: local volumes
//!   cannot grow.
//! - **cow_btree is content with network SSD.** It also syncs its WAL on every write, but
//!   rewrites pages only at checkpoints (about once per 4 MiB of WAL), so it needs neither the
//!   bandwidth nor the endurance. Its class is labelled `ssd` and allows expansion, which
//!   network volumes support (the page file grows with the directory).
//! - **memory and etcd need none:** memory keeps nothing across a restart, and etcd keeps the
//!   directory in its cluster. Neither renders a claim.

use std::collections::BTreeMap;

use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use orbit_persistence_core::BackendType;

/// The provisioner of a rendered class when the cluster names none: local persistent volumes.
pub const DEFAULT_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// The label saying which disk a class stands for.
pub const DISK_LABEL: &str = "orbit-persistence.io/disk";

/// The class `backend` wants, named `name`; `None` for a backend that keeps no data on the
/// pod's disk.
pub fn template(
    backend: BackendType,
    name: String,
    provisioner: Option<&str>,
    labels: BTreeMap<String, String>,
) -> Option<StorageClass> {
    let (disk, expandable) = match backend {
        BackendType::Memory | BackendType::Etcd => return None,
        BackendType::LsmTree | BackendType::RocksDB => ("local-nvme", false),
        BackendType::CowBTree => ("ssd", true),
    };
    let mut labels = labels;
    labels.insert(DISK_LABEL.to_string(), disk.to_string());
    Some(StorageClass {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        provisioner: provisioner.unwrap_or(DEFAULT_PROVISIONER).to_string(),
        reclaim_policy: Some("Retain".to_string()),
        volume_binding_mode: Some("WaitForFirstConsumer".to_string()),
        allow_volume_expansion: Some(expandable),
        ..StorageClass::default()
    })
}
