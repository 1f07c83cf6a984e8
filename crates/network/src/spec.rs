//! User-facing network values, parsed once at the boundary: subnets, `--network` modes and
//! `-p` port publications.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An IPv4 network in CIDR notation, with its host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 8 to 30 (a bridge network needs a gateway and at least one host).
    pub prefix: u8,
}

impl Subnet {
    /// The netmask as an integer.
    fn mask(self) -> u32 {
        u32::MAX << (32 - self.prefix as u32)
    }

    /// Whether `ip` lies in this subnet.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(self, other: Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        let m = if p == 0 {
            0
        } else {
            u32::MAX << (32 - p as u32)
        };
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// The first host address: the gateway (the bridge's own address).
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// Host addresses instances may get: after the gateway, before broadcast.
    pub fn hosts(self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.addr) + 2;
        let last = u32::from(self.addr) | !self.mask(); // broadcast, excluded
        (first..last).map(Ipv4Addr::from)
    }
}

impl FromStr for Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Subnet> {
        let bad = |why: &str| Error::InvalidSubnet(format!("{s:?}: {why}"));
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| bad("expected an IPv4 CIDR like 10.89.0.0/24"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix length must be between 8 and 30"));
        }
        let net = Subnet { addr, prefix };
        if u32::from(addr) & net.mask() != u32::from(addr) {
            let fixed = Ipv4Addr::from(u32::from(addr) & net.mask());
            return Err(bad(&format!(
                "host bits are set (did you mean {fixed}/{prefix}?)"
            )));
        }
        if addr.is_loopback() || addr.is_multicast() || addr.is_unspecified() || addr.is_broadcast()
        {
            return Err(bad("not a unicast network"));
        }
        Ok(net)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for Subnet {
    type Error = Error;
    fn try_from(s: String) -> Result<Subnet> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// `--network`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A private network namespace with loopback only.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A port on the named bridge network.
    Bridge(String),
}

impl Mode {
    /// Parses `none`, `host`, `bridge` (the default network) or a network name.
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "none" => Ok(Mode::None),
            "host" => Ok(Mode::Host),
            "bridge" | "default" => Ok(Mode::Bridge(crate::DEFAULT_NETWORK.to_string())),
            name => {
                validate_name(name)?;
                Ok(Mode::Bridge(name.to_string()))
            }
        }
    }

    /// The word `inspect` shows.
    pub fn as_str(&self) -> &str {
        match self {
            Mode::None => "none",
            Mode::Host => "host",
            Mode::Bridge(n) => n,
        }
    }
}

/// Checks a network name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 characters.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One `-p [ip:]host:container[/tcp|udp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    /// Host address to publish on (all local addresses if `None`).
    pub host_ip: Option<Ipv4Addr>,
    /// Host port.
    pub host_port: u16,
    /// Port inside the instance.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
}

impl PortMap {
    /// Parses `-p [[ip:]host:]container[/tcp|udp]`. No host port (`80`, `ip::80`) is a
    /// random one, `host_port` 0 until the port is allocated.
    pub fn parse(s: &str) -> Result<PortMap> {
        let bad = |why: &str| Error::InvalidPort(format!("{s:?}: {why}"));
        let (ports, proto) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some((_, other)) => {
                return Err(bad(&format!("unknown protocol {other:?} (tcp or udp)")))
            }
            None => (s, Proto::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [h, c] => (None, *h, *c),
            [ip, h, c] => (Some(*ip), *h, *c),
            [c] => (None, "", *c),
            _ => return Err(bad("expected [ip:]hostPort:containerPort[/tcp|udp]")),
        };
        let port = |p: &str, what: &str| -> Result<u16> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(&format!(
                    "invalid {what} port {p:?} (1-65535; ranges are not supported)"
                ))),
            }
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(a) => {
                let a: Ipv4Addr = a
                    .parse()
                    .map_err(|_| bad(&format!("invalid host IPv4 address {a:?}")))?;
                if a.is_unspecified() {
                    None
                } else {
                    Some(a)
                }
            }
        };
        Ok(PortMap {
            host_ip,
            host_port: if host.is_empty() {
                0
            } else {
                port(host, "host")?
            },
            container_port: port(ctr, "container")?,
            proto,
        })
    }
}

impl fmt::Display for PortMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        write!(
            f,
            "{ip}:{}->{}/{}",
            self.host_port,
            self.container_port,
            self.proto.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s: Subnet = "10.89.0.0/24".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 89, 0, 1));
        assert_eq!(s.hosts().next(), Some(Ipv4Addr::new(10, 89, 0, 2)));
        assert_eq!(s.hosts().last(), Some(Ipv4Addr::new(10, 89, 0, 254)));
        assert_eq!(s.hosts().count(), 253);
        assert!(s.contains(Ipv4Addr::new(10, 89, 0, 77)));
        assert!(!s.contains(Ipv4Addr::new(10, 89, 1, 1)));
        let wide: Subnet = "10.89.0.0/16".parse().unwrap();
        assert!(s.overlaps(wide) && wide.overlaps(s));
        assert!(!s.overlaps("10.89.1.0/24".parse().unwrap()));
        let tiny: Subnet = "10.1.2.4/30".parse().unwrap();
        assert_eq!(
            tiny.hosts().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(10, 1, 2, 6)]
        );
        for bad in [
            "10.89.0.1/24",
            "10.89.0.0",
            "10.89.0.0/31",
            "10.0.0.0/4",
            "127.0.0.0/8",
            "x/24",
            "10.89.0.0/x",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        assert_eq!(s.to_string(), "10.89.0.0/24");
    }

    #[test]
    fn ports() {
        let p = PortMap::parse("8080:80").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port, p.proto),
            (None, 8080, 80, Proto::Tcp)
        );
        let p = PortMap::parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.proto, Proto::Udp);
        assert_eq!(p.to_string(), "127.0.0.1:5353->53/udp");
        // No host port: a random one, allocated later.
        let p = PortMap::parse("80").unwrap();
        assert_eq!((p.host_ip, p.host_port, p.container_port), (None, 0, 80));
        let p = PortMap::parse("127.0.0.1::53/udp").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.proto),
            (Some(Ipv4Addr::LOCALHOST), 0, Proto::Udp)
        );
        for bad in [
            "0",
            "0:80",
            "70000:80",
            "a:80",
            "1:2:3:4",
            "8080:80/sctp",
            "1.2.3:80:80",
            "80-81:80",
            "",
        ] {
            let e = PortMap::parse(bad).unwrap_err().to_string();
            assert!(e.contains("port") || e.contains("address"), "{bad}: {e}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("none").unwrap(), Mode::None);
        assert_eq!(Mode::parse("host").unwrap(), Mode::Host);
        assert_eq!(
            Mode::parse("bridge").unwrap(),
            Mode::Bridge(crate::DEFAULT_NETWORK.into())
        );
        assert_eq!(
            Mode::parse("appnet").unwrap(),
            Mode::Bridge("appnet".into())
        );
        assert!(Mode::parse("bad name").is_err());
        assert!(Mode::parse("-x").is_err());
    }
}
