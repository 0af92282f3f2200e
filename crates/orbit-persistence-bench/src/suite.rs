//! The whole benchmark (docs/benchmark.md) in one run: every subject (our compiled backends and the
//! peers) through every phase, side by side, repeatable phases in rotating order keeping each
//! subject's best, then the report, its JSON and its charts.
//!
//! The `kill -9` phase needs a child process that writes and is killed: the caller says how to
//! start one ([`Options::child`], e.g. the CLI's own hidden `bench-child` command), and the
//! child runs [`kill9_child`].
//!
//! A subject on a cluster (etcd) runs every phase but the space rows (its data is not in a
//! local directory); its kill -9 child is a client killed mid-write, and its reopen is a new
//! connection. At the end, the run's leases are removed from the cluster.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use orbit_persistence::migrate::SwappableProvider;
use orbit_persistence::{
    BackendType, Clock, ManualClock, PersistenceProvider, SyncMode, Timestamp,
};

use crate::operations;
use crate::phases::{Follow, Renewals, Side, best_rotating, list_node_picks};
use crate::report::{Machine, Report, Row};
use crate::subject::{Subject, config_for};
use crate::workload::{Data, HOUR, T0, dir_bytes};

/// Leases the kill -9 child rewrites, in durable batches of [`KILL9_BATCH`], before it says
/// it is ready (and goes on writing until it is killed).
pub const KILL9_LEASES: usize = 20_000;

/// Renewals per writer of the watch phase (16 writers).
pub const FOLLOW_PER_TASK: usize = 500;
/// Leases per durable write of the kill -9 child.
pub const KILL9_BATCH: usize = 10;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Leases in the data set.
    pub n: usize,
    /// Quick mode (the README's first command): recorded in the report.
    pub quick: bool,
    /// Gets per `get` run (docs/benchmark.md: 1,000,000).
    pub gets: usize,
    /// Operations per `mixed` run.
    pub mixed_ops: usize,
    /// Runs per repeatable phase and subject; each subject's best is kept.
    pub reps: usize,
    /// The subjects, in column order.
    pub subjects: Vec<Subject>,
    /// Where the stores live while the benchmark runs (a temporary directory is made in it
    /// and removed at the end). It should be on the disk you want to measure.
    pub work_dir: PathBuf,
    /// How to start a kill -9 child: a program and its leading arguments; the suite appends
    /// `<subject id> <dir> <n> <etcd endpoints, comma-separated>`, and the child must call
    /// [`kill9_child`] with them.
    pub child: Vec<OsString>,
    /// The etcd cluster for the subjects that need one (empty: none given).
    pub etcd_endpoints: Vec<String>,
}

impl Options {
    /// The full run (docs/benchmark.md): N = 1,000,000, 1,000,000 gets, best of 3.
    pub fn full(subjects: Vec<Subject>, work_dir: PathBuf, child: Vec<OsString>) -> Options {
        Options {
            n: 1_000_000,
            quick: false,
            gets: 1_000_000,
            mixed_ops: 200_000,
            reps: 3,
            subjects,
            work_dir,
            child,
            etcd_endpoints: Vec::new(),
        }
    }

    /// The quick mode: N = 100,000, 200,000 gets, best of 2.
    pub fn quick(subjects: Vec<Subject>, work_dir: PathBuf, child: Vec<OsString>) -> Options {
        Options {
            n: 100_000,
            quick: true,
            gets: 200_000,
            mixed_ops: 100_000,
            reps: 2,
            ..Options::full(subjects, work_dir, child)
        }
    }
}

/// One progress bar per phase on a terminal; nothing when stderr is not one (indicatif hides
/// its bars then).
struct Progress {
    bars: MultiProgress,
    style: ProgressStyle,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            bars: MultiProgress::new(),
            style: ProgressStyle::with_template(
                "{prefix:>24} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        }
    }

    /// A bar for `phase`, `steps` long.
    fn phase(&self, phase: &str, steps: usize) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(steps as u64));
        bar.set_style(self.style.clone());
        bar.set_prefix(phase.to_string());
        bar
    }
}

/// The versions in the report: this benchmark's, and each peer engine's (the dependency
/// requirements of this crate; checked against its Cargo.toml by a test).
pub fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::from([
        (
            "orbit-persistence".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("redb".to_string(), crate::peer::REDB_VERSION.to_string()),
        ("fjall".to_string(), crate::peer::FJALL_VERSION.to_string()),
    ]);
    if cfg!(feature = "rocksdb") {
        v.insert(
            "rocksdb crate".to_string(),
            crate::peer::ROCKSDB_CRATE_VERSION.to_string(),
        );
    }
    v
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` (in clock
/// ticks of 10 ms, Linux's USER_HZ); `None` where that is unavailable.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on: utime
    // and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Waits until this process is idle (under 10% of one CPU over 200 ms; at most 120 s) and
/// returns how long that took. The subjects live in one process on 2 cores: without this, a
/// store still flushing and compacting after its load would slow down whichever store is
/// measured next.
async fn settle() -> Duration {
    const WINDOW: Duration = Duration::from_millis(200);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        let Some(before) = cpu_time() else {
            break;
        };
        tokio::time::sleep(WINDOW).await;
        let Some(after) = cpu_time() else {
            break;
        };
        if after.saturating_sub(before) < WINDOW / 10 {
            break;
        }
    }
    start.elapsed()
}

/// Flushes every dirty page of the machine to disk (the `sync` command) and waits for this
/// process to be idle: the writeback a store's load left in the kernel must not slow down the
/// next store's load.
async fn quiesce() {
    tokio::task::block_in_place(|| {
        let _ = Command::new("sync").status();
    });
    settle().await;
}

/// A row of one value per side.
fn row(phase: impl Into<String>, unit: &str, higher: bool, values: Vec<f64>) -> Row {
    Row::new(phase, unit, higher, values.into_iter().map(Some).collect())
}

/// Runs the whole benchmark. Must run on a multi-threaded tokio runtime (peers run inside
/// `block_in_place`).
pub async fn run(options: &Options) -> Result<Report, String> {
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let subjects = &options.subjects;
    if subjects.is_empty() {
        return Err("no subject to benchmark".to_string());
    }
    if options.etcd_endpoints.is_empty()
        && let Some(s) = subjects.iter().find(|s| s.needs_cluster())
    {
        return Err(format!("{} needs a cluster: give its endpoints", s.name()));
    }
    let progress = Progress::new();
    let (n, reps) = (options.n, options.reps.max(1));
    if n < 1_000 {
        return Err(format!("N must be at least 1,000 (got {n})"));
    }
    let data = Arc::new(Data::new(n));
    let logical = data.logical_bytes() as f64;
    let work = tempfile::Builder::new()
        .prefix("orbit-bench-")
        .tempdir_in(&options.work_dir)
        .map_err(|e| format!("create a directory in {}: {e}", options.work_dir.display()))?;
    let dirs: Vec<PathBuf> = subjects.iter().map(|s| work.path().join(s.id())).collect();
    let clock = Arc::new(ManualClock::new(T0));
    let open = |i: usize, sync: SyncMode| {
        let (subject, dir, clock) = (subjects[i], dirs[i].clone(), clock.clone());
        let endpoints = &options.etcd_endpoints;
        tokio::task::block_in_place(move || {
            subject.open(&dir, endpoints, sync, clock as Arc<dyn Clock>)
        })
    };
    let mut sides = Vec::new();
    for i in 0..subjects.len() {
        sides.push(open(i, SyncMode::Always)?);
    }
    let mut rows = Vec::new();
    let space = |what: &str| {
        let values = subjects
            .iter()
            .zip(&dirs)
            .map(|(s, d)| s.on_local_disk().then(|| dir_bytes(d) as f64 / logical))
            .collect();
        Row::new(format!("space {what}"), "x logical", false, values)
    };

    // 1. bulk_load: once per subject (a second load would be an update, not a load).
    let bar = progress.phase("bulk_load", subjects.len());
    let (mut load, mut debt) = (Vec::new(), Vec::new());
    for (s, side) in subjects.iter().zip(&sides) {
        bar.set_message(s.name());
        quiesce().await;
        load.push(side.bulk_load(&data).await);
        // Flushes and compactions the load left behind finish before the next store loads.
        debt.push(settle().await.as_secs_f64());
        bar.inc(1);
    }
    bar.finish();
    rows.push(row("bulk_load", "leases/s", true, load));
    rows.push(row(
        "background work after bulk_load (until idle)",
        "s",
        false,
        debt,
    ));
    // 8. space after load.
    rows.push(space("after load"));

    // 2. durable_renew at 1, 4, 16, 64 tasks.
    for tasks in [1usize, 4, 16, 64] {
        settle().await;
        let bar = progress.phase(&format!("durable_renew x{tasks}"), subjects.len() * reps);
        let best: Vec<Renewals> = best_rotating(
            &sides,
            reps,
            async |i, side| {
                bar.set_message(subjects[i].name());
                let r = side.renew(&data, tasks).await;
                bar.inc(1);
                r
            },
            |r| r.rate,
        )
        .await;
        bar.finish();
        // A store that keeps nothing has no durable renewals to show.
        let durable = |f: fn(&Renewals) -> f64| -> Vec<Option<f64>> {
            subjects
                .iter()
                .zip(&best)
                .map(|(s, r)| s.durable().then(|| f(r)))
                .collect()
        };
        let phase = format!("durable_renew {tasks} tasks");
        for (name, unit, higher, values) in [
            (phase.clone(), "ops/s", true, durable(|r| r.rate)),
            (format!("{phase} p50"), "ms", false, durable(|r| r.p50_ms)),
            (format!("{phase} p99"), "ms", false, durable(|r| r.p99_ms)),
        ] {
            rows.push(Row::new(name, unit, higher, values).with_tasks(tasks));
        }
    }

    // 12. operations (ours; every lease is still there to renew): a backup, its restore into
    // a fresh store of the same backend, renewals while backups run, and a live migration of
    // the restored store to another disk engine under renewing writers.
    let bar = progress.phase("backup, restore, migrate", subjects.len());
    let mut ops: [Vec<Option<f64>>; 5] = Default::default();
    for (s, side) in subjects.iter().zip(&sides) {
        bar.set_message(s.name());
        let (Subject::Ours(backend), Side::Ours(store)) = (s, side) else {
            ops.iter_mut().for_each(|row| row.push(None));
            bar.inc(1);
            continue;
        };
        settle().await;
        let scratch = work.path().join(format!("{}-operations", s.id()));
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("create {}: {e}", scratch.display()))?;
        let file = scratch.join("store.orbak");
        ops[0].push(Some(operations::backup(store, &file).await.1));
        ops[1].push(None);
        // Durable renewals only: the memory backend's are a CPU loop a backup competes with.
        ops[2].push(match s.durable() {
            true => Some(operations::renew_during_backup(store, &data, &scratch, reps).await),
            false => None,
        });
        ops[3].push(None);
        ops[4].push(None);
        if *backend != BackendType::Etcd {
            let dir = scratch.join("restored");
            let endpoints = &options.etcd_endpoints;
            let restored = match tokio::task::block_in_place(|| {
                s.open(
                    &dir,
                    endpoints,
                    SyncMode::Always,
                    clock.clone() as Arc<dyn Clock>,
                )
            })? {
                Side::Ours(restored) => restored,
                Side::Peer(_) => unreachable!("one of ours opens as ours"),
            };
            *ops[1].last_mut().expect("pushed") =
                Some(operations::restore(&file, &*restored).await);
            let target = operations::migration_target(*backend)
                .filter(|t| orbit_persistence::compiled_backends().contains(t));
            match target {
                Some(target) => {
                    let store = Arc::new(SwappableProvider::serving(
                        restored,
                        config_for(*backend, &dir, SyncMode::Always),
                        clock.clone(),
                    ));
                    let to = config_for(target, &scratch.join("migrated"), SyncMode::Always);
                    let m =
                        operations::migrate_under_renewals(Arc::clone(&store), &data, &to).await;
                    *ops[3].last_mut().expect("pushed") =
                        Some(m.report.write_stall_us as f64 / 1e3);
                    *ops[4].last_mut().expect("pushed") = Some(m.renew_p99_ms);
                    store
                        .shutdown()
                        .await
                        .map_err(|e| format!("shutdown: {e}"))?;
                }
                None => restored
                    .shutdown()
                    .await
                    .map_err(|e| format!("shutdown: {e}"))?,
            }
        }
        tokio::task::block_in_place(|| std::fs::remove_dir_all(&scratch))
            .map_err(|e| format!("remove {}: {e}", scratch.display()))?;
        bar.inc(1);
    }
    bar.finish();
    let [backup, restore, during, stall, p99] = ops;
    rows.push(Row::new("backup (portable file)", "leases/s", true, backup));
    rows.push(Row::new(
        "restore into a fresh store",
        "leases/s",
        true,
        restore,
    ));
    rows.push(
        Row::new(
            format!("durable_renew {} tasks during backups", operations::WRITERS),
            "x without",
            true,
            during,
        )
        .with_tasks(operations::WRITERS),
    );
    rows.push(Row::new(
        "live migration to lsm_tree (lsm_tree: to cow_btree): write stall",
        "ms",
        false,
        stall,
    ));
    rows.push(
        Row::new(
            format!(
                "live migration: renew p99 of {} writers while it runs",
                operations::WRITERS
            ),
            "ms",
            false,
            p99,
        )
        .with_tasks(operations::WRITERS),
    );

    // 11. one watcher following 16 durable writers (ours: no peer has a change feed), while
    // every lease is still there to renew.
    let bar = progress.phase("watch x16", subjects.len());
    let mut follows = Vec::new();
    for (s, side) in subjects.iter().zip(&sides) {
        bar.set_message(s.name());
        settle().await;
        follows.push(side.follow(&data, 16, FOLLOW_PER_TASK).await);
        bar.inc(1);
    }
    bar.finish();
    let follow = |f: fn(&Follow) -> f64| -> Vec<Option<f64>> {
        follows.iter().map(|o| o.as_ref().map(f)).collect()
    };
    for (name, unit, higher, values) in [
        (
            "watch: 16 durable writers",
            "writes/s",
            true,
            follow(|f| f.writes_per_s),
        ),
        (
            "watch: one watcher following them",
            "events/s",
            true,
            follow(|f| f.events_per_s),
        ),
        (
            "watch: lag ack -> event p50",
            "ms",
            false,
            follow(|f| f.p50_lag_ms),
        ),
        (
            "watch: lag ack -> event p99",
            "ms",
            false,
            follow(|f| f.p99_lag_ms),
        ),
    ] {
        rows.push(Row::new(name, unit, higher, values).with_tasks(16));
    }

    // 3. get, 1 and 2 tasks.
    let gets = options.gets.max(2);
    for tasks in [1usize, 2] {
        settle().await;
        let bar = progress.phase(&format!("get x{tasks}"), subjects.len() * reps);
        let best = best_rotating(
            &sides,
            reps,
            async |i, side| {
                bar.set_message(subjects[i].name());
                let r = side.get_uniform(&data, tasks, gets).await;
                bar.inc(1);
                r
            },
            |r| *r,
        )
        .await;
        bar.finish();
        rows.push(row(format!("get {tasks} tasks"), "gets/s", true, best).with_tasks(tasks));
    }

    // 5. list_node: the subjects must agree on what they list before it is timed.
    let picks = list_node_picks(&data);
    let mut listed = Vec::new();
    for side in &sides {
        listed.push(side.list_nodes(&picks).await);
    }
    if listed.iter().any(|&l| l != listed[0]) {
        return Err(format!(
            "the subjects disagree on the leases of the same nodes: {listed:?}"
        ));
    }
    let bar = progress.phase("list_node", subjects.len() * reps);
    settle().await;
    let calls = best_rotating(
        &sides,
        reps,
        async |i, side| {
            bar.set_message(subjects[i].name());
            let start = Instant::now();
            side.list_nodes(&picks).await;
            bar.inc(1);
            picks.len() as f64 / start.elapsed().as_secs_f64()
        },
        |r| *r,
    )
    .await;
    bar.finish();
    rows.push(row(
        format!("list_node (~{} leases)", listed[0] / picks.len()),
        "ms/call",
        false,
        calls.iter().map(|c| 1e3 / c).collect(),
    ));

    // 6. cleanup: the 10% loaded already expired.
    let now = Timestamp(T0.0 + 2_000);
    clock.set(now);
    let bar = progress.phase("cleanup", subjects.len());
    let (mut removed, mut times) = (Vec::new(), Vec::new());
    for (s, side) in subjects.iter().zip(&sides) {
        bar.set_message(s.name());
        settle().await;
        let (r, t) = side.cleanup(now).await;
        removed.push(r);
        times.push(t.as_secs_f64());
        bar.inc(1);
    }
    bar.finish();
    if removed.iter().any(|&r| r != removed[0]) {
        return Err(format!(
            "the subjects removed different counts: {removed:?}"
        ));
    }
    rows.push(row(
        format!("cleanup ({} removed)", removed[0]),
        "removed/s",
        true,
        times.iter().map(|t| removed[0] as f64 / t).collect(),
    ));
    rows.push(row("cleanup", "s", false, times));
    rows.push(space("after cleanup"));

    // 10. evict one node (a node of the list_node phase: ~N/100 leases).
    let evicted_node = &picks[0];
    let bar = progress.phase("evict", subjects.len());
    let (mut evicted, mut times) = (Vec::new(), Vec::new());
    for (s, side) in subjects.iter().zip(&sides) {
        bar.set_message(s.name());
        settle().await;
        let (r, t) = side.evict(evicted_node).await;
        evicted.push(r);
        times.push(t.as_secs_f64() * 1e3);
        bar.inc(1);
    }
    bar.finish();
    if evicted.iter().any(|&r| r != evicted[0]) {
        return Err(format!(
            "the subjects evicted different counts: {evicted:?}"
        ));
    }
    rows.push(row(
        format!("evict one node ({} leases)", evicted[0]),
        "ms",
        false,
        times,
    ));

    // 7a. reopen after a clean shutdown, timed to the first successful get. Ours reopen with
    // interval sync for the mixed phase. The memory backend stays open (a reopen would be
    // empty).
    let probe = data.leases[1].reference.clone();
    let bar = progress.phase("reopen (clean)", subjects.len());
    let mut reopen = Vec::new();
    let mut reopened = Vec::new();
    for (i, side) in sides.into_iter().enumerate() {
        bar.set_message(subjects[i].name());
        if !subjects[i].durable() {
            reopen.push(None);
            reopened.push(side);
            bar.inc(1);
            continue;
        }
        side.close().await;
        let start = Instant::now();
        let interval = crate::phases::MIXED_SYNC_INTERVAL.as_millis() as u64;
        let side = open(i, SyncMode::IntervalMs(interval))?;
        if side.get(&probe).await.is_none() {
            return Err(format!(
                "{}: a lease is missing after a clean reopen",
                subjects[i].name()
            ));
        }
        reopen.push(Some(start.elapsed().as_secs_f64() * 1e3));
        reopened.push(side);
        bar.inc(1);
    }
    bar.finish();
    rows.push(Row::new("reopen after clean shutdown", "ms", false, reopen));
    let sides = reopened;

    // 4. mixed: Zipf(0.99), 90% get / 10% renew, interval sync, 2 tasks.
    settle().await;
    let mixed_ops = options.mixed_ops.max(2);
    let bar = progress.phase("mixed", subjects.len() * reps);
    let mixed = best_rotating(
        &sides,
        reps,
        async |i, side| {
            bar.set_message(subjects[i].name());
            let r = side.mixed(&data, mixed_ops).await;
            bar.inc(1);
            r
        },
        |r| *r,
    )
    .await;
    bar.finish();
    rows.push(row(
        "mixed 90/10 zipf, 2 tasks, interval sync",
        "ops/s",
        true,
        mixed,
    ));
    for side in sides {
        side.close().await;
    }

    // 7b. reopen after kill -9 of a child that was writing durably.
    let bar = progress.phase("reopen (kill -9)", subjects.len());
    let mut killed = Vec::new();
    for (i, subject) in subjects.iter().enumerate() {
        bar.set_message(subject.name());
        quiesce().await;
        killed.push(if subject.durable() {
            Some(kill9_reopen(options, *subject, &dirs[i], &clock, &data).await?)
        } else {
            None
        });
        bar.inc(1);
    }
    bar.finish();
    rows.push(Row::new(
        format!("reopen after kill -9 ({KILL9_LEASES} leases rewritten)"),
        "ms",
        false,
        killed,
    ));

    // The run's leases leave the clusters it used.
    for (i, subject) in subjects.iter().enumerate() {
        if subject.needs_cluster() {
            forget(options, *subject, &dirs[i]).await?;
        }
    }

    // 9. the disk's floor.
    let (floor_append, floor_overwrite) =
        tokio::task::block_in_place(|| crate::phases::floor(work.path()))
            .map_err(|e| format!("floor phase: {e}"))?;
    let _ = progress.bars.clear();

    Ok(Report {
        date,
        n,
        quick: options.quick,
        gets,
        mixed_ops,
        reps,
        machine: Machine::this(),
        versions: versions(),
        floor_append_per_s: floor_append,
        floor_overwrite_per_s: floor_overwrite,
        subjects: subjects.iter().map(|s| s.name().to_string()).collect(),
        peers: subjects.iter().map(|s| s.is_peer()).collect(),
        rows,
    })
}

/// Starts the kill -9 child on `dir`, waits until it says it is ready (all its first
/// [`KILL9_LEASES`] rewrites acknowledged, and still writing), kills it with SIGKILL, and times
/// the reopen to the first successful get. The lease probed was rewritten durably by the
/// child, so it must carry the child's expiry: the phase checks durability as it measures.
async fn kill9_reopen(
    options: &Options,
    subject: Subject,
    dir: &Path,
    clock: &Arc<ManualClock>,
    data: &Data,
) -> Result<f64, String> {
    let (program, args) = options
        .child
        .split_first()
        .ok_or("no command to start the kill -9 child")?;
    let mut child = Command::new(program)
        .args(args)
        .arg(subject.id())
        .arg(dir)
        .arg(options.n.to_string())
        .arg(options.etcd_endpoints.join(","))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start the kill -9 child: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let ready = tokio::task::block_in_place(|| {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.trim() == "READY")
    });
    child.kill().map_err(|e| format!("kill the child: {e}"))?;
    let _ = child.wait();
    if !ready {
        return Err(format!("the kill -9 child of {} failed", subject.name()));
    }
    let start = Instant::now();
    let side = tokio::task::block_in_place(|| {
        subject.open(
            dir,
            &options.etcd_endpoints,
            SyncMode::Always,
            clock.clone() as Arc<dyn Clock>,
        )
    })?;
    let probe = &data.leases[1];
    let got = side.get(&probe.reference).await;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    side.close().await;
    match got {
        Some(l) if l.expires_at.0 >= T0.0 + 2 * HOUR => Ok(ms),
        other => Err(format!(
            "{}: an acknowledged write of the kill -9 child is lost (got {other:?})",
            subject.name()
        )),
    }
}

/// Removes every lease of this run from the cluster of `subject` (all expire before a clock
/// far ahead), so a shared cluster keeps nothing of the benchmark but etcd's history of it
/// (freed by the cluster's compaction).
async fn forget(options: &Options, subject: Subject, dir: &Path) -> Result<(), String> {
    let later = Arc::new(ManualClock::new(Timestamp(T0.0 + 1_000 * HOUR)));
    let side = tokio::task::block_in_place(|| {
        subject.open(dir, &options.etcd_endpoints, SyncMode::Always, later)
    })?;
    side.cleanup(Timestamp(T0.0 + 1_000 * HOUR)).await;
    side.close().await;
    Ok(())
}

/// The kill -9 child: opens `subject` in `dir` (etcd: on the cluster at `etcd_endpoints`) with
/// durable writes and rewrites the first [`KILL9_LEASES`] leases of the data set (`n` leases)
/// in durable batches of [`KILL9_BATCH`], each with a later expiry, round after round. Prints
/// `READY` once the first round is acknowledged, and goes on writing until it is killed.
pub async fn kill9_child(
    subject: Subject,
    dir: &Path,
    n: usize,
    etcd_endpoints: &[String],
) -> Result<(), String> {
    // The first leases of a data set do not depend on its size.
    let data = Data::new(n.min(KILL9_LEASES));
    let clock = Arc::new(ManualClock::new(T0));
    let side = subject.open(dir, etcd_endpoints, SyncMode::Always, clock)?;
    let mut batch: Vec<_> = Vec::with_capacity(KILL9_BATCH);
    for round in 0u64.. {
        for chunk in data.leases.chunks(KILL9_BATCH) {
            batch.clear();
            batch.extend(chunk.iter().cloned().map(|mut l| {
                l.expires_at = Timestamp(T0.0 + 2 * HOUR + round);
                l.renew_at = l.expires_at;
                l
            }));
            side.upsert_durable(&batch).await;
        }
        if round == 0 {
            println!("READY");
        }
        tokio::time::sleep(Duration::ZERO).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_this_process_busy_work() {
        let before = cpu_time().expect("/proc/self/stat is readable on Linux");
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(150) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = cpu_time().unwrap();
        // 150 ms of spinning is at least 100 ms of CPU (ticks are 10 ms).
        assert!(
            after - before >= Duration::from_millis(100),
            "{before:?} -> {after:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_process_settles_at_once() {
        let waited = settle().await;
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}
