//! The canonical binary encoding of the data model, shared by every disk backend.
//!
//! # Reference (the primary key), order-preserving
//!
//! ```text
//! 0x01                       format version
//! escaped(addressable_type)  bytes with 0x00 -> 0x00 0xFF, then terminator 0x00 0x01
//! tag                        0x01 string, 0x02 i32, 0x03 i64, 0x04 no key
//! key                        string: escaped + terminator; i32: 4 bytes BE with the sign bit
//!                            flipped; i64: 8 bytes BE with the sign bit flipped; no key: nothing
//! ```
//!
//! Comparing two encodings byte-wise gives the same answer as comparing the references (`Ord`):
//! type first, then key. The escaping makes every component self-delimiting, so a `:` or a NUL
//! in a type name is harmless and `StringKey "42"` never equals `Int32Key 42`.
//!
//! # Node
//!
//! `0x01`, escaped(key), escaped(namespace): order-preserving like the reference.
//!
//! # Lease (the value)
//!
//! ```text
//! 0x01                     format version
//! u16 BE + bytes           encoded reference
//! u16 BE + bytes           node key (raw UTF-8)
//! u16 BE + bytes           node namespace (raw UTF-8)
//! u64 BE                   expires_at (ms)
//! u64 BE                   renew_at (ms)
//! u64 BE                   revision
//! ```
//!
//! # Index keys
//!
//! - by node: encoded node ++ encoded reference. All leases of a node share the node's encoding
//!   as a prefix ([`node_index_prefix`]), so listing them is one range scan.
//! - by expiry: `expires_at` as u64 BE ++ encoded reference. Expired leases are the range
//!   `..expiry_index_upper_bound(now)`.
//!
//! Decoding never panics and never allocates more than the input's length: every length is
//! checked against the bytes that remain before anything is allocated.

use crate::error::OrbitError;
use crate::types::{AddressableLease, AddressableReference, Key, NodeId, Timestamp};
use std::path::Path;

/// Version byte that starts every encoding of this module.
pub const FORMAT_VERSION: u8 = 1;

const TAG_STRING: u8 = 0x01;
const TAG_I32: u8 = 0x02;
const TAG_I64: u8 = 0x03;
const TAG_NONE: u8 = 0x04;

const ESCAPE: u8 = 0x00;
const ESCAPED_NUL: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// Why bytes could not be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset within the decoded slice.
    pub offset: usize,
    /// What was wrong.
    pub detail: String,
}

impl DecodeError {
    /// `detail` found at `offset` of the decoded slice.
    pub fn new(offset: usize, detail: impl Into<String>) -> Self {
        DecodeError {
            offset,
            detail: detail.into(),
        }
    }

    /// The error as a [`OrbitError::Corruption`] in `path`, where the decoded slice started at
    /// `base_offset` of the file.
    pub fn into_corruption(self, path: &Path, base_offset: u64) -> OrbitError {
        OrbitError::corruption(path, base_offset + self.offset as u64, self.detail)
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.detail)
    }
}

impl std::error::Error for DecodeError {}

fn put_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == ESCAPE {
            out.extend_from_slice(&[ESCAPE, ESCAPED_NUL]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[ESCAPE, TERMINATOR]);
}

/// A bounds-checked cursor: every read either succeeds or returns a [`DecodeError`].
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn err(&self, detail: impl Into<String>) -> DecodeError {
        DecodeError::new(self.pos, detail)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err(format!("truncated {what}: need {n} bytes")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn version(&mut self) -> Result<(), DecodeError> {
        let v = self.u8("format version")?;
        if v != FORMAT_VERSION {
            return Err(DecodeError::new(
                self.pos - 1,
                format!("unknown format version {v}, expected {FORMAT_VERSION}"),
            ));
        }
        Ok(())
    }

    /// Reads an escaped, terminated string. Output never exceeds the bytes consumed.
    fn escaped_string(&mut self, what: &str) -> Result<String, DecodeError> {
        let start = self.pos;
        let mut out = Vec::new();
        loop {
            let b = self.u8(what)?;
            if b != ESCAPE {
                out.push(b);
                continue;
            }
            match self.u8(what)? {
                ESCAPED_NUL => out.push(0),
                TERMINATOR => break,
                other => {
                    return Err(DecodeError::new(
                        self.pos - 1,
                        format!("bad escape byte 0x{other:02x} in {what}"),
                    ));
                }
            }
        }
        String::from_utf8(out)
            .map_err(|_| DecodeError::new(start, format!("{what} is not valid UTF-8")))
    }

    fn sized_bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let len = u16::from_be_bytes(self.array(what)?) as usize;
        self.take(len, what)
    }

    fn sized_string(&mut self, what: &str) -> Result<String, DecodeError> {
        let start = self.pos;
        let bytes = self.sized_bytes(what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| DecodeError::new(start, format!("{what} is not valid UTF-8")))
    }

    fn finish(&self, what: &str) -> Result<(), DecodeError> {
        if self.pos != self.buf.len() {
            return Err(self.err(format!(
                "{} trailing bytes after {what}",
                self.buf.len() - self.pos
            )));
        }
        Ok(())
    }

    fn reference(&mut self) -> Result<AddressableReference, DecodeError> {
        self.version()?;
        let addressable_type = self.escaped_string("addressable type")?;
        let key = match self.u8("key tag")? {
            TAG_STRING => Key::StringKey {
                key: self.escaped_string("string key")?,
            },
            TAG_I32 => Key::Int32Key {
                key: (u32::from_be_bytes(self.array("i32 key")?) ^ (1 << 31)) as i32,
            },
            TAG_I64 => Key::Int64Key {
                key: (u64::from_be_bytes(self.array("i64 key")?) ^ (1 << 63)) as i64,
            },
            TAG_NONE => Key::NoKey,
            other => {
                return Err(DecodeError::new(
                    self.pos - 1,
                    format!("unknown key tag 0x{other:02x}"),
                ));
            }
        };
        Ok(AddressableReference {
            addressable_type,
            key,
        })
    }

    fn node(&mut self) -> Result<NodeId, DecodeError> {
        self.version()?;
        let key = self.escaped_string("node key")?;
        let namespace = self.escaped_string("node namespace")?;
        Ok(NodeId { key, namespace })
    }
}

/// Appends the order-preserving encoding of `r` to `out`.
pub fn put_reference(out: &mut Vec<u8>, r: &AddressableReference) {
    out.push(FORMAT_VERSION);
    put_escaped(out, r.addressable_type.as_bytes());
    match &r.key {
        Key::StringKey { key } => {
            out.push(TAG_STRING);
            put_escaped(out, key.as_bytes());
        }
        Key::Int32Key { key } => {
            out.push(TAG_I32);
            out.extend_from_slice(&((*key as u32) ^ (1 << 31)).to_be_bytes());
        }
        Key::Int64Key { key } => {
            out.push(TAG_I64);
            out.extend_from_slice(&((*key as u64) ^ (1 << 63)).to_be_bytes());
        }
        Key::NoKey => out.push(TAG_NONE),
    }
}

/// The order-preserving encoding of a reference: the primary key of a lease.
pub fn encode_reference(r: &AddressableReference) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.addressable_type.len() + 16);
    put_reference(&mut out, r);
    out
}

/// Decodes [`encode_reference`]'s output; the whole slice must be consumed.
pub fn decode_reference(bytes: &[u8]) -> Result<AddressableReference, DecodeError> {
    let mut r = Reader::new(bytes);
    let reference = r.reference()?;
    r.finish("reference")?;
    Ok(reference)
}

/// Appends the order-preserving encoding of a node to `out`.
pub fn put_node(out: &mut Vec<u8>, node: &NodeId) {
    out.push(FORMAT_VERSION);
    put_escaped(out, node.key.as_bytes());
    put_escaped(out, node.namespace.as_bytes());
}

/// The order-preserving encoding of a node.
pub fn encode_node(node: &NodeId) -> Vec<u8> {
    let mut out = Vec::with_capacity(node.key.len() + node.namespace.len() + 5);
    put_node(&mut out, node);
    out
}

/// Decodes [`encode_node`]'s output; the whole slice must be consumed.
pub fn decode_node(bytes: &[u8]) -> Result<NodeId, DecodeError> {
    let mut r = Reader::new(bytes);
    let node = r.node()?;
    r.finish("node")?;
    Ok(node)
}

fn put_sized(out: &mut Vec<u8>, bytes: &[u8]) {
    // Input limits (rules.rs) keep every sized field far below u16::MAX; clamp defensively so
    // an unvalidated lease can never produce an undecodable encoding.
    let len = bytes.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

/// The value encoding of a lease (self-contained: it includes the reference).
pub fn encode_lease(lease: &AddressableLease) -> Vec<u8> {
    encode_lease_with_revision(lease, lease.revision)
}

/// [`encode_lease`] of `lease` as if its revision were `revision`: a writer that assigns the
/// revision encodes the caller's lease without cloning it.
pub fn encode_lease_with_revision(lease: &AddressableLease, revision: u64) -> Vec<u8> {
    let reference = encode_reference(&lease.reference);
    let mut out = Vec::with_capacity(
        reference.len() + lease.node_id.key.len() + lease.node_id.namespace.len() + 31,
    );
    out.push(FORMAT_VERSION);
    put_sized(&mut out, &reference);
    put_lease_fields(&mut out, lease, revision);
    out
}

/// Appends what follows the reference in both lease encodings: node key and namespace (sized),
/// `expires_at`, `renew_at`, `revision` (u64 BE).
fn put_lease_fields(out: &mut Vec<u8>, lease: &AddressableLease, revision: u64) {
    put_sized(out, lease.node_id.key.as_bytes());
    put_sized(out, lease.node_id.namespace.as_bytes());
    out.extend_from_slice(&lease.expires_at.0.to_be_bytes());
    out.extend_from_slice(&lease.renew_at.0.to_be_bytes());
    out.extend_from_slice(&revision.to_be_bytes());
}

/// Bytes of [`put_lease_fields`] after the node: three u64.
const LEASE_TIMES_LEN: usize = 24;

impl Reader<'_> {
    /// Reads [`put_lease_fields`]' output into the lease of `reference`, then checks that
    /// nothing follows.
    fn lease_fields(
        &mut self,
        reference: AddressableReference,
        what: &str,
    ) -> Result<AddressableLease, DecodeError> {
        let key = self.sized_string("node key")?;
        let namespace = self.sized_string("node namespace")?;
        let expires_at = Timestamp(self.u64("expires_at")?);
        let renew_at = Timestamp(self.u64("renew_at")?);
        let revision = self.u64("revision")?;
        self.finish(what)?;
        Ok(AddressableLease {
            reference,
            node_id: NodeId { key, namespace },
            expires_at,
            renew_at,
            revision,
        })
    }
}

/// Decodes [`encode_lease`]'s output; the whole slice must be consumed.
pub fn decode_lease(bytes: &[u8]) -> Result<AddressableLease, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let ref_start = r.pos + 2;
    let ref_bytes = r.sized_bytes("reference")?;
    let reference = decode_reference(ref_bytes).map_err(|e| DecodeError {
        offset: ref_start + e.offset,
        detail: e.detail,
    })?;
    r.lease_fields(reference, "lease")
}

/// The value encoding of a lease without its reference, for stores whose key already is the
/// encoded reference: format version, node key and namespace (u16 length + bytes each), then
/// `expires_at`, `renew_at` and `revision` (u64 BE). [`lease_value_index_fields`] reads the two
/// fields the indexes use straight off these bytes.
pub fn encode_lease_value(lease: &AddressableLease) -> Vec<u8> {
    let mut out = Vec::with_capacity(lease.node_id.key.len() + lease.node_id.namespace.len() + 29);
    out.push(FORMAT_VERSION);
    put_lease_fields(&mut out, lease, lease.revision);
    out
}

/// Decodes [`encode_lease_value`]'s output into the lease of `reference`; the whole slice must
/// be consumed.
pub fn decode_lease_value(
    reference: AddressableReference,
    bytes: &[u8],
) -> Result<AddressableLease, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    r.lease_fields(reference, "lease value")
}

/// The encoded node (comparable between two values for equality) and the `expires_at` of an
/// [`encode_lease_value`] value, without decoding it: what a store needs to tell whether a new
/// version of a lease moves its index entries. `None` if the value is too short to be one.
pub fn lease_value_index_fields(value: &[u8]) -> Option<(&[u8], Timestamp)> {
    let times = value
        .len()
        .checked_sub(LEASE_TIMES_LEN)
        .filter(|&at| at >= 1)?;
    let expires = u64::from_be_bytes(value.get(times..times + 8)?.try_into().ok()?);
    Some((&value[1..times], Timestamp(expires)))
}

/// The prefix shared by every node-index key of `node`.
pub fn node_index_prefix(node: &NodeId) -> Vec<u8> {
    encode_node(node)
}

/// The node-index key of a lease: encoded node ++ encoded reference.
pub fn node_index_key(node: &NodeId, r: &AddressableReference) -> Vec<u8> {
    let mut out = encode_node(node);
    put_reference(&mut out, r);
    out
}

/// Splits a node-index key back into node and reference.
pub fn decode_node_index_key(bytes: &[u8]) -> Result<(NodeId, AddressableReference), DecodeError> {
    let mut r = Reader::new(bytes);
    let node = r.node()?;
    let reference = r.reference()?;
    r.finish("node index key")?;
    Ok((node, reference))
}

/// The expiry-index key of a lease: `expires_at` BE ++ encoded reference.
pub fn expiry_index_key(expires_at: Timestamp, r: &AddressableReference) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + r.addressable_type.len() + 16);
    out.extend_from_slice(&expires_at.0.to_be_bytes());
    put_reference(&mut out, r);
    out
}

/// Exclusive upper bound of the expiry-index keys of leases expired at `now`
/// (`expires_at <= now`).
pub fn expiry_index_upper_bound(now: Timestamp) -> Vec<u8> {
    match now.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        // Everything expires at the end of time: no exclusive bound, use the largest prefix.
        None => vec![0xFF; 9],
    }
}

/// Splits an expiry-index key back into expiry and reference.
pub fn decode_expiry_index_key(
    bytes: &[u8],
) -> Result<(Timestamp, AddressableReference), DecodeError> {
    let mut r = Reader::new(bytes);
    let expires_at = Timestamp(r.u64("expiry")?);
    let reference = r.reference()?;
    r.finish("expiry index key")?;
    Ok((expires_at, reference))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key_strategy() -> impl Strategy<Value = Key> {
        prop_oneof![
            ".{0,12}".prop_map(|key| Key::StringKey { key }),
            "[\\x00-\\x02a]{0,4}".prop_map(|key| Key::StringKey { key }),
            any::<i32>().prop_map(|key| Key::Int32Key { key }),
            any::<i64>().prop_map(|key| Key::Int64Key { key }),
            Just(Key::NoKey),
        ]
    }

    fn reference_strategy() -> impl Strategy<Value = AddressableReference> {
        ("[\\x00:a-c]{1,6}", key_strategy()).prop_map(|(t, key)| AddressableReference {
            addressable_type: t,
            key,
        })
    }

    fn lease_strategy() -> impl Strategy<Value = AddressableLease> {
        (
            reference_strategy(),
            ".{1,8}",
            ".{1,8}",
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(reference, k, ns, e, r, rev)| AddressableLease {
                reference,
                node_id: NodeId::new(k, ns),
                expires_at: Timestamp(e),
                renew_at: Timestamp(r),
                revision: rev,
            })
    }

    proptest! {
        #[test]
        fn reference_order_is_byte_order(a in reference_strategy(), b in reference_strategy()) {
            let (ea, eb) = (encode_reference(&a), encode_reference(&b));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            prop_assert_eq!(decode_reference(&ea).unwrap(), a);
        }

        #[test]
        fn node_order_is_byte_order(a in (".{1,5}", ".{1,5}"), b in (".{1,5}", ".{1,5}")) {
            let (a, b) = (NodeId::new(a.0, a.1), NodeId::new(b.0, b.1));
            prop_assert_eq!(a.cmp(&b), encode_node(&a).cmp(&encode_node(&b)));
            prop_assert_eq!(decode_node(&encode_node(&a)).unwrap(), a);
        }

        #[test]
        fn lease_round_trips(l in lease_strategy()) {
            prop_assert_eq!(decode_lease(&encode_lease(&l)).unwrap(), l);
        }

        #[test]
        fn lease_value_round_trips_and_exposes_node_and_expiry(l in lease_strategy(), m in lease_strategy()) {
            let (v, w) = (encode_lease_value(&l), encode_lease_value(&m));
            prop_assert_eq!(decode_lease_value(l.reference.clone(), &v).unwrap(), l.clone());
            let (node_l, exp_l) = lease_value_index_fields(&v).unwrap();
            let (node_m, _) = lease_value_index_fields(&w).unwrap();
            prop_assert_eq!(node_l == node_m, l.node_id == m.node_id);
            prop_assert_eq!(exp_l, l.expires_at);
        }

        #[test]
        fn index_keys_round_trip(l in lease_strategy()) {
            let nk = node_index_key(&l.node_id, &l.reference);
            prop_assert!(nk.starts_with(&node_index_prefix(&l.node_id)));
            prop_assert_eq!(decode_node_index_key(&nk).unwrap(), (l.node_id.clone(), l.reference.clone()));
            let ek = expiry_index_key(l.expires_at, &l.reference);
            prop_assert_eq!(decode_expiry_index_key(&ek).unwrap(), (l.expires_at, l.reference.clone()));
            let bound = expiry_index_upper_bound(l.expires_at);
            prop_assert!(ek < bound);
            if l.expires_at.0 > 0 {
                prop_assert!(ek >= expiry_index_upper_bound(Timestamp(l.expires_at.0 - 1)));
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = decode_reference(&bytes);
            let _ = decode_node(&bytes);
            let _ = decode_lease(&bytes);
            let _ = decode_node_index_key(&bytes);
            let _ = decode_expiry_index_key(&bytes);
            let _ = decode_lease_value(AddressableReference::new("T", Key::NoKey), &bytes);
            let _ = lease_value_index_fields(&bytes);
        }

        #[test]
        fn mutated_leases_never_panic(l in lease_strategy(), at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
            let mut e = encode_lease(&l);
            let i = at % e.len();
            e[i] = byte;
            let _ = decode_lease(&e);
            e.truncate(cut % (e.len() + 1));
            prop_assert!(decode_lease(&e).is_err() || e.len() == encode_lease(&l).len());
        }
    }

    #[test]
    fn string_and_int_keys_never_collide() {
        let s = AddressableReference::new("T", Key::string("42"));
        let i = AddressableReference::new("T", Key::Int32Key { key: 42 });
        let l = AddressableReference::new("T", Key::Int64Key { key: 42 });
        assert_ne!(encode_reference(&s), encode_reference(&i));
        assert_ne!(encode_reference(&i), encode_reference(&l));
        let colon_a = AddressableReference::new("a:b", Key::string("c"));
        let colon_b = AddressableReference::new("a", Key::string("b:c"));
        assert_ne!(encode_reference(&colon_a), encode_reference(&colon_b));
    }

    #[test]
    fn errors_name_the_offset() {
        let mut e = encode_lease(&AddressableLease::new(
            AddressableReference::new("T", Key::NoKey),
            NodeId::new("n", "ns"),
            Timestamp(5),
            Timestamp(4),
        ));
        e[0] = 9;
        let err = decode_lease(&e).unwrap_err();
        assert_eq!(err.offset, 0);
        assert!(err.detail.contains("version 9"), "{err}");
        let c = err.into_corruption(Path::new("/d/wal"), 100);
        assert!(c.to_string().contains("/d/wal at offset 100"), "{c}");
    }

    #[test]
    fn huge_claimed_length_does_not_allocate() {
        // version + u16 length 0xFFFF with 3 bytes behind it: must fail fast, not read past.
        let bytes = [FORMAT_VERSION, 0xFF, 0xFF, 1, 2, 3];
        assert!(decode_lease(&bytes).is_err());
    }
}
