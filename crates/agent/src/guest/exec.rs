//! `vessel exec` in the guest: more processes started while the command runs, each an
//! exec session with the host-chosen id its frames carry (see `protocol`).
//!
//! The host reader creates a session when `ExecStart` arrives (so stdin that follows at
//! once is kept) and hands it to a thread of its own, which forks and execs the process
//! like the command (same preparation, same child code), relays its output and sends its
//! exit. The command's relay loop is the only reaper (we are PID 1): it passes the status
//! of a session's process on through [`Sessions::reaped`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vessel_agent::protocol::{self, ErrorReport, GuestConfig, Kind};

use super::command::{self, send};
use super::sys;

/// How long a session's output is still relayed after its process exited.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// A running session, as the host reader sees it.
struct Session {
    /// Stdin bytes for the writer thread; `None` sent (or the sender dropped) is EOF.
    stdin: Option<mpsc::Sender<Option<Vec<u8>>>>,
    /// The process, once forked.
    pid: Option<libc::pid_t>,
    /// The terminal master, with a tty.
    pty: Option<File>,
    tty: bool,
}

/// All sessions of this guest.
#[derive(Default)]
pub(super) struct Sessions {
    by_id: Mutex<HashMap<u32, Session>>,
    /// Session processes not reaped yet, and where their status goes. Held across `fork`
    /// so that the reaper cannot miss a process that exits at once.
    by_pid: Mutex<ReaperMap>,
}

/// Session processes by pid, and where their exit status goes.
pub(super) type ReaperMap = HashMap<libc::pid_t, mpsc::Sender<i32>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    /// Handles one session frame from the host.
    pub(super) fn frame(self: &Arc<Self>, console: &File, kind: Kind, payload: &[u8]) {
        let Ok((id, data)) = protocol::split_session(payload) else {
            return;
        };
        match kind {
            Kind::ExecStart => self.start(console, id, data),
            Kind::ExecStdin => {
                if let Some(tx) = lock(&self.by_id).get(&id).and_then(|s| s.stdin.as_ref()) {
                    let _ = tx.send(Some(data.to_vec()));
                }
            }
            Kind::ExecStdinEof => {
                let mut map = lock(&self.by_id);
                // With a tty the master also carries output: it stays open.
                if let Some(s) = map.get_mut(&id).filter(|s| !s.tty) {
                    if let Some(tx) = s.stdin.take() {
                        let _ = tx.send(None);
                    }
                }
            }
            Kind::ExecSignal => {
                let pid = lock(&self.by_id).get(&id).and_then(|s| s.pid);
                if let (Some(pid), Ok(sig)) = (pid, protocol::decode_i32(data)) {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, sig) };
                }
            }
            Kind::ExecResize => {
                if let Ok((rows, cols)) = protocol::decode_resize(data) {
                    if let Some(pty) = lock(&self.by_id).get(&id).and_then(|s| s.pty.as_ref()) {
                        command::resize(pty, rows, cols);
                    }
                }
            }
            _ => {}
        }
    }

    /// The reaper holds this while it reaps, so that no session process is reaped between
    /// its `fork` and its registration.
    pub(super) fn reaper_lock(&self) -> std::sync::MutexGuard<'_, ReaperMap> {
        lock(&self.by_pid)
    }

    fn start(self: &Arc<Self>, console: &File, id: u32, data: &[u8]) {
        let reply_error = |code: u8, message: String| {
            let report = ErrorReport { code, message };
            let json = serde_json::to_vec(&report).unwrap_or_default();
            let _ = send(
                console,
                Kind::ExecError,
                &protocol::session_payload(id, &json),
            );
        };
        let cfg: GuestConfig = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => return reply_error(125, format!("parse the exec request: {e}")),
        };
        let (tx, rx) = mpsc::channel();
        {
            let mut map = lock(&self.by_id);
            if map.contains_key(&id) {
                drop(map);
                return reply_error(125, format!("exec session {id} exists already"));
            }
            map.insert(
                id,
                Session {
                    stdin: Some(tx),
                    pid: None,
                    pty: None,
                    tty: cfg.tty,
                },
            );
        }
        let console = match console.try_clone() {
            Ok(c) => c,
            Err(e) => return reply_error(125, format!("exec: {e}")),
        };
        let sessions = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("exec-{id}"))
            .spawn(move || {
                let result = sessions.run(&console, id, &cfg, rx);
                lock(&sessions.by_id).remove(&id);
                let (kind, payload) = match result {
                    Ok(code) => (Kind::ExecExit, protocol::encode_i32(code).to_vec()),
                    Err(f) => (
                        Kind::ExecError,
                        serde_json::to_vec(&ErrorReport {
                            code: f.code,
                            message: f.message,
                        })
                        .unwrap_or_default(),
                    ),
                };
                let _ = send(&console, kind, &protocol::session_payload(id, &payload));
            });
        if let Err(e) = spawned {
            lock(&self.by_id).remove(&id);
            reply_error(125, format!("exec: start a thread: {e}"));
        }
    }

    /// Runs session `id` to its end: its exit status, or why it did not run.
    fn run(
        &self,
        console: &File,
        id: u32,
        cfg: &GuestConfig,
        stdin_rx: mpsc::Receiver<Option<Vec<u8>>>,
    ) -> Result<i32, super::Failure> {
        let prepared = command::prepare(cfg)?;
        let stdio = command::open_stdio(cfg)
            .map_err(super::Failure::setup("set up the exec'd process's stdio"))?;
        let (status_r, status_w) =
            sys::pipe().map_err(super::Failure::setup("create the exec pipe"))?;
        let (exit_tx, exit_rx) = mpsc::channel();
        let pid = {
            let mut reaper = self.reaper_lock();
            // SAFETY: the child only makes syscalls on data prepared before the fork (see
            // `command::child`), so the other threads' state does not matter to it.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(super::Failure::engine(format!(
                    "fork: {}",
                    io::Error::last_os_error()
                )));
            }
            if pid == 0 {
                drop(status_r);
                command::child(&prepared, &stdio, cfg.tty, status_w);
            }
            reaper.insert(pid, exit_tx);
            pid
        };
        drop(status_w);
        let command::Stdio {
            child: child_fds,
            stdin,
            stdout,
            stderr,
            pty,
        } = stdio;
        drop(child_fds);
        if let Some(failure) = command::exec_outcome(File::from(status_r), &prepared, cfg) {
            return Err(failure);
        }
        {
            let mut map = lock(&self.by_id);
            if let Some(s) = map.get_mut(&id) {
                s.pid = Some(pid);
                s.pty = pty.as_ref().and_then(|p| p.try_clone().ok());
            }
        }
        send(
            console,
            Kind::ExecStarted,
            &protocol::session_payload(id, &[]),
        )
        .map_err(super::Failure::setup("send ExecStarted"))?;
        if let Some(mut sink) = stdin {
            std::thread::spawn(move || {
                while let Ok(Some(data)) = stdin_rx.recv() {
                    if sink.write_all(&data).is_err() {
                        break;
                    }
                }
            });
        }
        relay(console, id, stdout, stderr, cfg.tty, &exit_rx)
            .map_err(super::Failure::setup("relay the exec'd process's output"))
    }
}

/// Sends a session's output until its process exited and the output is drained.
fn relay(
    console: &File,
    id: u32,
    stdout: File,
    stderr: Option<File>,
    tty: bool,
    exit: &mpsc::Receiver<i32>,
) -> io::Result<i32> {
    let mut streams: Vec<(File, Kind, bool)> = vec![(stdout, Kind::ExecStdout, true)];
    if let Some(e) = stderr {
        streams.push((e, Kind::ExecStderr, true));
    }
    for (f, _, _) in &streams {
        sys::set_nonblocking(f.as_raw_fd())?;
    }
    let mut buf = vec![0u8; 32 * 1024];
    let mut status = None;
    let mut deadline = None;
    loop {
        if status.is_none() {
            if let Ok(s) = exit.try_recv() {
                status = Some(s);
                deadline = Some(Instant::now() + DRAIN_LIMIT);
            }
        }
        let mut fds: Vec<libc::pollfd> = streams
            .iter()
            .filter(|s| s.2)
            .map(|s| libc::pollfd {
                fd: s.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if fds.is_empty() {
            if let Some(s) = status {
                return Ok(s);
            }
            // Output closed early (the process closed its stdio): wait for the exit.
            return exit
                .recv()
                .map_err(|_| io::Error::other("the exit status of the process was lost"));
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            break;
        }
        // Until the exit is known, wake up now and then to look for it; after it, pipes
        // hold everything and a pty gets a short grace period.
        let timeout = match status {
            None => 50,
            Some(_) if tty => 100,
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
        if n == 0 && status.is_some() {
            break;
        }
        let mut polled = fds.iter();
        for (file, kind, open) in streams.iter_mut().filter(|s| s.2) {
            let Some(p) = polled.next() else { break };
            if p.revents == 0 {
                continue;
            }
            loop {
                match file.read(&mut buf) {
                    Ok(0) => {
                        *open = false;
                        break;
                    }
                    Ok(n) => send(console, *kind, &protocol::session_payload(id, &buf[..n]))?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        *open = false;
                        break;
                    }
                }
            }
        }
    }
    Ok(status.unwrap_or(128 + libc::SIGKILL))
}
