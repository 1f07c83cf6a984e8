//! End-to-end attacks on the network's defences (issue 14): a container reaching the
//! host's loopback services through its bridge, one network reaching another, and the
//! outside world reaching ports nobody published. Every packet stays on this host: the
//! host's loopback, vessel's bridges and a network namespace of the test's own ("the
//! outside") joined to the host by a veth pair.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A directory holding `index.html` for busybox httpd.
fn www(body: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("index.html"), body).unwrap();
    d
}

/// Instances and networks the test made, removed however it ends.
#[derive(Default)]
struct Cleanup {
    instances: Vec<String>,
    networks: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for i in &self.instances {
            let _ = vessel(&["rm", "-f", i]);
        }
        for n in &self.networks {
            let _ = vessel(&["network", "rm", n]);
        }
    }
}

/// Runs an httpd serving `site` on port 80 (published as `publish` if given) and, if
/// `also` is given, a second one on that port, unpublished. Returns its address.
fn web_server(
    c: &mut Cleanup,
    network: &str,
    publish: &[&str],
    also: Option<u16>,
    site: &tempfile::TempDir,
) -> (String, Ipv4Addr) {
    let n = name("srv");
    c.instances.push(n.clone());
    let bind = format!("{}:/www:ro", site.path().display());
    let script = match also {
        Some(p) => format!("httpd -p {p} -h /www && exec httpd -f -p 80 -h /www"),
        None => "exec httpd -f -p 80 -h /www".to_string(),
    };
    let mut args = vec!["run", "-d", "--name", &n, "--network", network, "-v", &bind];
    for p in publish {
        args.extend(["-p", p]);
    }
    args.extend(["busybox", "sh", "-c", &script]);
    ok(&args);
    let ip: Ipv4Addr = inspect(&n)["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (n, ip)
}

/// `GET /` at `addr`, one attempt with a short connect timeout.
fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// [`get`] retried for up to ten seconds while the server starts.
fn get_patiently(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(addr) {
            Ok(r) if r.contains("200") => return r,
            r if Instant::now() > deadline => panic!("GET http://{addr}/: {r:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs `f` on a thread that joined the network namespace at `ns` (a path such as
/// `/proc/PID/ns/net`): what a process in that namespace, root in it, can do.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(ns).unwrap_or_else(|e| panic!("{ns}: {e}"));
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("enter {ns}: {e}"));
            f()
        })
        .join()
        .unwrap()
    })
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// The 16-bit ones' complement sum of an IPv4 header.
fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one UDP datagram as a raw Ethernet frame out of `ifname` of the current
/// network namespace, to `dst_mac` whatever the routing table says: the forged packet a
/// root process with CAP_NET_RAW (Docker's and vessel's default set has it) can send.
fn send_raw_udp(
    ifname: &str,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 only");
    };
    let mut udp = Vec::new();
    udp.extend(src.port().to_be_bytes());
    udp.extend(dst.port().to_be_bytes());
    udp.extend((8 + payload.len() as u16).to_be_bytes());
    udp.extend([0, 0]); // no UDP checksum
    udp.extend(payload);
    send_raw(ifname, src_mac, dst_mac, *src.ip(), *dst.ip(), 17, &udp);
}

/// Sends an IPv4 packet of protocol `proto` carrying `l4` in an Ethernet frame.
fn send_raw(
    ifname: &str,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    l4: &[u8],
) {
    let mut frame = Vec::new();
    frame.extend(dst_mac);
    frame.extend(src_mac);
    frame.extend(0x0800u16.to_be_bytes());
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend(total.to_be_bytes());
    ip.extend([0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend(src.octets());
    ip.extend(dst.octets());
    let sum = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame.extend(ip);
    frame.extend(l4);

    let index = if_index(ifname);
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            0, // send only
        )
    };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&dst_mac);
    // SAFETY: sendto(2) of a buffer we own to a sockaddr_ll of the given size.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(
        sent,
        frame.len() as isize,
        "send a raw frame on {ifname}: {}",
        std::io::Error::last_os_error()
    );
}

/// Whether `sock` receives `payload` within `window` (generous: the host is shared).
fn receives(sock: &UdpSocket, payload: &[u8], window: Duration) -> bool {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + window;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            if &buf[..n] == payload {
                return true;
            }
        }
    }
    false
}

/// The host's own IPv4 address on an interface other than loopback and vessel's links,
/// if it has one (a published port answers there too).
fn other_host_address() -> Option<Ipv4Addr> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let dev = f.get(1)?;
        if *dev == "lo"
            || ["vessel", "vsl-", "vv", "vt", "vx"]
                .iter()
                .any(|p| dev.starts_with(p))
        {
            return None;
        }
        f.get(3)?.split('/').next()?.parse().ok()
    })
}

/// (a) A container sends datagrams for 127.0.0.1 and 127.0.0.53 to its gateway's MAC,
/// from its own network namespace with a raw socket. The bridge has `route_localnet`
/// (a port is published on every local address, loopback included), so without the guard
/// the host delivers them to its services bound to loopback. A datagram to the gateway's
/// own address on the same path must arrive, or the attack proves nothing. The published
/// port still answers on 127.0.0.1 and on the host's other address.
#[test]
fn a_container_cannot_reach_host_loopback_services_but_published_ports_work() {
    let mut c = Cleanup::default();
    let site = www("published\n");
    let port = free_port();
    let publish = format!("{port}:80");
    let (srv, ip) = web_server(&mut c, "bridge", &[&publish], None, &site);
    assert!(get_patiently(([127, 0, 0, 1], port).into()).ends_with("published\n"));
    let other: Ipv4Addr = other_host_address().unwrap_or(Ipv4Addr::new(10, 87, 0, 1));
    assert!(
        get_patiently((other, port).into()).ends_with("published\n"),
        "published port on {other}"
    );

    let bridge = "vessel0";
    assert_eq!(
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"))
            .unwrap()
            .trim(),
        "1",
        "a port published on loopback needs route_localnet on the bridge"
    );
    let gw_mac =
        parse_mac(&std::fs::read_to_string(format!("/sys/class/net/{bridge}/address")).unwrap());
    let [a, b, cc, d] = ip.octets();
    let my_mac = [0x02, 0x42, a, b, cc, d];
    let gateway = Ipv4Addr::new(10, 87, 0, 1);

    let control = UdpSocket::bind("0.0.0.0:0").unwrap();
    let victim = UdpSocket::bind("127.0.0.1:0").unwrap();
    let victim53 = UdpSocket::bind("127.0.0.53:0").unwrap();
    let pid = inspect(&srv)["State"]["Pid"].as_i64().unwrap();
    let ns = format!("/proc/{pid}/ns/net");
    let send = |dst: SocketAddr, payload: &'static [u8]| {
        in_netns(&ns, || {
            for _ in 0..3 {
                send_raw_udp("eth0", my_mac, gw_mac, (ip, 40000).into(), dst, payload);
            }
        })
    };

    send(
        (gateway, control.local_addr().unwrap().port()).into(),
        b"control",
    );
    assert!(
        receives(&control, b"control", Duration::from_secs(5)),
        "a forged datagram to the gateway did not arrive: the attack cannot be judged"
    );
    send(victim.local_addr().unwrap(), b"to-127.0.0.1");
    send(victim53.local_addr().unwrap(), b"to-127.0.0.53");
    let got1 = receives(&victim, b"to-127.0.0.1", Duration::from_secs(3));
    let got53 = receives(&victim53, b"to-127.0.0.53", Duration::from_secs(3));
    assert!(
        !got1 && !got53,
        "a container reached the host's loopback services (127.0.0.1: {got1}, 127.0.0.53: {got53})"
    );
    // The published port is unharmed by the attempt.
    assert!(get_patiently(([127, 0, 0, 1], port).into()).ends_with("published\n"));
}

/// An idle container on `network`; returns the path of its network namespace, where the
/// test acts as a process of the container would.
fn idle(c: &mut Cleanup, network: &str) -> String {
    let n = name("idle");
    c.instances.push(n.clone());
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        network,
        "busybox",
        "sleep",
        "3600",
    ]);
    let pid = inspect(&n)["State"]["Pid"].as_i64().unwrap();
    format!("/proc/{pid}/ns/net")
}

/// (b) A container on network B fetches a page from a container on network A by its
/// address: isolation must refuse it, while a container on A still gets it. When the
/// networks go, so do their rules.
#[test]
fn networks_are_isolated_from_each_other() {
    let mut c = Cleanup::default();
    let net_a = name("isoa");
    let net_b = name("isob");
    for n in [&net_a, &net_b] {
        ok(&["network", "create", n]);
        c.networks.push(n.clone());
    }
    let site = www("on A\n");
    let (_srv, ip) = web_server(&mut c, &net_a, &[], None, &site);
    let peer_a = idle(&mut c, &net_a);
    let peer_b = idle(&mut c, &net_b);
    let same = in_netns(&peer_a, || get_patiently((ip, 80).into()));
    assert!(same.ends_with("on A\n"), "{same}");
    let across = in_netns(&peer_b, || get((ip, 80).into()));
    assert!(
        across.is_err(),
        "a container on {net_b} reached {ip}:80 on {net_a}: {across:?}"
    );
    // The host itself still reaches both.
    assert!(get_patiently((ip, 80).into()).ends_with("on A\n"));

    let ids: Vec<String> = [&net_a, &net_b]
        .iter()
        .map(|n| {
            let v: serde_json::Value =
                serde_json::from_str(&ok(&["network", "inspect", n])).unwrap();
            v[0]["Id"].as_str().unwrap().to_string()
        })
        .collect();
    drop(c);
    let rules = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    for id in ids {
        assert!(!rules.contains(&id), "rules of network {id} left:\n{rules}");
    }
}

const OUTSIDE_MAC: [u8; 6] = [0x02, 0x85, 0, 0, 0, 2];
const OUTSIDE_MAC_STR: &str = "02:85:00:00:00:02";

/// A network namespace standing for the rest of the world, joined to the host by a veth
/// pair and routed to vessel's bridges through the host. Removed however the test ends.
struct Outside {
    netns: String,
    host_link: String,
    host_ip: Ipv4Addr,
    peer: String,
    peer_ip: Ipv4Addr,
}

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Outside {
    fn new() -> Outside {
        let id = std::process::id() % 100_000;
        let third = (id % 250) as u8;
        let o = Outside {
            netns: format!("vessel-out-{id}"),
            host_link: format!("vxh{id}"),
            host_ip: Ipv4Addr::new(10, 85, third, 1),
            peer: format!("vxp{id}"),
            peer_ip: Ipv4Addr::new(10, 85, third, 2),
        };
        let (peer, peer_ip) = (o.peer.clone(), o.peer_ip);
        // Leftovers of an earlier run with the same pid.
        let _ = Command::new("ip")
            .args(["link", "del", &o.host_link])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &o.netns]).output();
        sh(&["ip", "netns", "add", &o.netns]);
        sh(&[
            "ip",
            "link",
            "add",
            &o.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &o.netns,
        ]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", o.host_ip),
            "dev",
            &o.host_link,
        ]);
        sh(&["ip", "link", "set", &o.host_link, "up"]);
        let inside = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &o.netns, "ip"];
            v.extend(args);
            sh(&v);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["link", "set", &peer, "address", OUTSIDE_MAC_STR]);
        inside(&["addr", "add", &format!("{peer_ip}/30"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["route", "add", "default", "via", &o.host_ip.to_string()]);
        o
    }

    fn ns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// (c) A client outside the host, with a route to the bridge's subnet through the host,
/// connects to a container directly: neither the port published (80) nor the one that is
/// not (81) may answer at the container's own address, while the published port answers
/// at the host's address.
#[test]
fn the_outside_reaches_published_ports_only() {
    let mut c = Cleanup::default();
    let net = name("out");
    ok(&["network", "create", &net]);
    c.networks.push(net.clone());
    let site = www("from outside\n");
    let port = free_port();
    let publish = format!("{port}:80");
    let loopback_port = free_port();
    let loopback_only = format!("127.0.0.1:{loopback_port}:80");
    let (srv, ip) = web_server(&mut c, &net, &[&publish, &loopback_only], Some(81), &site);
    // Both servers are up, seen from the host.
    assert!(get_patiently((ip, 80).into()).ends_with("from outside\n"));
    assert!(get_patiently((ip, 81).into()).ends_with("from outside\n"));

    let outside = Outside::new();
    let host_ip = outside.host_ip;
    let (published, direct80, direct81) = in_netns(&outside.ns_path(), || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let published = loop {
            match get((host_ip, port).into()) {
                Ok(r) => break Ok(r),
                Err(e) if Instant::now() > deadline => break Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        (published, get((ip, 80).into()), get((ip, 81).into()))
    });
    let published = published.unwrap_or_else(|e| {
        panic!("the published port {host_ip}:{port} does not answer from outside: {e}")
    });
    assert!(published.ends_with("from outside\n"), "{published}");

    // A forged SYN from outside for 127.0.0.1:port, sent to the host's MAC: a port
    // published on the host's loopback alone must not answer it (the kernel would drop
    // the martian, but DNAT in prerouting rewrites it first). The same SYN for the port
    // published everywhere, at the host's address, must be answered, or the attack
    // proves nothing.
    let host_mac = parse_mac(
        &std::fs::read_to_string(format!("/sys/class/net/{}/address", outside.host_link)).unwrap(),
    );
    let peer = outside.peer.clone();
    let peer_ip = outside.peer_ip;
    let answered = |dst: SocketAddr, sport: u16| {
        let peer = peer.clone();
        in_netns(&outside.ns_path(), move || {
            let sniffer = Sniffer::new(&peer);
            for _ in 0..3 {
                send_raw_syn(&peer, OUTSIDE_MAC, host_mac, (peer_ip, sport).into(), dst);
            }
            sniffer.saw_syn_ack(sport)
        })
    };
    assert!(
        answered((host_ip, port).into(), 41001),
        "a forged SYN for the published {host_ip}:{port} got no answer: the attack cannot be judged"
    );
    let loopback_answered = answered(([127, 0, 0, 1], loopback_port).into(), 41002);

    // Every breach at once, so that each defence is seen on its own.
    let mut breaches = Vec::new();
    if let Ok(r) = &direct81 {
        breaches.push(format!("the unpublished port {ip}:81 answered: {r:?}"));
    }
    if let Ok(r) = &direct80 {
        breaches.push(format!(
            "{ip}:80 answered at the container's own address: {r:?}"
        ));
    }
    if loopback_answered {
        breaches.push(format!(
            "the port published on 127.0.0.1:{loopback_port} only answered a forged SYN"
        ));
    }
    assert!(
        breaches.is_empty(),
        "reached from outside the host: {breaches:#?}"
    );

    // The filter leaves the container's own connections out alone: it reaches a server
    // outside (masqueraded behind the host's address), and the replies come back in.
    let listener = in_netns(&outside.ns_path(), || {
        std::net::TcpListener::bind((outside.peer_ip, 0)).unwrap()
    });
    let out_port = listener.local_addr().unwrap().port();
    let accepted = std::thread::spawn(move || {
        let (mut s, from) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        (from, got)
    });
    let script = format!("echo egress | nc -w 5 {} {out_port}", outside.peer_ip);
    ok(&["exec", &srv, "sh", "-c", &script]);
    let (from, got) = accepted.join().unwrap();
    assert_eq!(got, "egress\n", "from {from}");
    assert_eq!(
        from.ip(),
        std::net::IpAddr::V4(outside.host_ip),
        "masqueraded"
    );
    drop(outside);
}

/// Sends a TCP SYN as a raw Ethernet frame out of `ifname`, like [`send_raw_udp`].
fn send_raw_syn(
    ifname: &str,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
) {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 only");
    };
    let mut tcp = Vec::new();
    tcp.extend(src.port().to_be_bytes());
    tcp.extend(dst.port().to_be_bytes());
    tcp.extend(0x1234_5678u32.to_be_bytes()); // sequence
    tcp.extend(0u32.to_be_bytes()); // ack
    tcp.extend([0x50, 0x02]); // 20-byte header, SYN
    tcp.extend(0xffffu16.to_be_bytes()); // window
    tcp.extend([0, 0, 0, 0]); // checksum, urgent
    let mut pseudo = Vec::new();
    pseudo.extend(src.ip().octets());
    pseudo.extend(dst.ip().octets());
    pseudo.extend([0, 6]);
    pseudo.extend((tcp.len() as u16).to_be_bytes());
    pseudo.extend(&tcp);
    let sum = ip_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    send_raw(ifname, src_mac, dst_mac, *src.ip(), *dst.ip(), 6, &tcp);
}

/// A packet socket on one interface of the current namespace, opened before the probe.
struct Sniffer(OwnedFd);

impl Sniffer {
    fn new(ifname: &str) -> Sniffer {
        let index = if_index(ifname);
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                all.into(),
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
        let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        at.sll_family = libc::AF_PACKET as u16;
        at.sll_protocol = all;
        at.sll_ifindex = index as i32;
        // SAFETY: bind(2) to a sockaddr_ll of the given size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&at as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            r,
            0,
            "bind to {ifname}: {}",
            std::io::Error::last_os_error()
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: setsockopt(2) with a timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(r, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        Sniffer(fd)
    }

    /// Whether a TCP SYN-ACK for local port `port` arrives within three seconds.
    fn saw_syn_ack(&self, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            // SAFETY: recv(2) into a buffer we own, of its length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 34 {
                continue;
            }
            let f = &buf[..n as usize];
            if f[12..14] != [0x08, 0x00] || f[23] != 6 {
                continue;
            }
            let tcp = &f[14 + usize::from(f[14] & 0x0f) * 4..];
            if tcp.len() >= 14
                && u16::from_be_bytes([tcp[2], tcp[3]]) == port
                && tcp[13] & 0x12 == 0x12
            {
                return true;
            }
        }
        false
    }
}

fn if_index(ifname: &str) -> u32 {
    let cname = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: a valid NUL-terminated interface name.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    assert_ne!(index, 0, "no interface {ifname} here");
    index
}
