//! Containers: create (Docker's `Config` + `HostConfig` onto the engine's run options),
//! start, stop, restart, kill, remove, list, inspect.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use vessel_engine::catalogue::{Instance, Status};
use vessel_engine::monitor::{self, Report};
use vessel_engine::options::RunOptions;
use vessel_engine::request::{parse_signal, Isolation};
use vessel_engine::Engine;

use crate::http::{self, Body};
use crate::{ApiError, State};

pub(crate) fn bad(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("{field}: {why}"))
}

/// An endpoint's settings (`EndpointsConfig.NAME`, `EndpointConfig`): its aliases and
/// the IPv4 address asked for (`IPAMConfig.IPv4Address`); a v6 or link-local address is
/// refused, and so is anything else set.
pub(crate) fn endpoint(
    ep: Value,
    what: &str,
) -> Result<(Vec<String>, Option<std::net::Ipv4Addr>), ApiError> {
    if is_zero(&ep) {
        return Ok((Vec::new(), None));
    }
    let mut e = Fields::new(what, Some(ep))?;
    // Ids the client may repeat (the engine's to give); driver options, as anything
    // else, only if unset.
    for k in ["NetworkID", "EndpointID"] {
        e.take(k);
    }
    let aliases = e.strings("Aliases")?;
    let mut ip = None;
    if let Some(ipam) = e.take("IPAMConfig") {
        let mut i = Fields::new("IPAMConfig", Some(ipam))?;
        ip = i
            .nonempty("IPv4Address")?
            .map(|a| {
                a.parse::<std::net::Ipv4Addr>().map_err(|_| {
                    bad(
                        "IPAMConfig.IPv4Address",
                        format!("invalid IPv4 address {a:?}"),
                    )
                })
            })
            .transpose()?;
        i.finish()?;
    }
    e.finish()?;
    Ok((aliases, ip))
}

/// Whether a JSON value is its type's zero value (what a client sends for "not set").
pub(crate) fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_zero),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// The fields of one JSON object, each taken at most once; what is left at the end must
/// be unset (zero, or one of the values that mean the default).
pub(crate) struct Fields<'a> {
    prefix: &'a str,
    map: Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(prefix: &'a str, v: Option<Value>) -> Result<Fields<'a>, ApiError> {
        let map = match v {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => return Err(bad(prefix, format!("expected an object, got {other}"))),
        };
        Ok(Fields { prefix, map })
    }

    fn name(&self, k: &str) -> String {
        if self.prefix.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.prefix)
        }
    }

    pub(crate) fn take(&mut self, k: &str) -> Option<Value> {
        self.map.remove(k).filter(|v| !v.is_null())
    }

    pub(crate) fn string(&mut self, k: &str) -> Result<Option<String>, ApiError> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(bad(&self.name(k), format!("expected a string, got {v}"))),
        }
    }

    pub(crate) fn nonempty(&mut self, k: &str) -> Result<Option<String>, ApiError> {
        Ok(self.string(k)?.filter(|s| !s.is_empty()))
    }

    pub(crate) fn boolean(&mut self, k: &str) -> Result<bool, ApiError> {
        match self.take(k) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(v) => Err(bad(&self.name(k), format!("expected a boolean, got {v}"))),
        }
    }

    pub(crate) fn int(&mut self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| bad(&self.name(k), format!("expected an integer, got {n}"))),
            Some(v) => Err(bad(&self.name(k), format!("expected an integer, got {v}"))),
        }
    }

    pub(crate) fn strings(&mut self, k: &str) -> Result<Vec<String>, ApiError> {
        match self.take(k) {
            None => Ok(Vec::new()),
            // Docker's strslice: a lone string is a one-element list.
            Some(Value::String(s)) => Ok(vec![s]),
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    v => Err(bad(&self.name(k), format!("expected strings, got {v}"))),
                })
                .collect(),
            Some(v) => Err(bad(
                &self.name(k),
                format!("expected a list of strings, got {v}"),
            )),
        }
    }

    pub(crate) fn object(&mut self, k: &str) -> Result<Map<String, Value>, ApiError> {
        match self.take(k) {
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m),
            Some(v) => Err(bad(&self.name(k), format!("expected an object, got {v}"))),
        }
    }

    /// Takes `k` if it holds one of `defaults` (or is zero): a field vessel does not
    /// support but whose default it honours.
    pub(crate) fn only_default(&mut self, k: &str, defaults: &[Value]) -> Result<(), ApiError> {
        if let Some(v) = self.take(k) {
            if !is_zero(&v) && !defaults.contains(&v) {
                return Err(unsupported(&self.name(k), &v));
            }
        }
        Ok(())
    }

    /// Every field not taken must be unset.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        for (k, v) in &self.map {
            if !is_zero(v) {
                return Err(unsupported(&self.name(k), v));
            }
        }
        Ok(())
    }
}

fn unsupported(field: &str, v: &Value) -> ApiError {
    let mut shown = v.to_string();
    if shown.len() > 80 {
        shown.truncate(77);
        shown.push_str("...");
    }
    ApiError::BadRequest(format!(
        "{field} = {shown} is not supported by vessel: leave it unset"
    ))
}

/// Docker's `RestartPolicy` object (`{"Name": "on-failure", "MaximumRetryCount": 3}`)
/// as the engine's policy text (`on-failure:3`); `None` when unset.
pub(crate) fn restart_policy(prefix: &str, v: Option<Value>) -> Result<Option<String>, ApiError> {
    let mut restart = Fields::new(prefix, v)?;
    let policy = match restart.nonempty("Name")? {
        None => None,
        Some(name) => {
            let max = restart.int("MaximumRetryCount")?.unwrap_or(0);
            Some(match name.as_str() {
                "on-failure" if max > 0 => format!("on-failure:{max}"),
                _ if max != 0 => {
                    return Err(bad(
                        &format!("{prefix}.MaximumRetryCount"),
                        "only on-failure takes a maximum retry count",
                    ))
                }
                _ => name,
            })
        }
    };
    restart.finish()?;
    Ok(policy)
}

/// What a create body asks for.
pub struct CreateRequest {
    /// The image as named.
    pub image: String,
    /// The engine's options.
    pub opts: RunOptions,
}

/// Maps a create body onto the engine's options; anything vessel does not do is a 400
/// that names the field.
pub fn parse_create(body: Value) -> Result<CreateRequest, ApiError> {
    let mut c = Fields::new("", Some(body))?;
    let image = c
        .nonempty("Image")?
        .ok_or_else(|| ApiError::BadRequest("Image: no image given".into()))?;
    let mut o = RunOptions {
        tty: c.boolean("Tty")?,
        interactive: c.boolean("OpenStdin")?,
        hostname: c.nonempty("Hostname")?,
        user: c.nonempty("User")?,
        workdir: c.nonempty("WorkingDir")?,
        env: c.strings("Env")?,
        command: c.strings("Cmd")?,
        stop_signal: c.nonempty("StopSignal")?,
        ..Default::default()
    };
    if let Some(s) = &o.stop_signal {
        parse_signal(s).map_err(|e| bad("StopSignal", e))?;
    }
    if let Some(t) = c.int("StopTimeout")? {
        o.stop_timeout = Some(
            u32::try_from(t)
                .map_err(|_| bad("StopTimeout", format!("{t} is not a number of seconds")))?,
        );
    }
    // Docker's Entrypoint is a whole argv; the engine takes a program, so the rest of
    // it goes before the command.
    match c.take("Entrypoint") {
        None => {}
        Some(v) => {
            let mut f = Fields::new("", Some(json!({ "Entrypoint": v })))?;
            let ep = f.strings("Entrypoint")?;
            match ep.split_first() {
                None => o.entrypoint = Some(String::new()),
                Some((prog, rest)) => {
                    o.entrypoint = Some(prog.clone());
                    o.command = rest.iter().cloned().chain(o.command).collect();
                }
            }
        }
    }
    for (k, v) in c.object("Labels")? {
        match v {
            Value::String(s) => o.labels.push(format!("{k}={s}")),
            v => {
                return Err(bad(
                    &format!("Labels.{k}"),
                    format!("expected a string, got {v}"),
                ))
            }
        }
    }
    // Informational: what the client attaches.
    for k in [
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "StdinOnce",
        "ArgsEscaped",
    ] {
        c.take(k);
    }
    // `--expose` (the client lists the ports of `-p` here too).
    for (port, v) in c.object("ExposedPorts")? {
        if !v.as_object().is_some_and(|o| o.is_empty()) && !v.is_null() {
            return Err(bad(
                "ExposedPorts",
                format!("{port}: expected {{}}, got {v}"),
            ));
        }
        o.expose.push(port);
    }
    // Docker's HealthConfig, as is (`--no-healthcheck` is `Test: ["NONE"]`).
    if let Some(hc) = c.take("Healthcheck") {
        let hc: vessel_engine::health::Healthcheck =
            serde_json::from_value(hc).map_err(|e| bad("Healthcheck", e))?;
        o.health = vessel_engine::health::HealthOptions {
            none: hc.test.first().is_some_and(|t| t == "NONE"),
            given: hc,
        };
        if o.health.none {
            o.health.given = Default::default();
        }
    }
    c.only_default("NetworkDisabled", &[])?;
    let mut h = Fields::new("HostConfig", c.take("HostConfig"))?;
    o.volumes = h.strings("Binds")?;
    for (port, bindings) in h.object("PortBindings")? {
        let Value::Array(list) = bindings else {
            if bindings.is_null() {
                continue;
            }
            return Err(bad(
                &format!("HostConfig.PortBindings.{port}"),
                "expected a list",
            ));
        };
        for b in list {
            let mut b = Fields::new("HostConfig.PortBindings[]", Some(b))?;
            let ip = b.nonempty("HostIp")?;
            // No HostPort (`-p 80`, `-P`): a random one.
            let hp = b.nonempty("HostPort")?.unwrap_or_default();
            b.finish()?;
            o.publish.push(match ip {
                Some(ip) if ip != "0.0.0.0" => format!("{ip}:{hp}:{port}"),
                _ if hp.is_empty() => port.clone(),
                _ => format!("{hp}:{port}"),
            });
        }
    }
    if let Some(m) = h.int("Memory")?.filter(|&m| m != 0) {
        if m < 0 {
            return Err(bad("HostConfig.Memory", format!("{m} is negative")));
        }
        o.memory = Some(m.to_string());
    }
    // Docker's client sends MemorySwap only with --memory-swap; -1 (unlimited) is what
    // vessel does.
    h.only_default("MemorySwap", &[json!(-1)])?;
    if let Some(n) = h.int("NanoCpus")?.filter(|&n| n != 0) {
        if n < 0 {
            return Err(bad("HostConfig.NanoCpus", format!("{n} is negative")));
        }
        o.cpus = Some(format!("{}", n as f64 / 1e9));
    }
    o.pids_limit = h.int("PidsLimit")?.filter(|&p| p != 0);
    o.network = match h.nonempty("NetworkMode")? {
        Some(m) if m == "default" => None,
        m => m,
    };
    o.read_only = h.boolean("ReadonlyRootfs")?;
    o.init = h.boolean("Init")?;
    o.rm = h.boolean("AutoRemove")?;
    o.isolation = match h.nonempty("Runtime")?.as_deref() {
        None | Some("runc" | "vessel") => Isolation::Container,
        Some("vessel-vm") => Isolation::Vm,
        Some(r) => {
            return Err(bad(
                "HostConfig.Runtime",
                format!("unknown runtime {r:?}: vessel has runc (or vessel) for a container and vessel-vm for a microVM"),
            ))
        }
    };
    o.cap_add = h.strings("CapAdd")?;
    o.cap_drop = h.strings("CapDrop")?;
    o.dns = h.strings("Dns")?;
    o.add_hosts = h.strings("ExtraHosts")?;
    for (path, opts) in h.object("Tmpfs")? {
        match opts {
            Value::String(s) if s.is_empty() => o.tmpfs.push(path),
            Value::String(s) => o.tmpfs.push(format!("{path}:{s}")),
            v => {
                return Err(bad(
                    &format!("HostConfig.Tmpfs.{path}"),
                    format!("expected a string, got {v}"),
                ))
            }
        }
    }
    if let Some(Value::Array(list)) = h.take("Ulimits") {
        for u in list {
            let mut u = Fields::new("HostConfig.Ulimits[]", Some(u))?;
            let name = u
                .nonempty("Name")?
                .ok_or_else(|| bad("HostConfig.Ulimits[].Name", "missing"))?;
            let soft = u.int("Soft")?.unwrap_or(0);
            let hard = u.int("Hard")?.unwrap_or(soft);
            u.finish()?;
            o.ulimits.push(format!("{name}={soft}:{hard}"));
        }
    }
    let mut log = Fields::new("HostConfig.LogConfig", h.take("LogConfig"))?;
    o.log_driver = log.nonempty("Type")?;
    for (k, v) in log.object("Config")? {
        match v {
            Value::String(s) => o.log_opts.push(format!("{k}={s}")),
            v => {
                return Err(bad(
                    &format!("HostConfig.LogConfig.Config.{k}"),
                    format!("expected a string, got {v}"),
                ))
            }
        }
    }
    log.finish()?;
    o.restart = restart_policy("HostConfig.RestartPolicy", h.take("RestartPolicy"))?;
    o.access.privileged = h.boolean("Privileged")?;
    if let Some(Value::Array(list)) = h.take("Devices") {
        for d in list {
            let mut d = Fields::new("HostConfig.Devices[]", Some(d))?;
            let host = d
                .nonempty("PathOnHost")?
                .ok_or_else(|| bad("HostConfig.Devices[].PathOnHost", "missing"))?;
            let inside = d
                .nonempty("PathInContainer")?
                .unwrap_or_else(|| host.clone());
            let perms = d
                .nonempty("CgroupPermissions")?
                .unwrap_or_else(|| "rwm".into());
            d.finish()?;
            o.access.devices.push(format!("{host}:{inside}:{perms}"));
        }
    }
    o.access.security_opts = h.strings("SecurityOpt")?;
    for (k, v) in h.object("Sysctls")? {
        match v {
            Value::String(v) => o.access.sysctls.push(format!("{k}={v}")),
            v => {
                return Err(bad(
                    &format!("HostConfig.Sysctls.{k}"),
                    format!("expected a string, got {v}"),
                ))
            }
        }
    }
    o.access.pid = h.nonempty("PidMode")?;
    o.access.ipc = h.nonempty("IpcMode")?;
    o.access.shm_size = h.int("ShmSize")?.filter(|&s| s != 0).map(|s| s.to_string());
    o.access.group_add = h.strings("GroupAdd")?;
    o.access.cpu_shares = h.int("CpuShares")?.filter(|&s| s != 0);
    o.access.cpuset_cpus = h.nonempty("CpusetCpus")?;
    o.dns_search = h.strings("DnsSearch")?;
    o.publish_all = h.boolean("PublishAllPorts")?;
    // Fields whose default (or an equivalent the client sends) is what vessel does.
    h.only_default("Isolation", &[json!("default")])?;
    h.only_default("CgroupnsMode", &[json!("private"), json!("host")])?;
    // The docker CLI sends its terminal's size whenever it has one, `-t` or not; as
    // Docker's, it sizes a terminal and is moot without.
    let console = crate::exec::console_size(h.take("ConsoleSize"), "HostConfig.ConsoleSize")?;
    o.console_size = console.filter(|_| o.tty);
    // The client's own defaults for fields Docker ignores on Linux unless set.
    h.only_default("OomKillDisable", &[json!(false)])?;
    h.only_default("MemorySwappiness", &[json!(-1)])?;
    h.finish()?;
    if let Some(net) = c.take("NetworkingConfig") {
        let mut n = Fields::new("NetworkingConfig", Some(net))?;
        let norm = |n: &str| {
            if n == "default" {
                "bridge".to_string()
            } else {
                n.to_string()
            }
        };
        let mode = norm(o.network.as_deref().unwrap_or("bridge"));
        // The endpoint of NetworkMode's network gives the first network's aliases; any
        // other endpoint is one more network to join (clients of API 1.44 and later send
        // them all at create; older ones connect after).
        for (name, ep) in n.object("EndpointsConfig")? {
            let (aliases, ip) = endpoint(ep, "NetworkingConfig.EndpointsConfig")?;
            if norm(&name) == mode {
                o.network_aliases = aliases;
                o.ip = ip.map(|a| a.to_string());
            } else {
                o.more_networks.push(vessel_engine::request::Join {
                    network: norm(&name),
                    aliases,
                    ip,
                });
            }
        }
        n.finish()?;
    }
    // Docker's client fills these with its defaults.
    c.only_default("Domainname", &[])?;
    // `docker run -v /path`: an anonymous volume at each path not mounted otherwise
    // (clients list their binds' targets here too).
    for (target, v) in c.object("Volumes")? {
        if !v.as_object().is_some_and(|o| o.is_empty()) {
            return Err(bad("Volumes", format!("{target}: expected {{}}, got {v}")));
        }
        o.anonymous_volumes.push(target);
    }
    c.only_default("OnBuild", &[])?;
    c.only_default("Shell", &[])?;
    c.finish()?;
    Ok(CreateRequest { image, opts: o })
}

/// `POST /containers/create?name=`.
pub async fn create(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(&req);
    let name = q
        .get("name")
        .filter(|n| !n.is_empty())
        .map(|n| n.trim_start_matches('/').to_string());
    if let Some(p) = q
        .get("platform")
        .filter(|p| !p.is_empty() && *p != "linux/amd64" && *p != "linux")
    {
        return Err(bad(
            "platform",
            format!("{p} is not supported: vessel runs linux/amd64"),
        ));
    }
    let v = http::object_body(req).await?;
    let c = parse_create(v)?;
    let inst = state
        .engine(move |e| {
            // Docker's message for a name in use, with the holder's id.
            if let Some(n) = &name {
                if let Ok(other) = e.get(n) {
                    if other.name == *n {
                        return Err(ApiError::Conflict(format!(
                            "Conflict. The container name \"/{n}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                            other.id
                        )));
                    }
                }
            }
            Ok(e.create_from_options(&c.image, name, &c.opts, &|_| None)?)
        })
        .await
        .map_err(|e| match e {
            ApiError::NotFound(m) if m.starts_with("No such image") => {
                ApiError::NotFound(m)
            }
            e => e,
        })?;
    Ok(http::json(
        StatusCode::CREATED,
        &json!({ "Id": inst.id, "Warnings": [] }),
    ))
}

fn unix_time(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp())
        .unwrap_or(0)
}

/// Docker's list entry of a container, with its `ps` state and status text.
fn summary(i: &Instance, (state, status): (&str, String)) -> Value {
    let r = &i.request;
    let ports: Vec<Value> = r
        .published()
        .iter()
        .map(|p| {
            json!({
                "IP": p.host_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": format!("{:?}", p.proto).to_lowercase(),
            })
        })
        .collect();
    json!({
        "Id": i.id,
        "Names": [format!("/{}", i.name)],
        "Image": i.image,
        "ImageID": i.image_id,
        "Command": r.args.join(" "),
        "Created": unix_time(&i.created),
        "Ports": ports,
        "Labels": r.labels,
        "State": state,
        "Status": status,
        "HostConfig": {"NetworkMode": r.network.as_str()},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    })
}

/// The `filters` query parameter: `{"key":["v",...]}` or the old `{"key":{"v":true}}`.
/// Only the keys in `known` are taken; another is a 400 naming it.
pub(crate) fn filters(
    raw: Option<&str>,
    known: &[&str],
) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(Vec::new());
    };
    let v: Value =
        serde_json::from_str(raw).map_err(|e| bad("filters", format!("invalid JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(bad("filters", "expected a JSON object"));
    };
    let mut out = Vec::new();
    for (k, v) in m {
        let vals = match v {
            Value::Array(a) => a
                .into_iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            Value::Object(o) => o
                .into_iter()
                .filter(|(_, on)| on == &Value::Bool(true))
                .map(|(k, _)| k)
                .collect(),
            _ => return Err(bad(&format!("filters.{k}"), "expected a list of strings")),
        };
        if !known.contains(&k.as_str()) {
            return Err(bad(
                "filters",
                format!(
                    "invalid filter '{k}': vessel filters here by {}",
                    known.join(", ")
                ),
            ));
        }
        out.push((k, vals));
    }
    Ok(out)
}

/// Whether instance `i`, in `ps` state `state`, passes the list's filters.
fn matches(i: &Instance, state: &str, health: &str, filters: &[(String, Vec<String>)]) -> bool {
    vessel_engine::filters::passes(filters, |k, v| match k {
        "health" => health == v,
        "name" => i.name.contains(v.trim_start_matches('/')),
        "id" => i.id.starts_with(v),
        "status" => state == v,
        "label" => vessel_engine::filters::label(&i.request.labels, v),
        _ => false,
    })
}

/// The keys `GET /containers/json` filters by.
const LIST_FILTERS: &[&str] = &["name", "label", "status", "id", "health"];

/// `GET /containers/json?all=&filters=`.
pub async fn list(state: &Arc<State>, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let all = q.flag("all");
    let f = filters(q.get("filters"), LIST_FILTERS)?;
    for (k, vals) in &f {
        if k == "health" {
            for v in vals {
                Engine::check_health_filter(v).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            }
        }
    }
    let limit = q.int("limit")?.filter(|&l| l > 0);
    // A limit counts the last created, in any state (Docker's rule).
    let all = all || limit.is_some();
    let has_status = f.iter().any(|(k, _)| k == "status");
    // `size=1` (`docker ps -s`): SizeRw and SizeRootFs of each.
    let size = q.flag("size");
    let mut list = state
        .engine(move |e| {
            let images: std::collections::HashMap<String, u64> = if size {
                e.store()?
                    .list()?
                    .into_iter()
                    .map(|r| (r.id.to_string(), r.size))
                    .collect()
            } else {
                Default::default()
            };
            Ok(e.list()?
                .into_iter()
                .map(|i| {
                    let shown = e.ps_state(&i);
                    let health = e.health_status(&i);
                    let sizes = size.then(|| {
                        let rw = e.writable_size(&i);
                        (rw, rw + images.get(&i.image_id).copied().unwrap_or(0))
                    });
                    (i, shown, health, sizes)
                })
                .collect::<Vec<_>>())
        })
        .await?;
    list.retain(|(i, (st, _), health, _)| {
        (all || has_status || i.status == Status::Running) && matches(i, st, health, &f)
    });
    list.sort_by(|(a, _, _, _), (b, _, _, _)| b.created.cmp(&a.created));
    if let Some(l) = limit {
        list.truncate(l as usize);
    }
    let v: Vec<Value> = list
        .into_iter()
        .map(|(i, shown, _, sizes)| {
            let mut v = summary(&i, shown);
            if let Some((rw, root)) = sizes {
                v["SizeRw"] = json!(rw);
                v["SizeRootFs"] = json!(root);
            }
            v
        })
        .collect();
    Ok(http::json(StatusCode::OK, &v))
}

/// `GET /containers/{id}/json`.
pub async fn inspect(state: &Arc<State>, id: &str) -> Result<Response<Body>, ApiError> {
    let id = id.to_string();
    let doc = state
        .engine(move |e| {
            let i = e.get(&id)?;
            let mut v = serde_json::to_value(e.inspect(&i))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            docker_shape(&mut v);
            Ok(v)
        })
        .await?;
    Ok(http::json(StatusCode::OK, &doc))
}

/// Where Docker's `ContainerJSON` differs from the engine's document (which the CLI
/// prints as it is): the name has its leading `/`, the stop signal is a name.
fn docker_shape(v: &mut Value) {
    if let Some(Value::String(n)) = v.get_mut("Name") {
        if !n.starts_with('/') {
            n.insert(0, '/');
        }
    }
    if let Some(sig) = v.pointer_mut("/Config/StopSignal") {
        if let Some(n) = sig.as_i64() {
            let name = nix::sys::signal::Signal::try_from(n as i32)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| n.to_string());
            *sig = Value::String(name);
        }
    }
}

/// Starts `inst` through a monitor of its own, handing it the attach connections made
/// before the start; a thread reaps the monitor and records the instance's exit.
fn start_instance(state: &Arc<State>, e: &Engine, inst: &Instance) -> Result<(), ApiError> {
    let clients = state
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&inst.id)
        .unwrap_or_default();
    let warm = Engine::warm_up(inst.request.isolation, inst.request.userns);
    // The standby monitor if one waits (its exec and set-up are done), else a new one.
    let standby = state
        .standby
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .filter(|s| s.alive());
    let handed = standby.map(|s| s.begin(e.config(), &inst.id, &clients));
    let mut m = match handed {
        Some(Ok(m)) => m,
        Some(Err(err)) => {
            tracing::warn!(error = %err, "the standby monitor failed: starting one");
            monitor::spawn_with_clients(e.config(), &inst.id, clients)?
        }
        None => monitor::spawn_with_clients(e.config(), &inst.id, clients)?,
    };
    let first = m.next();
    drop(warm);
    // The next start's monitor, while this instance runs.
    state.replenish();
    let more_reports = !matches!(first, Some(Report::Done { .. }) | None);
    let failed = match first {
        Some(Report::Started { .. }) => None,
        Some(Report::Error { message, .. }) => Some(message),
        Some(Report::Exited { .. } | Report::Done { .. }) => None,
        None => Some(format!(
            "the monitor of {} exited before starting it",
            inst.name
        )),
    };
    let id = inst.id.clone();
    let st = state.clone();
    // The monitor is our child: reaped here, its status is the instance's exit status.
    // Its last report (`Done`: the exit recorded, and with auto-remove the instance
    // gone) already says so; what it does after (deleting the removed instance's files)
    // nobody need wait for.
    let reaper = std::thread::Builder::new()
        .name("reap".into())
        .spawn(move || {
            use std::os::unix::process::ExitStatusExt;
            let record = |code: i32| {
                st.exits
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), code);
                st.changed.send_modify(|n| *n += 1);
            };
            let mut done = false;
            if more_reports {
                for r in m.by_ref() {
                    if let Report::Done { code } = r {
                        record(code.clamp(0, 255));
                        done = true;
                        break;
                    }
                }
            }
            let code = match m.wait() {
                Ok(s) => s
                    .code()
                    .or_else(|| s.signal().map(|n| 128 + n))
                    .unwrap_or(125),
                Err(_) => 125,
            };
            if !done {
                record(code);
            }
        });
    if let Err(e) = reaper {
        tracing::warn!(error = %e, "cannot start a thread to reap a monitor");
    }
    match failed {
        None => Ok(()),
        Some(m) => Err(ApiError::BadRequest(m)),
    }
}

/// `POST /containers/{id}/start`.
pub async fn start(state: &Arc<State>, id: &str) -> Result<Response<Body>, ApiError> {
    let id = id.to_string();
    let st = state.clone();
    let started = state
        .engine(move |e| {
            let inst = e.get(&id)?;
            if inst.status == Status::Running {
                return Ok(false);
            }
            start_instance(&st, e, &inst)?;
            Ok(true)
        })
        .await?;
    Ok(http::empty(if started {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }))
}

/// `POST /containers/{id}/stop?t=` and `/restart?t=`.
pub async fn stop(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
    restart: bool,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let t = q.int("t")?.or(q.int("timeout")?);
    let timeout = match t {
        None => None,
        Some(t) if t < 0 => Some(0),
        Some(t) => Some(u32::try_from(t).map_err(|_| bad("t", format!("{t} is too large")))?),
    };
    let signal = q
        .get("signal")
        .filter(|s| !s.is_empty())
        .map(parse_signal)
        .transpose()
        .map_err(|e| bad("signal", e))?;
    let id = id.to_string();
    let st = state.clone();
    let changed = state
        .engine(move |e| {
            let inst = e.get(&id)?;
            let was_running = inst.status == Status::Running;
            if was_running {
                if let Some(sig) = signal {
                    let _ = e.kill(&inst, sig);
                }
                e.stop(&inst.id, timeout)?;
            }
            if restart {
                let inst = e.wait(&inst.id, Some(std::time::Duration::from_secs(10)))?;
                start_instance(&st, e, &inst)?;
                return Ok(true);
            }
            Ok(was_running)
        })
        .await?;
    Ok(http::empty(if changed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }))
}

/// `POST /containers/{id}/kill?signal=`.
pub async fn kill(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let sig = match q.get("signal").filter(|s| !s.is_empty()) {
        Some(s) => parse_signal(s).map_err(|e| bad("signal", e))?,
        None => libc::SIGKILL,
    };
    let id = id.to_string();
    state
        .engine(move |e| {
            let inst = e.get(&id)?;
            if inst.status != Status::Running {
                return Err(ApiError::Conflict(format!(
                    "Cannot kill container: {id}: Container {} is not running",
                    inst.id
                )));
            }
            Ok(e.kill(&inst, sig)?)
        })
        .await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// `DELETE /containers/{id}?force=&v=`.
pub async fn remove(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let force = q.flag("force");
    let volumes = q.flag("v");
    if q.flag("link") {
        return Err(bad("link", "links are not supported by vessel"));
    }
    let id = id.to_string();
    let gone = state
        .engine_once(move |e| {
            let inst = e.get(&id)?;
            if inst.status == Status::Running && !force {
                return Err(ApiError::Conflict(format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    inst.name
                )));
            }
            e.remove_with(&inst.id, force, volumes)?;
            Ok(inst.id)
        })
        .await?;
    // Attach connections waiting for a start that will not come.
    state
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&gone);
    state.changed.send_modify(|n| *n += 1);
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/pause` and `/unpause`.
pub async fn pause(state: &Arc<State>, id: &str, freeze: bool) -> Result<Response<Body>, ApiError> {
    let id = id.to_string();
    state
        .engine(move |e| {
            if freeze {
                e.pause(&id)?;
            } else {
                e.unpause(&id)?;
            }
            Ok(())
        })
        .await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let name = q
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("name", "missing: the new name"))?
        .to_string();
    let id = id.to_string();
    state
        .engine(move |e| {
            e.rename(&id, &name)?;
            Ok(())
        })
        .await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/resize?h=&w=`: the terminal size of a running container (a
/// no-op for one without a terminal, as in Docker).
pub async fn resize(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let (h, w) = crate::exec::size_query(req)?;
    let id = id.to_string();
    state
        .engine(move |e| {
            e.resize(&id, h, w)?;
            Ok(())
        })
        .await?;
    Ok(http::empty(StatusCode::OK))
}

/// `GET /containers/{id}/top`: `ps -ef`'s columns (no `ps_args`: vessel reads /proc).
pub async fn top(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    if let Some(a) = q.get("ps_args").filter(|a| !a.is_empty() && *a != "-ef") {
        return Err(bad(
            "ps_args",
            format!("{a:?}: ps options are not supported by vessel, which lists processes with ps -ef's columns"),
        ));
    }
    let id = id.to_string();
    let procs = state.engine(move |e| Ok(e.top(&id)?)).await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({
            "Titles": vessel_engine::lifecycle::TOP_TITLES,
            "Processes": procs.iter().map(|p| p.row()).collect::<Vec<_>>(),
        }),
    ))
}

/// `POST /containers/prune`: removes every instance that is not running (as `vessel
/// container prune`). Filters (`until`, `label`) are refused by name, not ignored.
pub async fn prune(
    state: &Arc<State>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    filters(http::query(req).get("filters"), &[])?;
    let v = state
        .engine_once(|e| {
            let (ids, bytes) = e.container_prune()?;
            Ok(json!({ "ContainersDeleted": ids, "SpaceReclaimed": bytes }))
        })
        .await?;
    Ok(http::json(StatusCode::OK, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<CreateRequest, ApiError> {
        parse_create(v)
    }

    #[test]
    fn host_config_maps_onto_the_run_options() {
        let c = parse(json!({
            "Image": "busybox", "Cmd": ["echo", "hi"], "Entrypoint": ["/bin/sh", "-c"],
            "Env": ["A=1"], "Labels": {"k": "v"}, "Tty": false, "OpenStdin": true,
            "HostConfig": {
                "Binds": ["/src:/dst:ro"], "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                "Memory": 67108864, "NanoCpus": 500000000, "PidsLimit": 64, "NetworkMode": "default",
                "ReadonlyRootfs": true, "Init": true, "AutoRemove": true, "Runtime": "vessel-vm",
                "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "LogConfig": {"Type": "", "Config": {}}
            }
        }))
        .unwrap();
        let o = &c.opts;
        assert_eq!(c.image, "busybox");
        assert_eq!(o.entrypoint.as_deref(), Some("/bin/sh"));
        assert_eq!(o.command, ["-c", "echo", "hi"]);
        assert_eq!(o.volumes, ["/src:/dst:ro"]);
        assert_eq!(o.publish, ["8080:80/tcp"]);
        assert_eq!(o.memory.as_deref(), Some("67108864"));
        assert_eq!(o.cpus.as_deref(), Some("0.5"));
        assert_eq!(o.pids_limit, Some(64));
        assert_eq!(o.network, None);
        assert!(o.read_only && o.init && o.rm && o.interactive);
        assert_eq!(o.isolation, Isolation::Vm);
        assert_eq!(o.labels, ["k=v"]);
    }

    #[test]
    fn unsupported_values_are_refused_by_field_name() {
        for (body, field) in [
            (
                json!({"Image": "b", "HostConfig": {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}}}),
                "HostConfig.RestartPolicy.MaximumRetryCount",
            ),
            (
                json!({"Image": "b", "HostConfig": {"Devices": [{"PathOnHost": "/dev/sda", "Major": 8}]}}),
                "HostConfig.Devices",
            ),
            (
                json!({"Image": "b", "HostConfig": {"Runtime": "kata"}}),
                "HostConfig.Runtime",
            ),
            (json!({"Image": "b", "Memory": "lots"}), "Memory"),
            (
                json!({"Image": "b", "HostConfig": {"Memory": "lots"}}),
                "HostConfig.Memory",
            ),
            (json!({"Image": "b", "Cmd": [1, 2]}), "Cmd"),
            (json!({"Image": 5}), "Image"),
        ] {
            let e = parse(body.clone())
                .err()
                .unwrap_or_else(|| panic!("{body} accepted"));
            assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}");
            assert!(e.to_string().starts_with(field), "{body}: {e}");
        }
    }

    #[test]
    fn zero_values_and_client_defaults_are_accepted() {
        let c = parse(json!({
            "Image": "b", "Domainname": "", "Volumes": {}, "HostConfig": {
                "Privileged": false, "Devices": [], "MemorySwap": 0, "CgroupnsMode": "private",
                "Isolation": "", "ConsoleSize": [0, 0], "OomKillDisable": false
            }
        }));
        assert!(c.is_ok(), "{:?}", c.err());
    }

    #[test]
    fn filters_take_both_forms_and_refuse_unknown_keys() {
        let f = filters(
            Some(r#"{"name":["web"],"status":{"exited":true}}"#),
            LIST_FILTERS,
        )
        .unwrap();
        assert_eq!(
            f,
            vec![
                ("name".into(), vec!["web".into()]),
                ("status".into(), vec!["exited".into()])
            ]
        );
        assert!(filters(Some(r#"{"ancestor":["x"]}"#), LIST_FILTERS)
            .unwrap_err()
            .to_string()
            .contains("ancestor"));
        assert!(filters(Some("{bad"), LIST_FILTERS).is_err());
    }
}
