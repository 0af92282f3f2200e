//! The change feed on etcd: etcd's own watch on the directory's lease keys, from the revision
//! after the one asked for, with each deleted key's previous value (the last lease).
//!
//! - History is etcd's: whatever the cluster has not compacted. A watch from before its
//!   compaction revision is `Compacted` (`oldest`: the compaction revision less one).
//! - Revisions are etcd's: all changes of one transaction share one (a `store_leases` chunk,
//!   a cleanup or eviction batch). To resume without losing part of such a batch, resume from
//!   the last revision whose events were all handled.
//! - etcd records a delete without why, so each removing transaction also writes the cause
//!   key (`Keys::cause`) first; the watch covers it with the lease keys, and a delete takes the
//!   kind the cause key was given at the same revision (`Removed` if none was).

use async_trait::async_trait;
use etcd_client::{EventType, WatchOptions, WatchStream};
use orbit_persistence_core::feed::{EventSource, FeedSignal};
use orbit_persistence_core::{LeaseEvent, LeaseEventKind, OrbitError, OrbitResult};
use tokio::sync::watch;

use crate::keys::Keys;

/// Follows one etcd watch; see the module docs.
pub(crate) struct EtcdFeed {
    stream: WatchStream,
    keys: Keys,
    /// The revision the watch was asked to start after.
    from: u64,
    closed: watch::Receiver<(u64, bool)>,
    endpoints: String,
}

impl EtcdFeed {
    /// Starts watching the lease keys of `keys` after `from_revision` on `client`; ends with
    /// `Closed` when `closed` closes.
    pub async fn start(
        client: &etcd_client::Client,
        keys: Keys,
        from_revision: u64,
        closed: &FeedSignal,
        endpoints: &str,
    ) -> OrbitResult<EtcdFeed> {
        let (start, end) = keys.feed_range();
        let start_revision = i64::try_from(from_revision.saturating_add(1)).unwrap_or(i64::MAX);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(start_revision)
            .with_prev_key();
        let stream = client
            .watch_client()
            .watch(start, Some(options))
            .await
            .map_err(|e| unavailable(endpoints, e))?;
        Ok(EtcdFeed {
            stream,
            keys,
            from: from_revision,
            closed: closed.subscribe(),
            endpoints: endpoints.to_string(),
        })
    }

    fn events(&self, response: &etcd_client::WatchResponse) -> OrbitResult<Vec<LeaseEvent>> {
        let cause_key = self.keys.cause();
        // The cause written at a revision: the kind of that transaction's deletes.
        let mut cause: Option<(u64, LeaseEventKind)> = None;
        let mut out = Vec::with_capacity(response.events().len());
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = u64::try_from(kv.mod_revision()).unwrap_or(0);
            if kv.key() == cause_key.as_slice() {
                if event.event_type() == EventType::Put {
                    let kind = kv
                        .value()
                        .first()
                        .copied()
                        .and_then(LeaseEventKind::from_byte);
                    cause = kind.map(|kind| (revision, kind));
                }
                continue;
            }
            out.push(match event.event_type() {
                EventType::Put => LeaseEvent {
                    revision,
                    kind: LeaseEventKind::Put,
                    lease: self
                        .keys
                        .decode_lease(kv.key(), kv.value(), kv.mod_revision())?,
                },
                EventType::Delete => {
                    let Some(prev) = event.prev_kv() else {
                        return Err(OrbitError::Unavailable(format!(
                            "etcd at {}: a delete event without the previous value",
                            self.endpoints
                        )));
                    };
                    LeaseEvent {
                        revision,
                        kind: match cause {
                            Some((at, kind)) if at == revision => kind,
                            _ => LeaseEventKind::Removed,
                        },
                        lease: self.keys.decode_lease(
                            prev.key(),
                            prev.value(),
                            prev.mod_revision(),
                        )?,
                    }
                }
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl EventSource for EtcdFeed {
    async fn next_batch(&mut self) -> OrbitResult<Vec<LeaseEvent>> {
        loop {
            if self.closed.borrow_and_update().1 {
                return Err(OrbitError::Closed);
            }
            let message = tokio::select! {
                message = self.stream.message() => message,
                changed = self.closed.changed() => {
                    if changed.is_err() {
                        return Err(OrbitError::Closed);
                    }
                    continue;
                }
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Err(OrbitError::Unavailable(format!(
                        "etcd at {}: the watch stream ended",
                        self.endpoints
                    )));
                }
                Err(e) => return Err(unavailable(&self.endpoints, e)),
            };
            if response.compact_revision() > 0 {
                return Err(OrbitError::Compacted {
                    requested: self.from,
                    oldest: u64::try_from(response.compact_revision() - 1).unwrap_or(0),
                });
            }
            if response.canceled() {
                return Err(OrbitError::Unavailable(format!(
                    "etcd at {}: the watch was cancelled: {}",
                    self.endpoints,
                    response.cancel_reason()
                )));
            }
            let events = self.events(&response)?;
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
}

fn unavailable(endpoints: &str, e: etcd_client::Error) -> OrbitError {
    OrbitError::Unavailable(format!("etcd at {endpoints}: watch failed: {e}"))
}
