//! What the CLI's test binaries share: running the binary, and reading its output.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use orbit_persistence::{
    AddressableLease, AddressableReference, Clock, Key, NodeId, PersistenceConfig, SystemClock,
};

/// Runs the `orbit-persistence` binary with `args`, without the environment's store
/// variables (a test says what it opens).
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orbit-persistence"))
        .args(args)
        .env_remove("ORBIT_PERSISTENCE_BACKEND")
        .env_remove("ORBIT_PERSISTENCE_DATA_DIR")
        .output()
        .expect("run the binary")
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Two leases on node `node-1` of namespace `prod`: `Greeter/alice` for an hour, and
/// `Greeter/7` (an int64 key) for 300 ms.
pub fn live_and_short() -> [AddressableLease; 2] {
    let now = SystemClock.now();
    let node = NodeId::new("node-1", "prod");
    [
        AddressableLease::new(
            AddressableReference::new("Greeter", Key::string("alice")),
            node.clone(),
            now.saturating_add(Duration::from_secs(3600)),
            now.saturating_add(Duration::from_secs(1800)),
        ),
        AddressableLease::new(
            AddressableReference::new("Greeter", Key::Int64Key { key: 7 }),
            node,
            now.saturating_add(Duration::from_millis(300)),
            now.saturating_add(Duration::from_millis(100)),
        ),
    ]
}

/// Stores `leases` through the library in the store that the config `file` describes, then
/// shuts it down.
pub fn store_through_library(file: &str, leases: &[AddressableLease]) {
    let config = PersistenceConfig::from_path(file).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        // Opening may block (a disk backend's recovery, an etcd connection): off the runtime.
        let store = tokio::task::spawn_blocking(move || {
            orbit_persistence::open(&config, Arc::new(SystemClock))
        })
        .await
        .unwrap()
        .unwrap();
        store.store_leases(leases).await.unwrap();
        store.shutdown().await.unwrap();
    });
}

/// `stats`, `get`, `list-node`, `cleanup`, `evict-node` and `watch` on the store of
/// [`live_and_short`] that `file` configures, checking what each prints and how each exits;
/// waits for the short lease to expire before the cleanup, evicts the node, then reads the
/// change feed of it all. Returns the live lease as `get` printed it.
pub fn check_store_commands(file: &str) -> AddressableLease {
    let out = cli(&["stats", "--config", file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["health"], "Healthy", "{stats}");
    assert_eq!(stats["metrics"]["lease_count"], 2, "{stats}");

    let out = cli(&["get", "--config", file, "Greeter", "alice"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let live: AddressableLease = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(live.node_id, NodeId::new("node-1", "prod"));
    let int64 = [
        "get",
        "--config",
        file,
        "Greeter",
        "7",
        "--key-kind",
        "int64",
    ];
    let out = cli(&int64);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = cli(&["get", "--config", file, "Greeter", "bob"]);
    assert_eq!(out.status.code(), Some(1), "absent");
    let out = cli(&[
        "get",
        "--config",
        file,
        "Greeter",
        "x",
        "--key-kind",
        "int32",
    ]);
    assert_eq!(out.status.code(), Some(2), "not an int32");

    let list = [
        "list-node",
        "--config",
        file,
        "node-1",
        "--namespace",
        "prod",
    ];
    let out = cli(&list);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);

    std::thread::sleep(Duration::from_millis(400));
    let out = cli(&["cleanup", "--config", file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let cleaned: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cleaned["removed"], 1);
    assert_eq!(text(&cli(&list).stdout).lines().count(), 1);

    let evict = [
        "evict-node",
        "--config",
        file,
        "node-1",
        "--namespace",
        "prod",
    ];
    let out = cli(&evict);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let evicted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        evicted,
        serde_json::json!({ "node": "node-1", "namespace": "prod", "removed": 1 })
    );
    assert_eq!(text(&cli(&list).stdout).lines().count(), 0);
    assert_eq!(
        cli(&["get", "--config", file, "Greeter", "alice"])
            .status
            .code(),
        Some(1)
    );
    let again: serde_json::Value = serde_json::from_slice(&cli(&evict).stdout).unwrap();
    assert_eq!(again["removed"], 0, "{again}");
    let out = cli(&["evict-node", "--config", file, "node-1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no namespace: {}",
        text(&out.stderr)
    );
    let out = cli(&["evict-node", "--config", file, "", "--namespace", "prod"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "empty node: {}",
        text(&out.stderr)
    );

    // The change feed from the start: both stores, the cleanup and the eviction.
    let out = cli(&["watch", "--config", file, "--from", "0", "--count", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<_> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Put", "Put", "Expired", "Evicted"], "{events:?}");
    assert_eq!(
        events[3]["lease"]["reference"]["key"]["StringKey"]["key"],
        "alice"
    );
    live
}

/// A GET of `path` on 127.0.0.1:`port`: the status code and body, or `None` if nothing
/// answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    Some((code, body.to_string()))
}

/// Polls `path` on 127.0.0.1:`port` until something answers (a server still starting); the
/// status code and body. `None` if nothing answered within 20 s.
pub fn first_answer(port: u16, path: &str) -> Option<(u16, String)> {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(answer) = http_get(port, path) {
            return Some(answer);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Sends SIGTERM to `child` and waits (up to 5 s, then kills it) for it to exit: its status
/// and how long it took, or `None` if it had to be killed.
pub fn terminate(child: &mut std::process::Child) -> Option<(std::process::ExitStatus, Duration)> {
    let signal = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(signal.success());
    let sent = std::time::Instant::now();
    while sent.elapsed() < Duration::from_secs(5) {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some((status, sent.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    None
}
