//! Model-based testing: random sequences of every operation, clock advances and (for durable
//! backends) reopens, run against the backend and against [`Model`], a deliberately naive
//! directory (one ordered map, full scans, no indexes). Any difference in an observable result
//! fails the case, and proptest shrinks it to a minimal sequence.
//!
//! The model is not the memory backend: comparing the memory backend with itself could never
//! fail. The model shares only [`orbit_persistence_core::rules`] with the backends, so it checks
//! their indexes, sharding and persistence against the simplest possible reading of the contract.
//! Revisions are store-specific; results are compared with revisions cleared, and each side
//! renews and releases with its own current revision.

use std::collections::BTreeMap;
use std::time::Duration;

use orbit_persistence_core::{
    Acquire, AddressableLease, AddressableReference, LeaseEvent, LeaseWatch, NodeId, OrbitError,
    OrbitResult, Renew, Timestamp, rules,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::fixtures::{Ctx, lease_at, node, reference, without_revision};
use crate::{Backend, follow};

/// The naive reference directory.
#[derive(Debug, Default)]
pub struct Model {
    leases: BTreeMap<AddressableReference, AddressableLease>,
    revision: u64,
}

impl Model {
    fn write(&mut self, mut lease: AddressableLease) -> AddressableLease {
        self.revision += 1;
        lease.revision = self.revision;
        self.leases.insert(lease.reference.clone(), lease.clone());
        lease
    }

    /// `store_lease`.
    pub fn store(&mut self, lease: &AddressableLease, now: Timestamp) -> OrbitResult<()> {
        rules::validate_lease(lease, now)?;
        self.write(lease.clone());
        Ok(())
    }

    /// `store_leases`.
    pub fn store_all(&mut self, leases: &[AddressableLease], now: Timestamp) -> OrbitResult<()> {
        rules::validate_batch(leases, now)?;
        for l in leases {
            self.write(l.clone());
        }
        Ok(())
    }

    /// `get_lease`.
    pub fn get(&self, r: &AddressableReference) -> Option<AddressableLease> {
        self.leases.get(r).cloned()
    }

    /// `remove_lease`.
    pub fn remove(&mut self, r: &AddressableReference) -> bool {
        self.leases.remove(r).is_some()
    }

    /// `list_node_leases`, by full scan.
    pub fn list(&self, n: &NodeId) -> Vec<AddressableLease> {
        self.leases
            .values()
            .filter(|l| l.node_id == *n)
            .cloned()
            .collect()
    }

    /// `cleanup_expired_leases`, by full scan.
    pub fn cleanup(&mut self, now: Timestamp) -> u64 {
        let before = self.leases.len();
        self.leases.retain(|_, l| !l.is_expired(now));
        (before - self.leases.len()) as u64
    }

    /// `remove_node_leases`, by full scan.
    pub fn remove_node(&mut self, n: &NodeId) -> OrbitResult<u64> {
        rules::validate_node(n)?;
        let before = self.leases.len();
        self.leases.retain(|_, l| l.node_id != *n);
        Ok((before - self.leases.len()) as u64)
    }

    /// `acquire_lease`.
    pub fn acquire(&mut self, lease: &AddressableLease, now: Timestamp) -> OrbitResult<Acquire> {
        rules::validate_lease(lease, now)?;
        Ok(
            match rules::acquire_allowed(self.leases.get(&lease.reference), now) {
                Ok(()) => Acquire::Acquired(self.write(lease.clone())),
                Err(held) => Acquire::Held(held),
            },
        )
    }

    /// `renew_lease`.
    pub fn renew(
        &mut self,
        r: &AddressableReference,
        owner: &NodeId,
        revision: u64,
        expires_at: Timestamp,
        renew_at: Timestamp,
        now: Timestamp,
    ) -> OrbitResult<Renew> {
        rules::validate_times(expires_at, renew_at, now)?;
        Ok(
            match rules::renew_decision(self.leases.get(r), owner, revision, expires_at, renew_at) {
                Ok(l) => Renew::Renewed(self.write(l)),
                Err(lost) => lost,
            },
        )
    }

    /// `release_lease`.
    pub fn release(&mut self, r: &AddressableReference, owner: &NodeId, revision: u64) -> bool {
        rules::owns(self.leases.get(r), owner, revision) && self.remove(r)
    }
}

/// One step of a random sequence. Indexes pick from small pools so operations collide.
#[derive(Debug, Clone)]
pub enum Op {
    /// `store_lease` of reference `r` on node `n` with time-to-live `ttl` (0 is invalid).
    Store {
        /// Index of the reference in the pool.
        r: u32,
        /// Index of the node in the pool.
        n: u32,
        /// Time to live in milliseconds (0 is invalid).
        ttl: u64,
    },
    /// `store_leases` of several.
    StoreBatch(Vec<(u32, u32, u64)>),
    /// `get_lease`.
    Get(u32),
    /// `remove_lease`.
    Remove(u32),
    /// `list_node_leases`.
    List(u32),
    /// `cleanup_expired_leases`.
    Cleanup,
    /// `remove_node_leases` of a node in the pool.
    RemoveNode(u32),
    /// `acquire_lease`.
    Acquire {
        /// Index of the reference in the pool.
        r: u32,
        /// Index of the node in the pool.
        n: u32,
        /// Time to live in milliseconds (0 is invalid).
        ttl: u64,
    },
    /// `renew_lease` with the side's own current revision, or a stale one.
    Renew {
        /// Index of the reference in the pool.
        r: u32,
        /// Index of the node in the pool.
        n: u32,
        /// Time to live in milliseconds (0 is invalid).
        ttl: u64,
        /// Whether to present a stale revision.
        stale: bool,
    },
    /// `release_lease` with the side's own current revision, or a stale one.
    Release {
        /// Index of the reference in the pool.
        r: u32,
        /// Index of the node in the pool.
        n: u32,
        /// Whether to present a stale revision.
        stale: bool,
    },
    /// Moves the clock.
    Advance(u64),
    /// Shuts down and reopens (durable backends only; a no-op otherwise).
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let r = 0..10u32;
    let n = 0..3u32;
    let ttl = prop_oneof![1 => Just(0u64), 9 => 1..300u64];
    prop_oneof![
        4 => (r.clone(), n.clone(), ttl.clone()).prop_map(|(r, n, ttl)| Op::Store { r, n, ttl }),
        1 => proptest::collection::vec((r.clone(), n.clone(), ttl.clone()), 0..5).prop_map(Op::StoreBatch),
        3 => r.clone().prop_map(Op::Get),
        2 => r.clone().prop_map(Op::Remove),
        2 => n.clone().prop_map(Op::List),
        2 => Just(Op::Cleanup),
        1 => n.clone().prop_map(Op::RemoveNode),
        4 => (r.clone(), n.clone(), ttl.clone()).prop_map(|(r, n, ttl)| Op::Acquire { r, n, ttl }),
        3 => (r.clone(), n.clone(), ttl, any::<bool>()).prop_map(|(r, n, ttl, stale)| Op::Renew { r, n, ttl, stale }),
        2 => (r, n, any::<bool>()).prop_map(|(r, n, stale)| Op::Release { r, n, stale }),
        3 => (0..250u64).prop_map(Op::Advance),
        1 => Just(Op::Reopen),
    ]
}

fn same<T: PartialEq + std::fmt::Debug>(
    step: usize,
    op: &Op,
    model: T,
    real: T,
) -> Result<(), TestCaseError> {
    if model != real {
        return Err(TestCaseError::fail(format!(
            "step {step} {op:?}: model {model:?}, backend {real:?}"
        )));
    }
    Ok(())
}

/// Ok(value) or the error's variant name, so errors compare by kind, not message.
fn outcome<T>(r: OrbitResult<T>) -> Result<T, String> {
    r.map_err(|e| match e {
        OrbitError::InvalidInput(_) => "InvalidInput".to_string(),
        other => format!("unexpected error: {other}"),
    })
}

fn norm_acquire(a: Acquire) -> Acquire {
    match a {
        Acquire::Acquired(l) => Acquire::Acquired(without_revision(l)),
        Acquire::Held(l) => Acquire::Held(without_revision(l)),
    }
}

fn norm_renew(r: Renew) -> Renew {
    match r {
        Renew::Renewed(l) => Renew::Renewed(without_revision(l)),
        Renew::Lost(l) => Renew::Lost(l.map(without_revision)),
    }
}

/// The store's contents as its change feed tells them: the events from the store's start,
/// replayed onto an empty map.
struct Followed {
    watch: LeaseWatch,
    leases: BTreeMap<AddressableReference, AddressableLease>,
    last: u64,
}

impl Followed {
    async fn start(ctx: &Ctx) -> Result<Followed, TestCaseError> {
        let last = fail(ctx.store.current_revision().await, "current_revision")?;
        Ok(Followed {
            watch: fail(ctx.store.watch(last).await, "watch")?,
            leases: BTreeMap::new(),
            last,
        })
    }

    fn apply(&mut self, events: &[LeaseEvent]) {
        self.leases = follow::replay(std::mem::take(&mut self.leases), events);
        if let Some(e) = events.last() {
            self.last = e.revision;
        }
    }

    /// Reads the events up to the store's current revision (a store with revisions of its
    /// own: exactly that many are owed).
    async fn catch_up(&mut self, ctx: &Ctx) -> Result<(), TestCaseError> {
        let target = fail(ctx.store.current_revision().await, "current_revision")?;
        while self.last < target {
            let event = match tokio::time::timeout(Duration::from_secs(10), self.watch.next()).await
            {
                Ok(Some(Ok(event))) => event,
                other => {
                    return Err(TestCaseError::fail(format!(
                        "the feed stopped before revision {target}: {other:?}"
                    )));
                }
            };
            self.apply(&[event]);
        }
        Ok(())
    }

    /// Reads events until the followed contents equal the model's (each within the time an
    /// owed event gets), then until the feed is quiet: for a backend whose revisions are
    /// shared, where the number of events owed is not known.
    async fn follow_to(&mut self, model: &Model) -> Result<(), TestCaseError> {
        while self.differs(model) {
            match tokio::time::timeout(follow::OWED, self.watch.next()).await {
                Ok(Some(Ok(event))) => self.apply(&[event]),
                other => {
                    return Err(TestCaseError::fail(format!(
                        "the feed stopped short of the model: {other:?}"
                    )));
                }
            }
        }
        let rest = follow::drain(&mut self.watch).await;
        self.apply(&rest);
        Ok(())
    }

    fn differs(&self, model: &Model) -> bool {
        let followed = self.leases.values().cloned().map(without_revision);
        let expected = model.leases.values().cloned().map(without_revision);
        !followed.eq(expected)
    }

    /// Whether the followed contents equal the model's (revisions cleared).
    fn check(&self, step: usize, op: &Op, model: &Model) -> Result<(), TestCaseError> {
        let followed: Vec<_> = self
            .leases
            .values()
            .cloned()
            .map(without_revision)
            .collect();
        let expected: Vec<_> = model
            .leases
            .values()
            .cloned()
            .map(without_revision)
            .collect();
        if followed != expected {
            return Err(TestCaseError::fail(format!(
                "step {step} {op:?}: the change feed replays to {followed:?}, the model holds {expected:?}"
            )));
        }
        Ok(())
    }
}

fn fail<T>(r: OrbitResult<T>, what: &str) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

async fn run_sequence(b: Backend, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut ctx = Ctx::new(b).await;
    let mut model = Model::default();
    let mut last_revision = 0u64;
    let mut followed = Followed::start(&ctx).await?;
    for (step, op) in ops.iter().enumerate() {
        let now = ctx.now();
        let mk = |r: u32, n: u32, ttl: u64| lease_at(reference(r), node(n), now, ttl);
        let s = &ctx.store;
        match op {
            Op::Store { r, n, ttl } => {
                let l = mk(*r, *n, *ttl);
                same(
                    step,
                    op,
                    outcome(model.store(&l, now)),
                    outcome(s.store_lease(&l).await),
                )?;
            }
            Op::StoreBatch(items) => {
                let ls: Vec<_> = items.iter().map(|&(r, n, ttl)| mk(r, n, ttl)).collect();
                same(
                    step,
                    op,
                    outcome(model.store_all(&ls, now)),
                    outcome(s.store_leases(&ls).await),
                )?;
            }
            Op::Get(r) => {
                let real = outcome(s.get_lease(&reference(*r)).await);
                same(
                    step,
                    op,
                    Ok(model.get(&reference(*r)).map(without_revision)),
                    real.map(|o| o.map(without_revision)),
                )?;
            }
            Op::Remove(r) => {
                same(
                    step,
                    op,
                    Ok(model.remove(&reference(*r))),
                    outcome(s.remove_lease(&reference(*r)).await),
                )?;
            }
            Op::List(n) => {
                let mut real = outcome(s.list_node_leases(&node(*n)).await)
                    .map_err(TestCaseError::fail)?
                    .into_iter()
                    .map(without_revision)
                    .collect::<Vec<_>>();
                real.sort_by(|a, b| a.reference.cmp(&b.reference));
                let expected: Vec<_> = model
                    .list(&node(*n))
                    .into_iter()
                    .map(without_revision)
                    .collect();
                same(step, op, expected, real)?;
            }
            Op::Cleanup => {
                same(
                    step,
                    op,
                    Ok(model.cleanup(now)),
                    outcome(s.cleanup_expired_leases().await),
                )?;
            }
            Op::RemoveNode(n) => {
                same(
                    step,
                    op,
                    outcome(model.remove_node(&node(*n))),
                    outcome(s.remove_node_leases(&node(*n)).await),
                )?;
            }
            Op::Acquire { r, n, ttl } => {
                let l = mk(*r, *n, *ttl);
                let real = outcome(s.acquire_lease(&l).await);
                if let Ok(Acquire::Acquired(got)) = &real {
                    prop_assert!(
                        got.revision > last_revision,
                        "step {step}: revision {} not above {last_revision}",
                        got.revision
                    );
                    last_revision = got.revision;
                }
                same(
                    step,
                    op,
                    outcome(model.acquire(&l, now)).map(norm_acquire),
                    real.map(norm_acquire),
                )?;
            }
            Op::Renew { r, n, ttl, stale } => {
                let (r, owner) = (reference(*r), node(*n));
                let expires = now.saturating_add(Duration::from_millis(*ttl));
                let rev_of =
                    |l: Option<AddressableLease>| l.map_or(1, |l| l.revision) - u64::from(*stale);
                let model_rev = rev_of(model.get(&r));
                let real_rev = rev_of(outcome(s.get_lease(&r).await).map_err(TestCaseError::fail)?);
                let expected = outcome(model.renew(&r, &owner, model_rev, expires, expires, now));
                let real = outcome(s.renew_lease(&r, &owner, real_rev, expires, expires).await);
                if let Ok(Renew::Renewed(got)) = &real {
                    prop_assert!(
                        got.revision > last_revision,
                        "step {step}: revision {} not above {last_revision}",
                        got.revision
                    );
                    last_revision = got.revision;
                }
                same(step, op, expected.map(norm_renew), real.map(norm_renew))?;
            }
            Op::Release { r, n, stale } => {
                let (r, owner) = (reference(*r), node(*n));
                let rev_of =
                    |l: Option<AddressableLease>| l.map_or(1, |l| l.revision) - u64::from(*stale);
                let model_rev = rev_of(model.get(&r));
                let real_rev = rev_of(outcome(s.get_lease(&r).await).map_err(TestCaseError::fail)?);
                same(
                    step,
                    op,
                    Ok(model.release(&r, &owner, model_rev)),
                    outcome(s.release_lease(&r, &owner, real_rev).await),
                )?;
            }
            Op::Advance(ms) => ctx.advance(*ms),
            Op::Reopen => {
                if ctx.backend.capabilities.durable {
                    ctx.reopen().await;
                    // The old watch ended with the store; the feed resumes after reopen.
                    followed.watch = fail(ctx.store.watch(followed.last).await, "watch")?;
                }
            }
        }
        if follow::own_revisions(b) {
            followed.catch_up(&ctx).await?;
            followed.check(step, op, &model)?;
        }
    }
    // A backend whose revisions are shared: once, at the end (each check waits for quiet).
    if !follow::own_revisions(b) {
        followed.follow_to(&model).await?;
        followed.check(ops.len(), &Op::Reopen, &model)?;
    }
    ctx.store
        .shutdown()
        .await
        .map_err(|e| TestCaseError::fail(format!("shutdown: {e}")))?;
    Ok(())
}

/// Random operation sequences agree with the [`Model`] (proptest, shrinking on failure).
pub async fn model_based_random_operations(b: Backend) {
    let cases = std::env::var("ORBIT_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let result = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner.run(&proptest::collection::vec(op_strategy(), 1..60), |ops| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            rt.block_on(run_sequence(b, ops))
        })
    })
    .await
    .expect("model runner panicked");
    if let Err(e) = result {
        panic!("{}: model test failed: {e}", b.name);
    }
}
