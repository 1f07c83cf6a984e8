//! `GET /containers/{id}/stats` (Docker's `StatsJSON`, from the engine's usage) and
//! `POST /containers/{id}/update` (new limits and restart policy while it runs).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use vessel_engine::backend::{Limits, Usage};

use crate::containers::{bad, Fields};
use crate::http::{self, Body};
use crate::{ApiError, State};

/// The host's CPU time, all CPUs, in nanoseconds (`/proc/stat`'s first line), and its
/// online CPUs: what Docker's clients divide a container's CPU time by.
fn host_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    (ticks * (1_000_000_000 / hz), cpus.max(1))
}

/// One sample: the instance's usage and the host's CPU time then.
struct Sample {
    usage: Usage,
    system_ns: u64,
    cpus: u64,
    at: chrono::DateTime<chrono::Utc>,
}

fn cpu_json(s: Option<&Sample>) -> Value {
    match s {
        Some(s) => json!({
            "cpu_usage": {"total_usage": s.usage.cpu_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": s.system_ns,
            "online_cpus": s.cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }),
        None => json!({
            "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }),
    }
}

/// Docker's `StatsJSON` of `now`, with `pre` as its `precpu_stats`.
fn stats_json(id: &str, name: &str, now: &Sample, pre: Option<&Sample>) -> Value {
    let u = &now.usage;
    let zero = "0001-01-01T00:00:00Z".to_string();
    let (rx, tx) = u.net.unwrap_or((0, 0));
    let (read, written) = u.block.unwrap_or((0, 0));
    json!({
        "id": id,
        "name": format!("/{name}"),
        "read": now.at.to_rfc3339(),
        "preread": pre.map_or(zero, |p| p.at.to_rfc3339()),
        "pids_stats": {"current": u.pids.unwrap_or(0)},
        "cpu_stats": cpu_json(Some(now)),
        "precpu_stats": cpu_json(pre),
        "memory_stats": {
            "usage": u.memory,
            // No limit: the host's memory, as Docker shows it.
            "limit": u.memory_limit.filter(|&l| l < (1 << 62)).unwrap_or_else(vessel_engine::lifecycle::host_memory),
            "stats": {},
        },
        "networks": if u.net.is_some() {
            json!({"eth0": {"rx_bytes": rx, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0,
                            "tx_bytes": tx, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0}})
        } else {
            json!({})
        },
        "blkio_stats": {"io_service_bytes_recursive": if u.block.is_some() {
            json!([{"major": 0, "minor": 0, "op": "read", "value": read},
                   {"major": 0, "minor": 0, "op": "write", "value": written}])
        } else {
            Value::Null
        }},
        "num_procs": 0,
        "storage_stats": {},
    })
}

async fn sample(state: &Arc<State>, id: &str) -> Result<(String, String, Sample), ApiError> {
    let key = id.to_string();
    let (inst, usage) = state.engine(move |e| Ok(e.usage(&key)?)).await?;
    let (system_ns, cpus) = host_cpu();
    Ok((
        inst.id,
        inst.name,
        Sample {
            usage,
            system_ns,
            cpus,
            at: chrono::Utc::now(),
        },
    ))
}

/// `GET /containers/{id}/stats?stream=&one-shot=`: a running instance's usage as
/// Docker's `StatsJSON`. `stream=false` answers one sample taken a second after the first
/// (its `precpu_stats`), so the client can compute CPU %; `one-shot` answers at once,
/// without `precpu_stats`; a stream sends one a second until the client goes or the
/// instance stops.
pub async fn stats(
    state: &Arc<State>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = http::query(req);
    let stream = q.get("stream").is_none_or(|_| q.flag("stream"));
    let one_shot = q.flag("one-shot");
    if one_shot && stream {
        return Err(ApiError::BadRequest(
            "one-shot: only with stream=false".into(),
        ));
    }
    let (full_id, name, first) = sample(state, id).await?;
    if one_shot {
        return Ok(http::json(
            StatusCode::OK,
            &stats_json(&full_id, &name, &first, None),
        ));
    }
    if !stream {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, _, now) = sample(state, id).await?;
        return Ok(http::json(
            StatusCode::OK,
            &stats_json(&full_id, &name, &now, Some(&first)),
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let st = state.clone();
    let id = full_id.clone();
    tokio::spawn(async move {
        let mut pre = first;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Ok((_, _, now)) = sample(&st, &id).await else {
                break; // stopped or gone: the stream ends
            };
            let mut line = stats_json(&id, &name, &now, Some(&pre)).to_string();
            line.push('\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                break; // the client went
            }
            pre = now;
        }
    });
    Ok(http::streamed(StatusCode::OK, "application/json", rx))
}

/// `POST /containers/{id}/update`: Memory, NanoCpus, CpuShares, CpusetCpus, PidsLimit and
/// RestartPolicy, as `vessel update` changes them; any other field set is refused by name.
pub async fn update(
    state: &Arc<State>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let v = http::object_body(req).await?;
    let mut f = Fields::new("", Some(v))?;
    let positive = |f: &mut Fields, k: &str| -> Result<Option<u64>, ApiError> {
        match f.int(k)? {
            None | Some(0) => Ok(None),
            Some(n) if n < 0 => Err(bad(k, format!("{n} is negative"))),
            Some(n) => Ok(Some(n as u64)),
        }
    };
    let limits = Limits {
        memory: positive(&mut f, "Memory")?,
        cpus: positive(&mut f, "NanoCpus")?.map(|n| n as f64 / 1e9),
        pids_limit: f.int("PidsLimit")?.filter(|&p| p != 0),
        cpu_shares: positive(&mut f, "CpuShares")?,
        cpuset_cpus: f.nonempty("CpusetCpus")?,
    };
    let policy = crate::containers::restart_policy("RestartPolicy", f.take("RestartPolicy"))?
        .map(|p| vessel_engine::restart::RestartPolicy::parse(&p))
        .transpose()?;
    // The docker CLI sends every other field at its zero value: accepted as unset.
    f.finish()?;
    if limits == Limits::default() && policy.is_none() {
        return Err(ApiError::BadRequest(
            "update: nothing to change (Memory, NanoCpus, CpuShares, CpusetCpus, PidsLimit, RestartPolicy)".into(),
        ));
    }
    let key = id.to_string();
    state
        .engine(move |e| {
            if let Some(p) = policy {
                e.set_restart_policy(&key, p)?;
            }
            if limits != Limits::default() {
                e.update(&key, &limits)?;
            }
            Ok(())
        })
        .await?;
    Ok(http::json(StatusCode::OK, &json!({ "Warnings": [] })))
}
