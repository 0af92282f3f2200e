//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles at a time.
//!
//! The algorithm is client-go's `leaderelection` with a Lease lock, on the API server's own
//! optimistic concurrency (every write names the `resourceVersion` it read; a write that lost a
//! race is refused with 409 Conflict and changes nothing):
//!
//! - **Acquire or renew**, every [`ElectionConfig::retry_period`]: read the Lease. Absent: create
//!   it naming us (of two creators one gets 409 AlreadyExists). Held by another holder whose
//!   record changed within the last [`ElectionConfig::lease_duration`] *by our own clock*: follow.
//!   Else (ours, released, or not renewed for a lease duration): replace it, naming us, at the
//!   `resourceVersion` read.
//! - **Expiry by observation, not by timestamps.** A follower times a holder out from when *it*
//!   last saw the record change, never from the `renewTime` written by another machine, so
//!   clock skew between nodes cannot make two leaders.
//! - **A leader steps down** when it has not renewed for [`ElectionConfig::renew_deadline`]
//!   (shorter than the lease duration): it stops acting before anyone else may take over.
//! - **Release on shutdown**: the leader clears the holder, so a standby takes over at its next
//!   retry instead of a lease duration later.
//!
//! Why not a crate: kube-runtime has no leader election, and the crate that follows kube's
//! versions (kube-lease-manager) decides conflicts by server-side apply field ownership, which
//! gives no compare-and-set on the holder; `resourceVersion` does, and is what client-go uses.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::{oneshot, watch};

/// The timing and naming of an election. The defaults are client-go's.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// The Lease's name (every replica of one operator uses the same).
    pub lease_name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity (its pod name): written as the Lease's holder.
    pub identity: String,
    /// How long a holder keeps the lease without renewing it (15 s).
    pub lease_duration: Duration,
    /// How long a leader goes on without a successful renewal before it steps down (10 s);
    /// shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often every replica tries to acquire or renew (2 s).
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// The defaults for a lease `lease_name` in `namespace`, held as `identity`.
    pub fn new(lease_name: &str, namespace: &str, identity: &str) -> Self {
        ElectionConfig {
            lease_name: lease_name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Refuses timings under which two replicas could lead at once.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_name.is_empty() || self.namespace.is_empty() || self.identity.is_empty() {
            return Err(
                "leader election: the lease name, namespace and identity are required".into(),
            );
        }
        if self.lease_duration.as_secs() == 0 {
            return Err("leader election: the lease duration must be at least 1 s".into());
        }
        // A leader notices a missed deadline up to one retry period late; it must still stop
        // before a follower may take over.
        if self.renew_deadline + self.retry_period >= self.lease_duration
            || self.retry_period >= self.renew_deadline
        {
            return Err(format!(
                "leader election: needs retry period ({:?}) < renew deadline ({:?}), and the two \
                 together < lease duration ({:?})",
                self.retry_period, self.renew_deadline, self.lease_duration
            ));
        }
        Ok(())
    }
}

/// Where this replica stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// No answer from the API server yet.
    Unknown,
    /// Another replica holds the lease (its identity, if the Lease names one).
    Follower(Option<String>),
    /// This replica holds the lease and may reconcile.
    Leader,
}

/// The election of one replica. [`Elector::run`] keeps its [`Role`] current.
pub struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
    /// The record last read, and when (by our clock) it was first seen as it is.
    observed: Option<(String, Instant)>,
}

impl Elector {
    /// An elector on `client` (call [`ElectionConfig::validate`] first).
    pub fn new(client: Client, config: ElectionConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Acquires or renews the lease once: `Ok(Role::Leader)` if this replica holds it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Role, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease_name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Role::Leader),
                Err(e) if conflict(&e) => Ok(Role::Follower(None)),
                Err(e) => Err(e),
            };
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let observed_at = match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => Instant::now(),
        };
        self.observed = Some((version, observed_at));
        let mut spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.config.identity.as_str());
        // A holder's own duration, if it wrote one; ours otherwise.
        let held_for = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        if holder.is_some() && !ours && observed_at.elapsed() < held_for {
            return Ok(Role::Follower(holder));
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Role::Leader),
            Err(e) if conflict(&e) => Ok(Role::Follower(holder)),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if this replica holds it, so a standby takes over at its next retry.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await
        {
            // Someone wrote in between: it is theirs now, or will be.
            Err(e) if conflict(&e) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Runs the election until `stop` fires (or is dropped), publishing each change of role.
    /// A leader that cannot renew for the renew deadline publishes `Role::Follower(None)` (it
    /// must stop acting) and goes on trying. At the stop, a leader releases the lease.
    pub async fn run(mut self, role: watch::Sender<Role>, mut stop: oneshot::Receiver<()>) {
        let mut last_renewed: Option<Instant> = None;
        loop {
            // An attempt that hangs counts as failed: the deadline must be kept.
            let attempt = tokio::select! {
                attempt = tokio::time::timeout(self.config.retry_period, self.try_acquire_or_renew()) => attempt,
                _ = &mut stop => break,
            };
            let next = match attempt.unwrap_or(Err(kube::Error::Service(
                "no answer within the retry period".into(),
            ))) {
                Ok(Role::Leader) => {
                    last_renewed = Some(Instant::now());
                    Role::Leader
                }
                Ok(other) => {
                    last_renewed = None;
                    other
                }
                Err(error) => {
                    tracing::warn!(%error, lease = %self.config.lease_name, "leader election");
                    match last_renewed {
                        Some(at) if at.elapsed() < self.config.renew_deadline => Role::Leader,
                        Some(_) => {
                            last_renewed = None;
                            Role::Follower(None)
                        }
                        None => role.borrow().clone(),
                    }
                }
            };
            role.send_if_modified(|current| {
                let changed = *current != next;
                if changed {
                    tracing::info!(role = ?next, lease = %self.config.lease_name, "leader election");
                }
                *current = next;
                changed
            });
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period) => {}
                _ = &mut stop => break,
            }
        }
        role.send_replace(Role::Follower(None));
        if last_renewed.is_some() {
            let released = tokio::time::timeout(self.config.retry_period, self.release()).await;
            if !matches!(released, Ok(Ok(()))) {
                tracing::warn!(lease = %self.config.lease_name, "the lease was not released: a standby takes over when it expires");
            }
        }
    }
}

/// A write refused because another got there first (409: AlreadyExists or Conflict).
fn conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
