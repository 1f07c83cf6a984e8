//! A process's standard streams from the paths containerd passes (FIFOs it reads and
//! writes, or files): without a terminal the process gets the FIFOs themselves for
//! stdout and stderr (no copy through the shim) and a pipe fed from the stdin FIFO
//! (so that `CloseIO` can end its input); with a terminal, the shim relays between the
//! FIFOs and the pty master it keeps for `ResizePty`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use vessel_container::Stdio;

use crate::error::{Error, Result};

/// Stack of the relay threads: they only copy through a small buffer.
const RELAY_STACK: usize = 64 * 1024;

/// The paths of one process's streams, as containerd gives them (empty: none).
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    /// FIFO the process reads.
    pub stdin: String,
    /// FIFO or file it writes.
    pub stdout: String,
    /// FIFO or file it writes (unused with a terminal).
    pub stderr: String,
    /// Whether the process gets a pty.
    pub terminal: bool,
}

fn check_path(p: &str) -> Result<()> {
    if p.contains("://") {
        return Err(Error::Invalid(format!(
            "stdio {p:?}: vessel takes FIFO or file paths, not log URIs"
        )));
    }
    if !p.is_empty() && !Path::new(p).is_absolute() {
        return Err(Error::Invalid(format!("stdio {p:?}: not an absolute path")));
    }
    Ok(())
}

/// Opens an output: a FIFO read-write (never blocks, never fails for want of a reader
/// yet), a file for appending, nothing as /dev/null.
fn open_output(p: &str) -> Result<File> {
    let path = if p.is_empty() { "/dev/null" } else { p };
    let fifo = std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let mut o = OpenOptions::new();
    if fifo {
        o.read(true).write(true);
    } else {
        o.append(true).create(true).mode(0o640);
    }
    o.custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// Copies `from` into `to` until either ends, in a thread of its own.
fn relay(name: &str, mut from: File, mut to: File) -> Result<()> {
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(RELAY_STACK)
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| Error::io("spawn a relay thread for", name, e))
}

/// Feeds the stdin FIFO to `to` once a writer opens it (in its thread).
fn feed_stdin(path: String, to: File) -> Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .stack_size(RELAY_STACK)
        .spawn(move || {
            let Ok(from) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            else {
                return;
            };
            let mut to = to;
            let mut from = from;
            let _ = std::io::copy(&mut from, &mut to);
        })
        .map(|_| ())
        .map_err(|e| Error::io("spawn the stdin thread for", "stdin", e))
}

/// Streams made ready for the runtime, and what remains to wire once the process exists.
pub struct Prepared {
    /// For the runtime.
    pub stdio: Stdio,
    paths: StdioPaths,
}

impl StdioPaths {
    /// Opens what the process gets. Without a terminal the outputs are opened now and the
    /// stdin relay starts; with one, [`Prepared::attach_pty`] wires the master.
    pub fn prepare(&self) -> Result<Prepared> {
        for p in [&self.stdin, &self.stdout, &self.stderr] {
            check_path(p)?;
        }
        if self.terminal {
            if !self.stderr.is_empty() && self.stderr != self.stdout {
                return Err(Error::Invalid(format!(
                    "stderr {:?} with a terminal: a terminal has one output stream",
                    self.stderr
                )));
            }
            return Ok(Prepared {
                stdio: Stdio::Pty,
                paths: self.clone(),
            });
        }
        let stdout = open_output(&self.stdout)?;
        let stderr = open_output(&self.stderr)?;
        let stdin: OwnedFd = if self.stdin.is_empty() {
            File::open("/dev/null")
                .map_err(|e| Error::io("open", "/dev/null", e))?
                .into()
        } else {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Error::io("pipe for", &self.stdin, e.into()))?;
            feed_stdin(self.stdin.clone(), File::from(w))?;
            r
        };
        Ok(Prepared {
            stdio: Stdio::Fds {
                stdin,
                stdout: stdout.into(),
                stderr: stderr.into(),
            },
            paths: self.clone(),
        })
    }
}

impl Prepared {
    /// Takes the streams for the runtime, keeping what [`Prepared::attach_pty`] needs.
    pub fn take(&mut self) -> Stdio {
        std::mem::replace(&mut self.stdio, Stdio::Inherit)
    }

    /// [`StdioPaths::attach_pty`] for the paths prepared.
    pub fn attach_pty(self, master: Option<OwnedFd>) -> Result<Option<Arc<OwnedFd>>> {
        self.paths.attach_pty(master)
    }
}

impl StdioPaths {
    /// With a terminal: relays the stdin FIFO to the master and the master to stdout.
    /// Returns the master, kept for resizing.
    pub fn attach_pty(&self, master: Option<OwnedFd>) -> Result<Option<Arc<OwnedFd>>> {
        let Some(master) = master else {
            return Ok(None);
        };
        let dup = |fd: &OwnedFd| {
            fd.as_fd()
                .try_clone_to_owned()
                .map(File::from)
                .map_err(|e| Error::io("dup", "the pty master", e))
        };
        if !self.stdout.is_empty() {
            relay("pty-out", dup(&master)?, open_output(&self.stdout)?)?;
        }
        if !self.stdin.is_empty() {
            feed_stdin(self.stdin.clone(), dup(&master)?)?;
        }
        Ok(Some(Arc::new(master)))
    }
}

/// Ends a process's input: a stdin relay still waiting for a writer sees one come and
/// go, then end of file.
pub fn close_stdin(path: &str) {
    if path.is_empty() {
        return;
    }
    let _ = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
}

/// Sets the terminal size of a pty master.
pub fn resize(master: &OwnedFd, width: u32, height: u32) -> Result<()> {
    let ws = libc::winsize {
        ws_row: u16::try_from(height)
            .map_err(|_| Error::Invalid(format!("terminal height {height}: too large")))?,
        ws_col: u16::try_from(width)
            .map_err(|_| Error::Invalid(format!("terminal width {width}: too large")))?,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call;
    // the descriptor is an open pty master that `master` owns.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(Error::io(
            "resize",
            "the pty",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
