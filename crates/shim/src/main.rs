//! `vessel-shim`: what a detached container's monitor becomes once the container runs.
//!
//! ```text
//! vessel-shim --pid PID (--log FILE [--max-size BYTES] [--max-file N] | --no-log)
//!             (--stdout FD --stderr FD | --pty FD) [--hold FD]
//!             [--attach-listen FD] [--attach-client FD]... -- FINISH...
//! ```
//!
//! PID must be a child of this process (the monitor started it before exec'ing the shim).
//! The shim copies the container's output from the pipe or terminal fds into the JSON-lines
//! log, rotated at BYTES keeping N files (no `--max-size`: never rotated; `--no-log`:
//! output is read and dropped), forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to PID, reaps it,
//! drains what output is left, and then executes `FINISH... --code N` (`vessel
//! __monitor-finish`), which records the exit and removes what the container held. `--hold`
//! keeps a descriptor open until then (the stdin of a detached `-i` container).
//! `--attach-listen` is the instance's attach socket (`vessel_shim::attach`), which the
//! shim serves from then on; `--attach-client` a client attached already.
//! It is an internal interface: the arguments are written by `vessel`, not by people.

use std::ffi::{CString, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use std::os::fd::{FromRawFd, OwnedFd};

use vessel_shim::attach::{Action, Hub, StdinTarget};
use vessel_shim::logs::{Rotation, Stream, Writer};

/// Signals passed on to the container.
const FORWARD: &[libc::c_int] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// How long output may still be read after the container's main process exited (other
/// processes can hold the pipes open).
const DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Args {
    pid: libc::pid_t,
    /// `None`: `--no-log`.
    log: Option<PathBuf>,
    rotation: Rotation,
    sources: Vec<(RawFd, Stream)>,
    hold: Option<RawFd>,
    /// The source is a terminal (`--pty`).
    pty: bool,
    /// The terminal takes attached clients' input (`--pty-input`: an `-i` container).
    pty_input: bool,
    attach_listen: Option<RawFd>,
    attach_clients: Vec<(RawFd, Option<u8>)>,
    finish: Vec<OsString>,
}

fn parse(mut it: impl Iterator<Item = OsString>) -> Result<Args, String> {
    let mut pid = None;
    let mut log = None;
    let mut no_log = false;
    let mut rotation = Rotation::UNLIMITED;
    let mut sources = Vec::new();
    let mut hold = None;
    let mut attach_listen = None;
    let mut attach_clients = Vec::new();
    let (mut pty, mut pty_input) = (false, false);
    let fd = |v: Option<OsString>, flag: &str| -> Result<RawFd, String> {
        v.and_then(|s| s.to_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("{flag} needs a file descriptor number"))
    };
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--pid") => {
                pid = Some(
                    it.next()
                        .and_then(|s| s.to_str().and_then(|s| s.parse().ok()))
                        .ok_or("--pid needs a process id")?,
                )
            }
            Some("--log") => log = Some(PathBuf::from(it.next().ok_or("--log needs a path")?)),
            Some("--no-log") => no_log = true,
            Some("--max-size") => {
                rotation.max_size = Some(
                    it.next()
                        .and_then(|s| s.to_str().and_then(|s| s.parse().ok()))
                        .filter(|&n: &u64| n > 0)
                        .ok_or("--max-size needs a positive number of bytes")?,
                )
            }
            Some("--max-file") => {
                rotation.max_files = it
                    .next()
                    .and_then(|s| s.to_str().and_then(|s| s.parse().ok()))
                    .filter(|&n: &u32| n > 0)
                    .ok_or("--max-file needs a positive number")?
            }
            Some("--stdout") => sources.push((fd(it.next(), "--stdout")?, Stream::Stdout)),
            Some("--stderr") => sources.push((fd(it.next(), "--stderr")?, Stream::Stderr)),
            Some("--pty") => {
                pty = true;
                sources.push((fd(it.next(), "--pty")?, Stream::Stdout))
            }
            Some("--pty-input") => pty_input = true,
            Some("--hold") => hold = Some(fd(it.next(), "--hold")?),
            Some("--attach-listen") => attach_listen = Some(fd(it.next(), "--attach-listen")?),
            Some("--attach-client") => attach_clients.push(
                it.next()
                    .and_then(|s| s.to_str().and_then(Hub::parse_client_arg))
                    .ok_or("--attach-client needs FD or FD:FLAGS")?,
            ),
            Some("--") => break,
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    let finish: Vec<OsString> = it.collect();
    let log = match (log, no_log) {
        (Some(_), true) => return Err("--log and --no-log exclude each other".into()),
        (None, false) => return Err("--log or --no-log is required".into()),
        (log, _) => log,
    };
    Ok(Args {
        pid: pid.ok_or("--pid is required")?,
        log,
        rotation,
        sources,
        hold,
        pty,
        pty_input,
        attach_listen,
        attach_clients,
        finish,
    })
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    // Caught only so that a write to a closed pipe fails with EPIPE instead of killing
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

/// A self-pipe that the handlers of the forwarded signals and of SIGCHLD write to.
fn signal_pipe() -> std::io::Result<RawFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 with a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
    for &s in FORWARD.iter().chain(&[libc::SIGCHLD, libc::SIGPIPE]) {
        // SAFETY: a plain sigaction whose handler only calls write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
    Ok(fds[0])
}

/// The exit status of `pid` if it has ended: its code, or 128 + the signal.
fn reap(pid: libc::pid_t) -> Option<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Some(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Some(128 + libc::WTERMSIG(status));
            }
            continue; // stopped or continued: not an end
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // 0: still running. ECHILD: not our child (cannot happen with a correct caller);
        // report it as an engine error rather than wait forever.
        return if r == 0 { None } else { Some(125) };
    }
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: F_SETFD on a descriptor we were handed.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// Copies one chunk from `fd` into the log; false at end of file or on an error (a
/// terminal master reads EIO once the container's side is closed).
fn copy(fd: RawFd, stream: Stream, log: &mut Writer, hub: &mut Hub) -> bool {
    let mut buf = [0u8; 32 * 1024];
    loop {
        // SAFETY: read into a local buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            return false;
        }
        let _ = log.write(stream, &buf[..n as usize]);
        hub.send(stream, &buf[..n as usize]);
        return true;
    }
}

/// Polls `fds` (all for input) for at most `timeout_ms` (-1: no limit); returns which are
/// ready, or `None` on a signal interruption.
fn poll_in(fds: &[RawFd], timeout_ms: i32) -> Option<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: poll over a vector of pollfds of the given length.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        return None;
    }
    Some(p.iter().map(|p| p.revents != 0).collect())
}

/// The attach socket's hub over the descriptors the monitor handed over, with the
/// container's stdin (the held pipe, or the terminal) as its input's target.
fn hub(args: &Args) -> Hub {
    // SAFETY: descriptors handed to us by the monitor for exactly this purpose.
    let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
    let tty = args.pty;
    let mut hub = Hub::from_parts(
        args.attach_listen.map(own),
        args.attach_clients
            .iter()
            .map(|&(fd, m)| (own(fd), m))
            .collect(),
        tty,
    );
    let target = match (args.hold, args.pty && args.pty_input) {
        (Some(fd), _) => Some(StdinTarget { fd, pty: false }),
        (None, true) => args
            .sources
            .first()
            .map(|&(fd, _)| StdinTarget { fd, pty: true }),
        (None, false) => None,
    };
    hub.set_stdin(target);
    if args.pty {
        hub.set_terminal(args.sources.first().map(|&(fd, _)| fd));
    }
    hub
}

fn supervise(args: &mut Args, log: &mut Writer) -> Result<i32, String> {
    let sig = signal_pipe().map_err(|e| format!("signal pipe: {e}"))?;
    let mut hub = hub(args);
    let mut open: Vec<bool> = vec![true; args.sources.len()];
    let code = loop {
        // Checked before each wait: the container may have ended before the handler was
        // installed, and SIGCHLD is only a wake-up.
        if let Some(code) = reap(args.pid) {
            break code;
        }
        let live: Vec<usize> = (0..args.sources.len()).filter(|&i| open[i]).collect();
        let mut p: Vec<libc::pollfd> = std::iter::once(sig)
            .chain(live.iter().map(|&i| args.sources[i].0))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let first_hub = p.len();
        p.extend(hub.pollfds());
        // SAFETY: poll over a vector of pollfds of the given length.
        if unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, -1) } < 0 {
            continue;
        }
        if p[0].revents != 0 {
            let mut buf = [0u8; 64];
            // SAFETY: read from our nonblocking self-pipe into a local buffer.
            let n = unsafe { libc::read(sig, buf.as_mut_ptr().cast(), buf.len()) };
            for &s in &buf[..n.max(0) as usize] {
                if FORWARD.contains(&(s as libc::c_int)) {
                    // SAFETY: kill(2) on the container's main process, our child.
                    unsafe { libc::kill(args.pid, s as libc::c_int) };
                }
            }
        }
        // Attach clients first: one that just connected gets the output read below.
        if hub.handle(&p[first_hub..]) == Action::CloseStdin {
            if let Some(fd) = args.hold.take() {
                // SAFETY: closing the stdin pipe we were handed and nobody else uses.
                unsafe { libc::close(fd) };
            }
        }
        for (k, &i) in live.iter().enumerate() {
            if p[k + 1].revents != 0 && !copy(args.sources[i].0, args.sources[i].1, log, &mut hub) {
                open[i] = false;
            }
        }
    };
    // Whatever output is still buffered, for a bounded time.
    let deadline = Instant::now() + DRAIN;
    loop {
        let live: Vec<usize> = (0..args.sources.len()).filter(|&i| open[i]).collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if live.is_empty() || left.is_zero() {
            break;
        }
        let fds: Vec<RawFd> = live.iter().map(|&i| args.sources[i].0).collect();
        let Some(ready) = poll_in(&fds, left.as_millis() as i32) else {
            continue;
        };
        if !ready.iter().any(|&r| r) {
            break;
        }
        for (k, &i) in live.iter().enumerate() {
            if ready[k] && !copy(args.sources[i].0, args.sources[i].1, log, &mut hub) {
                open[i] = false;
            }
        }
    }
    let _ = log.flush();
    // The attached clients get the rest of the output and then their end of file.
    hub.finish(DRAIN);
    Ok(code)
}

fn main() {
    let mut args = match parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vessel-shim: {e}");
            std::process::exit(125);
        }
    };
    // Nothing of ours may leak into the finishing command.
    for &(fd, _) in &args.sources {
        set_cloexec(fd);
    }
    for fd in args
        .hold
        .iter()
        .chain(&args.attach_listen)
        .chain(args.attach_clients.iter().map(|(fd, _)| fd))
    {
        set_cloexec(*fd);
    }
    let opened = match &args.log {
        Some(path) => Writer::open(path, args.rotation).map_err(|e| (path, e)),
        None => Ok(Writer::discard()),
    };
    let mut log = match opened {
        Ok(w) => w,
        Err((path, e)) => {
            eprintln!("vessel-shim: open {}: {e}", path.display());
            std::process::exit(125);
        }
    };
    let code = match supervise(&mut args, &mut log) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vessel-shim: {e}");
            125
        }
    };
    if args.finish.is_empty() {
        std::process::exit(code.clamp(0, 255));
    }
    // Default dispositions again for the finishing command.
    for &s in FORWARD.iter().chain(&[libc::SIGCHLD, libc::SIGPIPE]) {
        // SAFETY: resetting a disposition to the default.
        unsafe { libc::signal(s, libc::SIG_DFL) };
    }
    let mut argv: Vec<CString> = Vec::new();
    for a in args
        .finish
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .chain([b"--code".to_vec(), code.to_string().into_bytes()])
    {
        match CString::new(a) {
            Ok(c) => argv.push(c),
            Err(_) => std::process::exit(code.clamp(0, 255)),
        }
    }
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: a NULL-terminated argv of valid C strings that outlive the call.
    unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
    eprintln!(
        "vessel-shim: run {:?}: {}",
        args.finish[0],
        std::io::Error::last_os_error()
    );
    std::process::exit(code.clamp(0, 255));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_its_arguments() {
        let a = parse(
            os(&[
                "--pid",
                "42",
                "--log",
                "/l",
                "--max-size",
                "1000",
                "--max-file",
                "3",
                "--stdout",
                "5",
                "--stderr",
                "6",
                "--hold",
                "7",
                "--",
                "vessel",
                "__monitor-finish",
                "x",
            ])
            .into_iter(),
        )
        .unwrap();
        assert_eq!(a.pid, 42);
        assert_eq!(a.log, Some(PathBuf::from("/l")));
        assert_eq!(
            a.rotation,
            Rotation {
                max_size: Some(1000),
                max_files: 3
            }
        );
        assert_eq!(a.sources, vec![(5, Stream::Stdout), (6, Stream::Stderr)]);
        assert_eq!(a.hold, Some(7));
        assert_eq!(a.finish, os(&["vessel", "__monitor-finish", "x"]));
    }

    #[test]
    fn refuses_bad_arguments() {
        assert!(parse(os(&["--log", "/l"]).into_iter())
            .unwrap_err()
            .contains("--pid"));
        assert!(parse(os(&["--pid", "1"]).into_iter())
            .unwrap_err()
            .contains("--no-log"));
        assert!(
            parse(os(&["--pid", "1", "--log", "/l", "--max-size", "0"]).into_iter())
                .unwrap_err()
                .contains("--max-size")
        );
        assert!(parse(os(&["--pid", "x"]).into_iter())
            .unwrap_err()
            .contains("process id"));
        assert!(parse(os(&["--pid", "1", "--stdout"]).into_iter())
            .unwrap_err()
            .contains("--stdout"));
        assert!(parse(os(&["--bogus"]).into_iter())
            .unwrap_err()
            .contains("unexpected"));
    }

    #[test]
    #[allow(clippy::zombie_processes)] // supervise() reaps it: that is what is tested
    fn copies_a_child_output_and_reports_its_status() {
        use std::os::fd::IntoRawFd;
        let dir = tempfile::tempdir().unwrap();
        let (r, w) = std::io::pipe().unwrap();
        let child = std::process::Command::new("sh")
            .args(["-c", "echo out; exit 7"])
            .stdout(w)
            .spawn()
            .unwrap();
        let mut args = Args {
            pid: child.id() as i32,
            log: Some(dir.path().join("log")),
            rotation: Rotation::DEFAULT,
            sources: vec![(r.into_raw_fd(), Stream::Stdout)],
            hold: None,
            pty: false,
            pty_input: false,
            attach_listen: None,
            attach_clients: Vec::new(),
            finish: Vec::new(),
        };
        let path = dir.path().join("log");
        let mut log = Writer::open(&path, args.rotation).unwrap();
        assert_eq!(supervise(&mut args, &mut log).unwrap(), 7);
        let entries = vessel_shim::logs::read_all(&path).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].log, "out\n");
    }
}
