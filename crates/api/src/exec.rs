//! Exec: `POST /containers/{id}/exec` (create), `POST /exec/{id}/start` (a hijacked
//! stream, or detached), `POST /exec/{id}/resize`, `GET /exec/{id}/json`.
//!
//! The server never forks into an instance itself: each start runs the engine's exec
//! helper (`vessel_engine::exec`), whose pipes are relayed here and whose exit status is
//! the exec's `ExitCode`. Exec records live in the server's memory, as in Docker.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vessel_engine::catalogue::Status;
use vessel_engine::exec::{self, ExecSpec, HelperReport};
use vessel_engine::logs::Stream;
use vessel_shim::attach::frame_header;

use crate::containers::Fields;
use crate::http::{self, Body};
use crate::{ApiError, State};

/// Exec records kept at most; the oldest finished ones go first.
const MAX_EXECS: usize = 4096;

/// Where an exec is in its life.
enum Phase {
    Created,
    /// Its helper is being started.
    Starting,
    Running {
        pid: i32,
        control: Arc<UnixStream>,
    },
    Exited {
        pid: i32,
        code: i32,
    },
}

/// One exec, as created.
pub(crate) struct ExecRecord {
    container: String,
    spec: ExecSpec,
    attach_stdout: bool,
    attach_stderr: bool,
    console: Option<(u16, u16)>,
    /// Creation order, for evicting the oldest.
    seq: u64,
    phase: Phase,
}

/// Every exec this server created, by id.
#[derive(Default)]
pub(crate) struct Execs {
    map: HashMap<String, ExecRecord>,
    next: u64,
}

fn new_id() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| ApiError::Internal(format!("exec id: read /dev/urandom: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn no_such(id: &str) -> ApiError {
    ApiError::NotFound(format!("No such exec instance: {id}"))
}

/// A `ConsoleSize` field: `[height, width]`; `[0, 0]` or absent is none.
pub(crate) fn console_size(v: Option<Value>, field: &str) -> Result<Option<(u16, u16)>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if a.len() == 2 => {
            let n = |x: &Value| x.as_u64().and_then(|n| u16::try_from(n).ok());
            match (n(&a[0]), n(&a[1])) {
                (Some(0), Some(0)) => Ok(None),
                (Some(h), Some(w)) => Ok(Some((h, w))),
                _ => Err(ApiError::BadRequest(format!(
                    "{field}: expected [height, width] in 0..65535"
                ))),
            }
        }
        Some(v) => Err(ApiError::BadRequest(format!(
            "{field}: expected [height, width], got {v}"
        ))),
    }
}

/// `POST /containers/{id}/exec`.
pub async fn create(
    state: &Arc<State>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let v = http::object_body(req).await?;
    let mut f = Fields::new("", Some(v))?;
    let args = f.strings("Cmd")?;
    if args.is_empty() {
        return Err(ApiError::BadRequest("No exec command specified".into()));
    }
    let attach_stdin = f.boolean("AttachStdin")?;
    let spec = ExecSpec {
        args,
        env: f.strings("Env")?,
        workdir: f.nonempty("WorkingDir")?,
        user: f.nonempty("User")?,
        tty: f.boolean("Tty")?,
        interactive: attach_stdin,
    };
    let attach_stdout = f.boolean("AttachStdout")?;
    let attach_stderr = f.boolean("AttachStderr")?;
    let console = console_size(f.take("ConsoleSize"), "ConsoleSize")?;
    // Docker's default detach keys are what the client sends when none are asked for;
    // vessel detaches by the client closing its connection only.
    f.only_default("DetachKeys", &[])?;
    f.only_default("Privileged", &[])?;
    // The client repeats here what it asks at start, where Docker (and vessel) read it.
    f.boolean("Detach")?;
    // docker-py repeats the container; it must be the one of the path.
    let named = f.nonempty("Container")?;
    f.finish()?;
    let key = id.to_string();
    let cmdline = spec.args.join(" ");
    let inst = state
        .engine(move |e| {
            let inst = e.get(&key)?;
            if inst.status == Status::Running {
                e.instance_event(&inst, &format!("exec_create: {cmdline}"), &[]);
            }
            Ok(inst)
        })
        .await?;
    if let Some(c) = named.filter(|c| !inst.id.starts_with(c.as_str()) && *c != inst.name) {
        return Err(ApiError::BadRequest(format!(
            "Container = {c:?} differs from the container of the path ({})",
            inst.id
        )));
    }
    if inst.status != Status::Running {
        return Err(ApiError::Conflict(format!(
            "Container {} is not running",
            inst.id
        )));
    }
    let exec_id = new_id()?;
    let mut execs = state.execs.lock().unwrap_or_else(|e| e.into_inner());
    if execs.map.len() >= MAX_EXECS {
        let oldest = execs
            .map
            .iter()
            .filter(|(_, r)| matches!(r.phase, Phase::Exited { .. }))
            .min_by_key(|(_, r)| r.seq)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                execs.map.remove(&k);
            }
            None => {
                return Err(ApiError::Conflict(format!(
                    "too many execs ({MAX_EXECS}) not yet finished: start or end some first"
                )))
            }
        }
    }
    execs.next += 1;
    let seq = execs.next;
    execs.map.insert(
        exec_id.clone(),
        ExecRecord {
            container: inst.id,
            spec,
            attach_stdout,
            attach_stderr,
            console,
            seq,
            phase: Phase::Created,
        },
    );
    Ok(http::json(StatusCode::CREATED, &json!({ "Id": exec_id })))
}

/// `GET /exec/{id}/json`.
pub async fn inspect(state: &Arc<State>, id: &str) -> Result<Response<Body>, ApiError> {
    let execs = state.execs.lock().unwrap_or_else(|e| e.into_inner());
    let r = execs.map.get(id).ok_or_else(|| no_such(id))?;
    let (running, code, pid) = match &r.phase {
        Phase::Created => (false, Value::Null, 0),
        Phase::Starting => (true, Value::Null, 0),
        Phase::Running { pid, .. } => (true, Value::Null, *pid),
        Phase::Exited { pid, code } => (false, json!(code), *pid),
    };
    let s = &r.spec;
    let doc = json!({
        "ID": id,
        "Running": running,
        "ExitCode": code,
        "ProcessConfig": {
            "tty": s.tty,
            "entrypoint": s.args.first(),
            "arguments": s.args.get(1..).unwrap_or_default(),
            "privileged": false,
            "user": s.user.clone().unwrap_or_default(),
        },
        "OpenStdin": s.interactive,
        "OpenStdout": r.attach_stdout,
        "OpenStderr": r.attach_stderr,
        "CanRemove": false,
        "ContainerID": r.container,
        "DetachKeys": "",
        "Pid": pid,
    });
    Ok(http::json(StatusCode::OK, &doc))
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn resize(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let (h, w) = size_query(req)?;
    let control = {
        let execs = state.execs.lock().unwrap_or_else(|e| e.into_inner());
        let r = execs.map.get(id).ok_or_else(|| no_such(id))?;
        if !r.spec.tty {
            return Err(ApiError::Conflict(format!(
                "exec {id} has no terminal to resize (it was created without Tty)"
            )));
        }
        match &r.phase {
            Phase::Running { control, .. } => control.clone(),
            _ => {
                return Err(ApiError::Conflict(format!("exec {id} is not running")));
            }
        }
    };
    if h == 0 || w == 0 {
        return Ok(http::empty(StatusCode::OK));
    }
    exec::resize(&control, h, w)
        .map_err(|e| ApiError::Conflict(format!("exec {id} is not running: {e}")))?;
    Ok(http::empty(StatusCode::OK))
}

/// The `h` and `w` query parameters of a resize: both given, in 0..65535 (a size with a
/// 0 in it is no size, and is taken as Docker takes it: without effect).
pub fn size_query(req: &Request<Incoming>) -> Result<(u16, u16), ApiError> {
    let q = http::query(req);
    let dim = |k: &str| -> Result<u16, ApiError> {
        let v = q
            .int(k)?
            .ok_or_else(|| ApiError::BadRequest(format!("query parameter {k} is required")))?;
        u16::try_from(v)
            .map_err(|_| ApiError::BadRequest(format!("invalid {k}={v}: expected 0..65535")))
    };
    Ok((dim("h")?, dim("w")?))
}

/// `POST /exec/{id}/start`: body `{"Detach", "Tty", "ConsoleSize"}`.
pub async fn start(
    state: &Arc<State>,
    mut req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let body = http::body(req).await?;
    let v: Value = http::parse_json(&body)?;
    let mut f = Fields::new("", Some(v))?;
    let detach = f.boolean("Detach")?;
    let tty_asked = f.take("Tty");
    let console = console_size(f.take("ConsoleSize"), "ConsoleSize")?;
    f.finish()?;
    // Taken out of Created at once: a second start is refused.
    let (container, mut spec, tty, console, want) = {
        let mut execs = state.execs.lock().unwrap_or_else(|e| e.into_inner());
        let r = execs.map.get_mut(id).ok_or_else(|| no_such(id))?;
        match r.phase {
            Phase::Created => {}
            Phase::Running { .. } | Phase::Starting => {
                return Err(ApiError::Conflict(format!(
                    "Exec command {id} is already running"
                )))
            }
            Phase::Exited { .. } => {
                return Err(ApiError::Conflict(format!(
                    "Exec command {id} has already run"
                )))
            }
        }
        if let Some(t) = tty_asked.as_ref().and_then(Value::as_bool) {
            if t != r.spec.tty {
                return Err(ApiError::BadRequest(format!(
                    "Tty = {t} differs from the exec's creation (Tty = {}): set it when creating the exec",
                    r.spec.tty
                )));
            }
        }
        r.phase = Phase::Starting;
        (
            r.container.clone(),
            r.spec.clone(),
            r.spec.tty,
            console.or(r.console),
            (r.attach_stdout, r.attach_stderr),
        )
    };
    if detach {
        spec.interactive = false;
        launch(state, id, container, spec, console, want).await?;
        return Ok(http::empty(StatusCode::OK));
    }
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let Some(on_upgrade) = on_upgrade else {
        // Without an upgrade the output is the body, and there is no input.
        let (stdin, out_rx) = launch(state, id, container, spec, console, want).await?;
        drop(stdin);
        return Ok(http::streamed(StatusCode::OK, ct, out_rx));
    };
    let st = state.clone();
    let eid = id.to_string();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            set_phase(&st, &eid, Phase::Exited { pid: 0, code: 126 });
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let (mut cr, mut cw) = tokio::io::split(io);
        // The process starts once the client holds its stream, as Docker's does: a
        // client that reads the answer's head through a buffer (docker-py) loses no output.
        let (stdin, out_rx) = match launch(&st, &eid, container, spec, console, want).await {
            Ok(x) => x,
            Err(e) => {
                let mut line = e.to_string().into_bytes();
                line.push(b'\n');
                let _ = cw.write_all(&framed(Stream::Stderr, &line, tty)).await;
                let _ = cw.shutdown().await;
                return;
            }
        };
        let input = async move {
            let Some(fd) = stdin else {
                return std::future::pending::<()>().await;
            };
            let Ok(mut w) = pipe_sender(fd) else {
                return std::future::pending::<()>().await;
            };
            let _ = tokio::io::copy(&mut cr, &mut w).await;
            // The client ended its input: so does the process's.
            drop(w);
            std::future::pending::<()>().await
        };
        let output = async move {
            let mut rx = out_rx;
            while let Some(b) = rx.recv().await {
                if cw.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = cw.flush().await;
            let _ = cw.shutdown().await;
        };
        tokio::select! {
            _ = input => {}
            _ = output => {}
        }
    });
    let mut r = http::empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("tcp"),
    );
    if let Ok(v) = ct.parse() {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(r)
}

/// What a started exec gives its client: where input goes, and the framed output.
type Launched = (Option<OwnedFd>, tokio::sync::mpsc::Receiver<Bytes>);

/// Starts exec `id`'s helper and the relay of its output; records its phases.
async fn launch(
    state: &Arc<State>,
    id: &str,
    container: String,
    spec: ExecSpec,
    console: Option<(u16, u16)>,
    want: (bool, bool),
) -> Result<Launched, ApiError> {
    let tty = spec.tty;
    let eid_for_event = id.to_string();
    let cfg = state.config.clone();
    let st = state.clone();
    let spawned = tokio::task::spawn_blocking(move || {
        let h = exec::spawn(&cfg, &container, &spec)?;
        if let Ok(e) = vessel_engine::Engine::open(&st.config) {
            if let Ok(inst) = e.get(&container) {
                let action = format!("exec_start: {}", spec.args.join(" "));
                e.instance_event(&inst, &action, &[("execID", eid_for_event)]);
            }
        }
        let report = exec::read_report(&h.control);
        Ok::<_, vessel_engine::EngineError>((h, report))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("exec: {e}")))?;
    let (helper, report) = match spawned {
        Ok(x) => x,
        Err(e) => {
            set_phase(state, id, Phase::Exited { pid: 0, code: 126 });
            return Err(e.into());
        }
    };
    let exec::Helper {
        child,
        control,
        stdin,
        stdout,
        stderr,
    } = helper;
    let (pid, failure) = match report {
        HelperReport::Started { pid } => (pid, None),
        HelperReport::Error { code, message } => (0, Some((code, message))),
    };
    let control = Arc::new(control);
    set_phase(
        state,
        id,
        Phase::Running {
            pid,
            control: control.clone(),
        },
    );
    if let (Some((h, w)), true) = (console, tty) {
        let _ = exec::resize(&control, h, w);
    }
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let st = state.clone();
    let eid = id.to_string();
    let pipes = Pipes {
        stdout,
        stderr,
        want,
        tty,
    };
    let relay = async move {
        if let Some((_, message)) = &failure {
            let mut line = message.clone().into_bytes();
            line.push(b'\n');
            let _ = out_tx.send(framed(Stream::Stderr, &line, tty)).await;
        }
        let code = relay_output(pipes, child, &out_tx).await;
        let code = failure.map(|(c, _)| i32::from(c)).unwrap_or(code);
        // Recorded before the stream ends: the client asks for the exit code then.
        set_phase(&st, &eid, Phase::Exited { pid, code });
        drop(out_tx);
    };
    tokio::spawn(relay);
    Ok((stdin, out_rx))
}

fn set_phase(state: &Arc<State>, id: &str, phase: Phase) {
    if let Some(r) = state
        .execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map
        .get_mut(id)
    {
        r.phase = phase;
    }
}

fn framed(stream: Stream, data: &[u8], tty: bool) -> Bytes {
    if tty {
        return Bytes::copy_from_slice(data);
    }
    let mut v = frame_header(stream, data.len()).to_vec();
    v.extend_from_slice(data);
    Bytes::from(v)
}

/// The helper's output pipes and what the client wants of them.
struct Pipes {
    stdout: OwnedFd,
    stderr: Option<OwnedFd>,
    /// stdout, stderr wanted.
    want: (bool, bool),
    tty: bool,
}

fn nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = fcntl(fd, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}

fn pipe_sender(fd: OwnedFd) -> std::io::Result<tokio::net::unix::pipe::Sender> {
    nonblocking(&fd)?;
    tokio::net::unix::pipe::Sender::from_owned_fd(fd)
}

/// Reads from `r`, or waits forever once it has ended (`None`).
async fn read_open(
    r: &mut Option<tokio::net::unix::pipe::Receiver>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Copies the helper's output, framed, to `out` (or drains it if the client is gone),
/// until its pipes end, or the helper has exited and they stay quiet (a background
/// process of the instance may hold them); returns the helper's exit status.
async fn relay_output(
    pipes: Pipes,
    mut child: std::process::Child,
    out: &tokio::sync::mpsc::Sender<Bytes>,
) -> i32 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Stream, Bytes)>(16);
    // One task reads both pipes, stdout first when both have data: the process wrote
    // them in some order the pipes do not keep, and two independent readers would
    // deliver `echo out; echo err >&2` as often reversed as not.
    let receiver = |fd: OwnedFd| -> Option<tokio::net::unix::pipe::Receiver> {
        nonblocking(&fd).ok()?;
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()
    };
    let mut stdout = receiver(pipes.stdout);
    let mut stderr = pipes.stderr.and_then(receiver);
    let want = pipes.want;
    tokio::spawn(async move {
        let (mut a, mut b) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
        while stdout.is_some() || stderr.is_some() {
            let (stream, got) = tokio::select! {
                biased;
                r = read_open(&mut stdout, &mut a) => (Stream::Stdout, r),
                r = read_open(&mut stderr, &mut b) => (Stream::Stderr, r),
            };
            let (buf, wanted, end) = match stream {
                Stream::Stdout => (&a, want.0, &mut stdout),
                _ => (&b, want.1, &mut stderr),
            };
            match got {
                Ok(0) | Err(_) => *end = None,
                Ok(n) if wanted => {
                    let _ = tx.send((stream, Bytes::copy_from_slice(&buf[..n]))).await;
                }
                Ok(_) => {}
            }
        }
    });
    let mut waiter = tokio::task::spawn_blocking(move || {
        use std::os::unix::process::ExitStatusExt;
        match child.wait() {
            Ok(s) => s
                .code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(125),
            Err(_) => 125,
        }
    });
    let mut code = None;
    loop {
        let quiet = async {
            if code.is_some() {
                tokio::time::sleep(Duration::from_millis(300)).await
            } else {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            chunk = rx.recv() => match chunk {
                None => break,
                Some((stream, data)) => {
                    let _ = out.send(framed(stream, &data, pipes.tty)).await;
                }
            },
            c = &mut waiter, if code.is_none() => code = Some(c.unwrap_or(125)),
            _ = quiet => break,
        }
    }
    match code {
        Some(c) => c,
        None => waiter.await.unwrap_or(125),
    }
}
