//! The engine side of the RocksDB backend: blocking reads and writes over the three column
//! families (layout in [`crate::options`]). Every lease change is one `WriteBatch` holding the
//! lease, both index entries and the counter merges, so the indexes can never disagree with the
//! leases, before or after a crash.
//!
//! Conditional operations take the stripe locks of their references, read the current leases,
//! decide with [`orbit_persistence_core::rules`] and write; two operations on one reference are
//! therefore serialized, while different references proceed in parallel and RocksDB batches
//! their synced WAL writes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use orbit_persistence_core::backup::{self, BackupHeader, BackupSummary};
use orbit_persistence_core::fs::StdFileSystem;

use orbit_persistence_core::encoding::{
    decode_expiry_index_key, decode_lease, decode_reference, encode_lease_with_revision,
    encode_reference, expiry_index_key, expiry_index_upper_bound, node_index_key,
    node_index_prefix,
};
use orbit_persistence_core::feed::FeedSignal;
use orbit_persistence_core::index::{IndexEntries, index_delta};
use orbit_persistence_core::keyspace::prefix_end;
use orbit_persistence_core::{
    Acquire, AddressableLease, AddressableReference, LeaseEvent, LeaseEventKind, LeaseSnapshot,
    NodeId, OrbitError, OrbitResult, PersistenceMetrics, ProviderHealth, Renew, RocksDbConfig,
    SyncMode, Timestamp, rules,
};
use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};

use crate::options::{
    self, CF_BY_EXPIRY, CF_BY_NODE, CF_HISTORY, CF_LEASES, KEY_HISTORY_FLOOR, KEY_LEASE_COUNT,
    KEY_REVISION,
};
use crate::stripes::Stripes;
use crate::watermark::Watermark;

/// One lease change with what it replaces, so the batch can drop the old index entries. The
/// new lease is borrowed: the batch assigns its revision while encoding it, with no copy.
enum Write<'a> {
    Put {
        previous: Option<AddressableLease>,
        lease: &'a AddressableLease,
    },
    Delete {
        previous: AddressableLease,
        /// Why (the event's kind).
        kind: LeaseEventKind,
    },
}

/// An open RocksDB database holding leases.
pub struct Store {
    db: DB,
    path: PathBuf,
    write_options: WriteOptions,
    /// Reads answered from memory only (memtables and block cache), made once: creating
    /// RocksDB read options allocates on the C++ side, which cost a few percent of a cached get.
    memory_read: ReadOptions,
    stripes: Stripes,
    last_revision: AtomicU64,
    /// The revision a restore raised the counter to: the history holds nothing up to it.
    history_floor: AtomicU64,
    poisoned: Mutex<Option<String>>,
    read_only: bool,
    /// Events the history column family keeps (0: none, or a read-only open of a store
    /// written before it existed).
    watch_history: u64,
    /// Which revisions are in: the change feed follows it.
    written: Watermark,
    /// Held shared by every commit from taking its revisions to announcing them, and
    /// exclusively by [`Store::snapshot_leases`] for the moment it takes its snapshot, so
    /// the snapshot holds exactly the revisions up to the counter.
    commits: RwLock<()>,
}

/// The three column families of a lease and its indexes, and the writes every change of a
/// lease stages into a batch.
struct LeaseCfs<'a> {
    leases: &'a ColumnFamily,
    by_node: &'a ColumnFamily,
    by_expiry: &'a ColumnFamily,
}

impl LeaseCfs<'_> {
    /// Deletes the index entries of `old` that `new` does not keep (core's `index_delta`: a
    /// renewal on the same node only moves its expiry entry).
    fn unindex(
        &self,
        batch: &mut WriteBatch,
        old: &AddressableLease,
        new: Option<&AddressableLease>,
    ) {
        let r = &old.reference;
        let delta = index_delta(Some(IndexEntries::of(old)), new.map(IndexEntries::of));
        if let Some(node) = delta.remove_node {
            batch.delete_cf(self.by_node, node_index_key(node, r));
        }
        if let Some(expires_at) = delta.remove_expiry {
            batch.delete_cf(self.by_expiry, expiry_index_key(expires_at, r));
        }
    }

    /// Puts `lease`, stored with `revision`, and its index entries into `batch` in place of
    /// `previous`; whether the lease is new.
    fn put(
        &self,
        batch: &mut WriteBatch,
        previous: Option<&AddressableLease>,
        lease: &AddressableLease,
        revision: u64,
    ) -> bool {
        let r = &lease.reference;
        if let Some(old) = previous {
            self.unindex(batch, old, Some(lease));
        }
        batch.put_cf(
            self.leases,
            encode_reference(r),
            encode_lease_with_revision(lease, revision),
        );
        batch.put_cf(self.by_node, node_index_key(&lease.node_id, r), []);
        batch.put_cf(self.by_expiry, expiry_index_key(lease.expires_at, r), []);
        previous.is_none()
    }
}

/// How [`Store::open`] opens a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Create it if missing (only while the store's identity says it is being created).
    Create,
    /// It must exist.
    Existing,
    /// It must exist; nothing is written, and writes answer `ReadOnly`.
    ReadOnly,
}

/// RocksDB's own corruption reports stay `Corruption`, naming the damaged file (and offset)
/// where RocksDB says which: in the message (tables: "... in <file> offset <n> size <m>"), or,
/// for a failed open, only in its info `LOG` (WAL replay: "<file>: dropping <n> bytes;
/// Corruption: ..."). Otherwise the database directory and offset 0. Everything else is an I/O
/// error of the operation.
pub(crate) fn rocks_err(op: &'static str, path: &Path, e: rocksdb::Error) -> OrbitError {
    match e.kind() {
        rocksdb::ErrorKind::Corruption => {
            let message = e.into_string();
            let (file, offset) = damaged_file_in(&message)
                .or_else(|| {
                    let log = std::fs::read_to_string(path.join("LOG")).ok()?;
                    log.lines()
                        .rev()
                        .take(200)
                        .filter(|l| l.contains("Corruption"))
                        .find_map(damaged_file_in)
                })
                .unwrap_or((path.to_path_buf(), 0));
            OrbitError::corruption(file, offset, message)
        }
        _ => OrbitError::io(op, path, std::io::Error::other(e.into_string())),
    }
}

/// `CURRENT` names the live MANIFEST; when the one it names is missing (RocksDB then reports
/// an I/O error opening it), `CURRENT` itself is damaged.
fn damaged_current(path: &Path) -> Option<OrbitError> {
    let current = path.join("CURRENT");
    let named = std::fs::read_to_string(&current).ok()?;
    let manifest = named.trim_end_matches('\n');
    let valid_name = manifest.starts_with("MANIFEST-") && !manifest.contains(['/', '\0']);
    if valid_name && path.join(manifest).exists() {
        return None;
    }
    Some(OrbitError::corruption(
        &current,
        0,
        format!("CURRENT names {manifest:?}, which is not a MANIFEST file of this database"),
    ))
}

/// The file (a table, WAL, MANIFEST or OPTIONS file given by absolute path) a RocksDB message
/// names, and the offset after "offset", if any.
fn damaged_file_in(message: &str) -> Option<(PathBuf, u64)> {
    let words: Vec<&str> = message.split_whitespace().collect();
    let file = words.iter().find_map(|w| {
        let w = w.trim_end_matches([':', ';', ',', ')']);
        let name = Path::new(w).file_name()?.to_str()?;
        let named = name.ends_with(".sst")
            || name.ends_with(".log")
            || name.starts_with("MANIFEST-")
            || name.starts_with("OPTIONS-")
            || name == "CURRENT";
        (w.starts_with('/') && named).then(|| PathBuf::from(w))
    })?;
    let offset = words
        .windows(2)
        .find(|p| p[0] == "offset")
        .and_then(|p| p[1].trim_end_matches([',', ';']).parse().ok())
        .unwrap_or(0);
    Some((file, offset))
}

impl Store {
    /// Opens the database in `path` as `how` says.
    pub fn open(config: &RocksDbConfig, path: &Path, how: Opening) -> OrbitResult<Store> {
        let current = path.join("CURRENT");
        if how != Opening::Create && !current.exists() {
            return Err(OrbitError::corruption(
                &current,
                0,
                "missing (deleted?): the database cannot be found without it",
            ));
        }
        // RocksDB's replay reads some damage as the end of a WAL (see the module).
        crate::wal_check::check_wals(path)?;
        let (mut db_options, cfs) = options::build(config);
        db_options.create_if_missing(how == Opening::Create);
        let mut watch_history = config.watch_history;
        let opened = match how {
            // RocksDB's read-only mode writes nothing: no info LOG, no OPTIONS file, the WAL
            // replayed into memory only; and creates no column family, so a store written
            // before the history existed opens without one (and with no history).
            Opening::ReadOnly => {
                let present = DB::list_cf(&db_options, path).unwrap_or_default();
                if !present.iter().any(|name| name == CF_HISTORY) {
                    watch_history = 0;
                }
                let cfs = cfs
                    .into_iter()
                    .filter(|cf| present.iter().any(|p| p == cf.name()));
                DB::open_cf_descriptors_read_only(&db_options, path, cfs, false)
            }
            Opening::Create | Opening::Existing => DB::open_cf_descriptors(&db_options, path, cfs),
        };
        let db = opened.map_err(|e| {
            let err = rocks_err("open rocksdb", path, e);
            damaged_current(path).unwrap_or(err)
        })?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(config.sync == SyncMode::Always);
        let store = Store {
            db,
            path: path.to_path_buf(),
            write_options,
            memory_read: {
                let mut read = ReadOptions::default();
                read.set_read_tier(rocksdb::ReadTier::BlockCache);
                read
            },
            stripes: Stripes::default(),
            last_revision: AtomicU64::new(0),
            history_floor: AtomicU64::new(0),
            poisoned: Mutex::new(None),
            read_only: how == Opening::ReadOnly,
            watch_history,
            written: Watermark::new(0),
            commits: RwLock::new(()),
        };
        let revision = store.counter(KEY_REVISION)?;
        store.last_revision.store(revision, Ordering::SeqCst);
        let floor = store.counter(KEY_HISTORY_FLOOR)?;
        store.history_floor.store(floor, Ordering::SeqCst);
        Ok(Store {
            written: Watermark::new(revision),
            ..store
        })
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // The three families are created at open (create_missing_column_families).
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| unreachable!("column family {name} is created at open"))
    }

    fn corruption(&self, cf: &str, detail: String) -> OrbitError {
        OrbitError::corruption(self.path.join(cf), 0, detail)
    }

    pub(crate) fn counter(&self, key: &[u8]) -> OrbitResult<u64> {
        let value = self
            .db
            .get_cf(self.cf(CF_LEASES), key)
            .map_err(|e| rocks_err("read counter", &self.path, e))?;
        match value {
            None => Ok(0),
            Some(v) => v
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    self.corruption(
                        CF_LEASES,
                        format!(
                            "counter {:?} is {} bytes, not 8",
                            String::from_utf8_lossy(key),
                            v.len()
                        ),
                    )
                }),
        }
    }

    /// The database.
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// The database directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Exact number of stored leases.
    pub fn lease_count(&self) -> OrbitResult<u64> {
        self.counter(KEY_LEASE_COUNT)
    }

    /// Highest revision assigned.
    pub fn last_revision(&self) -> u64 {
        self.last_revision.load(Ordering::SeqCst)
    }

    /// Why writes are refused, if they are.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn decode(&self, key: &[u8], value: &[u8]) -> OrbitResult<AddressableLease> {
        decode_lease(value).map_err(|e| {
            self.corruption(
                CF_LEASES,
                format!(
                    "lease value of key {key:02x?} at byte {}: {}",
                    e.offset, e.detail
                ),
            )
        })
    }

    /// The stored lease of `r`.
    pub fn get(&self, r: &AddressableReference) -> OrbitResult<Option<AddressableLease>> {
        let key = encode_reference(r);
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_LEASES), &key)
            .map_err(|e| rocks_err("get", &self.path, e))?;
        value.map(|v| self.decode(&key, &v)).transpose()
    }

    /// The stored lease of `r` if RocksDB can answer from memory (memtables, block cache)
    /// without file I/O; `None` when it would have to read a file. Safe to call on an async
    /// worker thread: this is how point reads avoid a thread hop when the data is hot.
    pub fn get_cached(
        &self,
        r: &AddressableReference,
    ) -> OrbitResult<Option<Option<AddressableLease>>> {
        let key = encode_reference(r);
        match self
            .db
            .get_pinned_cf_opt(self.cf(CF_LEASES), &key, &self.memory_read)
        {
            Ok(value) => Ok(Some(value.map(|v| self.decode(&key, &v)).transpose()?)),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(None),
            Err(e) => Err(rocks_err("get", &self.path, e)),
        }
    }

    fn get_many<'r>(
        &self,
        refs: impl IntoIterator<Item = &'r AddressableReference>,
    ) -> OrbitResult<Vec<Option<AddressableLease>>> {
        let keys: Vec<Vec<u8>> = refs.into_iter().map(encode_reference).collect();
        let cf = self.cf(CF_LEASES);
        self.db
            .batched_multi_get_cf(cf, &keys, false)
            .into_iter()
            .zip(&keys)
            .map(|(value, key)| {
                let value = value.map_err(|e| rocks_err("multi_get", &self.path, e))?;
                value.map(|v| self.decode(key, &v)).transpose()
            })
            .collect()
    }

    /// Every lease of `node`, read from one snapshot so the index and the leases agree.
    pub fn list_node(&self, node: &NodeId) -> OrbitResult<Vec<AddressableLease>> {
        let snapshot = self.db.snapshot();
        let prefix = node_index_prefix(node);
        let mut keys = Vec::new();
        let iter = snapshot.iterator_cf_opt(
            self.cf(CF_BY_NODE),
            ReadOptions::default(),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (key, _) = item.map_err(|e| rocks_err("scan node index", &self.path, e))?;
            if !key.starts_with(&prefix) {
                break;
            }
            decode_reference(&key[prefix.len()..]).map_err(|e| {
                self.corruption(CF_BY_NODE, format!("node index key {key:02x?}: {e}"))
            })?;
            keys.push(key[prefix.len()..].to_vec());
        }
        let cf = self.cf(CF_LEASES);
        let mut out = Vec::with_capacity(keys.len());
        for (value, key) in snapshot
            .multi_get_cf(keys.iter().map(|k| (cf, k)))
            .into_iter()
            .zip(&keys)
        {
            match value.map_err(|e| rocks_err("multi_get", &self.path, e))? {
                Some(v) => {
                    let lease = self.decode(key, &v)?;
                    if lease.node_id != *node {
                        return Err(self.corruption(
                            CF_BY_NODE,
                            format!(
                                "node index entry {key:02x?} points to a lease of {:?}",
                                lease.node_id
                            ),
                        ));
                    }
                    out.push(lease);
                }
                None => {
                    return Err(self.corruption(
                        CF_BY_NODE,
                        format!("node index entry {key:02x?} has no lease"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Refuses every later write with `Poisoned(reason)`.
    pub fn poison(&self, reason: String) {
        *self.poisoned.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// Whether the database was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn check_writable(&self) -> OrbitResult<()> {
        if self.read_only {
            return Err(OrbitError::ReadOnly(self.path.clone()));
        }
        match self.poisoned() {
            Some(reason) => Err(OrbitError::Poisoned(reason)),
            None => Ok(()),
        }
    }

    /// Writes `writes` as one batch, assigning revisions to the puts in order; returns the
    /// first revision assigned. Callers hold the stripes of every reference involved.
    fn commit(&self, writes: Vec<Write<'_>>) -> OrbitResult<u64> {
        self.check_writable()?;
        if writes.is_empty() {
            return Ok(self.last_revision() + 1);
        }
        let _commit = self.commits.read().unwrap_or_else(PoisonError::into_inner);
        let first = self
            .last_revision
            .fetch_add(writes.len() as u64, Ordering::SeqCst)
            + 1;
        let last = first + writes.len() as u64 - 1;
        let written = self.write_batch(first, writes);
        // Announced even when the write failed: the store is poisoned then, and a watcher
        // must not wait for revisions that will never come (it finds them missing instead).
        self.written.done(first, last);
        written.map(|()| first)
    }

    /// Writes `writes` with revisions from `first` on as one batch, with their history events.
    fn write_batch(&self, first: u64, writes: Vec<Write<'_>>) -> OrbitResult<()> {
        let cfs = self.lease_cfs();
        let leases = cfs.leases;
        let history = (self.watch_history > 0).then(|| self.cf(CF_HISTORY));
        let record = |batch: &mut WriteBatch, revision: u64, kind, lease: &AddressableLease| {
            if let Some(history) = history {
                batch.put_cf(
                    history,
                    revision.to_be_bytes(),
                    LeaseEvent::encode_value(kind, lease),
                );
                if revision > self.watch_history {
                    batch.delete_cf(history, (revision - self.watch_history).to_be_bytes());
                }
            }
        };
        let mut batch = WriteBatch::default();
        let mut delta: i64 = 0;
        for (i, write) in writes.into_iter().enumerate() {
            match write {
                Write::Put { previous, lease } => {
                    if cfs.put(&mut batch, previous.as_ref(), lease, first + i as u64) {
                        delta += 1;
                    }
                    if history.is_some() {
                        let revision = first + i as u64;
                        let stored = AddressableLease {
                            revision,
                            ..lease.clone()
                        };
                        record(&mut batch, revision, LeaseEventKind::Put, &stored);
                    }
                }
                Write::Delete { previous, kind } => {
                    cfs.unindex(&mut batch, &previous, None);
                    batch.delete_cf(leases, encode_reference(&previous.reference));
                    delta -= 1;
                    record(&mut batch, first + i as u64, kind, &previous);
                }
            }
        }
        let last = self.last_revision();
        batch.merge_cf(leases, KEY_REVISION, last.to_be_bytes());
        if delta != 0 {
            batch.merge_cf(leases, KEY_LEASE_COUNT, (delta as u64).to_be_bytes());
        }
        self.write_or_poison(batch)
    }

    /// Writes `batch`; a failed write poisons the store (it may be half durable).
    fn write_or_poison(&self, batch: WriteBatch) -> OrbitResult<()> {
        if let Err(e) = self.db.write_opt(batch, &self.write_options) {
            let reason = format!("a write failed and may not be durable: {e}");
            self.poison(reason.clone());
            return Err(OrbitError::Poisoned(reason));
        }
        Ok(())
    }

    /// The column families a lease write touches, looked up once per batch.
    fn lease_cfs(&self) -> LeaseCfs<'_> {
        LeaseCfs {
            leases: self.cf(CF_LEASES),
            by_node: self.cf(CF_BY_NODE),
            by_expiry: self.cf(CF_BY_EXPIRY),
        }
    }

    /// Events with revisions in `from..=upto`, at most `limit`, from the history column
    /// family.
    pub fn history(&self, from: u64, upto: u64, limit: usize) -> OrbitResult<Vec<LeaseEvent>> {
        let mut out = Vec::new();
        if self.watch_history == 0 || from > upto {
            return Ok(out);
        }
        // Revisions may be missing (taken, then lost in a crash), so a missing one cannot tell
        // a trimmed history: the window can. A write of revision r deletes the event of
        // r - watch_history, and no write is above the counter.
        let latest = self.last_revision();
        // Nothing before a restore's revision is kept (the backup held no history).
        let floor = self.history_floor.load(Ordering::SeqCst);
        if from <= floor {
            return Err(OrbitError::Compacted {
                requested: from.saturating_sub(1),
                oldest: floor,
            });
        }
        if from.saturating_add(self.watch_history) <= latest {
            return Err(OrbitError::Compacted {
                requested: from.saturating_sub(1),
                oldest: latest - self.watch_history,
            });
        }
        let mut read = ReadOptions::default();
        if let Some(after) = upto.checked_add(1) {
            read.set_iterate_upper_bound(after.to_be_bytes());
        }
        let start = from.to_be_bytes();
        let iter = self.db.iterator_cf_opt(
            self.cf(CF_HISTORY),
            read,
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter.take(limit) {
            let (key, value) = item.map_err(|e| rocks_err("read history", &self.path, e))?;
            let revision = key
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| self.corruption(CF_HISTORY, format!("history key {key:02x?}")))?;
            out.push(LeaseEvent::decode_value(revision, &value).map_err(|e| {
                self.corruption(CF_HISTORY, format!("history event {revision}: {e}"))
            })?);
        }
        Ok(out)
    }

    /// Every lease from one consistent snapshot, and its revision: no commit is between
    /// taking its revisions and writing them when the snapshot is taken.
    pub fn snapshot_leases(&self) -> OrbitResult<LeaseSnapshot> {
        let (snapshot, revision) = self.consistent_snapshot();
        let leases = self.snapshot_iter(&snapshot).collect::<OrbitResult<_>>()?;
        Ok(LeaseSnapshot { revision, leases })
    }

    /// A snapshot and its revision: no commit is between taking its revisions and writing
    /// them when it is taken.
    fn consistent_snapshot(&self) -> (rocksdb::Snapshot<'_>, u64) {
        let gate = self.commits.write().unwrap_or_else(PoisonError::into_inner);
        let snapshot = self.db.snapshot();
        let revision = self.last_revision();
        drop(gate);
        (snapshot, revision)
    }

    /// Every lease of `snapshot`, in reference order, read as the iterator is advanced.
    fn snapshot_iter<'s>(
        &'s self,
        snapshot: &'s rocksdb::Snapshot<'_>,
    ) -> impl Iterator<Item = OrbitResult<AddressableLease>> + 's {
        let iter = snapshot.iterator_cf_opt(
            self.cf(CF_LEASES),
            ReadOptions::default(),
            IteratorMode::Start,
        );
        iter.filter_map(move |item| match item {
            Err(e) => Some(Err(rocks_err("read leases", &self.path, e))),
            // The counters live beside the leases under keys starting with a 0 byte, which no
            // encoded reference does.
            Ok((key, _)) if key.first() == Some(&0) => None,
            Ok((key, value)) => Some(self.decode(&key, &value)),
        })
    }

    /// Writes the backup `dest` of one consistent snapshot, streaming its leases.
    pub fn backup(&self, dest: &Path) -> OrbitResult<BackupSummary> {
        let (snapshot, revision) = self.consistent_snapshot();
        let count = snapshot
            .get_cf(self.cf(CF_LEASES), KEY_LEASE_COUNT)
            .map_err(|e| rocks_err("read counter", &self.path, e))?
            .map_or(0, |v| v.as_slice().try_into().map_or(0, u64::from_be_bytes));
        let header = BackupHeader::now("rocksdb", revision, count);
        backup::write_backup(
            Arc::new(StdFileSystem::new()),
            dest,
            header,
            self.snapshot_iter(&snapshot),
        )
    }

    /// `restore_leases`: the leases with their own revisions and no events, the revision
    /// counter raised to `revision`, and the history marked as starting there, in one batch.
    pub fn restore(&self, leases: &[AddressableLease], revision: u64) -> OrbitResult<()> {
        self.check_writable()?;
        // Stripes first, then the gate, as every commit takes them.
        let refs = || leases.iter().map(|l| &l.reference);
        let _guards = self.stripes.lock(refs());
        let previous = self.get_many(refs())?;
        let _gate = self.commits.write().unwrap_or_else(PoisonError::into_inner);
        let current = self.last_revision();
        rules::restore_allowed(current, revision)?;
        let cfs = self.lease_cfs();
        let cf_leases = cfs.leases;
        let mut batch = WriteBatch::default();
        let mut added = 0u64;
        for (lease, previous) in leases.iter().zip(previous) {
            if cfs.put(&mut batch, previous.as_ref(), lease, lease.revision) {
                added += 1;
            }
        }
        batch.merge_cf(cf_leases, KEY_REVISION, revision.to_be_bytes());
        if added > 0 {
            batch.merge_cf(cf_leases, KEY_LEASE_COUNT, added.to_be_bytes());
        }
        if revision > current {
            batch.put_cf(cf_leases, KEY_HISTORY_FLOOR, revision.to_be_bytes());
        }
        self.write_or_poison(batch)?;
        if revision > current {
            self.history_floor.store(revision, Ordering::SeqCst);
            self.last_revision.store(revision, Ordering::SeqCst);
            self.written.done(current + 1, revision);
        }
        Ok(())
    }

    /// `replicate`: another store's events, verbatim, with their history events, continuing
    /// this store's revisions, in one batch.
    pub fn replicate(&self, events: &[LeaseEvent]) -> OrbitResult<()> {
        self.check_writable()?;
        let Some(first) = events.first() else {
            return Ok(());
        };
        // Stripes first, then the gate, as every commit takes them.
        let refs = || events.iter().map(LeaseEvent::reference);
        let _guards = self.stripes.lock(refs());
        let stored = self.get_many(refs())?;
        let _gate = self.commits.write().unwrap_or_else(PoisonError::into_inner);
        let current = self.last_revision();
        rules::replicate_allowed(current, first.revision)?;
        // Each write's previous lease is what the batch itself left, ahead of the stored one.
        let mut state: HashMap<&AddressableReference, Option<AddressableLease>> = HashMap::new();
        let mut writes = Vec::with_capacity(events.len());
        for (event, stored) in events.iter().zip(stored) {
            let r = event.reference();
            let previous = match state.get(r) {
                Some(now) => now.clone(),
                None => stored,
            };
            if event.is_removal() {
                let Some(previous) = previous else {
                    return Err(rules::replicated_removal_missing(r, event.revision));
                };
                writes.push(Write::Delete {
                    previous,
                    kind: event.kind,
                });
                state.insert(r, None);
            } else {
                writes.push(Write::Put {
                    previous,
                    lease: &event.lease,
                });
                state.insert(r, Some(event.lease.clone()));
            }
        }
        let last = current + events.len() as u64;
        self.last_revision.store(last, Ordering::SeqCst);
        let written = self.write_batch(first.revision, writes);
        // Announced even on failure, as commit does: the store is poisoned then.
        self.written.done(first.revision, last);
        written
    }

    /// The revision everything up to which is written (what watchers may read).
    pub fn written_revision(&self) -> u64 {
        self.written.signal().revision()
    }

    /// The signal the change feed's watchers wait on.
    pub fn feed(&self) -> &FeedSignal {
        self.written.signal()
    }

    /// Whether the store keeps a change history.
    pub fn keeps_history(&self) -> bool {
        self.watch_history > 0
    }

    /// Upserts leases atomically.
    pub fn store(&self, leases: &[AddressableLease]) -> OrbitResult<()> {
        let refs = || leases.iter().map(|l| &l.reference);
        let _guards = self.stripes.lock(refs());
        let previous = self.get_many(refs())?;
        let writes = leases
            .iter()
            .zip(previous)
            .map(|(lease, previous)| Write::Put { previous, lease })
            .collect();
        self.commit(writes).map(|_| ())
    }

    /// Removes a lease; whether there was one.
    pub fn remove(&self, r: &AddressableReference) -> OrbitResult<bool> {
        let _guard = self.stripes.lock([r]);
        match self.get(r)? {
            Some(previous) => self
                .commit(vec![Write::Delete {
                    previous,
                    kind: LeaseEventKind::Removed,
                }])
                .map(|_| true),
            None => Ok(false),
        }
    }

    /// Registers `lease` if the reference is free or expired at `now`.
    pub fn acquire(&self, lease: AddressableLease, now: Timestamp) -> OrbitResult<Acquire> {
        let _guard = self.stripes.lock([&lease.reference]);
        let previous = self.get(&lease.reference)?;
        if let Err(held) = rules::acquire_allowed(previous.as_ref(), now) {
            return Ok(Acquire::Held(held));
        }
        let revision = self.commit(vec![Write::Put {
            previous,
            lease: &lease,
        }])?;
        Ok(Acquire::Acquired(AddressableLease { revision, ..lease }))
    }

    /// Extends the lease if `(owner, revision)` still holds it.
    pub fn renew(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
        expires_at: Timestamp,
        renew_at: Timestamp,
    ) -> OrbitResult<Renew> {
        let _guard = self.stripes.lock([r]);
        let previous = self.get(r)?;
        match rules::renew_decision(previous.as_ref(), owner, revision, expires_at, renew_at) {
            Ok(lease) => {
                let revision = self.commit(vec![Write::Put {
                    previous,
                    lease: &lease,
                }])?;
                Ok(Renew::Renewed(AddressableLease { revision, ..lease }))
            }
            Err(lost) => Ok(lost),
        }
    }

    /// Removes the lease if `(owner, revision)` still holds it.
    pub fn release(
        &self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
    ) -> OrbitResult<bool> {
        let _guard = self.stripes.lock([r]);
        match self.get(r)? {
            Some(previous) if rules::owns(Some(&previous), owner, revision) => self
                .commit(vec![Write::Delete {
                    previous,
                    kind: LeaseEventKind::Released,
                }])
                .map(|_| true),
            _ => Ok(false),
        }
    }

    /// Removes up to `limit` leases expired at `now`, earliest first, from the expiry index
    /// entries after `after` (the last key a previous step of the same cleanup scanned).
    /// Returns how many it removed and, if the index may hold more, where the next step starts.
    ///
    /// Starting after the previous step skips the tombstones that step left: scanning from the
    /// start every time made a cleanup quadratic in the number it removes. Nothing expired at
    /// `now` can appear below `after` meanwhile: a lease written now expires after `now`, so
    /// its entry sorts after every candidate.
    pub fn cleanup_step(
        &self,
        now: Timestamp,
        limit: usize,
        after: Option<Vec<u8>>,
    ) -> OrbitResult<(u64, Option<Vec<u8>>)> {
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(expiry_index_upper_bound(now));
        if let Some(after) = &after {
            read.set_iterate_lower_bound(after.clone());
        }
        let mut candidates = Vec::new();
        let mut last = None;
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_BY_EXPIRY), read, IteratorMode::Start)
        {
            let (key, _) = item.map_err(|e| rocks_err("scan expiry index", &self.path, e))?;
            if after.as_deref() == Some(&key) {
                continue;
            }
            let (expires_at, r) = decode_expiry_index_key(&key).map_err(|e| {
                self.corruption(CF_BY_EXPIRY, format!("expiry index key {key:02x?}: {e}"))
            })?;
            candidates.push((expires_at, r));
            if candidates.len() == limit {
                last = Some(key.into_vec());
                break;
            }
        }
        let refs: Vec<_> = candidates.iter().map(|(_, r)| r.clone()).collect();
        let _guards = self.stripes.lock(&refs);
        // Re-read under the locks: a candidate renewed since the scan is no longer expired.
        let writes = self
            .get_many(&refs)?
            .into_iter()
            .flatten()
            .filter(|l| l.is_expired(now))
            .map(|previous| Write::Delete {
                previous,
                kind: LeaseEventKind::Expired,
            })
            .collect::<Vec<_>>();
        let removed = writes.len() as u64;
        self.commit(writes)?;
        Ok((removed, last))
    }

    /// Removes the leases of `node` among the first `limit` node-index entries after `after`
    /// (the last key a previous step of the same eviction read; `None`: from the node's first).
    /// Returns how many it removed and, if the index may hold more, where the next step starts.
    /// Like [`Store::cleanup_step`], each step starts past the last, so no step walks the
    /// tombstones of those before.
    pub fn evict_step(
        &self,
        node: &NodeId,
        limit: usize,
        after: Option<Vec<u8>>,
    ) -> OrbitResult<(u64, Option<Vec<u8>>)> {
        let prefix = node_index_prefix(node);
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(prefix_end(&prefix));
        read.set_iterate_lower_bound(after.clone().unwrap_or_else(|| prefix.clone()));
        let mut refs = Vec::new();
        let mut last = None;
        for item in self
            .db
            .iterator_cf_opt(self.cf(CF_BY_NODE), read, IteratorMode::Start)
        {
            let (key, _) = item.map_err(|e| rocks_err("scan node index", &self.path, e))?;
            if after.as_deref() == Some(&key) {
                continue;
            }
            let r = decode_reference(&key[prefix.len()..]).map_err(|e| {
                self.corruption(CF_BY_NODE, format!("node index key {key:02x?}: {e}"))
            })?;
            refs.push(r);
            if refs.len() == limit {
                last = Some(key.into_vec());
                break;
            }
        }
        let _guards = self.stripes.lock(&refs);
        // Re-read under the locks: a lease moved to another node since the scan stays.
        let writes = self
            .get_many(&refs)?
            .into_iter()
            .flatten()
            .filter(|l| l.node_id == *node)
            .map(|previous| Write::Delete {
                previous,
                kind: LeaseEventKind::Evicted,
            })
            .collect::<Vec<_>>();
        let removed = writes.len() as u64;
        self.commit(writes)?;
        Ok((removed, last))
    }

    /// Flushes every memtable to SST files, so the next open replays no WAL.
    pub fn flush(&self) -> OrbitResult<()> {
        let cfs: Vec<_> = [CF_LEASES, CF_BY_NODE, CF_BY_EXPIRY, CF_HISTORY]
            .iter()
            .map(|cf| self.cf(cf))
            .collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(|e| rocks_err("flush memtables", &self.path, e))
    }

    /// Makes everything written so far durable (the WAL is synced).
    pub fn sync(&self) -> OrbitResult<()> {
        self.db
            .flush_wal(true)
            .map_err(|e| rocks_err("sync wal", &self.path, e))
    }

    /// A database-wide integer property (0 where RocksDB has none).
    pub fn property(&self, name: &str) -> u64 {
        self.db.property_int_value(name).ok().flatten().unwrap_or(0)
    }

    /// Unhealthy when poisoned or when RocksDB stopped writes; degraded while it delays them.
    pub fn health(&self) -> ProviderHealth {
        if let Some(reason) = self.poisoned() {
            return ProviderHealth::Unhealthy { reason };
        }
        if self.property_sum("rocksdb.is-write-stopped") > 0 {
            return ProviderHealth::Unhealthy {
                reason: "RocksDB has stopped writes (compaction or flush far behind)".into(),
            };
        }
        let delayed = self.property_sum("rocksdb.actual-delayed-write-rate");
        if delayed > 0 {
            return ProviderHealth::Degraded {
                reason: format!("RocksDB is delaying writes to {delayed} bytes/s"),
            };
        }
        ProviderHealth::Healthy
    }

    /// `base` (the provider's counters) completed with the store's sizes and gauges.
    pub fn metrics(&self, base: PersistenceMetrics) -> OrbitResult<PersistenceMetrics> {
        Ok(PersistenceMetrics {
            lease_count: self.lease_count()?,
            last_revision: self.last_revision(),
            // The whole directory (tables, WAL, MANIFEST), as every disk backend reports it:
            // RocksDB's own SST size leaves out the WAL a fresh store holds everything in.
            disk_bytes: orbit_persistence_core::fs::dir_bytes(&StdFileSystem::new(), &self.path),
            disk_free_bytes: orbit_persistence_core::fs::free_bytes(&self.path).unwrap_or(0),
            // The block cache is shared by the families: count it once.
            memory_bytes: self.property_sum("rocksdb.cur-size-all-mem-tables")
                + self.property("rocksdb.block-cache-usage"),
            engine: self.engine_gauges(),
            ..base
        })
    }

    /// RocksDB's own gauges, per column family (`leases.estimate-num-keys`, ...) and for the
    /// database (`num-running-compactions`), for [`orbit_persistence_core::PersistenceMetrics::engine`].
    pub fn engine_gauges(&self) -> BTreeMap<String, u64> {
        const PER_FAMILY: [&str; 4] = [
            "estimate-num-keys",
            "estimate-pending-compaction-bytes",
            "live-sst-files-size",
            "num-immutable-mem-table",
        ];
        let mut gauges = BTreeMap::new();
        for cf in [CF_LEASES, CF_BY_NODE, CF_BY_EXPIRY] {
            for name in PER_FAMILY {
                let value = self.property_cf(cf, &format!("rocksdb.{name}"));
                gauges.insert(format!("{cf}.{name}"), value);
            }
        }
        for name in ["num-running-compactions", "actual-delayed-write-rate"] {
            gauges.insert(name.into(), self.property(&format!("rocksdb.{name}")));
        }
        gauges
    }

    /// An integer property of one column family (0 where RocksDB has none).
    fn property_cf(&self, cf: &str, name: &str) -> u64 {
        self.db
            .property_int_value_cf(self.cf(cf), name)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// An integer property summed over the lease and index column families.
    pub fn property_sum(&self, name: &str) -> u64 {
        [CF_LEASES, CF_BY_NODE, CF_BY_EXPIRY]
            .iter()
            .map(|cf| self.property_cf(cf, name))
            .sum()
    }
}

#[cfg(test)]
mod damaged_file_tests {
    use super::*;

    #[test]
    fn the_file_and_offset_rocksdb_names_are_found() {
        let table = "Corruption: block checksum mismatch: stored = 1, computed = 2, type = 4 \
                     in /data/db/000012.sst offset 4096 size 3962";
        assert_eq!(
            damaged_file_in(table),
            Some((PathBuf::from("/data/db/000012.sst"), 4096))
        );
        let wal_replay = "2026/11/26-01:06:21.980207 26485 [WARN] [db/db_impl/db_impl_open.cc:1117] \
                          /data/db/000014.log: dropping 22692 bytes; Corruption: checksum mismatch";
        assert_eq!(
            damaged_file_in(wal_replay),
            Some((PathBuf::from("/data/db/000014.log"), 0))
        );
        // The source file of a log line is not a data file.
        assert_eq!(damaged_file_in("Corruption: checksum mismatch"), None);
    }
}
