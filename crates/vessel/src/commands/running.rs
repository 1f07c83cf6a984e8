//! Commands on running instances: `pause`, `unpause`, `rename`, `top`, `stats`,
//! `update`. Each is one engine call; this file prints.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use vessel_engine::backend::{Limits, Usage};
use vessel_engine::catalogue::{Instance, Status};
use vessel_engine::{Engine, EngineError};

use super::containers::{each, short};
use super::images::print_table;
use crate::cli::{Format, StatsArgs, UpdateArgs};
use crate::{CmdResult, Failure};

/// `vessel pause`.
pub fn pause(engine: &Engine, names: &[String]) -> CmdResult {
    each(names, |n| engine.pause(n).map(|_| ()))
}

/// `vessel unpause`.
pub fn unpause(engine: &Engine, names: &[String]) -> CmdResult {
    each(names, |n| engine.unpause(n).map(|_| ()))
}

/// `vessel rename`: prints nothing, as Docker.
pub fn rename(engine: &Engine, instance: &str, new_name: &str) -> CmdResult {
    engine
        .rename(instance, new_name)
        .map_err(|e| Failure::new(1, e))?;
    Ok(0)
}

/// `vessel top`.
pub fn top(engine: &Engine, instance: &str, ps_args: &[String]) -> CmdResult {
    if let Some(a) = ps_args.first() {
        return Err(Failure::new(
            1,
            format!(
                "top: ps options ({a}, ...) are not supported: vessel lists the processes itself, with ps -ef's columns"
            ),
        ));
    }
    let procs = engine.top(instance).map_err(|e| Failure::new(1, e))?;
    let rows: Vec<[String; 8]> = procs
        .iter()
        .map(|p| {
            let r = p.row();
            std::array::from_fn(|i| r[i].clone())
        })
        .collect();
    print_table(
        &mut std::io::stdout().lock(),
        &vessel_engine::lifecycle::TOP_TITLES,
        &rows,
    );
    Ok(0)
}

/// `vessel update`.
pub fn update(engine: &Engine, a: &UpdateArgs) -> CmdResult {
    let bad = |e: EngineError| Failure::new(1, e);
    let memory = a
        .memory
        .as_deref()
        .map(|m| vessel_engine::request::parse_size("--memory", m))
        .transpose()
        .map_err(bad)?;
    let cpus = match &a.cpus {
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => Some(v),
            _ => {
                return Err(Failure::new(
                    1,
                    format!("invalid value {s:?} for --cpus: expected a positive number like 0.5"),
                ))
            }
        },
        None => None,
    };
    if a.pids_limit.is_some_and(|p| p == 0 || p < -1) {
        return Err(Failure::new(
            1,
            "--pids-limit must be positive (or -1 for unlimited)",
        ));
    }
    if let Some(s) = a.cpu_shares {
        if !(2..=262_144).contains(&s) {
            return Err(Failure::new(
                1,
                format!("--cpu-shares {s}: expected a weight from 2 to 262144"),
            ));
        }
    }
    let limits = Limits {
        memory,
        cpus,
        pids_limit: a.pids_limit,
        cpu_shares: a.cpu_shares.map(|s| s as u64),
        cpuset_cpus: a.cpuset_cpus.clone(),
    };
    let restart = a
        .restart
        .as_deref()
        .map(vessel_engine::restart::RestartPolicy::parse)
        .transpose()
        .map_err(bad)?;
    if limits == Limits::default() && restart.is_none() {
        return Err(Failure::new(
            1,
            "update: give at least one of --memory, --cpus, --pids-limit, --cpu-shares, --cpuset-cpus, --restart",
        ));
    }
    each(&a.instances, |n| {
        if let Some(p) = restart {
            engine.set_restart_policy(n, p)?;
        }
        if limits != Limits::default() {
            engine.update(n, &limits)?;
        }
        Ok(())
    })
}

/// One row of `stats`.
struct Sample {
    inst: Instance,
    /// CPU time then, and when it was read.
    first: Option<(u64, Instant)>,
    usage: Result<Usage, String>,
    cpu_percent: Option<f64>,
}

/// `vessel stats`.
pub fn stats(engine: &Engine, a: &StatsArgs) -> CmdResult {
    let pick = || -> Result<Vec<Instance>, Failure> {
        if a.instances.is_empty() {
            let all = engine.list().map_err(|e| Failure::new(1, e))?;
            Ok(all
                .into_iter()
                .filter(|i| a.all || i.status == Status::Running)
                .collect())
        } else {
            a.instances
                .iter()
                .map(|n| engine.get(n).map_err(|e| Failure::new(1, e)))
                .collect()
        }
    };
    let terminal = std::io::stdout().is_terminal();
    loop {
        let mut samples: Vec<Sample> = pick()?
            .into_iter()
            .map(|inst| {
                let u = engine.usage(&inst.id).map(|(_, u)| u);
                Sample {
                    first: u.as_ref().ok().map(|u| (u.cpu_ns, Instant::now())),
                    inst,
                    usage: u.map_err(|e| e.to_string()),
                    cpu_percent: None,
                }
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        for s in &mut samples {
            if let Some((cpu0, t0)) = s.first {
                s.usage = engine
                    .usage(&s.inst.id)
                    .map(|(_, u)| u)
                    .map_err(|e| e.to_string());
                if let Ok(u) = &s.usage {
                    let wall = t0.elapsed().as_nanos().max(1) as f64;
                    s.cpu_percent = Some(u.cpu_ns.saturating_sub(cpu0) as f64 / wall * 100.0);
                }
            }
        }
        if crate::template::print_if_template(
            &a.format,
            || {
                samples
                    .iter()
                    .map(|s| match json_row(s, a.no_trunc) {
                        serde_json::Value::Object(m) => m,
                        _ => serde_json::Map::new(),
                    })
                    .collect()
            },
            &[
                ("ID", "CONTAINER ID"),
                ("CPUPerc", "CPU %"),
                ("MemUsage", "MEM USAGE / LIMIT"),
                ("MemPerc", "MEM %"),
                ("NetIO", "NET I/O"),
                ("BlockIO", "BLOCK I/O"),
            ],
        )? {
            if a.no_stream {
                return Ok(0);
            }
            continue;
        }
        let mut out = std::io::stdout().lock();
        if a.format == Format::Json {
            for s in &samples {
                let _ = writeln!(out, "{}", json_row(s, a.no_trunc));
            }
        } else {
            if terminal && !a.no_stream {
                let _ = write!(out, "\x1b[2J\x1b[H");
            }
            let rows: Vec<[String; 8]> = samples.iter().map(|s| table_row(s, a.no_trunc)).collect();
            print_table(
                &mut out,
                &[
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "MEM %",
                    "NET I/O",
                    "BLOCK I/O",
                    "PIDS",
                ],
                &rows,
            );
        }
        let _ = out.flush();
        // Stopped instances have no usage: named ones that are not running fail the run
        // as Docker's does, after the table.
        let stopped: Vec<&Sample> = samples.iter().filter(|s| s.first.is_none()).collect();
        if a.no_stream {
            if !a.instances.is_empty() {
                if let Some(s) = stopped.first() {
                    if let Err(e) = &s.usage {
                        return Err(Failure::new(1, e.clone()));
                    }
                }
            }
            return Ok(0);
        }
    }
}

/// The memory limit shown: the instance's, else the host's memory.
fn shown_limit(u: &Usage) -> u64 {
    u.memory_limit
        .filter(|&l| l < (1 << 62))
        .unwrap_or_else(vessel_engine::lifecycle::host_memory)
}

fn table_row(s: &Sample, full: bool) -> [String; 8] {
    let id = short(&s.inst.id, full).to_string();
    let name = s.inst.name.clone();
    let dash = || "--".to_string();
    match (&s.usage, s.first) {
        (Ok(u), Some(_)) => {
            let limit = shown_limit(u);
            [
                id,
                name,
                s.cpu_percent.map_or_else(dash, |c| format!("{c:.2}%")),
                format!("{} / {}", binary_size(u.memory), binary_size(limit)),
                format!("{:.2}%", u.memory as f64 / limit.max(1) as f64 * 100.0),
                u.net.map_or_else(dash, |(rx, tx)| {
                    format!("{} / {}", decimal_size(rx), decimal_size(tx))
                }),
                u.block.map_or_else(dash, |(r, w)| {
                    format!("{} / {}", decimal_size(r), decimal_size(w))
                }),
                u.pids.map_or_else(dash, |p| p.to_string()),
            ]
        }
        _ => [
            id,
            name,
            "0.00%".into(),
            "0B / 0B".into(),
            "0.00%".into(),
            "0B / 0B".into(),
            "0B / 0B".into(),
            "0".into(),
        ],
    }
}

fn json_row(s: &Sample, full: bool) -> serde_json::Value {
    let row = table_row(s, full);
    serde_json::json!({
        "ID": row[0],
        "Name": row[1],
        "CPUPerc": row[2],
        "MemUsage": row[3],
        "MemPerc": row[4],
        "NetIO": row[5],
        "BlockIO": row[6],
        "PIDs": row[7],
    })
}

/// Bytes as Docker's `stats` shows memory: binary units (`1.5MiB`).
fn binary_size(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    scaled(b, 1024.0, &UNITS)
}

/// Bytes as Docker's `stats` shows I/O: decimal units (`1.2kB`).
fn decimal_size(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    scaled(b, 1000.0, &UNITS)
}

fn scaled(b: u64, base: f64, units: &[&str; 6]) -> String {
    let mut v = b as f64;
    let mut i = 0;
    while v >= base && i < units.len() - 1 {
        v /= base;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_dockers() {
        assert_eq!(binary_size(512), "512B");
        assert_eq!(binary_size(1536 * 1024), "1.5MiB");
        assert_eq!(decimal_size(1200), "1.2kB");
        assert_eq!(decimal_size(0), "0B");
    }
}
