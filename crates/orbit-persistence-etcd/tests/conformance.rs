//! The etcd backend against the conformance suite, on a real single-member etcd on loopback
//! (one per test binary, shared by the cases). Each case's directory becomes its own key
//! prefix, so the cases share the member without seeing each other.

mod support;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use orbit_persistence_conformance::{Backend, Capabilities, conformance_suite};
use orbit_persistence_core::{AddressableDirectoryProvider, Clock, EtcdConfig, OrbitResult};
use orbit_persistence_etcd::EtcdDirectory;
use support::LocalCluster;

fn member() -> &'static LocalCluster {
    static MEMBER: OnceLock<LocalCluster> = OnceLock::new();
    MEMBER.get_or_init(|| LocalCluster::single().expect("start a local etcd"))
}

fn open(clock: Arc<dyn Clock>, dir: &Path) -> OrbitResult<Arc<dyn AddressableDirectoryProvider>> {
    let config = EtcdConfig {
        endpoints: member().endpoints(),
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
    capabilities: Capabilities { durable: false },
};

conformance_suite!(ETCD, durable = false);
