//! Does sharding let two tasks scale? Loads N leases (docs/benchmark.md key shapes), then runs
//! uniform random `get_lease` from 1 and 2 tasks, and durable-free renews from 1 and 2 tasks.
//! Prints ops/s and the 2-task/1-task ratio (2 cores: the ideal is 2.0).
//!
//! `cargo run --release -p orbit-persistence-memory --example scaling [N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, Key, ManualClock,
    MemoryConfig, NodeId, OrbitResult, Renew, Timestamp,
};
use orbit_persistence_memory::MemoryDirectory;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn reference(i: u64) -> AddressableReference {
    AddressableReference::new(
        format!("ActorType{:02}", i % 16),
        Key::string(format!(
            "actor-{i:012}-{:06x}",
            i.wrapping_mul(0x9e37_79b9) & 0xff_ffff
        )),
    )
}

/// A tiny xorshift so the example needs no RNG dependency; quality is irrelevant here.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn run(
    store: Arc<MemoryDirectory>,
    refs: Arc<Vec<AddressableReference>>,
    tasks: u64,
    ops: u64,
    renew: bool,
) -> OrbitResult<f64> {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, refs) = (store.clone(), refs.clone());
            tokio::spawn(async move {
                let mut rng = 0x2545_f491_4f6c_dd1d ^ (t + 1);
                for _ in 0..ops / tasks {
                    let r = &refs[(next(&mut rng) % refs.len() as u64) as usize];
                    if renew {
                        let l = store.get_lease(r).await?.expect("loaded lease");
                        let e = T0.saturating_add(Duration::from_secs(3_600));
                        if let Renew::Lost(_) =
                            store.renew_lease(r, &l.node_id, l.revision, e, e).await?
                        {
                            // Another task renewed it in between: fine for a throughput run.
                        }
                    } else {
                        store.get_lease(r).await?;
                    }
                }
                OrbitResult::Ok(())
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task panicked")?;
    }
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> OrbitResult<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let store = Arc::new(MemoryDirectory::new(
        &MemoryConfig::default(),
        Arc::new(ManualClock::new(T0)),
    )?);
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|&i| {
                AddressableLease::new(
                    reference(i),
                    NodeId::new(format!("node-{:04}", i % 1_000), "bench"),
                    T0.saturating_add(Duration::from_secs(60)),
                    T0.saturating_add(Duration::from_secs(30)),
                )
            })
            .collect();
        store.store_leases(&batch).await?;
    }
    // Keys are built before timing, as the benchmark does: we measure the store, not format!.
    let refs = Arc::new((0..n).map(reference).collect::<Vec<_>>());
    println!(
        "bulk_load: {:.0} leases/s (N = {n})",
        n as f64 / start.elapsed().as_secs_f64()
    );
    for (what, renew, ops) in [("get", false, 1_000_000), ("get+renew", true, 200_000)] {
        let one = run(store.clone(), refs.clone(), 1, ops, renew).await?;
        let two = run(store.clone(), refs.clone(), 2, ops, renew).await?;
        println!(
            "{what}: 1 task {one:.0}/s, 2 tasks {two:.0}/s, ratio {:.2}",
            two / one
        );
    }
    Ok(())
}
