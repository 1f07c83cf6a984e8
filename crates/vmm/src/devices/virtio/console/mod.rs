//! virtio-console: one port (`/dev/hvc0` in the guest) bridged to a host stream, used as
//! the guest agent's control channel.

pub(crate) mod device;

pub(crate) use device::Console;

/// What can go wrong with the console device.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
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
    /// The host end could not be set up.
    #[error("cannot make the console backend non-blocking: {0}")]
    Backend(std::io::Error),
}
