//! The shipped alert rules (`exposition::rules_yaml`, in `deploy/monitoring/`) under Prometheus's
//! own `promtool`: they load, and each fires on the condition it names. The health and disk
//! alerts are fed the series of a real store's scrape (a closed store; a store on a 512 MiB
//! tmpfs); the slow-disk and write-stall alerts are fed synthetic series, since no test can
//! make this machine's fsync slow on demand.
#![cfg(all(feature = "prometheus", feature = "cowbtree"))]

use std::path::Path;
use std::sync::Arc;

use orbit_persistence::exposition::{self, Alert, alerts};
use orbit_persistence::{BackendType, SystemClock, open};

mod support;

use support::{config, mount, umount};

/// The samples of a scrape as promtool input series, each held for `minutes` minutes.
fn input_series(scrape: &str, minutes: u32) -> String {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            format!("      - series: '{series}'\n        values: '{value}x{minutes}'\n")
        })
        .collect()
}

fn alert(name: &str) -> Alert {
    alerts().into_iter().find(|a| a.name == name).unwrap()
}

/// One promtool test: `series` (input_series entries), and whether `name` fires at
/// `eval_time` with the series labels `labels` (besides its severity).
fn case(series: &str, name: &str, eval_time: &str, labels: Option<&str>) -> String {
    let expected = match labels {
        None => "        exp_alerts: []\n".to_string(),
        Some(labels) => {
            let a = alert(name);
            format!(
                "        exp_alerts:\n          - exp_labels: {{severity: {}, {labels}}}\n            exp_annotations:\n              summary: {:?}\n",
                a.severity, a.summary
            )
        }
    };
    format!(
        "  - interval: 1m\n    input_series:\n{series}    alert_rule_test:\n      - eval_time: {eval_time}\n        alertname: {name}\n{expected}"
    )
}

/// Runs `promtool test rules` on `cases` against the shipped rules; its complaints, if any.
fn promtool_test(dir: &Path, cases: &[String]) -> Result<(), String> {
    std::fs::write(dir.join("rules.yaml"), exposition::rules_yaml()).unwrap();
    let check = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.join("rules.yaml"))
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    if !check.status.success() {
        return Err(String::from_utf8_lossy(&check.stdout).into_owned());
    }
    let tests = format!(
        "rule_files: [rules.yaml]\nevaluation_interval: 1m\ntests:\n{}",
        cases.concat()
    );
    std::fs::write(dir.join("tests.yaml"), &tests).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules", "tests.yaml"])
        .current_dir(dir)
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{}{}\n{tests}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// A cow_btree store in `dir`, opened (and closed, if `close`), and its scrape.
async fn scrape_of_store(dir: &Path, close: bool) -> String {
    let config = config(BackendType::CowBTree, &dir.join("leases"));
    let store = tokio::task::spawn_blocking(move || open(&config, Arc::new(SystemClock)))
        .await
        .unwrap()
        .unwrap();
    if close {
        store.shutdown().await.unwrap();
    }
    let (metrics, health) = (store.metrics().await, store.health_check().await);
    if !close {
        store.shutdown().await.unwrap();
    }
    exposition::encode(BackendType::CowBTree.as_str(), &metrics, &health).unwrap()
}

/// A 512 MiB tmpfs mounted at `dir`, unmounted on drop; `None` where mounting is not allowed.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let at = dir.to_str().unwrap();
        mount(&["-t", "tmpfs", "-o", "size=512m", "tmpfs", at]).then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        umount(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shipped_alert_fires_on_its_condition_and_not_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();

    // A closed store is unhealthy: the alert fires after its minute; an open one is healthy.
    let closed = scrape_of_store(&dir.path().join("closed"), true).await;
    let open = scrape_of_store(&dir.path().join("open"), false).await;
    let unhealthy = "OrbitPersistenceUnhealthy";
    let labels = "backend: cow_btree, status: unhealthy";
    cases.push(case(
        &input_series(&closed, 10),
        unhealthy,
        "5m",
        Some(labels),
    ));
    cases.push(case(&input_series(&closed, 10), unhealthy, "30s", None));
    cases.push(case(&input_series(&open, 10), unhealthy, "5m", None));

    // A store on a 512 MiB file system: under 2 GiB free.
    let small = dir.path().join("small");
    match Tmpfs::mount(&small) {
        Some(_mounted) => {
            let full = scrape_of_store(&small, false).await;
            let series = input_series(&full, 10);
            let labels = "backend: cow_btree";
            cases.push(case(
                &series,
                "OrbitPersistenceDiskAlmostFull",
                "6m",
                Some(labels),
            ));
            cases.push(case(&series, "OrbitPersistenceDiskAlmostFull", "3m", None));
        }
        None => eprintln!("no tmpfs mount here (needs root): the disk alert is not tested"),
    }

    // Synthetic: every log write slower than 131 ms for half an hour; and one that is fast.
    let bucket = "orbit_persistence_log_write_duration_seconds_bucket{backend=\"lsm_tree\"";
    let slow = format!(
        "      - series: '{bucket},le=\"0.131071\"}}'\n        values: '0+0x30'\n      - series: '{bucket},le=\"+Inf\"}}'\n        values: '0+60x30'\n"
    );
    let fast = format!(
        "      - series: '{bucket},le=\"0.000511\"}}'\n        values: '0+60x30'\n      - series: '{bucket},le=\"+Inf\"}}'\n        values: '0+60x30'\n"
    );
    let slow_alert = "OrbitPersistenceLogWriteSlow";
    cases.push(case(&slow, slow_alert, "20m", Some("backend: lsm_tree")));
    cases.push(case(&fast, slow_alert, "20m", None));

    // Synthetic: writers stalled every minute for half an hour; and never.
    let stalls = "orbit_persistence_write_stalls_total{backend=\"lsm_tree\"}";
    let stalled = format!("      - series: '{stalls}'\n        values: '0+3x30'\n");
    let calm = format!("      - series: '{stalls}'\n        values: '0+0x30'\n");
    let stall_alert = "OrbitPersistenceWriteStalls";
    cases.push(case(
        &stalled,
        stall_alert,
        "15m",
        Some("backend: lsm_tree"),
    ));
    cases.push(case(&calm, stall_alert, "15m", None));

    if let Err(problems) = promtool_test(dir.path(), &cases) {
        panic!("promtool test rules:\n{problems}");
    }
}
