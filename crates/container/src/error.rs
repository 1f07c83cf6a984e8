//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while creating, running or inspecting a container.
///
/// Messages name the offending path, value or container id so they can be shown to a
/// user as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The container id is empty or contains characters that are unsafe in a path.
    #[error("invalid container id {0:?}: use 1-128 characters from [A-Za-z0-9_.-], not starting with '.'")]
    InvalidId(String),

    /// The bundle's config.json could not be read or parsed.
    #[error("cannot load OCI spec {path}: {reason}")]
    LoadSpec {
        /// Path of the config.json.
        path: PathBuf,
        /// Why it could not be loaded.
        reason: String,
    },

    /// A user or group could not be resolved (`exec -u name`).
    #[error("{0}")]
    User(String),

    /// The spec asks for something invalid or unsupported; nothing was created.
    #[error("invalid OCI spec: {0}")]
    InvalidSpec(String),

    /// A container with this id already exists in the state root.
    #[error("container {0:?} already exists; delete it first")]
    AlreadyExists(String),

    /// No container with this id exists in the state root.
    #[error("container {0:?} does not exist")]
    NotFound(String),

    /// The operation is not allowed in the container's current status.
    #[error("container {id:?} is {status}: cannot {op}")]
    InvalidStatus {
        /// Container id.
        id: String,
        /// Its current status.
        status: String,
        /// The refused operation.
        op: &'static str,
    },

    /// The process's executable was not found in the container (callers map this to exit code 127).
    #[error("executable {0:?} not found in the container's $PATH or root filesystem")]
    ExecutableNotFound(String),

    /// The process's executable exists but cannot be executed (callers map this to exit code 126).
    #[error("executable {path:?} cannot be executed: {reason}")]
    NotExecutable {
        /// The resolved path inside the container.
        path: String,
        /// Why (permission denied, is a directory...).
        reason: String,
    },

    /// A system call failed on a path.
    #[error("{op} {path}: {source}")]
    Sys {
        /// What was being done ("mount", "mkdir", ...).
        op: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },

    /// A system call that does not act on a path failed.
    #[error("{op}: {source}")]
    Syscall {
        /// What was being done ("fork", "setns(net)", ...).
        op: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },

    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A cgroup file held an unexpected value, or no usable cgroup hierarchy exists.
    #[error("cgroup: {0}")]
    Cgroup(String),

    /// The device-cgroup eBPF program could not be loaded or attached to the cgroup.
    #[error("device cgroup for {path}: cannot {step}: {source}{log}")]
    DeviceFilter {
        /// The step that failed ("load the eBPF program (BPF_PROG_LOAD)", ...).
        step: &'static str,
        /// The cgroup2 directory.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
        /// The end of the verifier's log, if it said anything.
        log: String,
    },

    /// The seccomp profile could not be compiled into BPF.
    #[error("seccomp: {0}")]
    Seccomp(String),

    /// The container's init reported a failure while setting the container up.
    #[error("container init failed: {0}")]
    InitFailed(String),

    /// The container's process exited or vanished before it could be started.
    #[error("container {0:?} init process is gone (it exited or was killed before start)")]
    InitGone(String),

    /// The persisted state of a container is unreadable.
    #[error("corrupt state file {path}: {reason}")]
    CorruptState {
        /// The state.json path.
        path: PathBuf,
        /// Parse error.
        reason: String,
    },

    /// The console socket protocol failed.
    #[error("console socket {path}: {reason}")]
    ConsoleSocket {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Shorthand for `Result<T, vessel_container::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A failed syscall on `path`.
    pub(crate) fn sys(op: &'static str, path: impl Into<PathBuf>, source: nix::Error) -> Self {
        Error::Sys {
            op,
            path: path.into(),
            source,
        }
    }

    /// A failed syscall not tied to a path.
    pub(crate) fn syscall(op: impl Into<String>, source: nix::Error) -> Self {
        Error::Syscall {
            op: op.into(),
            source,
        }
    }

    /// A failed file operation.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The exit code a shell (and Docker) reports for this error when it prevents the
    /// process from running: 127 for "not found", 126 for "not executable", else `None`.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Error::ExecutableNotFound(_) => Some(127),
            Error::NotExecutable { .. } => Some(126),
            _ => None,
        }
    }
}
