//! Health and metrics reported by every provider, and the lock-free recorder backends use to
//! collect them without adding contention to the hot path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::OrbitResult;

/// Whether a provider can serve requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderHealth {
    /// Serving reads and writes normally.
    Healthy,
    /// Serving, but something needs attention (write stalls, compaction debt, near a limit).
    Degraded {
        /// What is wrong.
        reason: String,
    },
    /// Not serving writes (poisoned, closed, unreachable).
    Unhealthy {
        /// What is wrong.
        reason: String,
    },
}

impl ProviderHealth {
    /// Every status, in order of severity: the names [`ProviderHealth::status`] gives.
    pub const STATUSES: [&'static str; 3] = ["healthy", "degraded", "unhealthy"];

    /// The status's name, as an exporter shows it: `healthy`, `degraded` or `unhealthy`.
    pub fn status(&self) -> &'static str {
        match self {
            ProviderHealth::Healthy => Self::STATUSES[0],
            ProviderHealth::Degraded { .. } => Self::STATUSES[1],
            ProviderHealth::Unhealthy { .. } => Self::STATUSES[2],
        }
    }

    /// What is wrong, unless healthy.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ProviderHealth::Healthy => None,
            ProviderHealth::Degraded { reason } | ProviderHealth::Unhealthy { reason } => {
                Some(reason)
            }
        }
    }
}

/// Latency percentiles of one kind of operation, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Operations measured.
    pub count: u64,
    /// Median, rounded up to the histogram bucket bound.
    pub p50_us: u64,
    /// 99th percentile, rounded up to the histogram bucket bound.
    pub p99_us: u64,
    /// Largest observed.
    pub max_us: u64,
}

/// A latency histogram as recorded: cumulative counts by upper bound, their count and sum, as a
/// Prometheus histogram carries them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Operations measured.
    pub count: u64,
    /// Their total duration, in microseconds.
    pub sum_us: u64,
    /// (upper bound in microseconds, operations at or under it), ascending; the last bound is
    /// `u64::MAX` (Prometheus's `+Inf`), so its count is `count`.
    pub buckets: Vec<(u64, u64)>,
}

/// A snapshot of a provider's counters and sizes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PersistenceMetrics {
    /// Leases stored now (expired but not cleaned up included).
    pub lease_count: u64,
    /// Read operations served (get, list).
    pub reads: u64,
    /// Lease changes written (a put or a removal of any cause; each lease of a batch counts;
    /// a conditional operation that lost writes none).
    pub writes: u64,
    /// Conditional operations that lost (acquire found it held, stale renew or release).
    pub conflicts: u64,
    /// Leases removed by cleanup.
    pub expired_removed: u64,
    /// Log appends (group-commit batches).
    pub write_batches: u64,
    /// fdatasync calls of the write path.
    pub syncs: u64,
    /// Times writers were stalled waiting for background work.
    pub write_stalls: u64,
    /// Bytes on disk of the data directory (0 for memory).
    pub disk_bytes: u64,
    /// Approximate bytes of memory held by the store's data structures.
    pub memory_bytes: u64,
    /// Highest revision assigned.
    pub last_revision: u64,
    /// Actions recovery took when the store opened (see
    /// [`crate::PersistenceProvider::recovery_report`]); 0 after a clean shutdown.
    #[serde(default)]
    pub recovery_actions: u64,
    /// Latency of reads.
    pub read_latency: LatencySummary,
    /// Latency of writes, until acknowledged.
    pub write_latency: LatencySummary,
    /// Latency of reads, every bucket (for an exporter).
    #[serde(default)]
    pub read_histogram: HistogramSnapshot,
    /// Latency of writes, every bucket (for an exporter).
    #[serde(default)]
    pub write_histogram: HistogramSnapshot,
    /// Duration of each group-commit log write: the append and, under `sync = "always"`, its
    /// fdatasync (disk engines; empty elsewhere).
    #[serde(default)]
    pub log_write_histogram: HistogramSnapshot,
    /// Requests per group-commit batch (the histogram's values are counts, not microseconds).
    #[serde(default)]
    pub batch_size_histogram: HistogramSnapshot,
    /// Bytes free for this user on the file system of the data directory (0: no directory, or
    /// not known).
    #[serde(default)]
    pub disk_free_bytes: u64,
    /// Backend-specific gauges by name, e.g. RocksDB's `estimate-pending-compaction-bytes`.
    pub engine: BTreeMap<String, u64>,
}

const BUCKETS: usize = 40;
/// Shards of a [`LatencyHistogram`]: each thread records into its own, so concurrent readers and
/// writers never bounce one cache line between cores.
const SHARDS: usize = 8;

/// The histogram of the threads that record into one shard: on its own cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct HistogramShard {
    buckets: [AtomicU64; BUCKETS],
    max_us: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for HistogramShard {
    fn default() -> Self {
        HistogramShard {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// The shard this thread records into: threads take shards in turn as they first record.
fn shard_of_this_thread() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // A const-initialized thread local is a plain TLS read: no lazy-init state on the hot path.
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|shard| match shard.get() {
        usize::MAX => {
            let assigned = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(assigned);
            assigned
        }
        assigned => assigned,
    })
}

/// A histogram of durations in power-of-two microsecond buckets: record is three relaxed
/// atomic updates on the calling thread's own shard (no cache line shared with another
/// recording thread), percentiles are exact to within a factor of two, the sum is exact.
#[derive(Debug)]
pub struct LatencyHistogram {
    shards: Box<[HistogramShard]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            shards: (0..SHARDS).map(|_| HistogramShard::default()).collect(),
        }
    }
}

impl LatencyHistogram {
    /// Records one operation of duration `d`.
    pub fn record(&self, d: Duration) {
        self.record_value(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one value (the same power-of-two buckets; a count, such as a batch's size,
    /// rather than microseconds).
    pub fn record_value(&self, us: u64) {
        let shard = &self.shards[shard_of_this_thread()];
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        shard.buckets[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        shard.max_us.fetch_max(us, Ordering::Relaxed);
        shard.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Each bucket's count, summed over the shards.
    fn counts(&self) -> [u64; BUCKETS] {
        let mut counts = [0; BUCKETS];
        for shard in self.shards.iter() {
            for (count, bucket) in counts.iter_mut().zip(&shard.buckets) {
                *count += bucket.load(Ordering::Relaxed);
            }
        }
        counts
    }

    fn max_us(&self) -> u64 {
        let max = |s: &HistogramShard| s.max_us.load(Ordering::Relaxed);
        self.shards.iter().map(max).max().unwrap_or(0)
    }

    /// Every bucket, cumulative, with the count and sum.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut seen = 0;
        let buckets: Vec<(u64, u64)> = self
            .counts()
            .iter()
            .enumerate()
            .map(|(i, count)| {
                seen += count;
                // Bucket i holds durations in [2^(i-1), 2^i) µs: at most 2^i - 1; the last
                // holds everything longer.
                let bound = match i {
                    0 => 0,
                    i if i == BUCKETS - 1 => u64::MAX,
                    i => (1u64 << i) - 1,
                };
                (bound, seen)
            })
            .collect();
        let sum = |s: &HistogramShard| s.sum_us.load(Ordering::Relaxed);
        HistogramSnapshot {
            count: seen,
            sum_us: self.shards.iter().map(sum).fold(0, u64::saturating_add),
            buckets,
        }
    }

    /// Count, p50, p99 and max of what was recorded.
    pub fn summary(&self) -> LatencySummary {
        let counts = self.counts();
        let count: u64 = counts.iter().sum();
        let max_us = self.max_us();
        let percentile = |p: f64| -> u64 {
            if count == 0 {
                return 0;
            }
            let rank = ((count as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    // Bucket i holds durations in [2^(i-1), 2^i); report its upper bound.
                    let bound = if i == 0 { 0 } else { (1u64 << i) - 1 };
                    return bound.min(max_us);
                }
            }
            max_us
        };
        LatencySummary {
            count,
            p50_us: percentile(0.50),
            p99_us: percentile(0.99),
            max_us,
        }
    }
}

/// The counters every provider keeps; `snapshot` fills the shared part of
/// [`PersistenceMetrics`], the backend adds sizes.
#[derive(Debug, Default)]
pub struct MetricsRecorder {
    /// See [`PersistenceMetrics::reads`].
    pub reads: AtomicU64,
    /// See [`PersistenceMetrics::writes`].
    pub writes: AtomicU64,
    /// See [`PersistenceMetrics::conflicts`].
    pub conflicts: AtomicU64,
    /// See [`PersistenceMetrics::expired_removed`].
    pub expired_removed: AtomicU64,
    /// See [`PersistenceMetrics::write_stalls`].
    pub write_stalls: AtomicU64,
    /// See [`PersistenceMetrics::read_latency`].
    pub read_latency: LatencyHistogram,
    /// See [`PersistenceMetrics::write_latency`].
    pub write_latency: LatencyHistogram,
}

impl MetricsRecorder {
    /// Counts `n` more into `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one read that started at `start`.
    pub fn read_done(&self, start: Instant) {
        Self::add(&self.reads, 1);
        self.read_latency.record(start.elapsed());
    }

    /// Records the latency of a write that started at `start`, and counts the lease changes
    /// its outcome made (`written`; none if it failed): a conditional operation that lost
    /// wrote nothing.
    pub fn write_done<T>(
        &self,
        start: Instant,
        result: &OrbitResult<T>,
        written: impl FnOnce(&T) -> u64,
    ) {
        self.write_latency.record(start.elapsed());
        if let Ok(outcome) = result {
            Self::add(&self.writes, written(outcome));
        }
    }

    /// Counts one conditional operation that lost.
    pub fn conflict(&self) {
        Self::add(&self.conflicts, 1);
    }

    /// The counters as a [`PersistenceMetrics`] with sizes left at zero.
    pub fn snapshot(&self) -> PersistenceMetrics {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PersistenceMetrics {
            reads: load(&self.reads),
            writes: load(&self.writes),
            conflicts: load(&self.conflicts),
            expired_removed: load(&self.expired_removed),
            write_stalls: load(&self.write_stalls),
            read_latency: self.read_latency.summary(),
            write_latency: self.write_latency.summary(),
            read_histogram: self.read_latency.snapshot(),
            write_histogram: self.write_latency.snapshot(),
            ..PersistenceMetrics::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_recorded_from_many_threads_adds_every_shard_up() {
        let h = LatencyHistogram::default();
        std::thread::scope(|scope| {
            for t in 0..(2 * SHARDS as u64) {
                let h = &h;
                scope.spawn(move || {
                    for i in 0..1_000 {
                        h.record_value(t * 1_000 + i);
                    }
                });
            }
        });
        let threads = 2 * SHARDS as u64;
        let n = threads * 1_000;
        let snapshot = h.snapshot();
        assert_eq!(snapshot.count, n);
        assert_eq!(snapshot.sum_us, n * (n - 1) / 2);
        assert_eq!(snapshot.buckets.last().unwrap().1, n);
        let summary = h.summary();
        assert_eq!((summary.count, summary.max_us), (n, n - 1));
    }

    #[test]
    fn histogram_percentiles_bound_the_samples() {
        let h = LatencyHistogram::default();
        assert_eq!(h.summary(), LatencySummary::default());
        for _ in 0..98 {
            h.record(Duration::from_micros(10));
        }
        h.record(Duration::from_micros(1_000));
        h.record(Duration::from_micros(100_000));
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((10..16).contains(&s.p50_us), "{s:?}");
        assert!((1_000..2_048).contains(&s.p99_us), "{s:?}");
        assert_eq!(s.max_us, 100_000);
    }
}
