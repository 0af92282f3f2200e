//! The data set of the lease workload and its deterministic random streams.

use orbit_persistence_core::encoding::{encode_lease, encode_reference};
use orbit_persistence_core::{AddressableLease, AddressableReference, Key, NodeId, Timestamp};

/// The workload's clock starts here.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);
/// One hour in milliseconds.
pub const HOUR: u64 = 3_600_000;
/// When the 10% of leases loaded already expired expire (one second after [`T0`]).
pub const EXPIRED_AT: Timestamp = Timestamp(T0.0 + 1_000);

/// xorshift64: a fast deterministic stream for picking leases.
pub fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// N leases over 16 types and 1,000 nodes; every tenth expires at [`EXPIRED_AT`], the others an
/// hour after [`T0`].
#[derive(Debug)]
pub struct Data {
    /// The leases, in load order.
    pub leases: Vec<AddressableLease>,
    /// The nodes.
    pub nodes: Vec<NodeId>,
    zipf_cdf: Vec<f64>,
}

impl Data {
    /// The data set of `n` leases (deterministic).
    pub fn new(n: usize) -> Data {
        let nodes: Vec<_> = (0..1_000)
            .map(|i| NodeId::new(format!("node-{i:04}"), "bench"))
            .collect();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let leases = (0..n)
            .map(|i| {
                let r = next(&mut rng);
                let reference = AddressableReference::new(
                    format!("ActorType{:02}", i % 16),
                    Key::string(format!("actor-{i:012}-{:06x}", r & 0xff_ffff)),
                );
                let expires = if i % 10 == 0 {
                    EXPIRED_AT.0
                } else {
                    T0.0 + HOUR
                };
                AddressableLease::new(
                    reference,
                    nodes[(r >> 24) as usize % nodes.len()].clone(),
                    Timestamp(expires),
                    Timestamp(expires - 500),
                )
            })
            .collect();
        // Zipf(0.99) over ranks, as a CDF to binary-search.
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(0.99)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let zipf_cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Data {
            leases,
            nodes,
            zipf_cdf,
        }
    }

    /// A Zipf(0.99)-distributed lease index.
    pub fn zipf(&self, rng: &mut u64) -> usize {
        let u = (next(rng) >> 11) as f64 / (1u64 << 53) as f64;
        self.zipf_cdf
            .partition_point(|&c| c < u)
            .min(self.leases.len() - 1)
    }

    /// A uniformly random lease index.
    pub fn uniform(&self, rng: &mut u64) -> usize {
        (next(rng) % self.leases.len() as u64) as usize
    }

    /// N x (key + value): the bytes a store must hold at least.
    pub fn logical_bytes(&self) -> u64 {
        self.leases
            .iter()
            .map(|l| (encode_reference(&l.reference).len() + encode_lease(l).len()) as u64)
            .sum()
    }
}

/// Bytes of the files under `dir`, recursively.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
