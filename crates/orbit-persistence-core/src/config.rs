//! Configuration: which backend to open and how, loaded from TOML or the environment.
//!
//! Every struct denies unknown fields, so a typo is an error instead of a silently ignored
//! setting, and every field has a safe default, so a file that sets only `backend` works.
//! [`PersistenceConfig::validate`] names the offending field in each message.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::backend::BackendType;
use crate::error::{OrbitError, OrbitResult};

impl BackendType {
    /// Parses the config-file name of a backend.
    pub fn parse(name: &str) -> OrbitResult<Self> {
        const ALL: [BackendType; 5] = [
            BackendType::Memory,
            BackendType::CowBTree,
            BackendType::LsmTree,
            BackendType::RocksDB,
            BackendType::Etcd,
        ];
        ALL.into_iter().find(|b| b.as_str() == name).ok_or_else(|| {
            OrbitError::Config(format!(
                "backend must be one of memory, cow_btree, lsm_tree, rocksdb, etcd; got {name:?}"
            ))
        })
    }
}

/// When a write is made durable.
///
/// In TOML: `sync = "always"`, `sync = "never"` or `sync = { interval_ms = 100 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// fdatasync before a write is acknowledged (batched across concurrent writers). Survives
    /// `kill -9` and power loss.
    #[default]
    Always,
    /// fdatasync at most every N milliseconds: survives `kill -9`, may lose the last N ms on
    /// power loss.
    IntervalMs(u64),
    /// Never fdatasync except at shutdown and checkpoints: survives `kill -9` only.
    Never,
}

/// A string (`always`, `never`) or an object (`{interval_ms = N}`): one value of two JSON
/// types, which a Kubernetes structural schema cannot type. So the schema keeps the value as
/// given (`x-kubernetes-preserve-unknown-fields`), and [`PersistenceConfig`]'s parser is what
/// checks it.
#[cfg(feature = "schemars")]
impl schemars::JsonSchema for SyncMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SyncMode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "When a write is made durable: \"always\" (fdatasync before the \
                acknowledgement), \"never\" (only at shutdown and checkpoints), or \
                {\"interval_ms\": N} (at most every N ms).",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

fn default_data_dir(backend: &str) -> PathBuf {
    PathBuf::from("orbit-data").join(backend)
}

/// Settings of the in-memory backend.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Upper bound on stored leases; a full store answers `InvalidInput` and never evicts.
    /// `None` means unbounded.
    pub max_entries: Option<u64>,
    /// Changes kept for the change feed (`watch`): a watcher can resume from any of the last
    /// `watch_history` revisions; an older one gets `Compacted`. 0 keeps none and turns the
    /// feed off.
    pub watch_history: u64,
}

/// Changes the change feed keeps by default: at a few thousand writes a second, a watcher may
/// be away for about half a minute and resume without a reload.
pub const DEFAULT_WATCH_HISTORY: u64 = 100_000;

/// The most changes a change feed may keep.
pub const MAX_WATCH_HISTORY: u64 = 1 << 32;

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_entries: None,
            watch_history: DEFAULT_WATCH_HISTORY,
        }
    }
}

/// Settings of the copy-on-write B+tree backend.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CowBTreeConfig {
    /// Directory holding the page file, WAL and LOCK.
    pub data_dir: PathBuf,
    /// Durability of acknowledged writes.
    pub sync: SyncMode,
    /// Page size in bytes: a power of two in 1 KiB..=64 KiB.
    pub page_size: u32,
    /// Checkpoint (write dirty pages, switch meta page, truncate WAL) at least this often.
    pub checkpoint_interval_ms: u64,
    /// Checkpoint when the WAL grows past this many bytes. Bounds recovery: replay runs at
    /// about 60 ms per MiB of lease changes on a 1M-lease tree, and the WAL holds at most about
    /// twice this limit (writers wait for a checkpoint that falls that far behind), so the
    /// default 4 MiB keeps a reopen after a crash near half a second at worst. Larger limits
    /// mean fewer page rewrites per change, at the price of longer recoveries.
    pub wal_size_limit: u64,
    /// Bytes of decoded pages kept in memory.
    pub cache_size: u64,
    /// Changes kept for the change feed (`watch`): a watcher can resume from any of the last
    /// `watch_history` revisions; an older one gets `Compacted`. 0 keeps none and turns the
    /// feed off.
    pub watch_history: u64,
}

impl Default for CowBTreeConfig {
    fn default() -> Self {
        CowBTreeConfig {
            data_dir: default_data_dir("cow_btree"),
            sync: SyncMode::Always,
            page_size: 4096,
            checkpoint_interval_ms: 30_000,
            wal_size_limit: 4 << 20,
            cache_size: 256 << 20,
            watch_history: DEFAULT_WATCH_HISTORY,
        }
    }
}

/// Settings of the LSM-tree backend.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LsmTreeConfig {
    /// Directory holding WALs, SSTables, the manifest and LOCK.
    pub data_dir: PathBuf,
    /// Durability of acknowledged writes.
    pub sync: SyncMode,
    /// Bytes a memtable holds before it is frozen and flushed. It bounds recovery: a reopen
    /// after a crash replays the WAL of the memtables not yet flushed (16 MiB of memtable, the
    /// default, is about 5 MB of WAL and 40,000 leases: ~0.2 s).
    pub memtable_size: u64,
    /// Frozen memtables allowed to wait for flush before writers stall.
    pub max_immutable_memtables: u32,
    /// False-positive rate of each table's bloom filter, in (0, 1).
    pub bloom_filter_fp_rate: f64,
    /// Target size of level 1 in bytes; each next level is `level_fanout` times larger.
    pub level1_size: u64,
    /// Size ratio between adjacent levels (>= 2).
    pub level_fanout: u32,
    /// Uncompressed data block size in bytes.
    pub block_size: u32,
    /// Bytes of the block cache; 0 disables it.
    pub block_cache_size: u64,
    /// Compaction write limit in bytes per second; 0 means unlimited.
    pub compaction_rate_limit: u64,
    /// Changes kept for the change feed (`watch`): a watcher can resume from any of the last
    /// `watch_history` revisions; an older one gets `Compacted`. 0 keeps none and turns the
    /// feed off.
    pub watch_history: u64,
}

impl Default for LsmTreeConfig {
    fn default() -> Self {
        LsmTreeConfig {
            data_dir: default_data_dir("lsm_tree"),
            sync: SyncMode::Always,
            memtable_size: 16 << 20,
            max_immutable_memtables: 2,
            bloom_filter_fp_rate: 0.01,
            level1_size: 256 << 20,
            level_fanout: 10,
            block_size: 4096,
            block_cache_size: 64 << 20,
            compaction_rate_limit: 0,
            watch_history: DEFAULT_WATCH_HISTORY,
        }
    }
}

/// Settings of the RocksDB backend.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RocksDbConfig {
    /// RocksDB's database directory.
    pub data_dir: PathBuf,
    /// Durability of acknowledged writes.
    pub sync: SyncMode,
    /// Bytes of the shared LRU block cache.
    pub block_cache_size: u64,
    /// Bytes of each column family's memtable.
    pub write_buffer_size: u64,
    /// Background flush + compaction threads.
    pub max_background_jobs: u32,
    /// Bloom filter bits per key (0 disables filters).
    pub bloom_bits_per_key: u32,
    /// Block compression: `none`, `lz4` or `zstd`.
    pub compression: String,
    /// Changes kept for the change feed (`watch`): a watcher can resume from any of the last
    /// `watch_history` revisions; an older one gets `Compacted`. 0 keeps none and turns the
    /// feed off.
    pub watch_history: u64,
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        RocksDbConfig {
            data_dir: default_data_dir("rocksdb"),
            sync: SyncMode::Always,
            block_cache_size: 256 << 20,
            write_buffer_size: 64 << 20,
            max_background_jobs: 2,
            bloom_bits_per_key: 10,
            compression: "lz4".to_string(),
            watch_history: DEFAULT_WATCH_HISTORY,
        }
    }
}

/// Settings of the etcd backend: where the cluster is, the key prefix the directory lives
/// under, and how long a call may take.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members (`http://host:2379`, or `https://` with `tls`).
    pub endpoints: Vec<String>,
    /// Every key of the directory starts with this prefix; stores with different prefixes
    /// share a cluster without seeing each other.
    pub key_prefix: String,
    /// Milliseconds to connect to a member.
    pub connect_timeout_ms: u64,
    /// Milliseconds a request may take before it fails with `Unavailable` (no hang past it).
    pub request_timeout_ms: u64,
    /// Attempts of an idempotent read (get, list, count) before its error is returned, all
    /// within `request_timeout_ms`; writes are never retried by the store (the caller sees
    /// `Unavailable` and decides).
    pub read_attempts: u32,
    /// Leases removed per cleanup transaction (each costs three deletes and one compare; etcd
    /// allows 128 operations per transaction by default).
    pub cleanup_batch: u32,
    /// User name for etcd authentication (with `password`).
    pub username: Option<String>,
    /// Password for etcd authentication.
    pub password: Option<String>,
    /// TLS to the members; `None` for plain HTTP.
    pub tls: Option<EtcdTlsConfig>,
}

/// TLS files of the etcd backend, PEM encoded.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsConfig {
    /// CA certificate the members' certificates must chain to.
    pub ca_file: PathBuf,
    /// Client certificate, for clusters that require client authentication.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// Server name to verify in the members' certificates (default: the endpoint's host).
    pub domain: Option<String>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            key_prefix: "/orbit/leases/".to_string(),
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            read_attempts: 3,
            cleanup_batch: 32,
            username: None,
            password: None,
            tls: None,
        }
    }
}

/// The whole configuration of a store: the backend to open and its settings.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceConfig {
    /// The backend to open.
    pub backend: BackendType,
    /// Settings of the memory backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryConfig>,
    /// Settings of the COW B+tree backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cow_btree: Option<CowBTreeConfig>,
    /// Settings of the LSM backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsm_tree: Option<LsmTreeConfig>,
    /// Settings of the RocksDB backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rocksdb: Option<RocksDbConfig>,
    /// Settings of the etcd backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdConfig>,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            backend: BackendType::Memory,
            memory: None,
            cow_btree: None,
            lsm_tree: None,
            rocksdb: None,
            etcd: None,
        }
    }
}

/// Largest config file [`PersistenceConfig::from_path`] reads: 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Environment variable naming the backend for [`PersistenceConfig::from_env`].
pub const ENV_BACKEND: &str = "ORBIT_PERSISTENCE_BACKEND";
/// Environment variable naming the data directory for [`PersistenceConfig::from_env`].
pub const ENV_DATA_DIR: &str = "ORBIT_PERSISTENCE_DATA_DIR";

impl PersistenceConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml_str(text: &str) -> OrbitResult<Self> {
        let config: PersistenceConfig =
            toml::from_str(text).map_err(|e| OrbitError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The config as a TOML document [`from_toml_str`](Self::from_toml_str) reads back: how a
    /// migration records its target.
    pub fn to_toml_string(&self) -> OrbitResult<String> {
        toml::to_string(self).map_err(|e| OrbitError::Config(format!("config to TOML: {e}")))
    }

    /// Reads, parses and validates a TOML file. A relative `data_dir` in it is resolved
    /// against the file's directory, so the file means the same store from any working
    /// directory. The file must be a regular file of at most [`MAX_CONFIG_BYTES`] (a config
    /// pointed at `/dev/zero` or a pipe is refused, not read forever).
    pub fn from_path(path: impl AsRef<Path>) -> OrbitResult<Self> {
        use std::io::Read;
        let path = path.as_ref();
        let in_file = |msg: String| OrbitError::Config(format!("{}: {msg}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| OrbitError::io("read", path, e))?;
        if !meta.is_file() {
            return Err(in_file("not a regular file".into()));
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| OrbitError::io("read", path, e))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(in_file(format!(
                "larger than {MAX_CONFIG_BYTES} bytes: not a config file"
            )));
        }
        let mut config: PersistenceConfig =
            toml::from_str(&text).map_err(|e| in_file(e.to_string()))?;
        if let Some(base) = path.parent() {
            config.resolve_data_dirs(base);
        }
        config.validate().map_err(|e| match e {
            OrbitError::Config(msg) => in_file(msg),
            e => e,
        })?;
        Ok(config)
    }

    /// Makes every relative `data_dir` relative to `base` instead of the working directory.
    fn resolve_data_dirs(&mut self, base: &Path) {
        let resolve = |dir: &mut PathBuf| {
            if dir.is_relative() && !dir.as_os_str().is_empty() {
                *dir = base.join(&*dir);
            }
        };
        if let Some(c) = self.cow_btree.as_mut() {
            resolve(&mut c.data_dir);
        }
        if let Some(c) = self.lsm_tree.as_mut() {
            resolve(&mut c.data_dir);
        }
        if let Some(c) = self.rocksdb.as_mut() {
            resolve(&mut c.data_dir);
        }
    }

    /// Builds a config from `ORBIT_PERSISTENCE_BACKEND` (default `memory`) and
    /// `ORBIT_PERSISTENCE_DATA_DIR` (default: the backend's default directory; a relative one
    /// is relative to the working directory). A data directory without a disk backend is an
    /// error: the store it names would never be opened.
    pub fn from_env() -> OrbitResult<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] over any variable source, so it can be tested without touching the
    /// process environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> OrbitResult<Self> {
        let backend = match var(ENV_BACKEND) {
            Some(name) => BackendType::parse(name.trim())
                .map_err(|e| OrbitError::Config(format!("{ENV_BACKEND}: {e}")))?,
            None => BackendType::Memory,
        };
        let data_dir = var(ENV_DATA_DIR).map(PathBuf::from);
        if data_dir.is_some() && matches!(backend, BackendType::Memory | BackendType::Etcd) {
            return Err(OrbitError::Config(format!(
                "{ENV_DATA_DIR} is set but {ENV_BACKEND} is {}, which keeps no data directory: \
                 set {ENV_BACKEND} to cow_btree, lsm_tree or rocksdb",
                match var(ENV_BACKEND) {
                    Some(_) => backend.as_str(),
                    None => "unset (memory)",
                }
            )));
        }
        let mut config = PersistenceConfig {
            backend,
            ..PersistenceConfig::default()
        };
        match backend {
            BackendType::Memory => {}
            // A cluster has no data directory; its endpoints come from a config file.
            BackendType::Etcd => config.etcd = Some(EtcdConfig::default()),
            BackendType::CowBTree => {
                let mut c = CowBTreeConfig::default();
                if let Some(d) = data_dir {
                    c.data_dir = d;
                }
                config.cow_btree = Some(c);
            }
            BackendType::LsmTree => {
                let mut c = LsmTreeConfig::default();
                if let Some(d) = data_dir {
                    c.data_dir = d;
                }
                config.lsm_tree = Some(c);
            }
            BackendType::RocksDB => {
                let mut c = RocksDbConfig::default();
                if let Some(d) = data_dir {
                    c.data_dir = d;
                }
                config.rocksdb = Some(c);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The memory settings, or their defaults when the section is absent.
    pub fn memory_or_default(&self) -> MemoryConfig {
        self.memory.clone().unwrap_or_default()
    }

    /// The COW B+tree settings, or their defaults when the section is absent.
    pub fn cow_btree_or_default(&self) -> CowBTreeConfig {
        self.cow_btree.clone().unwrap_or_default()
    }

    /// The LSM settings, or their defaults when the section is absent.
    pub fn lsm_tree_or_default(&self) -> LsmTreeConfig {
        self.lsm_tree.clone().unwrap_or_default()
    }

    /// The RocksDB settings, or their defaults when the section is absent.
    pub fn rocksdb_or_default(&self) -> RocksDbConfig {
        self.rocksdb.clone().unwrap_or_default()
    }

    /// The etcd settings, or their defaults when the section is absent.
    pub fn etcd_or_default(&self) -> EtcdConfig {
        self.etcd.clone().unwrap_or_default()
    }

    /// This config with the selected backend's section filled in (its defaults where the
    /// file leaves it out): exactly what the store opens, spelled out.
    pub fn effective(&self) -> PersistenceConfig {
        let mut config = self.clone();
        match self.backend {
            BackendType::Memory => config.memory = Some(self.memory_or_default()),
            BackendType::CowBTree => config.cow_btree = Some(self.cow_btree_or_default()),
            BackendType::LsmTree => config.lsm_tree = Some(self.lsm_tree_or_default()),
            BackendType::RocksDB => config.rocksdb = Some(self.rocksdb_or_default()),
            BackendType::Etcd => config.etcd = Some(self.etcd_or_default()),
        }
        config
    }

    /// The data directory of the selected backend; `None` for memory and etcd, which keep
    /// nothing in one.
    pub fn data_dir(&self) -> Option<PathBuf> {
        match self.backend {
            BackendType::Memory | BackendType::Etcd => None,
            BackendType::CowBTree => Some(self.cow_btree_or_default().data_dir),
            BackendType::LsmTree => Some(self.lsm_tree_or_default().data_dir),
            BackendType::RocksDB => Some(self.rocksdb_or_default().data_dir),
        }
    }

    /// The [effective](Self::effective) config with the selected backend's data directory set
    /// to `dir` (no change for memory and etcd).
    pub fn with_data_dir(&self, dir: impl Into<PathBuf>) -> PersistenceConfig {
        let mut config = self.effective();
        let dir = dir.into();
        match config.backend {
            BackendType::Memory | BackendType::Etcd => {}
            BackendType::CowBTree => {
                if let Some(c) = config.cow_btree.as_mut() {
                    c.data_dir = dir;
                }
            }
            BackendType::LsmTree => {
                if let Some(c) = config.lsm_tree.as_mut() {
                    c.data_dir = dir;
                }
            }
            BackendType::RocksDB => {
                if let Some(c) = config.rocksdb.as_mut() {
                    c.data_dir = dir;
                }
            }
        }
        config
    }

    /// Checks every present section; the error names the first bad field. A section for
    /// another backend than `backend` is an error too: it means the file is not what its
    /// author thinks (a store would open with the selected backend's defaults, elsewhere).
    pub fn validate(&self) -> OrbitResult<()> {
        let present = [
            (BackendType::Memory, self.memory.is_some()),
            (BackendType::CowBTree, self.cow_btree.is_some()),
            (BackendType::LsmTree, self.lsm_tree.is_some()),
            (BackendType::RocksDB, self.rocksdb.is_some()),
            (BackendType::Etcd, self.etcd.is_some()),
        ];
        if let Some((other, _)) = present.iter().find(|(b, p)| *p && *b != self.backend) {
            return Err(OrbitError::Config(format!(
                "backend = \"{}\" but the config has a [{}] section: remove the section, or \
                 set backend = \"{}\"",
                self.backend.as_str(),
                other.as_str(),
                other.as_str()
            )));
        }
        if let Some(c) = &self.memory {
            c.validate()?;
        }
        if let Some(c) = &self.cow_btree {
            c.validate()?;
        }
        if let Some(c) = &self.lsm_tree {
            c.validate()?;
        }
        if let Some(c) = &self.rocksdb {
            c.validate()?;
        }
        if let Some(c) = &self.etcd {
            c.validate()?;
        }
        Ok(())
    }
}

fn config_err(field: &str, msg: impl std::fmt::Display) -> OrbitError {
    OrbitError::Config(format!("{field} {msg}"))
}

fn check_data_dir(section: &str, dir: &Path) -> OrbitResult<()> {
    if dir.as_os_str().is_empty() {
        return Err(config_err(
            &format!("{section}.data_dir"),
            "must not be empty",
        ));
    }
    Ok(())
}

fn check_sync(section: &str, sync: SyncMode) -> OrbitResult<()> {
    if let SyncMode::IntervalMs(ms) = sync
        && !(1..=60_000).contains(&ms)
    {
        return Err(config_err(
            &format!("{section}.sync.interval_ms"),
            format_args!("must be in 1..=60000, got {ms}"),
        ));
    }
    Ok(())
}

fn check_range(field: &str, value: u64, min: u64, max: u64) -> OrbitResult<()> {
    if value < min || value > max {
        return Err(config_err(
            field,
            format_args!("must be in {min}..={max}, got {value}"),
        ));
    }
    Ok(())
}

impl MemoryConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> OrbitResult<()> {
        if self.max_entries == Some(0) {
            return Err(config_err(
                "memory.max_entries",
                "must be at least 1 (omit it for no limit), got 0",
            ));
        }
        check_range(
            "memory.watch_history",
            self.watch_history,
            0,
            MAX_WATCH_HISTORY,
        )
    }
}

impl CowBTreeConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> OrbitResult<()> {
        check_data_dir("cow_btree", &self.data_dir)?;
        check_sync("cow_btree", self.sync)?;
        if !self.page_size.is_power_of_two() || !(1024..=65536).contains(&self.page_size) {
            return Err(config_err(
                "cow_btree.page_size",
                format_args!(
                    "must be a power of two in 1024..=65536, got {}",
                    self.page_size
                ),
            ));
        }
        check_range(
            "cow_btree.checkpoint_interval_ms",
            self.checkpoint_interval_ms,
            1,
            3_600_000,
        )?;
        check_range(
            "cow_btree.wal_size_limit",
            self.wal_size_limit,
            1 << 16,
            1 << 40,
        )?;
        check_range("cow_btree.cache_size", self.cache_size, 0, 1 << 44)?;
        check_range(
            "cow_btree.watch_history",
            self.watch_history,
            0,
            MAX_WATCH_HISTORY,
        )
    }
}

impl LsmTreeConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> OrbitResult<()> {
        check_data_dir("lsm_tree", &self.data_dir)?;
        check_sync("lsm_tree", self.sync)?;
        check_range(
            "lsm_tree.memtable_size",
            self.memtable_size,
            1 << 12,
            1 << 34,
        )?;
        check_range(
            "lsm_tree.max_immutable_memtables",
            self.max_immutable_memtables.into(),
            1,
            64,
        )?;
        let fp = self.bloom_filter_fp_rate;
        if !(fp > 0.0 && fp < 1.0) {
            return Err(config_err(
                "lsm_tree.bloom_filter_fp_rate",
                format_args!("must be in (0, 1), got {fp}"),
            ));
        }
        check_range("lsm_tree.level1_size", self.level1_size, 1 << 12, 1 << 44)?;
        check_range("lsm_tree.level_fanout", self.level_fanout.into(), 2, 1000)?;
        if !(512..=1 << 20).contains(&self.block_size) {
            return Err(config_err(
                "lsm_tree.block_size",
                format_args!("must be in 512..=1048576, got {}", self.block_size),
            ));
        }
        check_range(
            "lsm_tree.watch_history",
            self.watch_history,
            0,
            MAX_WATCH_HISTORY,
        )
    }
}

impl EtcdConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> OrbitResult<()> {
        if self.endpoints.is_empty() {
            return Err(config_err(
                "etcd.endpoints",
                "must name at least one member",
            ));
        }
        let scheme = if self.tls.is_some() {
            "https://"
        } else {
            "http://"
        };
        for (i, e) in self.endpoints.iter().enumerate() {
            let host = e.strip_prefix(scheme).unwrap_or_default();
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err(config_err(
                    &format!("etcd.endpoints[{i}]"),
                    format_args!("must be a {scheme}host:port URL, got {e:?}"),
                ));
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.bytes().all(|b| b == 0xFF) {
            return Err(config_err(
                "etcd.key_prefix",
                "must not be empty (the directory would share the cluster's whole key space)",
            ));
        }
        check_range(
            "etcd.connect_timeout_ms",
            self.connect_timeout_ms,
            1,
            600_000,
        )?;
        check_range(
            "etcd.request_timeout_ms",
            self.request_timeout_ms,
            1,
            600_000,
        )?;
        check_range("etcd.read_attempts", self.read_attempts.into(), 1, 100)?;
        check_range("etcd.cleanup_batch", self.cleanup_batch.into(), 1, 32)?;
        if self.username.is_some() != self.password.is_some() {
            return Err(config_err(
                "etcd.username",
                "and etcd.password must be set together",
            ));
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err(config_err(
                "etcd.tls.cert_file",
                "and etcd.tls.key_file must be set together",
            ));
        }
        Ok(())
    }
}

impl RocksDbConfig {
    /// Checks the fields; the error names the field.
    pub fn validate(&self) -> OrbitResult<()> {
        check_data_dir("rocksdb", &self.data_dir)?;
        check_sync("rocksdb", self.sync)?;
        check_range(
            "rocksdb.write_buffer_size",
            self.write_buffer_size,
            1 << 16,
            1 << 34,
        )?;
        check_range(
            "rocksdb.max_background_jobs",
            self.max_background_jobs.into(),
            1,
            256,
        )?;
        check_range(
            "rocksdb.bloom_bits_per_key",
            self.bloom_bits_per_key.into(),
            0,
            64,
        )?;
        if !["none", "lz4", "zstd"].contains(&self.compression.as_str()) {
            return Err(config_err(
                "rocksdb.compression",
                format_args!("must be one of none, lz4, zstd; got {:?}", self.compression),
            ));
        }
        check_range(
            "rocksdb.watch_history",
            self.watch_history,
            0,
            MAX_WATCH_HISTORY,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_only_file_uses_safe_defaults() {
        let c = PersistenceConfig::from_toml_str("backend = \"lsm_tree\"").unwrap();
        assert_eq!(c.backend, BackendType::LsmTree);
        assert_eq!(c.lsm_tree_or_default().sync, SyncMode::Always);
    }

    #[test]
    fn sync_modes_parse_from_toml() {
        let c = PersistenceConfig::from_toml_str(
            "backend = \"cow_btree\"\n[cow_btree]\nsync = { interval_ms = 50 }\n",
        )
        .unwrap();
        assert_eq!(c.cow_btree.unwrap().sync, SyncMode::IntervalMs(50));
        let c = PersistenceConfig::from_toml_str(
            "backend = \"lsm_tree\"\n[lsm_tree]\nsync = \"never\"\n",
        )
        .unwrap();
        assert_eq!(c.lsm_tree.unwrap().sync, SyncMode::Never);
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let err = PersistenceConfig::from_toml_str(
            "backend = \"lsm_tree\"\n[lsm_tree]\nmemtabel_size = 5\n",
        )
        .unwrap_err();
        assert!(matches!(err, OrbitError::Config(_)));
        assert!(err.to_string().contains("memtabel_size"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let err = PersistenceConfig::from_toml_str(
            "backend = \"lsm_tree\"\n[lsm_tree]\nbloom_filter_fp_rate = 1.5\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("lsm_tree.bloom_filter_fp_rate must be in (0, 1), got 1.5"),
            "{err}"
        );
        let err = PersistenceConfig::from_toml_str(
            "backend = \"cow_btree\"\n[cow_btree]\npage_size = 3000\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("cow_btree.page_size"), "{err}");
        let err =
            PersistenceConfig::from_toml_str("backend = \"memory\"\n[memory]\nmax_entries = 0\n")
                .unwrap_err();
        assert!(err.to_string().contains("memory.max_entries"), "{err}");
    }

    #[test]
    fn unknown_backend_is_a_config_error() {
        let err = PersistenceConfig::from_toml_str("backend = \"sqlite\"").unwrap_err();
        assert!(matches!(err, OrbitError::Config(_)), "{err}");
    }

    #[test]
    fn env_selects_backend_and_dir() {
        let c = PersistenceConfig::from_vars(|k| match k {
            ENV_BACKEND => Some("lsm_tree".into()),
            ENV_DATA_DIR => Some("/tmp/x".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.backend, BackendType::LsmTree);
        assert_eq!(c.lsm_tree.unwrap().data_dir, PathBuf::from("/tmp/x"));
        let err = PersistenceConfig::from_vars(|k| (k == ENV_BACKEND).then(|| "mysql".into()))
            .unwrap_err();
        assert!(err.to_string().contains(ENV_BACKEND), "{err}");
        assert_eq!(
            PersistenceConfig::from_vars(|_| None).unwrap().backend,
            BackendType::Memory
        );
    }

    #[test]
    fn a_data_dir_without_a_disk_backend_is_refused() {
        for backend in [None, Some("memory"), Some("etcd")] {
            let err = PersistenceConfig::from_vars(|k| match k {
                ENV_BACKEND => backend.map(String::from),
                ENV_DATA_DIR => Some("/var/lib/orbit".into()),
                _ => None,
            })
            .unwrap_err();
            assert!(
                matches!(&err, OrbitError::Config(m) if m.contains(ENV_DATA_DIR) && m.contains(ENV_BACKEND)),
                "{backend:?}: {err}"
            );
        }
    }

    #[test]
    fn a_section_of_another_backend_is_refused_naming_both() {
        let err = PersistenceConfig::from_toml_str(
            "backend = \"cow_btree\"\n[lsm_tree]\ndata_dir = \"/x\"\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("backend = \"cow_btree\"") && msg.contains("[lsm_tree]"),
            "{msg}"
        );
    }

    #[test]
    fn a_config_file_resolves_relative_dirs_against_itself_and_refuses_non_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("store.toml");
        std::fs::write(
            &path,
            "backend = \"lsm_tree\"\n[lsm_tree]\ndata_dir = \"data/leases\"\n",
        )
        .unwrap();
        let c = PersistenceConfig::from_path(&path).unwrap();
        assert_eq!(c.data_dir(), Some(tmp.path().join("data/leases")));

        std::fs::write(
            &path,
            "backend = \"lsm_tree\"\n[lsm_tree]\nblock_size = 1\n",
        )
        .unwrap();
        let msg = PersistenceConfig::from_path(&path).unwrap_err().to_string();
        assert_eq!(msg.matches("invalid configuration").count(), 1, "{msg}");
        assert!(
            msg.contains("store.toml") && msg.contains("lsm_tree.block_size"),
            "{msg}"
        );

        let err = PersistenceConfig::from_path("/dev/zero").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = PersistenceConfig::from_path(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::write(&path, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let err = PersistenceConfig::from_path(&path).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn etcd_section_parses_and_every_bad_field_is_named() {
        let c = PersistenceConfig::from_toml_str(
            "backend = \"etcd\"\n[etcd]\nendpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n\
             key_prefix = \"/prod/leases/\"\nrequest_timeout_ms = 800\n",
        )
        .unwrap();
        let etcd = c.etcd_or_default();
        assert_eq!(etcd.endpoints.len(), 2);
        assert_eq!(
            (etcd.key_prefix.as_str(), etcd.request_timeout_ms),
            ("/prod/leases/", 800)
        );
        assert_eq!(etcd.cleanup_batch, EtcdConfig::default().cleanup_batch);
        for (section, field) in [
            ("endpoints = []", "etcd.endpoints"),
            ("endpoints = [\"10.0.0.1:2379\"]", "etcd.endpoints[0]"),
            ("endpoints = [\"http://\"]", "etcd.endpoints[0]"),
            ("key_prefix = \"\"", "etcd.key_prefix"),
            ("request_timeout_ms = 0", "etcd.request_timeout_ms"),
            ("connect_timeout_ms = 0", "etcd.connect_timeout_ms"),
            ("read_attempts = 0", "etcd.read_attempts"),
            ("cleanup_batch = 33", "etcd.cleanup_batch"),
            ("username = \"orbit\"", "etcd.username"),
            (
                "endpoints = [\"https://a:1\"]\n[etcd.tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"",
                "etcd.tls.cert_file",
            ),
            (
                "endpoints = [\"http://a:1\"]\n[etcd.tls]\nca_file = \"ca.pem\"",
                "etcd.endpoints[0]",
            ),
        ] {
            let text = format!("backend = \"etcd\"\n[etcd]\n{section}\n");
            let err = PersistenceConfig::from_toml_str(&text).unwrap_err();
            assert!(matches!(err, OrbitError::Config(_)), "{section}: {err}");
            assert!(err.to_string().contains(field), "{section}: {err}");
        }
        let c =
            PersistenceConfig::from_vars(|k| (k == ENV_BACKEND).then(|| "etcd".into())).unwrap();
        assert_eq!(c.etcd, Some(EtcdConfig::default()));
    }

    #[test]
    fn config_round_trips_through_toml() {
        let c = PersistenceConfig {
            backend: BackendType::CowBTree,
            cow_btree: Some(CowBTreeConfig::default()),
            ..PersistenceConfig::default()
        };
        let text = toml::to_string(&c).unwrap();
        assert_eq!(PersistenceConfig::from_toml_str(&text).unwrap(), c);
    }

    #[test]
    fn effective_fills_the_selected_section_and_data_dir_follows_it() {
        for backend in [
            BackendType::Memory,
            BackendType::CowBTree,
            BackendType::LsmTree,
            BackendType::RocksDB,
            BackendType::Etcd,
        ] {
            let bare = PersistenceConfig {
                backend,
                ..PersistenceConfig::default()
            };
            let effective = bare.effective();
            let filled = [
                effective.memory.is_some(),
                effective.cow_btree.is_some(),
                effective.lsm_tree.is_some(),
                effective.rocksdb.is_some(),
                effective.etcd.is_some(),
            ];
            assert_eq!(filled.iter().filter(|f| **f).count(), 1, "{backend:?}");
            // What it spells out reads back as the same config.
            let text = toml::to_string(&effective).unwrap();
            assert_eq!(PersistenceConfig::from_toml_str(&text).unwrap(), effective);

            let moved = bare.with_data_dir("/var/lib/orbit/x");
            match backend {
                BackendType::Memory | BackendType::Etcd => {
                    assert_eq!(moved.data_dir(), None);
                    assert_eq!(moved, effective);
                }
                _ => {
                    assert_eq!(bare.data_dir(), Some(default_data_dir(backend.as_str())));
                    assert_eq!(moved.data_dir(), Some(PathBuf::from("/var/lib/orbit/x")));
                }
            }
        }
    }
}
