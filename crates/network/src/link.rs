//! Links, addresses and routes over rtnetlink: the bridge, veth pairs into instance
//! network namespaces, tap devices. No `ip` command anywhere.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::{Error, Result};

const EEXIST: i32 = libc::EEXIST;
const ENODEV: i32 = libc::ENODEV;

fn nl_code(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn nl_err(what: String) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |e| Error::Netlink(what, e.to_string())
}

/// Runs `f` against a fresh rtnetlink connection on a one-thread runtime. Netlink
/// sockets act on the network namespace of the thread that opens them.
fn with_netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::Netlink("start a netlink runtime".into(), e.to_string()))?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::Netlink("open a netlink socket".into(), e.to_string()))?;
        let task = tokio::spawn(conn);
        let r = f(handle).await;
        task.abort();
        r
    })
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        Err(e) if nl_code(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl_err(format!("look up link {name}"))(e)),
    }
}

async fn add_addr(handle: &Handle, index: u32, ip: Ipv4Addr, prefix: u8, what: &str) -> Result<()> {
    match handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
    {
        Err(e) if nl_code(&e) == Some(EEXIST) => Ok(()),
        r => r.map_err(nl_err(format!("add address {ip}/{prefix} to {what}"))),
    }
}

async fn set_up(handle: &Handle, index: u32, what: &str) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl_err(format!("bring {what} up")))
}

async fn set_mtu(handle: &Handle, index: u32, mtu: u32, what: &str) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl_err(format!("set the MTU of {what} to {mtu}")))
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::io("write", path, e))
}

/// Makes sure bridge `name` exists, has MTU `mtu` (set explicitly, so the kernel keeps it
/// whatever its ports have), holds `gateway/prefix` and is up, and turns on IPv4
/// forwarding for outbound NAT (as Docker does). Idempotent.
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8, mtu: u32) -> Result<()> {
    with_netlink(|h| async move {
        let index = match index_of(&h, name).await? {
            Some(i) => i,
            None => {
                match h.link().add(LinkBridge::new(name).build()).execute().await {
                    Err(e) if nl_code(&e) == Some(EEXIST) => {}
                    r => r.map_err(nl_err(format!("create bridge {name}")))?,
                }
                index_of(&h, name).await?.ok_or_else(|| {
                    Error::Netlink(format!("create bridge {name}"), "it vanished".into())
                })?
            }
        };
        set_mtu(&h, index, mtu, name).await?;
        add_addr(&h, index, gateway, prefix, name).await?;
        set_up(&h, index, name).await
    })?;
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
}

/// Lets bridge `name` carry packets whose source or destination is in 127.0.0.0/8
/// (`route_localnet`): a connection of the host to a port published on its loopback is
/// DNATed onto the bridge still from 127.0.0.1 (masqueraded only after routing), and its
/// replies are routed back to 127.0.0.1. Only bridges with such a port get it, since it
/// also makes the host accept packets for 127.0.0.0/8 from the bridge: the firewall's
/// loopback guard drops those. Idempotent.
pub fn allow_localnet(name: &str) -> Result<()> {
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{name}/route_localnet"),
        "1",
    )
}

/// Whether a link called `name` exists in our namespace.
pub fn exists(name: &str) -> Result<bool> {
    with_netlink(|h| async move { Ok(index_of(&h, name).await?.is_some()) })
}

/// Deletes link `name` if it exists (a veth's peer goes with it). Idempotent.
pub fn delete(name: &str) -> Result<()> {
    with_netlink(|h| async move {
        let Some(index) = index_of(&h, name).await? else {
            return Ok(());
        };
        match h.link().del(index).execute().await {
            Err(e) if nl_code(&e) == Some(ENODEV) => Ok(()),
            r => r.map_err(nl_err(format!("delete link {name}"))),
        }
    })
}

/// What to configure on the instance's side of a veth pair.
pub struct Endpoint {
    /// Host-side name of the pair.
    pub host_name: String,
    /// Name of the instance's side (`eth0`; `eth1` and on for more networks).
    pub interface: String,
    /// Whether the default route goes through it (the instance's first network).
    pub default_route: bool,
    /// Bridge to enslave the host side to.
    pub bridge: String,
    /// Address inside.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default route.
    pub gateway: Ipv4Addr,
    /// MTU of both sides (the bridge's).
    pub mtu: u32,
}

/// Creates a veth pair whose host side is a port of the bridge and whose other side is
/// `ep.interface` in the network namespace of process `pid`, both with the bridge's MTU,
/// then gives that its address (and the default route if `ep.default_route`) and brings
/// `lo` and it up.
pub fn connect_veth(ep: &Endpoint, pid: i32) -> Result<()> {
    let ns_path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&ns_path).map_err(|e| Error::io("open", &ns_path, e))?;
    let ns_fd = ns.as_raw_fd();
    let what = format!("create veth {} into {ns_path}", ep.host_name);
    let inner = ep.interface.as_str();
    with_netlink(|h| async move {
        let bridge = index_of(&h, &ep.bridge).await?.ok_or_else(|| {
            Error::Netlink(format!("find bridge {}", ep.bridge), "no such link".into())
        })?;
        let peer = LinkUnspec::new_with_name(inner)
            .address(crate::mac_for(ep.ip).to_vec())
            .mtu(ep.mtu)
            .setns_by_fd(ns_fd)
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(ep.host_name.clone())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(bridge)
            .mtu(ep.mtu)
            .up()
            .build();
        h.link().add(msg).execute().await.map_err(nl_err(what))
    })?;
    // Configure the inside from a thread that joins the namespace: setns(CLONE_NEWNET)
    // affects only the calling thread, so the rest of the process stays on the host.
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Netlink(format!("enter {ns_path}"), e.to_string()))?;
            with_netlink(|h| async move {
                let lo = index_of(&h, "lo").await?.unwrap_or(1);
                set_up(&h, lo, "lo").await?;
                let link = index_of(&h, inner).await?.ok_or_else(|| {
                    Error::Netlink(
                        format!("find {inner} in the instance"),
                        "no such link".into(),
                    )
                })?;
                add_addr(&h, link, ep.ip, ep.prefix, inner).await?;
                set_up(&h, link, inner).await?;
                if !ep.default_route {
                    return Ok(());
                }
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(ep.gateway)
                    .output_interface(link)
                    .build();
                match h.route().add(route).execute().await {
                    Err(e) if nl_code(&e) == Some(EEXIST) => Ok(()),
                    r => r.map_err(nl_err(format!("add default route via {}", ep.gateway))),
                }
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Netlink(
                format!("configure {inner}"),
                "the thread panicked".into(),
            ))
        })
    })
}

/// Gives the network namespace of process `pid` its default route via `gateway` through
/// `interface` (an instance whose first network left: the next one takes the route).
pub fn set_default_route(pid: i32, interface: &str, gateway: Ipv4Addr) -> Result<()> {
    let ns_path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&ns_path).map_err(|e| Error::io("open", &ns_path, e))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Netlink(format!("enter {ns_path}"), e.to_string()))?;
            with_netlink(|h| async move {
                let link = index_of(&h, interface).await?.ok_or_else(|| {
                    Error::Netlink(
                        format!("find {interface} in the instance"),
                        "no such link".into(),
                    )
                })?;
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .output_interface(link)
                    .build();
                match h.route().add(route).execute().await {
                    Err(e) if nl_code(&e) == Some(EEXIST) => Ok(()),
                    r => r.map_err(nl_err(format!("add default route via {gateway}"))),
                }
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Netlink(
                format!("route through {interface}"),
                "the thread panicked".into(),
            ))
        })
    })
}

/// The host's own IPv4 addresses with their prefix lengths (loopback excluded).
pub fn host_addresses() -> Result<Vec<(Ipv4Addr, u8)>> {
    use rtnetlink::packet_route::address::AddressAttribute;
    with_netlink(|h| async move {
        let mut out = Vec::new();
        let mut addrs = h.address().get().execute();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(nl_err("list host addresses".into()))?
        {
            for attr in &a.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                    if !ip.is_loopback() {
                        out.push((*ip, a.header.prefix_len));
                    }
                }
            }
        }
        Ok(out)
    })
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

// TUNSETIFF is `_IOW('T', 202, int)` in <linux/if_tun.h> but passes a `struct ifreq`.
nix::ioctl_write_ptr_bad!(
    tunsetiff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    IfReq
);

/// Creates tap device `name` (IFF_TAP, no packet info, with virtio-net headers) as a port
/// of `bridge` with MTU `mtu` (the bridge's), up, and returns its queue descriptor for a VMM. The tap is not
/// persistent: it disappears when the last descriptor closes, so a VMM that dies
/// leaves no link behind.
pub fn create_tap(name: &str, bridge: &str, mtu: u32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(Error::Netlink(
            format!("create tap {name:?}"),
            "bad interface name".into(),
        ));
    }
    let path = c"/dev/net/tun";
    // SAFETY: open(2) with a valid NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            "open",
            "/dev/net/tun",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let tap = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads an ifreq from a valid pointer on our tun descriptor.
    unsafe { tunsetiff(tap.as_raw_fd(), &req) }
        .map_err(|e| Error::Netlink(format!("create tap {name}"), e.to_string()))?;
    with_netlink(|h| async move {
        let br = index_of(&h, bridge).await?.ok_or_else(|| {
            Error::Netlink(format!("find bridge {bridge}"), "no such link".into())
        })?;
        let index = index_of(&h, name)
            .await?
            .ok_or_else(|| Error::Netlink(format!("find tap {name}"), "no such link".into()))?;
        h.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(br)
                    .mtu(mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl_err(format!("attach tap {name} to {bridge}")))
    })?;
    Ok(tap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (CAP_NET_ADMIN), like every test of the real kernel objects here.
    #[test]
    fn a_tap_joins_the_bridge_and_vanishes_with_its_descriptor() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates a bridge and a tap device: run it as root"
        );
        let id = std::process::id() % 100_000;
        let bridge = format!("vtb{id}");
        let tap = format!("vtt{id}");
        // The largest MTU a network may have: a tap must take it.
        let mtu = crate::MAX_MTU;
        ensure_bridge(&bridge, Ipv4Addr::new(10, 86, 255, 1), 30, mtu).unwrap();
        let fd = create_tap(&tap, &bridge, mtu).unwrap();
        let master = std::fs::read_link(format!("/sys/class/net/{tap}/master")).unwrap();
        assert!(master.ends_with(&bridge), "{master:?}");
        for dev in [&bridge, &tap] {
            let got = std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu")).unwrap();
            assert_eq!(got.trim(), mtu.to_string(), "MTU of {dev}");
        }
        drop(fd);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while exists(&tap).unwrap() {
            assert!(
                std::time::Instant::now() < deadline,
                "{tap} outlived its descriptor"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        delete(&bridge).unwrap();
        assert!(!exists(&bridge).unwrap());
        assert!(create_tap("", &bridge, 1500).is_err());
    }
}
