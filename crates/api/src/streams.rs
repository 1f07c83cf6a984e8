//! The streaming endpoints: `wait`, `logs` and `attach` (a hijacked connection).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vessel_engine::catalogue::Status;
use vessel_engine::logs::{self, Stream};
use vessel_engine::request::LogDriver;
use vessel_shim::attach::{self, frame_header};

use crate::http::{self, Body};
use crate::{ApiError, State};

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`.
pub async fn wait(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let cond = q
        .get("condition")
        .filter(|c| !c.is_empty())
        .unwrap_or("not-running")
        .to_string();
    if !matches!(cond.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::BadRequest(format!(
            "invalid condition {cond:?}: expected not-running, next-exit or removed"
        )));
    }
    let key = id.to_string();
    let first = state.engine(move |e| Ok(e.get(&key)?)).await?;
    // Docker's clients read the headers before they start the instance: they go now,
    // the status when the condition is met.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let st = state.clone();
    tokio::spawn(async move {
        let code = wait_for(&st, first, &cond).await;
        let body = match code {
            Ok(code) => json!({ "StatusCode": code, "Error": null }),
            Err(e) => json!({ "StatusCode": -1, "Error": { "Message": e.to_string() } }),
        };
        let _ = tx.send(Bytes::from(body.to_string())).await;
    });
    Ok(http::streamed(StatusCode::OK, "application/json", rx))
}

/// Waits until `cond` holds for instance `first`; returns its exit status.
async fn wait_for(
    state: &Arc<State>,
    first: vessel_engine::catalogue::Instance,
    cond: &str,
) -> Result<i32, ApiError> {
    let id = first.id.clone();
    let created = first.status == Status::Created;
    let mut last_code = first.exit_code;
    let mut changed = state.changed.subscribe();
    loop {
        let key = id.clone();
        let now = state
            .engine(move |e| match e.get(&key) {
                Ok(i) => Ok(Some(i)),
                Err(vessel_engine::EngineError::NoSuchInstance(_)) => Ok(None),
                Err(e) => Err(e.into()),
            })
            .await?;
        let recorded = state
            .exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied();
        let done = match &now {
            None => Some(recorded.or(last_code).unwrap_or(0)),
            Some(i) => {
                last_code = i.exit_code.or(last_code);
                let ended = matches!(i.status, Status::Exited | Status::Dead);
                match cond {
                    "removed" => None,
                    // A created instance has not run yet: its next exit is to come.
                    "next-exit" if created => ended.then(|| i.exit_code.unwrap_or(0)),
                    _ => (i.status != Status::Running).then(|| i.exit_code.unwrap_or(0)),
                }
            }
        };
        if let Some(code) = done {
            return Ok(code);
        }
        // Woken by an exit this server saw, else a look every quarter second (an
        // instance started by someone else).
        let _ = tokio::time::timeout(Duration::from_millis(250), changed.changed()).await;
    }
}

/// An instance and the path of its log.
async fn with_log(
    state: &Arc<State>,
    key: String,
) -> Result<(vessel_engine::catalogue::Instance, std::path::PathBuf), ApiError> {
    state
        .engine(move |e| {
            let i = e.get(&key)?;
            let p = e.log_path(&i.id);
            Ok((i, p))
        })
        .await
}

/// Refuses to read back the log of an instance whose driver keeps none (Docker's words).
fn readable(inst: &vessel_engine::catalogue::Instance) -> Result<(), ApiError> {
    if inst.request.log.driver != LogDriver::JsonFile {
        return Err(ApiError::BadRequest(format!(
            "configured logging driver does not support reading: {}",
            inst.request.log.driver.as_str()
        )));
    }
    Ok(())
}

fn framed(stream: Stream, data: &[u8], tty: bool) -> Bytes {
    if tty {
        return Bytes::copy_from_slice(data);
    }
    let mut v = frame_header(stream, data.len()).to_vec();
    v.extend_from_slice(data);
    Bytes::from(v)
}

fn content_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// `GET /containers/{id}/logs?follow&stdout&stderr&timestamps&tail&since`.
pub async fn logs(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let (out, err) = (q.flag("stdout"), q.flag("stderr"));
    if !out && !err {
        return Err(ApiError::BadRequest(
            "you must choose at least one stream".into(),
        ));
    }
    let follow = q.flag("follow");
    let stamps = q.flag("timestamps");
    let tail = match q.get("tail") {
        None | Some("" | "all") => None,
        Some(t) => Some(t.parse::<usize>().map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid value {t:?} for query parameter tail: expected a number or all"
            ))
        })?),
    };
    let since = q.int("since")?.unwrap_or(0);
    let key = id.to_string();
    let (inst, path) = with_log(state, key).await?;
    readable(&inst)?;
    let tty = inst.request.tty;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let st = state.clone();
    let id = inst.id.clone();
    tokio::task::spawn_blocking(move || {
        let mut reader = logs::Reader::new(&path);
        let keep = |e: &logs::Entry| {
            (match e.stream {
                Stream::Stdout => out,
                Stream::Stderr => err,
            }) && (since == 0
                || chrono::DateTime::parse_from_rfc3339(&e.time)
                    .is_ok_and(|t| t.timestamp() >= since))
        };
        let send = |e: &logs::Entry| -> bool {
            let line = if stamps {
                format!("{} {}", e.time, e.log)
            } else {
                e.log.clone()
            };
            tx.blocking_send(framed(e.stream, line.as_bytes(), tty))
                .is_ok()
        };
        let going = match tail {
            Some(n) => {
                let mut last = std::collections::VecDeque::new();
                let r = reader.read(&mut |e| {
                    if n > 0 && keep(&e) {
                        if last.len() == n {
                            last.pop_front();
                        }
                        last.push_back(e);
                    }
                    true
                });
                r.is_ok() && last.iter().all(send)
            }
            None => reader.read(&mut |e| !keep(&e) || send(&e)).unwrap_or(false),
        };
        if !going || !follow {
            return;
        }
        loop {
            let running = Engine::open(&st.config)
                .and_then(|e| e.get(&id))
                .map(|i| i.status == Status::Running)
                .unwrap_or(false);
            let mut ok = true;
            let _ = reader.read(&mut |e| {
                ok = !keep(&e) || send(&e);
                ok
            });
            if !ok || !running || tx.is_closed() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    Ok(http::streamed(StatusCode::OK, content_type(tty), rx))
}

use vessel_engine::Engine;

/// `POST /containers/{id}/attach?stream&stdin&stdout&stderr&logs`: with `Upgrade: tcp`
/// (what Docker's clients send) the connection is hijacked (`101 UPGRADED`) and carries
/// output one way and stdin the other; without, a `200` whose body is the output.
/// Attached to a created instance, the connection is handed to its monitor at start,
/// so that no output is missed; to a running one, it joins its attach socket.
pub async fn attach(
    state: &Arc<State>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(&req);
    let mut flags = 0u8;
    for (k, f) in [
        ("stdin", attach::WANT_STDIN),
        ("stdout", attach::WANT_STDOUT),
        ("stderr", attach::WANT_STDERR),
    ] {
        if q.flag(k) {
            flags |= f;
        }
    }
    if !q.flag("stream") && !q.flag("logs") {
        return Err(ApiError::BadRequest(
            "attach needs stream=1 or logs=1".into(),
        ));
    }
    let key = id.to_string();
    let (inst, path) = with_log(state, key).await?;
    let tty = inst.request.tty;
    // `logs=1`: what the instance wrote so far (of the streams asked for) comes first.
    let history = if q.flag("logs") {
        readable(&inst)?;
        let (out, err) = (
            flags & attach::WANT_STDOUT != 0,
            flags & attach::WANT_STDERR != 0,
        );
        tokio::task::spawn_blocking(move || {
            let mut past = Vec::new();
            let _ = logs::Reader::new(&path).read(&mut |e| {
                if match e.stream {
                    Stream::Stdout => out,
                    Stream::Stderr => err,
                } {
                    past.push(framed(e.stream, e.log.as_bytes(), tty));
                }
                true
            });
            past
        })
        .await
        .map_err(|e| ApiError::Internal(format!("attach: the logs: {e}")))?
    } else {
        Vec::new()
    };
    let live = q.flag("stream") && matches!(inst.status, Status::Created | Status::Running);
    if !live {
        if !q.flag("logs") {
            return Err(ApiError::Conflict(
                "You cannot attach to a stopped container, start it first".into(),
            ));
        }
        // The logs alone (not streaming, or nothing left to stream).
        return Ok(answer_attach(req, tty, history, None));
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| ApiError::Internal(format!("socketpair: {e}")))?;
    let sock = match inst.status {
        Status::Created => {
            // Docker's `run -i` is StdinOnce: the end of the client's input is the
            // end of the instance's.
            let mut ours = ours;
            std::io::Write::write_all(&mut ours, &[flags | attach::STDIN_ONCE])
                .map_err(|e| ApiError::Internal(format!("attach: {e}")))?;
            state
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(inst.id.clone())
                .or_default()
                .push(OwnedFd::from(theirs));
            ours
        }
        // Running (`live` holds only for created and running instances).
        _ => {
            drop((ours, theirs));
            let id = inst.id.clone();
            let mut s = state.engine(move |e| Ok(e.attach_socket(&id)?)).await?;
            std::io::Write::write_all(&mut s, &[flags])
                .map_err(|e| ApiError::Internal(format!("attach: {e}")))?;
            s
        }
    };
    sock.set_nonblocking(true)
        .map_err(|e| ApiError::Internal(format!("attach: {e}")))?;
    let sock = tokio::net::UnixStream::from_std(sock)
        .map_err(|e| ApiError::Internal(format!("attach: {e}")))?;
    Ok(answer_attach(req, tty, history, Some(sock)))
}

/// The attach's answer: `history` (framed output from the log), then what `sock`
/// relays if there is one; hijacked (`101`) if the client asked for `Upgrade: tcp`,
/// else a `200` whose body is the output.
fn answer_attach(
    mut req: Request<Incoming>,
    tty: bool,
    history: Vec<Bytes>,
    sock: Option<tokio::net::UnixStream>,
) -> Response<Body> {
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    if !upgrade {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        tokio::spawn(async move {
            for b in history {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            let Some(mut sock) = sock else { return };
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = sock.read(&mut buf).await {
                if n == 0 || tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    break;
                }
            }
        });
        return http::streamed(StatusCode::OK, content_type(tty), rx);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut client = hyper_util::rt::TokioIo::new(upgraded);
        for b in &history {
            if client.write_all(b).await.is_err() {
                return;
            }
        }
        match sock {
            Some(sock) => relay(client, sock).await,
            None => {
                let _ = client.flush().await;
                let _ = client.shutdown().await;
            }
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
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type(tty)),
    );
    r
}

/// Copies the instance's output to the client until it ends, and the client's input to
/// the instance until the client ends it; a client that goes away ends only this.
async fn relay<C>(client: C, sock: tokio::net::UnixStream)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = sock.into_split();
    let input = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        // The client ended its input: the instance's attach socket learns it.
        let _ = sw.shutdown().await;
        // Then keep waiting: the output side decides when this ends.
        std::future::pending::<()>().await;
    };
    let output = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.flush().await;
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        _ = input => {}
        _ = output => {}
    }
}
