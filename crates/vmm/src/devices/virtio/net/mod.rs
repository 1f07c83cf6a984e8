//! virtio-net: one Ethernet interface (`eth0` in the guest) backed by a host tap device.

pub(crate) mod device;

pub(crate) use device::Net;

/// What can go wrong with the network device.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    /// The driver broke the virtio contract on one of the queues.
    #[error(transparent)]
    Ring(#[from] crate::devices::virtio::RingError),
    /// The tap descriptor could not be prepared for the device.
    #[error("cannot set up the tap device: {0}")]
    Tap(std::io::Error),
}
