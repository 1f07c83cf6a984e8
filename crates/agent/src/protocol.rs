//! The host ⇄ guest agent protocol, carried over the virtio-console stream (the guest's
//! `/dev/hvc0`, the host's end of `VmConfig::virtio_console`).
//!
//! Every message is one frame: 1 byte [`Kind`], a `u32` little-endian payload length, then
//! the payload. The conversation:
//!
//! ```text
//! guest                                   host
//! Ready                     ──────▶
//!                           ◀──────       Config (JSON GuestConfig)
//! Started | Error           ──────▶
//! Stdout/Stderr …           ──────▶       ◀── Stdin … StdinEof, Signal, Resize
//! Exit                      ──────▶       (then the guest powers off)
//! ```
//!
//! While the command runs, the host may start more processes in the guest (`vessel
//! exec`): each is a session with a host-chosen `u32` id, and its frames are the `Exec*`
//! kinds, whose payload starts with the id (little-endian) followed by what the plain
//! kind carries ([`session_payload`], [`split_session`]):
//!
//! ```text
//! guest                                   host
//!                           ◀──────       ExecStart (id, JSON GuestConfig)
//! ExecStarted | ExecError   ──────▶
//! ExecStdout/ExecStderr …   ──────▶       ◀── ExecStdin … ExecStdinEof, ExecSignal, ExecResize
//! ExecExit                  ──────▶
//! ```
//!
//! With [`GuestConfig::export_changes`] (a build step), a command that exits 0 is followed
//! by its changes: `Changes` frames carrying an OCI layer tar, in order, then `Exit`.
//!
//! Between `vessel exec` and the VM's monitor the same frames flow without ids (one
//! connection per session): `Config` to start, then `Stdin`/`StdinEof`/`Signal`/`Resize`
//! one way and `Started`/`Stdout`/`Stderr`/`Exit`/`Error` the other.
//!
//! At any time after `Config` the host may send `Hosts`: the guest's whole new
//! `/etc/hosts`, when an instance joins or leaves the VM's network.
//!
//! The reader never trusts the peer: a length above [`MAX_PAYLOAD`] or an unknown kind is
//! an error, and payload memory grows only as bytes actually arrive.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Largest payload a frame may carry (1 MiB). Output is sent in much smaller chunks; the
/// bound exists so that a hostile peer cannot make the reader allocate without limit.
pub const MAX_PAYLOAD: u32 = 1 << 20;

/// Size of a frame header: kind (1) + length (4).
pub const HEADER_LEN: usize = 5;

/// What a frame carries. Values below 16 go host → guest, 16 and above guest → host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Host → guest: JSON of [`GuestConfig`], once, in answer to [`Kind::Ready`].
    Config = 1,
    /// Host → guest: bytes for the command's stdin (ignored unless `interactive`).
    Stdin = 2,
    /// Host → guest: the command's stdin is at its end (empty payload).
    StdinEof = 3,
    /// Host → guest: send this signal (`i32` LE) to the command.
    Signal = 4,
    /// Host → guest: the terminal's new size, `u16` rows then `u16` cols, LE (tty only).
    Resize = 5,
    /// Host → guest: start exec session `id` (payload: id, then JSON [`GuestConfig`]:
    /// args, env, workdir, user, tty, interactive; the rest is ignored).
    ExecStart = 6,
    /// Host → guest: stdin bytes for a session.
    ExecStdin = 7,
    /// Host → guest: a session's stdin is at its end.
    ExecStdinEof = 8,
    /// Host → guest: signal (`i32` LE after the id) for a session's process.
    ExecSignal = 9,
    /// Host → guest: a session's terminal size (as [`Kind::Resize`], after the id).
    ExecResize = 10,
    /// Host → guest: the guest's new `/etc/hosts`, whole (an instance joined or left its
    /// network). Also what `exec.sock` takes, as its first frame, to pass it on.
    Hosts = 11,
    /// Guest → host: the agent is up and waits for [`Kind::Config`] (empty payload).
    Ready = 16,
    /// Guest → host: the command was executed successfully (empty payload).
    Started = 17,
    /// Guest → host: bytes the command wrote to stdout (or to its terminal, with `tty`).
    Stdout = 18,
    /// Guest → host: bytes the command wrote to stderr.
    Stderr = 19,
    /// Guest → host: the command's exit status (`i32` LE; 128 + signal if it was killed).
    /// The last frame; the guest powers off after it.
    Exit = 20,
    /// Guest → host: JSON of [`ErrorReport`]; the command did not run (or the agent
    /// failed). The last frame; the guest powers off after it.
    Error = 21,
    /// Guest → host: a session's process was executed.
    ExecStarted = 22,
    /// Guest → host: a session's stdout (or terminal) bytes.
    ExecStdout = 23,
    /// Guest → host: a session's stderr bytes.
    ExecStderr = 24,
    /// Guest → host: a session's exit status (`i32` LE after the id); its last frame.
    ExecExit = 25,
    /// Guest → host: a session's process did not run (JSON [`ErrorReport`] after the id);
    /// its last frame.
    ExecError = 26,
    /// Guest → host: the next bytes of the command's changes, an OCI layer tar (only
    /// with [`GuestConfig::export_changes`], after a 0 exit, before `Exit`).
    Changes = 27,
}

impl Kind {
    /// The kind whose wire value is `byte`, if any.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Config,
            2 => Kind::Stdin,
            3 => Kind::StdinEof,
            4 => Kind::Signal,
            5 => Kind::Resize,
            16 => Kind::Ready,
            17 => Kind::Started,
            18 => Kind::Stdout,
            19 => Kind::Stderr,
            20 => Kind::Exit,
            21 => Kind::Error,
            6 => Kind::ExecStart,
            7 => Kind::ExecStdin,
            8 => Kind::ExecStdinEof,
            9 => Kind::ExecSignal,
            10 => Kind::ExecResize,
            11 => Kind::Hosts,
            22 => Kind::ExecStarted,
            23 => Kind::ExecStdout,
            24 => Kind::ExecStderr,
            25 => Kind::ExecExit,
            26 => Kind::ExecError,
            27 => Kind::Changes,
            _ => return None,
        })
    }

    /// The session kind that carries this plain kind for an exec session (`Stdin` →
    /// `ExecStdin`, `Config` → `ExecStart`, `Exit` → `ExecExit`, ...); `None` for kinds
    /// that have no session form (`Ready`) or already are one.
    pub fn to_session(self) -> Option<Kind> {
        Some(match self {
            Kind::Config => Kind::ExecStart,
            Kind::Stdin => Kind::ExecStdin,
            Kind::StdinEof => Kind::ExecStdinEof,
            Kind::Signal => Kind::ExecSignal,
            Kind::Resize => Kind::ExecResize,
            Kind::Started => Kind::ExecStarted,
            Kind::Stdout => Kind::ExecStdout,
            Kind::Stderr => Kind::ExecStderr,
            Kind::Exit => Kind::ExecExit,
            Kind::Error => Kind::ExecError,
            _ => return None,
        })
    }

    /// The plain kind a session kind carries (the inverse of [`Kind::to_session`]).
    pub fn from_session(self) -> Option<Kind> {
        [
            Kind::Config,
            Kind::Stdin,
            Kind::StdinEof,
            Kind::Signal,
            Kind::Resize,
            Kind::Started,
            Kind::Stdout,
            Kind::Stderr,
            Kind::Exit,
            Kind::Error,
        ]
        .into_iter()
        .find(|k| k.to_session() == Some(self))
    }
}

/// Payload of a session frame: the session id (`u32` LE), then `data`.
pub fn session_payload(id: u32, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + data.len());
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(data);
    p
}

/// Splits a session frame's payload into its id and the rest; `InvalidData` if it is
/// shorter than an id.
pub fn split_session(payload: &[u8]) -> io::Result<(u32, &[u8])> {
    match payload {
        [a, b, c, d, rest @ ..] => Ok((u32::from_le_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(bad_len("a session id", 4, payload.len())),
    }
}

/// What the guest should run, sent as the [`Kind::Config`] payload (JSON).
///
/// Missing fields take their [`Default`], so hosts and agents of neighbouring versions
/// still understand each other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestConfig {
    /// The command and its arguments; `args[0]` is looked up in the `PATH` of `env`.
    pub args: Vec<String>,
    /// The command's whole environment, `NAME=value` each.
    pub env: Vec<String>,
    /// Working directory inside the root (created if missing); empty means `/`.
    pub workdir: String,
    /// `uid[:gid]` or `name[:group]`, names resolved from the image's `/etc/passwd` and
    /// `/etc/group`; empty means root.
    pub user: String,
    /// Hostname of the guest, also written to `/etc/hostname` and `/etc/hosts`.
    pub hostname: String,
    /// Run the command on a pseudo-terminal (`/dev/pts/0`): stdout and stderr both come
    /// as [`Kind::Stdout`].
    pub tty: bool,
    /// Feed [`Kind::Stdin`] frames to the command; otherwise its stdin is `/dev/null`.
    pub interactive: bool,
    /// Mount the image disk (`/dev/vda`) read-only as the root, without the writable
    /// overlay on `/dev/vdb`.
    pub read_only: bool,
    /// Extra disks to mount (not supported by the agent yet: must be empty).
    pub volumes: Vec<GuestVolume>,
    /// How to configure `eth0` (the virtio-net interface); `None`: loopback only.
    pub network: Option<GuestNetwork>,
    /// A build step: when the command exits 0, every other process is killed and the
    /// overlay's upper directory is sent as an OCI layer ([`Kind::Changes`]) before
    /// `Exit`. Needs a writable root.
    pub export_changes: bool,
    /// `--pids-limit`: the most tasks (processes and threads) the command, the processes
    /// `exec` starts and health checks may have at once, as a pids cgroup of the guest
    /// kernel (`/sys/fs/cgroup/vessel`). `None`: no limit.
    pub pids_limit: Option<i64>,
}

/// The guest's one network interface, as the host's network lease describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// IPv4 address of `eth0`.
    pub address: std::net::Ipv4Addr,
    /// Prefix length of its subnet.
    pub prefix: u8,
    /// Default gateway (the host bridge).
    pub gateway: std::net::Ipv4Addr,
    /// Interface MTU; 0 keeps the driver's default.
    pub mtu: u32,
    /// The whole `/etc/hosts` (replaces the hostname-only one the agent writes otherwise).
    pub hosts: String,
    /// The whole `/etc/resolv.conf`.
    pub resolv_conf: String,
}

/// A disk the guest mounts into the root (reserved; the agent rejects any for now).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestVolume {
    /// Guest block device name, e.g. `vdc`.
    pub device: String,
    /// Absolute mount point inside the root.
    pub target: String,
    /// Mount it read-only.
    pub read_only: bool,
}

/// Why the command did not run: the [`Kind::Error`] payload (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// Exit code the host should report: 125 (agent or setup failure), 126 (not
    /// executable), 127 (not found).
    pub code: u8,
    /// What failed, naming the step and the offending value.
    pub message: String,
}

/// Writes one frame. The header and payload go out in one `write_all`, so frames written
/// by one writer never interleave with each other at the byte level.
///
/// Fails with `InvalidInput` if the payload exceeds [`MAX_PAYLOAD`].
pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame payload of {} bytes exceeds the {MAX_PAYLOAD}-byte limit",
                    payload.len()
                ),
            )
        })?;
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.push(kind as u8);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame. `Ok(None)` at a clean end of stream (before the first header byte).
///
/// Errors: `InvalidData` for an unknown kind or a length above [`MAX_PAYLOAD`] (checked
/// before anything is allocated); `UnexpectedEof` if the stream ends inside a frame.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(Kind, Vec<u8>)>> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended inside a frame header ({got} of {HEADER_LEN} bytes)"),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let kind = Kind::from_u8(header[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {}", header[0]),
        )
    })?;
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit"),
        ));
    }
    // Grow with the bytes that arrive rather than trusting `len` up front.
    let mut payload = Vec::with_capacity((len as usize).min(64 * 1024));
    r.take(u64::from(len)).read_to_end(&mut payload)?;
    if payload.len() != len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "stream ended inside a {kind:?} frame ({} of {len} bytes)",
                payload.len()
            ),
        ));
    }
    Ok(Some((kind, payload)))
}

/// Encodes the payload of [`Kind::Signal`] and [`Kind::Exit`].
pub fn encode_i32(value: i32) -> [u8; 4] {
    value.to_le_bytes()
}

/// Decodes the payload of [`Kind::Signal`] and [`Kind::Exit`]; `InvalidData` unless it is
/// exactly 4 bytes.
pub fn decode_i32(payload: &[u8]) -> io::Result<i32> {
    <[u8; 4]>::try_from(payload)
        .map(i32::from_le_bytes)
        .map_err(|_| bad_len("an i32", 4, payload.len()))
}

/// Encodes the payload of [`Kind::Resize`].
pub fn encode_resize(rows: u16, cols: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&rows.to_le_bytes());
    b[2..].copy_from_slice(&cols.to_le_bytes());
    b
}

/// Decodes the payload of [`Kind::Resize`] into `(rows, cols)`; `InvalidData` unless it is
/// exactly 4 bytes.
pub fn decode_resize(payload: &[u8]) -> io::Result<(u16, u16)> {
    match payload {
        [r0, r1, c0, c1] => Ok((
            u16::from_le_bytes([*r0, *r1]),
            u16::from_le_bytes([*c0, *c1]),
        )),
        _ => Err(bad_len("a terminal size", 4, payload.len())),
    }
}

fn bad_len(what: &str, want: usize, got: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("payload of {got} bytes is not {what} ({want} bytes)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const ALL: [Kind; 23] = [
        Kind::Changes,
        Kind::Hosts,
        Kind::ExecStart,
        Kind::ExecStdin,
        Kind::ExecStdinEof,
        Kind::ExecSignal,
        Kind::ExecResize,
        Kind::ExecStarted,
        Kind::ExecStdout,
        Kind::ExecStderr,
        Kind::ExecExit,
        Kind::ExecError,
        Kind::Config,
        Kind::Stdin,
        Kind::StdinEof,
        Kind::Signal,
        Kind::Resize,
        Kind::Ready,
        Kind::Started,
        Kind::Stdout,
        Kind::Stderr,
        Kind::Exit,
        Kind::Error,
    ];

    #[test]
    fn kinds_round_trip_and_have_the_documented_values() {
        for k in ALL {
            assert_eq!(Kind::from_u8(k as u8), Some(k));
        }
        assert_eq!(Kind::Config as u8, 1);
        assert_eq!(Kind::Resize as u8, 5);
        assert_eq!(Kind::Ready as u8, 16);
        assert_eq!(Kind::Error as u8, 21);
        for b in (0u8..=255).filter(|b| !ALL.iter().any(|k| *k as u8 == *b)) {
            assert_eq!(Kind::from_u8(b), None, "{b}");
        }
    }

    #[test]
    fn frames_round_trip_in_sequence() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Ready, &[]).unwrap();
        write_frame(&mut buf, Kind::Stdout, b"hello").unwrap();
        write_frame(&mut buf, Kind::Exit, &encode_i32(-3)).unwrap();
        assert_eq!(&buf[..5], &[16, 0, 0, 0, 0]);
        assert_eq!(&buf[5..10], &[18, 5, 0, 0, 0]);
        let mut r = Cursor::new(buf);
        assert_eq!(read_frame(&mut r).unwrap(), Some((Kind::Ready, vec![])));
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((Kind::Stdout, b"hello".to_vec()))
        );
        let (k, p) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((k, decode_i32(&p).unwrap()), (Kind::Exit, -3));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    /// A reader that hands out one byte per call, like a tty in raw mode may.
    struct Trickle(Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn short_reads_are_reassembled() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Stderr, b"err\n").unwrap();
        let mut r = Trickle(Cursor::new(buf));
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((Kind::Stderr, b"err\n".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn hostile_length_is_rejected_before_allocation() {
        for len in [MAX_PAYLOAD + 1, u32::MAX] {
            let mut frame = vec![Kind::Stdout as u8];
            frame.extend_from_slice(&len.to_le_bytes());
            let err = read_frame(&mut Cursor::new(frame)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains("exceeds"), "{err}");
        }
        // Exactly the limit is fine.
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Stdout, &vec![7u8; MAX_PAYLOAD as usize]).unwrap();
        let (_, p) = read_frame(&mut Cursor::new(buf)).unwrap().unwrap();
        assert_eq!(p.len(), MAX_PAYLOAD as usize);
    }

    #[test]
    fn a_large_claimed_length_with_little_data_does_not_allocate_the_claim() {
        let mut frame = vec![Kind::Stdout as u8];
        frame.extend_from_slice(&MAX_PAYLOAD.to_le_bytes());
        frame.extend_from_slice(b"abc");
        let err = read_frame(&mut Cursor::new(frame)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("3 of 1048576"), "{err}");
    }

    #[test]
    fn unknown_kind_is_rejected() {
        for kind in [0u8, 12, 15, 28, 255] {
            let err = read_frame(&mut Cursor::new(vec![kind, 0, 0, 0, 0])).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains(&kind.to_string()), "{err}");
        }
    }

    #[test]
    fn session_kinds_map_both_ways_and_payloads_carry_the_id() {
        for k in ALL {
            if let Some(s) = k.to_session() {
                assert_eq!(s.from_session(), Some(k), "{k:?}");
                assert_eq!(s.to_session(), None);
            }
        }
        assert_eq!(Kind::Config.to_session(), Some(Kind::ExecStart));
        assert_eq!(Kind::Ready.to_session(), None);
        assert_eq!(Kind::Ready.from_session(), None);
        let p = session_payload(0x0102_0304, b"out");
        assert_eq!(p, [4, 3, 2, 1, b'o', b'u', b't']);
        assert_eq!(split_session(&p).unwrap(), (0x0102_0304, &b"out"[..]));
        assert_eq!(
            split_session(&[1, 2, 3, 4]).unwrap(),
            (0x0403_0201, &[][..])
        );
        assert!(split_session(&[1, 2, 3]).is_err());
    }

    #[test]
    fn truncated_header_is_an_error_not_eof() {
        let err = read_frame(&mut Cursor::new(vec![18, 1, 0])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn oversized_writes_are_refused() {
        let mut buf = Vec::new();
        let err =
            write_frame(&mut buf, Kind::Stdout, &vec![0; MAX_PAYLOAD as usize + 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(buf.is_empty());
    }

    #[test]
    fn fixed_payloads_decode_strictly() {
        assert_eq!(decode_resize(&encode_resize(24, 80)).unwrap(), (24, 80));
        assert_eq!(encode_resize(0x0102, 0x0304), [2, 1, 4, 3]);
        assert!(decode_resize(&[1, 2, 3]).is_err());
        assert!(decode_i32(&[1, 2, 3, 4, 5]).is_err());
        assert_eq!(decode_i32(&encode_i32(15)).unwrap(), 15);
    }

    #[test]
    fn config_json_is_lenient_about_missing_fields() {
        let c: GuestConfig = serde_json::from_str(r#"{"args":["sh"],"tty":true}"#).unwrap();
        assert_eq!(c.args, ["sh"]);
        assert!(c.tty && !c.interactive && c.volumes.is_empty() && c.network.is_none());
        let full = GuestConfig {
            args: vec!["a".into()],
            env: vec!["A=1".into()],
            workdir: "/w".into(),
            user: "1:2".into(),
            hostname: "h".into(),
            tty: false,
            interactive: true,
            read_only: true,
            volumes: vec![],
            network: Some(GuestNetwork {
                address: "10.89.0.2".parse().unwrap(),
                prefix: 24,
                gateway: "10.89.0.1".parse().unwrap(),
                mtu: 1500,
                hosts: "10.89.0.3\tpeer\n".into(),
                resolv_conf: "nameserver 10.0.0.53\n".into(),
            }),
            export_changes: true,
            pids_limit: Some(8),
        };
        let json = serde_json::to_vec(&full).unwrap();
        assert_eq!(serde_json::from_slice::<GuestConfig>(&json).unwrap(), full);
        let e: ErrorReport = serde_json::from_str(r#"{"code":127,"message":"x"}"#).unwrap();
        assert_eq!(e.code, 127);
    }
}
