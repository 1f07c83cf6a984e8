//! Creating the container's processes.
//!
//! ```text
//! caller ──fork──> intermediate ──unshare(namespaces)──clone(CLONE_PARENT)──> init (pid 1)
//!   │                 │ (exits once it reported init's pid)                    │
//!   └──────────── sync socket: UserNsReady/Go/Pid ─────── PtyMaster/Ready/Error┘
//! ```
//! The caller forks with glibc's fork (safe in a multi-threaded caller); the
//! single-threaded intermediate unshares the namespaces, which for CLONE_NEWPID only
//! affects its children, and clones init with CLONE_PARENT so init is a direct child of the
//! caller, which can waitpid it. exec follows the same shape with setns instead of unshare.

pub(crate) mod channel;
mod init;
pub(crate) mod setup;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

use crate::cgroups::Cgroup;
use crate::config::{ContainerConfig, ProcessConfig};
use crate::error::{Error, Result};
use channel::{Channel, Msg};

/// Where the container process's stdin/stdout/stderr come from.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The caller's own stdin/stdout/stderr.
    #[default]
    Inherit,
    /// These descriptors (e.g. pipe ends); the runtime closes its copies once the process
    /// has them.
    Fds {
        /// Becomes fd 0.
        stdin: OwnedFd,
        /// Becomes fd 1.
        stdout: OwnedFd,
        /// Becomes fd 2.
        stderr: OwnedFd,
    },
    /// A new pseudo-terminal from the container's devpts; its slave is the process's
    /// controlling terminal and stdio, its master is handed back to the caller.
    Pty,
}

impl Stdio {
    fn fds(&self) -> Option<[RawFd; 3]> {
        match self {
            Stdio::Fds {
                stdin,
                stdout,
                stderr,
            } => Some([stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()]),
            _ => None,
        }
    }
}

/// A process the runtime started, with the pty master when one was asked for.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: Pid,
    pub pty_master: Option<OwnedFd>,
}

/// Kills and reaps a child unless disarmed: no stray process when setup fails.
struct ChildGuard(Option<Pid>);

impl ChildGuard {
    fn disarm(mut self) -> Pid {
        self.0.take().unwrap_or(Pid::from_raw(0))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// Fork the intermediate and run `child` in it (it must end the process).
fn fork_child(child: impl FnOnce()) -> Result<Pid> {
    // SAFETY: glibc's fork runs its atfork handlers, so malloc is usable in the child even
    // if the caller is multi-threaded. The child code never logs (tracing/stdio locks
    // could be held by vanished threads) and leaves with _exit.
    match unsafe { fork() }.map_err(|e| Error::syscall("fork", e))? {
        ForkResult::Child => {
            // Until its final execve, nothing of the container may ptrace this process
            // or open its /proc files (exe, fds, memory): execve restores dumpable.
            // SAFETY: prctl on the calling process only.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
            // `child` ends with _exit; never fall back into the caller's code.
            child();
            setup::exit(127)
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Write the id maps of a process that just unshared its user namespace.
pub(crate) fn write_id_maps(pid: Pid, cfg: &ContainerConfig) -> Result<()> {
    let render = |maps: &[oci_spec::runtime::LinuxIdMapping]| {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    for (file, maps) in [
        ("uid_map", &cfg.uid_mappings),
        ("gid_map", &cfg.gid_mappings),
    ] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, render(maps)).map_err(|e| Error::io("write", &path, e))?;
    }
    Ok(())
}

/// The pid the intermediate reports. The process it cloned shares the channel and may
/// already be warning (e.g. about a capped rlimit) before the intermediate has spoken.
fn expect_pid(chan: &Channel) -> Result<Pid> {
    loop {
        match chan.recv()? {
            Some((Msg::Pid(p), _)) => return Ok(Pid::from_raw(p)),
            Some((Msg::Warning(w), _)) => tracing::debug!("{w}"),
            Some((Msg::Error(e), _)) => return Err(e.into()),
            Some((other, _)) => {
                return Err(Error::InitFailed(format!("unexpected message {other:?}")))
            }
            None => {
                return Err(Error::InitFailed(
                    "the setup process exited without reporting the container's pid".into(),
                ))
            }
        }
    }
}

/// Start the container init, leave it blocked on `fifo` and return once it is ready.
///
/// `prepare_cgroup` creates the container's cgroup and applies its limits. Without a
/// user namespace it runs first, and the intermediate moves itself in and creates the
/// init there, without the kernel's global cgroup lock (see `cgroups::SelfJoin`). With
/// one (whose root may not join cgroups), it runs once the init exists, while the init
/// sets up its root filesystem, and then the init is moved in by us, which waits an RCU
/// grace period. Either way the init goes on to what depends on its cgroup (its cgroup
/// namespace and mounts), and later runs anything of the container's, only once it is
/// in.
pub(crate) fn spawn_init(
    cfg: &ContainerConfig,
    cgroup: &Cgroup,
    stdio: Stdio,
    fifo: &Path,
    prepare_cgroup: impl FnOnce() -> Result<()>,
) -> Result<Spawned> {
    let (ours, theirs) = Channel::pair()?;
    // Opened here, as real root, so init needs no access to the state dir (it may run
    // as an unprivileged host uid in a user namespace). Read-only and non-blocking: the
    // open succeeds without a writer, and init's poll waits for `start` to write.
    let fifo_fd = nix::fcntl::open(
        fifo,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open exec fifo", fifo, e))?;
    let stdio_fds = stdio.fds();
    let ours_raw = ours.raw();
    // Either the cgroup is made now and the intermediate joins it itself, or it is made
    // and joined for the init later.
    let (join, prepare_later) = if cfg.has_ns(CloneFlags::CLONE_NEWUSER) {
        (None, Some(prepare_cgroup))
    } else {
        prepare_cgroup()?;
        (Some(cgroup.self_join()?), None)
    };
    let child = fork_child(|| {
        // SAFETY: closing our copy of the runtime's end in the child only.
        unsafe { libc::close(ours_raw) };
        init::intermediate(cfg, cgroup, theirs, stdio_fds, &fifo_fd, join.as_ref())
    })?;
    drop(join);
    drop(stdio);
    // Only init may hold the read side, or `start` could not tell whether it waits.
    drop(fifo_fd);
    let guard = ChildGuard(Some(child));
    if cfg.new_ns(CloneFlags::CLONE_NEWUSER) {
        match ours.recv()? {
            Some((Msg::UserNsReady, _)) => write_id_maps(child, cfg)?,
            Some((Msg::Error(e), _)) => return Err(e.into()),
            other => {
                return Err(Error::InitFailed(format!(
                    "expected the user namespace, got {other:?}"
                )))
            }
        }
    }
    ours.send(&Msg::Go)?;
    let pid = expect_pid(&ours)?;
    let init_guard = ChildGuard(Some(pid));
    // The intermediate exits right after reporting; reap it (ECHILD if the caller
    // reaps children itself).
    let _ = waitpid(guard.disarm(), None);

    let joined = match prepare_later {
        Some(prepare) => prepare().and_then(|()| cgroup.add_pid(pid)),
        None => Ok(()),
    };
    if let Err(e) = joined {
        // An init that failed meanwhile said why (e.g. 127): that is the error to report.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        while let Ok(Some((m, _))) = ours.recv() {
            if let Msg::Error(ce) = m {
                return Err(ce.into());
            }
        }
        return Err(e);
    }
    ours.send(&Msg::Joined)?;

    let mut pty_master = None;
    loop {
        match ours.recv()? {
            Some((Msg::PtyMaster, fd)) => pty_master = fd,
            Some((Msg::Warning(w), _)) => tracing::debug!("{w}"),
            Some((Msg::Ready, _)) => break,
            Some((Msg::Error(e), _)) => return Err(e.into()),
            Some((other, _)) => {
                return Err(Error::InitFailed(format!("unexpected message {other:?}")))
            }
            None => {
                return Err(Error::InitFailed(
                    "container init exited during setup without reporting an error".into(),
                ))
            }
        }
    }
    Ok(Spawned {
        pid: init_guard.disarm(),
        pty_master,
    })
}

/// Namespaces of `pid` that differ from ours, in the order they must be joined.
fn namespaces_to_join(pid: Pid) -> Result<Vec<(File, CloneFlags)>> {
    let order = [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut out = Vec::new();
    for (name, flag) in order {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
            continue; // namespace type not supported by this kernel
        };
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let f = File::open(&theirs).map_err(|e| Error::io("open", &theirs, e))?;
        out.push((f, flag));
    }
    Ok(out)
}

/// Start a process inside a running container (like `runc exec`). The new process is a
/// child of the caller. Returns once it has exec'd (or failed to).
pub(crate) fn spawn_exec(
    init_pid: Pid,
    cgroup: &Cgroup,
    p: &ProcessConfig,
    stdio: Stdio,
    userns: bool,
) -> Result<Spawned> {
    // Open init's namespaces now: fails cleanly if the container just died.
    let namespaces = namespaces_to_join(init_pid)?;
    let (ours, theirs) = Channel::pair()?;
    let stdio_fds = stdio.fds();
    let ours_raw = ours.raw();
    let child = fork_child(|| {
        // SAFETY: closing our copy of the runtime's end in the child only.
        unsafe { libc::close(ours_raw) };
        init::exec_intermediate(&namespaces, p, theirs, stdio_fds, userns)
    })?;
    drop(stdio);
    let guard = ChildGuard(Some(child));
    cgroup.add_pid(child)?;
    ours.send(&Msg::Go)?;
    let pid = expect_pid(&ours)?;
    let proc_guard = ChildGuard(Some(pid));
    let _ = waitpid(guard.disarm(), None);
    let mut pty_master = None;
    loop {
        match ours.recv()? {
            Some((Msg::PtyMaster, fd)) => pty_master = fd,
            Some((Msg::Warning(w), _)) => tracing::debug!("{w}"),
            Some((Msg::Error(e), _)) => return Err(e.into()),
            Some((other, _)) => {
                return Err(Error::InitFailed(format!("unexpected message {other:?}")))
            }
            // The socket is close-on-exec: EOF means execve succeeded.
            None => break,
        }
    }
    Ok(Spawned {
        pid: proc_guard.disarm(),
        pty_master,
    })
}
