//! What widens or narrows a container's reach into the host, on top of
//! [`super::docker_default`], as `docker run` does it: `--privileged`, `--device`,
//! `--security-opt seccomp=...`, `--pid host`/`--ipc host`, `/dev/shm`, sysctls and the
//! cgroup knobs beyond memory/CPU quota/pids.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCpu, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory,
    LinuxNamespaceType, LinuxSeccomp, Spec,
};
use serde_json::Value;

/// Host `/dev` entries `--privileged` does not copy: what a fresh `/dev` already has of
/// its own (its devpts, shm, mqueue) or what is the host's session (its console).
const NOT_FOR_PRIVILEGED: &[&str] = &["pts", "shm", "mqueue", "fd", "console", "ptmx", "core"];

/// `--privileged`: every capability (that the engine holds), no seccomp filter, nothing masked or read-only in
/// /proc and /sys, `/sys` writable, every host device node and the device cgroup open.
/// What Docker does; it is the end of isolation from the host, which is why only the
/// caller (root) can ask for it.
pub fn set_privileged(spec: &mut Spec) {
    super::set_capabilities(spec, &super::held_capabilities());
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(None);
        linux.set_masked_paths(Some(Vec::new()));
        linux.set_readonly_paths(Some(Vec::new()));
        let mut devices = linux.devices().clone().unwrap_or_default();
        for d in host_devices(Path::new("/dev")) {
            if !devices.iter().any(|x| x.path() == d.path()) {
                devices.push(d);
            }
        }
        linux.set_devices(Some(devices));
        let mut allow_all = LinuxDeviceCgroup::default();
        allow_all.set_allow(true);
        allow_all.set_access(Some("rwm".into()));
        let mut res = linux.resources().clone().unwrap_or_default();
        res.set_devices(Some(vec![allow_all]));
        linux.set_resources(Some(res));
    }
    // /sys and its cgroup tree writable, as Docker mounts them for a privileged container.
    if let Some(mounts) = spec.mounts().clone() {
        let mounts = mounts
            .into_iter()
            .map(|mut m| {
                let dest = m.destination().to_string_lossy().into_owned();
                if dest == "/sys" || dest == "/sys/fs/cgroup" {
                    let opts = m.options().clone().unwrap_or_default();
                    m.set_options(Some(opts.into_iter().filter(|o| o != "ro").collect()));
                }
                m
            })
            .collect();
        spec.set_mounts(Some(mounts));
    }
}

/// Every character and block device under `dir` (the host's `/dev`), as nodes for a
/// container at the same paths. Unreadable entries are skipped: the host's /dev changes
/// under us (a device unplugged), and what cannot be seen cannot be given.
pub fn host_devices(dir: &Path) -> Vec<LinuxDevice> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if d == dir
                && NOT_FOR_PRIVILEGED
                    .iter()
                    .any(|n| e.file_name() == std::ffi::OsStr::new(n))
            {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(path);
            } else if let Ok(dev) = device(&path, &path) {
                out.push(dev);
            }
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// The device node at host path `host` (links followed), to appear at `inside`.
fn device(host: &Path, inside: &Path) -> Result<LinuxDevice, String> {
    let st = rustix::fs::stat(host).map_err(|e| format!("{}: {e}", host.display()))?;
    let kind = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
        rustix::fs::FileType::CharacterDevice => LinuxDeviceType::C,
        rustix::fs::FileType::BlockDevice => LinuxDeviceType::B,
        _ => return Err(format!("{} is not a device node", host.display())),
    };
    let mut d = LinuxDevice::default();
    d.set_path(inside.to_path_buf());
    d.set_typ(kind);
    d.set_major(i64::from(rustix::fs::major(st.st_rdev)));
    d.set_minor(i64::from(rustix::fs::minor(st.st_rdev)));
    d.set_file_mode(Some(st.st_mode & 0o7777));
    d.set_uid(Some(st.st_uid));
    d.set_gid(Some(st.st_gid));
    Ok(d)
}

/// `--device HOST[:INSIDE[:PERMS]]`: the host's node `host` (a device, or a directory of
/// them) at `inside`, and the device cgroup opened for it with `perms` (a subset of
/// `rwm`: read, write, mknod).
pub fn add_device(spec: &mut Spec, host: &Path, inside: &Path, perms: &str) -> Result<(), String> {
    if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
        return Err(format!(
            "invalid device permissions {perms:?}: a combination of r, w and m"
        ));
    }
    let meta = std::fs::metadata(host).map_err(|e| format!("{}: {e}", host.display()))?;
    let nodes: Vec<LinuxDevice> = if meta.is_dir() {
        host_devices(host)
            .into_iter()
            .map(|mut d| {
                let rel = d
                    .path()
                    .strip_prefix(host)
                    .unwrap_or(d.path())
                    .to_path_buf();
                d.set_path(inside.join(rel));
                d
            })
            .collect()
    } else {
        vec![device(host, inside)?]
    };
    if nodes.is_empty() {
        return Err(format!("{} holds no device nodes", host.display()));
    }
    let Some(linux) = spec.linux_mut() else {
        return Err("the spec has no linux section".into());
    };
    let mut devices = linux.devices().clone().unwrap_or_default();
    let mut res = linux.resources().clone().unwrap_or_default();
    let mut rules = res.devices().clone().unwrap_or_default();
    for n in nodes {
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(n.typ()));
        rule.set_major(Some(n.major()));
        rule.set_minor(Some(n.minor()));
        rule.set_access(Some(perms.to_string()));
        rules.push(rule);
        devices.retain(|d| d.path() != n.path());
        devices.push(n);
    }
    res.set_devices(Some(rules));
    linux.set_resources(Some(res));
    linux.set_devices(Some(devices));
    Ok(())
}

/// Replaces the seccomp filter (`None`: `seccomp=unconfined`, no filter).
pub fn set_seccomp(spec: &mut Spec, profile: Option<LinuxSeccomp>) {
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(profile);
    }
}

/// The capabilities the spec's process is given (its bounding set).
pub fn bounding_capabilities(spec: &Spec) -> HashSet<Capability> {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().clone())
        .unwrap_or_default()
}

/// A seccomp profile in Docker's JSON format (what `--security-opt seccomp=PATH` takes:
/// `defaultAction`, `defaultErrnoRet`, `architectures` or `archMap`, `syscalls` with
/// `names` or `name`, `action`, `errnoRet`, `args`, and `includes`/`excludes` on
/// `caps`, `arches` and `minKernel`), as the OCI profile for a container with
/// capabilities `caps` on this machine. A key vessel does not know is an error, never
/// skipped: a profile half-applied is a filter the user did not write.
pub fn seccomp_from_docker_json(
    json: &str,
    caps: &HashSet<Capability>,
) -> Result<LinuxSeccomp, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(top) = v else {
        return Err("not a JSON object".into());
    };
    let mut out = serde_json::Map::new();
    for (k, val) in top {
        match k.as_str() {
            "defaultAction" | "defaultErrnoRet" | "architectures" | "flags" => {
                out.insert(k, val);
            }
            "archMap" => {
                // Our architecture's entry: it and its sub-architectures.
                let ours = native_arch();
                let list = val.as_array().ok_or("archMap: not a list")?;
                let mut arches = Vec::new();
                for m in list {
                    if m.get("architecture").and_then(Value::as_str) == Some(ours) {
                        arches.push(Value::from(ours));
                        if let Some(Value::Array(sub)) = m.get("subArchitectures") {
                            arches.extend(sub.iter().cloned());
                        }
                    }
                }
                out.insert("architectures".into(), Value::Array(arches));
            }
            "syscalls" => {
                let list = val.as_array().ok_or("syscalls: not a list")?;
                let mut rules = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    if let Some(rule) = syscall_rule(s, caps).map_err(|e| format!("syscalls[{i}]: {e}"))? {
                        rules.push(rule);
                    }
                }
                out.insert("syscalls".into(), Value::Array(rules));
            }
            other => {
                return Err(format!(
                    "{other:?} is not supported by vessel (it knows defaultAction, defaultErrnoRet, architectures, archMap, flags, syscalls)"
                ))
            }
        }
    }
    if !out.contains_key("defaultAction") {
        return Err("no defaultAction".into());
    }
    serde_json::from_value(Value::Object(out)).map_err(|e| e.to_string())
}

/// One entry of a Docker profile's `syscalls`, or `None` when its `includes`/`excludes`
/// leave it out for this container.
fn syscall_rule(s: &Value, caps: &HashSet<Capability>) -> Result<Option<Value>, String> {
    let Value::Object(m) = s else {
        return Err("not an object".into());
    };
    let mut rule = serde_json::Map::new();
    let mut names: Vec<Value> = Vec::new();
    for (k, v) in m {
        match k.as_str() {
            "names" => names.extend(v.as_array().ok_or("names: not a list")?.iter().cloned()),
            "name" => names.push(v.clone()),
            "action" | "errnoRet" | "args" => {
                if !v.is_null() {
                    rule.insert(k.clone(), v.clone());
                }
            }
            "comment" => {}
            "includes" => {
                if !condition(v, caps)?.unwrap_or(true) {
                    return Ok(None);
                }
            }
            "excludes" => {
                if condition(v, caps)?.unwrap_or(false) {
                    return Ok(None);
                }
            }
            other => return Err(format!("{other:?} is not supported by vessel")),
        }
    }
    if names.is_empty() {
        return Err("no names".into());
    }
    rule.insert("names".into(), Value::Array(names));
    Ok(Some(Value::Object(rule)))
}

/// Whether an `includes`/`excludes` filter matches this container (`None`: it names no
/// condition).
fn condition(v: &Value, caps: &HashSet<Capability>) -> Result<Option<bool>, String> {
    let Value::Object(m) = v else {
        return Err("includes/excludes: not an object".into());
    };
    let mut result: Option<bool> = None;
    let mut and = |b: bool| result = Some(result.unwrap_or(true) && b);
    for (k, v) in m {
        match k.as_str() {
            "caps" => {
                let list = v.as_array().ok_or("caps: not a list")?;
                // Docker: any of the capabilities listed.
                let any = list.iter().any(|c| {
                    c.as_str()
                        .map(|n| n.trim_start_matches("CAP_"))
                        .and_then(|n| serde_json::from_value::<Capability>(Value::from(n)).ok())
                        .is_some_and(|c| caps.contains(&c))
                });
                and(any);
            }
            "arches" => {
                let list = v.as_array().ok_or("arches: not a list")?;
                let go_arch = if cfg!(target_arch = "x86_64") {
                    "amd64"
                } else if cfg!(target_arch = "aarch64") {
                    "arm64"
                } else {
                    std::env::consts::ARCH
                };
                and(list.iter().any(|a| a.as_str() == Some(go_arch)));
            }
            "minKernel" => {
                let want = v.as_str().ok_or("minKernel: not a string")?;
                and(kernel_at_least(want)?);
            }
            other => {
                return Err(format!(
                    "includes/excludes {other:?} is not supported by vessel"
                ))
            }
        }
    }
    Ok(result)
}

/// This machine's architecture as seccomp names it.
fn native_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "SCMP_ARCH_X86_64"
    } else if cfg!(target_arch = "aarch64") {
        "SCMP_ARCH_AARCH64"
    } else {
        "SCMP_ARCH_NATIVE"
    }
}

/// Whether the running kernel is at least `want` (`MAJOR.MINOR`).
fn kernel_at_least(want: &str) -> Result<bool, String> {
    let parse = |s: &str| -> Option<(u32, u32)> {
        let mut it = s.split(|c: char| !c.is_ascii_digit());
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    let w = parse(want).ok_or_else(|| format!("minKernel {want:?}: expected MAJOR.MINOR"))?;
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    Ok(parse(&release).is_some_and(|have| have >= w))
}

/// Leaves namespace `t` out: the container shares the host's (`--pid host`, `--ipc
/// host`).
pub fn share_host_namespace(spec: &mut Spec, t: LinuxNamespaceType) {
    if let Some(linux) = spec.linux_mut() {
        if let Some(ns) = linux.namespaces().clone() {
            linux.set_namespaces(Some(ns.into_iter().filter(|n| n.typ() != t).collect()));
        }
    }
}

/// What `/dev/shm` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shm {
    /// A tmpfs of its own of this many bytes (Docker's default: 64 MiB).
    Private(u64),
    /// The host's `/dev/shm`, bound (`--ipc host`).
    Host,
    /// None at all (`--ipc none`).
    None,
}

/// Sets `/dev/shm` as `shm` says.
pub fn set_shm(spec: &mut Spec, shm: Shm) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
    match shm {
        Shm::Private(bytes) => mounts.push(super::mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "mode=1777",
                &format!("size={bytes}"),
            ],
        )),
        Shm::Host => mounts.push(super::mount(
            "/dev/shm",
            "bind",
            "/dev/shm",
            &["rbind", "rprivate", "nosuid", "noexec", "nodev"],
        )),
        Shm::None => {}
    }
    spec.set_mounts(Some(mounts));
}

/// `--security-opt systempaths=unconfined`: nothing masked or read-only in /proc and /sys.
pub fn unmask_system_paths(spec: &mut Spec) {
    if let Some(linux) = spec.linux_mut() {
        linux.set_masked_paths(Some(Vec::new()));
        linux.set_readonly_paths(Some(Vec::new()));
    }
}

/// `--sysctl KEY=VALUE` entries (checked by the runtime: only namespaced keys).
pub fn set_sysctls(spec: &mut Spec, sysctls: &[(String, String)]) {
    if sysctls.is_empty() {
        return;
    }
    if let Some(linux) = spec.linux_mut() {
        let mut map: HashMap<String, String> = linux.sysctl().clone().unwrap_or_default();
        map.extend(sysctls.iter().cloned());
        linux.set_sysctl(Some(map));
    }
}

/// `--cpu-shares` (relative weight) and `--cpuset-cpus` (the CPUs allowed).
pub fn set_cpu_placement(spec: &mut Spec, shares: Option<u64>, cpuset: Option<&str>) {
    if shares.is_none() && cpuset.is_none() {
        return;
    }
    if let Some(linux) = spec.linux_mut() {
        let mut res = linux.resources().clone().unwrap_or_default();
        let mut cpu: LinuxCpu = res.cpu().clone().unwrap_or_default();
        if let Some(s) = shares {
            cpu.set_shares(Some(s));
        }
        if let Some(c) = cpuset {
            cpu.set_cpus(Some(c.to_string()));
        }
        res.set_cpu(Some(cpu));
        linux.set_resources(Some(res));
    }
}

/// `--memory-swap`: memory plus swap, bytes (`-1`: unlimited swap).
pub fn set_memory_swap(spec: &mut Spec, swap: i64) {
    if let Some(linux) = spec.linux_mut() {
        let mut res = linux.resources().clone().unwrap_or_default();
        let mut m: LinuxMemory = res.memory().unwrap_or_default();
        m.set_swap(Some(swap));
        res.set_memory(Some(m));
        linux.set_resources(Some(res));
    }
}

/// The devices a spec gives, by path (for tests and `inspect`).
pub fn device_paths(spec: &Spec) -> Vec<PathBuf> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default()
        .iter()
        .map(|d| d.path().clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        super::super::docker_default(&super::super::SpecOptions::default())
    }

    #[test]
    fn a_device_is_a_node_and_a_cgroup_rule() {
        let mut s = spec();
        add_device(
            &mut s,
            Path::new("/dev/null"),
            Path::new("/dev/mynull"),
            "rw",
        )
        .unwrap();
        assert_eq!(device_paths(&s), vec![PathBuf::from("/dev/mynull")]);
        let rules = s
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        let last = rules.last().unwrap();
        assert!(last.allow());
        assert_eq!((last.major(), last.minor()), (Some(1), Some(3)));
        assert_eq!(last.access().as_deref(), Some("rw"));
        assert!(
            add_device(&mut s, Path::new("/etc/passwd"), Path::new("/x"), "rw")
                .unwrap_err()
                .contains("not a device")
        );
        assert!(
            add_device(&mut s, Path::new("/dev/null"), Path::new("/x"), "rwx")
                .unwrap_err()
                .contains("permissions")
        );
    }

    #[test]
    fn docker_profiles_are_filtered_for_this_container() {
        let json = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "", "includes": {}, "excludes": {}},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"name": "getpid", "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
            ]
        }"#;
        let caps = super::super::docker_default_capabilities();
        let p = seccomp_from_docker_json(json, &caps).unwrap();
        let names: Vec<String> = p
            .syscalls()
            .clone()
            .unwrap()
            .iter()
            .flat_map(|s| s.names().clone())
            .collect();
        assert_eq!(names, ["read", "write", "getpid"]);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(p.architectures().clone().unwrap().len(), 2);
        }
        let all = super::super::all_capabilities();
        let p = seccomp_from_docker_json(json, &all).unwrap();
        let names: Vec<String> = p
            .syscalls()
            .clone()
            .unwrap()
            .iter()
            .flat_map(|s| s.names().clone())
            .collect();
        assert_eq!(names, ["read", "write", "mount"]);
        for bad in [
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/x"}"#,
            r#"{"syscalls": []}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "when": 1}]}"#,
            "[1]",
        ] {
            assert!(seccomp_from_docker_json(bad, &caps).is_err(), "{bad}");
        }
    }

    #[test]
    fn privileged_opens_everything() {
        let mut s = spec();
        set_privileged(&mut s);
        let linux = s.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        assert!(device_paths(&s).contains(&PathBuf::from("/dev/null")));
        assert!(!device_paths(&s).iter().any(|p| p.starts_with("/dev/pts")));
        assert_eq!(bounding_capabilities(&s), super::super::held_capabilities());
        let sys = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        assert!(!sys.options().as_ref().unwrap().contains(&"ro".to_string()));
    }
}
