//! The one error type of the runc front end.

use std::path::PathBuf;

/// Why a `vessel-runc` command failed. Every variant names the offending value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The container runtime refused or failed.
    #[error(transparent)]
    Runtime(#[from] vessel_container::Error),
    /// A flag or argument that is malformed or contradicts another.
    #[error("{0}")]
    Usage(String),
    /// A runc feature vessel does not implement, asked for explicitly.
    #[error("{0} is not supported by vessel")]
    Unsupported(String),
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON input (process, resources) that does not parse.
    #[error("{what} {path}: {reason}")]
    BadJson {
        /// What the file should hold.
        what: &'static str,
        /// The file (`-` for stdin).
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: String,
        /// The errno.
        source: nix::Error,
    },
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
