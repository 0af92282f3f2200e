//! `orbit-persistence k8s operator`: runs the Kubernetes operator of orbit-persistence-k8s
//! ([`orbit_persistence_k8s::operator::run`]) in this process, with the cluster's credentials,
//! logs on stderr, and SIGTERM or Ctrl-C as the way to stop it.

use std::net::SocketAddr;

use orbit_persistence_k8s::leader::ElectionConfig;
use orbit_persistence_k8s::operator::{DEFAULT_LEASE_NAME, OperatorConfig};

use crate::Failure;

/// How the operator's log lines are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

#[derive(clap::Args)]
pub struct OperatorArgs {
    /// Watch the OrbitClusters of this namespace only (default: every namespace).
    #[arg(long)]
    namespace: Option<String>,
    /// The Lease the replicas elect a leader on.
    #[arg(long, default_value = DEFAULT_LEASE_NAME)]
    lease_name: String,
    /// The Lease's namespace (default: the pod's own, from POD_NAMESPACE or the service
    /// account, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the election (default: POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Serve /healthz and /readyz on this address (e.g. 0.0.0.0:8080; default: not served).
    #[arg(long)]
    probe_listen: Option<SocketAddr>,
    /// Log lines as text or JSON (level from RUST_LOG; default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// The host name, for an identity when the pod's name is not given.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn operator(args: OperatorArgs) -> Result<(), Failure> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    // The handlers are installed before anything else runs: a SIGTERM from now on is a clean
    // stop, never the default kill.
    let stop =
        crate::signal::stop_signal().map_err(|e| Failure(3, format!("signal handlers: {e}")))?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| Failure(2, format!("kubernetes: no usable config: {e}")))?;
    let identity = args.identity.or_else(host_name).ok_or_else(|| {
        Failure(
            2,
            "--identity: no POD_NAME and no host name to default to".into(),
        )
    })?;
    let lease_namespace = args
        .lease_namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let config = OperatorConfig {
        namespace: args.namespace,
        election: ElectionConfig::new(&args.lease_name, &lease_namespace, &identity),
        probe_addr: args.probe_listen,
    };
    tracing::info!(
        %identity,
        lease = %format!("{lease_namespace}/{}", args.lease_name),
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        "operator starting"
    );
    orbit_persistence_k8s::operator::run(client, config, stop)
        .await
        .map_err(|e| Failure(2, e.to_string()))
}
