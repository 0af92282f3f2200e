//! The values every layer of the tree passes around: an entry (a key and its value or
//! tombstone), what a point lookup found, and the sequence number that reads "everything".
//! The bottom of the crate: it imports nothing from it.

/// Sees every entry (a frozen memtable, or the writer's own view).
pub const LATEST: u64 = u64::MAX;

/// A key and its value (`None`: a tombstone).
pub type Entry = (Vec<u8>, Option<Vec<u8>>);

/// What a point lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The key is not in this source: look in older ones.
    Absent,
    /// The key was deleted here: older sources must not be consulted.
    Deleted,
    /// The key's newest value.
    Value(Vec<u8>),
}
