//! Exec sessions for a front end that cannot be the exec'd process's parent itself: a
//! long-lived, multi-threaded server (`vessel serve`) must not fork into a container's
//! namespaces. It starts a helper instead, `vessel __exec` ([`spawn`]), a fresh
//! single-threaded process that runs the exec through the backend exactly as `vessel
//! exec` does ([`helper_main`]), waits for the process and exits with its status.
//!
//! The helper's descriptors, set up by [`spawn`]:
//! - 0, 1, 2: without a terminal, the exec'd process's own stdin, stdout and stderr
//!   (pipes whose other ends the front end holds; stdin is `/dev/null` unless
//!   [`ExecSpec::interactive`]); with a terminal, the helper copies fd 0 to the
//!   terminal and the terminal to fd 1;
//! - 3 ([`CONTROL_FD`]): a socket on which the helper reports, one JSON [`HelperReport`]
//!   per line, and reads `resize ROWS COLS` lines (a terminal's size).

use std::io::{BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

use super::backend::{ExecRequest, Stdio};
use super::catalogue::Status;
use super::{Engine, EngineConfig, EngineError, Result};

/// The helper's control socket.
pub const CONTROL_FD: RawFd = 3;

/// What to run in the instance.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecSpec {
    /// argv (at least the program).
    pub args: Vec<String>,
    /// Extra environment (`K=V`), on top of the instance's.
    pub env: Vec<String>,
    /// Working directory (the instance's if `None`).
    pub workdir: Option<String>,
    /// User (the instance's if `None`).
    pub user: Option<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// The process reads the front end's input (else `/dev/null`).
    pub interactive: bool,
}

/// What the helper reports on its control socket.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum HelperReport {
    /// The process runs, as host pid `pid`.
    Started {
        /// Its host pid.
        pid: i32,
    },
    /// It could not be started; `code` is Docker's status for that (125, 126, 127).
    Error {
        /// Exit status.
        code: u8,
        /// One line.
        message: String,
    },
}

/// A running helper, as the front end holds it.
pub struct Helper {
    /// The helper process: its exit status is the exec'd process's.
    pub child: std::process::Child,
    /// The control socket (reports in, resizes out).
    pub control: UnixStream,
    /// Where input goes (the write end of fd 0), if the process takes input.
    pub stdin: Option<OwnedFd>,
    /// The process's (or the terminal's) output.
    pub stdout: OwnedFd,
    /// The process's standard error (none with a terminal: it goes to the terminal).
    pub stderr: Option<OwnedFd>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EngineError::Internal(format!("exec: pipe: {e}")))
}

/// Starts `vessel __exec` for instance `id` (which must be running when the helper looks).
pub fn spawn(config: &EngineConfig, id: &str, spec: &ExecSpec) -> Result<Helper> {
    use std::os::unix::process::CommandExt;
    let spec_json =
        serde_json::to_string(spec).map_err(|e| EngineError::Internal(format!("exec: {e}")))?;
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| EngineError::Internal(format!("exec: socketpair: {e}")))?;
    let (in_r, in_w) = if spec.interactive || spec.tty {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = if spec.tty {
        (None, None)
    } else {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    };
    let mut cmd = std::process::Command::new(&config.exe);
    cmd.arg("--root")
        .arg(&config.root)
        .arg("__exec")
        .arg(id)
        .arg(spec_json);
    config.apply_child_env(&mut cmd);
    cmd.stdin(match in_r {
        Some(r) => std::process::Stdio::from(r),
        None => std::process::Stdio::null(),
    });
    cmd.stdout(std::process::Stdio::from(out_w));
    cmd.stderr(match err_w {
        Some(w) => std::process::Stdio::from(w),
        None => std::process::Stdio::null(),
    });
    let ctl = theirs.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec: dup2 of the control
    // socket onto fd 3 (which clears close-on-exec on the copy), and a session of its
    // own so that a signal to the server's process group does not reach it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(ctl, CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| EngineError::Internal(format!("exec: start the helper: {e}")))?;
    drop(theirs);
    Ok(Helper {
        child,
        control: ours,
        stdin: in_w,
        stdout: out_r,
        stderr: err_r,
    })
}

/// Reads the helper's first report: the process started (its pid), or why not.
pub fn read_report(control: &UnixStream) -> HelperReport {
    let mut line = String::new();
    let got = std::io::BufReader::new(control).read_line(&mut line);
    match got {
        Ok(n) if n > 0 => serde_json::from_str(&line).unwrap_or_else(|e| HelperReport::Error {
            code: 125,
            message: format!("exec: a bad report from the helper: {e}"),
        }),
        _ => HelperReport::Error {
            code: 125,
            message: "exec: the helper ended without starting the process".into(),
        },
    }
}

/// Asks the helper to set the terminal's size.
pub fn resize(control: &UnixStream, rows: u16, cols: u16) -> std::io::Result<()> {
    let mut c = control;
    c.write_all(format!("resize {rows} {cols}\n").as_bytes())
}

/// Parses a `resize ROWS COLS` line.
fn parse_resize(line: &str) -> Option<(u16, u16)> {
    let mut w = line.split_whitespace();
    if w.next()? != "resize" {
        return None;
    }
    let rows = w.next()?.parse().ok()?;
    let cols = w.next()?.parse().ok()?;
    w.next().is_none().then_some((rows, cols))
}

fn report(control: &mut std::fs::File, r: &HelperReport) {
    if let Ok(mut line) = serde_json::to_string(r) {
        line.push('\n');
        let _ = control.write_all(line.as_bytes());
    }
}

/// The body of `vessel __exec ID SPEC`: starts the process and returns its exit status
/// (or Docker's status for a failure to start it, reported on the control socket).
pub fn helper_main(
    engine: &Engine,
    id: &str,
    spec_json: &str,
    control: std::os::fd::OwnedFd,
) -> u8 {
    let mut control = std::fs::File::from(control);
    let fail = |control: &mut std::fs::File, e: EngineError| {
        let code = e.exit_code();
        report(
            control,
            &HelperReport::Error {
                code,
                message: e.to_string(),
            },
        );
        code
    };
    let spec: ExecSpec = match serde_json::from_str(spec_json) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                &mut control,
                EngineError::Internal(format!("exec: the spec: {e}")),
            )
        }
    };
    match start(engine, id, &spec) {
        Err(e) => fail(&mut control, e),
        Ok(p) => {
            report(&mut control, &HelperReport::Started { pid: p.pid });
            if let Some(master) = &p.pty_master {
                relay_terminal(master, &control);
            }
            wait(p.pid)
        }
    }
}

/// Starts the process: the instance must be running.
fn start(engine: &Engine, id: &str, spec: &ExecSpec) -> Result<super::backend::Exec> {
    let inst = engine.get(id)?;
    if inst.status != Status::Running {
        return Err(EngineError::Conflict(format!(
            "container {} is not running",
            inst.id
        )));
    }
    let backend = engine.backend(inst.request.isolation)?;
    let req = ExecRequest {
        args: spec.args.clone(),
        env: spec.env.clone(),
        workdir: spec.workdir.clone(),
        user: spec.user.clone(),
        tty: spec.tty,
    };
    let dup = |fd: RawFd| -> Result<OwnedFd> {
        // SAFETY: 0, 1 and 2 are open for the life of the helper.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        b.try_clone_to_owned()
            .map_err(|e| EngineError::Internal(format!("exec: dup: {e}")))
    };
    let stdio = if spec.tty {
        Stdio::Pty
    } else {
        Stdio::Fds {
            stdin: dup(0)?,
            stdout: dup(1)?,
            stderr: dup(2)?,
        }
    };
    let dir = engine.instance_dir(&inst.id);
    let p = backend.exec(&inst, &dir, &req, stdio)?;
    if !spec.tty {
        // Only the process holds the pipes now: their ends are its ends.
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            // SAFETY: dup2 onto our own standard descriptors.
            unsafe {
                libc::dup2(null.as_raw_fd(), 0);
                libc::dup2(null.as_raw_fd(), 1);
                libc::dup2(null.as_raw_fd(), 2);
            }
        }
    }
    Ok(p)
}

/// Waits for the exec'd process (our child); its status, 128 + signal if killed.
fn wait(pid: i32) -> u8 {
    loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return c as u8,
            Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => return 128 + s as u8,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 125,
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) => return false,
            Ok(k) => data = &data[k..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Copies fd 0 to the terminal and the terminal to fd 1 until the terminal closes (every
/// process holding it has ended), and applies the resizes read from `control`.
fn relay_terminal(master: &OwnedFd, control: &std::fs::File) {
    // SAFETY: 0 and 1 are open for the life of the helper.
    let (fd0, fd1) = unsafe { (BorrowedFd::borrow_raw(0), BorrowedFd::borrow_raw(1)) };
    let mut input_open = true;
    let mut control_open = true;
    let mut pending = String::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if input_open {
            fds.push(PollFd::new(fd0, PollFlags::POLLIN));
        }
        if control_open {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let mut k = 1;
        if ready[0] {
            match nix::unistd::read(master, &mut buf) {
                // EIO: every process holding the terminal has ended.
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = write_all(fd1, &buf[..n]);
                }
            }
        }
        if input_open {
            if ready[k] {
                match nix::unistd::read(fd0, &mut buf) {
                    Ok(0) | Err(_) => {
                        input_open = false;
                        // The end of the input, as a terminal has it.
                        let _ = write_all(master.as_fd(), &[4]);
                    }
                    Ok(n) => {
                        let _ = write_all(master.as_fd(), &buf[..n]);
                    }
                }
            }
            k += 1;
        }
        if control_open && ready[k] {
            match nix::unistd::read(control, &mut buf) {
                Ok(0) | Err(_) => control_open = false,
                Ok(n) => {
                    pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(i) = pending.find('\n') {
                        let line: String = pending.drain(..=i).collect();
                        if let Some((rows, cols)) = parse_resize(&line) {
                            set_size(master, rows, cols);
                        }
                    }
                    if pending.len() > 256 {
                        pending.clear();
                    }
                }
            }
        }
    }
}

/// Sets a terminal's size (its foreground process group gets SIGWINCH).
pub fn set_size(master: &impl AsRawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize on a descriptor the caller holds.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_lines_parse_and_bad_ones_do_not() {
        assert_eq!(parse_resize("resize 24 80\n"), Some((24, 80)));
        assert_eq!(parse_resize("resize 24"), None);
        assert_eq!(parse_resize("resize 24 80 1"), None);
        assert_eq!(parse_resize("resize -1 80"), None);
        assert_eq!(parse_resize("other 1 2"), None);
    }

    #[test]
    fn reports_round_trip_as_json_lines() {
        let r = HelperReport::Started { pid: 42 };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"event":"started","pid":42}"#);
        assert_eq!(serde_json::from_str::<HelperReport>(&s).unwrap(), r);
    }
}
