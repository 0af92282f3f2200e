//! Which revisions are written, for the change feed. Commits take their revisions from one
//! counter but write their batches concurrently, so revision 11 may be in the database before
//! 10 is. A watcher must never read past a revision still being written (it would skip it for
//! good), so the feed follows the watermark: the highest revision below which every revision
//! is written (or failed, which poisons the store).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use orbit_persistence_core::feed::FeedSignal;

/// The watermark, announced on a [`FeedSignal`] as it moves.
#[derive(Debug)]
pub struct Watermark {
    /// Ranges done above the watermark, by first revision: waiting for the ones below.
    pending: Mutex<(u64, BTreeMap<u64, u64>)>,
    signal: FeedSignal,
}

impl Watermark {
    /// Everything up to `revision` written.
    pub fn new(revision: u64) -> Self {
        Watermark {
            pending: Mutex::new((revision, BTreeMap::new())),
            signal: FeedSignal::new(revision),
        }
    }

    /// The batch of revisions `first..=last` is written (or failed).
    pub fn done(&self, first: u64, last: u64) {
        let mut guard = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let (mark, ranges) = &mut *guard;
        ranges.insert(first, last);
        let before = *mark;
        while let Some(end) = ranges.remove(&(*mark + 1)) {
            *mark = end;
        }
        let now = *mark;
        drop(guard);
        if now > before {
            self.signal.published(now);
        }
    }

    /// The signal watchers wait on; its revision is the watermark.
    pub fn signal(&self) -> &FeedSignal {
        &self.signal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_only_over_contiguous_revisions() {
        let w = Watermark::new(9);
        w.done(12, 12);
        assert_eq!(
            w.signal().revision(),
            9,
            "10 and 11 are still being written"
        );
        w.done(10, 10);
        assert_eq!(w.signal().revision(), 10);
        w.done(11, 11);
        assert_eq!(w.signal().revision(), 12, "11 closes the gap up to 12");
        w.done(13, 20);
        assert_eq!(w.signal().revision(), 20);
    }
}
