//! Exactly the API permissions the operator uses, as one table: `deploy/operator/` renders its
//! ClusterRole and Role from it, and a test records every request the operator makes against
//! a mocked API server and checks that this table allows each one and holds nothing unused.
//!
//! A server-side apply may create the object it names, and the API server then authorizes it
//! as `create` as well as `patch`; so every kind the reconciler applies has both.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::api::ObjectMeta;

/// Where a permission is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// In every namespace, and for cluster-scoped kinds (a ClusterRole).
    Cluster,
    /// In the operator's own namespace only (a Role): the election's Lease.
    OperatorNamespace,
}

/// One resource, the verbs used on it, and why.
#[derive(Clone, Copy, Debug)]
pub struct Permission {
    /// The API group (`""`: the core group).
    pub group: &'static str,
    /// The resource, with `/subresource` where one is used.
    pub resource: &'static str,
    /// The verbs, as RBAC names them.
    pub verbs: &'static [&'static str],
    /// Where.
    pub scope: Scope,
    /// What uses it.
    pub why: &'static str,
}

/// Every permission the operator needs.
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        group: crate::resource::GROUP,
        resource: "orbitclusters",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        why: "the controller watches every OrbitCluster",
    },
    Permission {
        group: crate::resource::GROUP,
        resource: "orbitclusters/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        why: "the reconciler writes the SpecValid and Applied conditions",
    },
    Permission {
        group: "apps",
        resource: "statefulsets",
        verbs: &["list", "watch", "create", "patch"],
        scope: Scope::Cluster,
        why: "applied, and watched so that an edit by hand is repaired",
    },
    Permission {
        group: "",
        resource: "configmaps",
        verbs: &["list", "watch", "create", "patch"],
        scope: Scope::Cluster,
        why: "applied, and watched so that an edit by hand is repaired",
    },
    Permission {
        group: "",
        resource: "services",
        verbs: &["create", "patch"],
        scope: Scope::Cluster,
        why: "the headless Service, applied",
    },
    Permission {
        group: "storage.k8s.io",
        resource: "storageclasses",
        verbs: &["create", "patch"],
        scope: Scope::Cluster,
        why: "a disk backend's StorageClass, applied",
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::Cluster,
        why: "an Event per apply or refusal (patch: a repeated Event's count)",
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::OperatorNamespace,
        why: "leader election among the operator's replicas",
    },
];

/// Whether the permissions allow `verb` on `resource` of `group` in `scope`.
pub fn allows(group: &str, resource: &str, verb: &str, scope: Scope) -> bool {
    PERMISSIONS.iter().any(|p| {
        p.group == group && p.resource == resource && p.verbs.contains(&verb) && p.scope == scope
    })
}

/// The rules of `scope`, one per resource.
fn rules(scope: Scope) -> Vec<PolicyRule> {
    PERMISSIONS
        .iter()
        .filter(|p| p.scope == scope)
        .map(|p| PolicyRule {
            api_groups: Some(vec![p.group.to_string()]),
            resources: Some(vec![p.resource.to_string()]),
            verbs: p.verbs.iter().map(|v| v.to_string()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

/// The ClusterRole `name`: every [`Scope::Cluster`] permission.
pub fn cluster_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        rules: Some(rules(Scope::Cluster)),
        ..ClusterRole::default()
    }
}

/// The Role `name` in `namespace`: every [`Scope::OperatorNamespace`] permission.
pub fn role(name: &str, namespace: &str) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        rules: Some(rules(Scope::OperatorNamespace)),
    }
}
