//! virtio-console: one port (`/dev/hvc0` in the guest) bridged to a host stream, used as
//! the guest agent's control channel.

pub(crate) mod device;

pub(crate) use device::Console;

/// What can go wrong with the console device.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    /// The driver broke the virtio contract on one of the queues.
    #[error(transparent)]
    Ring(#[from] crate::devices::virtio::RingError),
    /// The host end could not be set up.
    #[error("cannot make the console backend non-blocking: {0}")]
    Backend(std::io::Error),
}
