//! Runs the configured command inside the new root and relays its I/O as frames.
//!
//! One thread (the caller's) owns the console's write side: it polls the command's output
//! and a signalfd for SIGCHLD, sends `Stdout`/`Stderr`, reaps every zombie, and sends
//! `Exit`. A second thread reads host frames (stdin, signals, resizes); a third writes stdin
//! to the command, so that a command that does not read its stdin never holds up a signal.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use vessel_agent::protocol::{self, GuestConfig, Kind};

use super::exec::Sessions;
use super::sys::{self, check, cstr};
use super::user::{self, Identity};
use super::Failure;

/// `PATH` when the config's environment has none (the usual container default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest output chunk per frame.
const CHUNK: usize = 32 * 1024;
/// After the command exited, how long a pty may stay silent before its output counts as
/// complete (the tty layer hands written data to the master asynchronously).
const PTY_DRAIN_IDLE: Duration = Duration::from_millis(100);

/// Longest time output is still relayed after the command exited.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Steps the forked child reports through the exec-status pipe when they fail.
#[derive(Clone, Copy)]
#[repr(u8)]
enum ChildStep {
    Session = 1,
    Stdio = 2,
    Groups = 3,
    Gid = 4,
    Uid = 5,
    Chdir = 6,
    Exec = 7,
    Cgroup = 8,
}

impl ChildStep {
    fn describe(byte: u8) -> &'static str {
        match byte {
            1 => "set up the session and controlling terminal",
            2 => "set up stdin/stdout/stderr",
            3 => "setgroups",
            4 => "setgid",
            5 => "setuid",
            6 => "chdir to the working directory",
            8 => "join the --pids-limit cgroup",
            _ => "exec",
        }
    }
}

/// Everything the child needs, prepared before `fork` so the child only makes syscalls.
pub(super) struct Prepared {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    workdir: CString,
    identity: Identity,
    /// `cgroup.procs` of the `--pids-limit` cgroup, to join.
    cgroup: Option<libc::c_int>,
}

/// The command's ends of its standard streams, and ours.
pub(super) struct Stdio {
    /// Child's fd 0, 1, 2.
    pub child: [OwnedFd; 3],
    /// Where we write its stdin (pipe; or the pty master), if interactive.
    pub stdin: Option<File>,
    /// Its stdout (pipe; or the pty master, carrying both streams).
    pub stdout: File,
    /// Its stderr pipe (none with a tty).
    pub stderr: Option<File>,
    /// The pty master, for `Resize`.
    pub pty: Option<File>,
}

/// Serialises frame writes to the console: the command's relay, exec sessions and error
/// reports write from different threads.
static CONSOLE_WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes one frame to the console, never interleaved with another thread's.
pub(super) fn send(console: &File, kind: Kind, payload: &[u8]) -> io::Result<()> {
    let _guard = CONSOLE_WRITE.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = console;
    protocol::write_frame(&mut out, kind, payload)
}

/// Sets a terminal's size.
/// Replaces the contents of `/etc/hosts` in place: in a read-only root it is a bind mount
/// of a generated file, which a rename would not reach. Best effort: the workload keeps
/// running with the old file if this fails.
fn update_hosts(content: &[u8]) {
    let written = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open("/etc/hosts")
        .and_then(|mut f| f.write_all(content));
    if let Err(e) = written {
        eprintln!("vessel-agent: update /etc/hosts: {e}");
    }
}

pub(super) fn resize(pty: &File, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives across the call.
    unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

/// Runs the command to completion. `Ok(exit status)` once it ran; `Err` if it could not
/// be started (with 125, 126 or 127) — `Started` has then not been sent.
pub fn run(cfg: &GuestConfig, console: &File) -> Result<i32, Failure> {
    let prepared = prepare(cfg)?;
    let stdio = open_stdio(cfg).map_err(Failure::setup("set up the command's stdio"))?;
    let (status_r, status_w) = sys::pipe().map_err(Failure::setup("create the exec pipe"))?;

    // SAFETY: no other thread exists yet (the host reader starts after this), so the child
    // may run ordinary code; it only makes syscalls on prepared data, then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Failure::engine(format!(
            "fork: {}",
            io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        drop(status_r);
        child(&prepared, &stdio, cfg.tty, status_w);
    }
    drop(status_w);
    let Stdio {
        child: child_fds,
        stdin,
        stdout,
        stderr,
        pty,
    } = stdio;
    drop(child_fds);

    if let Some(failure) = exec_outcome(File::from(status_r), &prepared, cfg) {
        reap(pid);
        return Err(failure);
    }
    send(console, Kind::Started, &[]).map_err(Failure::setup("send Started to the host"))?;

    let sessions = Arc::new(Sessions::default());
    spawn_host_reader(console, pid, stdin, pty, sessions.clone())
        .map_err(Failure::setup("start the host reader"))?;
    relay(console, pid, stdout, stderr, cfg.tty, &sessions)
        .map_err(Failure::setup("relay the command's output"))
}

pub(super) fn prepare(cfg: &GuestConfig) -> Result<Prepared, Failure> {
    let Some(program) = cfg.args.first() else {
        return Err(Failure::engine("no command given (args is empty)".into()));
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let identity = user::resolve(&cfg.user, &passwd, &group).map_err(Failure::engine)?;

    let mut env = cfg.env.clone();
    let has = |env: &[String], name: &str| env.iter().any(|e| e.split('=').next() == Some(name));
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", identity.home.as_deref().unwrap_or("/")));
    }
    if !cfg.hostname.is_empty() && !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={}", cfg.hostname));
    }
    if cfg.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();

    let candidates: Vec<String> = if program.contains('/') {
        vec![program.clone()]
    } else {
        path.split(':')
            .map(|dir| {
                let dir = if dir.is_empty() { "." } else { dir };
                format!("{}/{program}", dir.trim_end_matches('/'))
            })
            .collect()
    };

    let workdir = if cfg.workdir.is_empty() {
        "/".to_string()
    } else {
        cfg.workdir.clone()
    };
    if !std::path::Path::new(&workdir).is_dir() {
        std::fs::create_dir_all(&workdir)
            .map_err(|e| Failure::engine(format!("create the working directory {workdir}: {e}")))?;
    }

    let c = |s: &String| cstr(s).map_err(|e| Failure::engine(e.to_string()));
    Ok(Prepared {
        candidates: candidates.iter().map(c).collect::<Result<_, _>>()?,
        argv: cfg.args.iter().map(c).collect::<Result<_, _>>()?,
        envp: env.iter().map(c).collect::<Result<_, _>>()?,
        workdir: c(&workdir)?,
        identity,
        cgroup: super::rootfs::workload_cgroup(),
    })
}

pub(super) fn open_stdio(cfg: &GuestConfig) -> io::Result<Stdio> {
    if cfg.tty {
        let (master, slave) = open_pty()?;
        let dup = |f: &OwnedFd| f.try_clone();
        let master = File::from(master);
        Ok(Stdio {
            child: [dup(&slave)?, dup(&slave)?, slave],
            stdin: if cfg.interactive {
                Some(master.try_clone()?)
            } else {
                None
            },
            stdout: master.try_clone()?,
            stderr: None,
            pty: Some(master),
        })
    } else {
        let (stdin_child, stdin) = if cfg.interactive {
            let (r, w) = sys::pipe()?;
            (r, Some(File::from(w)))
        } else {
            let null = File::open("/dev/null")
                .map_err(|e| io::Error::new(e.kind(), format!("open /dev/null: {e}")))?;
            (OwnedFd::from(null), None)
        };
        let (out_r, out_w) = sys::pipe()?;
        let (err_r, err_w) = sys::pipe()?;
        Ok(Stdio {
            child: [stdin_child, out_w, err_w],
            stdin,
            stdout: File::from(out_r),
            stderr: Some(File::from(err_r)),
            pty: None,
        })
    }
}

/// Opens a pseudo-terminal pair through `/dev/ptmx` (no libutil needed): `(master, slave)`.
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")
        .map_err(|e| io::Error::new(e.kind(), format!("open /dev/ptmx: {e}")))?;
    let fd = master.as_raw_fd();
    let mut unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: ioctls on the master we own, each with a pointer to a live integer of the
    // type the request expects.
    unsafe {
        check(libc::ioctl(fd, libc::TIOCSPTLCK, &mut unlock), || {
            "unlock the pty".into()
        })?;
        check(libc::ioctl(fd, libc::TIOCGPTN, &mut n), || {
            "get the pty number".into()
        })?;
    }
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!("/dev/pts/{n}"))
        .map_err(|e| io::Error::new(e.kind(), format!("open /dev/pts/{n}: {e}")))?;
    Ok((master.into(), slave.into()))
}

/// The forked child: session, stdio, credentials, working directory, exec. On failure it
/// writes `[step, errno (i32 LE)]` to the exec-status pipe and exits.
pub(super) fn child(p: &Prepared, stdio: &Stdio, tty: bool, status: OwnedFd) -> ! {
    let fail = |step: ChildStep| -> ! {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let mut msg = [0u8; 5];
        msg[0] = step as u8;
        msg[1..].copy_from_slice(&errno.to_le_bytes());
        // SAFETY: writes our 5-byte buffer to the pipe we own, then exits without running
        // the parent's destructors or atexit handlers.
        unsafe {
            libc::write(status.as_raw_fd(), msg.as_ptr().cast(), msg.len());
            libc::_exit(125)
        }
    };
    // SAFETY: from here on only syscalls on data prepared before fork. The empty signal
    // mask and default dispositions are what the command expects to inherit (the agent
    // blocks SIGCHLD and Rust ignores SIGPIPE; exec would keep both).
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);

        // First, so that everything it forks is counted.
        if let Some(procs) = p.cgroup {
            if libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                fail(ChildStep::Cgroup);
            }
        }
        if libc::setsid() < 0 {
            fail(ChildStep::Session);
        }
        if tty && libc::ioctl(stdio.child[0].as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            fail(ChildStep::Session);
        }
        for (target, fd) in stdio.child.iter().enumerate() {
            // dup2 clears FD_CLOEXEC on the new descriptor.
            if libc::dup2(fd.as_raw_fd(), target as RawFd) < 0 {
                fail(ChildStep::Stdio);
            }
        }
        let id = &p.identity;
        if libc::setgroups(id.groups.len(), id.groups.as_ptr()) < 0 {
            fail(ChildStep::Groups);
        }
        if libc::setgid(id.gid) < 0 {
            fail(ChildStep::Gid);
        }
        if libc::setuid(id.uid) < 0 {
            fail(ChildStep::Uid);
        }
        if libc::chdir(p.workdir.as_ptr()) < 0 {
            fail(ChildStep::Chdir);
        }
        let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = p.envp.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        // Like execvp: skip directories where the file is missing, remember EACCES.
        let mut denied = false;
        for candidate in &p.candidates {
            libc::execve(candidate.as_ptr(), argv.as_ptr(), envp.as_ptr());
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
                Some(libc::EACCES) => denied = true,
                _ => fail(ChildStep::Exec),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        } else {
            *libc::__errno_location() = libc::ENOENT;
        }
        fail(ChildStep::Exec)
    }
}

/// Reads the exec-status pipe: EOF means the exec succeeded (the pipe was close-on-exec).
pub(super) fn exec_outcome(mut status: File, p: &Prepared, cfg: &GuestConfig) -> Option<Failure> {
    let mut msg = Vec::new();
    if status.read_to_end(&mut msg).is_err() || msg.len() < 5 {
        return None;
    }
    let step = msg[0];
    let errno = i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]);
    let err = io::Error::from_raw_os_error(errno);
    let program = cfg.args.first().map(String::as_str).unwrap_or_default();
    if step != ChildStep::Exec as u8 {
        let detail = match step {
            6 => format!(" {}", p.workdir.to_string_lossy()),
            3..=5 => format!(" (user {:?})", cfg.user),
            _ => String::new(),
        };
        return Some(Failure::engine(format!(
            "{}{detail}: {err}",
            ChildStep::describe(step)
        )));
    }
    Some(match errno {
        libc::ENOENT | libc::ENOTDIR if !program.contains('/') => Failure {
            code: 127,
            message: format!("exec {program}: executable file not found in $PATH"),
        },
        libc::ENOENT | libc::ENOTDIR => Failure {
            code: 127,
            message: format!("exec {program}: no such file or directory"),
        },
        _ => Failure {
            code: 126,
            message: format!("exec {program}: {err}"),
        },
    })
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid with a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// Host frames → the command: stdin (through a writer thread), signals, resizes. Frames
/// that make no sense in this mode are ignored; a broken channel ends the thread.
fn spawn_host_reader(
    console: &File,
    pid: libc::pid_t,
    stdin: Option<File>,
    pty: Option<File>,
    sessions: Arc<Sessions>,
) -> io::Result<()> {
    let mut input = console.try_clone()?;
    let output = console.try_clone()?;
    let stdin_tx = stdin.map(|mut sink| {
        let (tx, rx) = mpsc::channel::<Option<Vec<u8>>>();
        std::thread::spawn(move || {
            while let Ok(Some(data)) = rx.recv() {
                if sink.write_all(&data).is_err() {
                    break;
                }
            }
            // Dropping `sink` closes the pipe: the command sees EOF.
        });
        tx
    });
    std::thread::spawn(move || {
        let mut stdin_tx = stdin_tx;
        while let Ok(Some((kind, payload))) = protocol::read_frame(&mut input) {
            match kind {
                Kind::Stdin => {
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(Some(payload));
                    }
                }
                // With a tty the master also carries output: it stays open.
                Kind::StdinEof if pty.is_none() => {
                    if let Some(tx) = stdin_tx.take() {
                        let _ = tx.send(None);
                    }
                }
                Kind::Signal => {
                    if let Ok(sig) = protocol::decode_i32(&payload) {
                        // SAFETY: kill has no memory-safety preconditions.
                        unsafe { libc::kill(pid, sig) };
                    }
                }
                Kind::Resize => {
                    if let (Some(pty), Ok((rows, cols))) = (&pty, protocol::decode_resize(&payload))
                    {
                        resize(pty, rows, cols);
                    }
                }
                Kind::ExecStart
                | Kind::ExecStdin
                | Kind::ExecStdinEof
                | Kind::ExecSignal
                | Kind::ExecResize => sessions.frame(&output, kind, &payload),
                Kind::Hosts => update_hosts(&payload),
                _ => {}
            }
        }
    });
    Ok(())
}

/// One output stream of the command.
struct Stream {
    file: File,
    kind: Kind,
    open: bool,
}

/// Sends the command's output until it exits and its output is drained; reaps every child
/// meanwhile (we are PID 1). Returns its exit status.
fn relay(
    console: &File,
    pid: libc::pid_t,
    stdout: File,
    stderr: Option<File>,
    tty: bool,
    sessions: &Sessions,
) -> io::Result<i32> {
    let sigfd = signalfd_sigchld()?;
    let mut streams = vec![Stream {
        file: stdout,
        kind: Kind::Stdout,
        open: true,
    }];
    if let Some(file) = stderr {
        streams.push(Stream {
            file,
            kind: Kind::Stderr,
            open: true,
        });
    }
    for s in &streams {
        sys::set_nonblocking(s.file.as_raw_fd())?;
    }
    let mut buf = vec![0u8; CHUNK];
    let mut exit: Option<i32> = None;
    let mut drain_deadline = None;
    loop {
        let mut fds: Vec<libc::pollfd> = streams
            .iter()
            .filter(|s| s.open)
            .map(|s| libc::pollfd {
                fd: s.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let streams_polled = fds.len();
        if exit.is_none() {
            fds.push(libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if fds.is_empty() {
            break;
        }
        // Once the command is gone, pipes hold all it wrote; a pty may lag a little.
        let timeout = match exit {
            None => -1,
            Some(_) if tty => PTY_DRAIN_IDLE.as_millis() as libc::c_int,
            Some(_) => 0,
        };
        // SAFETY: fds is a valid array of fds.len() pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 && exit.is_some() {
            break; // drained (or something else holds the output open: stop anyway)
        }
        // An orphan that keeps writing must not keep the VM alive forever.
        if drain_deadline.is_some_and(|d| std::time::Instant::now() > d) {
            break;
        }
        let mut polled = fds[..streams_polled].iter();
        for s in streams.iter_mut().filter(|s| s.open) {
            let Some(p) = polled.next() else { break };
            if p.revents == 0 {
                continue;
            }
            loop {
                match s.file.read(&mut buf) {
                    Ok(0) => {
                        s.open = false;
                        break;
                    }
                    Ok(n) => send(console, s.kind, &buf[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // EIO: a pty master whose slave side is closed everywhere.
                    Err(_) => {
                        s.open = false;
                        break;
                    }
                }
            }
        }
        if exit.is_none() && fds.last().is_some_and(|p| p.revents != 0) {
            drain_signalfd(&sigfd);
            exit = reap_all(pid, sessions);
            if exit.is_some() {
                drain_deadline = Some(std::time::Instant::now() + DRAIN_LIMIT);
            }
        }
    }
    // Orphans may still exit later; nobody waits for them once we power off.
    Ok(exit.unwrap_or(128 + libc::SIGKILL))
}

/// A non-blocking signalfd for SIGCHLD (blocked in every thread since `guest::run`).
fn signalfd_sigchld() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let fd = check(
            libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK),
            || "signalfd".into(),
        )?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn drain_signalfd(fd: &OwnedFd) {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    // SAFETY: reads into our buffer, sized for whole signalfd_siginfo records.
    while unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
}

/// Reaps every exited child; returns the command's status if it was among them, and
/// passes exec sessions' statuses on.
fn reap_all(command: libc::pid_t, sessions: &Sessions) -> Option<i32> {
    let mut result = None;
    let mut registered = sessions.reaper_lock();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return result;
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            continue;
        };
        if pid == command {
            result = Some(code);
        } else {
            // An exec session's process: its session thread wants the status.
            if let Some(tx) = registered.remove(&pid) {
                let _ = tx.send(code);
            }
        }
    }
}
