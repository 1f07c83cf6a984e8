//! Network operations for every front end: create (with labels), find by name or id,
//! remove, prune. The networks themselves (bridges, leases, NAT) are the network crate's;
//! the engine adds what Docker's clients expect of a network: user labels (Compose finds
//! its networks by them) and the `Attachable` flag, kept beside the network database as
//! `meta/<id>.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vessel_network::{Mode, Network, Peer};

use super::catalogue::{Instance, Status};
use super::request::Isolation;
use super::{container, Engine, EngineError, Result};

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

    /// `network connect`: puts instance `key` on network `net_key` beside the networks it
    /// is on, known there by its name, its short id and `aliases`. A running container
    /// gets the new interface (`eth1`, ...) at once; a stopped one at its next start. Its
    /// `/etc/hosts` lists the network's instances, and theirs it. `ip` (`--ip`) asks for
    /// that address on it.
    pub fn network_connect(
        &self,
        net_key: &str,
        key: &str,
        aliases: &[String],
        ip: Option<std::net::Ipv4Addr>,
    ) -> Result<Instance> {
        let (net, _) = self.network_find(net_key)?;
        let mut inst = self.get(key)?;
        check_joinable(&inst, "connected to", &net.name)?;
        if inst.request.attachments().any(|a| a.network == net.name) {
            return Err(vessel_network::Error::AlreadyAttached(inst.name.clone(), net.name).into());
        }
        let taken = inst.request.attachments().map(|a| a.interface.as_str());
        let interface = vessel_network::free_interface(&inst.name, taken)?;
        let mut names = aliases.to_vec();
        // As at create: on a user network, also known by its short id.
        let short = inst.id.get(..12).unwrap_or(&inst.id).to_string();
        if net.name != vessel_network::DEFAULT_NETWORK && !names.contains(&short) {
            names.push(short);
        }
        let att = self.networks.attach_more(
            &inst.id,
            &inst.name,
            &names,
            &net.name,
            &interface,
            &self.instance_dir(&inst.id),
            ip,
        )?;
        let first = inst.request.attachment.is_none();
        if first {
            // Its only network now (it left its first): the one with the default route.
            inst.request.network = Mode::Bridge(net.name.clone());
            inst.request.network_aliases = att.aliases.clone();
            inst.request.attachment = Some(att.clone());
        } else {
            inst.request.more_networks.push(att.clone());
        }
        let done = self
            .catalogue
            .set_request(&inst.id, &inst.request)
            .and_then(|()| match (inst.status, inst.pid) {
                (Status::Running, Some(pid)) => self
                    .networks
                    .connect(&inst.id, &att, first, pid)
                    .map_err(EngineError::from),
                _ => Ok(()),
            });
        if let Err(e) = done {
            let _ = self.networks.detach(&inst.id, &att);
            if let Ok(mut back) = self.catalogue.find(&inst.id) {
                back.request
                    .more_networks
                    .retain(|a| a.network != att.network);
                if first {
                    back.request.attachment = None;
                }
                let _ = self.catalogue.set_request(&inst.id, &back.request);
            }
            return Err(e);
        }
        self.announce_on(&inst, &att);
        self.rewrite_hosts(&inst);
        self.network_event("connect", &net, &inst);
        Ok(inst)
    }

    /// `network disconnect`: takes instance `key` off network `net_key` (its interface
    /// there goes at once if it runs, its lease, its line in the other instances' hosts
    /// files). Off its first network, its published ports go too, and the next network
    /// it is on becomes its first. With `force`, a failure to take its interface down
    /// (logged) does not keep it on the network.
    pub fn network_disconnect(&self, net_key: &str, key: &str, force: bool) -> Result<Instance> {
        let (net, _) = self.network_find(net_key)?;
        let mut inst = self.get(key)?;
        check_joinable(&inst, "disconnected from", &net.name)?;
        let Some(att) = inst
            .request
            .attachments()
            .find(|a| a.network == net.name)
            .cloned()
        else {
            return Err(vessel_network::Error::NotAttached(inst.id.clone(), net.name).into());
        };
        self.forget_on(&inst, &att);
        match self.networks.detach(&inst.id, &att) {
            Err(e) if force => {
                tracing::warn!(instance = %inst.name, network = %net.name, error = %e, "disconnect forced past an error");
                self.networks.release_one(&inst.id, &att)?;
            }
            r => r?,
        }
        if inst.request.attachment.as_ref() == Some(&att) {
            inst.request.attachment = None;
            inst.request.network_aliases.clear();
            if !inst.request.more_networks.is_empty() {
                let next = inst.request.more_networks.remove(0);
                inst.request.network = Mode::Bridge(next.network.clone());
                inst.request.network_aliases = next.aliases.clone();
                if let (Status::Running, Some(pid)) = (inst.status, inst.pid) {
                    // It takes the default route now, as at the next start.
                    if let Err(e) =
                        vessel_network::link::set_default_route(pid, &next.interface, next.gateway)
                    {
                        tracing::warn!(instance = %inst.name, error = %e, "no default route through the next network");
                    }
                }
                inst.request.attachment = Some(next);
            }
        } else {
            inst.request
                .more_networks
                .retain(|a| a.network != att.network);
        }
        if inst.status != Status::Running {
            // Not wired: its interfaces are numbered afresh, in order, for its next start.
            let r = &mut inst.request;
            for (n, a) in r
                .attachment
                .iter_mut()
                .chain(&mut r.more_networks)
                .enumerate()
            {
                a.interface = format!("eth{n}");
            }
        }
        self.catalogue.set_request(&inst.id, &inst.request)?;
        self.rewrite_hosts(&inst);
        self.network_event("disconnect", &net, &inst);
        Ok(inst)
    }

    /// Writes a container's `/etc/hosts` anew in place (it is bind-mounted), or sends a
    /// running VM its own.
    fn rewrite_hosts(&self, inst: &Instance) {
        let hosts = self.instance_dir(&inst.id).join("hosts");
        if !hosts.exists() {
            self.refresh_vm_hosts(&inst.id, None);
            return;
        }
        let written = container::hosts(&self.networks, inst).and_then(|text| {
            std::fs::write(&hosts, text).map_err(|e| EngineError::io("write", &hosts, e))
        });
        if let Err(e) = written {
            tracing::warn!(file = %hosts.display(), error = %e, "could not rewrite a hosts file");
        }
    }

    fn network_event(&self, action: &str, net: &Network, inst: &Instance) {
        let attrs = [
            ("container".to_string(), inst.id.clone()),
            ("name".to_string(), net.name.clone()),
            ("type".to_string(), "bridge".to_string()),
        ];
        self.record_event(
            "network",
            action,
            &net.id,
            &net.name,
            attrs.into_iter().collect(),
        );
    }
}

/// Refuses to change the networks of an instance whose networking is not vessel's
/// bridges (Docker's words where it has them), and of a microVM (one NIC, given at create).
fn check_joinable(inst: &Instance, what: &str, net: &str) -> Result<()> {
    match &inst.request.network {
        Mode::Host => Err(EngineError::InvalidFlag(
            "container cannot be disconnected from host network or connected to host network"
                .into(),
        )),
        Mode::None => Err(EngineError::InvalidFlag(format!(
            "container {} has --network none (a network namespace of its own with loopback only): it cannot be {what} network {net}",
            inst.name
        ))),
        Mode::Bridge(_) if inst.request.isolation == Isolation::Vm => {
            Err(EngineError::InvalidFlag(format!(
                "{} is a microVM, whose one NIC is given when it is created: it cannot be {what} network {net} (create it with --network {net})",
                inst.name
            )))
        }
        Mode::Bridge(_) => Ok(()),
    }
}
