//! Networking for vessel instances: bridge networks with a persistent address manager,
//! veth pairs into container network namespaces, and NAT (outbound masquerade and
//! published ports) in vessel's own nftables table.
//!
//! Networks, leases and published ports are host-wide (the bridges and the firewall
//! are), so their database lives in one directory per host (`/var/lib/vessel/network`
//! by default), whatever data root an instance belongs to. Changes to links and rules
//! are serialised by a lock file beside it.

pub mod firewall;
pub mod link;
pub mod spec;
pub mod store;

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use spec::{Mode, PortMap, Proto, Subnet};
pub use store::{Attachment, Network, Peer};

/// The default network's name (`--network bridge`, as Docker's).
pub const DEFAULT_NETWORK: &str = "bridge";
/// The default network's bridge device.
pub const DEFAULT_BRIDGE: &str = "vessel0";
/// The default network's subnet: a /16 no common tool uses by default (Docker takes
/// 172.17/16, Podman 10.88/16).
pub const DEFAULT_SUBNET: Subnet = Subnet {
    addr: Ipv4Addr::new(10, 87, 0, 0),
    prefix: 16,
};
/// MTU of a network unless `network create --mtu` says otherwise: the largest every link
/// on it accepts, about loopback's. A vessel bridge has no wire, only the host and its
/// instances, so the Ethernet limit of 1500 bytes would only cost throughput (a TCP
/// stream over a 1500-byte bridge runs at about 0.7x loopback on the same host, over a
/// 64 KiB one as fast as loopback). Traffic leaving the host is unaffected: TCP takes its
/// segment size from the peer, and path MTU discovery answers the rest from the host's
/// own interfaces.
pub const DEFAULT_MTU: u32 = MAX_MTU;
/// The largest MTU a network may have: a tap's limit (65535 less its Ethernet header);
/// bridges and veths go to 65535.
pub const MAX_MTU: u32 = 65521;
/// MTU of the networks recorded before networks had one (their bridges kept Ethernet's).
pub(crate) const LEGACY_MTU: u32 = 1500;
/// The smallest MTU IPv4 allows.
pub const MIN_MTU: u32 = 68;

/// Where the network database lives unless `VESSEL_NETWORK_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/vessel/network";

/// Networking errors. Every one is an engine error (exit status 125).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad `--subnet`.
    #[error("invalid subnet {0}")]
    InvalidSubnet(String),
    /// A bad `--mtu`.
    #[error("invalid MTU {0}: give a number of bytes from 68 to 65521 (a tap's limit)")]
    InvalidMtu(String),
    /// A bad network name.
    #[error("invalid network name {0:?}: use letters, digits, '_', '.', '-' (starting with a letter or digit), at most 64")]
    InvalidName(String),
    /// A name only vessel may use.
    #[error("the network name {0:?} is reserved")]
    ReservedName(String),
    /// A bad `--network-alias`, or one where aliases mean nothing.
    #[error("{0}")]
    InvalidAlias(String),
    /// A bad `-p`.
    #[error("invalid port specification {0}")]
    InvalidPort(String),
    /// The host port is taken.
    #[error("host port {port} is already in use: {1}", port = .0.host_port)]
    PortInUse(PortMap, String),
    /// No network by that name.
    #[error("no such network: {0} (vessel network ls lists them)")]
    NoSuchNetwork(String),
    /// `network connect` of an instance already on the network (Docker's words).
    #[error("endpoint with name {0} already exists in network {1}")]
    AlreadyAttached(String, String),
    /// `network disconnect` of an instance not on the network (Docker's words).
    #[error("container {0} is not connected to network {1}")]
    NotAttached(String, String),
    /// No interface name left for another network.
    #[error("instance {0} is on too many networks: at most {max}", max = MAX_NETWORKS)]
    TooManyNetworks(String),
    /// The name is taken.
    #[error("a network named {0:?} already exists")]
    NetworkExists(String),
    /// `network rm` of a network instances use.
    #[error("network {0} is in use by {1}: remove those instances first")]
    NetworkInUse(String, String),
    /// The subnet overlaps another network.
    #[error("subnet {0} overlaps network {1} ({2})")]
    SubnetOverlap(Subnet, String, Subnet),
    /// The subnet overlaps an address the host already has.
    #[error("subnet {0} overlaps the host's address {1}/{2}: choose another subnet")]
    HostOverlap(Subnet, Ipv4Addr, u8),
    /// `--ip` outside the network's hosts.
    #[error("{0}")]
    InvalidAddress(String),
    /// `--ip` of an address another instance holds (Docker's words first).
    #[error("Address already in use: {0} on network {1}")]
    AddressInUse(Ipv4Addr, String),
    /// No address left.
    #[error("no address left on network {0} ({1}): remove instances or use a larger subnet")]
    PoolExhausted(String, Subnet),
    /// The database failed.
    #[error("network database {0}: {1}")]
    Db(PathBuf, #[source] rusqlite::Error),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// To what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("netlink: {0}: {1}")]
    Netlink(String, String),
    /// nft failed.
    #[error("nftables: {0}: {1}")]
    Firewall(String, String),
}

impl Error {
    /// Wraps an I/O error with its operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The host-side name of an instance's veth pair (15 bytes at most, like every link name).
pub fn veth_name(instance: &str) -> String {
    format!("vv{}", &instance[..instance.len().min(12)])
}

/// The most networks one instance can be on: its interfaces are `eth0` to `eth35`, whose
/// host sides are named with one base-36 digit.
pub const MAX_NETWORKS: usize = 36;

/// The host-side name of the veth pair of an instance's interface `interface` (`ethN`):
/// [`veth_name`] for `eth0`; `vw`, 12 characters of the id and N as one base-36 digit
/// for the others (15 bytes, and a prefix no first interface's name has).
pub fn veth_name_for(instance: &str, interface: &str) -> String {
    match interface_index(interface) {
        Some(0) | None => veth_name(instance),
        Some(n) => format!(
            "vw{}{}",
            &instance[..instance.len().min(12)],
            char::from_digit(n as u32, 36).unwrap_or('z')
        ),
    }
}

/// N of `ethN`, if below [`MAX_NETWORKS`].
pub fn interface_index(interface: &str) -> Option<usize> {
    interface
        .strip_prefix("eth")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n < MAX_NETWORKS)
}

/// The first interface name (`ethN`) not in `taken`.
pub fn free_interface<'a>(
    instance: &str,
    taken: impl Iterator<Item = &'a str> + Clone,
) -> Result<String> {
    (0..MAX_NETWORKS)
        .map(|n| format!("eth{n}"))
        .find(|i| !taken.clone().any(|t| t == i))
        .ok_or_else(|| Error::TooManyNetworks(instance.to_string()))
}

/// The MAC address of an instance's interface: locally administered and derived from its
/// IPv4 address, as Docker does, so that an address handed out again comes with the same
/// MAC and peers' ARP caches stay right (a random MAC would leave them pointing at the
/// previous holder for up to a minute).
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// The name of an instance's tap device (a VM's NIC), 15 bytes at most.
pub fn tap_name(instance: &str) -> String {
    format!("vt{}", &instance[..instance.len().min(12)])
}

/// Installs an instance's DNAT rules afresh (and its network's, if they are missing), and
/// `route_localnet` on its bridge if one of its ports is published on the host's loopback
/// (all local addresses included).
fn publish(instance: &str, att: &Attachment) -> Result<()> {
    let mask = u32::MAX << (32 - u32::from(att.prefix.clamp(1, 32)));
    let net = firewall::NetworkRules {
        id: &att.network_id,
        bridge: &att.bridge,
        subnet: Subnet {
            addr: Ipv4Addr::from(u32::from(att.gateway) & mask),
            prefix: att.prefix,
        },
    };
    // The guard first: route_localnet without it opens the host's loopback.
    firewall::add_instance(&net, instance, att.ip, &att.ports)?;
    if att
        .ports
        .iter()
        .any(|p| p.host_ip.is_none_or(|a| a.is_loopback()))
    {
        link::allow_localnet(&att.bridge)?;
    }
    Ok(())
}

/// The host's networks, leases and their wiring.
pub struct Networks {
    dir: PathBuf,
}

/// An exclusive hold on the lock file that serialises link and rule changes.
struct Lock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl Networks {
    /// Networks whose database lives in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Networks {
        Networks { dir: dir.into() }
    }

    /// `VESSEL_NETWORK_DIR`, or [`DEFAULT_DIR`].
    pub fn from_env() -> Networks {
        Networks::new(
            std::env::var_os("VESSEL_NETWORK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)),
        )
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn store(&self) -> Result<store::Store> {
        store::Store::open(&self.dir)
    }

    fn lock(&self) -> Result<Lock> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        let path = self.dir.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map(Lock)
            .map_err(|(_, e)| Error::io("lock", &path, e.into()))
    }

    /// Brings a network's bridge and NAT rules into being (both vanish on reboot).
    fn wire(&self, net: &Network) -> Result<()> {
        link::ensure_bridge(&net.bridge, net.gateway(), net.subnet.prefix, net.mtu)?;
        firewall::add_network(&net.id, &net.bridge, net.subnet)
    }

    fn check_host_overlap(&self, subnet: Subnet) -> Result<()> {
        let ours: Vec<Ipv4Addr> = self
            .store()?
            .networks()?
            .iter()
            .map(|n| n.gateway())
            .collect();
        for (ip, len) in link::host_addresses()? {
            if ours.contains(&ip) {
                continue;
            }
            let theirs = Subnet {
                addr: Ipv4Addr::from(u32::from(ip) & (u32::MAX << (32 - len.clamp(1, 32) as u32))),
                prefix: len,
            };
            if theirs.overlaps(subnet) {
                return Err(Error::HostOverlap(subnet, ip, len));
            }
        }
        Ok(())
    }

    /// `network create`: records the network, creates its bridge and NAT rules. `mtu`
    /// defaults to [`DEFAULT_MTU`].
    pub fn create(&self, name: &str, subnet: Subnet, mtu: Option<u32>) -> Result<Network> {
        spec::validate_name(name)?;
        let mtu = mtu.unwrap_or(DEFAULT_MTU);
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(Error::InvalidMtu(mtu.to_string()));
        }
        if matches!(name, DEFAULT_NETWORK | "default" | "host" | "none") {
            return Err(Error::ReservedName(name.to_string()));
        }
        self.check_host_overlap(subnet)?;
        let net = self.store()?.create_network(name, None, subnet, mtu)?;
        let _l = self.lock()?;
        if let Err(e) = self.wire(&net) {
            let _ = self.unwire(&net);
            let _ = self.store().and_then(|mut s| s.delete_network(name));
            return Err(e);
        }
        Ok(net)
    }

    /// `network create` without `--subnet`: the first free /24 of 10.89.0.0/16.
    pub fn create_any(&self, name: &str, mtu: Option<u32>) -> Result<Network> {
        for n in 0..=255u8 {
            let subnet = Subnet {
                addr: Ipv4Addr::new(10, 89, n, 0),
                prefix: 24,
            };
            match self.create(name, subnet, mtu) {
                Err(Error::SubnetOverlap(..)) | Err(Error::HostOverlap(..)) => continue,
                r => return r,
            }
        }
        Err(Error::InvalidSubnet(
            "no free /24 left in 10.89.0.0/16: give --subnet".into(),
        ))
    }

    fn unwire(&self, net: &Network) -> Result<()> {
        firewall::remove(&[&firewall::network_tag(&net.id)])?;
        link::delete(&net.bridge)
    }

    /// Every network (the default one is recorded on first listing).
    pub fn list(&self) -> Result<Vec<Network>> {
        let mut s = self.store()?;
        if s.network(DEFAULT_NETWORK).is_err() {
            match s.create_network(
                DEFAULT_NETWORK,
                Some(DEFAULT_BRIDGE),
                DEFAULT_SUBNET,
                DEFAULT_MTU,
            ) {
                Ok(_) | Err(Error::NetworkExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        s.networks()
    }

    /// A network and the instances on it.
    pub fn inspect(&self, name: &str) -> Result<(Network, Vec<Peer>)> {
        let s = self.store()?;
        if name == DEFAULT_NETWORK {
            drop(s);
            self.list()?;
            return self.inspect_recorded(name);
        }
        let net = s.network(name)?;
        let peers = s.peers(name)?;
        Ok((net, peers))
    }

    fn inspect_recorded(&self, name: &str) -> Result<(Network, Vec<Peer>)> {
        let s = self.store()?;
        Ok((s.network(name)?, s.peers(name)?))
    }

    /// `network rm`: refuses the default network and networks in use; removes the
    /// bridge and its rules.
    pub fn remove(&self, name: &str) -> Result<Network> {
        if name == DEFAULT_NETWORK {
            return Err(Error::ReservedName(name.to_string()));
        }
        let net = self.store()?.delete_network(name)?;
        let _l = self.lock()?;
        self.unwire(&net)?;
        Ok(net)
    }

    /// `network prune`: removes every user network no instance uses; returns their names.
    pub fn prune(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for n in self.store()?.networks()? {
            if n.name == DEFAULT_NETWORK {
                continue;
            }
            match self.remove(&n.name) {
                Ok(_) => removed.push(n.name),
                Err(Error::NetworkInUse(..)) | Err(Error::NoSuchNetwork(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Gives an instance its place on the network `mode` names: an address lease and its
    /// host ports, all or nothing. `None` for `none` and `host`. `dir` is the instance's
    /// directory, which must exist: a lease whose directory is gone is reclaimed.
    ///
    /// `aliases` (`--network-alias`) are more names of the instance on its network, as
    /// Docker has them: only on a user-defined network.
    ///
    /// `ip` (`--ip`) asks for that address, on a user-defined network only (as Docker).
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        &self,
        instance: &str,
        name: &str,
        aliases: &[String],
        mode: &Mode,
        ports: &[PortMap],
        dir: &Path,
        ip: Option<Ipv4Addr>,
    ) -> Result<Option<Attachment>> {
        for a in aliases {
            check_alias(a)?;
        }
        let user_network = matches!(mode, Mode::Bridge(net) if net != DEFAULT_NETWORK);
        if !aliases.is_empty() && !user_network {
            return Err(Error::InvalidAlias(
                "network-scoped aliases are supported only for containers in user-defined networks"
                    .into(),
            ));
        }
        let Mode::Bridge(net) = mode else {
            if let Some(ip) = ip {
                return Err(Error::InvalidAddress(format!(
                    "--ip {ip}: --network {} hands out no addresses",
                    mode.as_str()
                )));
            }
            return Ok(None);
        };
        if let (Some(_), DEFAULT_NETWORK) = (ip, net.as_str()) {
            return Err(Error::InvalidAddress(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        let default =
            (net == DEFAULT_NETWORK).then_some((DEFAULT_BRIDGE, DEFAULT_SUBNET, DEFAULT_MTU));
        self.store()?
            .allocate(instance, name, aliases, net, ports, default, Some(dir), ip)
            .map(Some)
    }

    /// Gives an instance a place on one more network (`network connect`): an address
    /// lease on `network`, known there as `name` and `aliases`, through interface
    /// `interface` (see [`free_interface`]). No host ports: those belong to its first
    /// network. `ip` as for [`Networks::attach`].
    #[allow(clippy::too_many_arguments)]
    pub fn attach_more(
        &self,
        instance: &str,
        name: &str,
        aliases: &[String],
        network: &str,
        interface: &str,
        dir: &Path,
        ip: Option<Ipv4Addr>,
    ) -> Result<Attachment> {
        let mut att = self
            .attach(
                instance,
                name,
                aliases,
                &Mode::Bridge(network.to_string()),
                &[],
                dir,
                ip,
            )?
            .ok_or_else(|| Error::NoSuchNetwork(network.to_string()))?;
        att.interface = interface.to_string();
        Ok(att)
    }

    /// Takes an instance off one of its networks: its interface there (if wired) and,
    /// for its first network, its published ports; then its lease. Idempotent.
    pub fn detach(&self, instance: &str, att: &Attachment) -> Result<()> {
        self.disconnect(instance, att)?;
        self.store()?
            .release_one(instance, &att.network, !att.ports.is_empty())
    }

    /// Wires a container (process `pid`: a created one before its program runs, or a
    /// running one joining a network) to a network: the bridge if missing, a veth pair
    /// into its namespace (the default route through it if `first`, its first network),
    /// its DNAT rules. Undoes what it did on failure.
    pub fn connect(&self, instance: &str, att: &Attachment, first: bool, pid: i32) -> Result<()> {
        let _l = self.lock()?;
        let r = (|| {
            if !link::exists(&att.bridge)? {
                let net = self.store()?.network(&att.network)?;
                self.wire(&net)?;
            }
            // A veth left by a crashed earlier start of the same instance.
            let host_name = veth_name_for(instance, &att.interface);
            link::delete(&host_name)?;
            link::connect_veth(
                &link::Endpoint {
                    host_name,
                    interface: att.interface.clone(),
                    default_route: first,
                    bridge: att.bridge.clone(),
                    ip: att.ip,
                    prefix: att.prefix,
                    gateway: att.gateway,
                    mtu: att.mtu,
                },
                pid,
            )?;
            publish(instance, att)
        })();
        if r.is_err() {
            let _ = self.disconnect_locked(instance, att);
        }
        r
    }

    /// Wires a VM to its network: the bridge if missing, a tap on it (returned, for the
    /// VMM; not persistent, so it goes with the last descriptor, i.e. with the VMM
    /// process however it ends), its DNAT rules. Undoes what it did on failure.
    pub fn connect_tap(&self, instance: &str, att: &Attachment) -> Result<OwnedFd> {
        let _l = self.lock()?;
        let r = (|| {
            if !link::exists(&att.bridge)? {
                let net = self.store()?.network(&att.network)?;
                self.wire(&net)?;
            }
            let name = tap_name(instance);
            // A tap dies with its VMM, so a link of this name is not ours to keep.
            link::delete(&name)?;
            let tap = link::create_tap(&name, &att.bridge, att.mtu)?;
            publish(instance, att)?;
            Ok(tap)
        })();
        if r.is_err() {
            let _ = self.disconnect_locked(instance, att);
        }
        r
    }

    fn disconnect_locked(&self, instance: &str, att: &Attachment) -> Result<()> {
        let links = if interface_index(&att.interface).unwrap_or(0) == 0 {
            link::delete(&veth_name(instance)).and(link::delete(&tap_name(instance)))
        } else {
            link::delete(&veth_name_for(instance, &att.interface))
        };
        let rules = if att.ports.is_empty() {
            Ok(())
        } else {
            firewall::remove(&[&firewall::instance_tag(instance)])
        };
        links.and(rules)
    }

    /// Removes an instance's wiring (veth or tap, DNAT rules); keeps its lease.
    /// Idempotent.
    pub fn disconnect(&self, instance: &str, att: &Attachment) -> Result<()> {
        let _l = self.lock()?;
        self.disconnect_locked(instance, att)
    }

    /// Stops forwarding an instance's published ports (its DNAT rules), as soon as it
    /// stops. Its veth needs no such hurry: the kernel destroys it with the namespace
    /// once the instance's last process is gone, and [`Networks::disconnect`] at removal
    /// makes sure (deleting a link waits for an RCU grace period, some 15 ms, which the
    /// exit path of `vessel run` would otherwise pay).
    pub fn unpublish(&self, instance: &str, att: &Attachment) -> Result<()> {
        if att.ports.is_empty() {
            return Ok(());
        }
        let _l = self.lock()?;
        firewall::remove(&[&firewall::instance_tag(instance)])
    }

    /// Gives up an instance's lease on the network of `att` (and its host ports, if they
    /// are on it), leaving its wiring alone. Idempotent.
    pub fn release_one(&self, instance: &str, att: &Attachment) -> Result<()> {
        self.store()?
            .release_one(instance, &att.network, !att.ports.is_empty())
    }

    /// Gives up an instance's lease and host ports. Idempotent.
    pub fn release(&self, instance: &str) -> Result<()> {
        self.store()?.release(instance)
    }

    /// The other instances on the attachment's network.
    pub fn peers(&self, att: &Attachment) -> Result<Vec<Peer>> {
        self.store()?.peers(&att.network)
    }
}

/// An alias is a host name: letters, digits, '-', '_' and '.', starting with a letter or
/// digit, at most 253 (so that it is one word of an /etc/hosts line).
pub fn check_alias(a: &str) -> Result<()> {
    let ok = !a.is_empty()
        && a.len() <= 253
        && a.starts_with(|c: char| c.is_ascii_alphanumeric())
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidAlias(format!(
            "invalid network alias {a:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit"
        )))
    }
}
