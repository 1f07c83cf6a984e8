//! The image crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while storing, unpacking, importing or transferring images.
///
/// Messages name the offending value so that the CLI can print them as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name or id that matches no image in the store.
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// An image reference (`name[:tag][@digest]`) that does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A digest string that is not `sha256:<64 hex>`.
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    /// Content whose hash differs from the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being verified (a blob, a layer's diff id).
        what: String,
        /// The digest the content was announced with.
        expected: String,
        /// The digest the content actually has.
        actual: String,
    },
    /// Content shorter or longer than its announced size.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was being verified.
        what: String,
        /// The announced size.
        expected: u64,
        /// The size actually read.
        actual: u64,
    },
    /// A blob the store should hold but does not.
    #[error("blob {0} is missing from the store")]
    BlobMissing(String),
    /// A manifest, index or config that is not valid JSON of the expected shape.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which document (manifest, config, index, archive manifest.json).
        what: String,
        /// The parser's message.
        reason: String,
    },
    /// A media type vessel does not know how to handle.
    #[error("unknown media type {0:?}")]
    UnknownMediaType(String),
    /// A layer tar entry that would escape or corrupt the layer directory.
    #[error("hostile layer entry {entry:?}: {reason}")]
    HostileEntry {
        /// The entry's path as written in the tar.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Input over one of vessel's size limits: a tar header, a JSON document, or a layer
    /// bigger than the disk budget. Nothing of it was kept.
    #[error("{what} is {}, over the {} {limit_name}", crate::limits::human(*size), crate::limits::human(*limit))]
    TooLarge {
        /// What was too large (names the layer, entry or document).
        what: String,
        /// Its size, or the size reached when it was stopped.
        size: u64,
        /// The limit it went over.
        limit: u64,
        /// Which limit that is ("limit", "disk budget ...").
        limit_name: &'static str,
    },
    /// An image still in use (by a container or by another tag) that cannot be removed.
    #[error("image {0} is in use: {1}")]
    InUse(String, String),
    /// No manifest for linux/amd64 in a multi-platform index.
    #[error("no linux/amd64 image in the index of {0}")]
    NoMatchingPlatform(String),
    /// Registry protocol or transport error.
    #[error("registry {registry}: {reason}")]
    Registry {
        /// The registry host.
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// The tag database failed.
    #[error("image database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A filesystem operation failed; the path names where.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (open, write, rename...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A registry refused the credentials given to `login`.
    #[error("registry {0}: unauthorized: incorrect username or password")]
    Unauthorized(String),
    /// Stored registry credentials that cannot be read or written (`config.json`, a
    /// credential helper).
    #[error("credentials: {0}")]
    Credentials(String),
    /// A bad argument from the user (unknown `--change` instruction, unsupported source).
    #[error("{0}")]
    InvalidInput(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the operation and path it came from.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// Wraps a rustix errno the same way as [`Error::io`].
    pub fn errno(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(rustix::io::Errno) -> Error {
        let path = path.into();
        move |e| Error::Io {
            op,
            path,
            source: e.into(),
        }
    }

    /// A malformed-document error.
    pub fn malformed(what: impl Into<String>, reason: impl ToString) -> Error {
        Error::Malformed {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
