//! A guest drives a virtio-blk device through its virtio-mmio registers with any sequence
//! of accesses (bad queue sizes and ring addresses, status changes in any order,
//! notifications) over guest memory it fills itself: no panic, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_vmm::fuzzing::mmio_queue(data);
});
