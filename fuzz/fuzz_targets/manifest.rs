//! Manifests and indexes come from registries and archives: the parser must never panic,
//! whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vessel_image::manifest::parse(data, "fuzzed manifest");
});
