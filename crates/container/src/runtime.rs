//! The runc-like entry points: create, start, state, kill, delete, exec, stats, list.

use std::fs;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use crate::cgroups::{Cgroup, Stats};
use crate::config;
use crate::error::{Error, Result};
use crate::process::{self, Stdio};
use crate::state::{self, Persisted, State, Status, FIFO_FILE, SPEC_FILE};

/// Manages containers whose state lives under one directory.
#[derive(Debug, Clone)]
pub struct Runtime {
    state_root: PathBuf,
    /// The entry program (see [`Runtime::with_entry`]), and its sealed view once made.
    entry: Option<PathBuf>,
    sealed_entry: std::sync::OnceLock<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// Options of [`Runtime::create`].
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// stdio of the container process. `Stdio::Pty` (or `process.terminal` in the spec)
    /// allocates a pty.
    pub stdio: Stdio,
    /// Write the init's host pid here (like `runc create --pid-file`).
    pub pid_file: Option<PathBuf>,
    /// Send the pty master over this Unix socket (SCM_RIGHTS, runc-compatible) instead
    /// of returning it in [`State::pty_master`].
    pub console_socket: Option<PathBuf>,
}

/// A process started by [`Runtime::exec_process`].
#[derive(Debug)]
pub struct ExecProcess {
    /// Host pid; a child of the caller.
    pub pid: Pid,
    /// pty master, when a terminal was asked for.
    pub pty_master: Option<OwnedFd>,
}

/// Undoes a half-done `create`.
struct CreateCleanup {
    dir: PathBuf,
    cgroup: Option<Cgroup>,
    init: Option<Pid>,
    armed: bool,
}

impl Drop for CreateCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.init {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = &self.cgroup {
            cg.signal_all(Signal::SIGKILL).ok();
            cg.wait_empty(Duration::from_secs(5));
            if let Err(e) = cg.destroy() {
                tracing::warn!(error = %e, "cleanup after failed create");
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl CreateCleanup {
    fn disarm(mut self) {
        self.armed = false;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Runtime {
    /// A runtime keeping container state under `state_root` (e.g. `/run/vessel/runtime`).
    pub fn new(state_root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            state_root: state_root.into(),
            entry: None,
            sealed_entry: std::sync::OnceLock::new(),
        }
    }

    /// Makes every container process's final `execve` go through the static program
    /// `entry` (vessel-entry: `entry PATH ARGV...` execs `PATH` with `ARGV`), run from a
    /// sealed view of it ([`crate::sealed::seal`]). The kernel resolves a container's
    /// `/proc/self/exe` (its command, a `#!` interpreter, a link) at that `execve`, so it
    /// names that sealed file, never the caller's binary: this process need not run
    /// sealed itself (CVE-2019-5736).
    pub fn with_entry(mut self, entry: impl Into<PathBuf>) -> Runtime {
        self.entry = Some(entry.into());
        self
    }

    /// Makes the sealed view of the entry program now (else the first container process
    /// does): for a caller with time to spare before it starts one.
    pub fn seal_entry(&self) -> Result<()> {
        self.entry_fd().map(|_| ())
    }

    fn entry_fd(&self) -> Result<Option<std::os::fd::RawFd>> {
        use std::os::fd::AsRawFd;
        let Some(path) = &self.entry else {
            return Ok(None);
        };
        if let Some(fd) = self.sealed_entry.get() {
            return Ok(Some(fd.as_raw_fd()));
        }
        if !path.is_file() {
            return Err(Error::InitFailed(format!(
                "{} is missing: the entry program of container processes (./x setup builds it)",
                path.display()
            )));
        }
        let mut fd = crate::sealed::seal(path)?;
        if fd.as_raw_fd() < 3 {
            // Clear of the standard descriptors, which the process's stdio replaces.
            fd = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                .map(|n| {
                    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that we own.
                    unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) }
                })
                .map_err(|e| Error::syscall("dup the entry program's descriptor", e))?;
        }
        let fd = self.sealed_entry.get_or_init(|| std::sync::Arc::new(fd));
        Ok(Some(fd.as_raw_fd()))
    }

    /// Where the state of container `id` lives.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.state_root.join(id)
    }

    fn load(&self, id: &str) -> Result<(PathBuf, Persisted)> {
        config::validate_id(id)?;
        let dir = self.state_dir(id);
        if !dir.join(state::STATE_FILE).exists() {
            return Err(Error::NotFound(id.to_string()));
        }
        let p = Persisted::load(&dir)?;
        Ok((dir, p))
    }

    /// Like `runc create`: validate `<bundle>/config.json` before any side effect, create
    /// the cgroup, start the container init (a direct child of the caller, so the caller
    /// can `waitpid` it for the exit status) and leave it blocked just before execve
    /// until [`Runtime::start`]. The program is looked up in the container first: a
    /// missing one fails with [`Error::ExecutableNotFound`] (exit code 127), a
    /// non-executable one with [`Error::NotExecutable`] (126).
    pub fn create(&self, id: &str, bundle: &Path, opts: CreateOptions) -> Result<State> {
        let _span = tracing::info_span!("create", container = id).entered();
        config::validate_id(id)?;
        let config_path = bundle.join("config.json");
        // Read once: parsed here, and kept as read (not re-serialized) for `exec`.
        let config_bytes = fs::read(&config_path).map_err(|e| Error::LoadSpec {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        let spec: Spec = serde_json::from_slice(&config_bytes).map_err(|e| Error::LoadSpec {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        let bundle = bundle
            .canonicalize()
            .map_err(|e| Error::io("resolve bundle", bundle, e))?;
        let mut cfg = config::validate(id, &bundle, &spec)?;
        tracing::debug!("spec loaded");
        if spec.hooks().is_some() {
            tracing::warn!("OCI hooks are not supported and will not run");
        }
        match (&opts.stdio, cfg.process.terminal) {
            (Stdio::Pty, _) => cfg.process.terminal = true,
            (Stdio::Fds { .. }, true) => {
                return Err(Error::InvalidSpec(
                    "process.terminal is true but explicit stdio descriptors were given".into(),
                ))
            }
            _ => {}
        }
        if opts.console_socket.is_some() && !cfg.process.terminal {
            return Err(Error::InvalidSpec(
                "a console socket was given but the process has no terminal".into(),
            ));
        }
        let cgroup = Cgroup::resolve(&cfg.cgroups_path)?;
        cfg.process.entry = self.entry_fd()?;

        // Side effects start here.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.state_root)
            .map_err(|e| Error::io("create state root", &self.state_root, e))?;
        let dir = self.state_dir(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(id.to_string()))
            }
            Err(e) => return Err(Error::io("create state dir", &dir, e)),
        }
        let mut cleanup = CreateCleanup {
            dir: dir.clone(),
            cgroup: Some(cgroup.clone()),
            init: None,
            armed: true,
        };
        let mut persisted = Persisted {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            bundle: bundle.clone(),
            pid: None,
            pid_start_time: None,
            created: now(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            cgroup: cgroup.clone(),
            userns: cfg.has_ns(nix::sched::CloneFlags::CLONE_NEWUSER),
        };
        // Persist before creating anything else, so `delete` can clean up even if this
        // process dies mid-way.
        persisted.save(&dir)?;
        fs::write(dir.join(SPEC_FILE), &config_bytes)
            .map_err(|e| Error::io("save the spec", dir.join(SPEC_FILE), e))?;
        let fifo = dir.join(FIFO_FILE);
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::sys("mkfifo", &fifo, e))?;
        tracing::debug!("state saved");

        // The cgroup is created before the init, which is born in it, or (in a user
        // namespace) while the init sets up its mounts: see process::spawn_init.
        let spawned = process::spawn_init(&cfg, &cgroup, opts.stdio, &fifo, || {
            cgroup.create()?;
            tracing::debug!("cgroup created");
            cgroup.apply(&cfg.resources)?;
            tracing::debug!(cgroup = ?cgroup.dirs.first().map(|d| &d.path), "cgroup ready");
            Ok(())
        })?;
        cleanup.init = Some(spawned.pid);
        let (_, start_time) = state::read_proc_stat(spawned.pid.as_raw())
            .ok_or_else(|| Error::InitGone(id.to_string()))?;
        persisted.pid = Some(spawned.pid.as_raw());
        persisted.pid_start_time = Some(start_time);
        persisted.save(&dir)?;
        if let Some(pf) = &opts.pid_file {
            fs::write(pf, spawned.pid.to_string())
                .map_err(|e| Error::io("write pid file", pf, e))?;
        }
        let mut pty_master = spawned.pty_master;
        if let (Some(sock), Some(master)) = (&opts.console_socket, &pty_master) {
            send_console(sock, master)?;
            pty_master = None;
        }
        cleanup.disarm();
        tracing::info!(pid = spawned.pid.as_raw(), "container created");
        let mut st = persisted.to_state(&dir);
        st.pty_master = pty_master;
        Ok(st)
    }

    /// Like `runc start`: let the created container exec its program.
    pub fn start(&self, id: &str) -> Result<()> {
        let _span = tracing::info_span!("start", container = id).entered();
        let (dir, p) = self.load(id)?;
        let status = p.status(&dir);
        if status != Status::Created {
            return Err(Error::InvalidStatus {
                id: id.to_string(),
                status: status.to_string(),
                op: "start",
            });
        }
        let fifo = dir.join(FIFO_FILE);
        // Non-blocking: fails with ENXIO when init is not waiting on the other side.
        let fd = nix::fcntl::open(
            &fifo,
            nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            nix::errno::Errno::ENXIO => Error::InitGone(id.to_string()),
            e => Error::sys("open exec fifo", &fifo, e),
        })?;
        nix::unistd::write(&fd, b"0").map_err(|e| Error::sys("write exec fifo", &fifo, e))?;
        drop(fd);
        fs::remove_file(&fifo).map_err(|e| Error::io("remove", &fifo, e))?;
        tracing::info!("container started");
        Ok(())
    }

    /// The OCI state of container `id`.
    pub fn state(&self, id: &str) -> Result<State> {
        let (dir, p) = self.load(id)?;
        Ok(p.to_state(&dir))
    }

    /// Send `signal` to the container's init, or with `all` to every process in its cgroup.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let _span = tracing::info_span!("kill", container = id, signal).entered();
        let sig = Signal::try_from(signal)
            .map_err(|_| Error::InvalidSpec(format!("{signal} is not a valid signal number")))?;
        let (dir, p) = self.load(id)?;
        if all {
            return p.cgroup.signal_all(sig);
        }
        let status = p.status(&dir);
        match (status, p.pid) {
            (Status::Created | Status::Running | Status::Paused, Some(pid)) => {
                kill(Pid::from_raw(pid), sig)
                    .map_err(|e| Error::syscall(format!("kill({pid}, {sig})"), e))
            }
            _ => Err(Error::InvalidStatus {
                id: id.to_string(),
                status: status.to_string(),
                op: "kill",
            }),
        }
    }

    /// Delete the container: its processes (with `force`, or when it was only created),
    /// cgroup directories in every hierarchy and state. Idempotent: an unknown id is
    /// not an error. Works whatever happened to the init or the creating process.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let _span = tracing::info_span!("delete", container = id, force).entered();
        config::validate_id(id)?;
        let dir = self.state_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        let p = match Persisted::load(&dir) {
            Ok(p) => p,
            Err(e) => {
                // Nothing to find the cgroup with; at least drop the state.
                if !dir.exists() {
                    return Ok(()); // deleted meanwhile by a concurrent delete
                }
                tracing::warn!(error = %e, "state unreadable, removing the state directory only");
                return remove_state_dir(&dir);
            }
        };
        let status = p.status(&dir);
        if matches!(status, Status::Running | Status::Paused) && !force {
            return Err(Error::InvalidStatus {
                id: id.to_string(),
                status: status.to_string(),
                op: "delete without force",
            });
        }
        if p.init_alive() {
            if let Some(pid) = p.pid {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        p.cgroup.signal_all(Signal::SIGKILL)?;
        if status == Status::Paused {
            // Frozen tasks die of SIGKILL only once thawed.
            if let Err(e) = p.cgroup.set_frozen(false) {
                tracing::warn!(error = %e, "cannot thaw the paused container being deleted");
            }
        }
        if !p.cgroup.wait_empty(Duration::from_secs(10)) {
            tracing::warn!("processes still in the cgroup after SIGKILL");
        }
        p.cgroup.destroy()?;
        remove_state_dir(&dir)?;
        tracing::info!("container deleted");
        Ok(())
    }

    /// Run `process` in the running container `id` (like `runc exec`): same namespaces,
    /// cgroup, seccomp profile; user, capabilities, no_new_privs, env and cwd from
    /// `process`. The new process is a child of the caller. Returns once it has exec'd;
    /// program lookup errors are [`Error::ExecutableNotFound`] / [`Error::NotExecutable`].
    pub fn exec(&self, id: &str, process: &Process, stdio: Stdio) -> Result<Pid> {
        self.exec_process(id, process, stdio).map(|e| e.pid)
    }

    /// [`Runtime::exec`], also returning the pty master when a terminal was asked for
    /// (`process.terminal` or `Stdio::Pty`).
    pub fn exec_process(&self, id: &str, process: &Process, stdio: Stdio) -> Result<ExecProcess> {
        let _span = tracing::info_span!("exec", container = id).entered();
        let (dir, p) = self.load(id)?;
        let status = p.status(&dir);
        let pid = match (status, p.pid) {
            (Status::Created | Status::Running, Some(pid)) => Pid::from_raw(pid),
            _ => {
                return Err(Error::InvalidStatus {
                    id: id.to_string(),
                    status: status.to_string(),
                    op: "exec",
                })
            }
        };
        let spec_path = dir.join(SPEC_FILE);
        let spec = Spec::load(&spec_path).map_err(|e| Error::LoadSpec {
            path: spec_path.clone(),
            reason: e.to_string(),
        })?;
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        // A process without capabilities gets the container's, never the caller's full set.
        let mut process = process.clone();
        if process.capabilities().is_none() {
            let init_caps = spec
                .process()
                .as_ref()
                .and_then(|p| p.capabilities().clone());
            process.set_capabilities(init_caps);
        }
        let mut pc = config::process_config(&process, seccomp.as_ref())?;
        pc.entry = self.entry_fd()?;
        match (&stdio, pc.terminal) {
            (Stdio::Pty, _) => pc.terminal = true,
            (Stdio::Fds { .. }, true) => {
                return Err(Error::InvalidSpec(
                    "process.terminal is true but explicit stdio descriptors were given".into(),
                ))
            }
            _ => {}
        }
        let spawned = process::spawn_exec(pid, &p.cgroup, &pc, stdio, p.userns)?;
        tracing::info!(pid = spawned.pid.as_raw(), "process exec'd in container");
        Ok(ExecProcess {
            pid: spawned.pid,
            pty_master: spawned.pty_master,
        })
    }

    /// Like `runc pause`: freeze every process of the running container `id`.
    pub fn pause(&self, id: &str) -> Result<()> {
        let _span = tracing::info_span!("pause", container = id).entered();
        let (dir, p) = self.load(id)?;
        let status = p.status(&dir);
        if status != Status::Running {
            return Err(Error::InvalidStatus {
                id: id.to_string(),
                status: status.to_string(),
                op: "pause",
            });
        }
        p.cgroup.set_frozen(true)
    }

    /// Like `runc resume`: thaw the paused container `id`.
    pub fn resume(&self, id: &str) -> Result<()> {
        let _span = tracing::info_span!("resume", container = id).entered();
        let (dir, p) = self.load(id)?;
        let status = p.status(&dir);
        if status != Status::Paused {
            return Err(Error::InvalidStatus {
                id: id.to_string(),
                status: status.to_string(),
                op: "resume",
            });
        }
        p.cgroup.set_frozen(false)
    }

    /// Like `runc update`: apply `resources` (memory, CPU, pids, block I/O... limits) to
    /// the created, running or paused container `id`. Device rules are not changed.
    pub fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let _span = tracing::info_span!("update", container = id).entered();
        let (dir, p) = self.load(id)?;
        let status = p.status(&dir);
        if !matches!(status, Status::Created | Status::Running | Status::Paused) {
            return Err(Error::InvalidStatus {
                id: id.to_string(),
                status: status.to_string(),
                op: "update",
            });
        }
        p.cgroup.update(resources)
    }

    /// The spec container `id` was created from (as `create` saved it).
    pub fn spec(&self, id: &str) -> Result<Spec> {
        let (dir, _) = self.load(id)?;
        let path = dir.join(SPEC_FILE);
        Spec::load(&path).map_err(|e| Error::LoadSpec {
            path,
            reason: e.to_string(),
        })
    }

    /// Pids (in the caller's pid namespace) of every process of container `id`.
    pub fn pids(&self, id: &str) -> Result<Vec<Pid>> {
        let (_, p) = self.load(id)?;
        Ok(p.cgroup.pids())
    }

    /// Resource usage of container `id` (readable after it stopped, until deleted).
    pub fn stats(&self, id: &str) -> Result<Stats> {
        let (_, p) = self.load(id)?;
        p.cgroup.stats()
    }

    /// Whether the OOM killer has killed a process of container `id` (as
    /// [`Stats::oom_killed`], reading nothing else).
    pub fn oom_killed(&self, id: &str) -> Result<bool> {
        let (_, p) = self.load(id)?;
        Ok(p.cgroup.oom_killed())
    }

    /// States of all containers, sorted by id.
    pub fn list(&self) -> Result<Vec<State>> {
        let entries = match fs::read_dir(&self.state_root) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &self.state_root, e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match self.state(&name) {
                Ok(s) => out.push(s),
                Err(err) => tracing::debug!(entry = %name, error = %err, "skipped"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// Hand the pty master to whoever listens on `path`, the way runc does: one message whose
/// payload is the pty's name and whose SCM_RIGHTS carries the descriptor.
pub fn send_console(path: &Path, master: &OwnedFd) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let err = |reason: String| Error::ConsoleSocket {
        path: path.to_path_buf(),
        reason,
    };
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| err(e.to_string()))?;
    let name = b"/dev/ptmx";
    let iov = [std::io::IoSlice::new(name)];
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// A state directory holds a few small files (on tmpfs under /run, usually): removed
/// here, in microseconds, rather than by a background process that takes longer to
/// start. Already gone (a concurrent delete) is fine.
fn remove_state_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io("remove", dir, e)),
        _ => Ok(()),
    }
}
