//! The change feed: every change of the directory as a [`LeaseEvent`], in revision order,
//! without gaps or duplicates, from any revision the store still remembers.
//!
//! A cache of the directory loads a snapshot at revision `R` (`snapshot_leases`), then
//! [`watch`](crate::AddressableDirectoryProvider::watch)es from `R`: replaying the events onto
//! the snapshot gives the store's contents at every later revision. A watcher that reconnects
//! with the last revision it saw gets exactly the rest.
//!
//! # Where the history lives
//!
//! Each backend keeps the last `watch_history` changes (its config section) and serves a
//! watcher from there, never from a per-watcher buffer: a slow watcher costs the writers
//! nothing and memory nothing; it just reads older history, and once that is gone it gets
//! [`OrbitError::Compacted`] and reloads.
//!
//! - The COW B+tree and the LSM: a history range of their key space (`H` ++ revision), written
//!   by [`crate::keyspace::apply_change`] in the same atomic change as the lease, so it is as
//!   durable as the lease and WAL replay rebuilds it after a crash.
//! - RocksDB: a `history` column family written in the lease's batch.
//! - Memory: a ring of the last `watch_history` events ([`EventRing`]).
//! - etcd: etcd's own watch on the lease keys; its compaction is `Compacted`.
//!
//! # History value
//!
//! ```text
//! u8     kind: 1 put, 2 removed, 3 released, 4 expired, 5 evicted
//! bytes  the lease (crate::encoding::encode_lease): the new lease of a put, the last lease of
//!        a removal (with the revision it had)
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::encoding::{self, DecodeError};
use crate::{AddressableLease, AddressableReference, OrbitError, OrbitResult};

/// Why a lease changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeaseEventKind {
    /// Stored, acquired or renewed: the event carries the new lease.
    Put,
    /// Removed by `remove_lease`.
    Removed,
    /// Released by its owner (`release_lease`).
    Released,
    /// Removed by `cleanup_expired_leases`.
    Expired,
    /// Removed by `remove_node_leases`.
    Evicted,
}

impl LeaseEventKind {
    /// The kind's byte in a history value.
    pub fn byte(self) -> u8 {
        match self {
            LeaseEventKind::Put => 1,
            LeaseEventKind::Removed => 2,
            LeaseEventKind::Released => 3,
            LeaseEventKind::Expired => 4,
            LeaseEventKind::Evicted => 5,
        }
    }

    /// The kind of a history value's byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => LeaseEventKind::Put,
            2 => LeaseEventKind::Removed,
            3 => LeaseEventKind::Released,
            4 => LeaseEventKind::Expired,
            5 => LeaseEventKind::Evicted,
            _ => return None,
        })
    }
}

/// One change of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEvent {
    /// The revision the change took (etcd: its transaction's, shared by the leases it wrote).
    pub revision: u64,
    /// What happened.
    pub kind: LeaseEventKind,
    /// The new lease of a put; the last lease of a removal (so a cache can drop it by node).
    pub lease: AddressableLease,
}

impl LeaseEvent {
    /// The lease's reference.
    pub fn reference(&self) -> &AddressableReference {
        &self.lease.reference
    }

    /// Whether the lease is gone after this event.
    pub fn is_removal(&self) -> bool {
        self.kind != LeaseEventKind::Put
    }

    /// The history value of the event (see the module docs); the revision is its key.
    pub fn encode_value(kind: LeaseEventKind, lease: &AddressableLease) -> Vec<u8> {
        let mut out = vec![kind.byte()];
        out.extend_from_slice(&encoding::encode_lease(lease));
        out
    }

    /// Decodes [`LeaseEvent::encode_value`]'s output as the event of `revision`.
    pub fn decode_value(revision: u64, bytes: &[u8]) -> Result<LeaseEvent, DecodeError> {
        let (&kind, lease) = bytes
            .split_first()
            .ok_or_else(|| DecodeError::new(0, "empty history value"))?;
        let kind = LeaseEventKind::from_byte(kind)
            .ok_or_else(|| DecodeError::new(0, format!("unknown event kind {kind}")))?;
        let lease =
            encoding::decode_lease(lease).map_err(|e| DecodeError::new(1 + e.offset, e.detail))?;
        Ok(LeaseEvent {
            revision,
            kind,
            lease,
        })
    }
}

/// Events one read of a history returns at most.
pub const FEED_BATCH: usize = 1024;

/// What a watcher waits on: the revision published last, and whether the store closed. The
/// writer announces each published batch; watchers wake and read the history.
#[derive(Debug)]
pub struct FeedSignal {
    tx: watch::Sender<(u64, bool)>,
}

impl FeedSignal {
    /// A signal at `revision`, open.
    pub fn new(revision: u64) -> Self {
        FeedSignal {
            tx: watch::Sender::new((revision, false)),
        }
    }

    /// Everything up to `revision` is published (readable by watchers).
    pub fn published(&self, revision: u64) {
        self.tx.send_if_modified(|(at, _)| {
            let moved = revision > *at;
            *at = (*at).max(revision);
            moved
        });
    }

    /// The store closed: every watcher ends with `Closed`.
    pub fn close(&self) {
        self.tx.send_modify(|(_, closed)| *closed = true);
    }

    /// The last revision announced.
    pub fn revision(&self) -> u64 {
        self.tx.borrow().0
    }

    /// A receiver of the signal: `(revision, closed)`.
    pub fn subscribe(&self) -> watch::Receiver<(u64, bool)> {
        self.tx.subscribe()
    }
}

/// A store's retained history, as a watcher reads it.
pub trait History: Send + Sync + 'static {
    /// Up to `limit` events with revisions in `from..=upto`, in revision order, read from one
    /// consistent state that holds at least everything up to `upto`. Blocking (it may read
    /// files): called off the runtime's workers.
    fn read(&self, from: u64, upto: u64, limit: usize) -> OrbitResult<Vec<LeaseEvent>>;

    /// Whether every revision up to the published one has its event, so a missing one means
    /// the history was trimmed past it. A store that can hand out a revision and lose it in a
    /// crash before writing it (RocksDB, whose commits write concurrently) says `false`, and
    /// its `read` answers `Compacted` itself when `from` is older than its window.
    fn gapless(&self) -> bool {
        true
    }

    /// Whether `read` may touch files, so a watcher calls it off the runtime's workers. A
    /// history in memory says `false` and is read in place: a hop to a blocking thread per
    /// batch was most of a watcher's lag behind fast writers.
    fn reads_files(&self) -> bool {
        true
    }
}

/// A history in memory: the last `capacity` events in a ring, for a backend whose state lives
/// in memory (the memory backend). It also hands out the revisions, so events enter in
/// revision order even from writers that hold different locks.
#[derive(Debug)]
pub struct EventRing {
    events: Mutex<VecDeque<LeaseEvent>>,
    capacity: usize,
    signal: FeedSignal,
}

impl EventRing {
    /// An empty ring keeping `capacity` events (0: none) after revision `revision`.
    pub fn new(capacity: u64, revision: u64) -> Self {
        EventRing {
            events: Mutex::new(VecDeque::new()),
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            signal: FeedSignal::new(revision),
        }
    }

    /// Takes the next revision from `counter` and records the event of the change `make`
    /// describes for it (kind, and the lease: the new one of a put, the last of a removal).
    /// The caller holds whatever makes the change atomic, and applies it with this revision.
    pub fn record(
        &self,
        counter: &AtomicU64,
        make: impl FnOnce(u64) -> (LeaseEventKind, AddressableLease),
    ) -> u64 {
        if self.capacity == 0 {
            return counter.fetch_add(1, Ordering::SeqCst) + 1;
        }
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let revision = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let (kind, lease) = make(revision);
        if events.len() == self.capacity {
            events.pop_front();
        }
        events.push_back(LeaseEvent {
            revision,
            kind,
            lease,
        });
        drop(events);
        self.signal.published(revision);
        revision
    }

    /// Records `event`, whose revision the caller assigned, above every one before (a store
    /// that assigns revisions itself, as a [`crate::change::ChangeStager`] does), and announces
    /// it.
    pub fn push(&self, event: LeaseEvent) {
        let revision = event.revision;
        if self.capacity > 0 {
            let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            if events.len() == self.capacity {
                events.pop_front();
            }
            events.push_back(event);
        }
        self.signal.published(revision);
    }

    /// Raises the revision `counter` to `revision` with no event (a restore), and announces
    /// it. The events kept so far are dropped: a watcher could not read across the jump, and
    /// the ring's revisions must stay consecutive. `Err(current)`, changing nothing, if
    /// `counter` is already past `revision`. The caller holds whatever keeps writers out.
    pub fn jump(&self, counter: &AtomicU64, revision: u64) -> Result<(), u64> {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let current = counter.load(Ordering::SeqCst);
        if current > revision {
            return Err(current);
        }
        if revision > current {
            events.clear();
            counter.store(revision, Ordering::SeqCst);
            drop(events);
            self.signal.published(revision);
        }
        Ok(())
    }

    /// Whether the ring keeps any history.
    pub fn is_on(&self) -> bool {
        self.capacity > 0
    }

    /// The signal watchers of this ring wait on.
    pub fn signal(&self) -> &FeedSignal {
        &self.signal
    }
}

impl History for EventRing {
    fn reads_files(&self) -> bool {
        false
    }

    fn read(&self, from: u64, upto: u64, limit: usize) -> OrbitResult<Vec<LeaseEvent>> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        // Revisions in the ring are consecutive: the position of `from` is arithmetic.
        let skip = match events.front() {
            Some(first) => {
                usize::try_from(from.saturating_sub(first.revision)).unwrap_or(usize::MAX)
            }
            None => return Ok(Vec::new()),
        };
        Ok(events
            .iter()
            .skip(skip)
            .take_while(|e| e.revision <= upto)
            .take(limit)
            .cloned()
            .collect())
    }
}

/// Where a [`LeaseWatch`] gets its events from.
#[async_trait]
pub trait EventSource: Send {
    /// The next events, at least one; waits for them. An error ends the watch.
    async fn next_batch(&mut self) -> OrbitResult<Vec<LeaseEvent>>;
}

/// Follows a [`History`] from a revision on, woken by a [`FeedSignal`]: the source of every
/// backend that keeps its history itself.
pub struct HistoryFeed<H> {
    history: Arc<H>,
    signal: watch::Receiver<(u64, bool)>,
    /// The revision of the next event owed.
    next: u64,
}

impl<H: History> HistoryFeed<H> {
    /// Events after `from_revision` of `history`, as `signal` announces them.
    pub fn new(history: Arc<H>, signal: &FeedSignal, from_revision: u64) -> Self {
        HistoryFeed {
            history,
            signal: signal.subscribe(),
            next: from_revision.saturating_add(1),
        }
    }
}

#[async_trait]
impl<H: History> EventSource for HistoryFeed<H> {
    async fn next_batch(&mut self) -> OrbitResult<Vec<LeaseEvent>> {
        loop {
            // Marked seen before reading, so an announcement during the read wakes us again.
            let (published, closed) = *self.signal.borrow_and_update();
            if closed {
                return Err(OrbitError::Closed);
            }
            if published >= self.next {
                let history = Arc::clone(&self.history);
                let from = self.next;
                let events = match history.reads_files() {
                    true => tokio::task::spawn_blocking(move || {
                        history.read(from, published, FEED_BATCH)
                    })
                    .await
                    .map_err(|e| OrbitError::internal("feed", format!("a read failed: {e}")))??,
                    false => history.read(from, published, FEED_BATCH)?,
                };
                let events = match self.history.gapless() {
                    true => contiguous(from, published, events)?,
                    false => events,
                };
                match events.last() {
                    Some(last) => {
                        self.next = last.revision + 1;
                        return Ok(events);
                    }
                    // Every revision up to the published one lost in a crash: none is owed.
                    None if !self.history.gapless() => self.next = published + 1,
                    None => {}
                }
            }
            if self.signal.changed().await.is_err() {
                return Err(OrbitError::Closed);
            }
        }
    }
}

/// Checks that `events`, read from revision `from` of a history published up to `published`,
/// start at `from` and have no hole: anything else means the history was trimmed past what
/// the watcher still needs (`Compacted`, naming where it can resume).
fn contiguous(from: u64, published: u64, events: Vec<LeaseEvent>) -> OrbitResult<Vec<LeaseEvent>> {
    let Some(first) = events.first() else {
        // Published, but nothing retained: history is off or trimmed past all of it.
        return Err(OrbitError::Compacted {
            requested: from - 1,
            oldest: published,
        });
    };
    if first.revision != from {
        return Err(OrbitError::Compacted {
            requested: from - 1,
            oldest: first.revision - 1,
        });
    }
    // A hole in the middle (history trimmed with a smaller window than it was written
    // with): deliver what comes before it; the next read reports it.
    let whole = (from..)
        .zip(&events)
        .take_while(|(r, e)| e.revision == *r)
        .count();
    let mut events = events;
    events.truncate(whole);
    Ok(events)
}

type Pending =
    Pin<Box<dyn Future<Output = (Box<dyn EventSource>, OrbitResult<Vec<LeaseEvent>>)> + Send>>;

enum State {
    Idle(Box<dyn EventSource>),
    Waiting(Pending),
    Done,
}

/// The change feed of a store from one revision on: a [`futures_core::Stream`] of
/// `OrbitResult<LeaseEvent>` (or call [`LeaseWatch::next`]). An error ends it: `Compacted`
/// (history no longer held: reload and watch again), `Closed` (the store shut down), or what
/// the store failed with. Dropping it stops the watch.
pub struct LeaseWatch {
    buffered: VecDeque<LeaseEvent>,
    state: State,
}

impl std::fmt::Debug for LeaseWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseWatch")
            .field("buffered", &self.buffered.len())
            .field("done", &matches!(self.state, State::Done))
            .finish()
    }
}

impl LeaseWatch {
    /// A watch fed by `source`.
    pub fn new(source: impl EventSource + 'static) -> Self {
        LeaseWatch {
            buffered: VecDeque::new(),
            state: State::Idle(Box::new(source)),
        }
    }

    /// The next event; `None` after an error has been returned.
    pub async fn next(&mut self) -> Option<OrbitResult<LeaseEvent>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next_event(cx)).await
    }

    fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<OrbitResult<LeaseEvent>>> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Idle(mut source) => {
                    self.state = State::Waiting(Box::pin(async move {
                        let batch = source.next_batch().await;
                        (source, batch)
                    }));
                }
                State::Waiting(mut pending) => match pending.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = State::Waiting(pending);
                        return Poll::Pending;
                    }
                    Poll::Ready((source, Ok(events))) => {
                        self.buffered.extend(events);
                        self.state = State::Idle(source);
                    }
                    Poll::Ready((_, Err(e))) => return Poll::Ready(Some(Err(e))),
                },
            }
        }
    }
}

impl futures_core::Stream for LeaseWatch {
    type Item = OrbitResult<LeaseEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_event(cx)
    }
}

/// A consistent copy of every lease, and the revision it is as of: what a cache loads before
/// it watches from `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSnapshot {
    /// The store's revision the leases are as of.
    pub revision: u64,
    /// Every lease, in reference order.
    pub leases: Vec<AddressableLease>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Key, NodeId, Timestamp};

    fn event(revision: u64, kind: LeaseEventKind) -> LeaseEvent {
        let mut lease = AddressableLease::new(
            AddressableReference::new(
                "T",
                Key::Int64Key {
                    key: revision as i64,
                },
            ),
            NodeId::new("n", "ns"),
            Timestamp(100),
            Timestamp(50),
        );
        lease.revision = revision;
        LeaseEvent {
            revision,
            kind,
            lease,
        }
    }

    #[test]
    fn values_round_trip_and_bad_bytes_are_errors() {
        for kind in [
            LeaseEventKind::Put,
            LeaseEventKind::Removed,
            LeaseEventKind::Released,
            LeaseEventKind::Expired,
            LeaseEventKind::Evicted,
        ] {
            let e = event(7, kind);
            let bytes = LeaseEvent::encode_value(kind, &e.lease);
            assert_eq!(LeaseEvent::decode_value(7, &bytes).unwrap(), e);
            assert!(LeaseEvent::decode_value(7, &bytes[..bytes.len() - 1]).is_err());
        }
        assert_eq!(LeaseEvent::decode_value(1, &[9]).unwrap_err().offset, 0);
        assert!(LeaseEvent::decode_value(1, &[]).is_err());
    }

    #[test]
    fn a_trimmed_start_is_compacted_and_a_hole_stops_the_batch() {
        let put = |r| event(r, LeaseEventKind::Put);
        assert!(matches!(
            contiguous(5, 9, vec![put(7), put(8)]),
            Err(OrbitError::Compacted {
                requested: 4,
                oldest: 6
            })
        ));
        assert!(matches!(
            contiguous(5, 9, vec![]),
            Err(OrbitError::Compacted {
                requested: 4,
                oldest: 9
            })
        ));
        let got = contiguous(5, 9, vec![put(5), put(6), put(8)]).unwrap();
        assert_eq!(got.iter().map(|e| e.revision).collect::<Vec<_>>(), [5, 6]);
    }

    /// A history in memory, trimmed to the last `keep` events.
    struct Vecs(Mutex<Vec<LeaseEvent>>, usize);

    impl History for Vecs {
        fn read(&self, from: u64, upto: u64, limit: usize) -> OrbitResult<Vec<LeaseEvent>> {
            let all = self.0.lock().unwrap();
            let kept = &all[all.len().saturating_sub(self.1)..];
            Ok(kept
                .iter()
                .filter(|e| (from..=upto).contains(&e.revision))
                .take(limit)
                .cloned()
                .collect())
        }
    }

    #[tokio::test]
    async fn a_watch_follows_waits_and_ends() {
        let history = Arc::new(Vecs(Mutex::new(Vec::new()), 3));
        let signal = FeedSignal::new(0);
        let mut watch = LeaseWatch::new(HistoryFeed::new(Arc::clone(&history), &signal, 0));
        let append = |r| {
            history
                .0
                .lock()
                .unwrap()
                .push(event(r, LeaseEventKind::Put));
            signal.published(r);
        };
        append(1);
        append(2);
        assert_eq!(watch.next().await.unwrap().unwrap().revision, 1);
        assert_eq!(watch.next().await.unwrap().unwrap().revision, 2);
        // Nothing yet: the watch waits for the next announcement.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), watch.next());
        assert!(waiting.await.is_err(), "an event out of nowhere");
        append(3);
        assert_eq!(watch.next().await.unwrap().unwrap().revision, 3);
        // A watcher from revision 0 after 1 and 2 were trimmed: Compacted, resume from 2.
        for r in 4..=5 {
            append(r);
        }
        let mut late = LeaseWatch::new(HistoryFeed::new(Arc::clone(&history), &signal, 0));
        match late.next().await {
            Some(Err(OrbitError::Compacted { requested, oldest })) => {
                assert_eq!((requested, oldest), (0, 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(late.next().await.is_none(), "an error ends the watch");
        assert_eq!(watch.next().await.unwrap().unwrap().revision, 4);
        signal.close();
        // Read in one batch with 4, so still delivered; then the close.
        assert_eq!(watch.next().await.unwrap().unwrap().revision, 5);
        assert!(matches!(watch.next().await, Some(Err(OrbitError::Closed))));
        assert!(watch.next().await.is_none());
    }
}
