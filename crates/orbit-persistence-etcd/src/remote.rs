//! The connection to the cluster: every call bounded by the request timeout, every failure an
//! `Unavailable` naming the endpoints and the cause, and idempotent reads retried with backoff
//! within that same timeout (a read, retries included, never takes longer than one request may).
//!
//! Writes are never retried here. A transaction whose answer was lost may have committed; the
//! conditional operations re-read and compare on the next call, so the caller decides.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, GetResponse, KvClient, Txn, TxnResponse};
use orbit_persistence_core::{EtcdConfig, OrbitError, OrbitResult};
use tokio::time::Instant;

/// First pause between two attempts of a read; doubled after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// A connected client and the settings its calls obey.
#[derive(Clone)]
pub(crate) struct Remote {
    client: Client,
    endpoints: String,
    timeout: Duration,
    read_attempts: u32,
    members: usize,
}

fn options(config: &EtcdConfig) -> OrbitResult<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .with_timeout(Duration::from_millis(config.request_timeout_ms))
        // Fail fast without a leader instead of waiting for one past the timeout.
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &config.tls {
        options = tls_options(options, tls)?;
    }
    Ok(options)
}

#[cfg(feature = "tls")]
fn tls_options(
    options: ConnectOptions,
    tls: &orbit_persistence_core::EtcdTlsConfig,
) -> OrbitResult<ConnectOptions> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| OrbitError::io("read an etcd TLS file", path, e))
    };
    let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca_file)?));
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(domain) = &tls.domain {
        t = t.domain_name(domain.clone());
    }
    Ok(options.with_tls(t))
}

#[cfg(not(feature = "tls"))]
fn tls_options(
    _: ConnectOptions,
    _: &orbit_persistence_core::EtcdTlsConfig,
) -> OrbitResult<ConnectOptions> {
    Err(OrbitError::Config(
        "etcd.tls is set, but orbit-persistence-etcd was built without its `tls` feature".into(),
    ))
}

impl Remote {
    /// Connects to the cluster (at most the connect timeout per member).
    pub async fn connect(config: &EtcdConfig) -> OrbitResult<Remote> {
        let endpoints = config.endpoints.join(",");
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let connect = Client::connect(&config.endpoints, Some(options(config)?));
        let deadline = Duration::from_millis(config.connect_timeout_ms) + timeout;
        let client = match tokio::time::timeout(deadline, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unavailable(&endpoints, "connect", e)),
            Err(_) => return Err(timed_out(&endpoints, "connect", deadline)),
        };
        Ok(Remote {
            client,
            endpoints,
            timeout,
            read_attempts: config.read_attempts,
            members: config.endpoints.len(),
        })
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client()
    }

    /// Runs one call, answered by `deadline` (tonic's own deadline may not cover a connection
    /// that is still being established). A call that never left this process (no member at
    /// that address accepted the connection) is sent again at once, up to once per member and
    /// then some: the client spreads calls over every endpoint, dead ones included, and such a
    /// retry cannot commit anything twice.
    async fn bounded<T, F, Fut>(
        &self,
        op: &'static str,
        call: &F,
        deadline: Instant,
    ) -> OrbitResult<T>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut unsent = 0;
        loop {
            match tokio::time::timeout_at(deadline, call(self.kv())).await {
                Ok(Ok(out)) => return Ok(out),
                Ok(Err(e)) if never_sent(&e) && unsent < self.members * 2 => {
                    unsent += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(Err(e)) => return Err(unavailable(&self.endpoints, op, e)),
                Err(_) => return Err(timed_out(&self.endpoints, op, self.timeout)),
            }
        }
    }

    /// A read: retried with backoff up to `read_attempts` times, all within the request
    /// timeout (a retry that could not start before it is not made).
    async fn read<T, F, Fut>(&self, op: &'static str, call: F) -> OrbitResult<T>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut pause = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.bounded(op, &call, deadline).await {
                Err(e) if attempt < self.read_attempts && Instant::now() + pause < deadline => {
                    tracing::debug!(op, attempt, error = %e, "etcd read failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                out => return out,
            }
        }
    }

    /// Reads `key`, or `[key, end)` with `options`.
    pub async fn get(&self, key: Vec<u8>, options: Option<GetOptions>) -> OrbitResult<GetResponse> {
        self.read("get", |mut kv| {
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    /// A transaction of reads only (a consistent snapshot of several keys): retried like a read.
    pub async fn read_txn(&self, txn: Txn) -> OrbitResult<TxnResponse> {
        self.read("read transaction", |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// A transaction that writes: sent once (again only if it never left this process).
    pub async fn write_txn(&self, txn: Txn) -> OrbitResult<TxnResponse> {
        let call = |mut kv: KvClient| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        };
        let deadline = Instant::now() + self.timeout;
        self.bounded("write transaction", &call, deadline).await
    }

    /// The status of the member the client talks to.
    pub async fn status(&self) -> OrbitResult<etcd_client::StatusResponse> {
        let mut maintenance = self.client.maintenance_client();
        match tokio::time::timeout(self.timeout, maintenance.status()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(unavailable(&self.endpoints, "status", e)),
            Err(_) => Err(timed_out(&self.endpoints, "status", self.timeout)),
        }
    }

    /// The client, for what is not a bounded call (a watch).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }
}

/// Whether the call failed before any member received it: its connection was refused or never
/// established.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        // tonic reports a refused or failed connection as `Unavailable` with a `ConnectError`
        // source (not otherwise exposed).
        etcd_client::Error::GRpcStatus(status) => format!("{status:?}").contains("ConnectError"),
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

fn unavailable(endpoints: &str, op: &str, e: etcd_client::Error) -> OrbitError {
    OrbitError::Unavailable(format!("etcd at {endpoints}: {op} failed: {e}"))
}

fn timed_out(endpoints: &str, op: &str, after: Duration) -> OrbitError {
    OrbitError::Unavailable(format!(
        "etcd at {endpoints}: {op} got no answer within {} ms",
        after.as_millis()
    ))
}
