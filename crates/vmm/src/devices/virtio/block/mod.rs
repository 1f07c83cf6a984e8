//! virtio-blk: a raw disk image as a guest block device.

pub(crate) mod device;
pub(crate) mod request;

pub(crate) use device::Block;

use std::path::PathBuf;

/// What can go wrong with a block device.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BlockError {
    /// Opening the backing file failed.
    #[error("cannot open disk image {path}: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Finding the backing file's size failed.
    #[error("cannot get the size of disk image {path}: {source}")]
    Size {
        /// The image.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The driver's virtqueue (rings, indices) is corrupt.
    #[error("the guest's virtqueue is corrupt: {0}")]
    Queue(virtio_queue::Error),
    /// A request's descriptor chain breaks the virtio-blk rules.
    #[error("malformed request (descriptor chain head {head}): {source}")]
    Request {
        /// Head index of the offending chain.
        head: u16,
        /// What is wrong with it.
        source: request::RequestError,
    },
}
