//! The persistence config as read from TOML: never a panic, and a config that parses is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orbit_persistence_core::PersistenceConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = PersistenceConfig::from_toml_str(text) else {
        return;
    };
    config
        .validate()
        .expect("from_toml_str returned an invalid config");
});
