//! `vessel exec` into a microVM: the `vessel` process connects to the VM's monitor over
//! a Unix socket in the instance directory (`exec.sock`); the monitor gives each
//! connection a session id and relays its frames to the guest agent over the one
//! virtio-console channel, as the `Exec*` frames of `vessel_agent::protocol`.
//!
//! On the socket the frames carry no id (one session per connection): the client sends
//! `Config` (a `GuestConfig`), then `Stdin`/`StdinEof`/`Resize`; the monitor answers
//! `Started` or `Error`, then `Stdout`/`Stderr` and finally `Exit`. A connection whose
//! first frame is `Hosts` instead is no session: the frame goes to the guest, and that
//! is all.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use vessel_agent::protocol::{self, ErrorReport, GuestConfig, Kind};

use super::{EngineError, Result};

/// The socket's name in the instance directory.
const SOCKET: &str = "exec.sock";

/// The monitor's open exec sessions: where each one's output goes.
#[derive(Clone, Default)]
pub(super) struct Sessions(Arc<Mutex<HashMap<u32, UnixStream>>>);

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u32, UnixStream>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session frame from the guest: passed to its client without the id. The client
    /// connection closes after the session's last frame.
    pub(super) fn deliver(&self, kind: Kind, payload: &[u8]) {
        let (Some(plain), Ok((id, data))) = (kind.from_session(), protocol::split_session(payload))
        else {
            return;
        };
        let last = matches!(plain, Kind::Exit | Kind::Error);
        let mut map = self.map();
        let Some(conn) = map.get_mut(&id) else { return };
        let failed = protocol::write_frame(conn, plain, data).is_err();
        if last || failed {
            if let Some(c) = map.remove(&id) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// The VM is gone: every client sees its connection close.
    pub(super) fn close_all(&self) {
        for (_, c) in self.map().drain() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A path to `name` in `dir` that fits in a `sockaddr_un` however long `dir` is: through
/// an `O_PATH` descriptor of the directory (kept open by the returned `File`).
fn socket_path(dir: &Path) -> Result<(File, PathBuf)> {
    let d = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| EngineError::io("open", dir, e))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", d.as_raw_fd()));
    Ok((d, path))
}

use std::os::unix::fs::OpenOptionsExt;

/// A listening Unix socket at `path` whose file is created with mode 0600.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    listen(&fd, Backlog::new(128)?)?;
    Ok(UnixListener::from(fd))
}

/// In the monitor: serves `exec.sock` in `dir` for as long as the process lives, relaying
/// sessions to the guest through `guest` (the console's write side).
pub(super) fn serve(dir: &Path, guest: Arc<Mutex<UnixStream>>, sessions: Sessions) -> Result<()> {
    let (dir_fd, path) = socket_path(dir)?;
    let _ = std::fs::remove_file(&path);
    // Only root may start processes in the VM: the socket is 0600 from the moment it
    // exists (the mode of a socket's fd is what bind gives its file, less the umask), not
    // chmod'ed after bind.
    let listener = bind_private(&path).map_err(|e| EngineError::io("bind", dir.join(SOCKET), e))?;
    drop(dir_fd);
    let next = AtomicU32::new(1);
    std::thread::Builder::new()
        .name("exec-listener".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let id = next.fetch_add(1, Ordering::Relaxed);
                let guest = guest.clone();
                let sessions = sessions.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("exec-{id}"))
                    .spawn(move || client_session(conn, id, &guest, &sessions));
            }
        })
        .map_err(|e| EngineError::Backend(format!("start the exec listener: {e}")))?;
    Ok(())
}

/// One client connection: its `Config` starts session `id` in the guest, then its input
/// goes to the guest until it hangs up.
fn client_session(mut conn: UnixStream, id: u32, guest: &Mutex<UnixStream>, sessions: &Sessions) {
    let to_guest = |kind: Kind, data: &[u8]| {
        let Some(k) = kind.to_session() else {
            return Ok(());
        };
        let mut g = guest.lock().unwrap_or_else(|p| p.into_inner());
        protocol::write_frame(&mut *g, k, &protocol::session_payload(id, data))
    };
    let config = match protocol::read_frame(&mut conn) {
        Ok(Some((Kind::Config, config))) => config,
        // Not a session: a new /etc/hosts for the guest, passed on as it is.
        Ok(Some((Kind::Hosts, hosts))) => {
            let mut g = guest.lock().unwrap_or_else(|p| p.into_inner());
            let _ = protocol::write_frame(&mut *g, Kind::Hosts, &hosts);
            return;
        }
        _ => return,
    };
    let Ok(out) = conn.try_clone() else { return };
    sessions.map().insert(id, out);
    if to_guest(Kind::Config, &config).is_err() {
        sessions.close_all();
        return;
    }
    loop {
        match protocol::read_frame(&mut conn) {
            Ok(Some((
                kind @ (Kind::Stdin | Kind::StdinEof | Kind::Signal | Kind::Resize),
                data,
            ))) => {
                if to_guest(kind, &data).is_err() {
                    return;
                }
            }
            Ok(Some(_)) => {}
            // The client went away: its process keeps running, without stdin.
            Ok(None) | Err(_) => {
                let _ = to_guest(Kind::StdinEof, &[]);
                return;
            }
        }
    }
}

/// Gives the running VM whose instance directory is `dir` a new `/etc/hosts`, through its
/// monitor.
pub(super) fn update_hosts(dir: &Path, hosts: &str) -> Result<()> {
    let (dir_fd, path) = socket_path(dir)?;
    let mut conn =
        UnixStream::connect(&path).map_err(|e| EngineError::io("connect", dir.join(SOCKET), e))?;
    drop(dir_fd);
    protocol::write_frame(&mut conn, Kind::Hosts, hosts.as_bytes())
        .map_err(|e| EngineError::io("write", dir.join(SOCKET), e))
}

/// In `vessel exec`: starts `config` in the VM whose instance directory is `dir`. Returns
/// once the guest has executed it (or with its 125/126/127 error), and the connection to
/// relay the session over.
pub(super) fn start(dir: &Path, name: &str, config: &GuestConfig) -> Result<UnixStream> {
    let (dir_fd, path) = socket_path(dir)?;
    let mut conn = UnixStream::connect(&path).map_err(|e| {
        EngineError::Conflict(format!(
            "cannot reach the monitor of microVM {name} ({e}): is it running?"
        ))
    })?;
    drop(dir_fd);
    let json = serde_json::to_vec(config)
        .map_err(|e| EngineError::Internal(format!("encode the exec request: {e}")))?;
    protocol::write_frame(&mut conn, Kind::Config, &json)
        .map_err(|e| EngineError::Backend(format!("send the exec request to {name}: {e}")))?;
    match protocol::read_frame(&mut conn) {
        Ok(Some((Kind::Started, _))) => Ok(conn),
        Ok(Some((Kind::Error, data))) => {
            let (code, message) = serde_json::from_slice::<ErrorReport>(&data)
                .map(|e| (e.code, e.message))
                .unwrap_or_else(|_| (125, String::from_utf8_lossy(&data).into_owned()));
            Err(match code {
                127 => EngineError::CommandNotFound(message),
                126 => EngineError::NotExecutable(message),
                _ => EngineError::Backend(message),
            })
        }
        Ok(None) => Err(EngineError::Backend(format!(
            "the monitor of microVM {name} closed the exec session before it started"
        ))),
        Ok(Some((kind, _))) => Err(EngineError::Backend(format!(
            "the monitor of microVM {name} sent {kind:?} before the exec session started"
        ))),
        Err(e) => Err(EngineError::Backend(format!(
            "the exec session with microVM {name} broke before it started: {e}"
        ))),
    }
}

/// Passes the size changes of a host terminal on to the guest, as `kind` frames
/// (`Resize`, or a session's) on `writer`, from a thread of its own that ends once
/// `stop` is set or the guest's channel is gone. `terminal` is a descriptor of it (the
/// master, so as not to hold the slave open, or the slave). Whoever holds the master
/// sets the size (an attached caller, or a resize through the attach socket); its
/// SIGWINCH goes to the slave's session, which this process is not in, so the size is
/// polled.
pub(super) fn follow_size(
    terminal: OwnedFd,
    writer: Arc<Mutex<UnixStream>>,
    kind: Kind,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    std::thread::spawn(move || {
        let mut last = (0u16, 0u16);
        while !stop.load(Ordering::SeqCst) {
            // SAFETY: winsize is plain integers; all zeros is a valid value.
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ fills a winsize we own, on a descriptor we hold.
            let got = unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
            if got == 0 {
                let now = (ws.ws_row, ws.ws_col);
                if now != last && now != (0, 0) {
                    last = now;
                    let frame = protocol::encode_resize(now.0, now.1);
                    let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                    if protocol::write_frame(&mut *w, kind, &frame).is_err() {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// The relay process of a session: copies `stdin` to the guest and the guest's output to
/// `stdout`/`stderr` (with a terminal, `stdin` and `stdout` are the pty's slave and its
/// size changes are passed on) until the exit status arrives, which it returns. The
/// signals the caller had blocked when it forked the relay are sent to it to be passed
/// on: each goes to the guest process.
pub(super) fn relay(
    conn: UnixStream,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: Option<OwnedFd>,
    tty: bool,
) -> i32 {
    let Ok(writer) = conn.try_clone() else {
        return 125;
    };
    let writer = Arc::new(Mutex::new(writer));
    let send = |w: &Mutex<UnixStream>, kind: Kind, data: &[u8]| {
        protocol::write_frame(
            &mut *w.lock().unwrap_or_else(|p| p.into_inner()),
            kind,
            data,
        )
    };
    let forwarded = forwarded_signals();
    if forwarded != SigSet::empty() {
        let w = writer.clone();
        std::thread::spawn(move || loop {
            if let Ok(sig) = forwarded.wait() {
                if send(&w, Kind::Signal, &protocol::encode_i32(sig as i32)).is_err() {
                    return;
                }
            }
        });
    }
    if tty {
        // This relay process ends with the session: its own descriptor is enough.
        if let Ok(slave) = stdout.as_fd().try_clone_to_owned() {
            follow_size(slave, writer.clone(), Kind::Resize, Arc::default());
        }
    }
    {
        let w = writer.clone();
        std::thread::spawn(move || {
            let mut f = File::from(stdin);
            let mut buf = [0u8; 16 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = send(&w, Kind::StdinEof, &[]);
                        return;
                    }
                    Ok(n) => {
                        if send(&w, Kind::Stdin, &buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut out = File::from(stdout);
    let mut err = stderr.map(File::from);
    let mut conn = conn;
    loop {
        match protocol::read_frame(&mut conn) {
            Ok(Some((Kind::Stdout, data))) => {
                let _ = out.write_all(&data);
            }
            Ok(Some((Kind::Stderr, data))) => {
                let _ = match &mut err {
                    Some(e) => e.write_all(&data),
                    None => out.write_all(&data),
                };
            }
            Ok(Some((Kind::Exit, data))) => return protocol::decode_i32(&data).unwrap_or(125),
            Ok(Some((Kind::Error, data))) => {
                let e = serde_json::from_slice::<ErrorReport>(&data).ok();
                eprintln!(
                    "vessel: {}",
                    e.as_ref()
                        .map(|e| e.message.clone())
                        .unwrap_or_else(|| String::from_utf8_lossy(&data).into_owned())
                );
                return e.map(|e| i32::from(e.code)).unwrap_or(125);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                eprintln!("vessel: the microVM stopped before the exec'd process exited");
                return 125;
            }
        }
    }
}

/// The signals blocked in this thread that a process may be sent and handle: those the
/// relay passes on.
fn forwarded_signals() -> SigSet {
    let Ok(mask) = SigSet::thread_get_mask() else {
        return SigSet::empty();
    };
    let mut set = SigSet::empty();
    for s in Signal::iterator() {
        let never = matches!(
            s,
            Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD | Signal::SIGPIPE
        );
        if !never && mask.contains(s) {
            set.add(s);
        }
    }
    set
}
