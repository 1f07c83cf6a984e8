//! `commit`: a new image from a container's changes, as `docker commit` makes one. The
//! layer is the overlay's upper directory (whiteouts and opaque directories as OCI
//! entries), without the mount points the runtime put there (`/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf`: bind mounts of the instance's own files, as
//! Docker leaves them out too). The config is the image's, with what the container ran
//! with (command, environment, working directory, user, labels, exposed ports, health
//! check, stop signal) and then the `--change` instructions over it; its history gains
//! one step.

use serde_json::{json, Value};
use vessel_image::import::Changes;
use vessel_image::{ImageRecord, Reference};

use crate::catalogue::Status;
use crate::request::Isolation;
use crate::{Engine, EngineError, Result};

/// What the runtime places in a container's upper directory: never committed.
const RUNTIME_MOUNT_POINTS: &[&str] = &["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// `commit`'s options.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    /// `REPOSITORY[:TAG]` (none: an untagged image).
    pub reference: Option<String>,
    /// `-c/--change`: Dockerfile instructions (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL,
    /// STOPSIGNAL).
    pub changes: Vec<String>,
    /// `-m/--message`: the history step's comment.
    pub message: Option<String>,
    /// `-a/--author`.
    pub author: Option<String>,
    /// `-p/--pause` (Docker's default: true): freeze a running container while its
    /// changes are read.
    pub pause: bool,
}

impl Engine {
    /// Commits instance `key`'s changes as a new image.
    pub fn commit(&self, key: &str, o: &CommitOptions) -> Result<ImageRecord> {
        let inst = self.get(key)?;
        if inst.request.isolation == Isolation::Vm {
            return Err(EngineError::InvalidFlag(format!(
                "commit is not supported for microVMs yet ({} runs with --isolation vm: its root file system is a disk image); export its files with exec and tar instead",
                inst.name
            )));
        }
        let changes = Changes::parse(&o.changes)?;
        let tag = o
            .reference
            .as_deref()
            .map(str::parse::<Reference>)
            .transpose()?;
        let store = self.store()?;
        let image = self.instance_image(&inst)?;
        let upper = self.instance_dir(&inst.id).join("upper");
        let freeze = o.pause && inst.status == Status::Running && !self.paused(&inst);
        if freeze {
            self.pause(&inst.id)?;
        }
        let layer =
            vessel_image::import::store_upper_layer_except(store, &upper, RUNTIME_MOUNT_POINTS);
        if freeze {
            let _ = self.unpause(&inst.id);
        }
        let layer = layer?;
        let mut doc: Value = serde_json::from_slice(&store.config_blob(&image)?)
            .map_err(|e| EngineError::Internal(format!("the image's config: {e}")))?;
        let cfg = config_of(&doc, &inst.request, &changes);
        doc["config"] = Value::Object(cfg);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        doc["created"] = json!(now);
        if let Some(a) = &o.author {
            doc["author"] = json!(a);
        }
        let mut step = json!({
            "created": now,
            "created_by": inst.request.args.join(" "),
        });
        if let Some(m) = &o.message {
            step["comment"] = json!(m);
        }
        if let Some(a) = &o.author {
            step["author"] = json!(a);
        }
        match doc.get_mut("history").and_then(Value::as_array_mut) {
            Some(h) => h.push(step),
            None => doc["history"] = json!([step]),
        }
        let mut layers = image.layers.clone();
        layers.push(layer);
        let img = vessel_image::import::commit_json(store, &doc, &layers, tag.as_ref())?;
        self.instance_event(&inst, "commit", &[]);
        Ok(img)
    }
}

/// The new image's `config`: the image's, with what the instance ran with, then the
/// changes.
fn config_of(
    doc: &Value,
    r: &crate::request::RunRequest,
    changes: &Changes,
) -> serde_json::Map<String, Value> {
    let mut cfg = doc
        .get("config")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // The argv is the entrypoint then the command: the image's entrypoint stays when the
    // argv still starts with it.
    let entrypoint: Vec<String> = cfg
        .get("Entrypoint")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    if !entrypoint.is_empty() && r.args.starts_with(&entrypoint) {
        cfg.insert("Cmd".into(), json!(r.args[entrypoint.len()..]));
    } else {
        cfg.remove("Entrypoint");
        cfg.insert("Cmd".into(), json!(r.args));
    }
    cfg.insert("Env".into(), json!(r.env));
    cfg.insert("WorkingDir".into(), json!(r.workdir));
    if r.user.is_empty() {
        cfg.remove("User");
    } else {
        cfg.insert("User".into(), json!(r.user));
    }
    if r.labels.is_empty() {
        cfg.remove("Labels");
    } else {
        cfg.insert("Labels".into(), json!(r.labels));
    }
    if !r.exposed.is_empty() {
        let ports: serde_json::Map<String, Value> =
            r.exposed.iter().map(|p| (p.clone(), json!({}))).collect();
        cfg.insert("ExposedPorts".into(), Value::Object(ports));
    }
    match &r.healthcheck {
        Some(h) => {
            cfg.insert("Healthcheck".into(), json!(h));
        }
        None => {
            cfg.remove("Healthcheck");
        }
    }
    if r.stop_signal != libc::SIGTERM {
        if let Ok(s) = nix::sys::signal::Signal::try_from(r.stop_signal) {
            cfg.insert("StopSignal".into(), json!(s.as_str()));
        }
    }
    // The changes last, as `docker commit --change` applies them.
    if let Some(c) = &changes.cmd {
        cfg.insert("Cmd".into(), json!(c));
    }
    if let Some(e) = &changes.entrypoint {
        cfg.insert("Entrypoint".into(), json!(e));
    }
    if !changes.env.is_empty() {
        let mut env: Vec<String> = r.env.clone();
        for kv in &changes.env {
            let k = kv.split('=').next().unwrap_or_default();
            env.retain(|x| x.split('=').next() != Some(k));
            env.push(kv.clone());
        }
        cfg.insert("Env".into(), json!(env));
    }
    if let Some(w) = &changes.workdir {
        cfg.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &changes.user {
        cfg.insert("User".into(), json!(u));
    }
    if !changes.labels.is_empty() {
        if let Some(m) = cfg
            .entry("Labels")
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            for (k, v) in &changes.labels {
                m.insert(k.clone(), json!(v));
            }
        }
    }
    if let Some(s) = &changes.stop_signal {
        cfg.insert("StopSignal".into(), json!(s));
    }
    cfg
}
