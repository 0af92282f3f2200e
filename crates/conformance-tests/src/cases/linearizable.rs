//! Linearizability under contention (docs/reliability.md row H): 8 tasks make acquire, renew and
//! release calls on 1,000 references (most of them on a hot 50) while a manual clock moves, and
//! every call's start and end are stamped from one global counter. Revisions give the order in
//! which the store claims to have applied the writes; the check is that this order is a legal
//! sequential history that respects real time:
//!
//! - a write that ended before another began has the lower revision;
//! - per reference, a renewal continues the grant it named, by the same owner; a new owner takes
//!   over only a lease that was released or had expired by the time it was decided;
//! - a release succeeds only while the grant it names is current;
//! - every refusal (`Held`, `Lost` with a holder) names a grant that was current at some moment
//!   between the call's start and end, and a `Held` lease was unexpired;
//! - the store's final contents are the last grant of each reference, or nothing if released.
//!
//! `ORBIT_CONTENTION_OPS` sets the calls per task (default 10,000; the soak run uses more).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use orbit_persistence_core::{Acquire, OrbitError, Renew, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Backend;
use crate::fixtures::{Ctx, node, reference};

const TASKS: u32 = 8;
const REFS: u32 = 1_000;
const HOT: u32 = 50;
const TTL: u64 = 50;

fn ops_per_task() -> u32 {
    std::env::var("ORBIT_CONTENTION_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[derive(Debug, Clone, Copy)]
enum Call {
    Acquire,
    Renew { from: u64 },
    Release { revision: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// Acquired or renewed: the new grant.
    Granted {
        revision: u64,
        expires_at: Timestamp,
    },
    /// `Acquire::Held` or `Renew::Lost(Some(_))`: the grant the store said was current.
    Refused { current: u64, expires_at: Timestamp },
    /// `Renew::Lost(None)`, a failed release, or a call the clock made invalid.
    Nothing,
    /// A successful release.
    Released,
}

#[derive(Debug, Clone, Copy)]
struct Event {
    owner: u32,
    i: u32,
    call: Call,
    answer: Answer,
    /// Global counter before the call and after it returned.
    began: u64,
    ended: u64,
    /// The clock before the call: the store decided at or after this.
    clock_before: Timestamp,
    /// The clock after the call: the store decided at or before this.
    clock_after: Timestamp,
}

/// The case; see the module docs.
pub async fn linearizable_under_contention(b: Backend) {
    let ctx = Arc::new(Ctx::new(b).await);
    let ticket = Arc::new(AtomicU64::new(0));
    let history: Arc<Mutex<Vec<Event>>> = Arc::default();
    let ops = ops_per_task();
    let tasks: Vec<_> = (0..TASKS)
        .map(|owner| {
            let (ctx, ticket, history) = (ctx.clone(), ticket.clone(), history.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(u64::from(owner) ^ 0x11AE);
                let mut mine: HashMap<u32, u64> = HashMap::new();
                let mut events = Vec::with_capacity(ops as usize);
                for _ in 0..ops {
                    if owner == 0 {
                        ctx.advance(rng.random_range(0..4));
                    }
                    let i = if rng.random_bool(0.8) {
                        rng.random_range(0..HOT)
                    } else {
                        rng.random_range(0..REFS)
                    };
                    let r = reference(i);
                    let call = match (mine.get(&i).copied(), rng.random_range(0..4)) {
                        (Some(from), 0 | 1) => Call::Renew { from },
                        (Some(revision), 2) => Call::Release { revision },
                        _ => Call::Acquire,
                    };
                    let clock_before = ctx.now();
                    let expires_at = Timestamp(clock_before.0 + TTL);
                    let began = ticket.fetch_add(1, Ordering::SeqCst);
                    let answer = match call {
                        Call::Acquire => {
                            let mut lease = ctx.lease(i, owner);
                            lease.expires_at = expires_at;
                            lease.renew_at = expires_at;
                            match ctx.store.acquire_lease(&lease).await {
                                Ok(Acquire::Acquired(l)) => Answer::Granted {
                                    revision: l.revision,
                                    expires_at: l.expires_at,
                                },
                                Ok(Acquire::Held(h)) => Answer::Refused {
                                    current: h.revision,
                                    expires_at: h.expires_at,
                                },
                                Err(OrbitError::InvalidInput(_)) => Answer::Nothing,
                                Err(e) => panic!("acquire failed: {e}"),
                            }
                        }
                        Call::Renew { from } => {
                            let out = ctx
                                .store
                                .renew_lease(&r, &node(owner), from, expires_at, expires_at)
                                .await;
                            match out {
                                Ok(Renew::Renewed(l)) => Answer::Granted {
                                    revision: l.revision,
                                    expires_at: l.expires_at,
                                },
                                Ok(Renew::Lost(Some(h))) => Answer::Refused {
                                    current: h.revision,
                                    expires_at: h.expires_at,
                                },
                                Ok(Renew::Lost(None)) | Err(OrbitError::InvalidInput(_)) => {
                                    Answer::Nothing
                                }
                                Err(e) => panic!("renew failed: {e}"),
                            }
                        }
                        Call::Release { revision } => {
                            match ctx.store.release_lease(&r, &node(owner), revision).await {
                                Ok(true) => Answer::Released,
                                Ok(false) => Answer::Nothing,
                                Err(e) => panic!("release failed: {e}"),
                            }
                        }
                    };
                    let ended = ticket.fetch_add(1, Ordering::SeqCst);
                    match answer {
                        Answer::Granted { revision, .. } => {
                            mine.insert(i, revision);
                        }
                        _ => {
                            mine.remove(&i);
                        }
                    }
                    events.push(Event {
                        owner,
                        i,
                        call,
                        answer,
                        began,
                        ended,
                        clock_before,
                        clock_after: ctx.now(),
                    });
                }
                history.lock().unwrap().extend(events);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a contender panicked");
    }
    let history = std::mem::take(&mut *history.lock().unwrap());
    check_history(&history);
    check_final_state(&ctx, &history).await;
}

fn check_history(history: &[Event]) {
    let mut grants: Vec<&Event> = history
        .iter()
        .filter(|e| matches!(e.answer, Answer::Granted { .. }))
        .collect();
    let revision = |e: &Event| match e.answer {
        Answer::Granted { revision, .. } => revision,
        _ => unreachable!(),
    };
    grants.sort_by_key(|e| revision(e));
    assert!(
        grants.len() as u64 >= u64::from(TASKS) * u64::from(ops_per_task()) / 10,
        "too few grants ({}) for the check to mean anything",
        grants.len()
    );
    for pair in grants.windows(2) {
        assert!(
            revision(pair[0]) < revision(pair[1]),
            "revision {} granted twice",
            revision(pair[0])
        );
    }
    // Real time: no grant with a higher revision ended before a lower one began.
    let mut earliest_end_above = u64::MAX;
    for g in grants.iter().rev() {
        assert!(
            earliest_end_above > g.began,
            "real-time order broken: a grant above revision {} ended before it began: {g:?}",
            revision(g)
        );
        earliest_end_above = earliest_end_above.min(g.ended);
    }

    let by_revision: HashMap<u64, &Event> = grants.iter().map(|g| (revision(g), *g)).collect();
    let mut per_ref: BTreeMap<u32, Vec<&Event>> = BTreeMap::new();
    for g in &grants {
        per_ref.entry(g.i).or_default().push(g);
    }
    let releases: HashMap<(u32, u64), &Event> = history
        .iter()
        .filter_map(|e| match (e.answer, e.call) {
            (Answer::Released, Call::Release { revision }) => Some(((e.i, revision), e)),
            _ => None,
        })
        .collect();
    // What ended the reign of each grant: the next grant of its reference.
    let mut successor: HashMap<u64, &Event> = HashMap::new();
    for (i, list) in &per_ref {
        for pair in list.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            let released = releases.get(&(*i, revision(prev)));
            match next.call {
                Call::Renew { from } => {
                    assert!(
                        from == revision(prev) && next.owner == prev.owner && released.is_none(),
                        "ref {i}: a renewal did not continue the current grant: {prev:?} then {next:?}"
                    );
                }
                Call::Acquire => {
                    let Answer::Granted {
                        expires_at: prev_expiry,
                        ..
                    } = prev.answer
                    else {
                        unreachable!()
                    };
                    assert!(
                        released.is_some_and(|r| r.began < next.ended)
                            || prev_expiry <= next.clock_after,
                        "ref {i}: two owners at once: {prev:?} then {next:?}"
                    );
                }
                Call::Release { .. } => unreachable!("a release grants nothing"),
            }
            successor.insert(revision(prev), next);
        }
    }
    for ((i, rev), release) in &releases {
        let granted = by_revision
            .get(rev)
            .unwrap_or_else(|| panic!("ref {i}: released revision {rev}, never granted"));
        assert!(granted.i == *i && granted.began < release.ended);
        if let Some(next) = successor.get(rev) {
            assert!(
                next.ended > release.began,
                "ref {i}: released revision {rev} after it had been replaced: {next:?} then {release:?}"
            );
        }
    }
    // Every refusal names a grant that was current at some moment of the call.
    for e in history {
        let Answer::Refused {
            current,
            expires_at,
        } = e.answer
        else {
            continue;
        };
        let granted = by_revision.get(&current).unwrap_or_else(|| {
            panic!(
                "ref {}: refused with revision {current}, never granted: {e:?}",
                e.i
            )
        });
        assert_eq!(granted.i, e.i, "refused with another reference's grant");
        assert!(
            granted.began < e.ended,
            "ref {}: refused with a grant made after the call: {e:?}",
            e.i
        );
        let replaced = successor
            .get(&current)
            .map(|n| n.ended)
            .into_iter()
            .chain(releases.get(&(e.i, current)).map(|r| r.ended))
            .min();
        assert!(
            replaced.is_none_or(|end| end > e.began),
            "ref {}: refused with revision {current}, replaced before the call began: {e:?}",
            e.i
        );
        if matches!(e.call, Call::Acquire) {
            assert!(
                expires_at > e.clock_before,
                "ref {}: acquire refused by an expired lease: {e:?}",
                e.i
            );
        }
    }
}

async fn check_final_state(ctx: &Ctx, history: &[Event]) {
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for e in history {
        if let Answer::Granted { revision, .. } = e.answer {
            let slot = last.entry(e.i).or_default();
            *slot = (*slot).max(revision);
        }
    }
    let released: std::collections::HashSet<(u32, u64)> = history
        .iter()
        .filter_map(|e| match (e.answer, e.call) {
            (Answer::Released, Call::Release { revision }) => Some((e.i, revision)),
            _ => None,
        })
        .collect();
    for i in 0..REFS {
        let expected = last
            .get(&i)
            .filter(|rev| !released.contains(&(i, **rev)))
            .copied();
        let got = ctx.get(&reference(i)).await.map(|l| l.revision);
        assert_eq!(got, expected, "ref {i}: final contents");
    }
}
