//! The etcd backend against the conformance suite, on a real single-member etcd on loopback
//! (one per test binary, shared by the cases and by the kill -9 case's children). Each case's
//! directory becomes its own key prefix, so the cases share the member without seeing each
//! other. etcd is shared by design: `exclusive = false` (no directory lock to test).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use orbit_persistence_conformance::{Backend, Capabilities, conformance_suite};
use orbit_persistence_core::{AddressableDirectoryProvider, Clock, EtcdConfig, OrbitResult};
use orbit_persistence_etcd::EtcdDirectory;
use orbit_persistence_etcd::local_cluster::LocalCluster;

/// Where the member of this test binary writes its endpoints, by process id: a kill -9 child
/// (this binary again) reads its parent's, so both talk to one member.
fn endpoints_file(pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("orbit-etcd-conformance-{pid}.endpoints"))
}

/// The endpoints of the member this process uses: the parent's, in a kill -9 child; else a
/// member of its own, started once.
fn endpoints() -> &'static Vec<String> {
    static ENDPOINTS: OnceLock<Vec<String>> = OnceLock::new();
    ENDPOINTS.get_or_init(|| {
        let parents = std::fs::read_to_string(endpoints_file(std::os::unix::process::parent_id()));
        if let Ok(text) = parents {
            let endpoints: Vec<String> = text.lines().map(String::from).collect();
            let port = endpoints[0].rsplit(':').next().unwrap_or_default();
            // A file left by a dead process whose pid was reused does not answer.
            if std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok() {
                return endpoints;
            }
        }
        let member: &'static LocalCluster = Box::leak(Box::new(
            LocalCluster::single().expect("start a local etcd"),
        ));
        let endpoints = member.endpoints();
        std::fs::write(endpoints_file(std::process::id()), endpoints.join("\n")).unwrap();
        endpoints
    })
}

fn open(clock: Arc<dyn Clock>, dir: &Path) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    let config = EtcdConfig {
        endpoints: endpoints().clone(),
        key_prefix: format!("/orbit-test{}/", dir.display()),
        ..EtcdConfig::default()
    };
    // Called on a blocking thread of the case's runtime: connect on that runtime.
    let handle = tokio::runtime::Handle::current();
    Ok(Arc::new(
        handle.block_on(EtcdDirectory::connect(&config, clock))?,
    ))
}

const ETCD: Backend = Backend {
    name: "etcd",
    open,
    capabilities: Capabilities {
        durable: true,
        exclusive: false,
    },
};

conformance_suite!(ETCD, durable = true, exclusive = false);
