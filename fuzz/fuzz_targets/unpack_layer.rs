//! Feeds arbitrary bytes to the layer unpacker (as a plain, gzip or zstd tar) and checks
//! that it never panics, never writes outside its layer directory, and never writes more
//! than its disk budget (a small one, so a fuzzed decompression or sparse bomb cannot fill
//! the fuzzing machine's disk either).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The budget each input is unpacked within.
const BUDGET: u64 = 16 << 20;

/// Bytes of the regular files under `p`, each inode counted once (hard links share data).
fn bytes_under(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && seen.insert(m.ino()) {
                total += m.len();
            }
        }
    }
    total
}

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layer = tmp.path().join("layer");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&layer).expect("mkdir");
    std::fs::create_dir(&outside).expect("mkdir");
    let _ = vessel_image::unpack::unpack_layer_within(data, &layer, BUDGET);
    let escaped = std::fs::read_dir(tmp.path()).expect("read_dir").count() != 2
        || std::fs::read_dir(&outside)
            .expect("read_dir")
            .next()
            .is_some();
    assert!(!escaped, "the unpacker wrote outside its layer directory");
    let written = bytes_under(&layer);
    assert!(
        written <= BUDGET,
        "the unpacker wrote {written} bytes over a {BUDGET} budget"
    );
});
