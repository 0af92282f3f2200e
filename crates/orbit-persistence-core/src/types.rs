//! The lease data model (docs/contract.md#data-model).
//!
//! The derived `Ord` of [`AddressableReference`] (type, then key; keys ordered string < i32 <
//! i64 < none) is exactly the byte order of its [`crate::encoding`], so disk backends can sort
//! encoded keys and memory structures can sort values and agree.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the largest timestamp instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// `self - d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A cluster node, unique within its namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's name, 1..=256 bytes.
    pub key: String,
    /// The cluster namespace, 1..=256 bytes.
    pub namespace: String,
}

impl NodeId {
    /// A node id from its key and namespace.
    pub fn new(key: impl Into<String>, namespace: impl Into<String>) -> Self {
        NodeId {
            key: key.into(),
            namespace: namespace.into(),
        }
    }
}

/// `key@namespace`.
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.key, self.namespace)
    }
}

/// The identity of an addressable within its type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    /// A string key, 0..=1024 bytes.
    StringKey {
        /// The key.
        key: String,
    },
    /// A 32-bit integer key.
    Int32Key {
        /// The key.
        key: i32,
    },
    /// A 64-bit integer key.
    Int64Key {
        /// The key.
        key: i64,
    },
    /// A singleton addressable: the type alone identifies it.
    NoKey,
}

impl Key {
    /// A string key.
    pub fn string(key: impl Into<String>) -> Self {
        Key::StringKey { key: key.into() }
    }
}

/// A string key quoted (`"42"`), integer keys with their width (`42i32`, `42i64`), and
/// `(no key)`: distinct keys never print alike.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::StringKey { key } => write!(f, "{key:?}"),
            Key::Int32Key { key } => write!(f, "{key}i32"),
            Key::Int64Key { key } => write!(f, "{key}i64"),
            Key::NoKey => f.write_str("(no key)"),
        }
    }
}

/// Identifies one addressable (virtual actor): its type plus its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AddressableReference {
    /// The actor type, e.g. `"Greeter"`; 1..=256 bytes.
    pub addressable_type: String,
    /// The key within the type.
    pub key: Key,
}

impl AddressableReference {
    /// A reference from a type and a key.
    pub fn new(addressable_type: impl Into<String>, key: Key) -> Self {
        AddressableReference {
            addressable_type: addressable_type.into(),
            key,
        }
    }
}

/// `Type key`, e.g. `Greeter "alice"`.
impl fmt::Display for AddressableReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.addressable_type, self.key)
    }
}

/// Node `node_id` hosts `reference` until `expires_at` and should renew at `renew_at`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressableLease {
    /// The addressable this lease is for.
    pub reference: AddressableReference,
    /// The node hosting it.
    pub node_id: NodeId,
    /// After this instant the lease is free for others to acquire.
    pub expires_at: Timestamp,
    /// When the owner should renew; never after `expires_at`.
    pub renew_at: Timestamp,
    /// Store-wide revision of the lease's last write: a fencing token. Set by the store.
    pub revision: u64,
}

impl AddressableLease {
    /// A lease with revision 0 (the store assigns the real one).
    pub fn new(
        reference: AddressableReference,
        node_id: NodeId,
        expires_at: Timestamp,
        renew_at: Timestamp,
    ) -> Self {
        AddressableLease {
            reference,
            node_id,
            expires_at,
            renew_at,
            revision: 0,
        }
    }

    /// Whether the lease no longer holds at `now` (`now >= expires_at`).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }
}
