//! `orbit-persistence`: check a config, and inspect and operate a lease directory.
//!
//! Every command that opens a store takes `--config FILE` (TOML, as
//! `PersistenceConfig::from_path` reads it: a relative `data_dir` is relative to the file);
//! without it, the environment (`ORBIT_PERSISTENCE_BACKEND`, `ORBIT_PERSISTENCE_DATA_DIR`).
//! They operate an existing store: a data directory that does not exist is refused (exit 2)
//! rather than created, and so is the memory backend, which would only ever show an empty
//! store. Output is JSON (one value per line), so it pipes into `jq`; a reader that goes away
//! (`| head -1`) ends the command quietly with exit 0.
//!
//! Exit codes: 0 success; 1 the lease asked for does not exist; 2 bad usage, an invalid
//! config (the message names the field), a missing data directory, or a directory that holds
//! another engine's store or other files; 3 the store failed (locked by another process,
//! corruption, I/O, an unreachable cluster; `stats` prints an unhealthy store's health, then
//! exits 3); 4 `verify` found problems.

#[cfg(feature = "k8s")]
mod operator;
mod signal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use orbit_persistence::config::{ENV_BACKEND, ENV_DATA_DIR};
use orbit_persistence::migrate::{MigrationReport, SwappableProvider};
use orbit_persistence::{
    AddressableDirectoryProvider, AddressableReference, BackendType, Key, NodeId, OrbitError,
    PersistenceConfig, PersistenceProvider, ProviderHealth, SystemClock,
};
use orbit_persistence_bench::subject::Subject;
use orbit_persistence_bench::{chart, suite};

#[derive(Parser)]
#[command(
    name = "orbit-persistence",
    version,
    about = "Inspect and operate an orbit-persistence lease directory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validates a config file and prints the effective config (every default filled in).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Prints the health and metrics of a store.
    Stats(Store),
    /// Opens a store and serves its metrics (`GET /metrics`, Prometheus text) and health
    /// (`GET /healthz`: 200, or 503 when unhealthy, with the reason as JSON) on --listen,
    /// until SIGTERM or Ctrl-C; then closes the store cleanly.
    ServeMetrics {
        #[command(flatten)]
        store: Store,
        /// The address to serve on, e.g. 127.0.0.1:9464.
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Prints one lease (exit code 1 if there is none).
    Get {
        #[command(flatten)]
        store: Store,
        /// The addressable type.
        addressable_type: String,
        /// The key (for `--key-kind none`, omit it).
        key: Option<String>,
        /// How to read the key.
        #[arg(long, value_enum, default_value_t = KeyKind::String)]
        key_kind: KeyKind,
    },
    /// Prints the leases a node holds, one JSON object per line.
    ListNode {
        #[command(flatten)]
        store: Store,
        /// The node's key.
        node: String,
        /// The node's namespace (required: a node key alone names no node).
        #[arg(long)]
        namespace: String,
    },
    /// Removes every lease expired now; prints how many.
    Cleanup(Store),
    /// Removes every lease of one node (a node that died), through the node index, in bounded
    /// atomic batches; prints how many as JSON. Safe to run again after an interruption.
    EvictNode {
        #[command(flatten)]
        store: Store,
        /// The node's key.
        node: String,
        /// The node's namespace (required: a node key alone names no node).
        #[arg(long)]
        namespace: String,
    },
    /// Prints the change feed, one JSON event per line, from after `--from` (default: the
    /// current revision, so only what comes next) until `--count` events or an error
    /// (`Compacted`: the history no longer goes back that far; exit 3). On etcd it follows
    /// the cluster live; a local engine's store is opened read-only, so it prints the
    /// history it keeps (its directory must not be open elsewhere) and then waits.
    Watch {
        #[command(flatten)]
        store: Store,
        /// The revision to start after (default: the current one). 0 reads from the store's
        /// first change, if its history still goes back that far (else exit 3, `Compacted`).
        #[arg(long)]
        from: Option<u64>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Prints every lease of a consistent snapshot, one JSON object per line, in reference
    /// order.
    Dump(Store),
    /// Writes every lease of a consistent snapshot to a new backup FILE (a portable file that
    /// restores into any backend; docs/operating.md#backup-and-restore) and prints its summary as JSON. The
    /// store is opened read-only: back up a store a service holds open from that service.
    Backup {
        #[command(flatten)]
        store: Store,
        /// The backup file to create (refused if it exists).
        file: PathBuf,
    },
    /// Verifies a backup FILE (every checksum, the order and counts) and restores it into a
    /// new store as the config describes: its data directory must be absent or empty. A
    /// damaged file creates nothing (exit 3, naming the offset). Prints the summary as JSON.
    Restore {
        /// The backup file.
        file: PathBuf,
        #[command(flatten)]
        store: Store,
    },
    /// Reads a whole backup FILE back and checks every checksum; prints its summary as JSON.
    /// A damaged or truncated file exits 3 naming the offset, a newer format exits 2.
    VerifyBackup {
        /// The backup file.
        file: PathBuf,
    },
    /// Moves a stopped store into a new store of another backend (the target's data directory
    /// must be absent or empty), by the live migration's code path: afterwards `--from`'s
    /// config opens the new store too. Leases keep their revisions. Prints the migration's
    /// report as JSON. From etcd (no live migration), a backup into a temporary file beside
    /// the target, restored, printing the restore's summary.
    Migrate {
        /// The config of the store to copy.
        #[arg(long)]
        from: PathBuf,
        /// The config of the new store.
        #[arg(long)]
        to: PathBuf,
    },
    /// Reads the whole store back, checking checksums and that the indexes agree with the
    /// leases; prints the report (exit code 4 if it found problems).
    Verify(Store),
    /// Runs the lease benchmark (docs/benchmark.md) on every compiled backend and the peers (redb,
    /// fjall, and raw RocksDB when built with `--features rocksdb`) side by side, and on etcd
    /// when given `--etcd-endpoints`; writes report.md, report.json and SVG charts into the
    /// output directory and prints the table.
    Bench(BenchArgs),
    /// Kubernetes: the OrbitCluster CRD, and the manifests of a cluster.
    #[cfg(feature = "k8s")]
    K8s {
        #[command(subcommand)]
        action: K8sAction,
    },
    /// The writer the benchmark kills with SIGKILL (started by `bench`; not for use by hand).
    #[command(hide = true)]
    BenchChild {
        subject: String,
        dir: PathBuf,
        n: usize,
        /// The etcd endpoints, comma-separated (empty: none).
        #[arg(default_value = "")]
        etcd_endpoints: String,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Quick mode: N = 100,000, 200,000 gets per run, best of 2 runs (a few minutes).
    #[arg(long)]
    quick: bool,
    /// Leases in the data set (default 1,000,000; 100,000 with --quick).
    #[arg(long, short)]
    n: Option<usize>,
    /// Where report.md, report.json and the charts go (created if missing).
    #[arg(long, short, default_value = "bench-report")]
    out: PathBuf,
    /// Where the stores live during the run (default: the output directory; created if
    /// missing). Put it on the disk you want to measure.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Only these subjects (comma-separated ids: memory, cow_btree, lsm_tree, rocksdb, etcd,
    /// redb, fjall, raw_rocksdb).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also benchmark the etcd backend on this cluster (comma-separated client URLs; needs a
    /// build with `--features etcd`). Its keys go under `/orbit-bench/...`, and are removed at
    /// the end. Use a cluster of your own: the load is heavy.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Gets per `get` run (overrides the mode's; for smoke tests).
    #[arg(long)]
    gets: Option<usize>,
    /// Operations per `mixed` run (overrides the mode's).
    #[arg(long)]
    mixed_ops: Option<usize>,
    /// Runs per repeatable phase (overrides the mode's).
    #[arg(long)]
    reps: Option<usize>,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validates FILE and prints the effective config as TOML.
    Check {
        /// The config file.
        file: PathBuf,
    },
}

#[cfg(feature = "k8s")]
#[derive(Subcommand)]
enum K8sAction {
    /// Prints the OrbitCluster CustomResourceDefinition as YAML.
    Crd,
    /// Checks an OrbitCluster (YAML) as the API server and the operator would, and prints the
    /// objects that run it (StorageClass, ConfigMap, Service, StatefulSet) as YAML.
    Render {
        /// The OrbitCluster file.
        file: PathBuf,
    },
    /// Writes the CRD, one example cluster per backend, their manifests and the operator's
    /// namespace, RBAC and Deployment into DIR (the repository's `deploy/`).
    Deploy {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// Runs the operator: while this replica holds the election's Lease, reconciles every
    /// OrbitCluster (or those of --namespace). Uses the pod's service account, or KUBECONFIG;
    /// stops within a second on SIGTERM or Ctrl-C, handing the Lease over.
    Operator(operator::OperatorArgs),
}

#[derive(clap::Args)]
struct Store {
    /// The config file; without it, ORBIT_PERSISTENCE_BACKEND and ORBIT_PERSISTENCE_DATA_DIR.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyKind {
    String,
    Int32,
    Int64,
    None,
}

/// A failure, with the exit code it maps to.
struct Failure(u8, String);

impl From<OrbitError> for Failure {
    fn from(e: OrbitError) -> Self {
        let code = match e {
            OrbitError::Config(_)
            | OrbitError::InvalidInput(_)
            | OrbitError::BackendNotCompiled(_)
            | OrbitError::WrongStore { .. } => 2,
            _ => 3,
        };
        Failure(code, e.to_string())
    }
}

impl Failure {
    /// Stdout was closed by its reader: not an error of ours (`| head`), so exit 0, silently.
    fn closed_stdout() -> Failure {
        Failure(0, String::new())
    }
}

/// Writes `text` to stdout. A reader that went away (`EPIPE`) ends the command with exit 0.
fn out(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::closed_stdout()),
        Err(e) => Err(Failure(3, format!("writing to stdout: {e}"))),
    }
}

/// A progress line on stderr; a closed stderr is ignored (`eprintln!` would panic).
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// [`out`] of one line.
fn out_line(line: &str) -> Result<(), Failure> {
    out(&format!("{line}\n"))
}

/// The config of `store`; any failure to read it (a missing file too) is a usage error.
fn load(store: &Store) -> Result<PersistenceConfig, Failure> {
    match &store.config {
        Some(path) => PersistenceConfig::from_path(path),
        None => PersistenceConfig::from_env(),
    }
    .map_err(|e| Failure(2, e.to_string()))
}

/// The config of a command that operates an existing store: one was given (a file or the
/// environment), it names a backend compiled in that keeps data somewhere, and its data
/// directory exists. Nothing is created to find that out.
fn load_existing(store: &Store) -> Result<PersistenceConfig, Failure> {
    if store.config.is_none() && std::env::var_os(ENV_BACKEND).is_none() {
        return Err(Failure(
            2,
            format!(
                "no store given: pass --config FILE (or set {ENV_BACKEND} and \
                 {ENV_DATA_DIR})"
            ),
        ));
    }
    let config = load(store)?;
    if config.backend == BackendType::Memory {
        return Err(Failure(
            2,
            "the config selects the memory backend, which keeps nothing between processes: \
             there is no store to operate (point --config at the file of a disk backend or \
             etcd)"
                .into(),
        ));
    }
    if !orbit_persistence::compiled_backends().contains(&config.backend) {
        return Err(OrbitError::BackendNotCompiled(config.backend).into());
    }
    if let Some(dir) = config.data_dir()
        && !dir.is_dir()
    {
        return Err(Failure(
            2,
            format!(
                "data directory {} does not exist (or is not a directory): check data_dir in \
                 the config; nothing was created",
                dir.display()
            ),
        ));
    }
    Ok(config)
}

/// How a command opens its store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Inspection: `orbit_persistence::open_read_only`, which changes no byte of our engines'
    /// stores.
    Inspect,
    /// A command that writes (`cleanup`).
    Write,
}

async fn open(
    store: &Store,
    access: Access,
) -> Result<Arc<dyn AddressableDirectoryProvider>, Failure> {
    open_config(load_existing(store)?, access).await
}

/// [`open`] of a config already loaded.
async fn open_config(
    config: PersistenceConfig,
    access: Access,
) -> Result<Arc<dyn AddressableDirectoryProvider>, Failure> {
    // Opening recovers the data directory: blocking file I/O, off the runtime's workers.
    let opened = tokio::task::spawn_blocking(move || match access {
        Access::Inspect => orbit_persistence::open_read_only(&config, Arc::new(SystemClock)),
        Access::Write => orbit_persistence::open(&config, Arc::new(SystemClock)),
    })
    .await
    .map_err(|e| Failure(3, format!("open task failed: {e}")))?;
    Ok(opened?)
}

/// `serve-metrics`: the store opened as an application would open it (recovery included), its
/// `/metrics` and `/healthz` served until SIGTERM or Ctrl-C, then a clean close.
async fn serve_metrics(store: &Store, listen: std::net::SocketAddr) -> Result<(), Failure> {
    let stop = signal::stop_signal().map_err(|e| Failure(3, format!("signal handlers: {e}")))?;
    let config = load_existing(store)?;
    let backend = config.backend;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure(2, format!("--listen {listen}: {e}")))?;
    let s = open_config(config, Access::Write).await?;
    note(&format!("serving /metrics and /healthz on http://{listen}"));
    let served = orbit_persistence::exporter::serve(listener, s.clone(), backend.as_str(), stop)
        .await
        .map_err(|e| Failure(3, format!("serving on {listen}: {e}")));
    let closed = s.shutdown().await;
    served?;
    Ok(closed?)
}

fn json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure(3, format!("JSON output: {e}")))
}

fn key(kind: KeyKind, key: Option<String>) -> Result<Key, Failure> {
    let need = |k: Option<String>| {
        k.ok_or_else(|| Failure(2, "KEY is required for this --key-kind".into()))
    };
    let number = |s: String| Failure(2, format!("KEY {s:?} is not a number of that kind"));
    if let (KeyKind::None, Some(k)) = (kind, &key) {
        return Err(Failure(
            2,
            format!("--key-kind none takes no KEY, got {k:?}: drop it, or pick another kind"),
        ));
    }
    Ok(match kind {
        KeyKind::String => Key::string(need(key)?),
        KeyKind::Int32 => {
            let k = need(key)?;
            Key::Int32Key {
                key: k.parse().map_err(|_| number(k.clone()))?,
            }
        }
        KeyKind::Int64 => {
            let k = need(key)?;
            Key::Int64Key {
                key: k.parse().map_err(|_| number(k.clone()))?,
            }
        }
        KeyKind::None => Key::NoKey,
    })
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Config {
            action: ConfigAction::Check { file },
        } => {
            let config = load(&Store { config: Some(file) })?;
            if !orbit_persistence::compiled_backends().contains(&config.backend) {
                return Err(OrbitError::BackendNotCompiled(config.backend).into());
            }
            let effective = config.effective();
            let text = toml::to_string(&effective)
                .map_err(|e| Failure(3, format!("printing the config: {e}")))?;
            out(&text)?;
        }
        Command::ServeMetrics { store, listen } => serve_metrics(&store, listen).await?,
        Command::Stats(store) => {
            let s = open(&store, Access::Inspect).await?;
            let mut health = s.health_check().await;
            let metrics = s.metrics().await;
            let recovery = s.recovery_report().await;
            // A store that cannot close is not healthy, whatever it said before.
            if let Err(e) = s.shutdown().await {
                health = ProviderHealth::Unhealthy {
                    reason: format!("closing the store failed: {e}"),
                };
            }
            let printed = serde_json::json!({
                "health": health,
                "metrics": metrics,
                "recovery": recovery,
            });
            out_line(&json(&printed)?)?;
            if let ProviderHealth::Unhealthy { reason } = health {
                return Err(Failure(3, format!("the store is unhealthy: {reason}")));
            }
        }
        Command::Get {
            store,
            addressable_type,
            key: k,
            key_kind,
        } => {
            let r = AddressableReference::new(addressable_type, key(key_kind, k)?);
            let s = open(&store, Access::Inspect).await?;
            // What was read is printed before the store closes: a close that fails (a full
            // disk) must not swallow it.
            let printed = match s.get_lease(&r).await {
                Ok(Some(lease)) => json(&lease).and_then(|line| out_line(&line)),
                Ok(None) => Err(Failure(1, format!("no lease for {r}"))),
                Err(e) => Err(e.into()),
            };
            let closed = s.shutdown().await;
            printed?;
            closed?;
        }
        Command::ListNode {
            store,
            node,
            namespace,
        } => {
            let s = open(&store, Access::Inspect).await?;
            let printed = match s.list_node_leases(&NodeId::new(node, namespace)).await {
                Ok(leases) => leases
                    .iter()
                    .try_for_each(|lease| json(lease).and_then(|line| out_line(&line))),
                Err(e) => Err(e.into()),
            };
            let closed = s.shutdown().await;
            printed?;
            closed?;
        }
        Command::Dump(store) => {
            let config = load_existing(&store)?;
            let dumped = orbit_persistence::dump(&config, |lease| {
                use std::io::Write;
                let line = serde_json::to_string(&lease).map_err(|e| {
                    OrbitError::internal("orbit-persistence-cli", format!("JSON output: {e}"))
                })?;
                writeln!(std::io::stdout().lock(), "{line}")
                    .map_err(|e| OrbitError::io("write", "stdout", e))
            })
            .await;
            match dumped {
                Err(OrbitError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    return Err(Failure::closed_stdout());
                }
                other => other?,
            };
        }
        Command::Backup { store, file } => {
            let config = load_existing(&store)?;
            let summary = with_spinner(
                format!("backing up into {}", file.display()),
                orbit_persistence::backup_store(&config, &file),
            )
            .await?;
            out_line(&json(&summary)?)?;
        }
        Command::Restore { file, store } => {
            let config = load(&store)?;
            let summary = with_spinner(
                format!("restoring {}", file.display()),
                orbit_persistence::restore(&file, &config),
            )
            .await?;
            out_line(&json(&summary)?)?;
        }
        Command::VerifyBackup { file } => {
            let summary = tokio::task::spawn_blocking(move || {
                orbit_persistence::backup::verify_backup(
                    &orbit_persistence::fs::StdFileSystem::new(),
                    &file,
                )
            })
            .await
            .map_err(|e| Failure(3, format!("verify task failed: {e}")))??;
            out_line(&json(&summary)?)?;
        }
        Command::Migrate { from, to } => {
            let source = load_existing(&Store { config: Some(from) })?;
            let target = load(&Store { config: Some(to) })?;
            if source.backend == BackendType::Etcd {
                let summary =
                    with_spinner("migrating".into(), copy_through_backup(&source, &target)).await?;
                out_line(&json(&summary)?)?;
            } else {
                let report = with_spinner("migrating".into(), migrate(&source, &target)).await?;
                out_line(&json(&report)?)?;
            }
        }
        Command::Verify(store) => {
            let config = load_existing(&store)?;
            let report = match orbit_persistence::verify(&config).await {
                Ok(report) => report,
                // Bad bytes met while opening are findings too.
                Err(e @ OrbitError::Corruption { .. }) => {
                    let mut report = orbit_persistence::verify::VerifyReport::default();
                    report.problem(e.to_string());
                    report
                }
                Err(e) => return Err(e.into()),
            };
            out_line(&json(&report)?)?;
            if !report.is_clean() {
                return Err(Failure(
                    4,
                    format!("{} problem(s) found", report.problems.len()),
                ));
            }
        }
        Command::Bench(args) => bench(args).await?,
        #[cfg(feature = "k8s")]
        Command::K8s { action } => k8s(action).await?,
        Command::BenchChild {
            subject,
            dir,
            n,
            etcd_endpoints,
        } => {
            let subject = Subject::from_id(&subject)
                .ok_or_else(|| Failure(2, format!("unknown subject {subject:?}")))?;
            let endpoints: Vec<String> = etcd_endpoints
                .split(',')
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect();
            suite::kill9_child(subject, &dir, n, &endpoints)
                .await
                .map_err(|e| Failure(3, e))?;
        }
        Command::Cleanup(store) => {
            let s = open(&store, Access::Write).await?;
            let removed = s.cleanup_expired_leases().await;
            s.shutdown().await?;
            out_line(&json(&serde_json::json!({ "removed": removed? }))?)?;
        }
        Command::Watch { store, from, count } => {
            let s = open(&store, Access::Inspect).await?;
            let followed = watch(&*s, from, count).await;
            let closed = s.shutdown().await;
            followed?;
            closed?;
        }
        Command::EvictNode {
            store,
            node,
            namespace,
        } => {
            let node = NodeId::new(node, namespace);
            let s = open(&store, Access::Write).await?;
            let removed = with_spinner(
                format!(
                    "evicting the leases of node {:?} in namespace {:?}",
                    node.key, node.namespace
                ),
                s.remove_node_leases(&node),
            )
            .await;
            s.shutdown().await?;
            out_line(&json(&serde_json::json!({
                "node": node.key,
                "namespace": node.namespace,
                "removed": removed?,
            }))?)?;
        }
    }
    Ok(())
}

/// Runs `work` with a spinner and `message` on stderr (indicatif draws nothing when stderr is
/// not a terminal).
async fn with_spinner<T>(message: String, work: impl std::future::Future<Output = T>) -> T {
    let spinner = indicatif::ProgressBar::new_spinner().with_message(message);
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let out = work.await;
    spinner.finish_and_clear();
    out
}

/// `migrate`: `source` opened as a [`SwappableProvider`] and migrated to `target`, then closed.
async fn migrate(
    source: &PersistenceConfig,
    target: &PersistenceConfig,
) -> Result<MigrationReport, OrbitError> {
    let config = source.clone();
    let store = tokio::task::spawn_blocking(move || {
        SwappableProvider::open(&config, Arc::new(SystemClock))
    })
    .await
    .map_err(|e| OrbitError::internal("orbit-persistence-cli", e))??;
    let migrated = store.migrate_to(target).await;
    let closed = store.shutdown().await;
    let report = migrated?;
    closed?;
    Ok(report)
}

/// `migrate` out of etcd: a backup of `source` into a temporary file beside the target's data
/// directory, restored into `target`; the file is removed either way.
async fn copy_through_backup(
    source: &PersistenceConfig,
    target: &PersistenceConfig,
) -> Result<orbit_persistence::backup::RestoreSummary, OrbitError> {
    let beside = target
        .data_dir()
        .and_then(|d| d.parent().map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(std::env::temp_dir);
    // Created and removed on the blocking pool: file I/O stays off the runtime's workers.
    let staging = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new()
            .prefix(".orbit-migrate-")
            .tempdir_in(&beside)
            .map_err(|e| OrbitError::io("create a temporary directory", &beside, e))
    })
    .await
    .map_err(|e| OrbitError::internal("orbit-persistence-cli", e))??;
    let file = staging.path().join("migrate.orbak");
    let copied = match orbit_persistence::backup_store(source, &file).await {
        Ok(_) => orbit_persistence::restore(&file, target).await,
        Err(e) => Err(e),
    };
    let _ = tokio::task::spawn_blocking(move || drop(staging)).await;
    copied
}

/// `watch`: prints events of `store`'s feed after `from` (default: its current revision),
/// `count` of them or until an error.
async fn watch(
    store: &dyn AddressableDirectoryProvider,
    from: Option<u64>,
    count: Option<u64>,
) -> Result<(), Failure> {
    let from = match from {
        Some(from) => from,
        None => store.current_revision().await?,
    };
    let mut feed = store.watch(from).await?;
    let mut printed = 0;
    while count.is_none_or(|c| printed < c) {
        match feed.next().await {
            Some(Ok(event)) => out_line(&json(&event)?)?,
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(()),
        }
        printed += 1;
    }
    Ok(())
}

/// `k8s crd | render FILE | deploy DIR | operator`.
#[cfg(feature = "k8s")]
async fn k8s(action: K8sAction) -> Result<(), Failure> {
    use orbit_persistence_k8s::{deploy, schema};
    let yaml = |e: orbit_persistence_k8s::YamlError| Failure(3, format!("YAML output: {e}"));
    match action {
        K8sAction::Crd => out(&schema::crd_yaml().map_err(yaml)?)?,
        K8sAction::Render { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure(2, format!("read {}: {e}", file.display())))?;
            let cluster =
                schema::parse(&text).map_err(|e| Failure(2, format!("{}: {e}", file.display())))?;
            let rendered = orbit_persistence_k8s::render(&cluster)
                .map_err(|e| Failure(2, format!("{}: {e}", file.display())))?;
            out(&rendered.to_yaml().map_err(yaml)?)?;
        }
        K8sAction::Operator(args) => operator::operator(args).await?,
        K8sAction::Deploy { dir } => {
            for (path, text) in deploy::files().map_err(|e| Failure(3, e))? {
                let path = dir.join(path);
                let io = |e: std::io::Error| Failure(3, format!("write {}: {e}", path.display()));
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::write(&path, text).map_err(io)?;
                note(&format!("wrote {}", path.display()));
            }
        }
    }
    Ok(())
}

/// `bench`: runs the suite and writes the report, its JSON and the charts.
async fn bench(args: BenchArgs) -> Result<(), Failure> {
    let clustered = Subject::clustered();
    if !args.etcd_endpoints.is_empty() && clustered.is_empty() {
        return Err(Failure(
            2,
            "--etcd-endpoints: this build has no etcd backend (build with --features etcd)".into(),
        ));
    }
    let subjects: Vec<Subject> = if args.only.is_empty() {
        let mut all = Subject::all();
        if !args.etcd_endpoints.is_empty() {
            // Ours first, then the peers, as in every table.
            let peers = all.iter().position(|s| s.is_peer()).unwrap_or(all.len());
            all.splice(peers..peers, clustered);
        }
        all
    } else {
        args.only
            .iter()
            .map(|id| {
                Subject::from_id(id).ok_or_else(|| {
                    let known: Vec<_> = Subject::all()
                        .into_iter()
                        .chain(Subject::clustered())
                        .map(|s| s.id())
                        .collect();
                    Failure(
                        2,
                        format!(
                            "--only: unknown or not compiled-in subject {id:?}; this build has {}",
                            known.join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    if args.etcd_endpoints.is_empty()
        && let Some(s) = subjects.iter().find(|s| s.needs_cluster())
    {
        return Err(Failure(
            2,
            format!("--only {}: give the cluster with --etcd-endpoints", s.id()),
        ));
    }
    let io = |what: &str, e: std::io::Error| Failure(3, format!("{what}: {e}"));
    std::fs::create_dir_all(&args.out).map_err(|e| io("create the output directory", e))?;
    let work_dir = args.work_dir.unwrap_or_else(|| args.out.clone());
    std::fs::create_dir_all(&work_dir).map_err(|e| io("create the work directory", e))?;
    let exe = std::env::current_exe().map_err(|e| io("find this program", e))?;
    let child = vec![exe.into_os_string(), "bench-child".into()];
    let mut options = match args.quick {
        true => suite::Options::quick(subjects, work_dir, child),
        false => suite::Options::full(subjects, work_dir, child),
    };
    options.n = args.n.unwrap_or(options.n);
    options.gets = args.gets.unwrap_or(options.gets);
    options.mixed_ops = args.mixed_ops.unwrap_or(options.mixed_ops);
    options.reps = args.reps.unwrap_or(options.reps);
    options.etcd_endpoints = args.etcd_endpoints;
    if options.n < 1_000 {
        return Err(Failure(
            2,
            format!("-n must be at least 1000 (got {})", options.n),
        ));
    }
    let report = suite::run(&options).await.map_err(|e| Failure(3, e))?;
    let markdown = report.markdown();
    let write = |name: &str, text: &str| {
        std::fs::write(args.out.join(name), text).map_err(|e| io(&format!("write {name}"), e))
    };
    write("report.md", &markdown)?;
    write("report.json", &report.json())?;
    let charts = chart::write_charts(&report, &args.out).map_err(|e| Failure(3, e))?;
    out(&markdown)?;
    note(&format!(
        "wrote {}, {} and {} charts ({})",
        args.out.join("report.md").display(),
        args.out.join("report.json").display(),
        charts.len(),
        charts
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            if !message.is_empty() {
                note(&format!("orbit-persistence: {message}"));
            }
            ExitCode::from(code)
        }
    }
}
