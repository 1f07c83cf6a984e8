//! Volumes: list, create, inspect, remove and prune, over the engine's named volumes.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::http::{self, Body};
use crate::{ApiError, State};

/// `POST /volumes/create`'s body: the fields Docker sends.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
    cluster_volume_spec: Option<serde_json::Value>,
}

/// The `filters` query parameter, refused unless empty: vessel filters no volume list.
fn no_filters(req: &Request<Incoming>, what: &str) -> Result<Option<serde_json::Value>, ApiError> {
    match http::query(req).get("filters") {
        None | Some("") | Some("{}") => Ok(None),
        Some(f) => serde_json::from_str(f)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(format!("invalid filters for {what}: {e}"))),
    }
}

/// `GET /volumes`.
pub async fn list(state: &Arc<State>, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    if let Some(f) = no_filters(req, "GET /volumes")? {
        return Err(ApiError::BadRequest(format!(
            "filters {f} are not supported on GET /volumes"
        )));
    }
    let v = state.engine(|e| Ok(e.volumes().list()?)).await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({ "Volumes": v, "Warnings": [] }),
    ))
}

/// `POST /volumes/create`.
pub async fn create(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body = http::body(req).await?;
    let b: Option<CreateBody> = http::parse_json(&body)?;
    let b = b.unwrap_or_default();
    if let Some(d) = b
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(ApiError::BadRequest(format!(
            "volume driver {d:?} is not supported: vessel has only the local driver"
        )));
    }
    if b.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::BadRequest(
            "DriverOpts are not supported: vessel's local driver takes no options".into(),
        ));
    }
    if b.cluster_volume_spec.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::BadRequest(
            "ClusterVolumeSpec is not supported (no swarm)".into(),
        ));
    }
    let name = b.name.filter(|n| !n.is_empty());
    let labels = b.labels.unwrap_or_default();
    let v = state
        .engine(move |e| Ok(e.volume_create(name.as_deref(), labels)?))
        .await?;
    Ok(http::json(StatusCode::CREATED, &v))
}

/// `GET /volumes/{name}`.
pub async fn inspect(state: &Arc<State>, name: &str) -> Result<Response<Body>, ApiError> {
    let name = name.to_string();
    let v = state
        .engine(move |e| Ok(e.volumes().inspect(&name)?))
        .await?;
    Ok(http::json(StatusCode::OK, &v))
}

/// `DELETE /volumes/{name}?force=`: `force` makes a missing volume no error.
pub async fn remove(
    state: &Arc<State>,
    req: &Request<Incoming>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let force = http::query(req).flag("force");
    let name = name.to_string();
    state
        .engine(move |e| match e.volume_remove(&name) {
            Err(vessel_engine::EngineError::NoSuchVolume(_)) if force => Ok(()),
            r => Ok(r?),
        })
        .await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// `POST /volumes/prune`: anonymous volumes no instance uses, every unused one with the
/// filter `all=true` (API 1.42's rule).
pub async fn prune(
    state: &Arc<State>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let mut all = false;
    if let Some(f) = no_filters(req, "POST /volumes/prune")? {
        let obj = f.as_object().cloned().unwrap_or_default();
        for (k, v) in obj {
            let values: Vec<String> = match &v {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                serde_json::Value::Object(o) => o.keys().cloned().collect(),
                _ => Vec::new(),
            };
            match (k.as_str(), values.as_slice()) {
                ("all", [v]) if v == "true" || v == "1" => all = true,
                ("all", [v]) if v == "false" || v == "0" => all = false,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "filter {k}={v} is not supported on volume prune (only all=true|false)"
                    )))
                }
            }
        }
    }
    let (names, bytes) = state.engine(move |e| Ok(e.volume_prune(all)?)).await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({ "VolumesDeleted": names, "SpaceReclaimed": bytes }),
    ))
}
