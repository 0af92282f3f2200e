//! Recovery at open: the manifest names the live tables and the first WAL segment to replay;
//! tables the manifest does not name (a flush or compaction that crashed before its edit, or
//! one whose inputs were not deleted yet) are deleted; the WAL segments from the manifest's
//! start on are replayed into a fresh memtable. Replay is bounded by the memtables that were
//! not flushed: at most `(max_immutable_memtables + 1) * memtable_size` of log.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};

use orbit_persistence_core::engine::{self, Published};
use orbit_persistence_core::fs::FileSystem;
use orbit_persistence_core::identity::{self, EngineFiles, Plan};
use orbit_persistence_core::wal::{self, Access};
use orbit_persistence_core::{
    BackendType, OrbitError, OrbitResult, RecoveryAction, RecoveryReport, Timestamp,
};

use crate::cache::BlockCache;
use crate::compaction::CompactionStrategy;
use crate::levels::{Levels, MAX_LEVELS, TableHandle};
use crate::manifest::{MANIFEST, Manifest};
use crate::memtable::Memtable;
use crate::shared::{Settings, Shared, Signals, Stats};
use crate::sstable::{Table, parse_table_name, table_path};
use crate::version::Version;
use crate::writer::Writer;

/// The files of this engine, for its identity record ([`identity`]).
pub const FILES: EngineFiles = EngineFiles {
    engine: BackendType::LsmTree,
    format_version: crate::sstable::VERSION,
    root: MANIFEST,
    owns: |name| {
        name.starts_with(MANIFEST) || name.starts_with("wal-") || parse_table_name(name).is_some()
    },
};

/// Opens the tables the manifest names, in levels, after deleting the files nobody names.
fn open_levels(
    fs: &dyn FileSystem,
    dir: &Path,
    manifest: &Manifest,
    cache: &Option<Arc<BlockCache>>,
    access: Access,
    report: &mut RecoveryReport,
) -> OrbitResult<Levels> {
    let tables = &manifest.state().tables;
    // Read-only: files nobody names are simply not read.
    let names = match access {
        Access::ReadWrite => fs.list_dir(dir)?,
        Access::ReadOnly => Vec::new(),
    };
    for name in names {
        let orphan = parse_table_name(&name).is_some_and(|id| !tables.contains_key(&id));
        if orphan || name == format!("{MANIFEST}.tmp") {
            let path = dir.join(&name);
            fs.remove_file(&path)?;
            report.record(RecoveryAction::OrphanRemoved { path });
        }
    }
    let mut levels = Levels::default();
    for meta in tables.values() {
        let path = table_path(dir, meta.id);
        if !fs.exists(&path)? {
            return Err(OrbitError::corruption(
                &path,
                0,
                "table named by the manifest is missing",
            ));
        }
        let table = Table::open(fs, &path, meta.id, cache.clone())?;
        levels.levels[meta.level as usize].push(Arc::new(TableHandle {
            meta: meta.clone(),
            table: Arc::new(table),
        }));
    }
    // Level 0: newest (highest id) first. Deeper levels: by key, without overlap.
    levels.levels[0].sort_by_key(|t| std::cmp::Reverse(t.meta.id));
    for level in 1..MAX_LEVELS {
        let tables = &mut levels.levels[level];
        tables.sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
        if let Some(w) = tables
            .windows(2)
            .find(|w| w[0].meta.largest >= w[1].meta.smallest)
        {
            return Err(OrbitError::corruption(
                dir.join(MANIFEST),
                0,
                format!(
                    "tables {:016x} and {:016x} of level {level} overlap",
                    w[0].meta.id, w[1].meta.id
                ),
            ));
        }
    }
    Ok(levels)
}

/// Opens (or creates) the tree in `dir`, replays its WAL and starts the background
/// threads, recording in `report` what recovery did. The caller holds the directory lock
/// (a shared one for `ReadOnly`).
///
/// `Access::ReadOnly` creates, deletes and writes nothing and starts no thread: the WAL is
/// replayed into the memtable only, and the writer returned must not be started (its WAL
/// cannot append); the published state serves reads.
#[allow(clippy::too_many_arguments)]
pub fn open(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    settings: Settings,
    cache_size: u64,
    strategy: Box<dyn CompactionStrategy>,
    now: Timestamp,
    access: Access,
    report: &mut RecoveryReport,
) -> OrbitResult<(Writer, Arc<Shared>)> {
    let plan = identity::prepare(&*fs, dir, &FILES)?;
    if access == Access::ReadOnly {
        identity::check_readable(dir, plan)?;
    }
    let manifest_path = dir.join(MANIFEST);
    let manifest = if let Plan::Create { restart } = plan {
        let mut id = identity::begin_create(&*fs, dir, &FILES, restart, now, report)?;
        let manifest = Manifest::create(Arc::clone(&fs), dir)?;
        wal::create_first(&*fs, dir, manifest.state().log_start)?;
        identity::finish_create(&*fs, dir, &mut id)?;
        manifest
    } else if fs.exists(&manifest_path)? {
        Manifest::open(Arc::clone(&fs), dir)?
    } else {
        return Err(OrbitError::corruption(
            &manifest_path,
            0,
            "manifest is missing (deleted?): the store's tables cannot be found without it",
        ));
    };
    if let Some(at) = manifest.torn_at() {
        report.record(RecoveryAction::DamagedRootSkipped {
            path: manifest_path.clone(),
            offset: at,
            reason: "the last edit is torn or damaged (a crash while committing it?)".into(),
        });
    }
    let cache =
        (cache_size > 0).then(|| Arc::new(BlockCache::new(cache_size, settings.block_size)));
    // A damaged last manifest edit reads like a torn one, and recovery starts from the state
    // before it. After a real torn commit that state's tables and WAL segments still exist
    // (nothing is deleted before the edit retiring it is durable); when they do not, the
    // edit was durable and rotted, and the manifest is what to name.
    let name_manifest = |e: OrbitError| match (manifest.torn_at(), e) {
        (Some(at), e @ OrbitError::Corruption { .. }) => OrbitError::corruption(
            manifest.path(),
            at,
            format!(
                "the last manifest edit is damaged, and the state before it cannot be \
                     recovered without it: {e}"
            ),
        ),
        (_, e) => e,
    };
    let levels =
        open_levels(&*fs, dir, &manifest, &cache, access, report).map_err(name_manifest)?;
    let ms = manifest.state().clone();
    let replayed = wal::recover(&*fs, dir, ms.log_start, &manifest_path, access, report)
        .map_err(name_manifest)?;
    let shared = Arc::new(Shared {
        fs,
        dir: dir.to_path_buf(),
        settings,
        published: Published::new(Version {
            active: Arc::new(Memtable::default()),
            frozen: Vec::new(),
            levels: Arc::new(levels),
            seq: 0,
            lease_count: ms.lease_count,
            revision: ms.last_revision,
            dir: Arc::new(dir.to_path_buf()),
        }),
        manifest: Mutex::new(manifest),
        next_table_id: AtomicU64::new(ms.next_table_id),
        cache,
        strategy,
        stats: Stats::default(),
        signals: Mutex::new(Signals::default()),
        changed: Condvar::new(),
        freeze_requested: AtomicBool::new(false),
    });
    let mut writer = Writer::new(
        Arc::clone(&shared),
        replayed.writer,
        replayed.seq,
        ms.lease_count,
        ms.last_revision,
    );
    engine::replay(&mut writer, &replayed.records)?;
    writer.publish_state();
    if access == Access::ReadOnly {
        return Ok((writer, shared));
    }
    if plan == Plan::Legacy {
        identity::adopt(&*shared.fs, dir, &FILES, now, report)?;
    }
    writer.spawn_threads()?;
    if shared.current().active.bytes() >= shared.settings.memtable_size {
        writer.freeze()?;
    }
    Ok((writer, shared))
}
