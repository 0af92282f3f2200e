//! Recovery at open: the newest valid meta page names the tree, the free list and the first WAL
//! segment; the WAL since is replayed into the tree in memory. A damaged meta page is skipped
//! (and reported) for the older one, which is only good while its WAL is still there.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use orbit_persistence_core::encoding::DecodeError;
use orbit_persistence_core::engine::{self, Published};
use orbit_persistence_core::fs::{FileSystem, FsFile, OpenMode, write_file_atomic};
use orbit_persistence_core::identity::{self, EngineFiles, Plan};
use orbit_persistence_core::wal::{self, Access};
use orbit_persistence_core::{
    BackendType, OrbitError, OrbitResult, RecoveryAction, RecoveryReport,
};

use crate::btree::Child;
use crate::freelist::{self, Allocator};
use crate::meta::{self, META_LEN, META_VERSION, Meta};
use crate::page::Layout;
use crate::pagefile::PageStore;
use crate::version::{Guard, Version};
use crate::writer::{Settings, Shared, Stats, Writer};

/// Name of the page file in the data directory.
pub const PAGE_FILE: &str = "pages.cow";

/// The files of this engine, for its identity record ([`identity`]).
pub const FILES: EngineFiles = EngineFiles {
    engine: BackendType::CowBTree,
    format_version: META_VERSION,
    root: PAGE_FILE,
    owns: |name| name.starts_with(PAGE_FILE) || name.starts_with("wal-"),
};

fn read_meta(file: &dyn FsFile, at: u64) -> Result<Meta, DecodeError> {
    let mut buf = [0u8; META_LEN];
    match file.read_exact_at(&mut buf, at) {
        Ok(()) => Meta::decode(&buf),
        Err(e) => Err(DecodeError::new(0, format!("unreadable: {e}"))),
    }
}

/// Opens (or creates) the store in `dir` and replays its WAL, recording in `report` what
/// recovery did. The caller holds the directory lock (a shared one for `ReadOnly`).
///
/// `Access::ReadOnly` creates, deletes and writes nothing: the WAL's replay goes into the
/// tree in memory only, and the writer returned must not be started (its WAL cannot
/// append); the published version serves reads.
pub fn open(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    settings: Settings,
    access: Access,
    report: &mut RecoveryReport,
) -> OrbitResult<(Writer, Arc<Shared>)> {
    let plan = identity::prepare(&*fs, dir, &FILES)?;
    let path = dir.join(PAGE_FILE);
    if access == Access::ReadOnly {
        identity::check_readable(dir, plan)?;
    }
    if let Plan::Create { restart } = plan {
        let mut id = identity::begin_create(&*fs, dir, &FILES, restart, settings.now, report)?;
        let first = Meta {
            page_size: settings.page_size as u32,
            generation: 0,
            page_count: 2,
            wal_start: 1,
            ..Meta::default()
        };
        let mut bytes = first.encode();
        bytes.extend(
            Meta {
                generation: 1,
                ..first
            }
            .encode(),
        );
        write_file_atomic(&*fs, &path, &bytes)?;
        wal::create_first(&*fs, dir, first.wal_start)?;
        identity::finish_create(&*fs, dir, &mut id)?;
    } else if !fs.exists(&path)? {
        return Err(OrbitError::corruption(
            &path,
            0,
            "page file is missing (deleted?): the store's checkpointed data is gone",
        ));
    }
    let mode = match access {
        Access::ReadWrite => OpenMode::ReadWrite,
        Access::ReadOnly => OpenMode::Read,
    };
    let file: Arc<dyn FsFile> = Arc::from(fs.open(&path, mode)?);
    let first = read_meta(&*file, 0);
    let page_size = first
        .as_ref()
        .map_or(settings.page_size, |m| m.page_size as usize);
    let second = read_meta(&*file, page_size as u64);
    let meta = match meta::newest(first.clone(), second.clone()) {
        Ok(m) => m,
        Err((a, b)) => {
            return Err(OrbitError::corruption(
                &path,
                0,
                format!("no valid meta page: page 0 {a}; page 1 {b}"),
            ));
        }
    };
    // A meta page that fails its checks is a torn checkpoint, or bit rot: remembered, to
    // name it if the older meta page it leaves us with cannot be recovered.
    let mut damaged_meta: Option<(u64, String)> = None;
    for (slot, m) in [(0, &first), (1, &second)] {
        match m {
            Ok(m) if m.page_size != meta.page_size => {
                return Err(OrbitError::corruption(
                    &path,
                    slot * page_size as u64,
                    "meta pages disagree on the page size",
                ));
            }
            Err(e) => {
                report.record(RecoveryAction::DamagedRootSkipped {
                    path: path.clone(),
                    offset: slot * page_size as u64,
                    reason: e.to_string(),
                });
                damaged_meta = Some((slot * page_size as u64, e.to_string()));
            }
            Ok(_) => {}
        }
    }
    if meta.page_size as usize != settings.page_size {
        return Err(OrbitError::Config(format!(
            "cow_btree.page_size is {} but {} was created with pages of {} bytes",
            settings.page_size,
            path.display(),
            meta.page_size
        )));
    }
    let layout = Layout::new(page_size);
    let file_pages = file.len()? / page_size as u64;
    if file_pages < meta.page_count {
        return Err(OrbitError::corruption(
            &path,
            file_pages * page_size as u64,
            format!(
                "file holds {file_pages} pages, meta page says {}",
                meta.page_count
            ),
        ));
    }
    let store = Arc::new(PageStore::new(
        &path,
        layout,
        Arc::clone(&file),
        file_pages,
    )?);
    let (free, freelist_pages) =
        freelist::read_freelist(&store, meta.freelist_head, meta.free_count)?;
    let alloc = Allocator {
        free: free.into_iter().collect(),
        page_count: meta.page_count,
    };
    let root = if meta.root == 0 {
        Child::empty(&layout)
    } else {
        Child::Page(meta.root)
    };
    let replayed = wal::recover(&*fs, dir, meta.wal_start, &path, access, report).map_err(|e| {
        match (&damaged_meta, e) {
            // After a torn checkpoint the older meta page's WAL is still there; when it is
            // not, a durable newer meta page rotted, and that page is what to report.
            (Some((offset, reason)), e @ OrbitError::Corruption { .. }) => OrbitError::corruption(
                &path,
                *offset,
                format!(
                    "meta page is damaged ({reason}), and the older meta page cannot \
                         be recovered without it: {e}"
                ),
            ),
            (_, e) => e,
        }
    })?;
    let released = Arc::new(Mutex::new(Vec::new()));
    let guard = Guard::new(Arc::clone(&released));
    let shared = Arc::new(Shared {
        published: Published::new(Version {
            root: root.clone(),
            store: Arc::clone(&store),
            lease_count: meta.lease_count,
            revision: meta.last_revision,
            guard: Arc::clone(&guard),
        }),
        stats: Stats::default(),
        layout,
    });
    let mut writer = Writer {
        fs,
        dir: dir.to_path_buf(),
        settings,
        store,
        root,
        meta,
        alloc,
        retired: Vec::new(),
        freelist_pages,
        in_guards: BTreeSet::new(),
        released,
        guard,
        wal: replayed.writer,
        wal_seq: replayed.seq,
        lease_count: meta.lease_count,
        revision: meta.last_revision,
        loaded: 0,
        last_checkpoint: Instant::now(),
        in_flight: None,
        shared: Arc::clone(&shared),
    };
    engine::replay(&mut writer, &replayed.records)?;
    writer.publish_version();
    if plan == Plan::Legacy && access == Access::ReadWrite {
        identity::adopt(&*writer.fs, dir, &FILES, writer.settings.now, report)?;
    }
    Ok((writer, shared))
}
