//! `network create`, `ls`, `inspect`, `rm`, `prune`.

use crate::cli::{Format, NetworkCommand};
use crate::{CmdResult, Failure};
use vessel_engine::{Engine, EngineError};

use super::images::print_table;

fn fail(e: impl Into<EngineError>) -> Failure {
    let e = e.into();
    Failure::new(e.exit_code(), e)
}

/// `-o KEY=VALUE` driver options as a map (the engine checks which it knows).
fn driver_options(opts: &[String]) -> Result<std::collections::BTreeMap<String, String>, Failure> {
    let mut out = std::collections::BTreeMap::new();
    for o in opts {
        let (key, value) = o
            .split_once('=')
            .ok_or_else(|| Failure::new(125, format!("invalid --opt {o:?}: expected KEY=VALUE")))?;
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// Runs a `vessel network` subcommand.
pub fn run(engine: &Engine, cmd: &NetworkCommand) -> CmdResult {
    let nets = engine.networks();
    match cmd {
        NetworkCommand::Create {
            subnet,
            mtu,
            opts,
            labels,
            attachable,
            name,
        } => {
            let net = engine
                .network_create(&vessel_engine::networks::NetworkCreate {
                    name: name.clone(),
                    subnet: subnet.clone(),
                    mtu: *mtu,
                    options: driver_options(opts)?,
                    labels: super::volume::labels(labels)?,
                    attachable: *attachable,
                })
                .map_err(fail)?;
            println!("{}", net.id);
            Ok(0)
        }
        NetworkCommand::Ls { quiet, format } => {
            let list = nets.list().map_err(fail)?;
            if *quiet {
                for n in &list {
                    println!("{}", n.name);
                }
            } else if crate::template::print_if_template(
                format,
                || {
                    list.iter()
                        .map(|n| {
                            match serde_json::json!({
                                "ID": n.id[..12].to_string(),
                                "Name": n.name,
                                "Driver": "bridge",
                                "Subnet": n.subnet.to_string(),
                                "Bridge": n.bridge,
                                "MTU": n.mtu,
                            }) {
                                serde_json::Value::Object(m) => m,
                                _ => serde_json::Map::new(),
                            }
                        })
                        .collect()
                },
                &[("ID", "NETWORK ID")],
            )? {
            } else if *format == Format::Json {
                let docs: Vec<_> = list
                    .iter()
                    .map(|n| engine.network_document(n, &[]))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&docs).unwrap_or_default()
                );
            } else {
                let rows: Vec<[String; 5]> = list
                    .iter()
                    .map(|n| {
                        [
                            n.id[..12].to_string(),
                            n.name.clone(),
                            "bridge".into(),
                            n.subnet.to_string(),
                            n.bridge.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &mut std::io::stdout().lock(),
                    &["NETWORK ID", "NAME", "DRIVER", "SUBNET", "BRIDGE"],
                    &rows,
                );
            }
            Ok(0)
        }
        NetworkCommand::Inspect { names, format } => {
            let mut docs = Vec::new();
            for n in names {
                let (net, peers) = engine.network_find(n).map_err(fail)?;
                docs.push(engine.network_document(&net, &peers));
            }
            crate::template::print_inspect(docs, format.as_ref())?;
            Ok(0)
        }
        NetworkCommand::Rm { names } => {
            let mut failed = None;
            for n in names {
                match engine.network_remove(n) {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("vessel: {e}");
                        failed = Some(e.exit_code());
                    }
                }
            }
            Ok(failed.unwrap_or(0))
        }
        NetworkCommand::Prune => {
            for n in engine.network_prune().map_err(fail)? {
                println!("{n}");
            }
            Ok(0)
        }
        NetworkCommand::Connect {
            aliases,
            ip,
            network,
            instance,
        } => {
            engine
                .network_connect(network, instance, aliases, *ip)
                .map_err(fail)?;
            Ok(0)
        }
        NetworkCommand::Disconnect {
            force,
            network,
            instance,
        } => {
            engine
                .network_disconnect(network, instance, *force)
                .map_err(fail)?;
            Ok(0)
        }
    }
}
