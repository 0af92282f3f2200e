//! The result of a benchmark run: every figure, the machine it ran on, and its renderings as a
//! Markdown table and JSON (charts: [`crate::chart`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One measured phase: a value per subject (`None` where the phase does not apply, e.g. the
/// reopen of the memory backend).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub phase: String,
    /// The unit of the values.
    pub unit: String,
    /// Whether more is better (rates) or less (times, space).
    pub higher_is_better: bool,
    /// Concurrent tasks, for the rows of a phase run at several concurrency levels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<usize>,
    /// One value per subject of the report, in its order.
    pub values: Vec<Option<f64>>,
}

impl Row {
    /// A row of `values` (one per subject).
    pub fn new(
        phase: impl Into<String>,
        unit: &str,
        higher_is_better: bool,
        values: Vec<Option<f64>>,
    ) -> Row {
        Row {
            phase: phase.into(),
            unit: unit.to_string(),
            higher_is_better,
            tasks: None,
            values,
        }
    }

    /// The same row, tagged with its concurrency.
    pub fn with_tasks(mut self, tasks: usize) -> Row {
        self.tasks = Some(tasks);
        self
    }

    /// The best of the values at `columns` (if any has one).
    fn best_of(&self, columns: impl Iterator<Item = usize>) -> Option<f64> {
        columns
            .filter_map(|i| self.values[i])
            .reduce(|a, b| match self.higher_is_better {
                true => a.max(b),
                false => a.min(b),
            })
    }

    /// How many times better `value` is than `other` (>= 1: `value` is better).
    pub fn ratio(&self, value: f64, other: f64) -> f64 {
        if self.higher_is_better {
            value / other
        } else {
            other / value
        }
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to the process.
    pub nproc: usize,
    /// Total memory, bytes (from `/proc/meminfo`; 0 if unknown).
    pub memory_bytes: u64,
    /// The CPU model (from `/proc/cpuinfo`; empty if unknown).
    pub cpu: String,
    /// OS and kernel release.
    pub os: String,
}

impl Machine {
    /// The facts of this machine.
    pub fn this() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let meminfo = read("/proc/meminfo");
        let memory_kib: u64 = field(&meminfo, "MemTotal")
            .trim_end_matches(" kB")
            .parse()
            .unwrap_or(0);
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_bytes: memory_kib * 1024,
            cpu: field(&read("/proc/cpuinfo"), "model name"),
            os: format!(
                "{} {}",
                std::env::consts::OS,
                read("/proc/sys/kernel/osrelease").trim()
            ),
        }
    }
}

/// Everything a benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run started (RFC 3339, UTC).
    pub date: String,
    /// Leases in the data set.
    pub n: usize,
    /// Whether this was the quick mode (smaller N and fewer gets and repetitions).
    pub quick: bool,
    /// Gets per `get` run.
    pub gets: usize,
    /// Operations per `mixed` run.
    pub mixed_ops: usize,
    /// Runs of each repeatable phase per subject (the best is kept).
    pub reps: usize,
    /// The machine.
    pub machine: Machine,
    /// Versions of this benchmark and of each peer engine.
    pub versions: BTreeMap<String, String>,
    /// The disk's floor: 192-byte appends + fdatasync per second.
    pub floor_append_per_s: f64,
    /// The disk's floor: 4 KiB overwrites + fdatasync per second.
    pub floor_overwrite_per_s: f64,
    /// Column names: our backends first, then peers.
    pub subjects: Vec<String>,
    /// Which subjects are peers.
    pub peers: Vec<bool>,
    /// The measured rows.
    pub rows: Vec<Row>,
}

/// Renders a value with about three significant digits, or `n/a`.
fn cell(v: Option<f64>) -> String {
    match v {
        None => "n/a".to_string(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

impl Report {
    /// The JSON document (pretty-printed).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// Indexes of our subjects and of the peers.
    fn split(&self) -> (Vec<usize>, Vec<usize>) {
        (0..self.subjects.len()).partition(|&i| !self.peers[i])
    }

    /// For each of our subjects and each row: how it compares with the best peer (>= 1: better
    /// than every peer). `None` where either side has no value.
    pub fn ratios_to_best_peer(&self) -> Vec<(usize, Vec<Option<f64>>)> {
        let (ours, peers) = self.split();
        ours.into_iter()
            .map(|i| {
                let ratios = self
                    .rows
                    .iter()
                    .map(|r| {
                        let best_peer = r.best_of(peers.iter().copied())?;
                        Some(r.ratio(r.values[i]?, best_peer))
                    })
                    .collect();
                (i, ratios)
            })
            .collect()
    }

    /// The Markdown report: the setup, then one row per phase, one column per subject, and per
    /// backend of ours its ratio to the best peer.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "# Lease workload benchmark\n");
        let _ = writeln!(
            out,
            "- {}; N = {}{}; gets per run {}, mixed ops {}, best of {} runs per subject in \
             rotating order.",
            self.date,
            self.n,
            if self.quick { " (quick mode)" } else { "" },
            self.gets,
            self.mixed_ops,
            self.reps
        );
        let _ = writeln!(
            out,
            "- Machine: {} CPUs, {:.1} GiB, {}, {}.",
            m.nproc,
            m.memory_bytes as f64 / (1u64 << 30) as f64,
            if m.cpu.is_empty() {
                "CPU unknown"
            } else {
                &m.cpu
            },
            m.os
        );
        let versions: Vec<String> = self
            .versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "- Versions: {}.", versions.join(", "));
        let _ = writeln!(
            out,
            "- Disk floor: {:.0} appends+fdatasync/s, {:.0} 4 KiB overwrites+fdatasync/s.\n",
            self.floor_append_per_s, self.floor_overwrite_per_s
        );
        let ratios = self.ratios_to_best_peer();
        let has_peers = self.peers.iter().any(|&p| p);
        let _ = write!(out, "| phase |");
        for s in &self.subjects {
            let _ = write!(out, " {s} |");
        }
        if has_peers {
            for (i, _) in &ratios {
                let _ = write!(out, " {} vs best peer |", self.subjects[*i]);
            }
        }
        let _ = write!(out, "\n|---|");
        let columns = self.subjects.len() + if has_peers { ratios.len() } else { 0 };
        out.push_str(&"---:|".repeat(columns));
        out.push('\n');
        for (k, r) in self.rows.iter().enumerate() {
            let _ = write!(out, "| {} ({}) |", r.phase, r.unit);
            for v in &r.values {
                let _ = write!(out, " {} |", cell(*v));
            }
            if has_peers {
                for (_, per_row) in &ratios {
                    match per_row[k] {
                        Some(x) => {
                            let _ = write!(out, " {x:.2}x |");
                        }
                        None => out.push_str(" n/a |"),
                    }
                }
            }
            out.push('\n');
        }
        out.push_str(
            "\nRatios: >= 1.00x means better than every peer on that row (for times and space, \
             smaller is better). `n/a`: the phase does not apply (the memory backend keeps \
             nothing across a reopen and uses no disk; etcd keeps its data in its cluster, not a \
             local directory).\n",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            date: "2026-11-25T00:00:00Z".into(),
            n: 10,
            quick: true,
            gets: 1,
            mixed_ops: 1,
            reps: 1,
            machine: Machine::this(),
            versions: BTreeMap::from([("redb".to_string(), "4.6".to_string())]),
            floor_append_per_s: 1.0,
            floor_overwrite_per_s: 1.0,
            subjects: vec![
                "lsm_tree".into(),
                "redb (peer)".into(),
                "fjall (peer)".into(),
            ],
            peers: vec![false, true, true],
            rows: vec![
                Row::new(
                    "bulk",
                    "leases/s",
                    true,
                    vec![Some(200.0), Some(100.0), Some(50.0)],
                ),
                Row::new(
                    "reopen",
                    "ms",
                    false,
                    vec![Some(10.0), Some(40.0), Some(20.0)],
                ),
                Row::new("space", "x", false, vec![None, Some(1.0), Some(2.0)]),
            ],
        }
    }

    #[test]
    fn ratios_compare_with_the_best_peer_in_the_right_direction() {
        let r = report();
        let ratios = r.ratios_to_best_peer();
        assert_eq!(ratios.len(), 1);
        assert_eq!(ratios[0].1, vec![Some(2.0), Some(2.0), None]);
    }

    #[test]
    fn markdown_has_a_row_per_phase_and_marks_missing_values() {
        let md = report().markdown();
        assert!(
            md.contains(
                "| phase | lsm_tree | redb (peer) | fjall (peer) | lsm_tree vs best peer |"
            )
        );
        assert!(
            md.contains("| bulk (leases/s) | 200 | 100 | 50.0 | 2.00x |"),
            "{md}"
        );
        assert!(
            md.contains("| space (x) | n/a | 1.00 | 2.00 | n/a |"),
            "{md}"
        );
    }

    #[test]
    fn json_round_trips_every_value() {
        let v: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        assert_eq!(v["rows"][0]["values"][0], 200.0);
        assert!(v["rows"][2]["values"][0].is_null());
        assert_eq!(v["subjects"][1], "redb (peer)");
        assert!(v["machine"]["nproc"].as_u64().unwrap() >= 1);
    }
}
