//! The network database: network definitions, address leases and published host ports.
//!
//! One SQLite file shared by every `vessel` process on the host. Allocation runs in an
//! IMMEDIATE transaction, so two concurrent `vessel run` never get the same address or
//! host port: the second waits for the first to commit and then sees its lease.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::spec::{PortMap, Proto, Subnet};
use crate::{Error, Result};

/// A bridge network as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Unique name (`bridge` for the default network).
    pub name: String,
    /// Random id (hex).
    pub id: String,
    /// The host bridge device.
    pub bridge: String,
    /// Its IPv4 subnet; the bridge holds the first host address (the gateway).
    pub subnet: Subnet,
    /// RFC 3339 creation time.
    pub created: String,
    /// MTU of the bridge and of every link on it (veths, taps, the instances' `eth0`).
    pub mtu: u32,
}

impl Network {
    /// The gateway: the bridge's own address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }
}

/// An instance's place on a network: recorded at create, wired at start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's name.
    pub network: String,
    /// The network's id (to tell a re-created network of the same name).
    pub network_id: String,
    /// The host bridge device.
    pub bridge: String,
    /// The instance's address.
    pub ip: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The default route.
    pub gateway: Ipv4Addr,
    /// Published ports.
    pub ports: Vec<PortMap>,
    /// The network's MTU (attachments recorded before networks had one: Ethernet's).
    #[serde(default = "legacy_mtu")]
    pub mtu: u32,
    /// The instance's interface on this network: `eth0` for its first network, `eth1`
    /// and on for the networks it joined later (attachments recorded before instances
    /// could have more than one network: `eth0`).
    #[serde(default = "first_interface")]
    pub interface: String,
    /// Its other names on this network (`--alias`, `--network-alias`), as recorded in
    /// its lease.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Whether its address was asked for (`--ip`), rather than handed out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fixed: bool,
}

fn legacy_mtu() -> u32 {
    crate::LEGACY_MTU
}

/// The interface of an instance's first network.
pub fn first_interface() -> String {
    "eth0".to_string()
}

/// Another instance on the same network, for `/etc/hosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Instance id.
    pub instance: String,
    /// Instance name.
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its other names on the network (`--network-alias`).
    pub aliases: Vec<String>,
}

/// Handle on the database.
pub struct Store {
    path: PathBuf,
    db: vessel_db::Db,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS networks (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    bridge TEXT NOT NULL UNIQUE,
    subnet TEXT NOT NULL,
    created TEXT NOT NULL,
    mtu INTEGER
);
CREATE TABLE IF NOT EXISTS leases (
    instance TEXT NOT NULL,
    network TEXT NOT NULL,
    ip TEXT NOT NULL,
    name TEXT NOT NULL,
    dir TEXT,
    aliases TEXT,
    PRIMARY KEY (instance, network),
    UNIQUE (network, ip)
);
CREATE TABLE IF NOT EXISTS ports (
    proto TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    instance TEXT NOT NULL,
    PRIMARY KEY (proto, host_port)
);
";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("read", "/dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The columns [`row_network`] reads, in its order.
const NETWORK_COLUMNS: &str = "name, id, bridge, subnet, created, mtu";

/// The network called `name`, if there is one.
fn find_network(db: &Connection, name: &str) -> rusqlite::Result<Option<Network>> {
    db.query_row(
        &format!("SELECT {NETWORK_COLUMNS} FROM networks WHERE name = ?1"),
        params![name],
        row_network,
    )
    .optional()
}

fn row_network(r: &rusqlite::Row<'_>) -> rusqlite::Result<Network> {
    let subnet: String = r.get(3)?;
    Ok(Network {
        name: r.get(0)?,
        id: r.get(1)?,
        bridge: r.get(2)?,
        subnet: subnet.parse().map_err(|e: Error| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created: r.get(4)?,
        // Networks recorded before the column existed have Ethernet-MTU bridges.
        mtu: r.get::<_, Option<u32>>(5)?.unwrap_or(crate::LEGACY_MTU),
    })
}

/// The host's ephemeral port range (`net.ipv4.ip_local_port_range`), where random host
/// ports come from, as Docker's do.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .filter(|(lo, hi)| *lo > 0 && lo <= hi)
        .unwrap_or((32768, 60999))
}

/// A free host port for `p` (whose `host_port` is 0): not published by any instance, not
/// taken by `earlier` (the same request's), and bindable now. The search starts at a
/// point derived from the instance's id, so that instances created together do not all
/// try the same port first. `None` when the whole range is taken.
fn pick_host_port(
    tx: &Transaction<'_>,
    earlier: &[PortMap],
    p: &PortMap,
    instance: &str,
) -> rusqlite::Result<Option<u16>> {
    let (lo, hi) = ephemeral_range();
    let span = u32::from(hi - lo) + 1;
    let seed = instance
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        .wrapping_add(u32::from(p.container_port));
    let mut stmt = tx.prepare("SELECT 1 FROM ports WHERE proto = ?1 AND host_port = ?2")?;
    for k in 0..span {
        let port = lo + ((seed.wrapping_add(k)) % span) as u16;
        if earlier
            .iter()
            .any(|q| q.proto == p.proto && q.host_port == port)
            || stmt.exists(params![p.proto.as_str(), port])?
        {
            continue;
        }
        let candidate = PortMap {
            host_port: port,
            ..*p
        };
        if host_port_free(&candidate) {
            return Ok(Some(port));
        }
    }
    Ok(None)
}

/// Whether a host port is free for `proto`: binding it is the only true test.
fn host_port_free(p: &PortMap) -> bool {
    let ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    match p.proto {
        Proto::Tcp => std::net::TcpListener::bind((ip, p.host_port)).is_ok(),
        Proto::Udp => std::net::UdpSocket::bind((ip, p.host_port)).is_ok(),
    }
}

impl Store {
    /// Opens (creating) `<dir>/network.db`.
    pub fn open(dir: &Path) -> Result<Store> {
        vessel_db::private_dir(dir, 0o700).map_err(|e| Error::io("create", dir, e))?;
        let path = dir.join("network.db");
        let err = |e| Error::Db(path.clone(), e);
        let db = vessel_db::open(&path, SCHEMA).map_err(err)?;
        // Databases from before leases recorded their instance's directory and aliases,
        // and before networks had an MTU.
        for column in [
            "ALTER TABLE leases ADD COLUMN dir TEXT",
            "ALTER TABLE networks ADD COLUMN mtu INTEGER",
            "ALTER TABLE leases ADD COLUMN aliases TEXT",
        ] {
            match db.execute(column, []) {
                Err(rusqlite::Error::SqliteFailure(_, Some(m)))
                    if m.contains("duplicate column") => {}
                r => {
                    r.map_err(err)?;
                }
            }
        }
        let mut store = Store { path, db };
        store.lease_per_network()?;
        Ok(store)
    }

    /// Databases from before an instance could be on more than one network keyed leases
    /// by instance alone: the table is rebuilt with the key (instance, network), once,
    /// by whichever process gets there first.
    fn lease_per_network(&mut self) -> Result<()> {
        let keyed = |db: &Connection| -> rusqlite::Result<bool> {
            db.query_row(
                "SELECT pk FROM pragma_table_info('leases') WHERE name = 'network'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|pk| pk > 0)
        };
        if keyed(&self.db).map_err(self.err())? {
            return Ok(());
        }
        self.write(|tx, err| {
            if keyed(tx).map_err(err)? {
                return Ok(());
            }
            tx.execute_batch(
                "CREATE TABLE leases_keyed (instance TEXT NOT NULL, network TEXT NOT NULL, \
                 ip TEXT NOT NULL, name TEXT NOT NULL, dir TEXT, aliases TEXT, \
                 PRIMARY KEY (instance, network), UNIQUE (network, ip)); \
                 INSERT INTO leases_keyed (instance, network, ip, name, dir, aliases) \
                 SELECT instance, network, ip, name, dir, aliases FROM leases; \
                 DROP TABLE leases; \
                 ALTER TABLE leases_keyed RENAME TO leases;",
            )
            .map_err(err)
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |e| Error::Db(self.path.clone(), e)
    }

    /// Records a new network; refuses a taken name, a taken bridge name or an
    /// overlapping subnet.
    pub fn create_network(
        &mut self,
        name: &str,
        bridge: Option<&str>,
        subnet: Subnet,
        mtu: u32,
    ) -> Result<Network> {
        self.write(|tx, _| insert_network(tx, name, bridge, subnet, mtu))
    }

    /// The network called `name`.
    pub fn network(&self, name: &str) -> Result<Network> {
        find_network(&self.db, name)
            .map_err(self.err())?
            .ok_or_else(|| Error::NoSuchNetwork(name.to_string()))
    }

    /// Every network, by name.
    pub fn networks(&self) -> Result<Vec<Network>> {
        let mut stmt = self
            .db
            .prepare(&format!(
                "SELECT {NETWORK_COLUMNS} FROM networks ORDER BY name"
            ))
            .map_err(self.err())?;
        let rows = stmt.query_map([], row_network).map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())
    }

    /// Forgets network `name`; refuses while instances hold leases on it.
    pub fn delete_network(&mut self, name: &str) -> Result<Network> {
        self.write(|tx, err| {
            let net = find_network(tx, name)
                .map_err(err)?
                .ok_or_else(|| Error::NoSuchNetwork(name.to_string()))?;
            reap(tx)?;
            let users: Vec<String> = {
                let mut stmt = tx
                    .prepare("SELECT name FROM leases WHERE network = ?1 ORDER BY name")
                    .map_err(err)?;
                let rows = stmt.query_map(params![name], |r| r.get(0)).map_err(err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)?
            };
            if !users.is_empty() {
                return Err(Error::NetworkInUse(name.to_string(), users.join(", ")));
            }
            tx.execute("DELETE FROM networks WHERE name = ?1", params![name])
                .map_err(err)?;
            Ok(net)
        })
    }

    /// Gives instance `instance` (named `name`) an address on `network` and reserves its
    /// host ports, all or nothing. `default` describes the default network (bridge,
    /// subnet, MTU), recorded on first use.
    #[allow(clippy::too_many_arguments)]
    pub fn allocate(
        &mut self,
        instance: &str,
        name: &str,
        aliases: &[String],
        network: &str,
        ports: &[PortMap],
        default: Option<(&str, Subnet, u32)>,
        dir: Option<&Path>,
        want: Option<Ipv4Addr>,
    ) -> Result<Attachment> {
        self.write(|tx, err| {
            reap(tx)?;
            let on_it: bool = tx
                .query_row(
                    "SELECT COUNT(*) FROM leases WHERE instance = ?1 AND network = ?2",
                    params![instance, network],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(err)?
                > 0;
            if on_it {
                return Err(Error::AlreadyAttached(
                    name.to_string(),
                    network.to_string(),
                ));
            }
            let found = find_network(tx, network).map_err(err)?;
            let net = match (found, default) {
                (Some(n), _) => n,
                (None, Some((bridge, subnet, mtu))) => {
                    insert_network(tx, network, Some(bridge), subnet, mtu)?
                }
                (None, None) => return Err(Error::NoSuchNetwork(network.to_string())),
            };
            let used: std::collections::HashSet<Ipv4Addr> = {
                let mut stmt = tx
                    .prepare("SELECT ip FROM leases WHERE network = ?1")
                    .map_err(err)?;
                let rows = stmt
                    .query_map(params![network], |r| r.get::<_, String>(0))
                    .map_err(err)?;
                rows.filter_map(|r| r.ok().and_then(|s| s.parse().ok()))
                    .collect()
            };
            let ip = match want {
                // `--ip`: that address, if the subnet has it for hosts and it is free.
                Some(ip) if !net.subnet.hosts().any(|h| h == ip) => {
                    return Err(Error::InvalidAddress(format!(
                        "no configured subnet or ip-range contain the IP address {ip} (network {network} is {})",
                        net.subnet
                    )))
                }
                Some(ip) if used.contains(&ip) => {
                    return Err(Error::AddressInUse(ip, network.to_string()))
                }
                Some(ip) => ip,
                None => net
                    .subnet
                    .hosts()
                    .find(|ip| !used.contains(ip))
                    .ok_or_else(|| Error::PoolExhausted(network.to_string(), net.subnet))?,
            };
            tx.execute(
                "INSERT INTO leases (instance, network, ip, name, dir, aliases) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    instance,
                    network,
                    ip.to_string(),
                    name,
                    dir.map(|d| d.to_string_lossy().into_owned()),
                    // Host names: no spaces in any (crate::check_alias).
                    aliases.join(" ")
                ],
            )
            .map_err(err)?;
            let mut ports = ports.to_vec();
            for i in 0..ports.len() {
                if ports[i].host_port == 0 {
                    // A random host port (`-p 80`, `-P`): the first free one of the
                    // host's ephemeral range from a point that differs per instance.
                    ports[i].host_port = pick_host_port(tx, &ports[..i], &ports[i], instance)
                        .map_err(err)?
                        .ok_or_else(|| {
                            Error::PortInUse(
                                ports[i],
                                "no free host port is left in the ephemeral range".into(),
                            )
                        })?;
                }
                let p = &ports[i];
                if ports[..i]
                    .iter()
                    .any(|q| q.proto == p.proto && q.host_port == p.host_port)
                {
                    return Err(Error::InvalidPort(format!(
                        "host port {}/{} is given twice",
                        p.host_port,
                        p.proto.as_str()
                    )));
                }
                let holder: Option<String> = tx
                    .query_row(
                        "SELECT l.name FROM ports p LEFT JOIN leases l ON l.instance = p.instance \
                         WHERE p.proto = ?1 AND p.host_port = ?2",
                        params![p.proto.as_str(), p.host_port],
                        |r| r.get::<_, Option<String>>(0),
                    )
                    .optional()
                    .map_err(err)?
                    .map(|n| n.unwrap_or_else(|| "another instance".into()));
                if let Some(h) = holder {
                    return Err(Error::PortInUse(*p, format!("published by {h}")));
                }
                if !host_port_free(p) {
                    return Err(Error::PortInUse(
                        *p,
                        "bound by a process on the host".into(),
                    ));
                }
                tx.execute(
                    "INSERT INTO ports (proto, host_port, instance) VALUES (?1, ?2, ?3)",
                    params![p.proto.as_str(), p.host_port, instance],
                )
                .map_err(err)?;
            }
            Ok(Attachment {
                network: net.name.clone(),
                network_id: net.id.clone(),
                bridge: net.bridge.clone(),
                ip,
                prefix: net.subnet.prefix,
                gateway: net.gateway(),
                ports,
                mtu: net.mtu,
                interface: first_interface(),
                aliases: aliases.to_vec(),
                fixed: want.is_some(),
            })
        })
    }

    /// Runs `f` in a write transaction, committed if `f` succeeds. The write lock is taken
    /// at once (IMMEDIATE), so concurrent vessel processes wait on the busy handler rather
    /// than fail to upgrade a read. `f` gets the transaction and the error mapper.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &dyn Fn(rusqlite::Error) -> Error) -> Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let err = move |e| Error::Db(path.clone(), e);
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let out = f(&tx, &err)?;
        tx.commit().map_err(&err)?;
        Ok(out)
    }

    /// Drops an instance's lease and host ports. Idempotent.
    pub fn release(&mut self, instance: &str) -> Result<()> {
        self.write(|tx, err| {
            tx.execute("DELETE FROM leases WHERE instance = ?1", params![instance])
                .map_err(err)?;
            tx.execute("DELETE FROM ports WHERE instance = ?1", params![instance])
                .map_err(err)?;
            Ok(())
        })
    }

    /// Drops an instance's lease on one network, and its host ports with it if
    /// `ports` (they belong to its first network). Idempotent.
    pub fn release_one(&mut self, instance: &str, network: &str, ports: bool) -> Result<()> {
        self.write(|tx, err| {
            tx.execute(
                "DELETE FROM leases WHERE instance = ?1 AND network = ?2",
                params![instance, network],
            )
            .map_err(err)?;
            if ports {
                tx.execute("DELETE FROM ports WHERE instance = ?1", params![instance])
                    .map_err(err)?;
            }
            Ok(())
        })
    }

    /// The instances with an address on `network`.
    pub fn peers(&self, network: &str) -> Result<Vec<Peer>> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT instance, name, ip, aliases FROM leases WHERE network = ?1 ORDER BY ip",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![network], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for r in rows {
            let (instance, name, ip, aliases) = r.map_err(self.err())?;
            if let Ok(ip) = ip.parse() {
                let aliases = aliases
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                out.push(Peer {
                    instance,
                    name,
                    ip,
                    aliases,
                });
            }
        }
        Ok(out)
    }
}

/// Drops the leases (and host ports) of instances whose directory is gone: their data
/// root was deleted without `vessel rm`, so no command will ever release them. An
/// instance's directory exists before its lease is taken and is removed only by its
/// removal, which releases the lease anyway.
fn reap(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let path = PathBuf::from(tx.path().unwrap_or_default());
    let err = |e| Error::Db(path.clone(), e);
    let stale: Vec<String> = {
        let mut stmt = tx
            .prepare("SELECT instance, dir FROM leases WHERE dir IS NOT NULL")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(err)?;
        rows.filter_map(|r| r.ok())
            .filter(|(_, d)| !Path::new(d).exists())
            .map(|(i, _)| i)
            .collect()
    };
    for i in stale {
        tracing::info!(instance = %i, "dropping the lease of an instance whose directory is gone");
        tx.execute("DELETE FROM leases WHERE instance = ?1", params![i])
            .map_err(err)?;
        tx.execute("DELETE FROM ports WHERE instance = ?1", params![i])
            .map_err(err)?;
    }
    Ok(())
}

fn insert_network(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    bridge: Option<&str>,
    subnet: Subnet,
    mtu: u32,
) -> Result<Network> {
    let path = PathBuf::from(tx.path().unwrap_or_default());
    let err = |e| Error::Db(path.clone(), e);
    let existing: Vec<Network> = {
        let mut stmt = tx
            .prepare(&format!("SELECT {NETWORK_COLUMNS} FROM networks"))
            .map_err(err)?;
        let rows = stmt.query_map([], row_network).map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)?
    };
    if existing.iter().any(|n| n.name == name) {
        return Err(Error::NetworkExists(name.to_string()));
    }
    if let Some(n) = existing.iter().find(|n| n.subnet.overlaps(subnet)) {
        return Err(Error::SubnetOverlap(subnet, n.name.clone(), n.subnet));
    }
    let id = random_hex(16)?;
    let bridge = match bridge {
        Some(b) => b.to_string(),
        None => format!("vsl-{}", &id[..8]),
    };
    let net = Network {
        name: name.to_string(),
        id,
        bridge,
        subnet,
        created: now(),
        mtu,
    };
    tx.execute(
        "INSERT INTO networks (name, id, bridge, subnet, created, mtu) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            net.name,
            net.id,
            net.bridge,
            net.subnet.to_string(),
            net.created,
            net.mtu
        ],
    )
    .map_err(err)?;
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        (d, s)
    }

    #[test]
    fn overlapping_and_duplicate_networks_are_refused() {
        let (_d, mut s) = store();
        s.create_network("a", None, "10.200.0.0/24".parse().unwrap(), 1500)
            .unwrap();
        assert!(matches!(
            s.create_network("b", None, "10.200.0.0/16".parse().unwrap(), 1500),
            Err(Error::SubnetOverlap(..))
        ));
        assert!(matches!(
            s.create_network("a", None, "10.201.0.0/24".parse().unwrap(), 1500),
            Err(Error::NetworkExists(_))
        ));
        s.create_network("b", None, "10.200.1.0/24".parse().unwrap(), 1500)
            .unwrap();
        assert_eq!(s.networks().unwrap().len(), 2);
    }

    #[test]
    fn networks_keep_their_mtu_and_older_ones_read_as_ethernet() {
        let d = tempfile::tempdir().unwrap();
        // A database from before networks had an MTU.
        let old = Connection::open(d.path().join("network.db")).unwrap();
        old.execute_batch(
            "CREATE TABLE networks (name TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, \
             bridge TEXT NOT NULL UNIQUE, subnet TEXT NOT NULL, created TEXT NOT NULL); \
             INSERT INTO networks VALUES ('old', 'ab', 'vsl-ab', '10.204.0.0/24', 'then');",
        )
        .unwrap();
        drop(old);
        let mut s = Store::open(d.path()).unwrap();
        assert_eq!(s.network("old").unwrap().mtu, 1500);
        s.create_network("new", None, "10.205.0.0/24".parse().unwrap(), 9000)
            .unwrap();
        assert_eq!(s.network("new").unwrap().mtu, 9000);
        let att = s
            .allocate("i", "n", &[], "new", &[], None, None, None)
            .unwrap();
        assert_eq!(att.mtu, 9000);
        // An attachment recorded before attachments had an MTU.
        let mut json = serde_json::to_value(&att).unwrap();
        json.as_object_mut().unwrap().remove("mtu");
        let back: Attachment = serde_json::from_value(json).unwrap();
        assert_eq!(back.mtu, 1500);
    }

    #[test]
    fn leases_are_distinct_and_the_pool_ends() {
        let (_d, mut s) = store();
        s.create_network("t", None, "10.202.0.0/29".parse().unwrap(), 1500)
            .unwrap();
        let mut ips = Vec::new();
        for i in 0..5 {
            ips.push(
                s.allocate(
                    &format!("i{i}"),
                    &format!("n{i}"),
                    &[],
                    "t",
                    &[],
                    None,
                    None,
                    None,
                )
                .unwrap()
                .ip,
            );
        }
        ips.dedup();
        assert_eq!(ips.len(), 5);
        assert!(matches!(
            s.allocate("i9", "n9", &[], "t", &[], None, None, None),
            Err(Error::PoolExhausted(..))
        ));
        // Nothing half-done: the failed allocation left no lease.
        assert_eq!(s.peers("t").unwrap().len(), 5);
        s.release("i2").unwrap();
        s.release("i2").unwrap();
        assert_eq!(
            s.allocate("i9", "n9", &[], "t", &[], None, None, None)
                .unwrap()
                .ip,
            ips[2]
        );
        assert!(matches!(
            s.delete_network("t"),
            Err(Error::NetworkInUse(..))
        ));
        assert!(matches!(
            s.allocate("x", "x", &[], "nope", &[], None, None, None),
            Err(Error::NoSuchNetwork(_))
        ));
    }

    #[test]
    fn a_published_port_is_taken_once() {
        let (_d, mut s) = store();
        s.create_network("t", None, "10.203.0.0/24".parse().unwrap(), 1500)
            .unwrap();
        // A port the kernel picks is free now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = PortMap::parse(&format!("127.0.0.1:{port}:80")).unwrap();
        s.allocate("a", "web", &[], "t", &[p], None, None, None)
            .unwrap();
        let e = s
            .allocate("b", "web2", &[], "t", &[p], None, None, None)
            .unwrap_err();
        assert!(e.to_string().contains("web"), "{e}");
        assert_eq!(
            s.peers("t").unwrap().len(),
            1,
            "the failed allocation kept no lease"
        );
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let q = PortMap::parse(&format!(
            "127.0.0.1:{}:80",
            held.local_addr().unwrap().port()
        ))
        .unwrap();
        assert!(matches!(
            s.allocate("c", "c", &[], "t", &[q], None, None, None),
            Err(Error::PortInUse(..))
        ));
    }

    #[test]
    fn an_instance_holds_one_lease_per_network_and_old_databases_are_rekeyed() {
        let d = tempfile::tempdir().unwrap();
        // A database from before an instance could be on more than one network.
        let old = Connection::open(d.path().join("network.db")).unwrap();
        old.execute_batch(
            "CREATE TABLE networks (name TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, \
             bridge TEXT NOT NULL UNIQUE, subnet TEXT NOT NULL, created TEXT NOT NULL, mtu INTEGER); \
             INSERT INTO networks VALUES ('one', 'a1', 'vsl-a1', '10.206.0.0/24', 'then', 1500); \
             INSERT INTO networks VALUES ('two', 'a2', 'vsl-a2', '10.207.0.0/24', 'then', 1500); \
             CREATE TABLE leases (instance TEXT PRIMARY KEY, network TEXT NOT NULL, ip TEXT NOT NULL, \
             name TEXT NOT NULL, dir TEXT, aliases TEXT, UNIQUE (network, ip)); \
             INSERT INTO leases VALUES ('i', 'one', '10.206.0.2', 'web', NULL, 'w');",
        )
        .unwrap();
        drop(old);
        let mut s = Store::open(d.path()).unwrap();
        // Opened twice: the second finds it done.
        drop(Store::open(d.path()).unwrap());
        assert_eq!(s.peers("one").unwrap()[0].aliases, ["w"]);
        let two = s
            .allocate("i", "web", &["x".into()], "two", &[], None, None, None)
            .unwrap();
        assert_eq!(
            (two.ip.to_string().as_str(), two.aliases.as_slice()),
            ("10.207.0.2", &["x".to_string()][..])
        );
        assert!(matches!(
            s.allocate("i", "web", &[], "two", &[], None, None, None),
            Err(Error::AlreadyAttached(..))
        ));
        s.release_one("i", "two", false).unwrap();
        assert!(s.peers("two").unwrap().is_empty());
        assert_eq!(s.peers("one").unwrap().len(), 1);
        s.allocate("i", "web", &[], "two", &[], None, None, None)
            .unwrap();
        s.release("i").unwrap();
        assert!(s.peers("one").unwrap().is_empty() && s.peers("two").unwrap().is_empty());
    }

    #[test]
    fn an_address_asked_for_is_given_if_the_subnet_has_it_free() {
        let (_d, mut s) = store();
        s.create_network("w", None, "10.208.0.0/29".parse().unwrap(), 1500)
            .unwrap();
        let want = |ip: &str| Some(ip.parse().unwrap());
        let a = s
            .allocate("a", "a", &[], "w", &[], None, None, want("10.208.0.5"))
            .unwrap();
        assert_eq!((a.ip.to_string().as_str(), a.fixed), ("10.208.0.5", true));
        for (ip, e) in [
            ("10.208.0.5", "Address already in use"),
            ("10.208.0.1", "no configured subnet"), // the gateway
            ("10.208.0.7", "no configured subnet"), // the broadcast address
            ("10.208.1.2", "no configured subnet"),
        ] {
            let got = s
                .allocate("b", "b", &[], "w", &[], None, None, want(ip))
                .unwrap_err()
                .to_string();
            assert!(got.contains(e), "{ip}: {got}");
        }
        // The next handed out skips it.
        let b = s
            .allocate("b", "b", &[], "w", &[], None, None, None)
            .unwrap();
        assert_eq!((b.ip.to_string().as_str(), b.fixed), ("10.208.0.2", false));
    }
}
