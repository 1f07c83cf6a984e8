//! The same bundles through vessel-runc and Debian's runc: what a process inside can
//! observe must match (namespaces, mounts, masked and read-only paths, rlimits,
//! capabilities, seccomp, devices, user, cwd, env, terminal), and so must the
//! lifecycle (state, kill, delete, exit codes) and the cgroup limits seen from the host.
//! Where vessel differs on purpose, the README's runc table says why and the test
//! normalises exactly that difference, nothing more.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Prints what a process sees, one `== section` at a time.
const PROBE: &str = r#"
echo "== ns"; for n in cgroup ipc mnt net pid user uts; do echo "$n $(readlink /proc/self/ns/$n)"; done
echo "== mounts"; cat /proc/self/mountinfo
echo "== masked"; for p in /proc/kcore /proc/keys /proc/timer_list /proc/acpi /sys/firmware /proc/scsi; do
  if [ -e $p ]; then echo "$p $(stat -c %F $p) $(head -c 16 $p 2>&1 | wc -c) $(ls $p 2>/dev/null | wc -l)"; else echo "$p absent"; fi; done
echo "== readonly"; for p in /proc/sys/kernel/domainname /proc/sysrq-trigger /proc/bus /proc/fs; do
  if echo x 2>/dev/null > $p; then echo "$p writable"; else echo "$p refused"; fi; done
echo "== rootfs"; if touch /probe 2>/dev/null; then echo writable; else echo read-only; fi
echo "== limits"; cat /proc/self/limits
echo "== status"; grep -E '^(Cap|Seccomp|NoNewPrivs|Uid|Gid|Groups)' /proc/self/status
echo "== seccomp-probe"; if mkdir /dev/shm/probe 2>/dev/null; then echo mkdir-ok; else echo mkdir-refused; fi
echo "== devices"; for f in /dev/* /dev/pts/*; do stat -c '%n %F %a %u:%g %t:%T' $f; done
echo "== device-cgroup"; if mknod /dev/shm/mem c 1 1 2>/dev/null; then
  if head -c 1 /dev/shm/mem >/dev/null 2>&1; then echo mem-readable; else echo mem-refused; fi; else echo mknod-refused; fi
echo "== id"; id
echo "== cwd"; pwd
echo "== env"; env | sort
echo "== umask"; umask
echo "== hostname"; hostname
echo "== pid"; echo $$
"#;

/// `section -> lines` of a probe's output.
fn sections(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    let mut cur = String::new();
    for l in text.lines() {
        if let Some(s) = l.strip_prefix("== ") {
            cur = s.to_string();
            m.insert(cur.clone(), Vec::new());
        } else if let Some(v) = m.get_mut(&cur) {
            v.push(l.to_string());
        }
    }
    m
}

/// Host namespace of each type, to tell "new" from "shared" without comparing inodes
/// across containers.
fn ns_section(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let (n, link) = l.split_once(' ').unwrap();
            let host = std::fs::read_link(format!("/proc/self/ns/{n}"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            format!("{n} {}", if link == host { "host" } else { "new" })
        })
        .collect()
}

/// mountinfo as (mount point, fstype, per-mount flags, source for tmpfs-like mounts),
/// sorted: ids, device numbers and peer groups differ between any two containers.
fn mounts_section(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dash = f.iter().position(|x| *x == "-").unwrap();
            let flags: Vec<&str> = f[5]
                .split(',')
                .filter(|o| ["ro", "rw", "nosuid", "nodev", "noexec"].contains(o))
                .collect();
            let fstype = f[dash + 1];
            let root = if fstype == "cgroup" || fstype == "cgroup2" {
                ""
            } else {
                f[3]
            };
            format!("{} {fstype} {} root={root}", f[4], flags.join(","))
        })
        .collect();
    v.sort();
    v
}

/// The differences from runc that vessel keeps on purpose (README, "vessel-runc and
/// runc"), erased from both outputs before they are compared; nothing else is.
fn erase_known_differences(section: &str, lines: &[String]) -> Vec<String> {
    match section {
        "mounts" => lines
            .iter()
            // (1) runc mounts the named v1 `systemd` hierarchy, vessel the cgroup2 one.
            .filter(|l| {
                !l.starts_with("/sys/fs/cgroup/systemd ")
                    && !l.starts_with("/sys/fs/cgroup/unified ")
            })
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                // (2) readonlyPaths are also nosuid,nodev,noexec in vessel.
                if f[1] == "proc" && f[2] == "ro,nosuid,nodev,noexec" && f[3] != "root=/" {
                    return format!("{} proc ro {}", f[0], f[3]);
                }
                // (3) the tmpfs holding the cgroup mounts is read-only in vessel.
                if f[0] == "/sys/fs/cgroup" && f[1] == "tmpfs" {
                    return format!(
                        "/sys/fs/cgroup tmpfs {} {}",
                        f[2].replacen("ro", "rw", 1),
                        f[3]
                    );
                }
                l.clone()
            })
            .collect(),
        // (4) in a user namespace, the owner of the /dev/mqueue mount's root.
        "devices" => lines
            .iter()
            .map(|l| match l.strip_prefix("/dev/mqueue directory 1777 ") {
                Some(rest) => format!(
                    "/dev/mqueue directory 1777 - {}",
                    rest.split_once(' ').map_or("", |r| r.1)
                ),
                None => l.clone(),
            })
            .collect(),
        _ => lines.to_vec(),
    }
}

struct Observed {
    code: Option<i32>,
    sections: BTreeMap<String, Vec<String>>,
    stderr: String,
}

fn observe(rt: &Runtime, spec: &Value) -> Observed {
    let b = bundle(spec);
    let id = id(rt.name);
    let o = rt.run(&["run", "--bundle", b.to_str().unwrap(), &id]);
    let mut sections = sections(&out(&o));
    if let Some(ns) = sections.get("ns").cloned() {
        sections.insert("ns".into(), ns_section(&ns));
    }
    if let Some(m) = sections.get("mounts").cloned() {
        sections.insert("mounts".into(), mounts_section(&m));
    }
    for (name, lines) in sections.iter_mut() {
        *lines = erase_known_differences(name, lines);
    }
    let _ = rt.run(&["delete", "--force", &id]);
    Observed {
        code: o.status.code(),
        sections,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Run `spec` with the probe through both runtimes and compare every section.
fn compare(spec: Value) {
    let [v, r] = both();
    let mut spec = spec;
    spec["process"]["args"] = json!(["sh", "-c", PROBE]);
    let ov = observe(&v, &spec);
    let or = observe(&r, &spec);
    assert_eq!(or.code, Some(0), "runc failed: {}", or.stderr);
    assert_eq!(ov.code, Some(0), "vessel-runc failed: {}", ov.stderr);
    assert!(
        !or.sections.is_empty(),
        "the probe printed nothing under runc"
    );
    let mut diffs = Vec::new();
    for (name, rl) in &or.sections {
        let vl = ov.sections.get(name).cloned().unwrap_or_default();
        if &vl != rl {
            diffs.push(format!(
                "section {name}:\n  runc:   {rl:?}\n  vessel: {vl:?}"
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "vessel-runc differs from runc:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn runc_spec_default_bundle_looks_the_same() {
    compare(base_spec());
}

#[test]
fn users_rlimits_capabilities_seccomp_env_cwd_look_the_same() {
    let mut s = base_spec();
    s["process"]["user"] =
        json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 23});
    s["process"]["cwd"] = json!("/tmp");
    s["process"]["env"] = json!(["PATH=/bin:/usr/bin", "FOO=bar baz", "TERM=xterm"]);
    s["process"]["noNewPrivileges"] = json!(true);
    s["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
        {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
    ]);
    let caps = json!([
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_RAW",
        "CAP_SETUID",
        "CAP_SETGID"
    ]);
    s["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps,
        "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]
    });
    s["hostname"] = json!("probe-host");
    s["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "cgroup"}));
    compare(s);
}

#[test]
fn privileged_root_with_device_rules_looks_the_same() {
    // Root with every capability: what decides device access is the device cgroup.
    let mut s = base_spec();
    // Every capability this (test) process may hand on: the host's bounding set.
    let all: Vec<String> = caps::read(None, caps::CapSet::Bounding)
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    s["process"]["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
    s["linux"]["resources"]["devices"] = json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]);
    compare(s);
}

#[test]
fn user_namespace_bundle_looks_the_same() {
    let mut s = base_spec();
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    // sysfs cannot be mounted in a user namespace without its own network namespace
    // owning it; both have one (runc spec's default).
    compare(s);
}

/// The same lifecycle commands give the same results and exit codes.
#[test]
fn lifecycle_state_kill_delete_and_exit_codes_match() {
    for rt in both() {
        let mut s = base_spec();
        s["process"]["args"] = json!(["sleep", "1000"]);
        let b = bundle(&s);
        let id = id(rt.name);
        let bs = b.to_str().unwrap();
        let pidf = b.join("init.pid");
        let o = rt.run(&[
            "create",
            "--bundle",
            bs,
            "--pid-file",
            pidf.to_str().unwrap(),
            &id,
        ]);
        assert!(
            o.status.success(),
            "{} create: {}",
            rt.name,
            String::from_utf8_lossy(&o.stderr)
        );
        let st: Value = serde_json::from_str(&out(&rt.run(&["state", &id]))).unwrap();
        assert_eq!(st["status"], "created", "{}", rt.name);
        let pid: i64 = std::fs::read_to_string(&pidf)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(st["pid"], pid, "{}", rt.name);
        assert_eq!(st["bundle"], bs, "{}", rt.name);
        assert_eq!(st["rootfs"], json!(rootfs()), "{}", rt.name);
        // (5) runc 1.1 prints an empty owner; vessel the state directory's owner.
        assert!(st["owner"].is_string(), "{}", rt.name);
        assert!(
            chrono::DateTime::parse_from_rfc3339(st["created"].as_str().unwrap()).is_ok(),
            "{}: created must be RFC 3339 (containerd parses it): {st}",
            rt.name
        );
        // The init is not a child of any runtime process any more.
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid: i64 = ppid[ppid.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            ppid, 1,
            "{}: the init must be reparented once create returned",
            rt.name
        );

        // Running: delete without --force refuses.
        assert!(rt.run(&["start", &id]).status.success());
        let st: Value = serde_json::from_str(&out(&rt.run(&["state", &id]))).unwrap();
        assert_eq!(st["status"], "running", "{}", rt.name);
        assert_eq!(
            rt.run(&["delete", &id]).status.code(),
            Some(1),
            "{}",
            rt.name
        );
        assert_eq!(
            rt.run(&["start", &id]).status.code(),
            Some(1),
            "{}: start twice",
            rt.name
        );

        // Exec: exit code and output.
        let o = rt.run(&["exec", &id, "sh", "-c", "echo exec-out; exit 9"]);
        assert_eq!(o.status.code(), Some(9), "{}", rt.name);
        assert_eq!(out(&o), "exec-out\n", "{}", rt.name);

        // Pause / resume (freezer).
        assert!(
            rt.run(&["pause", &id]).status.success(),
            "{} pause",
            rt.name
        );
        let st: Value = serde_json::from_str(&out(&rt.run(&["state", &id]))).unwrap();
        assert_eq!(st["status"], "paused", "{}", rt.name);
        let proc_state = || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            s.lines()
                .find(|l| l.starts_with("State:"))
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            proc_state().contains("(freezer)")
                || proc_state().contains("stopped")
                || proc_state().contains("D"),
            "{}: {}",
            rt.name,
            proc_state()
        );
        assert!(
            rt.run(&["resume", &id]).status.success(),
            "{} resume",
            rt.name
        );
        let st: Value = serde_json::from_str(&out(&rt.run(&["state", &id]))).unwrap();
        assert_eq!(st["status"], "running", "{}", rt.name);

        // ps --format json lists the init.
        let ps: Vec<i64> =
            serde_json::from_str(&out(&rt.run(&["ps", "--format", "json", &id]))).unwrap();
        assert!(ps.contains(&pid), "{}: {ps:?}", rt.name);

        // Kill by name; the init dies; state stopped; delete; gone.
        assert!(
            rt.run(&["kill", &id, "KILL"]).status.success(),
            "{}",
            rt.name
        );
        eventually("the init to die", || {
            let st: Value = serde_json::from_str(&out(&rt.run(&["state", &id]))).unwrap();
            st["status"] == "stopped"
        });
        assert_eq!(
            rt.run(&["kill", &id, "TERM"]).status.code(),
            Some(1),
            "{}: kill a stopped one",
            rt.name
        );
        assert!(rt.run(&["delete", &id]).status.success(), "{}", rt.name);
        assert_eq!(
            rt.run(&["state", &id]).status.code(),
            Some(1),
            "{}",
            rt.name
        );
        assert_eq!(
            rt.run(&["delete", &id]).status.code(),
            Some(1),
            "{}: delete unknown",
            rt.name
        );
        assert!(
            rt.run(&["delete", "--force", &id]).status.success(),
            "{}: forced delete of unknown",
            rt.name
        );
        assert_eq!(
            rt.run(&["kill", &id, "NOSUCHSIG"]).status.code(),
            Some(1),
            "{}",
            rt.name
        );
    }
}

#[test]
fn run_exit_codes_match() {
    for (script, want) in [("exit 7", 7), ("true", 0)] {
        for rt in both() {
            let mut s = base_spec();
            s["process"]["args"] = json!(["sh", "-c", script]);
            let b = bundle(&s);
            let id = id(rt.name);
            let o = rt.run(&["run", "--bundle", b.to_str().unwrap(), &id]);
            assert_eq!(
                o.status.code(),
                Some(want),
                "{} {script}: {}",
                rt.name,
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(
                rt.run(&["state", &id]).status.code(),
                Some(1),
                "{}: run deletes",
                rt.name
            );
        }
    }
}

/// `run` in front of a container killed from outside exits 128 + the signal.
#[test]
fn run_of_a_killed_container_exits_137() {
    for rt in both() {
        let mut s = base_spec();
        s["process"]["args"] = json!(["sleep", "1000"]);
        let b = bundle(&s);
        let id = id(rt.name);
        let mut child = rt
            .cmd(&["run", "--bundle", b.to_str().unwrap(), &id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        eventually("the container to run", || {
            let o = rt.run(&["state", &id]);
            serde_json::from_str::<Value>(&out(&o)).is_ok_and(|v| v["status"] == "running")
        });
        assert!(rt.run(&["kill", &id, "9"]).status.success());
        let mut code = None;
        eventually("run to return", || {
            code = child.try_wait().unwrap().map(|s| s.code());
            code.is_some()
        });
        assert_eq!(code, Some(Some(137)), "{}", rt.name);
        let _ = rt.run(&["delete", "--force", &id]);
    }
}

/// Host-side cgroup value of the init, in `controller`'s v1 hierarchy.
fn cgroup_file(pid: i64, controller: &str, file: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, p) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| p.to_string())
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup in {text}"));
    let full = format!("/sys/fs/cgroup/{controller}{path}/{file}");
    std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("{full}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn cgroup_limits_and_update_match() {
    assert!(
        std::path::Path::new("/sys/fs/cgroup/memory").exists(),
        "this test reads v1 cgroup files: run it on a v1 or hybrid host"
    );
    let mut got = Vec::new();
    for rt in both() {
        let mut s = base_spec();
        s["process"]["args"] = json!(["sleep", "1000"]);
        s["linux"]["resources"]["memory"] = json!({"limit": 67108864});
        s["linux"]["resources"]["pids"] = json!({"limit": 42});
        s["linux"]["resources"]["cpu"] = json!({"shares": 512, "quota": 50000, "period": 100000});
        let b = bundle(&s);
        let id = id(rt.name);
        let pidf = b.join("pid");
        let o = rt.run(&[
            "create",
            "--bundle",
            b.to_str().unwrap(),
            "--pid-file",
            pidf.to_str().unwrap(),
            &id,
        ]);
        assert!(
            o.status.success(),
            "{}: {}",
            rt.name,
            String::from_utf8_lossy(&o.stderr)
        );
        let pid: i64 = std::fs::read_to_string(&pidf)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let read = || {
            vec![
                cgroup_file(pid, "memory", "memory.limit_in_bytes"),
                cgroup_file(pid, "pids", "pids.max"),
                cgroup_file(pid, "cpu", "cpu.shares"),
                cgroup_file(pid, "cpu", "cpu.cfs_quota_us"),
            ]
        };
        let before = read();
        let o = rt.run(&["update", "--memory", "33554432", "--pids-limit", "21", &id]);
        assert!(
            o.status.success(),
            "{} update: {}",
            rt.name,
            String::from_utf8_lossy(&o.stderr)
        );
        let res = b.join("res.json");
        std::fs::write(&res, r#"{"cpu": {"shares": 256}}"#).unwrap();
        let o = rt.run(&["update", "--resources", res.to_str().unwrap(), &id]);
        assert!(
            o.status.success(),
            "{} update -r: {}",
            rt.name,
            String::from_utf8_lossy(&o.stderr)
        );
        let after = read();
        assert!(rt.run(&["delete", "--force", &id]).status.success());
        got.push((rt.name, before, after));
    }
    assert_eq!(got[0].1, ["67108864", "42", "512", "50000"], "{got:?}");
    assert_eq!(got[0].1, got[1].1, "{got:?}");
    assert_eq!(got[0].2, ["33554432", "21", "256", "50000"], "{got:?}");
    assert_eq!(got[0].2, got[1].2, "{got:?}");
}

/// Receive the pty master a runtime sends to a console socket.
fn recv_fd(l: &UnixListener) -> OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (s, _) = l.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()).unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this descriptor for us.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no descriptor on the console socket");
}

#[test]
fn terminal_through_console_socket_matches() {
    let mut seen = Vec::new();
    for rt in both() {
        let mut s = base_spec();
        s["process"]["terminal"] = json!(true);
        s["process"]["args"] = json!([
            "sh",
            "-c",
            "tty; [ -t 0 ] && echo stdin-tty; stty size; echo done"
        ]);
        s["process"]["consoleSize"] = json!({"height": 33, "width": 101});
        let b = bundle(&s);
        let sock = b.join("console.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let id = id(rt.name);
        let bs = b.to_str().unwrap().to_string();
        let sk = sock.to_str().unwrap().to_string();
        let idc = id.clone();
        let bin = rt.bin.clone();
        let root = rt.root.clone();
        let creator = std::thread::spawn(move || {
            std::process::Command::new(bin)
                .arg("--root")
                .arg(root)
                .args(["create", "--bundle", &bs, "--console-socket", &sk, &idc])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        });
        let master = recv_fd(&l);
        let o = creator.join().unwrap();
        assert!(
            o.status.success(),
            "{} create: {}",
            rt.name,
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(rt.run(&["start", &id]).status.success());
        let mut f = std::fs::File::from(master);
        let mut text = Vec::new();
        let start = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&text).contains("done") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{}: {:?}",
                rt.name,
                String::from_utf8_lossy(&text)
            );
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
        let _ = rt.run(&["delete", "--force", &id]);
        seen.push(String::from_utf8_lossy(&text).replace('\r', ""));
    }
    assert!(
        seen[1].contains("/dev/pts/0") && seen[1].contains("stdin-tty"),
        "runc: {:?}",
        seen[1]
    );
    assert_eq!(seen[0], seen[1], "vessel-runc vs runc terminal output");
}

#[test]
fn exec_with_process_file_matches() {
    let mut got = Vec::new();
    for rt in both() {
        let mut s = base_spec();
        s["process"]["args"] = json!(["sleep", "1000"]);
        let b = bundle(&s);
        let id = id(rt.name);
        assert!(rt
            .run(&["create", "--bundle", b.to_str().unwrap(), &id])
            .status
            .success());
        assert!(rt.run(&["start", &id]).status.success());
        let p = json!({
            "args": ["sh", "-c", "id; pwd; echo $X; grep CapEff /proc/self/status; exit 3"],
            "cwd": "/etc", "env": ["X=from-process-file", "PATH=/bin"],
            "user": {"uid": 65534, "gid": 65534},
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}
        });
        let pf = b.join("process.json");
        std::fs::write(&pf, p.to_string()).unwrap();
        let o = rt.run(&["exec", "--process", pf.to_str().unwrap(), &id]);
        let detached = rt.run(&[
            "exec",
            "--detach",
            "--pid-file",
            b.join("exec.pid").to_str().unwrap(),
            &id,
            "sleep",
            "1000",
        ]);
        assert!(
            detached.status.success(),
            "{}: {}",
            rt.name,
            String::from_utf8_lossy(&detached.stderr)
        );
        let epid: i64 = std::fs::read_to_string(b.join("exec.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let ps: Vec<i64> =
            serde_json::from_str(&out(&rt.run(&["ps", "--format", "json", &id]))).unwrap();
        assert!(ps.contains(&epid), "{}: {ps:?} lacks {epid}", rt.name);
        let bad = rt.run(&["exec", &id, "/no/such/program"]);
        assert!(rt.run(&["delete", "--force", &id]).status.success());
        got.push((o.status.code(), out(&o), bad.status.code().map(|c| c != 0)));
    }
    assert_eq!(got[1].0, Some(3), "{got:?}");
    assert_eq!(got[0], got[1], "vessel-runc vs runc");
}

#[test]
fn errors_reach_the_log_file_as_runc_json() {
    for rt in both() {
        let log = work().join(format!("{}-{}.log", rt.name, id("log")));
        let o = rt.run(&[
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "state",
            "no-such-container",
        ]);
        // (rt.cmd puts --root first: global flags in any order.)
        assert_eq!(o.status.code(), Some(1), "{}", rt.name);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let last: Value = serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
        assert_eq!(last["level"], "error", "{}: {text}", rt.name);
        assert!(
            last["msg"]
                .as_str()
                .unwrap_or("")
                .contains("does not exist"),
            "{}: {text}",
            rt.name
        );
        assert!(last["time"].is_string(), "{}: {text}", rt.name);
    }
    // Unknown flags are refused (never ignored), with a line in the log too.
    let [v, _] = both();
    let log = work().join("unknown-flag.log");
    let o = v.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--no-such-flag",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--no-such-flag"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("\"level\":\"error\"") && text.contains("--no-such-flag"),
        "{text}"
    );
    // --systemd-cgroup is refused by name where vessel would have to honour it.
    let b = bundle(&base_spec());
    let o = v.run(&[
        "--systemd-cgroup",
        "create",
        "--bundle",
        b.to_str().unwrap(),
        &id("sd"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--systemd-cgroup"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A key that only its possessors may see, in a session keyring of this test thread
/// (which the runtime it starts inherits): the container must not possess it.
#[test]
fn the_callers_session_keys_stay_out_of_the_container() {
    let desc = format!("vessel-test-secret-{}", std::process::id());
    let cdesc = std::ffi::CString::new(desc.clone()).unwrap();
    // SAFETY: keyctl/add_key with valid NUL-terminated strings and a buffer we own.
    let key = unsafe {
        let ses = std::ffi::CString::new(format!("vessel-test-{}", std::process::id())).unwrap();
        assert!(
            libc::syscall(
                libc::SYS_keyctl,
                libc::KEYCTL_JOIN_SESSION_KEYRING,
                ses.as_ptr()
            ) > 0
        );
        let key = libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            cdesc.as_ptr(),
            b"s3cret".as_ptr(),
            6usize,
            libc::KEY_SPEC_SESSION_KEYRING,
        );
        assert!(key > 0, "add_key: {}", std::io::Error::last_os_error());
        // Possessor: everything; owner, group, others: nothing.
        assert_eq!(
            libc::syscall(libc::SYS_keyctl, libc::KEYCTL_SETPERM, key, 0x3f00_0000u32),
            0
        );
        key
    };
    let mine = std::fs::read_to_string("/proc/keys").unwrap();
    assert!(
        mine.contains(&desc),
        "the test itself must see its key: {mine}"
    );
    for rt in both() {
        let mut s = base_spec();
        s["linux"]["maskedPaths"] = json!([]);
        s["process"]["args"] = json!(["cat", "/proc/keys"]);
        let b = bundle(&s);
        let id = id(rt.name);
        let o = rt.run(&["run", "--bundle", b.to_str().unwrap(), &id]);
        assert!(
            o.status.success(),
            "{}: {}",
            rt.name,
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !out(&o).contains(&desc),
            "{}: the container possesses its caller's session key:\n{}",
            rt.name,
            out(&o)
        );
    }
    // SAFETY: revoking the key we added.
    unsafe { libc::syscall(libc::SYS_keyctl, libc::KEYCTL_REVOKE, key) };
}
