//! `vessel serve`: the Docker Engine API on a Unix socket, over vessel's engine.
//!
//! The docker CLI, docker-py and other Engine API clients drive vessel through it
//! unchanged; `HostConfig.Runtime = "vessel-vm"` (`docker run --runtime vessel-vm`) runs
//! an instance as a KVM microVM. The engine's calls block (SQLite, fork, waits): each runs
//! on tokio's blocking pool. Instances do not depend on the server: each has its own
//! monitor, which serves its attach socket, so a server restart leaves them running.

mod archive;
mod containers;
mod error;
mod events;
mod exec;
mod http;
mod images;
mod networks;
mod streams;
mod system;
mod usage;
mod volumes;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use vessel_engine::{Engine, EngineConfig};

pub use error::ApiError;
use http::Body;

/// The newest Engine API version served (Docker 27's).
pub const API_VERSION: &str = "1.47";
/// The oldest Engine API version served.
pub const MIN_API_VERSION: &str = "1.12";
/// Where `vessel serve` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vessel.sock";

/// How `vessel serve` listens.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: Listen,
    /// The group given access to the socket (mode 0660); without one, root alone.
    pub group: Option<u32>,
}

/// Where `vessel serve` listens (`-H`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// `unix:///PATH`: a socket the server binds (and removes when it stops).
    Path(PathBuf),
    /// `fd://`: the one listening Unix socket systemd passes (socket activation:
    /// `LISTEN_PID`, `LISTEN_FDS`, descriptor 3), as `dockerd -H fd://` takes it. Its
    /// unit decides its path, owner and mode.
    Systemd,
}

/// Parses `-H`: `unix://PATH` (or a bare absolute path), or `fd://` (systemd's socket).
/// TCP is refused: the API gives root on the host to whoever reaches it.
pub fn parse_host(h: &str) -> Result<Listen, ApiError> {
    if h == "fd://" {
        return Ok(Listen::Systemd);
    }
    let path = if let Some(p) = h.strip_prefix("unix://") {
        p
    } else if h.starts_with('/') {
        h
    } else if h.starts_with("fd://") {
        return Err(ApiError::BadRequest(format!(
            "-H {h}: vessel serve takes systemd's socket as plain fd:// (one socket, no name)"
        )));
    } else if h.starts_with("tcp://") || h.contains("://") {
        return Err(ApiError::BadRequest(format!(
            "-H {h}: vessel serve listens on a Unix socket only (unix:///PATH); the Engine API gives root on this host to whoever reaches it, so it is not offered over the network"
        )));
    } else {
        return Err(ApiError::BadRequest(format!(
            "-H {h}: expected unix:///PATH"
        )));
    };
    if !path.starts_with('/') {
        return Err(ApiError::BadRequest(format!(
            "-H {h}: the socket path must be absolute"
        )));
    }
    Ok(Listen::Path(PathBuf::from(path)))
}

/// What every request handler shares.
pub(crate) struct State {
    pub config: EngineConfig,
    /// Engines opened and free for the next blocking call.
    pool: Mutex<Vec<Engine>>,
    /// Attach connections made to created instances, handed to their monitor at start.
    pub pending: Mutex<HashMap<String, Vec<OwnedFd>>>,
    /// Exit statuses of the monitors this server started, by instance id (kept after
    /// an `AutoRemove` instance is gone, for `wait?condition=removed`).
    pub exits: Mutex<HashMap<String, i32>>,
    /// The execs created through this server.
    pub execs: Mutex<exec::Execs>,
    /// Bumped when an instance this server started ends.
    pub changed: tokio::sync::watch::Sender<u64>,
    /// A monitor started ahead of the next start (see `vessel_engine::monitor::Standby`).
    pub standby: Mutex<Option<vessel_engine::monitor::Standby>>,
}

impl State {
    /// Starts a standby monitor for the next start, in the background, unless one is
    /// waiting already.
    pub fn replenish(self: &Arc<Self>) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("standby".into())
            .spawn(move || {
                let mut slot = me.standby.lock().unwrap_or_else(|e| e.into_inner());
                if slot.as_ref().is_some_and(|s| s.alive()) {
                    return;
                }
                match vessel_engine::monitor::spawn_standby(&me.config) {
                    Ok(s) => *slot = Some(s),
                    Err(e) => tracing::warn!(error = %e, "cannot start a standby monitor"),
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread for a standby monitor");
        }
    }

    /// Runs `f` with an engine on the blocking pool.
    pub async fn engine<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken = me.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let engine = match taken {
                Some(e) => e,
                None => Engine::open(&me.config)?,
            };
            let r = f(&engine);
            let mut pool = me.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < 4 {
                pool.push(engine);
            }
            r
        })
        .await
        .map_err(|e| ApiError::Internal(format!("engine call failed: {e}")))?
    }

    /// Runs `f` with an engine of its own, dropped afterwards: for a removal, whose
    /// trashed directories the engine deletes when dropped.
    pub async fn engine_once<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || f(&Engine::open(&config)?))
            .await
            .map_err(|e| ApiError::Internal(format!("engine call failed: {e}")))?
    }
}

/// Serves the API on `opts.socket` until SIGINT or SIGTERM.
pub fn serve(config: EngineConfig, opts: &ServeOptions) -> Result<(), ApiError> {
    let setup = |what: String| move |source| ApiError::Setup { what, source };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .map_err(setup("start the runtime".into()))?;
    rt.block_on(async move {
        let listener = system::bind(opts)?;
        match &opts.listen {
            Listen::Path(p) => {
                tracing::info!(socket = %p.display(), "serving the Docker Engine API")
            }
            Listen::Systemd => {
                tracing::info!("serving the Docker Engine API on the socket systemd passed")
            }
        }
        let state = Arc::new(State {
            config,
            pool: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            exits: Mutex::new(HashMap::new()),
            execs: Mutex::new(exec::Execs::default()),
            changed: tokio::sync::watch::channel(0).0,
            standby: Mutex::new(None),
        });
        state.replenish();
        // Instances whose restart policy says they run whenever the engine does (the
        // host rebooted, or their monitors were killed): started again now.
        let config = state.config.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(engine) = Engine::open(&config) {
                let started = engine.start_by_policy();
                if !started.is_empty() {
                    tracing::info!(?started, "started by their restart policy");
                }
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(setup("handle SIGTERM".into()))?;
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            };
            let Ok((stream, _)) = conn else { continue };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(state, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(64 * 1024)
                    .serve_connection(io, svc)
                    .with_upgrades()
                    .await;
            });
        }
        // systemd's socket stays: its unit owns it.
        if let Listen::Path(p) = &opts.listen {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    })
}

/// The path without its `/vX.Y` prefix, after checking that version.
fn unversioned(path: &str) -> Result<&str, ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let (ver, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let parse = |v: &str| -> Option<(u32, u32)> {
        let (a, b) = v.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let Some(v) = parse(ver) else {
        return Ok(path); // not a version: a path that happens to start with /v
    };
    let max = parse(API_VERSION).unwrap_or((1, 47));
    let min = parse(MIN_API_VERSION).unwrap_or((1, 12));
    if v > max {
        return Err(ApiError::BadRequest(format!(
            "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if v < min {
        return Err(ApiError::BadRequest(format!(
            "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(if tail.is_empty() { "/" } else { tail })
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    tracing::debug!(%method, %path, "request");
    let began = std::time::Instant::now();
    let r = match unversioned(&path) {
        Ok(p) => dispatch(state, req, &method, p).await,
        Err(e) => Err(e),
    };
    let mut resp = r.unwrap_or_else(|e| {
        if e.status().is_server_error() {
            tracing::warn!(%method, %path, error = %e, "request failed");
        }
        http::error(&e)
    });
    tracing::debug!(%method, %path, status = resp.status().as_u16(), took = ?began.elapsed(), "answered");
    let h = resp.headers_mut();
    h.insert(
        "Api-Version",
        hyper::header::HeaderValue::from_static(API_VERSION),
    );
    h.insert("Server", hyper::header::HeaderValue::from_static("vessel"));
    h.insert("Ostype", hyper::header::HeaderValue::from_static("linux"));
    resp
}

async fn dispatch(
    state: Arc<State>,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(system::ping(method)),
        (&Method::GET, ["version"]) => Ok(system::version()),
        (&Method::GET, ["info"]) => system::info(&state).await,
        (&Method::POST, ["containers", "create"]) => containers::create(&state, req).await,
        (&Method::GET, ["containers", "json"]) => containers::list(&state, &req).await,
        (&Method::GET, ["containers", id, "json"]) => containers::inspect(&state, id).await,
        (&Method::POST, ["containers", id, "start"]) => containers::start(&state, id).await,
        (&Method::POST, ["containers", id, "stop"]) => {
            containers::stop(&state, &req, id, false).await
        }
        (&Method::POST, ["containers", id, "restart"]) => {
            containers::stop(&state, &req, id, true).await
        }
        (&Method::POST, ["containers", id, "kill"]) => containers::kill(&state, &req, id).await,
        (&Method::POST, ["containers", id, "pause"]) => containers::pause(&state, id, true).await,
        (&Method::POST, ["containers", id, "unpause"]) => {
            containers::pause(&state, id, false).await
        }
        (&Method::POST, ["containers", id, "rename"]) => containers::rename(&state, &req, id).await,
        (&Method::POST, ["containers", id, "resize"]) => containers::resize(&state, &req, id).await,
        (&Method::GET, ["containers", id, "top"]) => containers::top(&state, &req, id).await,
        (&Method::HEAD, ["containers", id, "archive"]) => archive::head(&state, &req, id).await,
        (&Method::GET, ["containers", id, "archive"]) => archive::get(&state, &req, id).await,
        (&Method::PUT, ["containers", id, "archive"]) => archive::put(&state, req, id).await,
        (&Method::GET, ["containers", id, "export"]) => archive::export(&state, id).await,
        (&Method::GET, ["containers", id, "stats"]) => usage::stats(&state, &req, id).await,
        (&Method::POST, ["containers", id, "update"]) => usage::update(&state, req, id).await,
        (&Method::POST, ["containers", id, "wait"]) => streams::wait(&state, &req, id).await,
        (&Method::DELETE, ["containers", id]) => containers::remove(&state, &req, id).await,
        (&Method::GET, ["containers", id, "logs"]) => streams::logs(&state, &req, id).await,
        (&Method::POST, ["containers", id, "attach"]) => streams::attach(&state, req, id).await,
        (&Method::POST, ["containers", id, "exec"]) => exec::create(&state, req, id).await,
        (&Method::POST, ["exec", id, "start"]) => exec::start(&state, req, id).await,
        (&Method::POST, ["exec", id, "resize"]) => exec::resize(&state, &req, id).await,
        (&Method::GET, ["exec", id, "json"]) => exec::inspect(&state, id).await,
        (&Method::GET, ["images", "json"]) => images::list(&state).await,
        (&Method::GET, ["images", "get"]) => images::save(&state, &req, None).await,
        (&Method::POST, ["images", "load"]) => images::load(&state, req).await,
        (&Method::POST, ["images", "prune"]) => images::prune(&state, &req).await,
        (&Method::POST, ["containers", "prune"]) => containers::prune(&state, &req).await,
        (&Method::GET, [_images, name @ .., "history"])
            if parts[0] == "images" && !name.is_empty() =>
        {
            images::history(&state, &name.join("/")).await
        }
        (&Method::GET, [_images, name @ .., "get"]) if parts[0] == "images" && !name.is_empty() => {
            images::save(&state, &req, Some(&name.join("/"))).await
        }
        (&Method::POST, [_images, name @ .., "push"])
            if parts[0] == "images" && !name.is_empty() =>
        {
            images::push(&state, &req, &name.join("/")).await
        }
        (&Method::POST, ["images", "create"]) => images::pull(&state, &req).await,
        (&Method::POST, ["auth"]) => images::auth(req).await,
        (&Method::POST, ["commit"]) => images::commit(&state, req).await,
        (&Method::GET, [_images, name @ .., "json"])
            if parts[0] == "images" && !name.is_empty() =>
        {
            images::inspect(&state, &name.join("/")).await
        }
        (&Method::POST, [_images, name @ .., "tag"])
            if parts[0] == "images" && !name.is_empty() =>
        {
            images::tag(&state, &req, &name.join("/")).await
        }
        (&Method::DELETE, [_images, name @ ..]) if parts[0] == "images" && !name.is_empty() => {
            images::remove(&state, &req, &name.join("/")).await
        }
        (&Method::GET, ["networks"]) => networks::list(&state, &req).await,
        (&Method::POST, ["networks", "create"]) => networks::create(&state, req).await,
        (&Method::POST, ["networks", "prune"]) => networks::prune(&state, &req).await,
        (&Method::GET, ["networks", id]) => networks::inspect(&state, id).await,
        (&Method::DELETE, ["networks", id]) => networks::remove(&state, id).await,
        (&Method::POST, ["networks", id, "connect"]) => networks::connect(&state, req, id).await,
        (&Method::POST, ["networks", id, "disconnect"]) => {
            networks::disconnect(&state, req, id).await
        }
        (&Method::GET, ["events"]) => events::events(&state, &req).await,
        (&Method::GET, ["volumes"]) => volumes::list(&state, &req).await,
        (&Method::POST, ["volumes", "create"]) => volumes::create(&state, req).await,
        (&Method::POST, ["volumes", "prune"]) => volumes::prune(&state, &req).await,
        (&Method::GET, ["volumes", name]) => volumes::inspect(&state, name).await,
        (&Method::DELETE, ["volumes", name]) => volumes::remove(&state, &req, name).await,
        _ if known_unimplemented(&parts) => {
            drain(req).await;
            Err(ApiError::NotImplemented(format!("{method} {path}")))
        }
        _ => {
            drain(req).await;
            Err(ApiError::NotFound(format!(
                "page not found: {method} {path}"
            )))
        }
    }
}

/// Reads (up to the body cap) and drops the body of a request answered without it: a
/// client still sending it when the answer came would find the connection closed
/// (the docker CLI sends its body after its headers, and then reports a broken pipe
/// instead of the answer).
async fn drain(req: Request<Incoming>) {
    let _ = http::body(req).await;
}

/// Whether `parts` names an Engine API endpoint vessel does not implement (a 501, not a
/// 404: the client asked for something real).
fn known_unimplemented(parts: &[&str]) -> bool {
    const TOP: &[&str] = &[
        "build",
        "swarm",
        "services",
        "nodes",
        "tasks",
        "secrets",
        "configs",
        "plugins",
        "system",
        "session",
        "distribution",
        "auth",
        "grpc",
    ];
    const CONTAINER: &[&str] = &["changes", "stats", "update"];
    match parts {
        [top, ..] if TOP.contains(top) => true,
        ["images", "search"] => true,
        ["containers", _, op, ..] if CONTAINER.contains(op) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_stripped_and_checked() {
        assert_eq!(
            unversioned("/v1.41/containers/json").unwrap(),
            "/containers/json"
        );
        assert_eq!(unversioned("/_ping").unwrap(), "/_ping");
        assert_eq!(unversioned("/v1.47/_ping").unwrap(), "/_ping");
        let e = unversioned("/v1.99/info").unwrap_err().to_string();
        assert!(e.contains("too new") && e.contains(API_VERSION), "{e}");
        assert!(unversioned("/v1.11/info")
            .unwrap_err()
            .to_string()
            .contains("too old"));
        assert_eq!(unversioned("/volumes").unwrap(), "/volumes");
    }

    #[test]
    fn tcp_is_refused_and_unix_paths_taken() {
        assert_eq!(
            parse_host("unix:///tmp/x.sock").unwrap(),
            Listen::Path(PathBuf::from("/tmp/x.sock"))
        );
        assert_eq!(parse_host("fd://").unwrap(), Listen::Systemd);
        assert!(parse_host("fd://vessel.socket").is_err());
        let e = parse_host("tcp://0.0.0.0:2375").unwrap_err().to_string();
        assert!(
            e.contains("tcp://0.0.0.0:2375") && e.contains("Unix socket"),
            "{e}"
        );
        assert!(parse_host("unix://relative").is_err());
    }
}
