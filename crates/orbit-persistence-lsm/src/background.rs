//! The background threads: the flush thread writes the oldest frozen memtable to a level-0
//! table; the compaction thread runs what the strategy (or a full-compaction request) asks
//! for. A failure on either poisons the store ([`Shared::fail`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orbit_persistence_core::{OrbitError, OrbitResult};

use crate::compaction;
use crate::flush;
use crate::shared::Shared;

/// The body of a background thread.
type BackgroundLoop = fn(&Shared);

/// Starts the flush and compaction threads over `shared`.
pub fn spawn(shared: &Arc<Shared>) -> OrbitResult<Vec<JoinHandle<()>>> {
    let loops: [(&str, BackgroundLoop); 2] = [
        ("lsm-flush", flush_loop),
        ("lsm-compaction", compaction_loop),
    ];
    let mut threads = Vec::new();
    for (name, body) in loops {
        let shared_for_thread = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&shared_for_thread))
            .map_err(|e| OrbitError::io("spawn thread", &shared.dir, e))?;
        threads.push(handle);
    }
    Ok(threads)
}

/// The flush thread: flushes the oldest frozen memtable whenever there is one.
fn flush_loop(shared: &Shared) {
    loop {
        let frozen = {
            let mut signals = shared.signals();
            loop {
                if signals.error.is_some() || signals.closing {
                    return;
                }
                if let Some(f) = shared.current().frozen.last() {
                    break Arc::clone(f);
                }
                signals = shared.wait(signals, Duration::from_secs(1));
            }
        };
        if let Err(e) = flush::flush(shared, &frozen) {
            shared.fail("flush", &e);
            return;
        }
        // Free the memtable here, not on whichever thread drops the last state holding it
        // (often the writer): a million small frees stall the thread that does them.
        let deadline = Instant::now() + Duration::from_secs(1);
        while (Arc::strong_count(&frozen) > 1 || Arc::strong_count(&frozen.mem) > 1)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(frozen);
    }
}

/// The compaction thread: runs what the strategy (or a full-compaction request) asks for.
fn compaction_loop(shared: &Shared) {
    loop {
        let (task, full) = {
            let mut signals = shared.signals();
            loop {
                if signals.error.is_some() || signals.closing {
                    return;
                }
                let levels = Arc::clone(&shared.current().levels);
                if signals.full_compactions_requested > signals.full_compactions_done {
                    let target = signals.full_compactions_requested;
                    match compaction::full_compaction(&levels) {
                        Some(t) => break (t, Some(target)),
                        None => {
                            signals.full_compactions_done = target;
                            shared.changed.notify_all();
                            continue;
                        }
                    }
                }
                if let Some(t) = shared.strategy.pick(&levels) {
                    break (t, None);
                }
                signals = shared.wait(signals, Duration::from_secs(1));
            }
        };
        match compaction::job::run(shared, &task) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                shared.fail("compaction", &e);
                return;
            }
        }
        if let Some(target) = full {
            let mut signals = shared.signals();
            signals.full_compactions_done = signals.full_compactions_done.max(target);
            drop(signals);
            shared.changed.notify_all();
        }
    }
}

/// Waits for the freeze asked for by [`Shared::freeze_requested`], then for every frozen
/// memtable to be flushed, then asks for a full compaction and waits for it. Gives up if the
/// writer is poisoned (`writer_poisoned`) before it froze the memtable.
pub fn full_compaction_blocking(
    shared: &Shared,
    writer_poisoned: impl Fn() -> bool,
) -> OrbitResult<()> {
    let mut signals = shared.signals();
    while shared.freeze_requested.load(Ordering::Acquire) || !shared.current().frozen.is_empty() {
        if let Some(e) = &signals.error {
            return Err(OrbitError::Unavailable(format!(
                "lsm background thread: {e}"
            )));
        }
        if signals.closing || writer_poisoned() {
            return Err(OrbitError::Poisoned(
                "the writer stopped before the memtable was frozen".into(),
            ));
        }
        signals = shared.wait(signals, Duration::from_millis(100));
    }
    signals.full_compactions_requested += 1;
    let target = signals.full_compactions_requested;
    shared.changed.notify_all();
    while signals.full_compactions_done < target {
        if let Some(e) = &signals.error {
            return Err(OrbitError::Unavailable(format!(
                "lsm background thread: {e}"
            )));
        }
        if signals.closing {
            return Err(OrbitError::Closed);
        }
        signals = shared.wait(signals, Duration::from_millis(100));
    }
    Ok(())
}
