//! Corruption of every file (docs/reliability.md row E) and operator mistakes with them (row J),
//! for any durable backend on a real directory.
//!
//! A store is written in two phases: a load that the store turns into its long-lived files
//! (pages or tables, meta or manifest: it is shut down and reopened), then single writes that
//! stay in its log, the last of them a *sentinel*. The directory is then copied while the store
//! is open, which is a crash image holding every kind of file the engine keeps. Each file of the
//! image in turn is damaged, on a fresh copy each time, at many offsets: a flipped byte, the
//! file cut short or emptied, or the file deleted. The damaged copy is opened and read in full
//! (every lease, every node's list, the lease count). Each trial must end one of these ways:
//!
//! - `Corruption` naming the damaged file, from the open or from a read;
//! - exactly the acknowledged data. A flip may cost the sentinel alone: the last record of a
//!   log damaged in place cannot be told from a torn write, and recovery cuts a torn tail;
//! - after a cut only: the data as of an earlier write (a log cut short is a torn tail).
//!
//! Whatever a repair cost must be reported: a trial that reads back less than everything must
//! find the cut in the store's `recovery_report()`. A second image, of a store that never
//! flushed or checkpointed, has each file deleted and emptied: there, everything acknowledged
//! is in the first WAL segment, and its loss must be an error, never a new empty store.
//!
//! Anything else fails: a panic on any thread, a hang, another error type, a lease that was
//! never written, or acknowledged data gone without a word.
//!
//! Where the flips and the random offsets fall is seeded: `ORBIT_CORRUPTION_SEED` (a number)
//! picks other ones, so a soak can try more than CI's fixed set. A failure names its seed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, Clock, ManualClock, OrbitError, RecoveryReport,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fixtures::{T0, lease_at, node, reference};
use crate::{Backend, OpenFn};

const REFS: u32 = 400;
const NODES: u32 = 5;
const SENTINEL: u32 = REFS;
const HOUR_MS: u64 = 3_600_000;

/// A reference's state: the lease's node, expiry and renew time, or absent.
type Essence = Option<(String, u64, u64)>;

fn essence(l: &AddressableLease) -> Essence {
    Some((l.node_id.key.clone(), l.expires_at.0, l.renew_at.0))
}

/// How a trial damaged its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The byte at this offset xor-ed with a mask.
    Flip(u64, u8),
    /// The file cut to this length (0: emptied, as by `: > file`).
    Cut(u64),
    /// The file deleted (an operator cleaning up "logs", a bad copy).
    Delete,
}

/// What the trials of one file came to.
#[derive(Debug, Default, Clone)]
pub struct FileReport {
    /// The file, relative to the data directory.
    pub file: PathBuf,
    /// Its length in the image.
    pub len: u64,
    /// Trials that ended in `Corruption` naming the file.
    pub corruption: usize,
    /// Trials that read back every acknowledged lease.
    pub intact: usize,
    /// Flips that cost the sentinel (the log's last record, read as a torn write).
    pub sentinel_lost: usize,
    /// Cuts read as a torn log tail: the data as of an earlier write.
    pub earlier_state: usize,
    /// Trials that ended in `Corruption` naming another file, accepted by the caller's
    /// [`Misnaming`] rule (see [`every_file_allowing`]).
    pub misnamed: usize,
    /// Trials on the image of a store that never flushed or checkpointed (its data all in its
    /// first WAL segment), where the file was deleted or emptied: each must be an error or
    /// the acknowledged data.
    pub unflushed: usize,
}

/// Whether an error naming another file than the damaged one (`damaged`, relative to the data
/// directory) is still accepted: for an engine that is not ours and cannot always say which
/// file is bad. The rule should be as narrow as the engine's known gap.
pub type Misnaming = fn(damaged: &Path, error: &OrbitError) -> bool;

/// The writes the store acknowledged, in order; each changes one or more references.
struct History {
    writes: Vec<Vec<(u32, Essence)>>,
}

impl History {
    /// The state after the first `k` writes.
    fn state_after(&self, k: usize) -> BTreeMap<u32, Essence> {
        let mut state: BTreeMap<u32, Essence> = (0..=SENTINEL).map(|i| (i, None)).collect();
        for w in &self.writes[..k] {
            state.extend(w.iter().cloned());
        }
        state
    }
}

/// Writes a store and copies it while open (a crash image). With `reopen`, the load is shut
/// down and reopened first, so it sits in the engine's long-lived files; without, everything
/// stays in the log of a store that never flushed or checkpointed (at most 20 writes, under
/// every engine's limits).
async fn write_image(backend: Backend, dir: &Path, image: &Path, reopen: bool) -> History {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let mut rng = StdRng::seed_from_u64(0xC0FFEE);
    let mut writes = Vec::new();
    let now = clock.now();
    let lease = |i: u32, rng: &mut StdRng| {
        lease_at(
            reference(i),
            node(rng.random_range(0..NODES)),
            now,
            HOUR_MS + rng.random_range(0..HOUR_MS),
        )
    };
    let store = crate::fixtures::open_in(backend, clock.clone(), dir)
        .await
        .expect("open for the image");
    if !reopen {
        for first in (0..60).step_by(20) {
            let batch: Vec<_> = (first..first + 20).map(|i| lease(i, &mut rng)).collect();
            store.store_leases(&batch).await.expect("load");
            writes.push((first..).zip(batch.iter().map(essence)).collect());
        }
        copy_dir(dir, image);
        store.shutdown().await.expect("shutdown after the image");
        return History { writes };
    }
    for first in (0..REFS).step_by(20) {
        let batch: Vec<_> = (first..first + 20).map(|i| lease(i, &mut rng)).collect();
        store.store_leases(&batch).await.expect("load");
        writes.push((first..).zip(batch.iter().map(essence)).collect());
    }
    for i in (0..REFS).step_by(9) {
        assert!(store.remove_lease(&reference(i)).await.expect("remove"));
        writes.push(vec![(i, None)]);
    }
    store.shutdown().await.expect("shutdown after the load");
    drop(store);

    let store = crate::fixtures::open_in(backend, clock.clone(), dir)
        .await
        .expect("reopen for the image");
    for _ in 0..60 {
        let i = rng.random_range(0..REFS);
        let l = lease(i, &mut rng);
        store.store_lease(&l).await.expect("update");
        writes.push(vec![(i, essence(&l))]);
    }
    for _ in 0..10 {
        let i = rng.random_range(0..REFS);
        store.remove_lease(&reference(i)).await.expect("remove");
        writes.push(vec![(i, None)]);
    }
    let l = lease(SENTINEL, &mut rng);
    store.store_lease(&l).await.expect("sentinel");
    writes.push(vec![(SENTINEL, essence(&l))]);
    // Let background work (a flush, a checkpoint) settle, so the copy is one crash image.
    tokio::time::sleep(Duration::from_millis(300)).await;
    copy_dir(dir, image);
    store.shutdown().await.expect("shutdown after the image");
    History { writes }
}

/// Copies the directory tree `from` to `to`: a crash image of a store that is still open, or
/// a fresh copy of one to damage.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// Every file under `dir` (subdirectories too) with its bytes: taken before and after a step
/// that must change no byte (a read-only open, an inspection command, a refused open).
pub fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut names = Vec::new();
    files_under(dir, dir, &mut names);
    names
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).expect("read a file");
            (name, bytes)
        })
        .collect()
}

fn files_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("dir entry");
        if entry.file_type().expect("file type").is_dir() {
            files_under(root, &entry.path(), out);
        } else {
            out.push(entry.path().strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

/// The damage a file of `len` bytes gets: flips at its first and last bytes and spread over
/// it, and cuts near its end and through its middle.
fn damages(len: u64, flips: usize, rng: &mut StdRng) -> Vec<Damage> {
    let mut offsets: Vec<u64> = (0..len.min(8)).chain(len.saturating_sub(8)..len).collect();
    if len > 0 {
        offsets.extend((0..flips as u64).map(|k| k * len / flips as u64));
        offsets.extend((0..flips / 4).map(|_| rng.random_range(0..len)));
    }
    offsets.sort_unstable();
    offsets.dedup();
    let mut out: Vec<Damage> = offsets
        .into_iter()
        .map(|o| Damage::Flip(o, 1 << rng.random_range(0..8)))
        .collect();
    let mut cuts: Vec<u64> = [1, 5, 17, 100, len / 2, len]
        .iter()
        .filter(|&&c| c <= len && len > 0)
        .map(|c| len - c)
        .collect();
    cuts.dedup();
    out.extend(cuts.into_iter().map(Damage::Cut));
    out.push(Damage::Delete);
    out
}

fn apply(path: &Path, damage: Damage) {
    let mut bytes = std::fs::read(path).expect("read the file to damage");
    match damage {
        Damage::Flip(offset, mask) => bytes[offset as usize] ^= mask,
        Damage::Cut(len) => bytes.truncate(len as usize),
        Damage::Delete => return std::fs::remove_file(path).expect("delete the file"),
    }
    std::fs::write(path, bytes).expect("write the damaged file");
}

/// Reads everything the store holds: each reference, each node's list, the lease count.
async fn read_all(
    store: &Arc<dyn AddressableDirectoryProvider>,
) -> Result<BTreeMap<u32, Essence>, OrbitError> {
    let mut state = BTreeMap::new();
    let mut by_node: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for i in 0..=SENTINEL {
        let got = store.get_lease(&reference(i)).await?;
        if let Some(l) = &got {
            if l.reference != reference(i) {
                return Ok(BTreeMap::new()); // a foreign lease: never equal to any state
            }
            by_node.entry(l.node_id.key.clone()).or_default().push(i);
        }
        state.insert(i, got.as_ref().and_then(essence));
    }
    for n in 0..NODES {
        let mut listed: Vec<u32> = Vec::new();
        for l in store.list_node_leases(&node(n)).await? {
            match (0..=SENTINEL).find(|&i| reference(i) == l.reference) {
                Some(i) => listed.push(i),
                None => return Ok(BTreeMap::new()),
            }
        }
        listed.sort_unstable();
        if listed != by_node.remove(&node(n).key).unwrap_or_default() {
            return Ok(BTreeMap::new()); // the node index disagrees with the leases
        }
    }
    let present = state.values().filter(|s| s.is_some()).count() as u64;
    if store.metrics().await.lease_count != present {
        return Ok(BTreeMap::new());
    }
    Ok(state)
}

/// Whether `e` is a `Corruption` naming `file` (by path, or by name in its detail, as
/// RocksDB's own reports do), or the poisoning a background thread's `Corruption` naming it
/// caused.
fn names(e: &OrbitError, file: &Path) -> bool {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    match e {
        OrbitError::Corruption { path, detail, .. } => {
            path.ends_with(file) || path.ends_with(&*name) || detail.contains(&*name)
        }
        OrbitError::Poisoned(reason) => reason.contains("corruption") && reason.contains(&*name),
        _ => false,
    }
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics on every thread (a store's background threads included), then reports them
/// as usual.
fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// What an engine that is not ours may do beyond [`every_file`]'s rules: each as narrow as
/// the engine's known gap.
#[derive(Debug, Clone, Copy)]
pub struct Allowances {
    /// Errors naming another file than the damaged one that still pass (counted in
    /// [`FileReport::misnamed`]).
    pub misnamed: Misnaming,
    /// Whether a repair (a cut log tail) may go unreported: an engine whose recovery reports
    /// nothing to us.
    pub unreported_repairs: bool,
    /// Deletions and emptyings (`Damage::Delete`, `Damage::Cut(0)`) the engine cannot see, by
    /// file (relative to the data directory): the store then opens with an earlier state,
    /// which must still be one it acknowledged.
    pub undetected_loss: fn(&Path, Damage) -> bool,
}

/// Damages every file of a crash image of the store `open` opens, `flips` spread offsets per
/// file (plus its first and last bytes and random ones), cuts, empties and deletes each, and
/// checks every trial as the module docs say. Then, on the image of a store that never flushed
/// or checkpointed, deletes and empties each file: the data of such a store is all in one WAL
/// segment, and its loss must be an error, never an empty store (docs/reliability.md row J). `open`
/// should use small settings, so the load becomes pages or tables. Returns one report per file.
pub fn every_file(open: OpenFn, flips: usize) -> Vec<FileReport> {
    every_file_allowing(
        open,
        flips,
        Allowances {
            misnamed: |_, _| false,
            unreported_repairs: false,
            undetected_loss: |_, _| false,
        },
    )
}

/// [`every_file`] with the [`Allowances`] of an engine that is not ours: still a
/// `Corruption` or other error, never wrong data, never acknowledged data gone without one.
pub fn every_file_allowing(open: OpenFn, flips: usize, allow: Allowances) -> Vec<FileReport> {
    count_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let backend = Backend {
        name: "corruption",
        open,
        capabilities: crate::Capabilities {
            durable: true,
            exclusive: true,
        },
    };
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let open_and_read = |dir: PathBuf| {
        let clock = clock.clone();
        async move {
            let store = crate::fixtures::open_in(backend, clock, &dir).await?;
            let read = read_all(&store).await;
            let report = store.recovery_report().await;
            let _ = store.shutdown().await;
            read.map(|state| (state, report))
        }
    };
    let within = |fut| async move {
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .expect("a trial hung for 30 s")
    };
    let seed = std::env::var("ORBIT_CORRUPTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xDA_4A6E_u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reports: Vec<FileReport> = Vec::new();

    for reopen in [true, false] {
        let name = if reopen { "flushed" } else { "unflushed" };
        let (live, image) = (
            tmp.path().join(name),
            tmp.path().join(format!("{name}.image")),
        );
        let history = runtime.block_on(write_image(backend, &live, &image, reopen));
        let n = history.writes.len();
        let full = history.state_after(n);
        // Every trial opens a copy: an open recovers, and may checkpoint or flush, in place.
        let fresh_copy = || {
            let trial = tmp.path().join("trial");
            let _ = std::fs::remove_dir_all(&trial);
            copy_dir(&image, &trial);
            trial
        };
        let baseline = runtime.block_on(within(open_and_read(fresh_copy())));
        assert_eq!(
            baseline.as_ref().ok().map(|(state, _)| state),
            Some(&full),
            "the undamaged {name} image must read back every acknowledged write: {baseline:?}"
        );
        let mut files = Vec::new();
        files_under(&image, &image, &mut files);
        files.sort();
        for file in files {
            let len = std::fs::metadata(image.join(&file)).expect("stat").len();
            let at = match reports.iter().position(|r| r.file == file) {
                Some(at) => at,
                None => {
                    reports.push(FileReport {
                        file: file.clone(),
                        len,
                        ..FileReport::default()
                    });
                    reports.len() - 1
                }
            };
            let report = &mut reports[at];
            let trials = match reopen {
                true => damages(len, flips, &mut rng),
                false => vec![Damage::Delete, Damage::Cut(0)],
            };
            for damage in trials {
                let trial = fresh_copy();
                apply(&trial.join(&file), damage);
                let panics_before = PANICS.load(Ordering::SeqCst);
                let outcome = runtime.block_on(within(open_and_read(trial)));
                assert_eq!(
                    PANICS.load(Ordering::SeqCst),
                    panics_before,
                    "{}: {damage:?} made the store panic",
                    file.display()
                );
                let what = format!(
                    "{} ({len} bytes, {name} image): {damage:?} (seed {seed})",
                    file.display()
                );
                let reported = |r: &RecoveryReport| allow.unreported_repairs || !r.is_empty();
                match outcome {
                    Err(e) if names(&e, &file) => report.corruption += 1,
                    Err(e) if (allow.misnamed)(&file, &e) => report.misnamed += 1,
                    Err(e) => panic!("{what}: expected Corruption naming the file, got {e:?}"),
                    Ok((state, _)) if state == full => report.intact += 1,
                    Ok((state, _)) if (allow.undetected_loss)(&file, damage) => {
                        assert!(
                            (0..n).any(|k| history.state_after(k) == state),
                            "{what}: the data is no state the store ever acknowledged"
                        );
                        report.earlier_state += 1;
                    }
                    Ok((state, _)) if !reopen || damage == Damage::Delete => panic!(
                        "{what}: acknowledged data gone without an error: {} of {} leases left",
                        state.values().filter(|s| s.is_some()).count(),
                        full.values().filter(|s| s.is_some()).count(),
                    ),
                    Ok((state, recovery)) if matches!(damage, Damage::Flip(..)) => {
                        assert_eq!(
                            state,
                            history.state_after(n - 1),
                            "{what}: wrong data, or acknowledged data lost silently"
                        );
                        assert!(
                            reported(&recovery),
                            "{what}: the sentinel's loss went unreported"
                        );
                        report.sentinel_lost += 1;
                    }
                    Ok((state, recovery)) => {
                        assert!(
                            (0..n).any(|k| history.state_after(k) == state),
                            "{what}: the data is no state the store ever acknowledged"
                        );
                        assert!(
                            reported(&recovery),
                            "{what}: the cut went unreported (recovery report empty)"
                        );
                        report.earlier_state += 1;
                    }
                }
                if !reopen {
                    report.unflushed += 1;
                }
            }
        }
    }
    assert!(
        reports.len() >= 2,
        "the image holds {} file(s): the load never left the log",
        reports.len()
    );
    reports
}
