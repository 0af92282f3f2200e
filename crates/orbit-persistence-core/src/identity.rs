//! The store identity record: which engine owns a data directory, and whether its creation
//! finished.
//!
//! Without it, an engine cannot tell an empty directory from one whose files an operator
//! deleted, so it would start an empty store where acknowledged leases were; nor can it tell
//! its own store from another engine's. With it, an empty store is only ever created in an
//! absent or empty directory, and every later open knows that the files a ready store implies
//! must be there: a missing one is an error, never a fresh start.
//!
//! # Creation
//!
//! 1. The identity is written with state *creating* (temp file, `fdatasync`, rename, directory
//!    fsync), before any other file of the store.
//! 2. The engine creates its files: its root (meta pages, manifest) and the first WAL segment,
//!    each durable.
//! 3. The identity is rewritten with state *ready*. Only then does the open return, so no write
//!    is ever acknowledged by a store whose identity is not ready.
//!
//! A crash during 2 leaves *creating*: the next open deletes the engine's own files and starts
//! over ([`crate::recovery::RecoveryAction::CreationRestarted`]); nothing is lost because nothing
//! was acknowledged. A crash during 1 leaves no identity and a directory empty but for `LOCK`
//! and the temp file, which counts as empty (so does `lost+found`, which a new ext4 volume
//! mounted at the data directory holds).
//!
//! A directory with files but no identity is either a store written before identity records
//! (its engine's root file is there: it is opened as usual and, on a writable open, given an
//! identity, reported as [`crate::recovery::RecoveryAction::IdentityAdded`]) or something else
//! ([`OrbitError::WrongStore`]: nothing is created among someone else's files).
//!
//! # File format: `ORBIT-STORE`, 44 bytes
//!
//! ```text
//! offset  size  field
//!      0     8  magic "ORBSTORE"
//!      8     2  u16 BE record version = 1
//!     10     1  engine: 1 cow_btree, 2 lsm_tree, 3 rocksdb
//!     11     1  state: 1 creating, 2 ready
//!     12     4  u32 BE the engine's format version
//!     16    16  store id (random, fixed at creation)
//!     32     8  u64 BE created at, milliseconds since the Unix epoch
//!     40     4  u32 BE CRC32 (crc32fast) of bytes 0..40
//! ```
//!
//! Every later record version keeps the magic, the version at offset 8 and a CRC32 of all
//! other bytes in its last four, so any build can tell a damaged record
//! ([`OrbitError::Corruption`] naming the file) from a newer one
//! ([`OrbitError::WrongStore`], as is an engine format version above this build's).

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use crate::config::BackendType;
use crate::fs::{FileSystem, parent_dir, read_file, tmp_path, write_file_atomic};
use crate::lock::DirLock;
use crate::recovery::{RecoveryAction, RecoveryReport};
use crate::types::Timestamp;
use crate::{OrbitError, OrbitResult};

/// Name of the identity record in a data directory. (Not `IDENTITY`: RocksDB writes a file of
/// that name into its directory.)
pub const IDENTITY_FILE: &str = "ORBIT-STORE";

/// What `mkfs` leaves at the root of a new ext2/3/4 file system: a fresh volume mounted at
/// the data directory (a Kubernetes claim, say) is still an empty directory.
const LOST_AND_FOUND: &str = "lost+found";

const MAGIC: &[u8; 8] = b"ORBSTORE";
const RECORD_VERSION: u16 = 1;
const RECORD_LEN: usize = 44;
const CREATING: u8 = 1;
const READY: u8 = 2;

/// What an engine tells [`prepare`] about the files it keeps in its data directory.
#[derive(Debug, Clone, Copy)]
pub struct EngineFiles {
    /// The engine (one of the embedded ones).
    pub engine: BackendType,
    /// The newest format version of the engine's files this build writes and reads.
    pub format_version: u32,
    /// The file every store of this engine has, whatever its age: what marks a store written
    /// before identity records (`pages.cow`, `MANIFEST`, `CURRENT`).
    pub root: &'static str,
    /// Whether a file name is one this engine creates in its directory: those are deleted
    /// when a crashed creation starts over. Nothing else ever is.
    pub owns: fn(&str) -> bool,
}

/// The identity of a store, as read from or written to [`IDENTITY_FILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The engine that owns the directory.
    pub engine: BackendType,
    /// The engine's format version when the store was created.
    pub format_version: u32,
    /// Random at creation; tells two stores apart (and a restored copy from its source).
    pub store_id: StoreId,
    /// When the store was created.
    pub created_at: Timestamp,
    /// Whether creation finished.
    pub ready: bool,
}

/// A store's random id, printed as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreId(pub [u8; 16]);

impl StoreId {
    /// A new random id. Seeded by the standard library's per-process random hash keys (from
    /// the OS), the time and the process id: unique enough to tell stores apart, which is all it
    /// is for.
    pub fn random() -> StoreId {
        let mut bytes = [0u8; 16];
        for (i, half) in bytes.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u32(std::process::id());
            if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                h.write_u128(t.as_nanos());
            }
            half.copy_from_slice(&h.finish().to_be_bytes());
        }
        StoreId(bytes)
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn engine_tag(engine: BackendType) -> u8 {
    match engine {
        BackendType::CowBTree => 1,
        BackendType::LsmTree => 2,
        BackendType::RocksDB => 3,
        // Not embedded engines; never written.
        BackendType::Memory | BackendType::Etcd => 0,
    }
}

fn tag_engine(tag: u8) -> Option<BackendType> {
    match tag {
        1 => Some(BackendType::CowBTree),
        2 => Some(BackendType::LsmTree),
        3 => Some(BackendType::RocksDB),
        _ => None,
    }
}

impl Identity {
    /// The record's bytes (see the module docs).
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8..10].copy_from_slice(&RECORD_VERSION.to_be_bytes());
        out[10] = engine_tag(self.engine);
        out[11] = if self.ready { READY } else { CREATING };
        out[12..16].copy_from_slice(&self.format_version.to_be_bytes());
        out[16..32].copy_from_slice(&self.store_id.0);
        out[32..40].copy_from_slice(&self.created_at.0.to_be_bytes());
        let crc = crc32fast::hash(&out[..40]);
        out[40..44].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a record; `Err((offset, what))` says what is wrong. A record version above this
    /// build's is `Ok(None)`: it is well-formed, just not ours to read.
    fn decode(bytes: &[u8]) -> Result<Option<Identity>, (u64, String)> {
        if bytes.len() < 14 || &bytes[0..8] != MAGIC {
            return Err((0, "not an identity record (bad magic or too short)".into()));
        }
        // The checksum closes the record whatever its version, so a damaged version number
        // is corruption, not a record "too new to read".
        let end = bytes.len() - 4;
        let stored =
            u32::from_be_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
        if crc32fast::hash(&bytes[..end]) != stored {
            return Err((end as u64, "checksum mismatch".into()));
        }
        let version = u16::from_be_bytes([bytes[8], bytes[9]]);
        if version > RECORD_VERSION {
            return Ok(None);
        }
        if bytes.len() != RECORD_LEN {
            return Err((
                0,
                format!("{} bytes, an identity record has {RECORD_LEN}", bytes.len()),
            ));
        }
        let engine =
            tag_engine(bytes[10]).ok_or_else(|| (10, format!("unknown engine {}", bytes[10])))?;
        let ready = match bytes[11] {
            CREATING => false,
            READY => true,
            other => return Err((11, format!("unknown state {other}"))),
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[16..32]);
        let be8 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Some(Identity {
            engine,
            format_version: u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
            store_id: StoreId(id),
            created_at: Timestamp(be8(32)),
            ready,
        }))
    }

    fn write(&self, fs: &dyn FileSystem, dir: &Path) -> OrbitResult<()> {
        write_file_atomic(fs, &dir.join(IDENTITY_FILE), &self.encode())
    }
}

/// What [`prepare`] found in a data directory, and so what the engine does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A ready store of this engine: open it; every file it implies must be there.
    Open(Identity),
    /// No store (an absent or empty directory, or a creation a crash interrupted): create one
    /// with [`begin_create`] and [`finish_create`].
    Create {
        /// The creation that crashed, to start over.
        restart: Option<Identity>,
    },
    /// A store of this engine written before identity records: open it as usual, strictly
    /// (its files must all be there), then [`adopt`] it on a writable open.
    Legacy,
}

/// Reads the identity of `dir` and decides how `engine` may open it. Reads only; creates
/// nothing (a missing `dir` is `Create`).
///
/// Errors: [`OrbitError::WrongStore`] for another engine's store, a newer format, or a
/// directory that holds files but no store of this engine; [`OrbitError::Corruption`] for an
/// identity record that fails its checks.
pub fn prepare(fs: &dyn FileSystem, dir: &Path, engine: &EngineFiles) -> OrbitResult<Plan> {
    if !fs.exists(dir)? {
        return Ok(Plan::Create { restart: None });
    }
    let path = dir.join(IDENTITY_FILE);
    let names = fs.list_dir(dir)?;
    if !names.iter().any(|n| n == IDENTITY_FILE) {
        let tmp = tmp_path(Path::new(IDENTITY_FILE));
        let others: Vec<&String> = names
            .iter()
            .filter(|n| {
                *n != DirLock::FILE_NAME && *n != LOST_AND_FOUND && Path::new(n.as_str()) != tmp
            })
            .collect();
        if others.is_empty() {
            return Ok(Plan::Create { restart: None });
        }
        if names.iter().any(|n| n == engine.root) {
            return Ok(Plan::Legacy);
        }
        let shown: Vec<&str> = others.iter().take(5).map(|s| s.as_str()).collect();
        return Err(OrbitError::wrong_store(
            dir,
            format!(
                "holds files ({}{}) but no {} store (no {IDENTITY_FILE} record, no {}): \
                 refusing to create a store among them; point data_dir at an empty or absent \
                 directory",
                shown.join(", "),
                if others.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                },
                engine.engine.as_str(),
                engine.root,
            ),
        ));
    }
    let bytes = read_file(fs, &path)?;
    let identity = match Identity::decode(&bytes) {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            return Err(OrbitError::wrong_store(
                &path,
                "identity record of a newer version than this build reads: upgrade \
                 orbit-persistence to open this store",
            ));
        }
        Err((offset, what)) => {
            return Err(OrbitError::corruption(
                &path,
                offset,
                format!("store identity record: {what}"),
            ));
        }
    };
    if identity.engine != engine.engine {
        return Err(OrbitError::wrong_store(
            dir,
            format!(
                "holds a {} store (id {}), not a {} store: set backend = \"{}\" with its own \
                 section, or point {}.data_dir at another directory",
                identity.engine.as_str(),
                identity.store_id,
                engine.engine.as_str(),
                identity.engine.as_str(),
                engine.engine.as_str(),
            ),
        ));
    }
    if identity.format_version > engine.format_version {
        return Err(OrbitError::wrong_store(
            dir,
            format!(
                "holds a {} store of format version {}; this build reads up to version {}: \
                 upgrade orbit-persistence to open it",
                identity.engine.as_str(),
                identity.format_version,
                engine.format_version
            ),
        ));
    }
    Ok(match identity.ready {
        true => Plan::Open(identity),
        false => Plan::Create {
            restart: Some(identity),
        },
    })
}

/// Locks the data directory `dir` for an open of `engine` with `access`: for a writer, after
/// checking (before the lock file is created) that the directory holds no other engine's
/// store and no foreign files, so those are refused without a byte written (the open checks
/// again under the lock); for a reader, a shared lock that creates nothing
/// ([`DirLock::acquire_shared`]).
pub fn lock(
    dir: &Path,
    engine: &EngineFiles,
    access: crate::wal::Access,
) -> OrbitResult<Option<DirLock>> {
    match access {
        crate::wal::Access::ReadWrite => {
            prepare(&crate::fs::StdFileSystem::new(), dir, engine)?;
            DirLock::acquire(dir).map(Some)
        }
        crate::wal::Access::ReadOnly => DirLock::acquire_shared(dir),
    }
}

/// Whether a store found by [`prepare`] can be opened read-only: only a ready one (or one
/// from before identity records) can; an absent store or an unfinished creation is
/// [`OrbitError::WrongStore`], since reading it would have to create or repair files.
pub fn check_readable(dir: &Path, plan: Plan) -> OrbitResult<()> {
    match plan {
        Plan::Open(_) | Plan::Legacy => Ok(()),
        Plan::Create { restart: None } => Err(OrbitError::wrong_store(
            dir,
            "holds no store (it is absent or empty): nothing to open read-only",
        )),
        Plan::Create { restart: Some(_) } => Err(OrbitError::wrong_store(
            dir,
            "holds a store whose creation a crash interrupted: open it for writing once to \
             finish it",
        )),
    }
}

/// Step 1 of creation (module docs): creates `dir` if missing, deletes the engine's own files
/// of a creation that crashed (reported), and writes the identity with state *creating*.
pub fn begin_create(
    fs: &dyn FileSystem,
    dir: &Path,
    engine: &EngineFiles,
    restart: Option<Identity>,
    now: Timestamp,
    report: &mut RecoveryReport,
) -> OrbitResult<Identity> {
    if !fs.exists(dir)? {
        fs.create_dir_all(dir)?;
        fs.sync_dir(parent_dir(dir))?;
    }
    let identity = match restart {
        Some(identity) => {
            for name in fs.list_dir(dir)? {
                if (engine.owns)(&name) {
                    fs.remove_file(&dir.join(&name))?;
                }
            }
            fs.sync_dir(dir)?;
            report.record(RecoveryAction::CreationRestarted {
                dir: dir.to_path_buf(),
            });
            identity
        }
        None => {
            let identity = Identity {
                engine: engine.engine,
                format_version: engine.format_version,
                store_id: StoreId::random(),
                created_at: now,
                ready: false,
            };
            identity.write(fs, dir)?;
            identity
        }
    };
    Ok(identity)
}

/// Step 3 of creation: the engine's files are durable; the identity becomes *ready*.
pub fn finish_create(fs: &dyn FileSystem, dir: &Path, identity: &mut Identity) -> OrbitResult<()> {
    identity.ready = true;
    identity.write(fs, dir)
}

/// Gives a store written before identity records its identity (reported).
pub fn adopt(
    fs: &dyn FileSystem,
    dir: &Path,
    engine: &EngineFiles,
    now: Timestamp,
    report: &mut RecoveryReport,
) -> OrbitResult<Identity> {
    let identity = Identity {
        engine: engine.engine,
        format_version: engine.format_version,
        store_id: StoreId::random(),
        created_at: now,
        ready: true,
    };
    identity.write(fs, dir)?;
    report.record(RecoveryAction::IdentityAdded {
        dir: dir.to_path_buf(),
    });
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FaultFs, OpenMode};

    const COW: EngineFiles = EngineFiles {
        engine: BackendType::CowBTree,
        format_version: 1,
        root: "pages.cow",
        owns: |n| n == "pages.cow" || n.starts_with("wal-"),
    };

    fn touch(fs: &dyn FileSystem, path: &Path) {
        fs.open(path, OpenMode::CreateNew).unwrap();
    }

    #[test]
    fn record_round_trips_and_every_damage_is_caught() {
        let identity = Identity {
            engine: BackendType::LsmTree,
            format_version: 3,
            store_id: StoreId::random(),
            created_at: Timestamp(1_700_000_000_000),
            ready: true,
        };
        let bytes = identity.encode();
        assert_eq!(Identity::decode(&bytes), Ok(Some(identity)));
        for at in 0..RECORD_LEN {
            let mut bad = bytes;
            bad[at] ^= 0x10;
            match Identity::decode(&bad) {
                Err(_) => {}
                got => panic!("flip at {at} decoded as {got:?}"),
            }
        }
        assert!(Identity::decode(&bytes[..43]).is_err());
        // A newer record (longer, its own checksum) is not ours to read, and not corruption.
        let mut newer = bytes[..40].to_vec();
        newer[8..10].copy_from_slice(&2u16.to_be_bytes());
        newer.extend_from_slice(b"more fields");
        let crc = crc32fast::hash(&newer);
        newer.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(Identity::decode(&newer), Ok(None));
        assert_ne!(StoreId::random(), StoreId::random());
        assert_eq!(identity.store_id.to_string().len(), 32);
    }

    #[test]
    fn empty_or_absent_dirs_are_created_and_creation_is_two_phase() {
        let fs = FaultFs::new();
        let dir = Path::new("/data/store");
        assert_eq!(
            prepare(&fs, dir, &COW).unwrap(),
            Plan::Create { restart: None }
        );
        let mut report = RecoveryReport::default();
        let mut identity = begin_create(&fs, dir, &COW, None, Timestamp(5), &mut report).unwrap();
        assert!(report.is_empty());
        // A crash here: the next open starts over, deleting only the engine's own files.
        touch(&fs, &dir.join("pages.cow"));
        touch(&fs, &dir.join("notes.txt"));
        let plan = prepare(&fs, dir, &COW).unwrap();
        assert_eq!(
            plan,
            Plan::Create {
                restart: Some(identity)
            }
        );
        let again =
            begin_create(&fs, dir, &COW, Some(identity), Timestamp(9), &mut report).unwrap();
        assert_eq!(again.store_id, identity.store_id);
        assert!(matches!(
            report.actions[..],
            [RecoveryAction::CreationRestarted { .. }]
        ));
        assert_eq!(fs.list_dir(dir).unwrap(), vec![IDENTITY_FILE, "notes.txt"]);
        finish_create(&fs, dir, &mut identity).unwrap();
        assert_eq!(prepare(&fs, dir, &COW).unwrap(), Plan::Open(identity));

        // LOCK, a torn identity temp file and a new file system's lost+found do not make a
        // directory non-empty.
        let other = Path::new("/data/other");
        fs.create_dir_all(&other.join("lost+found")).unwrap();
        touch(&fs, &other.join("LOCK"));
        touch(&fs, &other.join("ORBIT-STORE.tmp"));
        assert_eq!(
            prepare(&fs, other, &COW).unwrap(),
            Plan::Create { restart: None }
        );
    }

    #[test]
    fn foreign_files_other_engines_and_newer_formats_are_refused() {
        let fs = FaultFs::new();
        let dir = Path::new("/data/store");
        fs.create_dir_all(dir).unwrap();
        touch(&fs, &dir.join("photo.jpg"));
        let err = prepare(&fs, dir, &COW).unwrap_err();
        assert!(
            matches!(&err, OrbitError::WrongStore { .. }) && err.to_string().contains("photo.jpg"),
            "{err}"
        );
        // A store of this engine from before identities: opened, then adopted.
        touch(&fs, &dir.join("pages.cow"));
        assert_eq!(prepare(&fs, dir, &COW).unwrap(), Plan::Legacy);
        let mut report = RecoveryReport::default();
        let adopted = adopt(&fs, dir, &COW, Timestamp(1), &mut report).unwrap();
        assert_eq!(prepare(&fs, dir, &COW).unwrap(), Plan::Open(adopted));
        assert_eq!(report.len(), 1);

        let lsm = EngineFiles {
            engine: BackendType::LsmTree,
            root: "MANIFEST",
            ..COW
        };
        let err = prepare(&fs, dir, &lsm).unwrap_err();
        assert!(
            matches!(&err, OrbitError::WrongStore { .. })
                && err.to_string().contains("holds a cow_btree store"),
            "{err}"
        );
        let older_build = EngineFiles {
            format_version: 0,
            ..COW
        };
        let err = prepare(&fs, dir, &older_build).unwrap_err();
        assert!(err.to_string().contains("format version 1"), "{err}");

        let mut bytes = adopted.encode();
        bytes[20] ^= 1;
        write_file_atomic(&fs, &dir.join(IDENTITY_FILE), &bytes).unwrap();
        let err = prepare(&fs, dir, &COW).unwrap_err();
        assert!(
            matches!(&err, OrbitError::Corruption { path, offset: 40, .. } if path.ends_with(IDENTITY_FILE)),
            "{err}"
        );
    }
}
