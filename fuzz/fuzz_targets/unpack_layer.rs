//! Feeds arbitrary bytes to the layer unpacker (as a plain, gzip or zstd tar) and checks
//! that it never panics and never writes outside its layer directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layer = tmp.path().join("layer");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&layer).expect("mkdir");
    std::fs::create_dir(&outside).expect("mkdir");
    let _ = vessel_image::unpack::unpack_layer(data, &layer);
    let escaped = std::fs::read_dir(tmp.path()).expect("read_dir").count() != 2
        || std::fs::read_dir(&outside).expect("read_dir").next().is_some();
    assert!(!escaped, "the unpacker wrote outside its layer directory");
});
