//! Image references and digests come from users and from registries: parsing must never
//! panic, and whatever parses must print back to something that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vessel_image::{Digest, Reference};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = s.parse::<Reference>() {
        let again: Reference = r.to_string().parse().expect("a printed reference parses");
        assert_eq!(again.tag_key(), r.tag_key());
        assert_eq!(again.digest(), r.digest());
    }
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
    }
});
