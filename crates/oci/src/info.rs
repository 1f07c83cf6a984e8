//! ps, update, events, features: looking at and adjusting a container's cgroup.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::Ctx;

/// `ps [--format table|json] ID [PS OPTIONS]`: the container's processes; a table is
/// the host's `ps` output (`-ef` unless options are given) cut to them.
pub fn ps(ctx: &Ctx, a: liboci_cli::Ps) -> Result<u8> {
    let pids: Vec<i32> = ctx
        .runtime
        .pids(&a.container_id)?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    match a.format.as_str() {
        "json" => {
            println!("{}", Value::from(pids));
            Ok(0)
        }
        "table" => {
            let opts = if a.ps_options.is_empty() {
                vec!["-ef".to_string()]
            } else {
                a.ps_options.clone()
            };
            let out = std::process::Command::new("ps")
                .args(&opts)
                .output()
                .map_err(|e| Error::Io {
                    op: "run",
                    path: "ps".into(),
                    source: e,
                })?;
            if !out.status.success() {
                return Err(Error::Usage(format!(
                    "ps {}: {}",
                    opts.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "ps {}: no PID column in its output",
                        opts.join(" ")
                    ))
                })?;
            println!("{header}");
            for l in lines {
                let pid = l.split_whitespace().nth(col).and_then(|p| p.parse().ok());
                if pid.is_some_and(|p: i32| pids.contains(&p)) {
                    println!("{l}");
                }
            }
            Ok(0)
        }
        other => Err(Error::Usage(format!(
            "invalid --format {other:?}: use table or json"
        ))),
    }
}

/// `update [--resources FILE|-] [--memory N ...] ID`: the flags override the file.
pub fn update(ctx: &Ctx, a: liboci_cli::Update) -> Result<u8> {
    ctx.no_systemd()?;
    if let Some(s) = a.l3_cache_schema.as_ref().or(a.mem_bw_schema.as_ref()) {
        return Err(Error::Unsupported(format!("Intel RDT schemata ({s:?})")));
    }
    let mut res = match &a.resources {
        Some(path) => read_json(path)?,
        None => json!({}),
    };
    let Value::Object(obj) = &mut res else {
        return Err(Error::BadJson {
            what: "resources",
            path: a.resources.clone().unwrap_or_default(),
            reason: "not a JSON object".into(),
        });
    };
    let mut set = |section: &str, key: &str, v: Option<Value>| {
        if let Some(v) = v {
            let s = obj
                .entry(section)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = s {
                m.insert(key.into(), v);
            }
        }
    };
    set("blockIO", "weight", a.blkio_weight.map(Value::from));
    set("cpu", "period", a.cpu_period.map(Value::from));
    set("cpu", "quota", a.cpu_quota.map(Value::from));
    set("cpu", "realtimePeriod", a.cpu_rt_period.map(Value::from));
    set("cpu", "realtimeRuntime", a.cpu_rt_runtime.map(Value::from));
    set("cpu", "shares", a.cpu_share.map(Value::from));
    set("cpu", "cpus", a.cpuset_cpus.clone().map(Value::from));
    set("cpu", "mems", a.cpuset_mems.clone().map(Value::from));
    set("memory", "limit", a.memory.map(Value::from));
    set(
        "memory",
        "reservation",
        a.memory_reservation.map(Value::from),
    );
    set("memory", "swap", a.memory_swap.map(Value::from));
    set("pids", "limit", a.pids_limit.map(Value::from));
    let resources: oci_spec::runtime::LinuxResources =
        serde_json::from_value(res).map_err(|e| Error::BadJson {
            what: "resources",
            path: a.resources.clone().unwrap_or_else(|| "(flags)".into()),
            reason: e.to_string(),
        })?;
    if resources.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(Error::Unsupported(
            "changing device rules with update".into(),
        ));
    }
    ctx.runtime.update(&a.container_id, &resources)?;
    Ok(0)
}

fn read_json(path: &Path) -> Result<Value> {
    let mut text = Vec::new();
    let r = if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut text).map(|_| ())
    } else {
        std::fs::read(path).map(|t| text = t)
    };
    r.map_err(|e| Error::Io {
        op: "read the resources file",
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_slice(&text).map_err(|e| Error::BadJson {
        what: "resources",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn stats_event(ctx: &Ctx, id: &str) -> Result<Value> {
    let s = ctx.runtime.stats(id)?;
    Ok(json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {
                "usage": {"total": s.cpu_usage_ns},
                "throttling": {"throttledPeriods": s.cpu_throttled_periods},
            },
            "memory": {
                "usage": {
                    "usage": s.memory_usage,
                    "max": s.memory_max_usage.unwrap_or(0),
                    "limit": s.memory_limit.unwrap_or(u64::MAX),
                },
                "oomKills": s.oom_kills,
            },
            "pids": {"current": s.pids_current, "limit": s.pids_limit.unwrap_or(0)},
        }
    }))
}

/// `events [--stats] [--interval N] ID`: one stats event, or one every interval until
/// the container is gone or stopped (an `oom` event when the OOM killer struck).
pub fn events(ctx: &Ctx, a: liboci_cli::Events) -> Result<u8> {
    let id = a.container_id.as_str();
    if a.stats {
        println!("{}", stats_event(ctx, id)?);
        return Ok(0);
    }
    if a.interval == 0 {
        return Err(Error::Usage(
            "invalid --interval 0: use at least 1 second".into(),
        ));
    }
    let mut oom_seen = false;
    loop {
        let st = ctx.runtime.state(id)?;
        let ev = stats_event(ctx, id)?;
        let ooms = ev["data"]["memory"]["oomKills"].as_u64().unwrap_or(0);
        if ooms > 0 && !oom_seen {
            oom_seen = true;
            println!("{}", json!({"type": "oom", "id": id}));
        }
        println!("{ev}");
        if st.status == vessel_container::Status::Stopped {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_secs(a.interval.into()));
    }
}

/// `features`: what this runtime implements, in runc's format (runtime-spec
/// features.md).
pub fn features() -> Result<u8> {
    let caps: Vec<String> = {
        let mut v: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
        v.sort();
        v
    };
    let mode = vessel_container::cgroup_mode().ok();
    let f = json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        // Hooks are not run (a warning says so when a spec has them).
        "hooks": [],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime",
            "nostrictatime", "nosuid", "private", "rbind", "relatime", "ro", "rprivate",
            "rshared", "rslave", "rw", "shared", "slave", "strictatime", "suid", "sync",
            "idmap", "ridmap", "tmpcopyup"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false,
                "rdma": false,
                "current": mode.map(|m| format!("{m:?}").to_lowercase()),
            },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                    "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86_64"],
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
        },
        "annotations": {
            "io.github.vessel.version": env!("CARGO_PKG_VERSION"),
        },
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&f).map_err(|e| Error::Usage(e.to_string()))?
    );
    Ok(0)
}
