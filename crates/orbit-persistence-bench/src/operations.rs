//! The operator's phases (docs/benchmark.md): a backup of the loaded store, its restore into a
//! fresh store of the same backend, durable renewals while a backup runs, and a live migration
//! under renewing writers. Ours only: no peer has a backup, a restore or a migration.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orbit_persistence::fs::{FileSystem, StdFileSystem};
use orbit_persistence::migrate::{MigrationReport, SwappableProvider};
use orbit_persistence::restore::restore_into;
use orbit_persistence::{AddressableDirectoryProvider, BackendType, Timestamp};

use crate::phases::{Ours, Renewals, Side};
use crate::workload::{Data, HOUR, T0};

/// Writers of the renewals measured during a backup and a migration.
pub const WRITERS: usize = 4;

/// A backup of `store` to the new file `file`: (leases, leases/s).
pub async fn backup(store: &Ours, file: &Path) -> (u64, f64) {
    let start = Instant::now();
    let summary = store.backup(file).await.expect("backup");
    (
        summary.header.leases,
        summary.header.leases as f64 / start.elapsed().as_secs_f64(),
    )
}

/// Restores the backup `file` into `target`, a fresh store: leases/s.
pub async fn restore(file: &Path, target: &dyn AddressableDirectoryProvider) -> f64 {
    let fs: Arc<dyn FileSystem> = Arc::new(StdFileSystem::new());
    let start = Instant::now();
    let summary = restore_into(fs, file, target, "bench")
        .await
        .expect("restore");
    summary.leases as f64 / start.elapsed().as_secs_f64()
}

/// `durable_renew` from [`WRITERS`] tasks, without a backup and then while backups of
/// `store` into `scratch` run back to back: the second's rate as a ratio to the first's
/// (each the best of `reps` runs).
pub async fn renew_during_backup(
    store: &Ours,
    data: &Arc<Data>,
    scratch: &Path,
    reps: usize,
) -> f64 {
    let side = Side::Ours(Arc::clone(store));
    let best = |runs: &[Renewals]| runs.iter().map(|r| r.rate).fold(0.0, f64::max);
    let mut alone = Vec::new();
    for _ in 0..reps {
        alone.push(side.renew(data, WRITERS).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let backups = {
        let (store, stop, scratch) = (Arc::clone(store), Arc::clone(&stop), scratch.to_path_buf());
        tokio::spawn(async move {
            let mut taken = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let file = scratch.join(format!("during-{taken}.orbak"));
                store.backup(&file).await.expect("backup");
                tokio::task::spawn_blocking(move || std::fs::remove_file(file))
                    .await
                    .expect("remove task")
                    .expect("remove a backup");
                taken += 1;
            }
            taken
        })
    };
    // Let the first backup start reading before the writers do.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut during = Vec::new();
    for _ in 0..reps {
        during.push(side.renew(data, WRITERS).await);
    }
    stop.store(true, Ordering::Relaxed);
    let taken = backups.await.expect("backup task");
    assert!(taken > 0, "no backup ran during the renewals");
    best(&during) / best(&alone)
}

/// The backend a live migration of `from` moves to in the benchmark: a disk engine other
/// than the source.
pub fn migration_target(from: BackendType) -> Option<BackendType> {
    match from {
        BackendType::Memory | BackendType::CowBTree | BackendType::RocksDB => {
            Some(BackendType::LsmTree)
        }
        BackendType::LsmTree => Some(BackendType::CowBTree),
        BackendType::Etcd => None,
    }
}

/// What a live migration under writers measured.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The migration's own report (its write stall included).
    pub report: MigrationReport,
    /// The 99th percentile latency of the renewals that started while it ran, ms.
    pub renew_p99_ms: f64,
    /// The longest of those renewals, ms.
    pub renew_max_ms: f64,
}

/// Migrates `store` to `target` while [`WRITERS`] tasks renew leases of `data` through it
/// (get, then renew with the revision read): the migration's report and the latency of the
/// renewals that overlapped it. Every renewal must succeed: a refused one is a failure.
pub async fn migrate_under_renewals(
    store: Arc<SwappableProvider>,
    data: &Arc<Data>,
    target: &orbit_persistence::PersistenceConfig,
) -> Migration {
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (store, data, stop) = (Arc::clone(&store), Arc::clone(data), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut timed = Vec::new();
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let r = &data.leases[(t + k * WRITERS) * 7 % data.leases.len()].reference;
                    let started = Instant::now();
                    let cur = store.get_lease(r).await.unwrap().expect("renewed lease");
                    let e = Timestamp(T0.0 + 3 * HOUR + k as u64);
                    let renewed = store
                        .renew_lease(r, &cur.node_id, cur.revision, e, e)
                        .await
                        .unwrap();
                    assert!(
                        matches!(renewed, orbit_persistence::Renew::Renewed(_)),
                        "a renewal during the migration was refused: {renewed:?}"
                    );
                    timed.push((started, started.elapsed()));
                    k += 1;
                    // The memory backend never waits: let the migration run.
                    tokio::task::yield_now().await;
                }
                timed
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let began = Instant::now();
    let report = store.migrate_to(target).await.expect("migrate");
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let mut during: Vec<Duration> = Vec::new();
    for w in writers {
        during.extend(
            w.await
                .expect("writer")
                .into_iter()
                .filter(|(at, _)| *at >= began && *at <= ended)
                .map(|(_, took)| took),
        );
    }
    during.sort_unstable();
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let p99 = during.get(((during.len().max(1) - 1) as f64 * 0.99).round() as usize);
    Migration {
        report,
        renew_p99_ms: ms(p99),
        renew_max_ms: ms(during.last()),
    }
}
