//! Networks: list, inspect, create, remove, prune over the engine's bridge networks, and
//! connecting containers to them and disconnecting them.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use vessel_engine::networks::NetworkCreate;

use crate::containers::{filters, Fields};
use crate::http::{self, Body};
use crate::{ApiError, State};

/// Docker's predefined networks beside the bridge, which vessel also has (`--network
/// host|none`): listed and inspectable, never created or removed.
const PREDEFINED: &[(&str, &str)] = &[("host", "host"), ("none", "null")];

fn predefined_id(name: &str) -> String {
    // Stable ids: the name's bytes, hex, padded.
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0<64}")
}

fn predefined(name: &str, driver: &str) -> Value {
    json!({
        "Name": name, "Id": predefined_id(name), "Created": "0001-01-01T00:00:00Z",
        "Scope": "local", "Driver": driver, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": {}, "Options": {}, "Labels": {},
    })
}

/// Whether a network document passes list filters (`name`, `id`, `driver`, `label`,
/// `type`).
fn passes(d: &Value, f: &[(String, Vec<String>)]) -> bool {
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    vessel_engine::filters::passes(f, |k, v| match k {
        "name" => s("Name").contains(v),
        "id" => s("Id").starts_with(v),
        "driver" => s("Driver") == v,
        "type" => match v {
            "builtin" => matches!(s("Name").as_str(), "bridge" | "host" | "none"),
            "custom" => !matches!(s("Name").as_str(), "bridge" | "host" | "none"),
            _ => false,
        },
        "label" => vessel_engine::filters::label_with(|lk| d["Labels"][lk].as_str(), v),
        _ => false,
    })
}

/// `GET /networks?filters=`.
pub async fn list(state: &Arc<State>, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let f = filters(q.get("filters"), &["name", "id", "driver", "label", "type"])?;
    let mut docs = state
        .engine(|e| {
            let mut out = Vec::new();
            for n in e.networks().list()? {
                let (net, peers) = e.networks().inspect(&n.name)?;
                out.push(e.network_document(&net, &peers));
            }
            Ok(out)
        })
        .await?;
    docs.extend(PREDEFINED.iter().map(|(n, d)| predefined(n, d)));
    docs.retain(|d| passes(d, &f));
    Ok(http::json(StatusCode::OK, &docs))
}

/// `GET /networks/{id}`.
pub async fn inspect(state: &Arc<State>, key: &str) -> Result<Response<Body>, ApiError> {
    if let Some((n, d)) = PREDEFINED
        .iter()
        .find(|(n, _)| *n == key || predefined_id(n) == key)
    {
        return Ok(http::json(StatusCode::OK, &predefined(n, d)));
    }
    let key = key.to_string();
    let d = state
        .engine(move |e| {
            let (net, peers) = e.network_find(&key).map_err(not_found(&key))?;
            Ok(e.network_document(&net, &peers))
        })
        .await?;
    Ok(http::json(StatusCode::OK, &d))
}

fn not_found(key: &str) -> impl FnOnce(vessel_engine::EngineError) -> ApiError + '_ {
    move |e| match e {
        vessel_engine::EngineError::Network(vessel_network::Error::NoSuchNetwork(_)) => {
            ApiError::NotFound(format!("network {key} not found"))
        }
        e => e.into(),
    }
}

/// `POST /networks/create`.
pub async fn create(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let v = http::object_body(req).await?;
    let mut f = Fields::new("", Some(v))?;
    let name = f
        .nonempty("Name")?
        .ok_or_else(|| ApiError::BadRequest("Name: a network needs a name".into()))?;
    if PREDEFINED.iter().any(|(n, _)| *n == name) || name == "bridge" {
        return Err(ApiError::Forbidden(format!(
            "{name} is a pre-defined network and cannot be created"
        )));
    }
    f.only_default("Driver", &[json!("bridge")])?;
    // Docker checks duplicates always since API 1.44; so does vessel.
    f.boolean("CheckDuplicate")?;
    f.only_default("Scope", &[json!("local")])?;
    // Any container may join a local bridge network: Attachable is recorded and shown.
    let attachable = f.boolean("Attachable")?;
    for k in [
        "Internal",
        "Ingress",
        "EnableIPv6",
        "ConfigOnly",
        "ConfigFrom",
    ] {
        f.only_default(k, &[])?;
    }
    let mut labels = BTreeMap::new();
    for (k, v) in f.object("Labels")? {
        match v {
            Value::String(s) => {
                labels.insert(k, s);
            }
            v => {
                return Err(ApiError::BadRequest(format!(
                    "Labels.{k}: expected a string, got {v}"
                )))
            }
        }
    }
    let mut options = BTreeMap::new();
    for (k, v) in f.object("Options")? {
        match v {
            Value::String(s) => {
                options.insert(k, s);
            }
            v => {
                return Err(ApiError::BadRequest(format!(
                    "Options.{k}: expected a string, got {v}"
                )))
            }
        }
    }
    let mut subnet = None;
    if let Some(ipam) = f.take("IPAM") {
        let mut i = Fields::new("IPAM", Some(ipam))?;
        i.only_default("Driver", &[json!("default")])?;
        i.only_default("Options", &[])?;
        if let Some(Value::Array(configs)) = i.take("Config") {
            if configs.len() > 1 {
                return Err(ApiError::BadRequest(
                    "IPAM.Config: vessel takes one subnet per network".into(),
                ));
            }
            for c in configs {
                let mut c = Fields::new("IPAM.Config[]", Some(c))?;
                subnet = c.nonempty("Subnet")?;
                if let Some(gw) = c.nonempty("Gateway")? {
                    // vessel's gateway is the subnet's first address; another is refused.
                    let want = subnet
                        .as_deref()
                        .and_then(|s| s.parse::<vessel_network::Subnet>().ok())
                        .map(|s| s.gateway().to_string());
                    if want.as_deref() != Some(gw.as_str()) {
                        return Err(ApiError::BadRequest(format!(
                            "IPAM.Config[].Gateway = {gw} is not supported: vessel's gateway is the subnet's first address"
                        )));
                    }
                }
                c.finish()?;
            }
        }
        i.finish()?;
    }
    f.finish()?;
    let req = NetworkCreate {
        name,
        subnet,
        mtu: None,
        options,
        labels,
        attachable,
    };
    let net = state
        .engine(move |e| match e.network_create(&req) {
            Err(vessel_engine::EngineError::Network(vessel_network::Error::NetworkExists(n))) => {
                Err(ApiError::Conflict(format!(
                    "network with name {n} already exists"
                )))
            }
            Err(vessel_engine::EngineError::Network(
                e @ (vessel_network::Error::SubnetOverlap(..)
                | vessel_network::Error::HostOverlap(..)),
            )) => Err(ApiError::Forbidden(e.to_string())),
            r => Ok(r?),
        })
        .await?;
    Ok(http::json(
        StatusCode::CREATED,
        &json!({ "Id": net.id, "Warning": "" }),
    ))
}

/// `DELETE /networks/{id}`.
pub async fn remove(state: &Arc<State>, key: &str) -> Result<Response<Body>, ApiError> {
    if key == "bridge" || PREDEFINED.iter().any(|(n, _)| *n == key) {
        return Err(ApiError::Forbidden(format!(
            "{key} is a pre-defined network and cannot be removed"
        )));
    }
    let key = key.to_string();
    state
        .engine(move |e| match e.network_remove(&key) {
            Err(vessel_engine::EngineError::Network(
                e @ vessel_network::Error::NetworkInUse(..),
            )) => Err(ApiError::Forbidden(format!(
                "error while removing network: {e}"
            ))),
            r => r.map(drop).map_err(not_found(&key)),
        })
        .await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// `POST /networks/prune`.
pub async fn prune(
    state: &Arc<State>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let f = filters(http::query(req).get("filters"), &[])?;
    if !f.is_empty() {
        return Err(ApiError::BadRequest(
            "filters are not supported on network prune".into(),
        ));
    }
    let names = state.engine(|e| Ok(e.network_prune()?)).await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({ "NetworksDeleted": names }),
    ))
}

/// `POST /networks/{id}/connect`: `{"Container": ..., "EndpointConfig": {"Aliases":
/// [...], "IPAMConfig": {"IPv4Address": ...}}}`. Links, a MAC address and v6 or
/// link-local addresses are refused.
pub async fn connect(
    state: &Arc<State>,
    req: Request<Incoming>,
    key: &str,
) -> Result<Response<Body>, ApiError> {
    let parse = |f: &mut Fields<'_>| {
        let ep = f.take("EndpointConfig").unwrap_or_default();
        crate::containers::endpoint(ep, "EndpointConfig")
    };
    membership(
        state,
        req,
        key,
        "connected to",
        parse,
        |e, net, c, (aliases, ip)| e.network_connect(net, c, &aliases, ip),
    )
    .await
}

/// `POST /networks/{id}/disconnect`: `{"Container": ..., "Force": bool}`. With `Force`,
/// a failure to take the interface down does not keep the container on the network.
pub async fn disconnect(
    state: &Arc<State>,
    req: Request<Incoming>,
    key: &str,
) -> Result<Response<Body>, ApiError> {
    let parse = |f: &mut Fields<'_>| f.boolean("Force");
    membership(
        state,
        req,
        key,
        "disconnected from",
        parse,
        |e, net, c, force| e.network_disconnect(net, c, force),
    )
    .await
}

/// A change of a container's networks: the body's `Container` and what `parse` takes
/// of the rest (nothing else may be set), then `op` on the engine.
async fn membership<T: Send + 'static>(
    state: &Arc<State>,
    req: Request<Incoming>,
    key: &str,
    what: &str,
    parse: impl FnOnce(&mut Fields<'_>) -> Result<T, ApiError>,
    op: impl FnOnce(
            &vessel_engine::Engine,
            &str,
            &str,
            T,
        ) -> vessel_engine::Result<vessel_engine::catalogue::Instance>
        + Send
        + 'static,
) -> Result<Response<Body>, ApiError> {
    let v = http::object_body(req).await?;
    let mut f = Fields::new("", Some(v))?;
    let container = container_field(&mut f)?;
    let arg = parse(&mut f)?;
    f.finish()?;
    let key = predefined_guard(key, what)?;
    state
        .engine(move |e| op(e, &key, &container, arg).map(drop).map_err(attach_error))
        .await?;
    Ok(http::empty(StatusCode::OK))
}

fn container_field(f: &mut Fields<'_>) -> Result<String, ApiError> {
    f.nonempty("Container")?
        .ok_or_else(|| ApiError::BadRequest("Container: which container is missing".into()))
}

/// `host` and `none` are not networks a container joins or leaves after create (Docker's
/// words for `host`).
fn predefined_guard(key: &str, what: &str) -> Result<String, ApiError> {
    match PREDEFINED.iter().find(|(n, _)| *n == key || predefined_id(n) == key) {
        Some(("host", _)) => Err(ApiError::BadRequest(
            "container cannot be disconnected from host network or connected to host network"
                .into(),
        )),
        Some((n, _)) => Err(ApiError::BadRequest(format!(
            "a container cannot be {what} the {n} network after it is created (docker run --network {n})"
        ))),
        None => Ok(key.to_string()),
    }
}

/// Docker's statuses for connect and disconnect: already on the network 403, not on it
/// 500 (as Docker's plain error), no such container or network 404.
fn attach_error(e: vessel_engine::EngineError) -> ApiError {
    match e {
        vessel_engine::EngineError::Network(e @ vessel_network::Error::AlreadyAttached(..)) => {
            ApiError::Forbidden(e.to_string())
        }
        vessel_engine::EngineError::Network(e @ vessel_network::Error::TooManyNetworks(..)) => {
            ApiError::BadRequest(e.to_string())
        }
        e => e.into(),
    }
}
