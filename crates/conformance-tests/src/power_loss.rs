//! Power-loss simulation (docs/reliability.md row B) for any backend that opens on core's
//! fault-injecting file system: for each seed, a random workload runs on a machine that halts at
//! a random file-system call, then the machine loses power (unsynced data and directory entries
//! gone, or torn per the seed), and the store reopens. Every acknowledged write must be there,
//! the one write in flight either whole or not at all, and both indexes and the lease count must
//! agree with the leases.
//!
//! [`many_seeds`] runs [`seeds_from_env`] seeds (`ORBIT_POWER_LOSS_SEEDS`, default 1,000);
//! [`every_crash_point`] crashes a short scripted workload at every one of its file-system calls
//! in turn, three ways (docs/reliability.md row C), so every sync and rename the engine makes is a
//! crash point at least once. [`every_io_error`] fails each write, sync, rename, create and
//! remove of the script in turn, and [`disk_full`] runs it on ever smaller disks (row D): the
//! caller must get a typed error, a failed sync must leave the store refusing writes, and after
//! a power loss everything acknowledged must be back. In a backend crate's `tests/power_loss.rs`:
//!
//! ```ignore
//! fn open(fs: &FaultFs, busy: bool, clock: Arc<dyn Clock>) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
//!     // Open the store in /db on `fs`, SyncMode::Always; `busy`: settings that make the engine
//!     // write its own files (checkpoints, flushes) as often as it can.
//! }
//! orbit_persistence_conformance::power_loss_suite!(open);
//! ```
//!
//! The macro expands into one `#[test]` per harness function: [`many_seeds`],
//! [`every_crash_point`], [`every_io_error`] and [`disk_full`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orbit_persistence_core::fs::{FaultFs, FaultKind};
use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, Clock, Key, ManualClock,
    NodeId, OrbitError, OrbitResult, Timestamp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const T0: Timestamp = Timestamp(1_700_000_000_000);
const REFS: u32 = 40;

/// What identifies a stored lease's content (revisions are assigned by the store).
type Essence = (String, u64, u64);

fn essence(l: &AddressableLease) -> Essence {
    (l.node_id.key.clone(), l.expires_at.0, l.renew_at.0)
}

fn reference(i: u32) -> AddressableReference {
    // Every seventh key is long: it spills to overflow pages in a paged engine.
    let key = if i.is_multiple_of(7) {
        format!("{i:04}-{}", "k".repeat(300 + i as usize * 20))
    } else {
        format!("actor-{i:04}")
    };
    AddressableReference::new(format!("Type{}", i % 3), Key::string(key))
}

/// Opens the store in `/db` on `fs` with `SyncMode::Always`, judging expiry by `clock`.
/// `busy` asks for settings that make the engine write its own files (checkpoints, memtable
/// flushes, compactions) as often as it can, so crashes land inside them.
pub type PowerLossOpen =
    fn(&FaultFs, bool, Arc<dyn Clock>) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>>;

/// The directory every run uses.
pub const DIR: &str = "/db";

/// What goes wrong while the workload runs, before the power goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: the workload runs to its end.
    None,
    /// The machine halts at this file-system call: it and every later call fail.
    HaltAt(u64),
    /// The `n`th call of this kind fails with an I/O error; later calls succeed again, so a
    /// store that retries a failed sync is caught (docs/reliability.md row D).
    FailNth(u64, FaultKind),
    /// The disk holds this many bytes: a write past it fails with ENOSPC.
    SpaceLimit(u64),
}

/// One run: a workload, a crash, a recovery.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Seed of the workload.
    pub workload: u64,
    /// Writes it makes at most.
    pub ops: usize,
    /// What goes wrong during the workload.
    pub fault: Fault,
    /// Seed of a torn crash; `None`: only unsynced data is lost.
    pub torn: Option<u64>,
    /// Open with the busy settings (see [`PowerLossOpen`]).
    pub busy: bool,
}

/// Expected state per reference: the acknowledged one, plus what the failed write would have
/// made it (if it touched it).
struct Expect {
    acked: BTreeMap<u32, Option<Essence>>,
    in_flight: BTreeMap<u32, Option<Essence>>,
}

/// What a run did before its power loss.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// File-system calls the workload made.
    pub calls: u64,
    /// Calls failed by the injected fault or the space limit: 0 means it never fired.
    pub injected: u64,
    /// Bytes on the disk when the power went.
    pub used_bytes: u64,
    /// Writes acknowledged before the power went, each checked after recovery.
    pub acknowledged: u64,
}

/// Runs `case` and checks the recovered store; see the module docs.
pub async fn run_case(open: PowerLossOpen, case: Case) -> Outcome {
    let seed = case.workload;
    let mut rng = StdRng::seed_from_u64(seed);
    let fs = FaultFs::new();
    fs.create_dir_all_durable(Path::new(DIR)).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut expect = Expect {
        acked: (0..REFS).map(|i| (i, None)).collect(),
        in_flight: BTreeMap::new(),
    };
    match case.fault {
        Fault::None => {}
        Fault::HaltAt(n) => fs.halt_at_op(n),
        Fault::FailNth(n, kind) => fs.fail_nth_op(n, kind),
        Fault::SpaceLimit(bytes) => fs.set_space_limit(Some(bytes)),
    }
    let opened = open(&fs, case.busy, clock.clone());
    if let Err(e) = &opened {
        check_failure_is_typed(&fs, &case, e);
    }
    let mut acknowledged = 0;
    let mut crashed = None;
    if let Ok(store) = opened {
        for _ in 0..case.ops {
            // An injected fault that no call reported (a store that retried a failed sync, or
            // a background thread's): the power goes right after it, before a checkpoint or
            // flush could write the same data again from memory and hide a loss.
            if matches!(case.fault, Fault::FailNth(..)) && fs.injected_failures() > 0 {
                break;
            }
            let now = clock.now();
            let lease = |i: u32, rng: &mut StdRng| {
                let expires =
                    now.saturating_add(Duration::from_millis(rng.random_range(1..60_000)));
                AddressableLease::new(
                    reference(i),
                    NodeId::new(format!("node-{}", rng.random_range(0..5)), "ns"),
                    expires,
                    expires,
                )
            };
            let (result, changes): (Result<(), _>, BTreeMap<u32, Option<Essence>>) = match rng
                .random_range(0..10)
            {
                0..=4 => {
                    let i = rng.random_range(0..REFS);
                    let l = lease(i, &mut rng);
                    (store.store_lease(&l).await, [(i, Some(essence(&l)))].into())
                }
                5..=6 => {
                    let first = rng.random_range(0..REFS - 3);
                    let batch: Vec<_> = (first..first + 3).map(|i| lease(i, &mut rng)).collect();
                    let changes = (first..first + 3)
                        .zip(batch.iter().map(|l| Some(essence(l))))
                        .collect();
                    (store.store_leases(&batch).await, changes)
                }
                7..=8 => {
                    let i = rng.random_range(0..REFS);
                    (
                        store.remove_lease(&reference(i)).await.map(|_| ()),
                        [(i, None)].into(),
                    )
                }
                _ => {
                    clock.advance(Duration::from_millis(rng.random_range(0..20_000)));
                    let now = clock.now();
                    let expired = expect
                        .acked
                        .iter()
                        .filter(|(_, s)| matches!(s, Some((_, exp, _)) if Timestamp(*exp) <= now))
                        .map(|(i, _)| (*i, None))
                        .collect();
                    (store.cleanup_expired_leases().await.map(|_| ()), expired)
                }
            };
            match result {
                Ok(()) => {
                    acknowledged += 1;
                    expect.acked.extend(changes);
                }
                Err(e) => {
                    check_failure_is_typed(&fs, &case, &e);
                    if matches!(case.fault, Fault::FailNth(_, FaultKind::Sync))
                        && !matches!(e, OrbitError::InvalidInput(_))
                    {
                        // fsyncgate: after a failed sync the page cache cannot be trusted,
                        // so the store must refuse every later write until reopened.
                        let probe = lease(0, &mut rng);
                        let again = store.store_lease(&probe).await;
                        assert!(
                            matches!(again, Err(OrbitError::Poisoned(_))),
                            "{case:?}: after a failed sync ({e}), a write answered {again:?}, not Poisoned"
                        );
                    }
                    expect.in_flight = changes;
                    break;
                }
            }
        }
        if std::env::var("ORBIT_POWER_LOSS_VERBOSE").is_ok() {
            let m = store.metrics().await;
            eprintln!(
                "seed {seed}: {} writes acked, halted {}, in flight {}, engine {:?}",
                m.writes,
                fs.is_halted(),
                expect.in_flight.len(),
                m.engine
            );
        }
        // The power goes now, while the store is open: dropping it first would let its
        // clean close write everything again. Its threads may go on against the old machine,
        // which nobody reads again.
        crashed = Some(power_loss(&fs, case.torn));
        drop(store);
    }
    let outcome = Outcome {
        calls: fs.op_count(),
        injected: fs.injected_failures(),
        used_bytes: fs.used_bytes(),
        acknowledged,
    };
    let crashed = crashed.unwrap_or_else(|| power_loss(&fs, case.torn));
    let seed = format!("{case:?}");
    let store = open(&crashed, case.busy, clock.clone())
        .unwrap_or_else(|e| panic!("{seed}: reopen after power loss failed: {e}"));
    let mut flight_landed = None;
    let mut by_node: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut present = 0;
    for i in 0..REFS {
        let got = store
            .get_lease(&reference(i))
            .await
            .unwrap()
            .map(|l| essence(&l));
        let acked = &expect.acked[&i];
        if got != *acked {
            let Some(flight) = expect.in_flight.get(&i) else {
                panic!("seed {seed}: ref {i}: acknowledged {acked:?}, found {got:?}");
            };
            assert_eq!(
                got, *flight,
                "seed {seed}: ref {i}: neither acknowledged nor in-flight state"
            );
            assert_ne!(
                flight_landed,
                Some(false),
                "seed {seed}: the in-flight write landed in part"
            );
            flight_landed = Some(true);
        } else if expect.in_flight.get(&i).is_some_and(|f| f != acked) {
            assert_ne!(
                flight_landed,
                Some(true),
                "seed {seed}: the in-flight write landed in part"
            );
            flight_landed = Some(false);
        }
        if let Some((node, _, _)) = got {
            by_node.entry(node).or_default().push(i);
            present += 1;
        }
    }
    for n in 0..5 {
        let node = NodeId::new(format!("node-{n}"), "ns");
        let mut listed: Vec<u32> = store
            .list_node_leases(&node)
            .await
            .unwrap()
            .iter()
            .map(|l| {
                (0..REFS)
                    .find(|&i| reference(i) == l.reference)
                    .expect("unknown reference")
            })
            .collect();
        listed.sort();
        let expected = by_node.remove(&node.key).unwrap_or_default();
        assert_eq!(
            listed, expected,
            "seed {seed}: node index of {} disagrees",
            node.key
        );
    }
    assert_eq!(
        store.metrics().await.lease_count,
        present,
        "seed {seed}: lease count"
    );
    // The expiry index agrees too: cleanup at the end of time removes exactly what is there.
    clock.set(Timestamp(u64::MAX - 1));
    assert_eq!(
        store.cleanup_expired_leases().await.unwrap(),
        present,
        "seed {seed}: expiry index"
    );
    store.shutdown().await.unwrap();
    let store = open(&crashed, case.busy, clock.clone()).unwrap();
    assert_eq!(
        store.metrics().await.lease_count,
        0,
        "seed {seed}: after cleanup and reopen"
    );
    store.shutdown().await.unwrap();
    outcome
}

fn power_loss(fs: &FaultFs, torn: Option<u64>) -> FaultFs {
    match torn {
        None => fs.crash(),
        Some(t) => fs.crash_torn(t),
    }
}

/// An injected I/O error or a full disk must reach the caller as `Io` or `Poisoned`, never as
/// something that blames the caller or the data.
fn check_failure_is_typed(fs: &FaultFs, case: &Case, e: &OrbitError) {
    let injected = matches!(case.fault, Fault::FailNth(..) | Fault::SpaceLimit(_));
    if injected && fs.injected_failures() > 0 {
        assert!(
            matches!(e, OrbitError::Io { .. } | OrbitError::Poisoned(_)),
            "{case:?}: an I/O error reached the caller as {e:?}"
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Seeds [`many_seeds`] runs: `ORBIT_POWER_LOSS_SEEDS`, default 1,000.
pub fn seeds_from_env() -> u64 {
    std::env::var("ORBIT_POWER_LOSS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000)
}

/// Runs [`seeds_from_env`] random cases: 200 writes, a halt at a random file-system call, a
/// clean or torn power loss, busy settings for every other seed.
pub fn many_seeds(open: PowerLossOpen) {
    let runtime = runtime();
    let mut acknowledged = 0;
    for seed in 0..seeds_from_env() {
        let mut rng = StdRng::seed_from_u64(!seed);
        acknowledged += runtime
            .block_on(run_case(
                open,
                Case {
                    workload: seed,
                    ops: 200,
                    fault: Fault::HaltAt(rng.random_range(1..600)),
                    torn: (seed % 3 != 0).then_some(seed),
                    busy: seed % 2 == 0,
                },
            ))
            .acknowledged;
    }
    // Read by scripts/soak.sh.
    eprintln!(
        "power-loss summary: seeds {} acknowledged {acknowledged} lost 0",
        seeds_from_env()
    );
}

/// Crashes a 60-write script at each of its file-system calls, three ways (only unsynced data
/// lost; torn with two seeds), with the busy settings.
pub fn every_crash_point(open: PowerLossOpen) {
    let runtime = runtime();
    let script = Case {
        workload: 7,
        ops: 60,
        fault: Fault::None,
        torn: None,
        busy: true,
    };
    let calls = runtime.block_on(run_case(open, script)).calls;
    assert!(
        calls > 100,
        "the script should make many file-system calls, made {calls}"
    );
    for n in 1..=calls {
        for torn in [None, Some(n), Some(!n)] {
            runtime.block_on(run_case(
                open,
                Case {
                    fault: Fault::HaltAt(n),
                    torn,
                    ..script
                },
            ));
        }
    }
}

/// The script of [`every_io_error`] and [`disk_full`]: busy settings, so faults also land in the
/// engine's own background writes.
const IO_ERROR_SCRIPT: Case = Case {
    workload: 11,
    ops: 60,
    fault: Fault::None,
    torn: None,
    busy: true,
};

/// Fails the `n`th write, sync, rename, create and remove of a 60-write script, for every `n`
/// until the script makes no `n`th call of that kind; returns the runs made per kind.
pub fn every_io_error(open: PowerLossOpen) -> Vec<(FaultKind, u64)> {
    let runtime = runtime();
    let kinds = [
        FaultKind::Write,
        FaultKind::Sync,
        FaultKind::Rename,
        FaultKind::Create,
        FaultKind::Remove,
    ];
    let mut runs = Vec::new();
    for kind in kinds {
        let mut n = 1;
        loop {
            let case = Case {
                fault: Fault::FailNth(n, kind),
                ..IO_ERROR_SCRIPT
            };
            if runtime.block_on(run_case(open, case)).injected == 0 {
                break;
            }
            n += 1;
        }
        runs.push((kind, n - 1));
    }
    for kind in [FaultKind::Write, FaultKind::Sync] {
        let made = runs.iter().find(|(k, _)| *k == kind).map_or(0, |r| r.1);
        assert!(
            made >= 10,
            "the script made only {made} {kind:?} calls: too few to mean anything"
        );
    }
    runs
}

/// Runs the script of [`every_io_error`] on disks of 50 sizes between empty and what the script
/// needs, so ENOSPC lands in every kind of file the engine writes; returns the sizes tried.
pub fn disk_full(open: PowerLossOpen) -> Vec<u64> {
    let runtime = runtime();
    let needed = runtime.block_on(run_case(open, IO_ERROR_SCRIPT)).used_bytes;
    assert!(needed > 0, "the script wrote nothing");
    let sizes: Vec<u64> = (0..50).map(|i| needed * i / 50).collect();
    let mut refused = 0;
    for &bytes in &sizes {
        let case = Case {
            fault: Fault::SpaceLimit(bytes),
            ..IO_ERROR_SCRIPT
        };
        if runtime.block_on(run_case(open, case)).injected > 0 {
            refused += 1;
        }
    }
    assert!(
        refused >= 40,
        "only {refused} of 50 small disks ever filled up: the space limit is not reached"
    );
    sizes
}

/// Expands into the four power-loss tests of a backend crate (see the module docs).
#[macro_export]
macro_rules! power_loss_suite {
    ($open:path) => {
        #[test]
        fn acknowledged_writes_survive_power_loss() {
            $crate::power_loss::many_seeds($open);
        }

        #[test]
        fn every_crash_point_of_a_scripted_workload() {
            $crate::power_loss::every_crash_point($open);
        }

        #[test]
        fn every_io_error_is_typed_and_loses_nothing() {
            let runs = $crate::power_loss::every_io_error($open);
            eprintln!("runs per failing call kind: {runs:?}");
        }

        #[test]
        fn a_full_disk_is_typed_and_loses_nothing() {
            $crate::power_loss::disk_full($open);
        }
    };
}
