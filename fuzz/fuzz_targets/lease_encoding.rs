//! Every key and value decoder of the lease encoding: never a panic, and whatever decodes
//! encodes back to the same bytes (so no two byte strings mean the same lease).
#![no_main]

use libfuzzer_sys::fuzz_target;
use orbit_persistence_core::encoding::{
    decode_expiry_index_key, decode_lease, decode_lease_value, decode_node, decode_node_index_key,
    decode_reference, encode_lease, encode_node, encode_reference, expiry_index_key,
    lease_value_index_fields, node_index_key,
};
use orbit_persistence_core::{AddressableReference, Key};

fuzz_target!(|data: &[u8]| {
    if let Ok(lease) = decode_lease(data) {
        assert_eq!(encode_lease(&lease), data, "a lease with two encodings");
    }
    if let Ok(r) = decode_reference(data) {
        assert_eq!(encode_reference(&r), data, "a reference with two encodings");
    }
    if let Ok(n) = decode_node(data) {
        assert_eq!(encode_node(&n), data, "a node with two encodings");
    }
    if let Ok((n, r)) = decode_node_index_key(data) {
        assert_eq!(node_index_key(&n, &r), data);
    }
    if let Ok((t, r)) = decode_expiry_index_key(data) {
        assert_eq!(expiry_index_key(t, &r), data);
    }
    let reference = AddressableReference::new("Fuzz", Key::string("k"));
    let _ = decode_lease_value(reference, data);
    let _ = lease_value_index_fields(data);
});
