//! What a benchmark runs on: our backends, opened through the `orbit-persistence` facade as an
//! application opens them, and the peer stores, each opened on its own directory.
//!
//! The etcd backend keeps its data in a cluster, not a directory: it is a subject only when the
//! benchmark is given endpoints, and its keys go under a prefix made of its directory's path,
//! so each run (and its kill -9 child) has its own.

use std::path::Path;
use std::sync::Arc;

use orbit_persistence::{
    BackendType, Clock, CowBTreeConfig, EtcdConfig, LsmTreeConfig, MemoryConfig, PersistenceConfig,
    RocksDbConfig, SyncMode,
};

use crate::peer::{FjallPeer, Peer, RedbPeer};
use crate::phases::{Ours, Side};

/// A store the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// One of our backends.
    Ours(BackendType),
    /// redb, used directly.
    Redb,
    /// fjall, used directly.
    Fjall,
    /// RocksDB used directly, with our backend's tuned options.
    #[cfg(feature = "rocksdb")]
    RawRocksDb,
}

impl Subject {
    /// Our backends compiled into this build, then the peers, in table order. Not etcd: it
    /// needs a cluster ([`Subject::clustered`]).
    pub fn all() -> Vec<Subject> {
        let mut all: Vec<Subject> = orbit_persistence::compiled_backends()
            .into_iter()
            .filter(|b| *b != BackendType::Etcd)
            .map(Subject::Ours)
            .collect();
        all.extend(Subject::peers());
        all
    }

    /// Our backends compiled into this build that keep their data in a cluster (etcd), so
    /// that run only when the benchmark is given one.
    pub fn clustered() -> Vec<Subject> {
        orbit_persistence::compiled_backends()
            .into_iter()
            .filter(|b| *b == BackendType::Etcd)
            .map(Subject::Ours)
            .collect()
    }

    /// The peers compiled into this build.
    pub fn peers() -> Vec<Subject> {
        vec![
            Subject::Redb,
            Subject::Fjall,
            #[cfg(feature = "rocksdb")]
            Subject::RawRocksDb,
        ]
    }

    /// The column name: the backend's config name for ours, `<engine> (peer)` for a peer.
    pub fn name(self) -> &'static str {
        match self {
            Subject::Ours(b) => b.as_str(),
            Subject::Redb => "redb (peer)",
            Subject::Fjall => "fjall (peer)",
            #[cfg(feature = "rocksdb")]
            Subject::RawRocksDb => "rocksdb (peer)",
        }
    }

    /// A short name without spaces, for the command line and file names.
    pub fn id(self) -> &'static str {
        match self {
            Subject::Ours(b) => b.as_str(),
            Subject::Redb => "redb",
            Subject::Fjall => "fjall",
            #[cfg(feature = "rocksdb")]
            Subject::RawRocksDb => "raw_rocksdb",
        }
    }

    /// The subject whose [`Subject::id`] is `id`, if it is compiled in.
    pub fn from_id(id: &str) -> Option<Subject> {
        Subject::all()
            .into_iter()
            .chain(Subject::clustered())
            .find(|s| s.id() == id)
    }

    /// Whether the store keeps its data in a cluster rather than its directory.
    pub fn needs_cluster(self) -> bool {
        self == Subject::Ours(BackendType::Etcd)
    }

    /// Whether the store's data is in its directory on this machine, so its size there is
    /// its space (not the memory backend's, nor etcd's).
    pub fn on_local_disk(self) -> bool {
        self.durable() && !self.needs_cluster()
    }

    /// Whether this is a peer rather than one of ours.
    pub fn is_peer(self) -> bool {
        !matches!(self, Subject::Ours(_))
    }

    /// Whether the store keeps its data across a reopen (everything but the memory backend).
    pub fn durable(self) -> bool {
        self != Subject::Ours(BackendType::Memory)
    }

    /// Opens the store in `dir` (created if missing), or for etcd, on the cluster at
    /// `etcd_endpoints` under `dir`'s prefix. `sync` applies to ours; a peer makes each write
    /// durable or not as the phase asks.
    pub fn open(
        self,
        dir: &Path,
        etcd_endpoints: &[String],
        sync: SyncMode,
        clock: Arc<dyn Clock>,
    ) -> Result<Side, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        Ok(match self {
            Subject::Ours(backend) => {
                let mut config = config_for(backend, dir, sync);
                if let Some(etcd) = config.etcd.as_mut() {
                    etcd.endpoints = etcd_endpoints.to_vec();
                }
                let ours: Ours = orbit_persistence::open(&config, clock)
                    .map_err(|e| format!("open {}: {e}", backend.as_str()))?;
                Side::Ours(ours)
            }
            Subject::Redb => Side::Peer(Arc::new(RedbPeer::open(&dir.join("leases.redb")))),
            Subject::Fjall => Side::Peer(Arc::new(FjallPeer::open(dir)) as Arc<dyn Peer>),
            #[cfg(feature = "rocksdb")]
            Subject::RawRocksDb => {
                let config = RocksDbConfig {
                    data_dir: dir.to_path_buf(),
                    ..RocksDbConfig::default()
                };
                Side::Peer(Arc::new(crate::peer::RocksDbPeer::open(dir, &config)))
            }
        })
    }
}

/// The default config of `backend` with its data in `dir` and the given sync mode; for etcd,
/// its keys under the prefix `/orbit-bench<dir>/` and no endpoints yet.
pub fn config_for(backend: BackendType, dir: &Path, sync: SyncMode) -> PersistenceConfig {
    let data_dir = dir.to_path_buf();
    let mut config = PersistenceConfig {
        backend,
        ..PersistenceConfig::default()
    };
    match backend {
        BackendType::Memory => config.memory = Some(MemoryConfig::default()),
        BackendType::CowBTree => {
            config.cow_btree = Some(CowBTreeConfig {
                data_dir,
                sync,
                ..CowBTreeConfig::default()
            })
        }
        BackendType::LsmTree => {
            config.lsm_tree = Some(LsmTreeConfig {
                data_dir,
                sync,
                ..LsmTreeConfig::default()
            })
        }
        BackendType::RocksDB => {
            config.rocksdb = Some(RocksDbConfig {
                data_dir,
                sync,
                ..RocksDbConfig::default()
            })
        }
        BackendType::Etcd => {
            config.etcd = Some(EtcdConfig {
                endpoints: Vec::new(),
                key_prefix: format!("/orbit-bench{}/", dir.display()),
                ..EtcdConfig::default()
            })
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_name_every_compiled_subject_once() {
        let all = Subject::all();
        let mut ids: Vec<_> = all.iter().map(|s| s.id()).collect();
        for s in &all {
            assert_eq!(Subject::from_id(s.id()), Some(*s));
            assert!(!s.id().contains(' '), "{}", s.id());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        assert_eq!(Subject::from_id("nope"), None);
    }

    #[test]
    fn config_for_validates_for_every_backend() {
        for b in orbit_persistence::compiled_backends() {
            let mut c = config_for(b, Path::new("/tmp/x"), SyncMode::Always);
            if let Some(etcd) = c.etcd.as_mut() {
                // The one thing the benchmark adds: where the cluster is.
                assert!(etcd.endpoints.is_empty());
                etcd.endpoints = vec!["http://127.0.0.1:2379".into()];
            }
            c.validate().unwrap();
        }
    }

    #[test]
    fn etcd_is_a_subject_only_with_a_cluster() {
        for s in Subject::all() {
            assert!(!s.needs_cluster(), "{}", s.name());
        }
        for s in Subject::clustered() {
            assert!(s.needs_cluster() && s.durable() && !s.on_local_disk());
            assert_eq!(Subject::from_id(s.id()), Some(s));
        }
        assert_eq!(
            Subject::clustered().is_empty(),
            !orbit_persistence::compiled_backends().contains(&BackendType::Etcd)
        );
    }
}
