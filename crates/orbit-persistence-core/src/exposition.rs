//! A provider's metrics and health in the Prometheus text exposition format (version 0.0.4),
//! encoded by `prometheus-client`, the Prometheus project's own Rust client.
//!
//! Why that crate, and why only for encoding: the counters stay in each provider's
//! [`crate::metrics::MetricsRecorder`] (relaxed atomics, no registry lookups, no global
//! recorder), and a scrape turns one [`PersistenceMetrics`] snapshot into text. A library must
//! not install a process-wide recorder behind its user's back (the `metrics` facade's model),
//! and a snapshot costs the hot path nothing.
//!
//! Every metric is named `orbit_persistence_*` and labelled `backend`; the names are the
//! constants below, so alert rules and dashboards can be checked against them.

use std::borrow::Cow;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::{HistogramSnapshot, PersistenceMetrics, ProviderHealth};

/// The prefix of every metric.
pub const PREFIX: &str = "orbit_persistence";
/// The `Content-Type` of [`encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Counter: read operations served (get, list).
pub const READS: &str = "orbit_persistence_reads_total";
/// Counter: leases written by acknowledged writes.
pub const LEASE_WRITES: &str = "orbit_persistence_lease_writes_total";
/// Counter: conditional operations that lost.
pub const CONFLICTS: &str = "orbit_persistence_conflicts_total";
/// Counter: expired leases removed by cleanup.
pub const EXPIRED_REMOVED: &str = "orbit_persistence_expired_removed_total";
/// Counter: log appends (group-commit batches).
pub const WRITE_BATCHES: &str = "orbit_persistence_write_batches_total";
/// Counter: fdatasync calls of the write path.
pub const FSYNCS: &str = "orbit_persistence_fsyncs_total";
/// Counter: times writers waited for background work.
pub const WRITE_STALLS: &str = "orbit_persistence_write_stalls_total";
/// Gauge: leases stored.
pub const LEASES: &str = "orbit_persistence_leases";
/// Gauge: the highest revision assigned.
pub const REVISION: &str = "orbit_persistence_revision";
/// Gauge: bytes of the data directory on disk.
pub const DISK_BYTES: &str = "orbit_persistence_disk_bytes";
/// Gauge: approximate bytes of memory held.
pub const MEMORY_BYTES: &str = "orbit_persistence_memory_bytes";
/// Gauge: repairs recovery made when the store opened.
pub const RECOVERY_ACTIONS: &str = "orbit_persistence_recovery_actions";
/// Gauge, label `status` (healthy, degraded, unhealthy): 1 for the current one.
pub const HEALTH: &str = "orbit_persistence_health";
/// Histogram: read latency.
pub const READ_DURATION: &str = "orbit_persistence_read_duration_seconds";
/// Histogram: write latency, until acknowledged.
pub const WRITE_DURATION: &str = "orbit_persistence_write_duration_seconds";
/// Gauge, label `gauge`: the engine's own gauges (RocksDB properties, LSM levels, ...).
pub const ENGINE: &str = "orbit_persistence_engine";
/// Gauge: bytes free for the store on its data directory's file system.
pub const DISK_FREE_BYTES: &str = "orbit_persistence_disk_free_bytes";
/// Histogram: each group-commit log write, append plus fdatasync when it syncs.
pub const LOG_WRITE_DURATION: &str = "orbit_persistence_log_write_duration_seconds";
/// Histogram: requests per group-commit batch.
pub const BATCH_SIZE: &str = "orbit_persistence_batch_size";

/// Every metric name [`encode`] writes (histograms by their base name).
pub const NAMES: [&str; 19] = [
    READS,
    LEASE_WRITES,
    CONFLICTS,
    EXPIRED_REMOVED,
    WRITE_BATCHES,
    FSYNCS,
    WRITE_STALLS,
    LEASES,
    REVISION,
    DISK_BYTES,
    MEMORY_BYTES,
    RECOVERY_ACTIONS,
    HEALTH,
    READ_DURATION,
    WRITE_DURATION,
    ENGINE,
    DISK_FREE_BYTES,
    LOG_WRITE_DURATION,
    BATCH_SIZE,
];

/// An alerting rule on these metrics: what `deploy/monitoring/` ships (as a Prometheus rule
/// file and a PrometheusRule), built from the metric names above so a renamed metric renames
/// its alerts too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The alert's name.
    pub name: &'static str,
    /// Its PromQL condition.
    pub expr: String,
    /// How long the condition holds before the alert fires (Prometheus duration).
    pub hold: &'static str,
    /// `critical` (act now) or `warning` (act soon).
    pub severity: &'static str,
    /// One line for the person paged.
    pub summary: &'static str,
}

/// Free bytes under which [`alerts`]'s disk alert fires.
pub const DISK_FREE_ALERT_BYTES: u64 = 2 << 30;
/// p99 of the log write (append + fdatasync) above which the slow-disk alert fires, in seconds.
pub const LOG_WRITE_P99_ALERT_SECONDS: f64 = 0.1;

/// The alerts `deploy/monitoring/` ships.
pub fn alerts() -> Vec<Alert> {
    vec![
        Alert {
            name: "OrbitPersistenceUnhealthy",
            expr: format!("{HEALTH}{{status=\"unhealthy\"}} == 1"),
            hold: "1m",
            severity: "critical",
            summary: "A lease store is unhealthy (closed, poisoned after a failed fsync, or its etcd cluster has no leader): it refuses writes, so actors cannot be placed.",
        },
        Alert {
            name: "OrbitPersistenceDiskAlmostFull",
            expr: format!("{DISK_FREE_BYTES} < {DISK_FREE_ALERT_BYTES} and {DISK_BYTES} > 0"),
            hold: "5m",
            severity: "warning",
            summary: "Under 2 GiB free on a lease store's disk: a full disk poisons the store.",
        },
        Alert {
            name: "OrbitPersistenceLogWriteSlow",
            expr: format!(
                "histogram_quantile(0.99, sum by (le, backend, instance) (rate({LOG_WRITE_DURATION}_bucket[5m]))) > {LOG_WRITE_P99_ALERT_SECONDS}"
            ),
            hold: "10m",
            severity: "warning",
            summary: "The p99 of a lease store's log write (append and fdatasync) is over 100 ms: every durable write waits for it.",
        },
        Alert {
            name: "OrbitPersistenceWriteStalls",
            expr: format!("rate({WRITE_STALLS}[5m]) > 0"),
            hold: "5m",
            severity: "warning",
            summary: "Writers of a lease store keep waiting for background work (flush, compaction, checkpoint) to catch up.",
        },
    ]
}

/// [`alerts`] as a Prometheus rule file (YAML), one group `orbit-persistence`.
pub fn rules_yaml() -> String {
    let mut out = String::from("groups:\n- name: orbit-persistence\n  rules:\n");
    for alert in alerts() {
        out.push_str(&format!(
            "  - alert: {}\n    expr: {}\n    for: {}\n    labels:\n      severity: {}\n    annotations:\n      summary: {}\n",
            alert.name,
            yaml_string(&alert.expr),
            alert.hold,
            alert.severity,
            yaml_string(alert.summary),
        ));
    }
    out
}

/// `s` as a YAML double-quoted scalar.
fn yaml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Latency buckets exported: up to 2^27 µs (about 134 s), then `+Inf`; the recorder's longer
/// buckets would only add empty series.
const MAX_BUCKET_US: u64 = 1 << 27;

/// `metrics` and `health` of a `backend` store, as Prometheus text.
pub fn encode(
    backend: &str,
    metrics: &PersistenceMetrics,
    health: &ProviderHealth,
) -> Result<String, std::fmt::Error> {
    let labels = [(Cow::Borrowed("backend"), Cow::Owned(backend.to_string()))];
    // The names below carry the prefix themselves: one place to grep for each.
    let mut registry = Registry::with_labels(labels.into_iter());
    registry.register_collector(Box::new(Snapshot {
        metrics: metrics.clone(),
        health: health.clone(),
    }));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// One scrape's values.
#[derive(Debug)]
struct Snapshot {
    metrics: PersistenceMetrics,
    health: ProviderHealth,
}

/// `name` without the `_total` the encoder appends to a counter.
fn counter_base(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// `name` without the unit suffix the encoder appends.
fn seconds_base(name: &str) -> &str {
    name.strip_suffix("_seconds").unwrap_or(name)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.metrics;
        let counters = [
            (READS, "Read operations served (get, list).", m.reads),
            (
                LEASE_WRITES,
                "Leases written by acknowledged writes (each lease of a batch counts).",
                m.writes,
            ),
            (
                CONFLICTS,
                "Conditional operations that lost (acquire found the lease held, a stale renew or release).",
                m.conflicts,
            ),
            (
                EXPIRED_REMOVED,
                "Expired leases removed by cleanup.",
                m.expired_removed,
            ),
            (
                WRITE_BATCHES,
                "Log appends (group-commit batches).",
                m.write_batches,
            ),
            (FSYNCS, "fdatasync calls of the write path.", m.syncs),
            (
                WRITE_STALLS,
                "Times writers waited for background work.",
                m.write_stalls,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                counter_base(name),
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                LEASES,
                "Leases stored (expired ones not yet cleaned up included).",
                m.lease_count,
            ),
            (REVISION, "The highest revision assigned.", m.last_revision),
            (
                DISK_BYTES,
                "Bytes of the data directory on disk (0: no directory).",
                m.disk_bytes,
            ),
            (
                MEMORY_BYTES,
                "Approximate bytes of memory held by the store.",
                m.memory_bytes,
            ),
            (
                DISK_FREE_BYTES,
                "Bytes free for the store on its data directory's file system (0: no directory).",
                m.disk_free_bytes,
            ),
            (
                RECOVERY_ACTIONS,
                "Repairs recovery made when the store opened (0 after a clean shutdown).",
                m.recovery_actions,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let current = self.health.status();
        let mut health = encoder.encode_descriptor(
            HEALTH,
            "The store's health: 1 for its current status, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for status in ProviderHealth::STATUSES {
            let labels = [("status", status)];
            ConstGauge::new(i64::from(status == current)).encode(health.encode_family(&labels)?)?;
        }
        for (name, help, histogram) in [
            (READ_DURATION, "Latency of reads.", &m.read_histogram),
            (
                WRITE_DURATION,
                "Latency of writes, until acknowledged.",
                &m.write_histogram,
            ),
            (
                LOG_WRITE_DURATION,
                "Duration of each group-commit log write: the append, and its fdatasync when the batch syncs (disk engines).",
                &m.log_write_histogram,
            ),
        ] {
            let buckets = seconds_buckets(histogram);
            encoder
                .encode_descriptor(
                    seconds_base(name),
                    help,
                    Some(&Unit::Seconds),
                    MetricType::Histogram,
                )?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_us as f64 / 1e6,
                    histogram.count,
                    &buckets,
                    None,
                )?;
        }
        let sizes = own_counts(&m.batch_size_histogram, u64::MAX, 1.0);
        encoder
            .encode_descriptor(
                BATCH_SIZE,
                "Requests per group-commit batch (disk engines).",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                m.batch_size_histogram.sum_us as f64,
                m.batch_size_histogram.count,
                &sizes,
                None,
            )?;
        if !m.engine.is_empty() {
            let mut engine = encoder.encode_descriptor(
                ENGINE,
                "The engine's own gauges, by name (see the backend's documentation).",
                None,
                MetricType::Gauge,
            )?;
            for (name, value) in &m.engine {
                let labels = [("gauge", name.as_str())];
                ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX))
                    .encode(engine.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The histogram's buckets in seconds, up to [`MAX_BUCKET_US`], each with its own count (the
/// encoder sums them up and adds `+Inf` from the total).
fn seconds_buckets(histogram: &HistogramSnapshot) -> Vec<(f64, u64)> {
    own_counts(histogram, MAX_BUCKET_US, 1e6)
}

/// The buckets of `histogram` with bounds up to `max`, each bound divided by `unit` and each
/// with its own (not cumulative) count, as the encoder takes them.
fn own_counts(histogram: &HistogramSnapshot, max: u64, unit: f64) -> Vec<(f64, u64)> {
    let mut below = 0;
    histogram
        .buckets
        .iter()
        // The last bucket (u64::MAX) is +Inf, which the encoder adds itself.
        .filter(|(bound, _)| *bound <= max && *bound != u64::MAX)
        .map(|&(bound, cumulative)| {
            let own = cumulative - below;
            below = cumulative;
            (bound as f64 / unit, own)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricsRecorder;
    use std::time::Duration;

    #[test]
    fn every_metric_an_alert_uses_is_one_the_exposition_writes() {
        let known = |word: &str| {
            NAMES.iter().any(|name| {
                word == *name
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| word.strip_suffix(suffix) == Some(name))
            })
        };
        for alert in alerts() {
            let words = alert
                .expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("orbit_persistence"));
            let mut any = false;
            for word in words {
                assert!(known(word), "{}: {word} is not a metric", alert.name);
                any = true;
            }
            assert!(any, "{} uses no metric of ours", alert.name);
        }
        let rules = rules_yaml();
        assert_eq!(rules.matches("- alert: ").count(), alerts().len());
        assert!(
            rules.contains("expr: \"orbit_persistence_health{status=\\\"unhealthy\\\"} == 1\""),
            "{rules}"
        );
    }

    #[test]
    fn every_name_is_written_with_the_backend_label_and_histograms_are_cumulative() {
        let recorder = MetricsRecorder::default();
        for us in [3, 3, 700, 5_000_000] {
            recorder.read_latency.record(Duration::from_micros(us));
        }
        MetricsRecorder::add(&recorder.reads, 4);
        let mut metrics = recorder.snapshot();
        metrics.engine.insert("level-0-tables".into(), 3);
        let text = encode(
            "lsm_tree",
            &metrics,
            &ProviderHealth::Degraded {
                reason: "compaction debt".into(),
            },
        )
        .unwrap();
        for name in NAMES {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing:\n{text}"
            );
        }
        assert!(
            text.contains("orbit_persistence_reads_total{backend=\"lsm_tree\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("orbit_persistence_health{backend=\"lsm_tree\",status=\"degraded\"} 1\n")
        );
        assert!(
            text.contains("orbit_persistence_health{backend=\"lsm_tree\",status=\"healthy\"} 0\n")
        );
        assert!(text.contains(
            "orbit_persistence_engine{backend=\"lsm_tree\",gauge=\"level-0-tables\"} 3\n"
        ));
        // 3 µs falls in the bucket up to 3 µs; 700 µs up to 1023 µs; 5 s up to 8.39 s.
        let bucket = |le: &str| {
            let line = format!(
                "orbit_persistence_read_duration_seconds_bucket{{backend=\"lsm_tree\",le=\"{le}\"}} "
            );
            let at = text.find(&line).unwrap_or_else(|| panic!("{line}\n{text}"));
            text[at + line.len()..].lines().next().unwrap().to_string()
        };
        assert_eq!(bucket("3e-06"), "2");
        assert_eq!(bucket("0.001023"), "3");
        assert_eq!(bucket("8.388607"), "4");
        assert_eq!(bucket("+Inf"), "4");
        assert!(
            text.contains(
                "orbit_persistence_read_duration_seconds_count{backend=\"lsm_tree\"} 4\n"
            )
        );
        assert!(
            text.contains(
                "orbit_persistence_read_duration_seconds_sum{backend=\"lsm_tree\"} 5.000706\n"
            ),
            "{text}"
        );
    }
}
