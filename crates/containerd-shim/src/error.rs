//! The shim's one error type, and how each kind reaches containerd as a ttrpc status.

use std::path::PathBuf;

use containerd_shim::protos::ttrpc::{self, Code};
use vessel_engine::EngineError;

/// Everything that can go wrong in the shim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the engine (the bundle's runtime).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A request field or option vessel cannot honour; names it.
    #[error("{0}")]
    Invalid(String),
    /// A task or exec process this shim does not know.
    #[error("{0}")]
    NotFound(String),
    /// An operation the process's state forbids.
    #[error("{0}")]
    Conflict(String),
    /// A request vessel does not implement (checkpoints...).
    #[error("{0} is not supported by vessel")]
    Unsupported(String),
    /// A filesystem or descriptor operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// To what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// From the containerd-shim library (mounts, publishing).
    #[error("{0}")]
    Shim(String),
}

impl Error {
    /// Wraps an I/O error with its operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The gRPC code containerd maps to its own error kinds (`errdefs`).
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) | Error::Engine(EngineError::NoSuchInstance(_)) => Code::NOT_FOUND,
            Error::Invalid(_) | Error::Engine(EngineError::InvalidFlag(_)) => {
                Code::INVALID_ARGUMENT
            }
            Error::Conflict(_) | Error::Engine(EngineError::Conflict(_)) => {
                Code::FAILED_PRECONDITION
            }
            Error::Unsupported(_) => Code::UNIMPLEMENTED,
            _ => Code::UNKNOWN,
        }
    }
}

impl From<containerd_shim::Error> for Error {
    fn from(e: containerd_shim::Error) -> Error {
        Error::Shim(e.to_string())
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// Result alias for the shim.
pub type Result<T, E = Error> = std::result::Result<T, E>;
