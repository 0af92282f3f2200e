//! A member that accepts connections and never answers (a machine gone silent, not one that
//! refuses): every operation still fails with `Unavailable` within the configured timeouts,
//! retries of reads included.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orbit_persistence_core::{
    AddressableDirectoryProvider, AddressableLease, AddressableReference, EtcdConfig, Key, NodeId,
    OrbitError, OrbitResult, SystemClock,
};
use orbit_persistence_etcd::EtcdDirectory;

/// A TCP endpoint that accepts every connection and then says nothing.
fn silent_member() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_fails_every_call_within_the_timeout() {
    let timeout_ms = 800;
    let config = EtcdConfig {
        endpoints: vec![silent_member()],
        connect_timeout_ms: 300,
        request_timeout_ms: timeout_ms,
        read_attempts: 5,
        ..EtcdConfig::default()
    };
    let connect_bound = Duration::from_millis(300 + timeout_ms) + Duration::from_millis(500);
    let start = Instant::now();
    let store = match EtcdDirectory::connect(&config, Arc::new(SystemClock)).await {
        Ok(store) => store,
        Err(e) => {
            // Connecting may already find the member silent: that too within its timeouts.
            assert!(matches!(e, OrbitError::Unavailable(_)), "{e}");
            assert!(
                start.elapsed() < connect_bound,
                "connect took {:?}",
                start.elapsed()
            );
            return;
        }
    };
    let r = AddressableReference::new("Greeter", Key::string("a"));
    let node = NodeId::new("n", "ns");
    // Each within one request timeout (and a little): a read with five attempts, a listing,
    // a write (sent once) and an acquire (its read fails first).
    let bound = Duration::from_millis(timeout_ms) + Duration::from_millis(500);
    unavailable_within(bound, "get", store.get_lease(&r)).await;
    unavailable_within(bound, "list", store.list_node_leases(&node)).await;
    let now = orbit_persistence_core::Clock::now(&SystemClock);
    let lease = AddressableLease::new(
        r.clone(),
        node,
        now.saturating_add(Duration::from_secs(60)),
        now.saturating_add(Duration::from_secs(30)),
    );
    unavailable_within(bound, "store", store.store_lease(&lease)).await;
    unavailable_within(bound, "acquire", store.acquire_lease(&lease)).await;
}

/// Runs `call` and checks it failed with `Unavailable` in less than `bound`.
async fn unavailable_within<T: std::fmt::Debug>(
    bound: Duration,
    what: &str,
    call: impl std::future::Future<Output = OrbitResult<T>>,
) {
    let start = Instant::now();
    let out = call.await;
    assert!(
        matches!(out, Err(OrbitError::Unavailable(_))),
        "{what}: {out:?}"
    );
    assert!(start.elapsed() < bound, "{what} took {:?}", start.elapsed());
}
