//! The copy-on-write B+tree as core's `Engine`: what `DiskDirectory` holds while the store is
//! open (the writer's [`Shared`] state), and how it opens, verifies and reports metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orbit_persistence_core::engine::{Engine, EngineMetrics};
use orbit_persistence_core::fs::FileSystem;
use orbit_persistence_core::identity::EngineFiles;
use orbit_persistence_core::verify::VerifyReport;
use orbit_persistence_core::wal::Access;
use orbit_persistence_core::{CowBTreeConfig, OrbitResult, RecoveryReport, Timestamp};

use crate::recovery;
use crate::version::Version;
use crate::writer::{Settings, Shared, Writer};

/// The copy-on-write B+tree as core's [`Engine`]: what the provider holds while it is open.
#[derive(Debug)]
pub struct CowBTree {
    shared: Arc<Shared>,
}

impl Engine for CowBTree {
    type Config = CowBTreeConfig;
    type Version = Version;
    type Writer = Writer;

    const NAME: &'static str = "cowbtree";
    const FILES: EngineFiles = recovery::FILES;

    fn open(
        fs: Arc<dyn FileSystem>,
        config: &CowBTreeConfig,
        now: Timestamp,
        access: Access,
        report: &mut RecoveryReport,
    ) -> OrbitResult<(Self, Writer)> {
        let settings = Settings {
            page_size: config.page_size as usize,
            checkpoint_interval: Duration::from_millis(config.checkpoint_interval_ms),
            wal_size_limit: config.wal_size_limit,
            cache_size: config.cache_size,
            now,
            watch_history: config.watch_history,
        };
        let (writer, shared) = recovery::open(fs, &config.data_dir, settings, access, report)?;
        Ok((CowBTree { shared }, writer))
    }

    #[inline]
    fn current(&self) -> Arc<Version> {
        self.shared.current()
    }

    /// Only the tree's pages are read, not the whole file (free pages are not); the meta pages
    /// and the free list were checked at open.
    fn verify_files(version: &Version, report: &mut VerifyReport) {
        report.files_checked = 1;
        report.bytes_checked =
            version.store.checked_pages() * version.store.layout().page_size as u64;
    }

    fn metrics(&self, _: &Version) -> EngineMetrics {
        let s = &self.shared.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let page_size = self.shared.layout.page_size as u64;
        EngineMetrics {
            memory_bytes: load(&s.loaded_pages) * page_size,
            counters: EngineMetrics::counters([
                ("checkpoints", load(&s.checkpoints)),
                ("checkpoint_micros", load(&s.checkpoint_micros)),
                ("pages_written", load(&s.pages_written)),
                ("page_count", load(&s.page_count)),
                ("free_pages", load(&s.free_pages)),
                ("wal_bytes", load(&s.wal_bytes)),
                ("loaded_pages", load(&s.loaded_pages)),
                ("page_size", page_size),
            ]),
        }
    }
}
