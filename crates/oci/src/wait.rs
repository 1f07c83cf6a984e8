//! Staying in front of a process (`run` and `exec` without `--detach`): forward signals
//! to it, relay its terminal, and exit with its status.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Signals passed on to the process, as runc does (everything a user or a supervisor
/// sends to stop, reload or wake it).
const FORWARDED: [Signal; 11] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTERM,
    Signal::SIGALRM,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// Wait for `pid` (a child of this process) to end, forwarding [`FORWARDED`] signals to
/// it. Returns its exit status, or 128 + the signal that killed it.
pub fn wait_forwarding(pid: Pid) -> Result<u8> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.thread_block().map_err(|e| Error::Sys {
        op: "block signals".into(),
        source: e,
    })?;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32 as u8),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::Sys {
                    op: format!("wait for process {pid}"),
                    source: e,
                })
            }
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        // SAFETY: `set` is a valid sigset_t; no siginfo is asked for; `ts` lives across
        // the call.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
        if sig > 0 && sig != libc::SIGCHLD {
            if let Ok(s) = Signal::try_from(sig) {
                let _ = kill(pid, s);
            }
        }
    }
}

/// Relays this process's stdin to the pty `master` and the pty's output to stdout, in
/// two threads. The returned handle waits (boundedly) for the output to be drained.
pub struct PtyRelay {
    done: mpsc::Receiver<()>,
    restore: Option<nix::sys::termios::Termios>,
}

impl PtyRelay {
    /// Start relaying; when stdin is a terminal it is put in raw mode until [`finish`].
    ///
    /// [`finish`]: PtyRelay::finish
    pub fn start(master: OwnedFd) -> Result<PtyRelay> {
        let stdin = std::io::stdin();
        let restore = nix::sys::termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &restore {
            let mut raw = t.clone();
            nix::sys::termios::cfmakeraw(&mut raw);
            let _ = nix::sys::termios::tcsetattr(
                stdin.as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                &raw,
            );
        }
        let input = master.try_clone().map_err(|e| Error::Io {
            op: "duplicate",
            path: "the pty master".into(),
            source: e,
        })?;
        std::thread::spawn(move || {
            let mut to = std::fs::File::from(input);
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut from = std::fs::File::from(master);
            let mut buf = [0u8; 4096];
            let mut out = std::io::stdout();
            // EIO once every holder of the slave has closed it.
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = out.flush();
            }
            let _ = tx.send(());
        });
        Ok(PtyRelay { done, restore })
    }

    /// Wait up to a second for the last output, and restore the terminal.
    pub fn finish(self) {
        let _ = self.done.recv_timeout(Duration::from_secs(1));
        if let Some(t) = &self.restore {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Write a pid file the way runc does: a temporary file renamed over it, so a reader
/// never sees it half-written.
pub fn write_pid_file(path: &Path, pid: Pid) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let io = |op, p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::Io {
            op,
            path: p,
            source: e,
        }
    };
    std::fs::write(&tmp, pid.to_string()).map_err(io("write pid file", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("write pid file", path))
}
