//! The LSM tree as core's `Engine`: what `DiskDirectory` holds while the store is open (the
//! [`Shared`] state), how it opens, verifies, reports health and metrics, and the full
//! compaction only an LSM offers ([`Compact`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use orbit_persistence_core::change::{WriteOp, WriteRequest};
use orbit_persistence_core::engine::{Engine, EngineMetrics};
use orbit_persistence_core::fs::FileSystem;
use orbit_persistence_core::identity::EngineFiles;
use orbit_persistence_core::verify::VerifyReport;
use orbit_persistence_core::wal::Access;
use orbit_persistence_core::{
    LsmTreeConfig, OrbitError, OrbitResult, ProviderHealth, RecoveryReport, Timestamp,
};

use crate::LsmDirectory;
use crate::compaction::Leveled;
use crate::shared::{Settings, Shared};
use crate::version::Version;
use crate::writer::Writer;
use crate::{background, recovery};

/// Level-0 tables that trigger a compaction into level 1.
pub const L0_COMPACTION_TRIGGER: usize = 4;

/// The LSM tree as core's [`Engine`]: what the provider holds while it is open.
#[derive(Debug)]
pub struct LsmTree {
    shared: Arc<Shared>,
}

impl Engine for LsmTree {
    type Config = LsmTreeConfig;
    type Version = Version;
    type Writer = Writer;

    const NAME: &'static str = "lsm";
    const FILES: EngineFiles = recovery::FILES;

    fn open(
        fs: Arc<dyn FileSystem>,
        config: &LsmTreeConfig,
        now: Timestamp,
        access: Access,
        report: &mut RecoveryReport,
    ) -> OrbitResult<(Self, Writer)> {
        let settings = Settings {
            memtable_size: config.memtable_size,
            max_immutable_memtables: config.max_immutable_memtables as usize,
            bloom_fp_rate: config.bloom_filter_fp_rate,
            block_size: config.block_size as usize,
            table_size: (config.level1_size / 8).max(u64::from(config.block_size) * 4),
            compaction_rate_limit: config.compaction_rate_limit,
            watch_history: config.watch_history,
        };
        let strategy = Box::new(Leveled::new(
            L0_COMPACTION_TRIGGER,
            config.level1_size,
            config.level_fanout.into(),
        ));
        let cache = config.block_cache_size;
        let (writer, shared) = recovery::open(
            fs,
            &config.data_dir,
            settings,
            cache,
            strategy,
            now,
            access,
            report,
        )?;
        Ok((LsmTree { shared }, writer))
    }

    #[inline]
    fn current(&self) -> Arc<Version> {
        self.shared.current()
    }

    /// Every block of every table, from the files; the manifest and the WAL were checked at
    /// open.
    fn verify_files(state: &Version, report: &mut VerifyReport) {
        for t in state.levels.levels.iter().flatten() {
            report.files_checked += 1;
            report.bytes_checked += t.meta.file_size;
            for e in t.table.verify() {
                report.problem(e.to_string());
            }
        }
    }

    fn health(&self) -> ProviderHealth {
        if let Err(e) = self.shared.check_background() {
            return ProviderHealth::Unhealthy {
                reason: format!("{e}; reopen to recover"),
            };
        }
        let frozen = self.shared.current().frozen.len();
        if frozen > self.shared.settings.max_immutable_memtables {
            return ProviderHealth::Degraded {
                reason: format!("{frozen} memtables wait for flush: writes stall"),
            };
        }
        ProviderHealth::Healthy
    }

    fn metrics(&self, state: &Version) -> EngineMetrics {
        let s = &self.shared.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let memtable_bytes =
            state.active.bytes() + state.frozen.iter().map(|f| f.mem.bytes()).sum::<u64>();
        let cache_bytes = self.shared.cache.as_ref().map_or(0, |c| c.bytes());
        let mut counters = EngineMetrics::counters([
            ("memtable_bytes", memtable_bytes),
            ("frozen_memtables", state.frozen.len() as u64),
            ("tables", state.levels.table_count() as u64),
            ("table_bytes", state.levels.total_bytes()),
            ("flushes", load(&s.flushes)),
            ("flush_bytes", load(&s.flush_bytes)),
            ("compactions", load(&s.compactions)),
            ("compaction_bytes", load(&s.compaction_bytes)),
            ("write_stalls", load(&s.stalls)),
            ("write_stall_micros", load(&s.stall_micros)),
            ("wal_bytes", load(&s.wal_bytes)),
            ("block_cache_bytes", cache_bytes),
        ]);
        for (level, tables) in state.levels.levels.iter().enumerate() {
            counters.insert(format!("level{level}_tables"), tables.len() as u64);
            let bytes = state.levels.level_bytes(level);
            counters.insert(format!("level{level}_bytes"), bytes);
        }
        EngineMetrics {
            memory_bytes: memtable_bytes + cache_bytes,
            counters,
        }
    }
}

/// The full compaction of an [`LsmDirectory`].
#[async_trait]
pub trait Compact {
    /// Flushes every memtable and merges every table into one sorted run at the deepest level,
    /// dropping every tombstone: what is left on disk is the live data only. Reads and writes
    /// go on meanwhile. Useful after a large purge, or before a backup.
    async fn compact(&self) -> OrbitResult<()>;
}

#[async_trait]
impl Compact for LsmDirectory {
    async fn compact(&self) -> OrbitResult<()> {
        let writes = Arc::clone(self.writes()?);
        let shared = Arc::clone(&self.engine().shared);
        shared.freeze_requested.store(true, Ordering::Release);
        // A request that changes nothing: the writer freezes the memtable after its batch.
        let now = writes.clock().now();
        let nothing = WriteRequest {
            op: WriteOp::Cleanup { limit: 0 },
            now,
        };
        writes.writer().submit(nothing).await?;
        tokio::task::spawn_blocking(move || {
            background::full_compaction_blocking(&shared, || writes.writer().is_poisoned())
        })
        .await
        .unwrap_or_else(|e| {
            Err(OrbitError::internal(
                "lsm",
                format!("compaction task failed: {e}"),
            ))
        })
    }
}
