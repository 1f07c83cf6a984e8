//! The one interface the engine drives both isolations through.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::catalogue::Instance;
use super::Result;

/// The standard streams an instance's process gets.
pub enum Stdio {
    /// Pipes (or any fds): the monitor holds the other ends.
    Fds {
        /// Read end for the process's stdin.
        stdin: OwnedFd,
        /// Write end for its stdout.
        stdout: OwnedFd,
        /// Write end for its stderr.
        stderr: OwnedFd,
    },
    /// A pseudo-terminal; the backend returns the master.
    Pty,
}

/// A started instance.
pub struct Started {
    /// Its main process on the host: the process to wait for.
    pub pid: i32,
    /// The terminal master, with [`Stdio::Pty`].
    pub pty_master: Option<OwnedFd>,
    /// Holds what the instance's exit would otherwise tear down on its way out (a
    /// container's mount namespace): dropped by the monitor after its last report, so
    /// that the exit is reported without waiting for that.
    pub teardown: Option<OwnedFd>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub code: i32,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
}

/// A process started inside a running instance by `exec`.
pub struct Exec {
    /// Its pid on the host (a child of the caller).
    pub pid: i32,
    /// The terminal master, if a terminal was asked for.
    pub pty_master: Option<OwnedFd>,
}

/// What `exec` runs.
pub struct ExecRequest {
    /// argv.
    pub args: Vec<String>,
    /// Extra environment (`K=V`), on top of the instance's.
    pub env: Vec<String>,
    /// Working directory (the instance's if `None`).
    pub workdir: Option<String>,
    /// User (the instance's if `None`).
    pub user: Option<String>,
    /// Allocate a terminal.
    pub tty: bool,
}

/// What an instance uses, read now (`stats`). `None`: not known for this isolation.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// CPU time used since it started, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, bytes.
    pub memory: u64,
    /// Its memory limit, bytes (`None`: none).
    pub memory_limit: Option<u64>,
    /// Processes (tasks).
    pub pids: Option<u64>,
    /// Bytes received and sent on its network interfaces.
    pub net: Option<(u64, u64)>,
    /// Bytes read from and written to block devices.
    pub block: Option<(u64, u64)>,
}

/// New limits for a running instance (`update`); `None` leaves one as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Memory limit, bytes.
    pub memory: Option<u64>,
    /// CPUs (quota).
    pub cpus: Option<f64>,
    /// Process limit (`-1`: none).
    pub pids_limit: Option<i64>,
    /// CPU weight.
    pub cpu_shares: Option<u64>,
    /// CPUs allowed.
    pub cpuset_cpus: Option<String>,
}

/// The error of an operation `isolation` does not have.
pub fn unsupported(inst: &Instance, what: &str) -> super::EngineError {
    super::EngineError::Conflict(format!(
        "{what} is not supported for {} instances yet ({} is a {})",
        inst.request.isolation.as_str(),
        inst.name,
        if inst.request.isolation == super::request::Isolation::Vm {
            "microVM"
        } else {
            "container"
        }
    ))
}

/// One isolation technology. Every method may run in a different process from the one
/// that created the instance: all state is on disk under `dir` or in the backend's own
/// runtime directory.
pub trait Backend: Sync {
    /// Lays out what the instance needs (a bundle, a disk) under its directory `dir`.
    /// `layers` are the image's unpacked layer directories, bottom first.
    fn prepare(&self, inst: &Instance, dir: &Path, layers: &[PathBuf]) -> Result<()>;
    /// Starts the instance (called in its monitor, which becomes the process's parent).
    fn start(&self, inst: &Instance, dir: &Path, stdio: Stdio) -> Result<Started>;
    /// Waits for the started process to end (in the monitor) and reports how.
    fn wait(&self, inst: &Instance, started: &Started) -> Result<Exit>;
    /// Whether the kernel's OOM killer ended the instance (asked once its main process
    /// has exited, before [`Backend::cleanup`]).
    fn oom_killed(&self, _inst: &Instance) -> bool {
        false
    }
    /// Sends a signal to the instance's main process.
    fn kill(&self, inst: &Instance, signal: i32) -> Result<()>;
    /// Whether the instance's main process still exists (even with its monitor gone).
    fn alive(&self, inst: &Instance) -> bool;
    /// Runs another process inside the running instance.
    fn exec(&self, inst: &Instance, dir: &Path, req: &ExecRequest, stdio: Stdio) -> Result<Exec>;
    /// Removes everything the instance holds on the host (processes, cgroups, devices),
    /// except its directory. Idempotent; works after any crash.
    fn cleanup(&self, inst: &Instance, dir: &Path) -> Result<()>;
    /// Freezes every process of the running instance (`pause`).
    fn pause(&self, inst: &Instance) -> Result<()> {
        Err(unsupported(inst, "pause"))
    }
    /// Thaws what [`Backend::pause`] froze.
    fn resume(&self, inst: &Instance) -> Result<()> {
        Err(unsupported(inst, "unpause"))
    }
    /// Whether the instance is paused.
    fn paused(&self, _inst: &Instance) -> bool {
        false
    }
    /// The host pids of the instance's processes (`top`).
    fn processes(&self, inst: &Instance) -> Result<Vec<i32>> {
        Err(unsupported(inst, "top"))
    }
    /// What it uses now (`stats`).
    fn usage(&self, inst: &Instance) -> Result<Usage> {
        Err(unsupported(inst, "stats"))
    }
    /// Changes its limits while it runs (`update`).
    fn update(&self, inst: &Instance, _limits: &Limits) -> Result<()> {
        Err(unsupported(inst, "update"))
    }
}
