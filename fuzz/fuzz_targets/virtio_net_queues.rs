//! Guest-controlled virtio-net receive and transmit rings (arbitrary descriptors) and
//! host frames of arbitrary sizes, processed in an arbitrary order: no panic, no hang,
//! no access outside guest memory, no out-of-bounds frame handed to the host.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vessel_vmm::fuzzing::net_queues(data);
});
