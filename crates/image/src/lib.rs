//! vessel's OCI image layer, shared by the container and the microVM backends.
//!
//! - [`store`]: content-addressed blobs, tags in SQLite, one unpacked directory per layer.
//! - [`unpack`]: hostile-tar-safe layer extraction with overlayfs-style whiteouts.
//! - [`import`]: a root filesystem directory or tar becomes an image.
//! - [`registry`]: pull from and push to OCI/Docker registries.
//! - [`archive`]: load and save docker-archive and oci-archive tars.
//! - [`limits`]: the size limits hostile input is held to, and the disk budget.
//! - [`reference`], [`digest`]: the names and hashes everything is keyed by.

pub mod archive;
#[cfg(feature = "registry")]
pub mod credentials;
pub mod digest;
pub mod error;
pub mod import;
pub mod limits;
pub mod manifest;
pub mod progress;
pub mod reference;
#[cfg(feature = "registry")]
pub mod registry;
pub mod store;
mod tar_guard;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
pub use reference::Reference;
pub use store::{ImageRecord, LayerRecord, Store, StoreOptions};
