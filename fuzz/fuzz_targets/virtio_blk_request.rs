//! A guest writes any descriptors it likes into a virtio-blk queue: chains that loop, leave
//! the table, point outside guest memory or claim huge lengths must be rejected or served
//! without a panic, a hang or a host access outside guest memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_vmm::fuzzing::blk_request(data);
});
