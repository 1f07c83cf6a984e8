//! virtio-net: one Ethernet interface (`eth0` in the guest) backed by a host tap device.

pub(crate) mod device;

pub(crate) use device::Net;

/// What can go wrong with the network device.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    /// The driver's virtqueue (rings, indices) is corrupt.
    #[error("the guest's virtqueue is corrupt: {0}")]
    Queue(virtio_queue::Error),
    /// A buffer chain breaks the rules for its queue.
    #[error("malformed buffer (descriptor chain head {head}): {reason}")]
    Chain {
        /// Head index of the offending chain.
        head: u16,
        /// What is wrong with it.
        reason: String,
    },
    /// The tap descriptor could not be prepared for the device.
    #[error("cannot set up the tap device: {0}")]
    Tap(std::io::Error),
}
