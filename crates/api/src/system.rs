//! The socket, `/_ping`, `/version`, `/info`.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use hyper::{Method, Response, StatusCode};
use serde_json::json;

use crate::http::{self, Body};
use crate::{ApiError, Listen, ServeOptions, State, API_VERSION, MIN_API_VERSION};

/// The API socket: systemd's ([`systemd_socket`]), or one bound at the path: root's,
/// mode 0660 with `opts.group` as its group, else 0600. A stale socket (nobody listening)
/// is replaced; a live one is an error.
pub fn bind(opts: &ServeOptions) -> Result<tokio::net::UnixListener, ApiError> {
    let path = match &opts.listen {
        Listen::Path(p) => p,
        Listen::Systemd => return systemd_socket(),
    };
    let setup = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| ApiError::Setup { what, source }
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ApiError::Setup {
                what: format!("listen on {}", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server is listening there",
                ),
            });
        }
        std::fs::remove_file(path).map_err(setup("remove the stale socket"))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(setup("create the directory of"))?;
    }
    // Nobody but root may connect between bind and chmod.
    // SAFETY: umask(2) only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring it.
    unsafe { libc::umask(old) };
    let l = bound.map_err(setup("listen on"))?;
    if let Some(gid) = opts.group {
        std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(setup("chown"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(setup("chmod"))?;
    }
    l.set_nonblocking(true).map_err(setup("listen on"))?;
    tokio::net::UnixListener::from_std(l).map_err(setup("listen on"))
}

/// The first descriptor systemd passes (`sd_listen_fds`'s `SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The listening socket systemd passed this process: `LISTEN_PID` names it, `LISTEN_FDS`
/// is 1, and descriptor 3 is a listening Unix stream socket. Anything else is refused with
/// what was found.
fn systemd_socket() -> Result<tokio::net::UnixListener, ApiError> {
    use nix::sys::socket::{
        getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
    };
    let refuse = |why: String| ApiError::Setup {
        what: "-H fd://".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
    };
    let var = |k: &str| std::env::var(k).ok();
    let (pid, fds) = (var("LISTEN_PID"), var("LISTEN_FDS"));
    if pid.as_deref() != Some(std::process::id().to_string().as_str()) {
        return Err(refuse(format!(
            "systemd passed this process no socket (LISTEN_PID={}, this is {}): start it from a socket unit (deploy/vessel.socket)",
            pid.as_deref().unwrap_or("unset"),
            std::process::id()
        )));
    }
    if fds.as_deref() != Some("1") {
        return Err(refuse(format!(
            "LISTEN_FDS={}: vessel serve listens on exactly one socket",
            fds.as_deref().unwrap_or("unset")
        )));
    }
    // SAFETY: descriptor 3 is ours by systemd's protocol (checked above); it is borrowed
    // only for the checks below, before it is owned.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(LISTEN_FDS_START) };
    let unix_stream = getsockname::<SockaddrStorage>(LISTEN_FDS_START)
        .ok()
        .is_some_and(|a| a.family() == Some(AddressFamily::Unix))
        && getsockopt(&fd, sockopt::SockType).ok() == Some(SockType::Stream);
    if !unix_stream || getsockopt(&fd, sockopt::AcceptConn).ok() != Some(true) {
        return Err(refuse(
            "descriptor 3 is not a listening Unix stream socket (ListenStream=/run/vessel.sock in the socket unit)".into(),
        ));
    }
    // The processes the server starts (monitors, helpers) must not hold it.
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| refuse(format!("descriptor 3: {e}")))?;
    // SAFETY: descriptor 3 is a listening Unix socket passed to this process (checked
    // above), owned from here on by the listener alone.
    let l = unsafe {
        <std::os::unix::net::UnixListener as std::os::fd::FromRawFd>::from_raw_fd(LISTEN_FDS_START)
    };
    l.set_nonblocking(true)
        .map_err(|e| refuse(format!("descriptor 3: {e}")))?;
    tokio::net::UnixListener::from_std(l).map_err(|e| refuse(format!("descriptor 3: {e}")))
}

/// `/_ping`: `OK`, with the API version in the headers (HEAD: headers only).
pub fn ping(method: &Method) -> Response<Body> {
    let mut r = if method == Method::HEAD {
        http::empty(StatusCode::OK)
    } else {
        http::whole(StatusCode::OK, "text/plain; charset=utf-8", "OK")
    };
    let h = r.headers_mut();
    h.insert(
        "Cache-Control",
        hyper::header::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(
        "Pragma",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    h.insert(
        "Builder-Version",
        hyper::header::HeaderValue::from_static("1"),
    );
    r
}

/// `/version`.
pub fn version() -> Response<Body> {
    let v = env!("CARGO_PKG_VERSION");
    http::json(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "vessel"},
            "Components": [{"Name": "Engine", "Version": v, "Details": {
                "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux", "Arch": "amd64", "KernelVersion": vessel_engine::info::kernel_version(),
            }}],
            "Version": v,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": vessel_engine::info::kernel_version(),
            "BuildTime": "",
        }),
    )
}

/// `/info`: counts, the runtimes (`runc`/`vessel` run containers, `vessel-vm` microVMs).
pub async fn info(state: &Arc<State>) -> Result<Response<Body>, ApiError> {
    let doc: serde_json::Value = state.engine(|e| Ok(e.info()?)).await?;
    Ok(http::json(StatusCode::OK, &doc))
}
