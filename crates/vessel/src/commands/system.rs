//! `container prune`, `image prune`, `system df` and `system prune`, in Docker's words.

use crate::cli::SystemCommand;
use crate::{CmdResult, Failure};
use vessel_engine::catalogue::Status;
use vessel_engine::{Engine, EngineError};
use vessel_image::store::{dir_size, Removed};

use super::images::{human_size, print_table};

fn fail(e: impl Into<EngineError>) -> Failure {
    Failure::new(1, e.into())
}

fn section(title: &str, items: &[String]) {
    if !items.is_empty() {
        println!("{title}:");
        for i in items {
            println!("{i}");
        }
        println!();
    }
}

fn prune_containers(engine: &Engine) -> Result<u64, Failure> {
    let (ids, bytes) = engine.container_prune().map_err(fail)?;
    section("Deleted Containers", &ids);
    Ok(bytes)
}

fn prune_images(engine: &Engine, all: bool) -> Result<u64, Failure> {
    let (removed, bytes) = engine.image_prune(all).map_err(fail)?;
    let lines: Vec<String> = removed
        .iter()
        .map(|r| match r {
            Removed::Untagged(t) => format!("untagged: {t}"),
            Removed::Deleted(d) => format!("deleted: {d}"),
        })
        .collect();
    section("Deleted Images", &lines);
    Ok(bytes)
}

/// `vessel container prune`.
pub fn container_prune(engine: &Engine) -> CmdResult {
    let bytes = prune_containers(engine)?;
    println!("Total reclaimed space: {}", human_size(bytes));
    Ok(0)
}

/// `vessel image prune [-a]`.
pub fn image_prune(engine: &Engine, all: bool) -> CmdResult {
    let bytes = prune_images(engine, all)?;
    println!("Total reclaimed space: {}", human_size(bytes));
    Ok(0)
}

/// `vessel info` (`vessel system info`): Docker's `/info` document as `docker info`
/// prints it, or as JSON, or through a template.
pub fn info(engine: &Engine, format: Option<&crate::template::Format>) -> CmdResult {
    use crate::template::Format;
    let doc = engine.info().map_err(fail)?;
    match format {
        Some(Format::Json) => {
            println!("{}", serde_json::to_string(&doc).unwrap_or_default());
            return Ok(0);
        }
        Some(f @ Format::Template { .. }) => {
            crate::template::print_inspect(vec![doc], Some(f))?;
            return Ok(0);
        }
        Some(Format::Table) | None => {}
    }
    let s = |k: &str| match &doc[k] {
        serde_json::Value::String(v) => v.clone(),
        v => v.to_string(),
    };
    let mut runtimes: Vec<&String> = doc["Runtimes"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    runtimes.sort();
    let mut out = String::from("Server:\n");
    out.push_str(&format!(" Containers: {}\n", s("Containers")));
    for (label, key) in [
        ("Running", "ContainersRunning"),
        ("Paused", "ContainersPaused"),
        ("Stopped", "ContainersStopped"),
    ] {
        out.push_str(&format!("  {label}: {}\n", s(key)));
    }
    for (label, key) in [
        ("Images", "Images"),
        ("Server Version", "ServerVersion"),
        ("Storage Driver", "Driver"),
        ("Logging Driver", "LoggingDriver"),
        ("Cgroup Driver", "CgroupDriver"),
        ("Cgroup Version", "CgroupVersion"),
    ] {
        out.push_str(&format!(" {label}: {}\n", s(key)));
    }
    out.push_str(&format!(
        " Runtimes: {}\n Default Runtime: {}\n Security Options:\n  seccomp\n   Profile: builtin\n",
        runtimes
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        s("DefaultRuntime")
    ));
    for (label, key) in [
        ("Kernel Version", "KernelVersion"),
        ("Operating System", "OperatingSystem"),
        ("OSType", "OSType"),
        ("Architecture", "Architecture"),
        ("CPUs", "NCPU"),
    ] {
        out.push_str(&format!(" {label}: {}\n", s(key)));
    }
    out.push_str(&format!(
        " Total Memory: {}\n",
        human_size(doc["MemTotal"].as_u64().unwrap_or(0))
    ));
    for (label, key) in [
        ("Name", "Name"),
        ("ID", "ID"),
        ("Docker Root Dir", "DockerRootDir"),
    ] {
        out.push_str(&format!(" {label}: {}\n", s(key)));
    }
    print!("{out}");
    Ok(0)
}

/// Runs a `vessel system` subcommand.
pub fn run(engine: &Engine, cmd: &SystemCommand) -> CmdResult {
    match cmd {
        SystemCommand::Info { format } => info(engine, format.as_ref()),
        SystemCommand::Prune {
            all,
            volumes,
            force: _,
        } => {
            let mut bytes = prune_containers(engine)?;
            let nets = engine.networks().prune().map_err(fail)?;
            section("Deleted Networks", &nets);
            if *volumes {
                let (names, b) = engine.volume_prune(true).map_err(fail)?;
                section("Deleted Volumes", &names);
                bytes += b;
            }
            bytes += prune_images(engine, *all)?;
            println!("Total reclaimed space: {}", human_size(bytes));
            Ok(0)
        }
        SystemCommand::Df => {
            let store = engine.store().map_err(fail)?;
            let images = store.list().map_err(fail)?;
            let instances = engine.list().map_err(fail)?;
            let used: std::collections::HashSet<&str> =
                instances.iter().map(|i| i.image_id.as_str()).collect();
            let image_size: u64 = images.iter().map(|i| i.size).sum();
            let unused_size: u64 = images
                .iter()
                .filter(|i| !used.contains(i.id.to_string().as_str()))
                .map(|i| i.size)
                .sum();
            let active_images = images
                .iter()
                .filter(|i| used.contains(i.id.to_string().as_str()))
                .count();
            let sizes: Vec<(bool, u64)> = instances
                .iter()
                .map(|i| {
                    (
                        i.status == Status::Running,
                        dir_size(&engine.instance_dir(&i.id)),
                    )
                })
                .collect();
            let volumes = engine.volumes().list().map_err(fail)?;
            let mut vol_active = 0;
            let (mut vol_size, mut vol_free) = (0, 0);
            for v in &volumes {
                let size = vessel_engine::volumes::Volumes::size(v);
                vol_size += size;
                if engine.volume_users(&v.name).map_err(fail)?.is_empty() {
                    vol_free += size;
                } else {
                    vol_active += 1;
                }
            }
            let cache = dir_size(&engine.root().join("build-cache"));
            let pct = |part: u64, whole: u64| match (part * 100).checked_div(whole) {
                Some(p) => format!("{} ({p}%)", human_size(part)),
                None => human_size(part),
            };
            let total: u64 = sizes.iter().map(|s| s.1).sum();
            let idle: u64 = sizes.iter().filter(|s| !s.0).map(|s| s.1).sum();
            let rows = [
                [
                    "Images".into(),
                    images.len().to_string(),
                    active_images.to_string(),
                    human_size(image_size),
                    pct(unused_size, image_size),
                ],
                [
                    "Containers".into(),
                    instances.len().to_string(),
                    sizes.iter().filter(|s| s.0).count().to_string(),
                    human_size(total),
                    pct(idle, total),
                ],
                [
                    "Local Volumes".into(),
                    volumes.len().to_string(),
                    vol_active.to_string(),
                    human_size(vol_size),
                    pct(vol_free, vol_size),
                ],
                [
                    "Build Cache".into(),
                    "-".into(),
                    "-".into(),
                    human_size(cache),
                    human_size(cache),
                ],
            ];
            print_table(
                &mut std::io::stdout().lock(),
                &["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
                &rows,
            );
            Ok(0)
        }
    }
}

/// `vessel events`: the engine's event log, from `since` to `until` (following without it).
pub fn events(
    engine: &vessel_engine::Engine,
    since: Option<&str>,
    until: Option<&str>,
    filters: &[String],
    format: crate::cli::Format,
) -> CmdResult {
    use std::io::Write;
    let now = chrono::Utc::now();
    let time = |flag: &str, v: Option<&str>| -> Result<Option<i64>, Failure> {
        v.map(|v| vessel_engine::events::parse_time(v, now))
            .transpose()
            .map_err(|e| Failure::new(125, format!("--{flag}: {e}")))
    };
    let (since, until) = (time("since", since)?, time("until", until)?);
    let mut f: Vec<(String, Vec<String>)> = Vec::new();
    for kv in filters {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Failure::new(125, format!("--filter {kv:?}: expected KEY=VALUE")))?;
        if !vessel_engine::events::FILTER_KEYS.contains(&k) {
            return Err(Failure::new(
                125,
                format!(
                    "--filter {kv:?}: unknown key {k} (known: {})",
                    vessel_engine::events::FILTER_KEYS.join(", ")
                ),
            ));
        }
        match f.iter_mut().find(|(key, _)| key == k) {
            Some((_, vals)) => vals.push(v.to_string()),
            None => f.push((k.to_string(), vec![v.to_string()])),
        }
    }
    let mut out = std::io::stdout().lock();
    // A template that fails on an event ends the command with its error (status 1).
    let mut broken: Option<String> = None;
    vessel_engine::events::watch(
        engine.root(),
        since,
        until,
        &f,
        || true,
        |ev| {
            let line = match &format {
                crate::cli::Format::Json => serde_json::to_string(ev).unwrap_or_default(),
                crate::cli::Format::Template { parts, .. } => {
                    let row = match serde_json::to_value(ev) {
                        Ok(serde_json::Value::Object(m)) => m,
                        _ => serde_json::Map::new(),
                    };
                    match crate::template::render(false, parts, &[row], &[]) {
                        Ok(t) => t.trim_end_matches('\n').to_string(),
                        Err(e) => {
                            broken = Some(e.to_string());
                            return false;
                        }
                    }
                }
                crate::cli::Format::Table => {
                    let t = chrono::DateTime::from_timestamp_nanos(ev.time_nano)
                        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                    let attrs: Vec<String> = ev
                        .actor
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!(
                        "{t} {} {} {} ({})",
                        ev.kind,
                        ev.action,
                        ev.actor.id,
                        attrs.join(", ")
                    )
                }
            };
            writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
        },
    );
    match broken {
        Some(e) => Err(Failure::new(1, e)),
        None => Ok(0),
    }
}
