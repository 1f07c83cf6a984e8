//! End-to-end tests of networking: bridge networks, published ports, name resolution,
//! cleanup, concurrency and bad input. They talk only to the host's loopback and to
//! vessel's own bridges. Network names and host ports are unique per test, since
//! networks are host-wide.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A directory holding `index.html` for busybox httpd.
fn www(body: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("index.html"), body).unwrap();
    d
}

fn network_json(name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ok(&["network", "inspect", name])).unwrap();
    v[0].clone()
}

/// A network's bridge device and MTU, as `network ls` shows them (inspect shows a user
/// network's options as given, as Docker does).
fn bridge_of(name: &str) -> (String, String) {
    let ls = ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}} {{.Bridge}} {{.MTU}}",
    ]);
    let line = ls
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("network {name} not in {ls}"));
    let mut f = line.split(' ').skip(1).map(str::to_string);
    (f.next().unwrap(), f.next().unwrap())
}

/// Asserts a failure with exit status 125 whose message contains `what`, and that no
/// instance was left behind (`run`/`create` get a name to look for afterwards).
fn refused(args: &[&str], what: &str) {
    let n = name("refused");
    let mut args: Vec<&str> = args.to_vec();
    let creates = matches!(args[0], "run" | "create");
    if creates {
        args.splice(1..1, ["--name", n.as_str()]);
    }
    let o = vessel(&args);
    assert_eq!(code(&o), 125, "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(what), "{args:?}: expected {what:?} in {err:?}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    if creates {
        assert_ne!(
            code(&vessel(&["inspect", &n])),
            0,
            "{args:?} left an instance"
        );
    }
}

#[test]
fn published_port_answers_http_on_host_loopback_and_nothing_is_left() {
    let n = name("web");
    let port = free_port();
    let site = www("hello from vessel\n");
    let bind = format!("{}:/www:ro", site.path().display());
    let publish = format!("127.0.0.1:{port}:80");
    ok(&[
        "run", "-d", "--name", &n, "-p", &publish, "-v", &bind, "busybox", "httpd", "-f", "-p",
        "80", "-h", "/www",
    ]);
    let id = id_of(&n);
    let reply = http_get(port, Duration::from_secs(10));
    assert!(
        reply.starts_with("HTTP/1.") && reply.contains("200"),
        "{reply}"
    );
    assert!(reply.ends_with("hello from vessel\n"), "{reply}");

    let ins = inspect(&n);
    let ip = ins["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with("10.87."), "on the default network: {ins}");
    assert_eq!(
        ins["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string()
    );
    let veth = format!("/sys/class/net/vv{}", &id[..12]);
    assert!(Path::new(&veth).exists(), "{veth}");
    let bridge = network_json("bridge");
    assert_eq!(bridge["Containers"][&id]["Name"], n.as_str(), "{bridge}");
    // Every link of the network has its MTU: the bridge, the veth's two ends.
    let mtu = bridge["Options"]["com.docker.network.driver.mtu"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sysfs(&format!("{veth}/mtu")), mtu);
    assert_eq!(sysfs("/sys/class/net/vessel0/mtu"), mtu);
    assert_eq!(
        ok(&["exec", &n, "cat", "/sys/class/net/eth0/mtu"]).trim(),
        mtu
    );

    // Crash everything: the monitor and the container's process, with SIGKILL.
    for pid in [
        ins["State"]["MonitorPid"].as_i64().unwrap(),
        ins["State"]["Pid"].as_i64().unwrap(),
    ] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    ok(&["rm", "-f", &n]);
    assert_no_leftovers(&id);
    let bridge = network_json("bridge");
    assert!(
        bridge["Containers"].get(&id).is_none(),
        "lease left: {bridge}"
    );
    // The port is free for the next one.
    let n2 = name("web");
    ok(&["create", "--name", &n2, "-p", &publish, "busybox", "true"]);
    ok(&["rm", &n2]);
}

fn sysfs(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name() {
    let net = name("net");
    // The MTU as Docker spells the option (Podman's `-o mtu=`, and `--mtu`, are the same).
    ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.driver.mtu=9000",
        &net,
    ]);
    let info = network_json(&net);
    let (bridge, mtu) = bridge_of(&net);
    assert!(Path::new(&format!("/sys/class/net/{bridge}")).exists());
    assert_eq!(mtu, "9000");
    // Inspect shows the options as given, as Docker does (Compose compares them).
    assert_eq!(
        info["Options"],
        serde_json::json!({"com.docker.network.driver.mtu": "9000"})
    );
    assert_eq!(sysfs(&format!("/sys/class/net/{bridge}/mtu")), "9000");
    assert!(ok(&["network", "ls"]).contains(&net));

    let web = name("web");
    let site = www("by name\n");
    let bind = format!("{}:/www:ro", site.path().display());
    // Published on every local address (no host IP given): 127.0.0.1 included.
    let port = free_port();
    let publish = format!("{port}:80");
    ok(&[
        "run",
        "-d",
        "--name",
        &web,
        "--network",
        &net,
        "-p",
        &publish,
        "-v",
        &bind,
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let web_id = id_of(&web);
    assert!(http_get(port, Duration::from_secs(10)).ends_with("by name\n"));
    assert_eq!(
        ok(&["exec", &web, "cat", "/sys/class/net/eth0/mtu"]).trim(),
        "9000"
    );
    let veth = format!("/sys/class/net/vv{}/mtu", &web_id[..12]);
    assert_eq!(sysfs(&veth), "9000");
    let client = name("client");
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let o = vessel(&[
            "run",
            "--rm",
            "--name",
            &client,
            "--network",
            &net,
            "busybox",
            "wget",
            "-qO-",
            &format!("http://{web}/"),
        ]);
        if code(&o) == 0 || Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "by name\n");
    // The server learns the names (and network aliases, and short id) of instances
    // joining after it, and forgets them.
    let other = name("other");
    let alias = name("alias");
    ok(&[
        "create",
        "--name",
        &other,
        "--network",
        &net,
        "--network-alias",
        &alias,
        "busybox",
        "true",
    ]);
    let other_id = id_of(&other);
    let hosts = ok(&["exec", &web, "cat", "/etc/hosts"]);
    let line = hosts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(other.as_str()))
        .unwrap_or_else(|| panic!("no line for {other}: {hosts}"));
    let names: Vec<&str> = line.split_whitespace().skip(1).collect();
    assert_eq!(
        names,
        [other.as_str(), alias.as_str(), &other_id[..12]],
        "{hosts}"
    );
    assert_eq!(
        inspect(&other)["NetworkSettings"]["Networks"][&net]["Aliases"],
        serde_json::json!([alias, &other_id[..12]])
    );
    ok(&["rm", &other]);
    let hosts = ok(&["exec", &web, "cat", "/etc/hosts"]);
    assert!(
        !hosts.contains(&other) && !hosts.contains(&alias),
        "a removed peer stays in /etc/hosts: {hosts}"
    );
    // Aliases are for user-defined networks only, and are host names.
    refused(
        &["create", "--network-alias", "db", "busybox", "true"],
        "user-defined networks",
    );
    refused(
        &[
            "create",
            "--network",
            &net,
            "--network-alias",
            "no spaces",
            "busybox",
            "true",
        ],
        "invalid network alias",
    );

    // A network in use cannot go; once empty it can, with its bridge.
    refused_rm(&net);
    ok(&["rm", "-f", &web]);
    assert_no_leftovers(&web_id);
    let hosts_gone = network_json(&net);
    assert_eq!(
        hosts_gone["Containers"],
        serde_json::json!({}),
        "{hosts_gone}"
    );
    ok(&["network", "rm", &net]);
    assert!(!Path::new(&format!("/sys/class/net/{bridge}")).exists());
    let rules = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let id = info["Id"].as_str().unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains(id));
    let o = vessel(&["network", "inspect", &net]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
}

fn refused_rm(net: &str) {
    let o = vessel(&["network", "rm", net]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
}

#[test]
fn network_host_shares_the_host_namespace() {
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host = host.to_string_lossy();
    let inside = ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(inside.trim(), host);
    let private = ok(&["run", "--rm", "busybox", "readlink", "/proc/self/ns/net"]);
    assert_ne!(private.trim(), host);
}

#[test]
fn fifty_concurrent_creates_get_fifty_distinct_addresses() {
    let net = name("many");
    ok(&["network", "create", &net]);
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let net = net.clone();
            std::thread::spawn(move || {
                let n = name("c");
                let o = vessel(&["create", "--name", &n, "--network", &net, "busybox", "true"]);
                (n, o)
            })
        })
        .collect();
    let mut names = Vec::new();
    for h in handles {
        let (n, o) = h.join().unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        names.push(n);
    }
    let mut ips: Vec<String> = names
        .iter()
        .map(|n| {
            inspect(n)["NetworkSettings"]["IPAddress"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50, "{ips:?}");
    assert_eq!(
        network_json(&net)["Containers"].as_object().unwrap().len(),
        50
    );
    let mut args = vec!["rm"];
    args.extend(names.iter().map(String::as_str));
    ok(&args);
    assert_eq!(network_json(&net)["Containers"], serde_json::json!({}));
    ok(&["network", "rm", &net]);
}

#[test]
fn bad_network_input_is_a_clear_125_with_nothing_left() {
    refused(
        &["run", "--rm", "-p", "0", "busybox", "true"],
        "invalid port",
    );
    refused(
        &["run", "--rm", "-p", "70000:80", "busybox", "true"],
        "invalid port",
    );
    refused(
        &["run", "--rm", "-p", "8080:80/sctp", "busybox", "true"],
        "protocol",
    );
    refused(
        &["run", "--rm", "-p", "1.2.3:80:80", "busybox", "true"],
        "address",
    );
    refused(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-p",
            "8080:80",
            "busybox",
            "true",
        ],
        "bridge network",
    );
    let missing = name("nonet");
    refused(
        &["run", "--rm", "--network", &missing, "busybox", "true"],
        "no such network",
    );
    refused(&["network", "rm", &missing], "no such network");
    refused(&["network", "create", "bridge"], "reserved");
    refused(&["network", "create", "bad name"], "invalid network name");

    // A host port some process holds.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let spec = format!("127.0.0.1:{port}:80");
    refused(
        &["run", "--rm", "-p", &spec, "busybox", "true"],
        "already in use",
    );

    // Overlapping subnets, and a bad one.
    let a = name("ov");
    ok(&["network", "create", &a]);
    let subnet = network_json(&a)["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    let octets: Vec<&str> = subnet.split('.').collect();
    let wider = format!("{}.{}.0.0/16", octets[0], octets[1]);
    let b = name("ov");
    refused(&["network", "create", "--subnet", &wider, &b], "overlaps");
    refused(
        &["network", "create", "--subnet", "10.89.0.1/24", &b],
        "host bits",
    );
    refused(
        &["network", "create", "--subnet", "banana", &b],
        "invalid subnet",
    );
    assert!(!ok(&["network", "ls", "-q"]).contains(&b));
    ok(&["network", "rm", &a]);

    // MTUs: out of range, not a number, two different ones, unknown options.
    refused(&["network", "create", "--mtu", "67", &b], "invalid MTU 67");
    refused(
        &["network", "create", "--mtu", "65522", &b],
        "invalid MTU 65522",
    );
    refused(
        &["network", "create", "-o", "mtu=big", &b],
        "invalid MTU big",
    );
    refused(
        &["network", "create", "--mtu", "1500", "-o", "mtu=9000", &b],
        "given twice",
    );
    refused(
        &["network", "create", "-o", "parent=eth0", &b],
        "unknown option",
    );
    refused(&["network", "create", "-o", "mtu", &b], "KEY=VALUE");
    assert!(!ok(&["network", "ls", "-q"]).contains(&b));
    // Without one, a network gets loopback's.
    ok(&["network", "create", &b]);
    assert_eq!(bridge_of(&b).1, "65521");
    assert_eq!(network_json(&b)["Options"], serde_json::json!({}));
    ok(&["network", "rm", &b]);

    // An exhausted pool: a /30 has a single address for instances.
    let tiny = name("tiny");
    ok(&["network", "create", &tiny]);
    let s = network_json(&tiny)["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&["network", "rm", &tiny]);
    let s30 = format!("{}/30", s.split('/').next().unwrap());
    ok(&["network", "create", "--subnet", &s30, &tiny]);
    let first = name("only");
    ok(&[
        "create",
        "--name",
        &first,
        "--network",
        &tiny,
        "busybox",
        "true",
    ]);
    refused(
        &["create", "--network", &tiny, "busybox", "true"],
        "no address left",
    );
    ok(&["rm", &first]);
    ok(&["network", "rm", &tiny]);
}

#[test]
fn network_prune_removes_unused_networks_only() {
    // A network database of its own, so that pruning cannot touch the networks other
    // tests running at the same time have just created.
    let db = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| -> String {
        let o = cmd(args)
            .env("VESSEL_NETWORK_DIR", db.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let used = name("pr");
    let unused = name("pr");
    run(&["network", "create", &used]);
    run(&["network", "create", &unused]);
    let unused_bridge = run(&["network", "ls", "--format", "{{.Name}} {{.Bridge}}"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{unused} ")).map(str::to_string))
        .expect("the unused network in network ls");
    let c = name("holder");
    run(&[
        "create",
        "--name",
        &c,
        "--network",
        &used,
        "busybox",
        "true",
    ]);
    let pruned = run(&["network", "prune"]);
    assert_eq!(
        pruned.lines().collect::<Vec<_>>(),
        vec![unused.as_str()],
        "{pruned}"
    );
    assert!(!Path::new(&format!("/sys/class/net/{unused_bridge}")).exists());
    let left = run(&["network", "ls", "-q"]);
    assert!(left.contains(&used) && !left.contains(&unused) && left.contains("bridge"));
    run(&["rm", &c]);
    assert_eq!(run(&["network", "prune"]).trim(), used);
}

/// Whether `name`, resolved inside `instance` (through its /etc/hosts), answers a ping
/// from there.
fn resolves(instance: &str, name: &str) -> bool {
    code(&vessel(&["exec", instance, "ping", "-c1", "-W2", name])) == 0
}

/// The IPv4 interfaces inside `instance`, by name.
fn interfaces(instance: &str) -> Vec<String> {
    let mut v: Vec<String> = ok(&["exec", instance, "ls", "/sys/class/net"])
        .split_whitespace()
        .filter(|n| *n != "lo")
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Asserts that the default route inside `instance` goes through `interface`.
fn default_route_on(instance: &str, interface: &str) {
    let routes = ok(&["exec", instance, "ip", "route"]);
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("default") && l.contains(interface)),
        "{routes}"
    );
}

#[test]
fn network_connect_and_disconnect_move_containers_between_networks() {
    let (n1, n2) = (name("cn1"), name("cn2"));
    ok(&["network", "create", &n1]);
    ok(&["network", "create", &n2]);
    let (a, b) = (name("a"), name("b"));
    ok(&[
        "run",
        "-d",
        "--name",
        &a,
        "--network",
        &n1,
        "busybox",
        "sleep",
        "1000",
    ]);
    ok(&[
        "run",
        "-d",
        "--name",
        &b,
        "--network",
        &n2,
        "busybox",
        "sleep",
        "1000",
    ]);
    let a_id = id_of(&a);
    assert!(!resolves(&a, &b), "{a} knows {b} before it joins {n2}");

    // A running container gets the interface at once, and the names both ways.
    let alias = name("alias");
    ok(&["network", "connect", "--alias", &alias, &n2, &a]);
    assert_eq!(interfaces(&a), ["eth0", "eth1"]);
    assert!(resolves(&a, &b), "{a} cannot reach {b} by name on {n2}");
    assert!(resolves(&b, &alias), "{b} cannot reach {a} by its alias");
    assert!(resolves(&b, &a), "{b} cannot reach {a} by name");
    // The default route stays on the first network.
    default_route_on(&a, "eth0");
    let nets = &inspect(&a)["NetworkSettings"]["Networks"];
    assert!(nets[&n1]["IPAddress"].is_string(), "{nets}");
    assert_eq!(
        nets[&n2]["Aliases"],
        serde_json::json!([alias, &a_id[..12]]),
        "{nets}"
    );
    assert!(network_json(&n2)["Containers"][&a_id].is_object());
    // Twice is refused, as Docker's words say.
    let o = vessel(&["network", "connect", &n2, &a]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).contains("already exists in network"),
        "{}",
        stderr(&o)
    );

    // Off again: the interface, its host side and the names go.
    ok(&["network", "disconnect", &n2, &a]);
    assert_eq!(interfaces(&a), ["eth0"]);
    assert!(
        !resolves(&a, &b) && !resolves(&b, &a),
        "names outlive the disconnect"
    );
    let host_side = format!("/sys/class/net/vw{}1", &a_id[..12]);
    assert!(!Path::new(&host_side).exists(), "{host_side} is left");
    assert!(network_json(&n2)["Containers"].get(&a_id).is_none());
    let o = vessel(&["network", "disconnect", &n2, &a]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).contains("is not connected to network"),
        "{}",
        stderr(&o)
    );

    // A stopped container joins now and is wired at its next start.
    ok(&["stop", "-t", "0", &a]);
    ok(&["network", "connect", &n2, &a]);
    ok(&["start", &a]);
    assert_eq!(interfaces(&a), ["eth0", "eth1"]);
    assert!(resolves(&a, &b));
    // Off its first network while stopped: the other one becomes its first, with the
    // default route, as eth0.
    ok(&["stop", "-t", "0", &a]);
    ok(&["network", "disconnect", &n1, &a]);
    ok(&["start", &a]);
    assert_eq!(interfaces(&a), ["eth0"]);
    default_route_on(&a, "eth0");
    assert!(resolves(&a, &b));
    assert_eq!(
        inspect(&a)["HostConfig"]["NetworkMode"].as_str(),
        Some(n2.as_str())
    );

    // Off its first network while running: the next one takes the default route at once.
    ok(&["network", "connect", &n1, &a]);
    assert_eq!(interfaces(&a), ["eth0", "eth1"]);
    ok(&["network", "disconnect", &n2, &a]);
    assert_eq!(interfaces(&a), ["eth1"]);
    default_route_on(&a, "eth1");
    assert_eq!(
        inspect(&a)["HostConfig"]["NetworkMode"].as_str(),
        Some(n1.as_str())
    );

    // Several networks at create.
    let both = vessel(&[
        "run",
        "--rm",
        "--network",
        &n1,
        "--network",
        &n2,
        "busybox",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(code(&both), 0, "{}", stderr(&both));
    assert_eq!(
        stdout(&both).split_whitespace().collect::<Vec<_>>(),
        ["eth0", "eth1", "lo"]
    );

    // host and none networking stay as they are; a network must exist.
    let lone = name("lone");
    ok(&[
        "create",
        "--name",
        &lone,
        "--network",
        "none",
        "busybox",
        "true",
    ]);
    let o = vessel(&["network", "connect", &n1, &lone]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("--network none"), "{}", stderr(&o));
    let o = vessel(&["network", "connect", &name("nonet"), &a]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("no such network"), "{}", stderr(&o));
    refused(
        &[
            "create",
            "--network",
            "host",
            "--network",
            &n1,
            "busybox",
            "true",
        ],
        "cannot be combined",
    );

    let ids = [a_id, id_of(&b), id_of(&lone)];
    ok(&["rm", "-f", &a, &b, &lone]);
    assert_none_left(&ids);
    // No lease is left to keep the networks in use.
    ok(&["network", "rm", &n1, &n2]);
}

/// An address in `net`'s subnet: its host number `n`.
fn address_in(net: &str, n: u8) -> String {
    let subnet = network_json(net)["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    let base: std::net::Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
    let [a, b, c, _] = base.octets();
    format!("{a}.{b}.{c}.{n}")
}

#[test]
fn ip_asks_for_an_address_that_must_be_the_networks_and_free() {
    let (n1, n2) = (name("ipn1"), name("ipn2"));
    ok(&["network", "create", &n1]);
    ok(&["network", "create", &n2]);
    let want = address_in(&n1, 50);
    let a = name("ipa");
    ok(&[
        "run",
        "-d",
        "--name",
        &a,
        "--network",
        &n1,
        "--ip",
        &want,
        "busybox",
        "sleep",
        "1000",
    ]);
    let addr = ok(&["exec", &a, "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {want}/")), "{addr}");
    let ep = &inspect(&a)["NetworkSettings"]["Networks"][&n1];
    assert_eq!(ep["IPAddress"], want.as_str());
    assert_eq!(ep["IPAMConfig"], serde_json::json!({ "IPv4Address": want }));
    // Taken, outside the subnet, on the default bridge, malformed: refused, nothing made.
    refused(
        &["create", "--network", &n1, "--ip", &want, "busybox", "true"],
        "Address already in use",
    );
    refused(
        &[
            "create",
            "--network",
            &n1,
            "--ip",
            "192.0.2.7",
            "busybox",
            "true",
        ],
        "no configured subnet",
    );
    refused(
        &["create", "--ip", &address_in(&n1, 51), "busybox", "true"],
        "user defined networks only",
    );
    refused(
        &[
            "create",
            "--network",
            &n1,
            "--ip",
            "10.1.2",
            "busybox",
            "true",
        ],
        "invalid IPv4 address",
    );
    // And on a network joined later.
    let want2 = address_in(&n2, 77);
    ok(&["network", "connect", "--ip", &want2, &n2, &a]);
    let addr = ok(&["exec", &a, "ip", "-4", "-o", "addr", "show", "eth1"]);
    assert!(addr.contains(&format!("inet {want2}/")), "{addr}");
    let id = id_of(&a);
    ok(&["rm", "-f", &a]);
    assert_no_leftovers(&id);
    // Its address is free again.
    let b = name("ipb");
    ok(&[
        "create",
        "--name",
        &b,
        "--network",
        &n1,
        "--ip",
        &want,
        "busybox",
        "true",
    ]);
    ok(&["rm", &b]);
    ok(&["network", "rm", &n1, &n2]);
}

#[test]
fn random_host_ports_for_p_without_host_port_and_publish_all_of_exposed() {
    let n = name("web-random");
    let site = www("random port\n");
    let bind = format!("{}:/www:ro", site.path().display());
    // -P publishes 80 (--expose), 81 (a --expose range; nothing listens) and 84/udp;
    // -p 127.0.0.1::82 and -p 83 get random ports of their own.
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "-P",
        "--expose",
        "80",
        "--expose",
        "81-81/tcp",
        "--expose",
        "84/udp",
        "-p",
        "127.0.0.1::82",
        "-p",
        "83",
        "-v",
        &bind,
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let id = id_of(&n);
    let ins = inspect(&n);
    let ports = &ins["NetworkSettings"]["Ports"];
    let (lo, hi) = {
        let r = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let v: Vec<u16> = r.split_whitespace().map(|x| x.parse().unwrap()).collect();
        (v[0], v[1])
    };
    let mut seen = std::collections::HashSet::new();
    for key in ["80/tcp", "81/tcp", "82/tcp", "83/tcp", "84/udp"] {
        let hp: u16 = ports[key][0]["HostPort"]
            .as_str()
            .unwrap_or_else(|| panic!("{key} not published: {ports}"))
            .parse()
            .unwrap();
        assert!((lo..=hi).contains(&hp), "{key}: {hp} outside {lo}-{hi}");
        assert!(seen.insert(hp), "{key}: host port {hp} given twice");
    }
    assert_eq!(ports["82/tcp"][0]["HostIp"], "127.0.0.1");
    // HostConfig keeps what was asked: no host port.
    assert_eq!(
        ins["HostConfig"]["PortBindings"]["83/tcp"][0]["HostPort"],
        ""
    );
    assert_eq!(ins["HostConfig"]["PublishAllPorts"], true);
    for key in ["80/tcp", "81/tcp", "82/tcp", "83/tcp", "84/udp"] {
        assert!(
            ins["Config"]["ExposedPorts"][key].is_object(),
            "{key}: {ins}"
        );
    }
    // The random port answers, and `port` and `ps` show it.
    let http: u16 = ports["80/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let reply = http_get(http, Duration::from_secs(10));
    assert!(reply.ends_with("random port\n"), "{reply}");
    assert_eq!(ok(&["port", &n, "80"]).trim(), format!("0.0.0.0:{http}"));
    let ps = ok(&["ps", "--filter", &format!("name={n}")]);
    assert!(ps.contains("PORTS"), "{ps}");
    assert!(ps.contains(&format!("0.0.0.0:{http}->80/tcp")), "{ps}");

    // Another instance never gets a port the first holds.
    let m = name("web-random2");
    ok(&["create", "--name", &m, "-p", "80", "busybox", "true"]);
    let other = inspect(&m)["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    assert!(!seen.contains(&other), "{other} handed out twice");

    // Bad --expose values are refused by name.
    refused(
        &["run", "--expose", "http", "busybox", "true"],
        "--expose \"http\"",
    );
    refused(
        &["run", "--expose", "90-80", "busybox", "true"],
        "invalid range",
    );
    refused(
        &[
            "run",
            "-P",
            "--expose",
            "80",
            "--network",
            "none",
            "busybox",
            "true",
        ],
        "-p/-P needs a bridge network",
    );

    let id2 = id_of(&m);
    ok(&["rm", "-f", &n, &m]);
    assert_none_left(&[id, id2]);
}
