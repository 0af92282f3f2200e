//! The operator as a running process: leader election, the controller, probes and shutdown.
//!
//! [`run`] is what `orbit-persistence k8s operator` runs:
//!
//! 1. It serves `/healthz` (200 while the process runs) and `/readyz` (200 once the API server
//!    has answered the election, as leader or as standby; 503 before) on the probe address.
//! 2. It takes part in the election on a Lease ([`crate::leader`]). While this replica leads, a
//!    kube-runtime `Controller` watches `OrbitCluster`s (every namespace, or the one given),
//!    and the StatefulSets and ConfigMaps they own, and reconciles each change with
//!    [`crate::reconcile::reconcile`]. A replica that loses the lease stops its controller at
//!    once (in-flight reconciles are dropped, and the next leader repeats them: every apply
//!    is idempotent) and goes back to standby.
//! 3. On `shutdown` (the CLI passes SIGTERM and Ctrl-C) it lets in-flight reconciles finish for
//!    at most [`SHUTDOWN_GRACE`], releases the lease so a standby takes over at once, and
//!    returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tokio::sync::{oneshot, watch};

use crate::leader::{ElectionConfig, Elector, Role};
use crate::reconcile::{Context, error_policy, reconcile};
use crate::resource::OrbitCluster;

/// How long in-flight reconciles may run on after a shutdown request, and how long the lease
/// release may take: together well under the second a rolling update waits for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(400);

/// The Lease every replica of the operator elects on, unless told otherwise.
pub const DEFAULT_LEASE_NAME: &str = "orbit-persistence-operator";
/// The port of `/healthz` and `/readyz` in the operator's pod.
pub const PROBE_PORT: u16 = 8080;

/// What the operator watches, how it is elected and where it answers probes.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Watch only this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// The election among replicas.
    pub election: ElectionConfig,
    /// Where `/healthz` and `/readyz` are served (`None`: not served).
    pub probe_addr: Option<SocketAddr>,
}

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A setting that cannot work (election timings, names).
    #[error("operator config: {0}")]
    Config(String),
    /// The probe address could not be bound.
    #[error("probe address {addr}: {source}")]
    Probe {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the operator until `shutdown` completes (see the module documentation).
pub async fn run(
    client: Client,
    config: OperatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), OperatorError> {
    config.election.validate().map_err(OperatorError::Config)?;
    let (role_tx, role) = watch::channel(Role::Unknown);
    let probes = match config.probe_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| OperatorError::Probe { addr, source })?;
            Some(tokio::spawn(serve_probes(listener, role.clone())))
        }
        None => None,
    };
    let (stop_election, election_stopped) = oneshot::channel();
    let election = tokio::spawn(
        Elector::new(client.clone(), config.election.clone()).run(role_tx, election_stopped),
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        Some(config.election.identity.clone()),
    ));
    lead_while_elected(&client, &config, ctx, role, shutdown).await;
    // Hand the lease over, then stop answering probes.
    let _ = stop_election.send(());
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, election).await;
    if let Some(probes) = probes {
        probes.abort();
    }
    tracing::info!("operator stopped");
    Ok(())
}

/// Runs the controller whenever `role` says this replica leads, until `shutdown`.
async fn lead_while_elected(
    client: &Client,
    config: &OperatorConfig,
    ctx: Arc<Context>,
    mut role: watch::Receiver<Role>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            elected = is_now(&mut role, true) => if !elected { return },
        }
        tracing::info!(identity = %config.election.identity, "leading: reconciling");
        let (stop, stopped) = oneshot::channel::<()>();
        let mut controller = controller(client, config.namespace.as_deref(), ctx.clone(), stopped);
        tokio::select! {
            _ = &mut shutdown => {
                let _ = stop.send(());
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, controller).await;
                return;
            }
            _ = is_now(&mut role, false) => {
                // Dropping the controller stops it at once: another replica may lead soon.
                tracing::warn!("lost the lease: reconciling stopped");
            }
            _ = &mut controller => {
                tracing::error!("the controller ended on its own; starting it again");
            }
        }
    }
}

/// Waits until this replica leads (`leading`) or does not; false if the election ended.
async fn is_now(role: &mut watch::Receiver<Role>, leading: bool) -> bool {
    // The guard `wait_for` returns is not held across an await.
    role.wait_for(|r| (*r == Role::Leader) == leading)
        .await
        .is_ok()
}

/// The controller of `OrbitCluster`s in `namespace` (or all), stopping gracefully when
/// `stopped` fires.
fn controller(
    client: &Client,
    namespace: Option<&str>,
    ctx: Arc<Context>,
    stopped: oneshot::Receiver<()>,
) -> futures::future::BoxFuture<'static, ()> {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    Controller::new(
        api::<OrbitCluster>(client, namespace),
        watcher::Config::default(),
    )
    // Only the objects the renderer labels: not every ConfigMap of the cluster in memory.
    .owns(api::<StatefulSet>(client, namespace), ours())
    .owns(api::<ConfigMap>(client, namespace), ours())
    .graceful_shutdown_on(stopped.map(|_| ()))
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .boxed()
}

/// The watch of the objects the operator renders: those with the backend label.
fn ours() -> watcher::Config {
    watcher::Config::default().labels(crate::render::BACKEND_LABEL)
}

/// Serves `/healthz` and `/readyz` (see the module documentation) until aborted.
async fn serve_probes(listener: tokio::net::TcpListener, role: watch::Receiver<Role>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let ready = move || {
        let role = role.borrow().clone();
        async move {
            match role {
                Role::Unknown => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no answer from the API server yet\n".to_string(),
                ),
                Role::Leader => (StatusCode::OK, "ready: leading\n".to_string()),
                Role::Follower(holder) => (
                    StatusCode::OK,
                    format!(
                        "ready: standby (leader: {})\n",
                        holder.as_deref().unwrap_or("none")
                    ),
                ),
            }
        }
    };
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready));
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "probe server");
    }
}
