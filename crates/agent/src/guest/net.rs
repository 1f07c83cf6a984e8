//! `eth0` from the host's lease: address, netmask, MTU, up, default route. Plain socket
//! ioctls (the static agent carries no netlink library; these are the calls `ifconfig`
//! and `route` make).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use vessel_agent::protocol::GuestNetwork;

use super::sys::{self, check};

/// The guest interface the virtio-net driver creates.
const IFACE: &str = "eth0";
/// How long `virtio_net` may take to register [`IFACE`] after its module loaded.
const IFACE_WAIT: Duration = Duration::from_secs(10);

/// `struct rtentry` of `<linux/route.h>` (libc declares it only for musl).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// The netmask of a prefix length (clamped to 0..=32).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let p = u32::from(prefix.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - p).unwrap_or(0))
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain data; the kernel reads
    // a sockaddr as the family-specific layout.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(IFACE.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

/// Configures [`IFACE`] as `net` says and routes everything else through its gateway.
pub fn configure(net: &GuestNetwork) -> io::Result<()> {
    sys::wait_for(&format!("/sys/class/net/{IFACE}"), IFACE_WAIT).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{IFACE} did not appear (is virtio_net loaded?): {e}"),
        )
    })?;
    // SAFETY: socket(2) with constant arguments; the result is checked, then owned.
    let fd = check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) },
        || "socket(AF_INET)".into(),
    )?;
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let s = sock.as_raw_fd();
    let set = |request: libc::c_ulong, req: &libc::ifreq, what: &str| {
        // SAFETY: each SIOCSIF* request reads an ifreq valid for the call.
        check(unsafe { libc::ioctl(s, request, req) }, || {
            format!("{what} of {IFACE}")
        })
        .map(|_| ())
    };
    if net.mtu > 0 {
        let mut req = ifreq();
        req.ifr_ifru.ifru_mtu = net.mtu as libc::c_int;
        set(libc::SIOCSIFMTU, &req, &format!("set MTU {}", net.mtu))?;
    }
    let mut req = ifreq();
    req.ifr_ifru.ifru_addr = sockaddr(net.address);
    set(
        libc::SIOCSIFADDR,
        &req,
        &format!("set address {}", net.address),
    )?;
    let mut req = ifreq();
    req.ifr_ifru.ifru_netmask = sockaddr(netmask(net.prefix));
    set(
        libc::SIOCSIFNETMASK,
        &req,
        &format!("set prefix /{}", net.prefix),
    )?;
    let mut req = ifreq();
    // SAFETY: SIOCGIFFLAGS fills the flags of an ifreq valid for the call.
    let r = unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) };
    check(r, || format!("read the flags of {IFACE}"))?;
    // SAFETY: SIOCGIFFLAGS just set the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    set(libc::SIOCSIFFLAGS, &req, "bring up")?;
    let mut dev = *b"eth0\0";
    let route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr(net.gateway),
        rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY),
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_mut_ptr().cast(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: SIOCADDRT reads an rtentry (and the NUL-terminated device name it points
    // to) valid for the call.
    let ret = unsafe { libc::ioctl(s, libc::SIOCADDRT, &route) };
    if ret < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
        return Err(sys::last_error(&format!(
            "add the default route via {}",
            net.gateway
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_of_prefixes() {
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(16), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(netmask(99), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn rtentry_has_the_kernel_layout() {
        // x86_64: 8 + 3 * 16 + 2 + 2 + 4 (pad) + 8 + 8 + 2 + 6 (pad) + 8 + 8 + 8 + 2 + 6.
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_flags), 56);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
    }
}
