//! Network operations for every front end: create (with labels), find by name or id,
//! remove, prune. The networks themselves (bridges, leases, NAT) are the network crate's;
//! the engine adds what Docker's clients expect of a network: user labels (Compose finds
//! its networks by them), kept beside the network database as `labels/<id>.json`.

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
    /// Its MTU (the network crate's default if `None`).
    pub mtu: Option<u32>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
}

impl Engine {
    fn labels_path(&self, id: &str) -> PathBuf {
        self.config
            .network_dir
            .join("labels")
            .join(format!("{id}.json"))
    }

    /// Creates a network and records its labels.
    pub fn network_create(&self, req: &NetworkCreate) -> Result<Network> {
        let nets = self.networks();
        let net = match &req.subnet {
            Some(s) => {
                let subnet: vessel_network::Subnet = s.parse()?;
                nets.create(&req.name, subnet, req.mtu)?
            }
            None => nets.create_any(&req.name, req.mtu)?,
        };
        if !req.labels.is_empty() {
            let path = self.labels_path(&net.id);
            let written = path
                .parent()
                .map(std::fs::create_dir_all)
                .unwrap_or(Ok(()))
                .and_then(|()| {
                    let json = serde_json::to_vec(&req.labels).map_err(std::io::Error::other)?;
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, json)?;
                    std::fs::rename(&tmp, &path)
                });
            if let Err(e) = written {
                // No network without the labels it was asked for.
                let _ = nets.remove(&net.name);
                return Err(EngineError::io("write", path, e));
            }
        }
        self.record_event("network", "create", &net.id, &net.name, BTreeMap::new());
        Ok(net)
    }

    /// A network's labels (none if it has no file).
    pub fn network_labels(&self, net: &Network) -> BTreeMap<String, String> {
        std::fs::read(self.labels_path(&net.id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
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
        let _ = std::fs::remove_file(self.labels_path(&net.id));
        self.record_event("network", "destroy", &net.id, &net.name, BTreeMap::new());
        Ok(net)
    }

    /// Removes every user network no instance uses; returns their names.
    pub fn network_prune(&self) -> Result<Vec<String>> {
        let before = self.networks().list()?;
        let removed = self.networks().prune()?;
        for n in before.iter().filter(|n| removed.contains(&n.name)) {
            let _ = std::fs::remove_file(self.labels_path(&n.id));
            self.record_event("network", "destroy", &n.id, &n.name, BTreeMap::new());
        }
        Ok(removed)
    }
}
