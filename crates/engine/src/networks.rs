//! Network operations for every front end: create (with labels), find by name or id,
//! remove, prune. The networks themselves (bridges, leases, NAT) are the network crate's;
//! the engine adds what Docker's clients expect of a network: user labels (Compose finds
//! its networks by them) and the `Attachable` flag, kept beside the network database as
//! `meta/<id>.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vessel_network::{Network, Peer};

use super::{Engine, EngineError, Result};

/// What `network create` asks for.
#[derive(Clone, Debug, Default)]
pub struct NetworkCreate {
    /// Its name.
    pub name: String,
    /// Its subnet (`10.1.2.0/24`); the first free /24 of 10.89.0.0/16 if `None`.
    pub subnet: Option<String>,
    /// Its MTU (`--mtu`; else the driver option; else the network crate's default).
    pub mtu: Option<u32>,
    /// Driver options as given (`-o`, `Options`): `com.docker.network.driver.mtu` (or
    /// Podman's `mtu`); any other is refused.
    pub options: BTreeMap<String, String>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Docker's `--attachable`: recorded and reported. On a local bridge network (the only
    /// kind vessel has) any container may attach, so it changes nothing else, as in Docker.
    pub attachable: bool,
}

/// What the engine records of a network beyond the network crate's record.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct NetworkMeta {
    /// User labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Created with `--attachable`.
    #[serde(default)]
    pub attachable: bool,
    /// The driver options it was created with, as given (what Docker reports as the
    /// network's `Options`; Compose compares them with its file's).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// The MTU the driver options ask for, if any, besides `flag` (`--mtu`). Any option but
/// the MTU is refused rather than ignored.
fn options_mtu(flag: Option<u32>, options: &BTreeMap<String, String>) -> Result<Option<u32>> {
    let mut mtu = flag;
    for (key, value) in options {
        let bad =
            |why: &str| EngineError::InvalidFlag(format!("network option {key}={value}: {why}"));
        match key.as_str() {
            "mtu" | "com.docker.network.driver.mtu" => {
                let v = value
                    .parse()
                    .map_err(|_| vessel_network::Error::InvalidMtu(value.to_string()))?;
                if mtu.is_some_and(|m| m != v) {
                    return Err(bad("the MTU is given twice, differently"));
                }
                mtu = Some(v);
            }
            _ => return Err(bad(
                "unknown option (vessel's bridge driver knows mtu, com.docker.network.driver.mtu)",
            )),
        }
    }
    Ok(mtu)
}

impl Engine {
    fn meta_path(&self, id: &str) -> PathBuf {
        self.config
            .network_dir
            .join("meta")
            .join(format!("{id}.json"))
    }

    /// Creates a network and records its labels and flags.
    pub fn network_create(&self, req: &NetworkCreate) -> Result<Network> {
        let nets = self.networks();
        let mtu = options_mtu(req.mtu, &req.options)?;
        let net = match &req.subnet {
            Some(s) => {
                let subnet: vessel_network::Subnet = s.parse()?;
                nets.create(&req.name, subnet, mtu)?
            }
            None => nets.create_any(&req.name, mtu)?,
        };
        let meta = NetworkMeta {
            labels: req.labels.clone(),
            attachable: req.attachable,
            options: req.options.clone(),
        };
        if !meta.labels.is_empty() || meta.attachable || !meta.options.is_empty() {
            let path = self.meta_path(&net.id);
            let written = path
                .parent()
                .map(std::fs::create_dir_all)
                .unwrap_or(Ok(()))
                .and_then(|()| {
                    let json = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, json)?;
                    std::fs::rename(&tmp, &path)
                });
            if let Err(e) = written {
                // No network without the labels and flags it was asked for.
                let _ = nets.remove(&net.name);
                return Err(EngineError::io("write", path, e));
            }
        }
        self.record_event("network", "create", &net.id, &net.name, BTreeMap::new());
        Ok(net)
    }

    /// A network's labels and flags (none if it has no file).
    pub fn network_meta(&self, net: &Network) -> NetworkMeta {
        std::fs::read(self.meta_path(&net.id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// A network as Docker's `NetworkResource` (`docker network inspect`, `GET
    /// /networks/{id}`): one document for every front end.
    pub fn network_document(&self, net: &Network, peers: &[Peer]) -> serde_json::Value {
        use serde_json::json;
        let meta = self.network_meta(net);
        let mut containers = serde_json::Map::new();
        for p in peers {
            let mac = vessel_network::mac_for(p.ip)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            containers.insert(
                p.instance.clone(),
                json!({
                    "Name": p.name, "EndpointID": p.instance, "MacAddress": mac,
                    "IPv4Address": format!("{}/{}", p.ip, net.subnet.prefix), "IPv6Address": "",
                }),
            );
        }
        json!({
            "Name": net.name, "Id": net.id, "Created": net.created,
            "Scope": "local", "Driver": "bridge", "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": {}, "Config": [
                {"Subnet": net.subnet.to_string(), "Gateway": net.gateway().to_string()}
            ]},
            "Internal": false, "Attachable": meta.attachable, "Ingress": false,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
            "Containers": containers,
            // As Docker: a user network's options as given; the default network's are
            // the engine's own (as docker0's are the daemon's). The bridge device and
            // MTU of every network: `vessel network ls`.
            "Options": if net.name == vessel_network::DEFAULT_NETWORK {
                json!({
                    "com.docker.network.bridge.name": net.bridge,
                    "com.docker.network.driver.mtu": net.mtu.to_string(),
                })
            } else {
                json!(meta.options)
            },
            "Labels": meta.labels,
        })
    }

    /// Finds a network by name, full id or unique id prefix.
    pub fn network_find(&self, key: &str) -> Result<(Network, Vec<Peer>)> {
        let list = self.networks().list()?;
        if let Some(n) = list.iter().find(|n| n.name == key || n.id == key) {
            return Ok(self.networks().inspect(&n.name)?);
        }
        let by_prefix: Vec<&Network> = list.iter().filter(|n| n.id.starts_with(key)).collect();
        match by_prefix.as_slice() {
            [n] if !key.is_empty() => Ok(self.networks().inspect(&n.name)?),
            [_, _, ..] => Err(EngineError::Ambiguous(key.to_string())),
            _ => Err(vessel_network::Error::NoSuchNetwork(key.to_string()).into()),
        }
    }

    /// Removes a network (by name, id or id prefix) and its labels.
    pub fn network_remove(&self, key: &str) -> Result<Network> {
        let (net, _) = self.network_find(key)?;
        let net = self.networks().remove(&net.name)?;
        let _ = std::fs::remove_file(self.meta_path(&net.id));
        self.record_event("network", "destroy", &net.id, &net.name, BTreeMap::new());
        Ok(net)
    }

    /// Removes every user network no instance uses; returns their names.
    pub fn network_prune(&self) -> Result<Vec<String>> {
        let before = self.networks().list()?;
        let removed = self.networks().prune()?;
        for n in before.iter().filter(|n| removed.contains(&n.name)) {
            let _ = std::fs::remove_file(self.meta_path(&n.id));
            self.record_event("network", "destroy", &n.id, &n.name, BTreeMap::new());
        }
        Ok(removed)
    }
}
