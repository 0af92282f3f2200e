//! The kill -9 harness: a child process writes durably and reports every acknowledged write on
//! a pipe; the parent kills it with SIGKILL at a random moment, reopens the store and checks
//! that every acknowledged write is there, that indexes agree with the leases, and that
//! revisions never go back.
//!
//! The child is the test binary itself, re-run with a filter selecting the
//! `conformance_kill9_child_entry` test that [`crate::conformance_suite!`] generates, and
//! [`CHILD_DIR_ENV`] set. It runs four writer tasks, each owning its own references, so at most
//! one write per task is in flight when the kill lands (reported as `BEGIN` without `ACK`).
//!
//! Child output lines: `READY`, `BEGIN <ref>...` (one line per write, naming every reference it
//! changes), `ACK <ref> ABSENT` or `ACK <ref> <node> <expires_at> <renew_at> <revision>`. A
//! batch still in flight at the kill must have landed whole or not at all.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use orbit_persistence_core::{
    Acquire, AddressableLease, Clock, LeaseSnapshot, ManualClock, OrbitError, Renew, Timestamp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Backend;
use crate::fixtures::{T0, lease_at, node, open_in, reference};
use crate::follow::{own_revisions, replay_to};

/// Set in the child's environment to the data directory it must write to.
pub const CHILD_DIR_ENV: &str = "ORBIT_CONFORMANCE_KILL9_DIR";
/// Environment variable naming the backend the child must run: a test binary may hold the
/// suites of several backends (or configurations), and the filter matches every child entry.
const CHILD_BACKEND_ENV: &str = "ORBIT_KILL9_CHILD_BACKEND";
/// Set in the child's environment to its random seed.
pub const CHILD_SEED_ENV: &str = "ORBIT_CONFORMANCE_KILL9_SEED";
/// Kill cycles per run of the case; override with `ORBIT_KILL9_CYCLES`.
pub const DEFAULT_CYCLES: u32 = 4;

const TASKS: u32 = 4;
const REFS_PER_TASK: u32 = 40;
const NODES: u32 = 4;
const HOUR_MS: u64 = 3_600_000;

/// What the parent knows of one reference: absent, or a lease with these fields.
type State = Option<(u32, u64, u64, u64)>;

fn describe(l: &Option<AddressableLease>) -> String {
    match l {
        None => "ABSENT".into(),
        Some(l) => {
            let n: u32 = l
                .node_id
                .key
                .trim_start_matches("node-")
                .parse()
                .unwrap_or(u32::MAX);
            format!("{n} {} {} {}", l.expires_at.0, l.renew_at.0, l.revision)
        }
    }
}

fn state_of(l: &Option<AddressableLease>) -> State {
    l.as_ref().map(|l| {
        let n = l
            .node_id
            .key
            .trim_start_matches("node-")
            .parse()
            .unwrap_or(u32::MAX);
        (n, l.expires_at.0, l.renew_at.0, l.revision)
    })
}

/// Entry point of the child; returns at once unless [`CHILD_DIR_ENV`] is set.
pub fn child_entry(b: Backend) {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    if std::env::var(CHILD_BACKEND_ENV).ok().as_deref() != Some(b.name) {
        return;
    }
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    crate::run(child_main(b, dir, seed));
}

async fn child_main(b: Backend, dir: String, seed: u64) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = open_in(b, clock.clone(), Path::new(&dir))
        .await
        .expect("child: open failed");
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = move |line: String| {
        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line: lines from different tasks never interleave.
        let _ = o.write_all(format!("{line}\n").as_bytes());
        let _ = o.flush();
    };
    say("READY".into());
    let deadline = Instant::now() + Duration::from_secs(30);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (store, say, clock) = (store.clone(), say.clone(), clock.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed * 31 + u64::from(t));
                let mut bump = 0u64;
                while Instant::now() < deadline {
                    let i = t * REFS_PER_TASK + rng.random_range(0..REFS_PER_TASK);
                    let r = reference(i);
                    let n = rng.random_range(0..NODES);
                    bump += 1;
                    let lease = lease_at(r.clone(), node(n), clock.now(), HOUR_MS + bump);
                    let j = t * REFS_PER_TASK + (i + 1 - t * REFS_PER_TASK) % REFS_PER_TASK;
                    let batch = rng.random_range(0..5) == 4;
                    say(if batch {
                        format!("BEGIN {i} {j}")
                    } else {
                        format!("BEGIN {i}")
                    });
                    let current = store.get_lease(&r).await.expect("child: get failed");
                    match if batch { 4 } else { rng.random_range(0..4) } {
                        0 => store
                            .store_lease(&lease)
                            .await
                            .expect("child: store failed"),
                        1 => {
                            let a = store
                                .acquire_lease(&lease)
                                .await
                                .expect("child: acquire failed");
                            assert!(matches!(a, Acquire::Acquired(_)) || current.is_some());
                        }
                        2 => {
                            if let Some(c) = &current {
                                let r2 = store
                                    .renew_lease(
                                        &r,
                                        &c.node_id,
                                        c.revision,
                                        lease.expires_at,
                                        lease.renew_at,
                                    )
                                    .await
                                    .expect("child: renew failed");
                                assert!(
                                    matches!(r2, Renew::Renewed(_)),
                                    "child: own renew lost: {r2:?}"
                                );
                            }
                        }
                        3 => {
                            store.remove_lease(&r).await.expect("child: remove failed");
                        }
                        _ => {
                            // A batch over two of this task's references: all or nothing.
                            let other =
                                lease_at(reference(j), node(n), clock.now(), HOUR_MS + bump);
                            store
                                .store_leases(&[lease.clone(), other])
                                .await
                                .expect("child: batch failed");
                            let got = store
                                .get_lease(&reference(j))
                                .await
                                .expect("child: get failed");
                            say(format!("ACK {j} {}", describe(&got)));
                        }
                    }
                    let got = store.get_lease(&r).await.expect("child: get failed");
                    say(format!("ACK {i} {}", describe(&got)));
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    std::process::exit(0);
}

fn parse_state(words: &[&str]) -> Option<State> {
    if words == ["ABSENT"] {
        return Some(None);
    }
    match words {
        [n, e, r, rev] => Some(Some((
            n.parse().ok()?,
            e.parse().ok()?,
            r.parse().ok()?,
            rev.parse().ok()?,
        ))),
        _ => None,
    }
}

/// Parent side: run [`DEFAULT_CYCLES`] kill cycles on one data directory, verifying after each.
pub async fn kill9_acknowledged_writes_survive(b: Backend) {
    let cycles = std::env::var("ORBIT_KILL9_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    // The kill lands 30 ms to this long after READY (a soak run shortens it for more cycles).
    let max_ms: u64 = std::env::var("ORBIT_KILL9_MAX_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let dir = tempfile::Builder::new()
        .prefix("orbit-kill9-")
        .tempdir()
        .expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    let clock = Arc::new(ManualClock::new(T0));
    // Open the backend once in a scratch directory first: one whose cases share a service with
    // the children (the etcd cases' member) starts it here, in the parent, where the children
    // look for it, instead of in the first child (dying with it). The data directory itself
    // stays for the first child to create, so a kill during creation is still covered.
    let scratch = tempfile::tempdir().expect("tempdir");
    open_in(b, clock.clone(), scratch.path())
        .await
        .expect("open in a scratch directory")
        .shutdown()
        .await
        .expect("shutdown of the scratch store");
    let mut known: BTreeMap<u32, State> = BTreeMap::new();
    let mut max_revision = 0u64;
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut total_acks = 0usize;
    // What the last verification saw, for the next one's check of the change feed.
    let mut previous: Option<LeaseSnapshot> = None;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "conformance_kill9_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_BACKEND_ENV, b.name)
            .env(CHILD_SEED_ENV, cycle.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the kill -9 child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let ready_by = Instant::now() + Duration::from_secs(60);
        loop {
            let left = ready_by.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                // libtest prints "test <name> ... " without a newline before the child's output.
                Ok(l) if l.ends_with("READY") => break,
                Ok(l) => lines.push(l),
                Err(_) => {
                    let _ = child.kill();
                    let tail = &lines[lines.len().saturating_sub(20)..];
                    panic!(
                        "cycle {cycle}: the child never reported READY; its last output: {tail:?}"
                    );
                }
            }
        }
        // While the child holds the directory, this process must be refused (a shared store:
        // served beside it).
        match open_in(b, clock.clone() as Arc<dyn Clock>, dir.path()).await {
            Err(OrbitError::Locked { .. }) if b.capabilities.exclusive => {}
            Err(e) => panic!("cycle {cycle}: open beside a live child: got {e}"),
            Ok(_) if !b.capabilities.exclusive => {}
            Ok(_) => panic!("cycle {cycle}: opened a data dir another process holds"),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..max_ms.max(31)))).await;
        child.kill().expect("SIGKILL failed");
        let _ = child.wait();
        reader.join().expect("reader thread panicked");
        lines.extend(rx.try_iter());

        // Each reference in flight, with the write (its BEGIN line) that changes it.
        let mut in_flight: BTreeMap<u32, usize> = BTreeMap::new();
        for (write, line) in lines.iter().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["BEGIN", refs @ ..] => {
                    for i in refs {
                        in_flight.insert(i.parse().expect("bad BEGIN line"), write);
                    }
                }
                ["ACK", i, rest @ ..] => {
                    let i: u32 = i.parse().expect("bad ACK line");
                    let state =
                        parse_state(rest).unwrap_or_else(|| panic!("bad ACK line {line:?}"));
                    in_flight.remove(&i);
                    known.insert(i, state);
                    total_acks += 1;
                }
                _ => {}
            }
        }

        let store = open_in(b, clock.clone() as Arc<dyn Clock>, dir.path())
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen after kill -9 failed: {e}"));
        // The change feed across the crash: what it gives after the revision the last
        // verification saw, replayed onto what that verification saw, is the store now.
        let now = store
            .snapshot_leases()
            .await
            .expect("snapshot after reopen");
        let before = previous.take().unwrap_or(LeaseSnapshot {
            revision: 0,
            leases: Vec::new(),
        });
        let mut feed = store
            .watch(before.revision)
            .await
            .expect("watch after reopen");
        if let Err(e) = replay_to(&mut feed, &before, &now, own_revisions(b)).await {
            panic!("cycle {cycle}: the change feed across kill -9 disagrees with the store: {e}");
        }
        drop(feed);
        let mut by_node: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut present = 0u64;
        // Per write in flight: whether each of its references changed.
        let mut landed: BTreeMap<usize, Vec<(u32, bool)>> = BTreeMap::new();
        for i in 0..TASKS * REFS_PER_TASK {
            let got = store
                .get_lease(&reference(i))
                .await
                .expect("get after reopen failed");
            let actual = state_of(&got);
            let expected = known.get(&i).copied().unwrap_or(None);
            if let Some(write) = in_flight.get(&i) {
                landed
                    .entry(*write)
                    .or_default()
                    .push((i, actual != expected));
            }
            if actual != expected {
                let was_in_flight = in_flight.contains_key(&i);
                let newer = match (actual, expected) {
                    (Some(a), Some(e)) => a.3 > e.3,
                    _ => true,
                };
                assert!(
                    was_in_flight && newer,
                    "cycle {cycle}: reference {i}: acknowledged state {expected:?}, found {actual:?} (in flight: {was_in_flight})"
                );
            }
            if let Some((n, _, _, rev)) = actual {
                by_node.entry(n).or_default().push(i);
                max_revision = max_revision.max(rev);
                present += 1;
            }
            known.insert(i, actual);
        }
        for (write, refs) in &landed {
            assert!(
                refs.iter().all(|r| r.1) || refs.iter().all(|r| !r.1),
                "cycle {cycle}: the write {:?} in flight at the kill landed in part: {refs:?}",
                lines[*write]
            );
        }
        for n in 0..NODES {
            let mut listed: Vec<u32> = store
                .list_node_leases(&node(n))
                .await
                .expect("list after reopen failed")
                .iter()
                .map(|l| {
                    (0..TASKS * REFS_PER_TASK)
                        .find(|&i| reference(i) == l.reference)
                        .expect("listed an unknown reference")
                })
                .collect();
            listed.sort_unstable();
            assert_eq!(
                listed,
                by_node.remove(&n).unwrap_or_default(),
                "cycle {cycle}: node index of node {n} disagrees with the leases"
            );
        }
        let fresh = lease_at(reference(100_000 + cycle), node(0), clock.now(), HOUR_MS);
        let Acquire::Acquired(l) = store
            .acquire_lease(&fresh)
            .await
            .expect("acquire after reopen")
        else {
            panic!("fresh reference held");
        };
        assert!(
            l.revision > max_revision,
            "cycle {cycle}: revision {} reused after kill -9 (max seen {max_revision})",
            l.revision
        );
        max_revision = l.revision;
        assert!(store.remove_lease(&fresh.reference).await.unwrap());
        if cycle + 1 == cycles {
            // The expiry index agrees too: at the end of time, cleanup removes exactly what is there.
            assert_eq!(
                store.metrics().await.lease_count,
                present,
                "lease_count disagrees with the leases"
            );
            // Evicting a node after recovery takes exactly what its index lists.
            let on_node = store.list_node_leases(&node(0)).await.unwrap().len() as u64;
            let evicted = store
                .remove_node_leases(&node(0))
                .await
                .expect("eviction after reopen");
            assert_eq!(evicted, on_node, "cycle {cycle}: eviction after kill -9");
            clock.set(Timestamp(T0.0 + 10 * HOUR_MS));
            let removed = store
                .cleanup_expired_leases()
                .await
                .expect("cleanup after reopen");
            assert_eq!(
                removed,
                present - evicted,
                "cycle {cycle}: the expiry index disagrees with the leases"
            );
        }
        previous = Some(
            store
                .snapshot_leases()
                .await
                .expect("snapshot after verification"),
        );
        store.shutdown().await.expect("shutdown after verification");
    }
    assert!(
        total_acks > 0,
        "no child ever acknowledged a write: the harness checked nothing"
    );
    // Read by scripts/soak.sh.
    eprintln!(
        "kill9 summary: backend {} cycles {cycles} acknowledged {total_acks} lost 0",
        b.name
    );
}
