//! `network create`, `ls`, `inspect`, `rm`, `prune`.

use serde_json::json;

use crate::cli::{Format, NetworkCommand};
use crate::{CmdResult, Failure};
use vessel_engine::{Engine, EngineError};

use super::images::print_table;

fn fail(e: impl Into<EngineError>) -> Failure {
    let e = e.into();
    Failure::new(e.exit_code(), e)
}

fn network_json(
    net: &vessel_network::Network,
    peers: &[vessel_network::Peer],
) -> serde_json::Value {
    let mut containers = serde_json::Map::new();
    for p in peers {
        containers.insert(
            p.instance.clone(),
            json!({"Name": p.name, "IPv4Address": format!("{}/{}", p.ip, net.subnet.prefix)}),
        );
    }
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Driver": "bridge",
        "IPAM": {"Config": [{"Subnet": net.subnet.to_string(), "Gateway": net.gateway().to_string()}]},
        "Options": {
            "com.docker.network.bridge.name": net.bridge,
            "com.docker.network.driver.mtu": net.mtu.to_string(),
        },
        "Containers": containers,
    })
}

/// The MTU `network create` asks for: `--mtu`, or the `-o` option Podman (`mtu`) or
/// Docker (`com.docker.network.driver.mtu`) would take; any other option is refused
/// rather than ignored.
fn create_mtu(flag: Option<u32>, opts: &[String]) -> Result<Option<u32>, Failure> {
    let mut mtu = flag;
    for o in opts {
        let bad = |why: &str| Failure::new(125, format!("invalid --opt {o:?}: {why}"));
        let (key, value) = o.split_once('=').ok_or_else(|| bad("expected KEY=VALUE"))?;
        match key {
            "mtu" | "com.docker.network.driver.mtu" => {
                let v = value
                    .parse()
                    .map_err(|_| fail(vessel_network::Error::InvalidMtu(value.to_string())))?;
                if mtu.is_some_and(|m| m != v) {
                    return Err(bad("the MTU is given twice, differently"));
                }
                mtu = Some(v);
            }
            _ => {
                return Err(bad(
                    "unknown option (known: mtu, com.docker.network.driver.mtu)",
                ))
            }
        }
    }
    Ok(mtu)
}

/// Runs a `vessel network` subcommand.
pub fn run(engine: &Engine, cmd: &NetworkCommand) -> CmdResult {
    let nets = engine.networks();
    match cmd {
        NetworkCommand::Create {
            subnet,
            mtu,
            opts,
            name,
        } => {
            let mtu = create_mtu(*mtu, opts)?;
            let net = engine
                .network_create(&vessel_engine::networks::NetworkCreate {
                    name: name.clone(),
                    subnet: subnet.clone(),
                    mtu,
                    labels: Default::default(),
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
                let docs: Vec<_> = list.iter().map(|n| network_json(n, &[])).collect();
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
        NetworkCommand::Inspect { names } => {
            let mut docs = Vec::new();
            for n in names {
                let (net, peers) = nets.inspect(n).map_err(fail)?;
                docs.push(network_json(&net, &peers));
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&docs).unwrap_or_default()
            );
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
    }
}
