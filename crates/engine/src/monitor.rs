//! The per-instance monitor (like conmon): the parent of the instance's main process.
//!
//! It is `vessel` itself: forked by `run` as its first act ([`fork_early`]: it runs itself
//! again from the sealed binary while `run` records the instance, then receives the
//! instance whole and starts it before opening any database), re-executed
//! with a hidden subcommand by `start` ([`spawn`]). So `vessel` needs no daemon: the
//! monitor outlives the command that started it, copies the instance's output into its
//! log (and to the attached terminal, if any), forwards signals, waits for the exit,
//! records it in the catalogue, cleans up, and exits with the instance's exit status. It
//! reports to its parent over a pipe (fd 3 when exec'd) in JSON lines.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

use super::backend::{Exit, Started, Stdio};
use super::catalogue::{self, Instance};
use super::logs::{self, Stream};
use super::request::LogDriver;
use super::{Engine, EngineConfig, EngineError};
use vessel_shim::attach::{Action, Hub, StdinTarget};

/// The fd on which the monitor reports to its parent.
pub const SYNC_FD: RawFd = 3;

/// What the monitor tells its parent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Report {
    /// The instance runs; `pid` is its main process.
    Started {
        /// Host pid.
        pid: i32,
    },
    /// It could not start; `code` is Docker's exit status for that.
    Error {
        /// 125, 126 or 127.
        code: u8,
        /// One line.
        message: String,
    },
    /// It ran and ended with `code`.
    Exited {
        /// Exit status (128 + signal if killed).
        code: i32,
    },
    /// The monitor's last word: the instance ended with `code`, its exit is recorded and
    /// what it held is released (and with `--rm` it is removed). All that is left is the
    /// monitor's own exit, which an attached caller need not wait for.
    Done {
        /// Exit status (128 + signal if killed).
        code: i32,
    },
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    // Caught only so that a write to a closed stdout fails with EPIPE instead of killing
    // us; there is nothing to pass on.
    if sig == libc::SIGPIPE {
        return;
    }
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a local byte.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// Signals the monitor passes on to the instance (handlers, not SIG_IGN, so that the
/// instance's process, after exec, gets default dispositions back).
const FORWARD: &[libc::c_int] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn install_handlers() -> std::io::Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    SIGNAL_PIPE.store(w.as_raw_fd(), Ordering::Relaxed);
    // The writing end lives as long as the process,
    std::mem::forget(w);
    // and so does a reader: a signal that comes after the caller dropped `r` (a terminal's
    // SIGHUP while the monitor finishes) must find a pipe to write to, not EPIPE.
    std::mem::forget(r.try_clone()?);
    let hard_stop = super::vm::stop_signal();
    for &s in FORWARD
        .iter()
        .chain(&[libc::SIGWINCH, libc::SIGPIPE, hard_stop])
    {
        // SAFETY: a plain sigaction with a handler that only calls write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
    Ok(r)
}

struct Sync(Option<std::fs::File>);

impl Sync {
    fn send(&mut self, r: &Report) {
        if let Some(f) = &mut self.0 {
            let mut line = serde_json::to_vec(r).unwrap_or_default();
            line.push(b'\n');
            if f.write_all(&line).is_err() {
                self.0 = None; // parent gone: carry on alone
            }
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Takes descriptor `fd` if our parent placed one there for us: open, and a pipe or a
/// socket (never a file we might have opened ourselves, such as a database, had nothing
/// been placed there). Close-on-exec from here on. Call it before opening anything.
pub fn inherited_channel(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: only inspected here; owned below once it is known to be a channel.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    let st = nix::sys::stat::fstat(b).ok()?;
    let kind =
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT;
    if kind != nix::sys::stat::SFlag::S_IFIFO && kind != nix::sys::stat::SFlag::S_IFSOCK {
        return None;
    }
    nix::fcntl::fcntl(
        b,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .ok()?;
    // SAFETY: a channel our parent placed for us, not otherwise owned in this process.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What the parent of `vessel __monitor` placed for it: the report pipe on fd 3 and the
/// attach clients on `attach_fds` (see [`spawn_with_clients`]), each only if it is there.
/// Call it before opening the engine, whose files could otherwise take a free number.
pub fn inherited(attach_fds: &[RawFd]) -> (Option<std::fs::File>, Vec<OwnedFd>) {
    let sync = inherited_channel(SYNC_FD).map(std::fs::File::from);
    let clients = attach_fds
        .iter()
        .filter(|&&fd| fd > 2 && fd != SYNC_FD)
        .filter_map(|&fd| inherited_channel(fd))
        .collect();
    (sync, clients)
}

/// Runs the monitor for instance `id` (`vessel __monitor`), reporting on `sync` and
/// serving `clients` (as [`inherited`] found them); returns the process exit status.
pub fn run(
    engine: &Engine,
    id: &str,
    attached: bool,
    sync: Option<std::fs::File>,
    clients: Vec<OwnedFd>,
) -> u8 {
    run_with(engine, id, attached, sync, clients)
}

/// Runs the monitor for instance `id`, reporting on `sync_file`.
fn run_with(
    engine: &Engine,
    id: &str,
    attached: bool,
    sync_file: Option<std::fs::File>,
    clients: Vec<OwnedFd>,
) -> u8 {
    let mut sync = Sync(sync_file);
    match engine.catalogue().find(id) {
        Ok(inst) => run_instance(engine, &inst, attached, sync, clients),
        Err(e) => {
            sync.send(&Report::Error {
                code: 125,
                message: e.to_string(),
            });
            125
        }
    }
}

/// Runs the monitor for `inst`, as recorded, reporting on `sync`.
fn run_instance(
    engine: &Engine,
    inst: &Instance,
    attached: bool,
    mut sync: Sync,
    clients: Vec<OwnedFd>,
) -> u8 {
    // Whatever is left after the last report (the trash, a WAL checkpoint) is done by
    // this process, which nobody waits for: without the exec of a background `rm`.
    engine.delete_trash_here();
    let code = match supervise(engine, inst, attached, &mut sync, clients) {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            let _ = engine.catalogue().set_exited(
                &inst.id,
                code as i32,
                false,
                &now(),
                Some(&e.to_string()),
            );
            engine.instance_event(inst, "die", &[("exitCode", code.to_string())]);
            let _ = engine
                .backend(inst.request.isolation)
                .map(|b| b.cleanup(inst, &engine.instance_dir(&inst.id)));
            sync.send(&Report::Error {
                code,
                message: e.to_string(),
            });
            if inst.request.auto_remove {
                let _ = engine.purge(inst);
            }
            code
        }
    };
    release_stdio();
    engine.restart_if_due(&inst.id);
    code
}

/// Points our standard descriptors at /dev/null once everything is reported: an attached
/// monitor shares them with `vessel run`, and a reader of its output (`$(vessel run ...)`)
/// must see the end when `vessel run` exits, not when this process is done cleaning up.
fn release_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 of a descriptor we own onto a standard descriptor.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), EngineError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EngineError::Internal(format!("pipe: {e}")))
}

fn supervise(
    engine: &Engine,
    inst: &Instance,
    attached: bool,
    sync: &mut Sync,
    clients: Vec<OwnedFd>,
) -> Result<u8, EngineError> {
    let dir = engine.instance_dir(&inst.id);
    let backend = engine.backend(inst.request.isolation)?;
    let sig_r =
        install_handlers().map_err(|e| EngineError::Internal(format!("signal pipe: {e}")))?;
    let mut log = open_log(engine, inst)?;
    let tty = inst.request.tty;
    let forward_stdin = attached && inst.request.interactive;

    // The instance's stdio: a pty, or pipes whose far ends we keep.
    let (stdio, ours) = if tty {
        (Stdio::Pty, None)
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (in_r, in_w) = if inst.request.interactive {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let null = std::fs::File::open("/dev/null")
                .map_err(|e| EngineError::io("open", "/dev/null", e))?;
            (OwnedFd::from(null), None)
        };
        (
            Stdio::Fds {
                stdin: in_r,
                stdout: out_w,
                stderr: err_w,
            },
            Some((out_r, err_r, in_w)),
        )
    };
    let hub = attach_hub(&dir, tty, clients);
    tracing::debug!("monitor: starting");
    let started = backend.start(inst, &dir, stdio)?;
    tracing::debug!("monitor: started");
    // Recorded once the instance runs: a monitor from `fork_early` opens the catalogue
    // only now, while the instance's process gets going.
    let me = std::process::id() as i32;
    let monitor = catalogue::process_start_time(me).map(|start| (me, start));
    engine
        .catalogue()
        .set_running(&inst.id, started.pid, &now(), monitor)?;
    engine.instance_event(inst, "start", &[]);
    sync.send(&Report::Started { pid: started.pid });
    if inst
        .request
        .healthcheck
        .as_ref()
        .is_some_and(super::health::Healthcheck::active)
    {
        if let Err(e) = super::health::spawn_checker(engine.config(), &inst.id) {
            tracing::warn!("monitor: {e}");
        }
    }
    if inst.request.auto_remove {
        // The removal at the end needs the image store: opened while the instance runs.
        if let Ok(store) = engine.store() {
            store.warm();
        }
    }

    // A detached container needs no more of `vessel` until it exits: become the shim.
    // (Unless its process is gone already, as a short job's may be by now: then the
    // shim would only exec this binary again to finish; we finish it ourselves.)
    if !attached
        && inst.request.isolation == super::request::Isolation::Container
        && !exited_already(started.pid)
    {
        if let Some(shim) = engine.config().shim.clone() {
            drop(log);
            let e = exec_shim(engine, inst, &shim, &started, ours.as_ref(), &hub);
            // Still here: the shim could not run; stay the monitor ourselves.
            tracing::warn!("monitor: cannot run {}: {e}", shim.display());
            log = open_log(engine, inst)?;
        }
    }

    let exit = std::thread::scope(|s| -> Result<Exit, EngineError> {
        let (done_r, done_w) = pipe()?;
        let waiter = s.spawn(|| {
            let r = backend.wait(inst, &started);
            let _ = nix::unistd::write(&done_w, b"x");
            drop(done_w);
            r
        });
        let mut io = Io::new(
            &started,
            ours,
            forward_stdin,
            attached,
            tty,
            inst.request.interactive,
            hub,
        );
        io.pump(&mut log, &sig_r, &done_r, |sig| {
            let _ = backend.kill(inst, sig);
        });
        let exit = waiter
            .join()
            .map_err(|_| EngineError::Internal("the wait thread panicked".into()))??;
        io.drain(&mut log, Duration::from_secs(2));
        // The attached clients get the rest of the output and then their end of file.
        io.hub.finish(Duration::from_secs(2));
        Ok(exit)
    })?;
    let _ = log.flush();
    let code = conclude(engine, inst, exit, sync);
    // The last report is out: only now do the instance's mounts go (Started::teardown).
    drop(started.teardown);
    code
}

/// Whether our child `pid` has exited (its status stays for the wait that reaps it).
fn exited_already(pid: i32) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    matches!(
        waitid(
            Id::Pid(nix::unistd::Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ),
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
    )
}

/// The instance's attach socket in `dir`, with the clients connected before the start.
/// An instance whose socket cannot be bound still runs (and is logged), unattachable.
fn attach_hub(dir: &std::path::Path, tty: bool, clients: Vec<OwnedFd>) -> Hub {
    match Hub::bind(dir, tty) {
        Ok(mut hub) => {
            hub.adopt(clients);
            hub
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "monitor: cannot bind the attach socket");
            Hub::from_fds(None, clients, tty)
        }
    }
}

/// The instance's log as its `--log-driver` and `--log-opt`s say.
fn open_log(engine: &Engine, inst: &Instance) -> Result<logs::Writer, EngineError> {
    let path = engine.log_path(&inst.id);
    match inst.request.log.driver {
        LogDriver::JsonFile => logs::Writer::open(&path, inst.request.log.rotation)
            .map_err(|e| EngineError::io("open", path, e)),
        LogDriver::None => Ok(logs::Writer::discard()),
    }
}

/// Records how the instance ended, removes what it held and reports the end.
fn conclude(
    engine: &Engine,
    inst: &Instance,
    exit: Exit,
    sync: &mut Sync,
) -> Result<u8, EngineError> {
    let backend = engine.backend(inst.request.isolation)?;
    tracing::debug!("monitor: exited");
    engine
        .catalogue()
        .set_exited(&inst.id, exit.code, exit.oom_killed, &now(), None)?;
    if exit.oom_killed {
        engine.instance_event(inst, "oom", &[]);
    }
    engine.instance_event(inst, "die", &[("exitCode", exit.code.to_string())]);
    tracing::debug!("monitor: recorded the exit");
    backend.cleanup(inst, &engine.instance_dir(&inst.id))?;
    tracing::debug!("monitor: cleaned up");
    sync.send(&Report::Exited { code: exit.code });
    if inst.request.auto_remove {
        engine.purge(inst)?;
        tracing::debug!("monitor: removed");
    }
    sync.send(&Report::Done { code: exit.code });
    Ok(exit.code.clamp(0, 255) as u8)
}

/// Replaces this process with the shim, which keeps the container's stdio, waits for it
/// and then runs `vessel __monitor-finish`. Returns only if the exec failed.
fn exec_shim(
    engine: &Engine,
    inst: &Instance,
    shim: &std::path::Path,
    started: &Started,
    pipes: Option<&(OwnedFd, OwnedFd, Option<OwnedFd>)>,
    hub: &Hub,
) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = &engine.config().exe;
    let mut cmd = std::process::Command::new(shim);
    // What `__monitor-finish` opens its engine with, through the shim.
    engine.config().apply_child_env(&mut cmd);
    cmd.arg("--pid").arg(started.pid.to_string());
    let log = &inst.request.log;
    match log.driver {
        LogDriver::JsonFile => {
            cmd.arg("--log").arg(engine.log_path(&inst.id));
            if let Some(size) = log.rotation.max_size {
                cmd.arg("--max-size").arg(size.to_string());
                cmd.arg("--max-file")
                    .arg(log.rotation.max_files.to_string());
            }
        }
        LogDriver::None => {
            cmd.arg("--no-log");
        }
    }
    let mut keep: Vec<RawFd> = Vec::new();
    match (pipes, &started.pty_master) {
        (Some((out, err, hold)), _) => {
            cmd.arg("--stdout").arg(out.as_raw_fd().to_string());
            cmd.arg("--stderr").arg(err.as_raw_fd().to_string());
            keep.extend([out.as_raw_fd(), err.as_raw_fd()]);
            if let Some(h) = hold {
                cmd.arg("--hold").arg(h.as_raw_fd().to_string());
                keep.push(h.as_raw_fd());
            }
        }
        (None, Some(m)) => {
            cmd.arg("--pty").arg(m.as_raw_fd().to_string());
            keep.push(m.as_raw_fd());
            if inst.request.interactive {
                cmd.arg("--pty-input");
            }
        }
        (None, None) => {}
    }
    let (listener, clients) = hub.raw_fds();
    if let Some(l) = listener {
        cmd.arg("--attach-listen").arg(l.to_string());
        keep.push(l);
    }
    for (c, mode) in clients {
        cmd.arg("--attach-client").arg(Hub::client_arg(c, mode));
        keep.push(c);
    }
    cmd.arg("--").arg(exe).arg("--root").arg(engine.root());
    cmd.arg("__monitor-finish").arg(&inst.id);
    for fd in keep {
        // SAFETY: F_SETFD on descriptors we own, so that they survive the exec.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    cmd.exec()
}

/// The end of a detached container's monitor, run by the shim once the container exited
/// with `code`: records the exit (and whether the OOM killer caused it) and cleans up.
pub fn finish(engine: &Engine, id: &str, code: i32) -> u8 {
    let inst = match engine.catalogue().find(id) {
        Ok(i) => i,
        Err(_) => return code.clamp(0, 255) as u8,
    };
    let oom_killed = engine
        .backend(inst.request.isolation)
        .map(|b| b.oom_killed(&inst))
        .unwrap_or(false);
    let exit = Exit { code, oom_killed };
    engine.delete_trash_here();
    let code = match conclude(engine, &inst, exit, &mut Sync(None)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("monitor: finishing {}: {e}", inst.id);
            code.clamp(0, 255) as u8
        }
    };
    engine.restart_if_due(&inst.id);
    code
}

/// The monitor's copying between the instance's streams, the log and the attached
/// terminal.
struct Io<'a> {
    started: &'a Started,
    /// (stdout read end, stderr read end, stdin write end).
    pipes: Option<(OwnedFd, OwnedFd, Option<OwnedFd>)>,
    forward_stdin: bool,
    attached: bool,
    tty: bool,
    out_open: bool,
    err_open: bool,
    /// The attach socket and its clients.
    hub: Hub,
}

impl<'a> Io<'a> {
    fn new(
        started: &'a Started,
        pipes: Option<(OwnedFd, OwnedFd, Option<OwnedFd>)>,
        forward_stdin: bool,
        attached: bool,
        tty: bool,
        interactive: bool,
        mut hub: Hub,
    ) -> Self {
        if tty && attached {
            resize(started);
        }
        let target = match (&pipes, &started.pty_master) {
            (Some((_, _, Some(w))), _) => Some(StdinTarget {
                fd: w.as_raw_fd(),
                pty: false,
            }),
            (None, Some(m)) if interactive => Some(StdinTarget {
                fd: m.as_raw_fd(),
                pty: true,
            }),
            _ => None,
        };
        hub.set_stdin(target);
        hub.set_terminal(started.pty_master.as_ref().map(|m| m.as_raw_fd()));
        Io {
            started,
            pipes,
            forward_stdin,
            attached,
            tty,
            out_open: true,
            err_open: true,
            hub,
        }
    }

    fn sources(&self) -> Vec<(RawFd, Stream)> {
        let mut v = Vec::new();
        match (&self.pipes, &self.started.pty_master) {
            (Some((o, e, _)), _) => {
                if self.out_open {
                    v.push((o.as_raw_fd(), Stream::Stdout));
                }
                if self.err_open {
                    v.push((e.as_raw_fd(), Stream::Stderr));
                }
            }
            (None, Some(m)) if self.out_open => v.push((m.as_raw_fd(), Stream::Stdout)),
            _ => {}
        }
        v
    }

    fn stdin_target(&self) -> Option<RawFd> {
        if !self.forward_stdin {
            return None;
        }
        match (&self.pipes, &self.started.pty_master) {
            (Some((_, _, Some(w))), _) => Some(w.as_raw_fd()),
            (None, Some(m)) => Some(m.as_raw_fd()),
            _ => None,
        }
    }

    /// Copies one chunk from `fd`; false at EOF or error.
    fn copy_out(&mut self, fd: RawFd, stream: Stream, log: &mut logs::Writer) -> bool {
        let mut buf = [0u8; 32 * 1024];
        // SAFETY: fd is one of our own open descriptors for the duration of the call.
        let n = match nix::unistd::read(unsafe { BorrowedFd::borrow_raw(fd) }, &mut buf) {
            Ok(0) | Err(_) => return false, // EIO on a pty master means the slave closed
            Ok(n) => n,
        };
        let _ = log.write(stream, &buf[..n]);
        self.hub.send(stream, &buf[..n]);
        if self.attached {
            let r = match stream {
                Stream::Stdout => std::io::stdout()
                    .lock()
                    .write_all(&buf[..n])
                    .and_then(|()| std::io::stdout().flush()),
                Stream::Stderr => std::io::stderr().lock().write_all(&buf[..n]),
            };
            if r.is_err() {
                self.attached = false; // our terminal went away; keep logging
            }
        }
        true
    }

    fn close(&mut self, stream: Stream) {
        match stream {
            Stream::Stdout => self.out_open = false,
            Stream::Stderr => self.err_open = false,
        }
    }

    /// Runs until the instance's process exits (a byte on `done`).
    fn pump(
        &mut self,
        log: &mut logs::Writer,
        sig: &OwnedFd,
        done: &OwnedFd,
        forward: impl Fn(i32),
    ) {
        loop {
            let sources = self.sources();
            let stdin = self.stdin_target();
            let mut fds: Vec<PollFd> = Vec::new();
            // SAFETY: every raw fd below is owned by self/started/args and outlives `fds`.
            let b = |fd: RawFd| unsafe { BorrowedFd::borrow_raw(fd) };
            fds.push(PollFd::new(done.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(sig.as_fd(), PollFlags::POLLIN));
            for (fd, _) in &sources {
                fds.push(PollFd::new(b(*fd), PollFlags::POLLIN));
            }
            if stdin.is_some() {
                fds.push(PollFd::new(b(0), PollFlags::POLLIN));
            }
            let first_hub = fds.len();
            let mut hub_fds = self.hub.pollfds();
            for p in &hub_fds {
                fds.push(PollFd::new(
                    b(p.fd),
                    PollFlags::from_bits_truncate(p.events),
                ));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
                Ok(_) => {}
            }
            let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
            let done_ready = ready(0);
            let sig_ready = ready(1);
            let src_ready: Vec<bool> = (0..sources.len()).map(|i| ready(2 + i)).collect();
            let stdin_ready = stdin.is_some() && ready(2 + sources.len());
            for (k, p) in hub_fds.iter_mut().enumerate() {
                p.revents = fds[first_hub + k].revents().map_or(0, |r| r.bits());
            }
            drop(fds);
            // Attach clients first: one that just connected gets the output read below.
            if self.hub.handle(&hub_fds) == Action::CloseStdin {
                if let Some((_, _, w)) = &mut self.pipes {
                    *w = None;
                }
            }
            if sig_ready {
                let mut buf = [0u8; 64];
                // SAFETY: sig is our own nonblocking pipe, open for the whole loop.
                let sig_fd = unsafe { BorrowedFd::borrow_raw(sig.as_raw_fd()) };
                if let Ok(n) = nix::unistd::read(sig_fd, &mut buf) {
                    for &s in &buf[..n] {
                        let s = s as i32;
                        if s == libc::SIGWINCH {
                            if self.tty && self.attached {
                                resize(self.started);
                            }
                        } else if s == super::vm::stop_signal() {
                            // Another vessel process asks for a hard stop of a VM.
                            forward(libc::SIGKILL);
                        } else if s != libc::SIGPIPE {
                            forward(s);
                        }
                    }
                }
            }
            for (i, (fd, stream)) in sources.iter().enumerate() {
                if src_ready[i] && !self.copy_out(*fd, *stream, log) {
                    self.close(*stream);
                }
            }
            if stdin_ready {
                self.copy_in(stdin.unwrap_or(-1));
            }
            if done_ready {
                return;
            }
        }
    }

    fn copy_in(&mut self, target: RawFd) {
        let mut buf = [0u8; 32 * 1024];
        match std::io::stdin().lock().read(&mut buf) {
            Ok(0) | Err(_) => {
                self.forward_stdin = false;
                // EOF: close the instance's stdin (for a pty, send EOF as ^D).
                if let Some((_, _, w)) = &mut self.pipes {
                    *w = None;
                } else if let Some(m) = &self.started.pty_master {
                    let _ = nix::unistd::write(m, &[4u8]);
                }
            }
            Ok(n) => {
                // SAFETY: target is our own pipe or pty master.
                if nix::unistd::write(unsafe { BorrowedFd::borrow_raw(target) }, &buf[..n]).is_err()
                {
                    self.forward_stdin = false;
                }
            }
        }
    }

    /// After the exit: read what is still buffered, for at most `limit`.
    fn drain(&mut self, log: &mut logs::Writer, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let sources = self.sources();
            if sources.is_empty() || Instant::now() >= deadline {
                return;
            }
            let mut fds: Vec<PollFd> = sources
                .iter()
                .map(|(fd, _)| {
                    // SAFETY: fds owned by self for the duration of the poll.
                    let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
                    PollFd::new(fd, PollFlags::POLLIN)
                })
                .collect();
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(60_000) as u16;
            match poll(&mut fds, PollTimeout::from(left)) {
                Ok(0) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
                Ok(_) => {}
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            for (i, (fd, stream)) in sources.iter().enumerate() {
                if ready[i] && !self.copy_out(*fd, *stream, log) {
                    self.close(*stream);
                }
            }
        }
    }
}

/// Gives the instance's terminal the size of ours.
fn resize(started: &Started) {
    let Some(m) = &started.pty_master else { return };
    // SAFETY: winsize is plain integers; all zeros is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize pointer on fds we hold.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// A monitor started by `run`/`start`, and the pipe it reports on.
pub struct Spawned {
    /// The monitor process (our child).
    pid: nix::unistd::Pid,
    /// Its reports.
    reports: std::io::BufReader<std::fs::File>,
    /// For a monitor forked ahead of its instance ([`fork_early`]): where it learns the
    /// instance's id.
    go: Option<std::fs::File>,
}

/// The monitor's reports, in order: `None` once it closed the pipe (it exited).
impl Iterator for Spawned {
    type Item = Report;

    fn next(&mut self) -> Option<Report> {
        use std::io::BufRead;
        let mut line = String::new();
        match self.reports.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => serde_json::from_str(&line).ok(),
        }
    }
}

impl Spawned {
    /// The pipe the reports come on, to poll: see also [`Spawned::buffered`].
    pub fn report_fd(&self) -> BorrowedFd<'_> {
        self.reports.get_ref().as_fd()
    }

    /// Whether report bytes were read from the pipe but not yet returned by
    /// [`Spawned::next`] (polling the pipe would not show them).
    pub fn buffered(&self) -> bool {
        !self.reports.buffer().is_empty()
    }

    /// Tells a monitor from [`fork_early`] which instance to monitor: `inst` as recorded
    /// in the catalogue by now, handed over whole so that the monitor can start it before
    /// it opens the catalogue.
    pub fn begin(&mut self, inst: &Instance) -> Result<(), EngineError> {
        if let Some(mut go) = self.go.take() {
            // One line: JSON escapes every newline inside strings.
            let mut line = serde_json::to_vec(inst)
                .map_err(|e| EngineError::Internal(format!("start the monitor: {e}")))?;
            line.push(b'\n');
            go.write_all(&line)
                .map_err(|e| EngineError::Internal(format!("start the monitor: {e}")))?;
        }
        Ok(())
    }

    /// Tells a monitor from [`fork_early`] that there is no instance after all (creating
    /// it failed), and waits for it to exit.
    pub fn abandon(mut self) {
        self.go = None;
        let _ = self.wait();
    }

    /// Waits for the monitor to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        loop {
            match self.reap(false) {
                Ok(Some(st)) => return Ok(st),
                Ok(None) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The monitor's exit status if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.reap(true)
    }

    fn reap(&mut self, nohang: bool) -> std::io::Result<Option<std::process::ExitStatus>> {
        use std::os::unix::process::ExitStatusExt;
        let mut status = 0;
        let flags = if nohang { libc::WNOHANG } else { 0 };
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(self.pid.as_raw(), &mut status, flags) };
        match r {
            0 => Ok(None),
            r if r > 0 => Ok(Some(std::process::ExitStatus::from_raw(status))),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// Forks the monitor of an instance that is yet to be created, so that starting a
/// process and opening the engine in it overlap with creating the instance here. It
/// waits for [`Spawned::begin`] (or exits at once, with status 0, after
/// [`Spawned::abandon`] or our exit). Call it while this process has only one thread
/// and has not opened any database: the child continues this program, without exec.
/// `attached`, `stdin` and `tty` are as for [`spawn`].
pub fn fork_early(
    config: &EngineConfig,
    attached: bool,
    stdin: bool,
    tty: bool,
) -> Result<Spawned, EngineError> {
    let (r, w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // Anything buffered would be written twice, by both processes.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: this process is single-threaded (see above), so the child may run any code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(EngineError::Internal(format!(
            "start the monitor: fork: {e}"
        ))),
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop((w, go_r));
            Ok(Spawned {
                pid: child,
                reports: std::io::BufReader::new(std::fs::File::from(r)),
                go: Some(std::fs::File::from(go_w)),
            })
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop((r, go_w));
            // No exec: the container's processes are exec'd through the sealed entry
            // program (vessel_container::Runtime::with_entry), so the monitor need not
            // run from a sealed binary itself.
            let code = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                Ok(null) => early_child(config, (attached, stdin, tty), w, go_r, null),
                Err(e) => {
                    Sync(Some(std::fs::File::from(w))).send(&Report::Error {
                        code: 125,
                        message: format!("start the monitor: open /dev/null: {e}"),
                    });
                    125
                }
            };
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            // SAFETY: ends the child without running the parent's exit handlers twice.
            unsafe { libc::_exit(i32::from(code)) }
        }
    }
}

/// The body of a monitor from [`fork_early`]; returns its exit status.
fn early_child(
    config: &EngineConfig,
    (attached, stdin, tty): (bool, bool, bool),
    sync: OwnedFd,
    go: OwnedFd,
    null: std::fs::File,
) -> u8 {
    use std::io::BufRead;
    // What `spawn` sets up for an exec'd monitor.
    let null_fd = null.as_raw_fd();
    // SAFETY: dup2 onto the standard descriptors of this (single-threaded) process.
    unsafe {
        if !(attached && stdin) {
            libc::dup2(null_fd, 0);
        }
        if !attached {
            libc::dup2(null_fd, 1);
            libc::dup2(null_fd, 2);
        }
    }
    settle_child(!(attached && tty));
    drop(null);
    // Nothing is opened before the instance runs: it comes whole over `go`, and the
    // catalogue (and for `--rm` the image store) are opened once it is started. The
    // sealed view of the entry program is made while our parent creates the instance.
    let engine = Engine::open_deferred(config);
    engine.prepare_starts();
    let mut line = String::new();
    let inst = match std::io::BufReader::new(std::fs::File::from(go)).read_line(&mut line) {
        // No instance: our parent failed to create it, or died first.
        Ok(0) | Err(_) => return 0,
        Ok(_) => serde_json::from_str::<Instance>(&line),
    };
    let mut sync = Sync(Some(std::fs::File::from(sync)));
    match inst {
        Ok(inst) => run_instance(&engine, &inst, attached, sync, Vec::new()),
        Err(e) => {
            sync.send(&Report::Error {
                code: 125,
                message: format!("the monitor's instance: {e}"),
            });
            125
        }
    }
}

/// What a new monitor does first, forked or exec'd: receive every signal (the CLI may
/// have blocked some), and leave our session when it must survive us. Async-signal-safe.
fn settle_child(own_session: bool) {
    // SAFETY: sigprocmask and setsid on the calling (new, single-threaded) process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        if own_session {
            libc::setsid();
        }
    }
}

/// Starts the monitor of instance `id`. With `attached`, it shares our stdout and stderr
/// (and stdin if `stdin`); it stays in our session (to get SIGWINCH) only when it drives
/// an attached terminal, and otherwise gets a session of its own so that it survives us.
/// The monitor is `config.exe`, given the settings of `config` explicitly.
pub fn spawn(
    config: &EngineConfig,
    id: &str,
    attached: bool,
    stdin: bool,
    tty: bool,
) -> Result<Spawned, EngineError> {
    spawn_inner(config, Some(id), attached, stdin, tty, Vec::new(), false)
}

/// Starts the detached monitor of instance `id` for its restart policy (which, unlike a
/// start by hand, leaves a stop by the user in force).
pub(crate) fn spawn_restart(config: &EngineConfig, id: &str) -> Result<Spawned, EngineError> {
    spawn_inner(config, Some(id), false, false, false, Vec::new(), true)
}

/// Starts the detached monitor of instance `id` (as [`spawn`] does without `attached`),
/// handing it `clients`: connections to its attach socket made before the socket exists
/// (a front end that attached to a created instance), each already carrying its flags
/// byte (see `vessel_shim::attach`). They see the instance's output from its first byte.
pub fn spawn_with_clients(
    config: &EngineConfig,
    id: &str,
    clients: Vec<OwnedFd>,
) -> Result<Spawned, EngineError> {
    spawn_inner(config, Some(id), false, false, false, clients, false)
}

/// The first descriptor of the pre-start attach clients in a spawned monitor.
const ATTACH_FD: RawFd = 4;
/// A standby monitor's control socket (it has no attach clients placed: they come over
/// this socket with its instance).
pub const STANDBY_FD: RawFd = 4;

/// Started by hand: a stop by the user no longer holds the restart policy back.
fn clear_manual_stop(config: &EngineConfig, id: &str) {
    let dir = config.root.join("instances").join(id);
    if crate::restart::RestartState::load(&dir).manual_stop {
        crate::restart::RestartState::update(&dir, |s| s.manual_stop = false);
    }
}

/// A detached monitor started ahead of need (`vessel __monitor --standby`), for a front
/// end that starts instances often (`vessel serve`): it has exec'd, opened the engine
/// and prepared what every start needs, and waits for an instance. Handing it one
/// ([`Standby::begin`]) saves a start the monitor's exec and set-up. Dropped unused, it
/// sees its control socket close and exits.
pub struct Standby {
    spawned: Spawned,
    control: std::os::unix::net::UnixStream,
}

/// Starts a standby monitor (see [`Standby`]).
pub fn spawn_standby(config: &EngineConfig) -> Result<Standby, EngineError> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| EngineError::Internal(format!("start a standby monitor: {e}")))?;
    let spawned = spawn_inner(
        config,
        None,
        false,
        false,
        false,
        vec![OwnedFd::from(theirs)],
        false,
    )?;
    Ok(Standby {
        spawned,
        control: ours,
    })
}

impl Standby {
    /// Hands instance `id` to the standby monitor, with `clients` (as for
    /// [`spawn_with_clients`]; copies are sent, ours stay ours), and returns it as the
    /// instance's monitor. Fails if it is no longer waiting (it died): spawn one then.
    pub fn begin(
        mut self,
        config: &EngineConfig,
        id: &str,
        clients: &[OwnedFd],
    ) -> Result<Spawned, EngineError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        clear_manual_stop(config, id);
        let fds: Vec<RawFd> = clients.iter().map(|c| c.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(id.as_bytes())];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        match sendmsg::<()>(
            self.control.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) if n == id.len() => Ok(self.spawned),
            r => {
                drop(self.control);
                let _ = nix::sys::signal::kill(self.spawned.pid, nix::sys::signal::Signal::SIGKILL);
                let _ = self.spawned.wait();
                Err(EngineError::Internal(format!(
                    "the standby monitor did not take its instance: {}",
                    match r {
                        Err(e) => e.to_string(),
                        Ok(n) => format!("{n} of {} bytes sent", id.len()),
                    }
                )))
            }
        }
    }

    /// Whether it is still waiting (it has not exited; one that has is reaped).
    pub fn alive(&self) -> bool {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        unsafe { libc::waitpid(self.spawned.pid.as_raw(), &mut status, libc::WNOHANG) == 0 }
    }
}

/// The body of a standby monitor (`vessel __monitor --standby`): waits on `control` for
/// its instance's id and attach clients, then monitors it, reporting on `sync`. Exits 0
/// if the control socket closes first (its front end went away unused).
pub fn standby(engine: &Engine, control: OwnedFd, sync: Option<std::fs::File>) -> u8 {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    engine.prepare_starts();
    engine.catalogue().warm();
    // The image store too, which an auto-remove releases the image in.
    let _ = engine.store();
    let mut buf = [0u8; 256];
    let mut space = nix::cmsg_space!([RawFd; 16]);
    let (id, clients) = loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 0,
            Ok(msg) => {
                let mut clients = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            // SAFETY: descriptors just received, ours alone.
                            clients.extend(
                                fds.into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                }
                if msg.bytes == 0 {
                    return 0;
                }
                let n = msg.bytes;
                break (String::from_utf8_lossy(&buf[..n]).into_owned(), clients);
            }
        }
    };
    drop(control);
    run_with(engine, &id, false, sync, clients)
}

fn spawn_inner(
    config: &EngineConfig,
    id: Option<&str>,
    attached: bool,
    stdin: bool,
    tty: bool,
    clients: Vec<OwnedFd>,
    by_policy: bool,
) -> Result<Spawned, EngineError> {
    use std::os::unix::process::CommandExt;
    if let (false, Some(id)) = (by_policy, id) {
        clear_manual_stop(config, id);
    }
    use std::process::{Command, Stdio as P};
    let (r, w) = pipe()?;
    let w_raw = w.as_raw_fd();
    let mut cmd = Command::new(&config.exe);
    cmd.arg("--root").arg(&config.root).arg("__monitor");
    match id {
        Some(id) => cmd.arg(id),
        // Its one "client" is the control socket, placed where the first client goes.
        None => cmd.arg("--standby"),
    };
    config.apply_child_env(&mut cmd);
    if attached {
        cmd.arg("--attached");
    }
    // Moved above every descriptor they are placed on, so that no dup2 below overwrites
    // one not yet placed.
    let mut high: Vec<RawFd> = Vec::new();
    for c in &clients {
        let fd = nix::fcntl::fcntl(c, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64))
            .map_err(|e| EngineError::Internal(format!("start the monitor: dup: {e}")))?;
        high.push(fd);
    }
    // SAFETY: the copies are ours; OwnedFd closes them after the spawn.
    let high_owned: Vec<OwnedFd> = high
        .iter()
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if id.is_some() {
        for k in 0..high.len() {
            cmd.arg("--attach-fd")
                .arg((ATTACH_FD + k as RawFd).to_string());
        }
    }
    cmd.stdin(if attached && stdin {
        P::inherit()
    } else {
        P::null()
    });
    cmd.stdout(if attached { P::inherit() } else { P::null() });
    cmd.stderr(if attached { P::inherit() } else { P::null() });
    let own_session = !(attached && tty);
    let placed = high.clone();
    // SAFETY: only async-signal-safe calls (dup2, then settle_child) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(w_raw, SYNC_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (k, &fd) in placed.iter().enumerate() {
                if libc::dup2(fd, ATTACH_FD + k as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            settle_child(own_session);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| EngineError::Internal(format!("start the monitor: {e}")))?;
    drop(w);
    drop(high_owned);
    drop(clients);
    Ok(Spawned {
        pid: nix::unistd::Pid::from_raw(child.id() as i32),
        reports: std::io::BufReader::new(std::fs::File::from(r)),
        go: None,
    })
}
