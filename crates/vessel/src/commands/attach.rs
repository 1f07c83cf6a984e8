//! `vessel attach`: this terminal (or these pipes) joined to a running instance's
//! standard streams through its attach socket, as `docker attach` does.
//!
//! Output comes from the moment of attaching (raw from a terminal, else in Docker's
//! multiplexed frames, split here onto stdout and stderr). Input goes to the instance's
//! stdin when it has one open (`-i`) and `--no-stdin` is not given; the end of this input
//! does not close the instance's. The detach keys (ctrl-p ctrl-q unless `--detach-keys`)
//! leave the instance running; when the instance ends, attach exits with its status.
//! Without a terminal, the signals attach gets go to the instance (`--sig-proxy`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, Signal};
use vessel_engine::catalogue::Status;
use vessel_engine::Engine;
use vessel_shim::attach::{WANT_STDERR, WANT_STDIN, WANT_STDOUT};

use crate::cli::AttachArgs;
use crate::{CmdResult, Failure};

/// Parses Docker's `--detach-keys`: comma-separated keys, each a single character or
/// `ctrl-X` (X a letter, `@`, `[`, `\`, `]`, `^` or `_`).
fn detach_keys(spec: &str) -> Result<Vec<u8>, Failure> {
    let bad = |k: &str| {
        Failure::new(
            125,
            format!("invalid detach keys {spec:?}: {k:?} is neither one character nor ctrl-<key>"),
        )
    };
    spec.split(',')
        .map(|k| match k.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => {
                let c = c.as_bytes()[0].to_ascii_uppercase();
                match c {
                    b'@'..=b'_' => Ok(c - b'@'),
                    _ => Err(bad(k)),
                }
            }
            None if k.len() == 1 => Ok(k.as_bytes()[0]),
            _ => Err(bad(k)),
        })
        .collect()
}

/// Sends our terminal's size to the instance's terminal.
fn resize(engine: &Engine, id: &str) {
    // SAFETY: TIOCGWINSZ with a winsize we own on fd 1.
    let ws = unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0).then_some(ws)
    };
    if let Some(ws) = ws {
        let _ = engine.resize(id, ws.ws_row, ws.ws_col);
    }
}

/// Copies the attach socket's output to ours until the instance's output ends.
fn relay_output(mut sock: UnixStream, tty: bool) {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    if tty {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = sock.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                return;
            }
        }
        return;
    }
    let mut header = [0u8; 8];
    let mut data = Vec::new();
    while sock.read_exact(&mut header).is_ok() {
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        data.resize(len, 0);
        if sock.read_exact(&mut data).is_err() {
            return;
        }
        let w: &mut dyn Write = if header[0] == 2 { &mut err } else { &mut out };
        if w.write_all(&data).and_then(|()| w.flush()).is_err() {
            return;
        }
    }
}

/// `vessel attach`.
pub fn attach(engine: &Engine, a: &AttachArgs) -> CmdResult {
    let fail = |e: vessel_engine::EngineError| Failure::new(e.exit_code(), e);
    let keys = detach_keys(a.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q"))?;
    let inst = engine.get(&a.instance).map_err(fail)?;
    if inst.status != Status::Running {
        return Err(Failure::new(
            1,
            "You cannot attach to a stopped container, start it first",
        ));
    }
    if engine.paused(&inst) {
        return Err(Failure::new(
            1,
            "You cannot attach to a paused container, unpause it first",
        ));
    }
    let tty = inst.request.tty;
    let stdin = inst.request.interactive && !a.no_stdin;
    let mut sock = engine.attach_socket(&inst.id).map_err(fail)?;
    let mut flags = WANT_STDOUT | WANT_STDERR;
    if stdin {
        flags |= WANT_STDIN;
    }
    sock.write_all(&[flags])
        .map_err(|e| Failure::new(1, format!("attach to {}: {e}", inst.name)))?;
    // Signals are taken by one thread: blocked here, before any other thread exists.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGWINCH);
    if a.sig_proxy && !tty {
        for s in super::containers::PROXIED {
            signals.add(*s);
        }
    }
    let _ = signals.thread_block();
    let raw = super::containers::RawMode::enable(tty && stdin);
    if tty {
        resize(engine, &inst.id);
    }
    let output = sock
        .try_clone()
        .map_err(|e| Failure::new(1, format!("attach: {e}")))?;
    enum Event {
        Signal(Signal),
        Detached,
        OutputEnded,
    }
    let (events, rx) = std::sync::mpsc::channel::<Event>();
    {
        let events = events.clone();
        std::thread::spawn(move || {
            while let Ok(sig) = signals.wait() {
                if events.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        });
    }
    if stdin {
        let done = events.clone();
        let mut input = sock;
        // A read of our stdin may block past the instance's end: never joined.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut matched = 0;
            let mut stdin = std::io::stdin().lock();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = input.shutdown(std::net::Shutdown::Write);
                        return;
                    }
                    Ok(n) => n,
                };
                let mut out = Vec::with_capacity(n);
                for &b in &buf[..n] {
                    if b == keys[matched] {
                        matched += 1;
                        if matched == keys.len() {
                            let _ = input.write_all(&out);
                            let _ = done.send(Event::Detached);
                            return;
                        }
                        continue;
                    }
                    // Not the sequence after all: what was held back goes on.
                    out.extend_from_slice(&keys[..matched]);
                    matched = usize::from(b == keys[0]);
                    if matched == 0 {
                        out.push(b);
                    }
                }
                if input.write_all(&out).is_err() {
                    return;
                }
            }
        });
    } else {
        drop(sock);
    }
    std::thread::spawn(move || {
        relay_output(output, tty);
        let _ = events.send(Event::OutputEnded);
    });
    let detached = loop {
        match rx.recv() {
            Ok(Event::Signal(Signal::SIGWINCH)) => resize(engine, &inst.id),
            Ok(Event::Signal(sig)) => {
                let _ = engine.kill(&inst, sig as i32);
            }
            Ok(Event::Detached) => break true,
            Ok(Event::OutputEnded) | Err(_) => break false,
        }
    };
    drop(raw);
    if detached {
        eprintln!("read escape sequence");
        return Ok(0);
    }
    // The output ended: the instance did (or is about to), and its status is ours.
    match engine.wait(&inst.id, Some(std::time::Duration::from_secs(10))) {
        Ok(i) if i.status != Status::Running => Ok(i.exit_code.unwrap_or(0).clamp(0, 255) as u8),
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_dockers() {
        assert_eq!(detach_keys("ctrl-p,ctrl-q").unwrap(), [16, 17]);
        assert_eq!(detach_keys("a,ctrl-@,ctrl-_").unwrap(), [b'a', 0, 31]);
        assert!(detach_keys("ctrl-1").is_err());
        assert!(detach_keys("ab").is_err());
    }
}
