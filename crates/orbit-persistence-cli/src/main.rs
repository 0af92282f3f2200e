//! `orbit-persistence`: check a config, and inspect and operate a lease directory.
//!
//! Every command that opens a store takes `--config FILE` (TOML, as
//! `PersistenceConfig::from_path` reads it); without it, the environment
//! (`ORBIT_PERSISTENCE_BACKEND`, `ORBIT_PERSISTENCE_DATA_DIR`). Output is JSON (one value per
//! line), so it pipes into `jq`.
//!
//! Exit codes: 0 success; 1 the lease asked for does not exist; 2 bad usage or an invalid
//! config (the message names the field); 3 the store failed (locked by another process,
//! corruption, I/O); 4 `verify` found problems.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use orbit_persistence::{
    AddressableDirectoryProvider, AddressableReference, Key, NodeId, OrbitError, PersistenceConfig,
    SystemClock,
};

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
        /// The node's namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Removes every lease expired now; prints how many.
    Cleanup(Store),
    /// Prints every lease of a consistent snapshot, one JSON object per line, in reference
    /// order.
    Dump(Store),
    /// Reads the whole store back, checking checksums and that the indexes agree with the
    /// leases; prints the report (exit code 4 if it found problems).
    Verify(Store),
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validates FILE and prints the effective config as TOML.
    Check {
        /// The config file.
        file: PathBuf,
    },
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
            | OrbitError::BackendNotCompiled(_) => 2,
            _ => 3,
        };
        Failure(code, e.to_string())
    }
}

/// The config of `store`; any failure to read it (a missing file too) is a usage error.
fn load(store: &Store) -> Result<PersistenceConfig, Failure> {
    match &store.config {
        Some(path) => PersistenceConfig::from_path(path),
        None => PersistenceConfig::from_env(),
    }
    .map_err(|e| Failure(2, e.to_string()))
}

async fn open(store: &Store) -> Result<Arc<dyn AddressableDirectoryProvider>, Failure> {
    let config = load(store)?;
    // Opening recovers the data directory: blocking file I/O, off the runtime's workers.
    let opened = tokio::task::spawn_blocking(move || {
        orbit_persistence::open(&config, Arc::new(SystemClock))
    })
    .await
    .map_err(|e| Failure(3, format!("open task failed: {e}")))?;
    Ok(opened?)
}

fn json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure(3, format!("JSON output: {e}")))
}

fn key(kind: KeyKind, key: Option<String>) -> Result<Key, Failure> {
    let need = |k: Option<String>| {
        k.ok_or_else(|| Failure(2, "KEY is required for this --key-kind".into()))
    };
    let number = |s: String| Failure(2, format!("KEY {s:?} is not a number of that kind"));
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
            let effective = match config.backend {
                orbit_persistence::BackendType::Memory => PersistenceConfig {
                    memory: Some(config.memory_or_default()),
                    ..config
                },
                orbit_persistence::BackendType::CowBTree => PersistenceConfig {
                    cow_btree: Some(config.cow_btree_or_default()),
                    ..config
                },
                orbit_persistence::BackendType::LsmTree => PersistenceConfig {
                    lsm_tree: Some(config.lsm_tree_or_default()),
                    ..config
                },
                orbit_persistence::BackendType::RocksDB => PersistenceConfig {
                    rocksdb: Some(config.rocksdb_or_default()),
                    ..config
                },
                orbit_persistence::BackendType::Etcd => config,
            };
            let text = toml::to_string(&effective)
                .map_err(|e| Failure(3, format!("printing the config: {e}")))?;
            print!("{text}");
        }
        Command::Stats(store) => {
            let s = open(&store).await?;
            let out = serde_json::json!({
                "health": s.health_check().await,
                "metrics": s.metrics().await,
            });
            println!("{}", json(&out)?);
            s.shutdown().await?;
        }
        Command::Get {
            store,
            addressable_type,
            key: k,
            key_kind,
        } => {
            let r = AddressableReference::new(addressable_type, key(key_kind, k)?);
            let s = open(&store).await?;
            let found = s.get_lease(&r).await;
            s.shutdown().await?;
            match found? {
                Some(lease) => println!("{}", json(&lease)?),
                None => return Err(Failure(1, format!("no lease for {r:?}"))),
            }
        }
        Command::ListNode {
            store,
            node,
            namespace,
        } => {
            let s = open(&store).await?;
            let leases = s.list_node_leases(&NodeId::new(node, namespace)).await;
            s.shutdown().await?;
            for lease in leases? {
                println!("{}", json(&lease)?);
            }
        }
        Command::Dump(store) => {
            let config = load(&store)?;
            orbit_persistence::dump(&config, |lease| {
                use std::io::Write;
                let line = serde_json::to_string(&lease)
                    .map_err(|e| OrbitError::Unavailable(format!("JSON output: {e}")))?;
                writeln!(std::io::stdout().lock(), "{line}")
                    .map_err(|e| OrbitError::io("write", "stdout", e))
            })
            .await?;
        }
        Command::Verify(store) => {
            let config = load(&store)?;
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
            println!("{}", json(&report)?);
            if !report.is_clean() {
                return Err(Failure(
                    4,
                    format!("{} problem(s) found", report.problems.len()),
                ));
            }
        }
        Command::Cleanup(store) => {
            let s = open(&store).await?;
            let removed = s.cleanup_expired_leases().await;
            s.shutdown().await?;
            println!("{}", json(&serde_json::json!({ "removed": removed? }))?);
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("orbit-persistence: {message}");
            ExitCode::from(code)
        }
    }
}
