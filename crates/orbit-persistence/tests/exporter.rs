//! `/metrics` and `/healthz` of a running store of each local backend, scraped over real HTTP
//! after a known workload: the counters and histogram counts equal what was done, and
//! Prometheus's own `promtool check metrics` accepts the text.
#![cfg(feature = "prometheus")]

use std::collections::BTreeMap;
use std::sync::Arc;

use orbit_persistence::{
    Acquire, AddressableLease, AddressableReference, BackendType, Key, NodeId, PersistenceProvider,
    Renew, Timestamp, compiled_backends, exporter, open,
};

mod support;

use support::{T0, clock, config};

fn lease(i: usize, node: &str) -> AddressableLease {
    let e = Timestamp(T0.0 + 60_000);
    AddressableLease::new(
        AddressableReference::new("Greeter", Key::string(format!("actor-{i}"))),
        NodeId::new(node, "test"),
        e,
        e,
    )
}

/// A GET of `path` from `addr` over HTTP/1.1 (a plain socket, on a blocking thread): status
/// code and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let code = response.split(' ').nth(1).unwrap().parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
        (code, body)
    })
    .await
    .unwrap()
}

/// The samples of a scrape: `name{labels}` to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// `promtool check metrics` on `text`: its complaints, if any.
fn promtool_problems(text: &str) -> Option<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success() || !said.trim().is_empty()).then_some(said)
}

/// What the workload does, and so what the counters must say.
const STORED: usize = 10;
const GETS: usize = 7;
const LISTS: usize = 2;
const RENEWS: usize = 3;
const LOST: usize = 2;

/// Stores, reads, renews and loses a known number of times.
async fn workload(store: &dyn orbit_persistence::AddressableDirectoryProvider) {
    let leases: Vec<AddressableLease> = (0..STORED).map(|i| lease(i, "node-1")).collect();
    store.store_leases(&leases).await.unwrap();
    for i in 0..GETS {
        assert!(
            store
                .get_lease(&leases[i % STORED].reference)
                .await
                .unwrap()
                .is_some()
        );
    }
    for _ in 0..LISTS {
        let listed = store
            .list_node_leases(&NodeId::new("node-1", "test"))
            .await
            .unwrap();
        assert_eq!(listed.len(), STORED);
    }
    let mut held = store
        .get_lease(&leases[0].reference)
        .await
        .unwrap()
        .unwrap();
    for _ in 0..RENEWS {
        let later = Timestamp(held.expires_at.0 + 1_000);
        match store
            .renew_lease(&held.reference, &held.node_id, held.revision, later, later)
            .await
            .unwrap()
        {
            Renew::Renewed(lease) => held = lease,
            other => panic!("{other:?}"),
        }
    }
    // Two that lose: an acquire of a held lease, and a release with a stale revision.
    let thief = lease(0, "node-2");
    assert!(matches!(
        store.acquire_lease(&thief).await.unwrap(),
        Acquire::Held(_)
    ));
    assert!(
        !store
            .release_lease(&held.reference, &held.node_id, held.revision - 1)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_of_each_backend_counts_exactly_what_was_done_and_promtool_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    for backend in compiled_backends() {
        if backend == BackendType::Etcd {
            continue; // needs a cluster
        }
        let config = config(backend, &dir.path().join(backend.as_str()));
        let store = tokio::task::spawn_blocking(move || open(&config, clock()))
            .await
            .unwrap()
            .unwrap();
        workload(&*store).await;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served: Arc<dyn PersistenceProvider> = store.clone();
        let server = tokio::spawn(exporter::serve(listener, served, backend.as_str(), async {
            let _ = stopped.await;
        }));

        let (code, text) = get(addr, "/metrics").await;
        assert_eq!(code, 200, "{text}");
        let samples = samples(&text);
        let label = format!("{{backend=\"{}\"}}", backend.as_str());
        let value = |name: &str| {
            samples
                .get(&format!("{name}{label}"))
                .copied()
                .unwrap_or_else(|| panic!("{backend:?}: no {name}{label} in\n{text}"))
        };
        let what = format!("{backend:?}:\n{text}");
        assert_eq!(
            value("orbit_persistence_reads_total"),
            (GETS + LISTS + 1) as f64,
            "{what}"
        );
        assert_eq!(
            value("orbit_persistence_read_duration_seconds_count"),
            (GETS + LISTS + 1) as f64,
            "{what}"
        );
        assert_eq!(
            value("orbit_persistence_lease_writes_total"),
            (STORED + RENEWS) as f64,
            "{what}"
        );
        assert_eq!(
            value("orbit_persistence_write_duration_seconds_count"),
            (1 + RENEWS + LOST) as f64,
            "{what}"
        );
        assert_eq!(
            value("orbit_persistence_conflicts_total"),
            LOST as f64,
            "{what}"
        );
        assert_eq!(value("orbit_persistence_leases"), STORED as f64, "{what}");
        let health = format!(
            "orbit_persistence_health{{backend=\"{}\",status=\"healthy\"}}",
            backend.as_str()
        );
        assert_eq!(samples[&health], 1.0, "{what}");
        if backend != BackendType::Memory {
            assert!(value("orbit_persistence_disk_bytes") > 0.0, "{what}");
            assert!(value("orbit_persistence_disk_free_bytes") > 0.0, "{what}");
        }
        if matches!(backend, BackendType::CowBTree | BackendType::LsmTree) {
            // Our engines' group commit: every request of the sequential workload is its own
            // batch, and every batch that logged something is one timed log write.
            let requests = (1 + RENEWS + LOST) as f64;
            assert_eq!(
                value("orbit_persistence_batch_size_sum"),
                requests,
                "{what}"
            );
            assert_eq!(
                value("orbit_persistence_batch_size_count"),
                requests,
                "{what}"
            );
            assert_eq!(
                value("orbit_persistence_log_write_duration_seconds_count"),
                value("orbit_persistence_write_batches_total"),
                "{what}"
            );
            assert!(value("orbit_persistence_write_batches_total") >= (1 + RENEWS) as f64);
        }
        if let Some(problems) = promtool_problems(&text) {
            panic!("{backend:?}: promtool check metrics: {problems}\n{text}");
        }

        let (code, body) = get(addr, "/healthz").await;
        assert_eq!((code, body.trim()), (200, r#"{"status":"healthy"}"#));
        // A closed store is unhealthy: 503, with the reason.
        store.shutdown().await.unwrap();
        let (code, body) = get(addr, "/healthz").await;
        assert_eq!(code, 503, "{backend:?}: {body}");
        assert!(body.contains(r#""status":"unhealthy""#), "{body}");
        assert!(body.contains("reason"), "{body}");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
