//! Virtio devices and the virtio-mmio transport that exposes them to the guest.

pub(crate) mod balloon;
pub(crate) mod block;
pub(crate) mod console;
pub(crate) mod mmio;
pub(crate) mod net;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// `VIRTIO_F_VERSION_1`: the modern (virtio 1.x) interface; required by mmio version 2.
pub(crate) const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio 1.2, 2.1); the full set, some only used by tests.
#[allow(dead_code)]
pub(crate) mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// Boxed device error, so the transport can hold any device.
pub(crate) type DeviceError = Box<dyn std::error::Error + Send + Sync>;

/// A virtio device model behind a transport. The transport owns the queues and the
/// negotiation; the device only sees negotiated features and queues to process.
pub(crate) trait VirtioDevice: Send {
    /// Virtio device id (2 = block).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features offered to the driver.
    fn features(&self) -> u64;
    /// Reads device configuration space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes to device configuration space (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK with these features.
    fn activate(&mut self, _acked_features: u64) {}
    /// Consumes what the driver made available on queue `index`; returns whether any
    /// buffer was put in the used ring (so the driver must be interrupted). An error means
    /// the driver broke the virtio contract: the transport then sets NEEDS_RESET and stops
    /// serving the device until the driver resets it.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError>;
    /// A host-side file descriptor the device wants to hear about (readable or writable,
    /// edge-triggered), e.g. the console's stream.
    fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The backend fd became ready (or the device was just activated): move data between
    /// it and the queues. Same contract as [`VirtioDevice::process_queue`].
    fn process_backend(
        &mut self,
        _queues: &mut [Queue],
        _mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        Ok(false)
    }
    /// The driver reset the device.
    fn reset(&mut self) {}
}
