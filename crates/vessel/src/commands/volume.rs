//! `volume create`, `ls`, `inspect`, `rm`, `prune`: Docker's output and exit statuses
//! (1 for a failed volume operation, as `docker volume` gives).

use std::collections::BTreeMap;

use crate::cli::VolumeCommand;
use crate::{CmdResult, Failure};
use vessel_engine::volumes::VolumeInfo;
use vessel_engine::{Engine, EngineError};

use super::images::{human_size, print_table};

fn fail(e: EngineError) -> Failure {
    Failure::new(1, e)
}

/// `--label KEY[=VALUE]` flags as a map (Docker's parsing: no `=` means an empty value).
pub(crate) fn labels(given: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    for l in given {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(Failure::new(125, format!("invalid label {l:?}")));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Whether `v` passes every `filter` (Docker's `dangling`, `name`, `label`).
fn matches(engine: &Engine, v: &VolumeInfo, filters: &[String]) -> Result<bool, Failure> {
    for f in filters {
        let bad = || {
            Failure::new(
                125,
                format!("invalid filter {f:?} (dangling=, name=, label=)"),
            )
        };
        let (k, val) = f.split_once('=').ok_or_else(bad)?;
        let pass = match k {
            "dangling" => {
                let dangling = match val {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad()),
                };
                engine.volume_users(&v.name).map_err(fail)?.is_empty() == dangling
            }
            "name" => v.name.contains(val),
            "label" => match val.split_once('=') {
                Some((lk, lv)) => v.labels.get(lk).is_some_and(|x| x == lv),
                None => v.labels.contains_key(val),
            },
            _ => return Err(bad()),
        };
        if !pass {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs a `vessel volume` subcommand.
pub fn run(engine: &Engine, cmd: &VolumeCommand) -> CmdResult {
    let volumes = engine.volumes();
    match cmd {
        VolumeCommand::Create {
            driver,
            labels: l,
            opts,
            name,
        } => {
            if driver != "local" {
                return Err(Failure::new(
                    1,
                    format!("volume driver {driver:?} is not supported: vessel has only the local driver"),
                ));
            }
            if let Some(o) = opts.first() {
                return Err(Failure::new(
                    1,
                    format!("volume option {o:?} is not supported: vessel's local driver takes no options"),
                ));
            }
            let v = engine
                .volume_create(name.as_deref(), labels(l)?)
                .map_err(fail)?;
            println!("{}", v.name);
            Ok(0)
        }
        VolumeCommand::Ls { quiet, filters } => {
            let mut rows = Vec::new();
            for v in volumes.list().map_err(fail)? {
                if matches(engine, &v, filters)? {
                    rows.push(["local".to_string(), v.name]);
                }
            }
            if *quiet {
                for [_, name] in rows {
                    println!("{name}");
                }
            } else {
                print_table(
                    &mut std::io::stdout().lock(),
                    &["DRIVER", "VOLUME NAME"],
                    &rows,
                );
            }
            Ok(0)
        }
        VolumeCommand::Inspect { names, format } => {
            let mut docs = Vec::new();
            let mut code = 0;
            for n in names {
                match volumes.inspect(n) {
                    Ok(v) => docs.push(v),
                    Err(e) => {
                        eprintln!("vessel: {e}");
                        code = 1;
                    }
                }
            }
            let docs = docs
                .iter()
                .map(|d| serde_json::to_value(d).unwrap_or_default())
                .collect();
            crate::template::print_inspect(docs, format.as_ref())?;
            Ok(code)
        }
        VolumeCommand::Rm { force, names } => {
            let mut code = 0;
            for n in names {
                match engine.volume_remove(n) {
                    Ok(()) => println!("{n}"),
                    Err(EngineError::NoSuchVolume(_)) if *force => {}
                    Err(e) => {
                        eprintln!("vessel: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        VolumeCommand::Prune { all, force: _ } => {
            let (removed, bytes) = engine.volume_prune(*all).map_err(fail)?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &removed {
                    println!("{n}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", human_size(bytes));
            Ok(0)
        }
    }
}
