//! Images: list, inspect, tag, remove, and create (pull, answered in Docker's progress
//! JSON stream).

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use vessel_image::{ImageRecord, Reference};

use crate::http::{self, Body};
use crate::{ApiError, State};

fn unix_time(t: &Option<String>) -> i64 {
    t.as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |d| d.timestamp())
}

fn summary(i: &ImageRecord) -> Value {
    json!({
        "Id": i.id.to_string(),
        "ParentId": "",
        "RepoTags": i.tags,
        "RepoDigests": [],
        "Created": unix_time(&i.created),
        "Size": i.size,
        "SharedSize": -1,
        "VirtualSize": i.size,
        "Labels": {},
        "Containers": -1,
    })
}

/// `GET /images/json`.
pub async fn list(state: &Arc<State>) -> Result<Response<Body>, ApiError> {
    let v = state
        .engine(|e| Ok(e.store()?.list()?.iter().map(summary).collect::<Vec<_>>()))
        .await?;
    Ok(http::json(StatusCode::OK, &v))
}

/// `GET /images/{name}/json`.
pub async fn inspect(state: &Arc<State>, name: &str) -> Result<Response<Body>, ApiError> {
    let name = name.to_string();
    let v = state
        .engine(move |e| {
            let s = e.store()?;
            let i = s.resolve(&name)?;
            let config = s.config(&i)?;
            let c = serde_json::to_value(&config).unwrap_or(Value::Null);
            Ok(json!({
                "Id": i.id.to_string(),
                "RepoTags": i.tags,
                "RepoDigests": [],
                "Parent": "",
                "Comment": "",
                "Created": i.created,
                "Config": c.get("config").cloned().unwrap_or(Value::Null),
                "Architecture": c.get("architecture").cloned().unwrap_or(json!("amd64")),
                "Os": c.get("os").cloned().unwrap_or(json!("linux")),
                "Size": i.size,
                "RootFS": c.get("rootfs").cloned().unwrap_or(Value::Null),
                "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
            }))
        })
        .await?;
    Ok(http::json(StatusCode::OK, &v))
}

/// `POST /images/{name}/tag?repo=&tag=`.
/// `POST /commit?container=&repo=&tag=&comment=&author=&pause=&changes=`: an image of a
/// container's changes. The body (a container config to merge) must be empty: vessel
/// takes the instance's own, and `changes` over it.
pub async fn commit(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(&req);
    let changes = http::query_all(&req, "changes")
        .into_iter()
        .filter(|c| !c.trim().is_empty())
        .collect::<Vec<_>>();
    let container = q
        .get("container")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::BadRequest("container: missing".into()))?
        .to_string();
    let reference = match (
        q.get("repo").filter(|r| !r.is_empty()),
        q.get("tag").filter(|t| !t.is_empty()),
    ) {
        (Some(r), Some(t)) => Some(format!("{r}:{t}")),
        (Some(r), None) => Some(r.to_string()),
        (None, Some(_)) => return Err(ApiError::BadRequest("tag: given without repo".into())),
        (None, None) => None,
    };
    let opts = vessel_engine::commit::CommitOptions {
        reference,
        changes,
        message: q
            .get("comment")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        author: q
            .get("author")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        // Docker's default: pause.
        pause: q.get("pause").is_none() || q.flag("pause"),
    };
    let body = http::body(req).await?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the commit's config: {e}")))?;
        if !crate::containers::is_zero(&v) {
            return Err(ApiError::BadRequest(
                "a config to merge into the committed image is not supported by vessel: use changes".into(),
            ));
        }
    }
    let id = state
        .engine(move |e| Ok(e.commit(&container, &opts)?))
        .await?;
    Ok(http::json(
        StatusCode::CREATED,
        &json!({ "Id": id.id.to_string() }),
    ))
}

pub async fn tag(
    state: &Arc<State>,
    req: &Request<Incoming>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let repo = q
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::BadRequest("repo: missing".into()))?;
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    let name = name.to_string();
    state
        .engine(move |e| {
            let s = e.store()?;
            let i = s.resolve(&name)?;
            let r: Reference = target.parse()?;
            s.tag(&i.id, &r)?;
            e.record_event(
                "image",
                "tag",
                &i.id.to_string(),
                &r.to_string(),
                Default::default(),
            );
            Ok(())
        })
        .await?;
    Ok(http::empty(StatusCode::CREATED))
}

/// `DELETE /images/{name}?force=`.
pub async fn remove(
    state: &Arc<State>,
    req: &Request<Incoming>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let force = http::query(req).flag("force");
    let name = name.to_string();
    let removed = state
        .engine(move |e| {
            let removed = e.remove_image(&name, force)?;
            for r in &removed {
                let (action, id) = match r {
                    vessel_image::store::Removed::Untagged(t) => ("untag", t.to_string()),
                    vessel_image::store::Removed::Deleted(d) => ("delete", d.to_string()),
                };
                e.record_event("image", action, &id, &name, Default::default());
            }
            Ok(removed)
        })
        .await?;
    let v: Vec<Value> = removed
        .iter()
        .map(|r| match r {
            vessel_image::store::Removed::Untagged(t) => json!({ "Untagged": t }),
            vessel_image::store::Removed::Deleted(d) => json!({ "Deleted": d.to_string() }),
        })
        .collect();
    Ok(http::json(StatusCode::OK, &v))
}

/// Progress of a pull as Docker's JSON lines.
struct Lines(tokio::sync::mpsc::Sender<Bytes>);

impl Lines {
    fn send(&self, v: Value) {
        let mut b = serde_json::to_vec(&v).unwrap_or_default();
        b.extend_from_slice(b"\r\n");
        let _ = self.0.try_send(Bytes::from(b));
    }
}

impl vessel_image::progress::Progress for Lines {
    fn message(&self, msg: &str) {
        self.send(json!({ "status": msg }));
    }
    fn start(&self, id: &str, status: &str, _total: Option<u64>) {
        self.send(json!({ "status": status, "id": id }));
    }
    fn advance(&self, id: &str, bytes: u64) {
        self.send(json!({ "status": "Downloading", "id": id,
            "progressDetail": {"current": bytes} }));
    }
    fn finish(&self, id: &str, status: &str) {
        self.send(json!({ "status": status, "id": id }));
    }
}

/// `POST /auth` (what `docker login` asks): checks the credentials against the registry,
/// as `vessel login` does. The server keeps nothing: the client stores them and sends
/// them back with each pull (`X-Registry-Auth`).
pub async fn auth(req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body = http::body(req).await?;
    let v: Value = http::parse_json(&body)?;
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (username, secret, server) = (field("username"), field("password"), field("serveraddress"));
    if username.is_empty() || secret.is_empty() {
        return Err(ApiError::BadRequest(
            "username and password: both are needed".into(),
        ));
    }
    let host = vessel_image::credentials::registry_host(Some(&server));
    let creds = vessel_image::credentials::Credentials { username, secret };
    let checked = tokio::task::spawn_blocking(move || {
        vessel_image::registry::check_login(&host, &creds, false)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("login: {e}")))?;
    match checked {
        Ok(()) => Ok(http::json(
            hyper::StatusCode::OK,
            &json!({"Status": "Login Succeeded", "IdentityToken": ""}),
        )),
        Err(e @ vessel_image::Error::Unauthorized(_)) => Err(ApiError::Unauthorized(e.to_string())),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// `X-Registry-Auth`: base64url JSON with `username` and `password` (an identity token
/// alone is refused: vessel exchanges none). Absent, empty or `{}`: anonymous.
fn registry_auth(req: &Request<Incoming>) -> Result<Option<(String, String)>, ApiError> {
    use base64::Engine as _;
    let Some(h) = req.headers().get("x-registry-auth") else {
        return Ok(None);
    };
    let bad = |why: &str| ApiError::BadRequest(format!("X-Registry-Auth: {why}"));
    let text = h.to_str().map_err(|_| bad("not text"))?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    // Docker's clients pad or not, and some send the standard alphabet.
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
        .map_err(|_| bad("not base64"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad("not JSON"))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match (field("username"), field("password"), field("identitytoken")) {
        (Some(u), Some(p), _) => Ok(Some((u, p))),
        (_, _, Some(_)) => Err(ApiError::NotImplemented(
            "X-Registry-Auth with an identity token".into(),
        )),
        (None, None, None) => Ok(None),
        _ => Err(bad("a username without a password, or the reverse")),
    }
}

/// `POST /images/create?fromImage=&tag=`: a pull. Errors before the first byte are
/// Docker's JSON errors; after, an `{"error": ...}` line, as Docker's stream has them.
pub async fn pull(state: &Arc<State>, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    if q.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::NotImplemented("image import (fromSrc)".into()));
    }
    if let Some(p) = q
        .get("platform")
        .filter(|p| !p.is_empty() && *p != "linux/amd64" && *p != "linux")
    {
        return Err(ApiError::BadRequest(format!(
            "platform: {p} is not supported: vessel runs linux/amd64"
        )));
    }
    let image = q
        .get("fromImage")
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::BadRequest("fromImage: missing".into()))?;
    let name = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{image}@{t}"),
        Some(t) => format!("{image}:{t}"),
        None => format!("{image}:latest"),
    };
    let reference: Reference = name
        .parse()
        .map_err(|e: vessel_image::Error| ApiError::BadRequest(e.to_string()))?;
    let auth = registry_auth(req)?;
    let config = state.config.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Option<ApiError>>();
    tokio::task::spawn_blocking(move || {
        let lines = Lines(tx);
        let store = match vessel_image::Store::open(&config.root) {
            Ok(s) => s,
            Err(e) => {
                let _ = first_tx.send(Some(e.into()));
                return;
            }
        };
        // The client's credentials (the docker CLI sends its login's), never the
        // server's own: a daemon serves users who logged in as themselves.
        let opts = vessel_image::registry::RegistryOptions {
            auth,
            ..Default::default()
        };
        // The answer's status goes once the registry has said whether the image exists.
        match vessel_image::registry::pull(&store, &reference, &opts, &lines) {
            Ok(img) => {
                let _ = first_tx.send(None);
                vessel_engine::events::record(
                    &config.root,
                    "image",
                    "pull",
                    &reference.to_string(),
                    &reference.to_string(),
                    Default::default(),
                );
                lines.send(json!({ "status": format!("Digest: {}", img.manifest) }));
                lines.send(
                    json!({ "status": format!("Status: Downloaded newer image for {reference}") }),
                );
            }
            Err(e) => {
                let msg = format!("pull access denied for {reference}: {e}");
                let _ = first_tx.send(Some(ApiError::NotFound(msg)));
            }
        }
    });
    match first_rx.await {
        Ok(Some(e)) => Err(e),
        Ok(None) => Ok(http::streamed(StatusCode::OK, "application/json", rx)),
        Err(_) => Err(ApiError::Internal("the pull stopped".into())),
    }
}

/// `GET /images/{name}/history`: newest step first, as Docker lists it.
pub async fn history(state: &Arc<State>, name: &str) -> Result<Response<Body>, ApiError> {
    let name = name.to_string();
    let v = state
        .engine(move |e| {
            let s = e.store()?;
            let image = s.resolve(&name)?;
            let steps = s.history(&image)?;
            Ok(steps
                .into_iter()
                .map(|h| {
                    json!({
                        "Id": h.image.as_ref().map_or_else(|| "<missing>".to_string(), |d| d.to_string()),
                        "Created": unix_time(&h.created),
                        "CreatedBy": h.created_by,
                        "Tags": if h.image.is_some() { json!(image.tags) } else { Value::Null },
                        "Size": h.size,
                        "Comment": h.comment,
                    })
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(http::json(StatusCode::OK, &v))
}

/// `GET /images/get?names=A&names=B` and `GET /images/{name}/get`: `docker save`, a
/// docker-archive streamed as it is written. Unknown names are a 404 before any byte.
pub async fn save(
    state: &Arc<State>,
    req: &Request<Incoming>,
    name: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => http::query_all(req, "names"),
    };
    if names.is_empty() {
        return Err(ApiError::BadRequest("names: no image to save".into()));
    }
    let check = names.clone();
    state
        .engine(move |e| {
            let s = e.store()?;
            for n in &check {
                s.resolve(n)?;
            }
            Ok(())
        })
        .await?;
    let root = state.config.root.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::task::spawn_blocking(move || {
        let saved = vessel_image::Store::open(&root).and_then(|s| {
            let w = std::io::BufWriter::with_capacity(256 * 1024, http::ChunkWriter(tx));
            vessel_image::archive::save(&s, &names, w, vessel_image::archive::ArchiveFormat::Docker)
        });
        // The client sees a cut-off archive (the tar reader says so); the log says why.
        if let Err(e) = saved {
            tracing::warn!(error = %e, "save");
        }
    });
    Ok(http::streamed(StatusCode::OK, "application/x-tar", rx))
}

/// `POST /images/load` (`docker load`): the body is a docker-archive or oci-archive,
/// read as it arrives (the store's limits bound what it may hold). The answer is Docker's
/// JSON stream (`{"stream": "Loaded image: ...\n"}`), or a 400 naming what is wrong.
pub async fn load(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let quiet = http::query(&req).flag("quiet");
    let reader = http::ChunkReader::of_body(req);
    let root = state.config.root.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let store = vessel_image::Store::open(&root)?;
        vessel_image::archive::load(&store, reader, &vessel_image::progress::NoProgress)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("load: {e}")))?;
    let images = loaded.map_err(|e| match e {
        e @ (vessel_image::Error::InvalidInput(_) | vessel_image::Error::Malformed { .. }) => {
            ApiError::BadRequest(e.to_string())
        }
        e => ApiError::from(e),
    })?;
    let mut out = Vec::new();
    for img in &images {
        let line = if img.tags.is_empty() {
            format!("Loaded image ID: {}\n", img.id)
        } else {
            img.tags
                .iter()
                .map(|t| format!("Loaded image: {t}\n"))
                .collect()
        };
        let _ = quiet; // the same lines either way: Docker's quiet drops only progress
        out.extend_from_slice(json!({ "stream": line }).to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Ok(http::whole(StatusCode::OK, "application/json", out))
}

/// `POST /images/{name}/push?tag=`: pushes with the client's `X-Registry-Auth`, as the
/// pull does; the progress is Docker's JSON stream, an error after the first line an
/// `{"error": ...}` line.
pub async fn push(
    state: &Arc<State>,
    req: &Request<Incoming>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let dest = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{name}:{t}"),
        None => name.to_string(),
    };
    let reference: Reference = dest
        .parse()
        .map_err(|e: vessel_image::Error| ApiError::BadRequest(e.to_string()))?;
    let auth = registry_auth(req)?;
    let local = dest.clone();
    let image = state
        .engine(move |e| Ok(e.store()?.resolve(&local)?))
        .await?;
    let config = state.config.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    tokio::task::spawn_blocking(move || {
        let lines = Lines(tx);
        lines.send(
            json!({ "status": format!("The push refers to repository [{}]", reference.name()) }),
        );
        let opts = vessel_image::registry::RegistryOptions {
            auth,
            ..Default::default()
        };
        let pushed = vessel_image::Store::open(&config.root).and_then(|store| {
            vessel_image::registry::push(&store, &image, &reference, &opts, &lines)
        });
        match pushed {
            Ok(digest) => {
                vessel_engine::events::record(
                    &config.root,
                    "image",
                    "push",
                    &reference.to_string(),
                    &reference.to_string(),
                    Default::default(),
                );
                let tag = reference.tag().unwrap_or("latest").to_string();
                lines.send(json!({ "status": format!("{tag}: digest: {digest}") }));
            }
            Err(e) => {
                let msg = e.to_string();
                lines.send(json!({ "error": msg, "errorDetail": { "message": msg } }));
            }
        }
    });
    Ok(http::streamed(StatusCode::OK, "application/json", rx))
}

/// `POST /images/prune?filters={"dangling":["false"]}`: untagged images, or with
/// `dangling=false` every image no instance uses.
pub async fn prune(
    state: &Arc<State>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let f = crate::containers::filters(http::query(req).get("filters"), &["dangling"])?;
    let mut all = false;
    for (_, vals) in &f {
        for v in vals {
            match v.as_str() {
                "true" | "1" => {}
                "false" | "0" => all = true,
                v => {
                    return Err(ApiError::BadRequest(format!(
                        "invalid filter 'dangling={v}'"
                    )))
                }
            }
        }
    }
    let v = state
        .engine_once(move |e| {
            let (removed, bytes) = e.image_prune(all)?;
            let deleted: Vec<Value> = removed
                .iter()
                .map(|r| match r {
                    vessel_image::store::Removed::Untagged(t) => json!({ "Untagged": t }),
                    vessel_image::store::Removed::Deleted(d) => json!({ "Deleted": d.to_string() }),
                })
                .collect();
            Ok(json!({ "ImagesDeleted": deleted, "SpaceReclaimed": bytes }))
        })
        .await?;
    Ok(http::json(StatusCode::OK, &v))
}
