//! `docker cp` and `docker export` over the Engine API: `HEAD`, `GET` and `PUT
//! /containers/{id}/archive` and `GET /containers/{id}/export`, on the engine's copy
//! helpers, which resolve every path inside the container, running or stopped.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use vessel_engine::EngineError;

use crate::http::{self, Body};
use crate::{ApiError, State};

/// The stat header Docker's clients read.
const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// Docker's answers to a path the copy cannot use: a missing one is a 404.
fn path_error<'a>(id: &'a str, path: &'a str) -> impl Fn(EngineError) -> ApiError + 'a {
    move |e| match e {
        EngineError::InvalidFlag(m) if m.contains("no such") => {
            ApiError::NotFound(format!("Could not find the file {path} in container {id}"))
        }
        EngineError::InvalidFlag(m) => ApiError::BadRequest(m),
        e => ApiError::from(e),
    }
}

fn path_param(req: &Request<Incoming>) -> Result<String, ApiError> {
    match http::query(req).get("path") {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(ApiError::BadRequest(
            "path: a path in the container is required".into(),
        )),
    }
}

/// The path's stat (see `vessel_engine::copy::stat`).
async fn stat_of(state: &Arc<State>, id: &str, path: &str) -> Result<serde_json::Value, ApiError> {
    let (id2, path2) = (id.to_string(), path.to_string());
    state
        .engine(move |e| {
            let inst = e.get(&id2)?;
            e.stat_path(&inst, &path2).map_err(path_error(&id2, &path2))
        })
        .await
}

/// `r` with the stat in its header (base64 of the JSON).
fn with_stat(mut r: Response<Body>, stat: &serde_json::Value) -> Response<Body> {
    let value = base64::engine::general_purpose::STANDARD.encode(stat.to_string());
    if let Ok(v) = value.parse() {
        r.headers_mut().insert(STAT_HEADER, v);
    }
    r
}

/// `HEAD /containers/{id}/archive?path=P`: the path's stat, in the header.
pub async fn head(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let path = path_param(req)?;
    let stat = stat_of(state, id, &path).await?;
    Ok(with_stat(http::empty(StatusCode::OK), &stat))
}

/// Streams a tar of `path` in container `id` (its stat checked first, so that a missing
/// path is a 404 before any byte).
fn stream_tar(state: &Arc<State>, id: &str, path: String) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let (state, id) = (state.clone(), id.to_string());
    tokio::spawn(async move {
        let copied = state
            .engine(move |e| {
                let inst = e.get(&id)?;
                let mut w = std::io::BufWriter::with_capacity(256 * 1024, http::ChunkWriter(tx));
                e.copy_out(&inst, &path, &mut w)?;
                std::io::Write::flush(&mut w)
                    .map_err(|e| ApiError::Internal(format!("send the archive: {e}")))
            })
            .await;
        // The client sees a cut-off archive (its tar reader says so); the log says why.
        if let Err(e) = copied {
            tracing::warn!(error = %e, "archive");
        }
    });
    http::streamed(StatusCode::OK, "application/x-tar", rx)
}

/// `GET /containers/{id}/archive?path=P`: a tar of the path, its stat in the header.
pub async fn get(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let path = path_param(req)?;
    let stat = stat_of(state, id, &path).await?;
    Ok(with_stat(stream_tar(state, id, path), &stat))
}

/// `GET /containers/{id}/export`: the container's whole file system as a tar.
pub async fn export(state: &Arc<State>, id: &str) -> Result<Response<Body>, ApiError> {
    let id2 = id.to_string();
    state.engine(move |e| Ok(e.get(&id2).map(|_| ())?)).await?;
    Ok(stream_tar(state, id, "/.".into()))
}

/// `PUT /containers/{id}/archive?path=DIR`: the body, a tar, extracted into the
/// directory `DIR` of the container. The archive's owners are not taken (`copyUIDGID`,
/// `docker cp -a`, is refused); a file never replaces a directory nor the reverse
/// (`noOverwriteDirNonDir`, which Docker's client always sets, is what vessel does).
pub async fn put(
    state: &Arc<State>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let path = path_param(&req)?;
    let q = http::query(&req);
    if q.flag("copyUIDGID") {
        return Err(ApiError::BadRequest(
            "copyUIDGID (docker cp -a) is not supported: vessel does not take owners from an archive".into(),
        ));
    }
    let mode = stat_of(state, id, &path).await?["mode"]
        .as_u64()
        .unwrap_or(0);
    if mode & (1 << 31) == 0 {
        return Err(ApiError::BadRequest(format!(
            "extraction point is not a directory: {path}"
        )));
    }
    let mut reader = http::ChunkReader::of_body(req);
    let id2 = id.to_string();
    state
        .engine(move |e| {
            let inst = e.get(&id2)?;
            e.copy_in(&inst, &path, false, &mut reader)
                .map_err(path_error(&id2, &path))
        })
        .await?;
    Ok(http::empty(StatusCode::OK))
}
