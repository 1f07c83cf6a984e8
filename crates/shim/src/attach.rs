//! An instance's attach socket (`attach.sock` in its instance directory): whoever holds
//! the instance's stdio (the monitor, or the shim it becomes) serves it, so that any
//! front end can attach to a running instance's output and input.
//!
//! The protocol, one connection per attached client:
//! - the client first sends one byte of [`WANT_STDIN`], [`WANT_STDOUT`], [`WANT_STDERR`]
//!   and [`STDIN_ONCE`] flags;
//! - it then receives the instance's output from that moment on: raw for a terminal, else
//!   in Docker's multiplexed framing (an 8-byte header: the stream, 1 stdout or 2 stderr,
//!   three zero bytes, the length as a big-endian u32; then the data);
//! - with [`WANT_STDIN`], what it sends goes to the instance's stdin (if it has one open);
//!   with [`STDIN_ONCE`] too, its end of input closes the instance's stdin;
//! - with [`RESIZE`] instead, what it sends is terminal sizes, 4 bytes each (rows then
//!   columns, big-endian u16), applied to the instance's terminal (if it has one, as
//!   Docker's resize is a no-op without); the server hangs up once the client ended its
//!   input, so a client that reads to its end knows every size was applied;
//! - the server closes every connection once the instance's output is drained after its
//!   exit.
//!
//! Nothing a client does can stop the instance or block its holder: every socket
//! operation is non-blocking, a client is dropped when its unsent output passes
//! [`MAX_PENDING`], and at most [`MAX_CLIENTS`] are served at once.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::logs::Stream;

/// The socket's name in the instance directory.
pub const SOCKET: &str = "attach.sock";
/// Flag: the client sends input for the instance's stdin.
pub const WANT_STDIN: u8 = 1;
/// Flag: the client wants standard output.
pub const WANT_STDOUT: u8 = 2;
/// Flag: the client wants standard error.
pub const WANT_STDERR: u8 = 4;
/// Flag: the end of the client's input closes the instance's stdin (Docker's `StdinOnce`).
pub const STDIN_ONCE: u8 = 8;
/// Flag: the client sends terminal sizes, not input (see the module's documentation).
pub const RESIZE: u8 = 16;
/// Output held for one slow client before it is dropped.
pub const MAX_PENDING: usize = 1 << 20;
/// Clients served at once; more are refused (closed on accept).
pub const MAX_CLIENTS: usize = 64;
/// Input held for the instance's stdin before clients stop being read.
const MAX_INPUT: usize = 64 * 1024;

/// The frame header of `len` bytes of `stream` in Docker's multiplexed stream.
pub fn frame_header(stream: Stream, len: usize) -> [u8; 8] {
    let kind = match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    };
    let n = (len as u32).to_be_bytes();
    [kind, 0, 0, 0, n[0], n[1], n[2], n[3]]
}

struct Client {
    fd: OwnedFd,
    /// The flags byte, once received.
    mode: Option<u8>,
    /// Output not yet sent.
    out: Vec<u8>,
    /// The client ended its input.
    read_done: bool,
    /// A [`RESIZE`] client's incomplete size record.
    size: Vec<u8>,
}

/// Where input goes: the write end of the instance's stdin pipe, or its terminal.
#[derive(Clone, Copy, Debug)]
pub struct StdinTarget {
    /// The descriptor (owned by the hub's owner).
    pub fd: RawFd,
    /// A terminal master: its end of input is a ^D, not a close.
    pub pty: bool,
}

/// What the owner must do after [`Hub::handle`].
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Close the instance's stdin pipe (a [`STDIN_ONCE`] client ended its input); the hub
    /// has forgotten the target.
    CloseStdin,
}

/// The attach socket's listener and its clients.
pub struct Hub {
    listener: Option<OwnedFd>,
    clients: Vec<Client>,
    tty: bool,
    /// The instance's terminal (its master), which [`RESIZE`] clients size.
    terminal: Option<RawFd>,
    stdin: Option<StdinTarget>,
    input: Vec<u8>,
    close_after_input: bool,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl Hub {
    /// Binds `attach.sock` in `dir` (mode 0600 from the start: only root attaches),
    /// replacing a stale one, for an instance with a terminal if `tty`.
    pub fn bind(dir: &Path, tty: bool) -> std::io::Result<Hub> {
        use std::os::unix::ffi::OsStrExt;
        // Through a descriptor of the directory: its path may not fit in a sockaddr_un.
        let dir_c = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: open(2) of a NUL-terminated path; the result is checked.
        let dfd = unsafe {
            libc::open(
                dir_c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if dfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just opened and own.
        let dfd = unsafe { OwnedFd::from_raw_fd(dfd) };
        let path = format!("/proc/self/fd/{}/{SOCKET}", dfd.as_raw_fd());
        let _ = std::fs::remove_file(&path);
        // SAFETY: socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just created and own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_un is plain data; all zeros is valid.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_bytes();
        if bytes.len() >= addr.sun_path.len() {
            return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: fchmod, bind and listen on our own socket with a valid address; the
        // socket's mode is what bind gives its file, so it is never more open than 0600.
        unsafe {
            if libc::fchmod(fd.as_raw_fd(), 0o600) < 0
                || libc::bind(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_un).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                ) < 0
                || libc::listen(fd.as_raw_fd(), 64) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Hub::from_fds(Some(fd), Vec::new(), tty))
    }

    /// A hub over an already listening socket and already connected clients (handed
    /// over by the monitor to the shim, or by a front end that attached before start).
    pub fn from_fds(listener: Option<OwnedFd>, clients: Vec<OwnedFd>, tty: bool) -> Hub {
        Hub::from_parts(
            listener,
            clients.into_iter().map(|c| (c, None)).collect(),
            tty,
        )
    }

    /// [`Hub::from_fds`] with each client's flags, if they were read already (see
    /// [`Hub::raw_fds`]).
    pub fn from_parts(
        listener: Option<OwnedFd>,
        clients: Vec<(OwnedFd, Option<u8>)>,
        tty: bool,
    ) -> Hub {
        let mut hub = Hub {
            listener,
            clients: Vec::new(),
            tty,
            terminal: None,
            stdin: None,
            input: Vec::new(),
            close_after_input: false,
        };
        for (fd, mode) in clients {
            hub.clients.push(Client {
                fd,
                mode,
                out: Vec::new(),
                read_done: false,
                size: Vec::new(),
            });
        }
        // Their flags are usually there already: read them before any output.
        for i in 0..hub.clients.len() {
            if hub.clients[i].mode.is_none() {
                hub.read_client(i);
            }
        }
        hub
    }

    /// Takes on clients connected elsewhere (before the socket was bound).
    pub fn adopt(&mut self, clients: Vec<OwnedFd>) {
        let other = Hub::from_fds(None, clients, self.tty);
        self.clients.extend(other.clients);
    }

    /// Sets where client input goes (`None`: the instance takes none).
    pub fn set_stdin(&mut self, target: Option<StdinTarget>) {
        self.stdin = target;
        if target.is_none() {
            self.input.clear();
        }
    }

    /// Sets the instance's terminal (a pty master the owner keeps open), which
    /// [`RESIZE`] clients size; `None` for an instance without one.
    pub fn set_terminal(&mut self, master: Option<RawFd>) {
        self.terminal = master;
    }

    /// The listener and the clients' descriptors with their flags if read, for handing
    /// over across an exec (the caller clears their close-on-exec flag). Pending output
    /// is lost; call this before any output was sent.
    pub fn raw_fds(&self) -> (Option<RawFd>, Vec<(RawFd, Option<u8>)>) {
        (
            self.listener.as_ref().map(|l| l.as_raw_fd()),
            self.clients
                .iter()
                .map(|c| (c.fd.as_raw_fd(), c.mode))
                .collect(),
        )
    }

    /// A client as `--attach-client` takes it: `FD` or `FD:FLAGS`.
    pub fn client_arg(fd: RawFd, mode: Option<u8>) -> String {
        match mode {
            Some(m) => format!("{fd}:{m}"),
            None => fd.to_string(),
        }
    }

    /// Parses [`Hub::client_arg`].
    pub fn parse_client_arg(s: &str) -> Option<(RawFd, Option<u8>)> {
        match s.split_once(':') {
            Some((fd, m)) => Some((fd.parse().ok()?, Some(m.parse().ok()?))),
            None => Some((s.parse().ok()?, None)),
        }
    }

    /// The descriptors to poll, to be passed back to [`Hub::handle`] with their revents.
    pub fn pollfds(&self) -> Vec<libc::pollfd> {
        let mut v = Vec::new();
        if let Some(l) = &self.listener {
            v.push(libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let room = self.input.len() < MAX_INPUT;
        for c in &self.clients {
            let mut events = 0;
            let sizes = c.mode.is_some_and(|m| m & RESIZE != 0);
            if !c.read_done && (c.mode.is_none() || room || sizes) {
                events |= libc::POLLIN;
            }
            if !c.out.is_empty() {
                events |= libc::POLLOUT;
            }
            v.push(libc::pollfd {
                fd: c.fd.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        if let Some(t) = self.stdin.filter(|_| !self.input.is_empty()) {
            v.push(libc::pollfd {
                fd: t.fd,
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        v
    }

    /// Acts on the readiness of the descriptors of [`Hub::pollfds`] (same order): accepts,
    /// reads flags and input, sends pending output, writes input to the instance.
    pub fn handle(&mut self, polled: &[libc::pollfd]) -> Action {
        let mut k = 0;
        let mut accept = false;
        if self.listener.is_some() {
            accept = polled.get(k).is_some_and(|p| p.revents != 0);
            k += 1;
        }
        let n = self.clients.len();
        let mut drop_client = vec![false; n];
        for (i, gone) in drop_client.iter_mut().enumerate() {
            let Some(p) = polled.get(k + i) else { break };
            if p.revents & libc::POLLIN != 0 {
                self.read_client(i);
            }
            if p.revents & libc::POLLOUT != 0 {
                self.flush_client(i);
            }
            // Hung up and nothing more to read: gone.
            *gone = p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
                && (self.clients[i].read_done || p.revents & libc::POLLIN == 0);
        }
        k += n;
        let stdin_ready = polled
            .get(k)
            .is_some_and(|p| p.revents != 0 && self.stdin.is_some() && !self.input.is_empty());
        let mut i = 0;
        self.clients.retain(|_| {
            i += 1;
            !drop_client[i - 1]
        });
        if stdin_ready {
            self.write_input();
        }
        if accept {
            self.accept();
        }
        if self.close_after_input && self.input.is_empty() {
            self.close_after_input = false;
            if let Some(t) = self.stdin.take() {
                if t.pty {
                    // SAFETY: writing ^D to the terminal master the owner keeps open.
                    unsafe { libc::write(t.fd, [4u8].as_ptr().cast(), 1) };
                } else {
                    return Action::CloseStdin;
                }
            }
        }
        Action::None
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        loop {
            // SAFETY: accept4 on our listening socket; the result is checked.
            let fd = unsafe {
                libc::accept4(
                    l.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            };
            if fd < 0 {
                return;
            }
            // SAFETY: a descriptor accept4 just gave us.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            if self.clients.len() >= MAX_CLIENTS {
                continue; // dropped: closed
            }
            self.clients.push(Client {
                fd,
                mode: None,
                out: Vec::new(),
                read_done: false,
                size: Vec::new(),
            });
        }
    }

    /// Reads what client `i` sent: its flags byte first, then input. On an error the
    /// client is hung up on (and dropped when the poll reports the hang-up).
    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        let c = &mut self.clients[i];
        let room = MAX_INPUT.saturating_sub(self.input.len()).max(1);
        let want = if c.mode.is_none() {
            1
        } else {
            room.min(buf.len())
        };
        // SAFETY: recv into a local buffer of at least `want` bytes.
        let n = unsafe {
            libc::recv(
                c.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                want,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = errno();
            if e != libc::EAGAIN && e != libc::EINTR {
                c.read_done = true;
                c.out.clear();
                let _ = shutdown(&c.fd);
            }
            return;
        }
        let n = n as usize;
        if n == 0 {
            c.read_done = true;
            if c.mode.is_some_and(|m| m & RESIZE != 0) {
                // Every size sent was applied: say so by hanging up.
                let _ = shutdown(&c.fd);
                return;
            }
            if c.mode
                .is_some_and(|m| m & (WANT_STDIN | STDIN_ONCE) == WANT_STDIN | STDIN_ONCE)
                && self.stdin.is_some()
            {
                self.close_after_input = true;
            }
            if c.mode.is_none() {
                let _ = shutdown(&c.fd);
            }
            return;
        }
        match c.mode {
            None => {
                c.mode = Some(buf[0]);
            }
            Some(m) if m & RESIZE != 0 => {
                c.size.extend_from_slice(&buf[..n]);
                let whole = c.size.len() / 4 * 4;
                for r in c.size[..whole].chunks_exact(4) {
                    let rows = u16::from_be_bytes([r[0], r[1]]);
                    let cols = u16::from_be_bytes([r[2], r[3]]);
                    if let Some(t) = self.terminal {
                        set_size(t, rows, cols);
                    }
                }
                c.size.drain(..whole);
            }
            Some(m) if m & WANT_STDIN != 0 && self.stdin.is_some() => {
                self.input.extend_from_slice(&buf[..n]);
            }
            Some(_) => {} // input nobody takes
        }
    }

    fn flush_client(&mut self, i: usize) {
        let c = &mut self.clients[i];
        while !c.out.is_empty() {
            // SAFETY: send from a buffer of the given length, without blocking or SIGPIPE.
            let n = unsafe {
                libc::send(
                    c.fd.as_raw_fd(),
                    c.out.as_ptr().cast(),
                    c.out.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                if e != libc::EAGAIN {
                    c.out.clear();
                    c.read_done = true;
                    let _ = shutdown(&c.fd);
                }
                return;
            }
            c.out.drain(..n as usize);
        }
    }

    fn write_input(&mut self) {
        let Some(t) = self.stdin else { return };
        // At most what a writable pipe or terminal surely takes without blocking.
        let chunk = if t.pty { 256 } else { 4096 };
        let n = self.input.len().min(chunk);
        // SAFETY: write from our buffer to the target the owner keeps open.
        let w = unsafe { libc::write(t.fd, self.input.as_ptr().cast(), n) };
        if w < 0 {
            if errno() != libc::EAGAIN && errno() != libc::EINTR {
                // The instance closed its stdin: input goes nowhere from now on.
                self.input.clear();
                self.stdin = None;
            }
            return;
        }
        self.input.drain(..w as usize);
    }

    /// Queues `data` of `stream` for every client that wants it, and sends what it can
    /// at once. A client whose backlog passes [`MAX_PENDING`] is dropped.
    pub fn send(&mut self, stream: Stream, data: &[u8]) {
        if self.clients.is_empty() || data.is_empty() {
            return;
        }
        let flag = match stream {
            Stream::Stdout => WANT_STDOUT,
            Stream::Stderr => WANT_STDERR,
        };
        let header = frame_header(stream, data.len());
        let tty = self.tty;
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.mode.is_none_or(|m| m & flag == 0) {
                continue;
            }
            if c.out.len() + data.len() + 8 > MAX_PENDING {
                drop_slow(c);
                continue;
            }
            if !tty {
                c.out.extend_from_slice(&header);
            }
            c.out.extend_from_slice(data);
            self.flush_client(i);
        }
        self.clients
            .retain(|c| !(c.read_done && c.mode == Some(0xff)));
    }

    /// Sends what is still pending, for at most `limit`, then closes every client: the
    /// instance's output has ended.
    pub fn finish(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let busy: Vec<usize> = (0..self.clients.len())
                .filter(|&i| !self.clients[i].out.is_empty())
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if busy.is_empty() || left.is_zero() {
                break;
            }
            let mut p: Vec<libc::pollfd> = busy
                .iter()
                .map(|&i| libc::pollfd {
                    fd: self.clients[i].fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                })
                .collect();
            // SAFETY: poll over a vector of pollfds of the given length.
            unsafe {
                libc::poll(
                    p.as_mut_ptr(),
                    p.len() as libc::nfds_t,
                    left.as_millis() as i32,
                )
            };
            for (k, &i) in busy.iter().enumerate() {
                if p[k].revents & libc::POLLOUT != 0 {
                    self.flush_client(i);
                } else if p[k].revents != 0 {
                    self.clients[i].out.clear();
                }
            }
        }
        self.clients.clear();
        self.listener = None;
    }
}

/// Drops a client that fell too far behind: its output is discarded and it is hung up on.
fn drop_slow(c: &mut Client) {
    c.out.clear();
    c.read_done = true;
    c.mode = Some(0xff);
    let _ = shutdown(&c.fd);
}

/// Sets a terminal's size (its foreground process group gets SIGWINCH); sizes of 0
/// are not sizes and are ignored.
fn set_size(master: RawFd, rows: u16, cols: u16) {
    if rows == 0 || cols == 0 {
        return;
    }
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize on the terminal the owner keeps open.
    unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
}

fn shutdown(fd: &OwnedFd) -> i32 {
    // SAFETY: shutdown(2) on our own socket.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn poll_once(hub: &mut Hub) -> Action {
        let mut p = hub.pollfds();
        // SAFETY: poll over a vector of pollfds.
        unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, 1000) };
        hub.handle(&p)
    }

    #[test]
    fn output_is_framed_per_stream_for_the_streams_asked() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[WANT_STDOUT]).unwrap();
        let mut hub = Hub::from_fds(None, vec![OwnedFd::from(b)], false);
        hub.send(Stream::Stdout, b"hi\n");
        hub.send(Stream::Stderr, b"not wanted");
        hub.finish(Duration::from_secs(1));
        let mut got = Vec::new();
        a.read_to_end(&mut got).unwrap();
        assert_eq!(got, [&[1, 0, 0, 0, 0, 0, 0, 3][..], b"hi\n"].concat());
    }

    #[test]
    fn a_client_that_reads_nothing_is_dropped_not_waited_for() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[WANT_STDOUT]).unwrap();
        let mut hub = Hub::from_fds(None, vec![OwnedFd::from(b)], true);
        let chunk = vec![b'x'; 64 * 1024];
        let t = Instant::now();
        for _ in 0..64 {
            hub.send(Stream::Stdout, &chunk);
        }
        assert!(t.elapsed() < Duration::from_secs(2), "send blocked");
        assert!(hub.clients.is_empty(), "the stalled client is still held");
    }

    #[test]
    fn stdin_once_input_reaches_the_target_and_its_end_closes_it() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[WANT_STDIN | STDIN_ONCE, b'h', b'i']).unwrap();
        a.shutdown(std::net::Shutdown::Write).unwrap();
        let (r, w) = std::io::pipe().unwrap();
        let mut hub = Hub::from_fds(None, vec![OwnedFd::from(b)], false);
        hub.set_stdin(Some(StdinTarget {
            fd: w.as_raw_fd(),
            pty: false,
        }));
        let mut closed = false;
        for _ in 0..10 {
            if poll_once(&mut hub) == Action::CloseStdin {
                closed = true;
                break;
            }
        }
        assert!(closed);
        drop(w);
        let mut got = String::new();
        let mut r = r;
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi");
    }

    #[test]
    fn resize_clients_size_the_terminal_and_hang_up_when_done() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        // Two sizes, the second split across writes, then the end of input.
        a.write_all(&[RESIZE, 0, 24, 0, 80, 0, 50]).unwrap();
        let mut hub = Hub::from_fds(None, vec![OwnedFd::from(b)], true);
        hub.set_terminal(Some(pty.master.as_raw_fd()));
        poll_once(&mut hub);
        a.write_all(&[0, 132]).unwrap();
        a.shutdown(std::net::Shutdown::Write).unwrap();
        for _ in 0..4 {
            poll_once(&mut hub);
        }
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "a resize client gets no output: {rest:?}");
        // SAFETY: winsize is plain integers.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ into a winsize we own.
        let got = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(got, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (50, 132));
    }
}
