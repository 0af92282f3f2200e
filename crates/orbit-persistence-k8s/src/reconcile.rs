//! The operator's reconcile step, in kube-runtime's controller shape
//! (`reconcile(object, context) -> Action`, [`error_policy`]); [`crate::operator::run`] runs it.
//!
//! For each `OrbitCluster`: render it ([`crate::render()`]); if its spec is invalid, say so in
//! the status (`SpecValid` false, the message naming the field) and apply nothing; else apply
//! each object with server-side apply (field manager [`MANAGER`], forced, so the operator owns
//! the fields it renders), the namespaced ones owned by the cluster (deleting the cluster
//! deletes them; the StorageClass is cluster-scoped, so it cannot be owned, and stays), then
//! record `SpecValid` and `Applied` in the status. Each apply, each refused spec and each
//! failed apply is also an Event on the `OrbitCluster` (`kubectl describe` shows them), so an
//! operator sees what happened without reading the operator's log.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::render::{Rendered, render};
use crate::resource::{Condition, OrbitCluster, OrbitClusterStatus};

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "orbit-persistence-operator";

/// How often a healthy cluster is reconciled again even if nothing changed (it repairs edits
/// made by hand).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How long after a failed reconcile it is tried again.
pub const RETRY: Duration = Duration::from_secs(30);

/// What every reconcile shares.
#[derive(Clone)]
pub struct Context {
    /// The API server.
    pub client: Client,
    /// Publishes the Events of each reconcile on its `OrbitCluster`.
    pub recorder: Recorder,
}

impl Context {
    /// A context whose Events name `instance` (the pod name of this replica, if known) as
    /// their reporting instance.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }

    /// Publishes an Event on `cluster`. Best effort: an Event that cannot be written (no RBAC
    /// for events, an API server busy) is logged, and the reconcile goes on.
    async fn event(&self, cluster: &OrbitCluster, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &cluster.object_ref(&()))
            .await
        {
            tracing::warn!(cluster = %cluster.name_any(), %error, reason, "event not published");
        }
    }
}

/// Why a reconcile failed (it is retried after [`RETRY`]). An invalid spec is not a failure:
/// it is reported in the status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a request or could not be reached.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object lacks what the API server always sets (a namespace, a UID).
    #[error("the OrbitCluster has no {0}")]
    Incomplete(&'static str),
}

/// A condition of `cluster`: its `lastTransitionTime` is kept from the current status while
/// the condition's status stays the same, and is now when it changes.
fn condition(
    cluster: &OrbitCluster,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = cluster
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: since
            .or_else(|| Some(k8s_openapi::jiff::Timestamp::now().to_string())),
    }
}

/// Applies `object` by server-side apply at `api`.
async fn apply<K>(api: Api<K>, object: &K) -> Result<(), Error>
where
    K: Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

/// Reconciles one cluster (see the module documentation).
pub async fn reconcile(cluster: Arc<OrbitCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let outcome = apply_cluster(&cluster, &ctx).await;
    if let Err(error) = &outcome {
        let note = error.to_string();
        ctx.event(&cluster, EventType::Warning, "ApplyFailed", note)
            .await;
    }
    outcome
}

/// Renders `cluster` and applies it, or reports why its spec is invalid.
async fn apply_cluster(cluster: &OrbitCluster, ctx: &Context) -> Result<Action, Error> {
    let namespace = cluster.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = cluster.name_any();
    let client = ctx.client.clone();
    let rendered = match render(cluster) {
        Ok(rendered) => rendered,
        Err(invalid) => {
            let message = invalid.to_string();
            set_status(
                &client,
                cluster,
                vec![
                    condition(cluster, "SpecValid", false, "InvalidSpec", message.clone()),
                    condition(cluster, "Applied", false, "InvalidSpec", message.clone()),
                ],
            )
            .await?;
            ctx.event(cluster, EventType::Warning, "InvalidSpec", message)
                .await;
            // Nothing to do until the spec changes.
            return Ok(Action::await_change());
        }
    };
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("uid"))?;
    let Rendered {
        mut config_map,
        mut service,
        mut stateful_set,
        storage_class,
    } = rendered;
    for meta in [
        &mut config_map.metadata,
        &mut service.metadata,
        &mut stateful_set.metadata,
    ] {
        meta.owner_references = Some(vec![owner.clone()]);
        meta.namespace = Some(namespace.clone());
    }
    let mut applied = Vec::new();
    if let Some(class) = &storage_class {
        apply(Api::<StorageClass>::all(client.clone()), class).await?;
        applied.push(format!("StorageClass {}", class.name_any()));
    }
    apply(
        Api::<ConfigMap>::namespaced(client.clone(), &namespace),
        &config_map,
    )
    .await?;
    applied.push(format!("ConfigMap {}", config_map.name_any()));
    apply(
        Api::<Service>::namespaced(client.clone(), &namespace),
        &service,
    )
    .await?;
    applied.push(format!("Service {}", service.name_any()));
    apply(
        Api::<StatefulSet>::namespaced(client.clone(), &namespace),
        &stateful_set,
    )
    .await?;
    applied.push(format!("StatefulSet {}", stateful_set.name_any()));
    let applied = applied.join(", ");
    set_status(
        &client,
        cluster,
        vec![
            condition(
                cluster,
                "SpecValid",
                true,
                "Valid",
                format!("{} backend", cluster.spec.persistence.backend.as_str()),
            ),
            condition(cluster, "Applied", true, "Applied", applied.clone()),
        ],
    )
    .await?;
    ctx.event(cluster, EventType::Normal, "Applied", applied)
        .await;
    tracing::info!(cluster = %name, namespace = %namespace, "applied");
    Ok(Action::requeue(RESYNC))
}

/// Writes the status of `cluster` (server-side apply of the status subresource).
async fn set_status(
    client: &Client,
    cluster: &OrbitCluster,
    conditions: Vec<Condition>,
) -> Result<(), Error> {
    let namespace = cluster.namespace().ok_or(Error::Incomplete("namespace"))?;
    let status = json!({
        "apiVersion": OrbitCluster::api_version(&()),
        "kind": OrbitCluster::kind(&()),
        "status": OrbitClusterStatus {
            observed_generation: cluster.metadata.generation,
            conditions,
        },
    });
    Api::<OrbitCluster>::namespaced(client.clone(), &namespace)
        .patch_status(
            &cluster.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await?;
    Ok(())
}

/// After a failed reconcile: try again after [`RETRY`].
pub fn error_policy(cluster: Arc<OrbitCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), %error, "reconcile failed");
    Action::requeue(RETRY)
}
