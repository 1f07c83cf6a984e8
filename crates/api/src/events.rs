//! `GET /events`: the engine's event log (see `vessel_engine::events`), streamed.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::containers::filters;
use crate::http::{self, Body};
use crate::{ApiError, State};

/// `GET /events?since=&until=&filters=`: the engine's event log as a stream of JSON
/// objects; without `until`, it follows until the client goes.
pub async fn events(
    state: &Arc<State>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let now = chrono::Utc::now();
    let time = |k: &str| -> Result<Option<i64>, ApiError> {
        match q.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => vessel_engine::events::parse_time(v, now)
                .map(Some)
                .map_err(|e| ApiError::BadRequest(format!("{k}: {e}"))),
        }
    };
    let (since, until) = (time("since")?, time("until")?);
    let f = filters(q.get("filters"), vessel_engine::events::FILTER_KEYS)?;
    let root = state.config.root.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        vessel_engine::events::watch(
            &root,
            since,
            until,
            &f,
            || !tx.is_closed(),
            |ev| match serde_json::to_vec(ev) {
                Ok(mut line) => {
                    line.push(b'\n');
                    tx.blocking_send(Bytes::from(line)).is_ok()
                }
                Err(_) => true,
            },
        );
    });
    Ok(http::streamed(StatusCode::OK, "application/json", rx))
}
