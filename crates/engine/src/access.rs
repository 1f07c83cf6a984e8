//! The `run` options that widen or narrow a container's reach into the host:
//! `--privileged`, `--device`, `--security-opt`, `--sysctl`, `--pid`, `--ipc`,
//! `--shm-size`, `--group-add`, `--cpu-shares`, `--cpuset-cpus`, `--memory-swap`. Parsed
//! and checked when the instance is created (a bad value fails `create`, not `start`);
//! applied to the OCI spec by the container backend. A microVM takes none of them: its
//! guest kernel is configured by vessel, not by these.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::request::{parse_size, Isolation};
use crate::{EngineError, Result};

/// A host device given to the container (`--device`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// The host's node (or a directory of nodes).
    pub host: PathBuf,
    /// Where it appears inside.
    pub container: PathBuf,
    /// Device cgroup access: a combination of `r`, `w`, `m`.
    pub perms: String,
}

impl DeviceMapping {
    /// Parses `HOST[:CONTAINER[:PERMS]]` (or `HOST:PERMS`), as Docker does.
    pub fn parse(s: &str) -> Result<DeviceMapping> {
        let bad = |why: &str| EngineError::InvalidFlag(format!("--device {s:?}: {why}"));
        let is_perms = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
        let parts: Vec<&str> = s.split(':').collect();
        let (host, container, perms) = match parts.as_slice() {
            [h] => (*h, *h, "rwm"),
            [h, p] if is_perms(p) => (*h, *h, *p),
            [h, c] => (*h, *c, "rwm"),
            [h, c, p] => (*h, *c, *p),
            _ => return Err(bad("expected HOST[:CONTAINER[:PERMISSIONS]]")),
        };
        if !host.starts_with('/') || !container.starts_with('/') {
            return Err(bad("paths must be absolute"));
        }
        if !is_perms(perms) {
            return Err(bad("permissions are a combination of r, w and m"));
        }
        let meta = std::fs::metadata(host).map_err(|e| bad(&format!("{host}: {e}")))?;
        use std::os::unix::fs::FileTypeExt;
        let ft = meta.file_type();
        if !(ft.is_char_device() || ft.is_block_device() || ft.is_dir()) {
            return Err(bad(&format!("{host} is not a device node")));
        }
        Ok(DeviceMapping {
            host: host.into(),
            container: container.into(),
            perms: perms.into(),
        })
    }
}

/// The container's seccomp filter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// Docker's default profile (for the container's capabilities).
    #[default]
    Default,
    /// None (`seccomp=unconfined`).
    Unconfined,
    /// A profile in Docker's JSON format, as read at create time.
    Profile(String),
}

/// `--ipc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipc {
    /// An IPC namespace and `/dev/shm` of its own (`private`, `shareable`).
    #[default]
    Private,
    /// The host's IPC namespace and `/dev/shm`.
    Host,
    /// An IPC namespace of its own and no `/dev/shm`.
    None,
}

/// What the options in this module asked for, as recorded with the instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Access {
    /// `--privileged`.
    pub privileged: bool,
    /// `--device`.
    pub devices: Vec<DeviceMapping>,
    /// `--security-opt` as given (for `inspect`).
    pub security_opts: Vec<String>,
    /// The seccomp filter.
    pub seccomp: Seccomp,
    /// `no_new_privs` on the container's processes (vessel's default: on).
    pub no_new_privileges: bool,
    /// `systempaths=unconfined`: nothing masked or read-only in /proc and /sys.
    pub systempaths_unconfined: bool,
    /// `--sysctl`.
    pub sysctls: BTreeMap<String, String>,
    /// `--pid host`.
    pub pid_host: bool,
    /// `--ipc`.
    pub ipc: Ipc,
    /// `--shm-size` in bytes (default 64 MiB).
    pub shm_size: Option<u64>,
    /// `--group-add`: group names or ids, resolved in the image at start.
    pub group_add: Vec<String>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`.
    pub cpuset_cpus: Option<String>,
    /// `--memory-swap`: memory plus swap in bytes, `-1` unlimited.
    pub memory_swap: Option<i64>,
}

impl Default for Access {
    fn default() -> Access {
        Access {
            privileged: false,
            devices: Vec::new(),
            security_opts: Vec::new(),
            seccomp: Seccomp::Default,
            no_new_privileges: true,
            systempaths_unconfined: false,
            sysctls: BTreeMap::new(),
            pid_host: false,
            ipc: Ipc::Private,
            shm_size: None,
            group_add: Vec::new(),
            cpu_shares: None,
            cpuset_cpus: None,
            memory_swap: None,
        }
    }
}

/// The options as given on the command line (or by the API).
#[derive(Clone, Debug, Default)]
pub struct AccessOptions {
    /// `--privileged`.
    pub privileged: bool,
    /// `--device`.
    pub devices: Vec<String>,
    /// `--security-opt`.
    pub security_opts: Vec<String>,
    /// `--sysctl KEY=VALUE`.
    pub sysctls: Vec<String>,
    /// `--pid`.
    pub pid: Option<String>,
    /// `--ipc`.
    pub ipc: Option<String>,
    /// `--shm-size`.
    pub shm_size: Option<String>,
    /// `--group-add`.
    pub group_add: Vec<String>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<i64>,
    /// `--cpuset-cpus`.
    pub cpuset_cpus: Option<String>,
    /// `--memory-swap`.
    pub memory_swap: Option<String>,
}

impl AccessOptions {
    /// The flags given, by name (what a microVM refuses).
    fn given(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (on, flag) in [
            (self.privileged, "--privileged"),
            (!self.devices.is_empty(), "--device"),
            (!self.security_opts.is_empty(), "--security-opt"),
            (!self.sysctls.is_empty(), "--sysctl"),
            (self.pid.is_some(), "--pid"),
            (self.ipc.is_some(), "--ipc"),
            (self.shm_size.is_some(), "--shm-size"),
            (!self.group_add.is_empty(), "--group-add"),
            (self.cpu_shares.is_some(), "--cpu-shares"),
            (self.cpuset_cpus.is_some(), "--cpuset-cpus"),
            (self.memory_swap.is_some(), "--memory-swap"),
        ] {
            if on {
                out.push(flag);
            }
        }
        out
    }
}

/// Largest seccomp profile read (Docker's default profile is ~20 KiB).
const MAX_PROFILE: u64 = 1 << 20;

/// Parses and checks the options for an instance of `isolation` with `memory` limit,
/// `userns` and a network namespace of its own unless `host_network`.
pub fn parse(
    o: &AccessOptions,
    isolation: Isolation,
    memory: Option<u64>,
    userns: bool,
    host_network: bool,
) -> Result<Access> {
    let bad = |s: String| EngineError::InvalidFlag(s);
    if isolation == Isolation::Vm {
        if let Some(flag) = o.given().first() {
            return Err(bad(format!(
                "{flag} applies to containers only: a microVM's processes are confined by its own kernel, which vessel does not configure this way yet"
            )));
        }
        return Ok(Access::default());
    }
    let mut a = Access {
        privileged: o.privileged,
        ..Access::default()
    };
    if o.privileged && userns {
        return Err(bad(
            "--privileged cannot go with --userns: privileged mode is incompatible with user namespaces".into(),
        ));
    }
    a.devices = o
        .devices
        .iter()
        .map(|d| DeviceMapping::parse(d))
        .collect::<Result<_>>()?;
    for s in &o.security_opts {
        let (k, v) = s
            .split_once('=')
            .or_else(|| s.split_once(':'))
            .unwrap_or((s.as_str(), ""));
        match (k, v) {
            ("no-new-privileges", "" | "true") => a.no_new_privileges = true,
            ("no-new-privileges", "false") => a.no_new_privileges = false,
            ("seccomp", "unconfined") => a.seccomp = Seccomp::Unconfined,
            ("seccomp", "") => return Err(bad(format!("--security-opt {s:?}: seccomp needs unconfined or a profile's path"))),
            ("seccomp", path) => a.seccomp = Seccomp::Profile(read_profile(s, Path::new(path))?),
            // vessel applies no AppArmor profile and no SELinux label: these say so.
            ("apparmor", "unconfined") | ("label", "disable") => {}
            ("apparmor", _) => {
                return Err(bad(format!(
                    "--security-opt {s:?}: vessel does not apply AppArmor profiles (only apparmor=unconfined is what it does)"
                )))
            }
            ("label", _) => {
                return Err(bad(format!(
                    "--security-opt {s:?}: vessel does not apply SELinux labels (only label=disable is what it does)"
                )))
            }
            ("systempaths", "unconfined") => a.systempaths_unconfined = true,
            _ => {
                return Err(bad(format!(
                    "--security-opt {s:?}: unknown or unsupported (vessel takes no-new-privileges[=true|false], seccomp=unconfined|PATH, systempaths=unconfined, apparmor=unconfined, label=disable)"
                )))
            }
        }
        a.security_opts.push(s.clone());
    }
    if let Some(p) = &o.pid {
        match p.as_str() {
            "host" => a.pid_host = true,
            "" | "private" => {}
            _ => return Err(bad(format!("--pid {p:?}: vessel takes host or private"))),
        }
    }
    if let Some(i) = &o.ipc {
        a.ipc = match i.as_str() {
            "" | "private" | "shareable" => Ipc::Private,
            "host" => Ipc::Host,
            "none" => Ipc::None,
            _ => {
                return Err(bad(format!(
                "--ipc {i:?}: vessel takes private, shareable, host or none (not container:NAME)"
            )))
            }
        };
        if a.ipc == Ipc::Host && userns {
            return Err(bad("--ipc host cannot go with --userns".into()));
        }
    }
    if let Some(s) = &o.shm_size {
        let bytes = parse_size("--shm-size", s)?;
        if bytes == 0 {
            return Err(bad("--shm-size must be more than 0".into()));
        }
        if a.ipc != Ipc::Private {
            return Err(bad(
                "--shm-size applies to a /dev/shm of the container's own (not with --ipc host or none)".into(),
            ));
        }
        a.shm_size = Some(bytes);
    }
    for kv in &o.sysctls {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(format!("--sysctl {kv:?}: expected KEY=VALUE")))?;
        check_sysctl(k, &a, host_network).map_err(|why| bad(format!("--sysctl {k}: {why}")))?;
        a.sysctls.insert(k.to_string(), v.to_string());
    }
    for g in &o.group_add {
        if g.is_empty() || g.contains(':') {
            return Err(bad(format!("--group-add {g:?}: a group name or id")));
        }
    }
    a.group_add = o.group_add.clone();
    if let Some(s) = o.cpu_shares {
        if !(2..=262_144).contains(&s) {
            return Err(bad(format!(
                "--cpu-shares {s}: expected a weight from 2 to 262144 (default 1024)"
            )));
        }
        a.cpu_shares = Some(s as u64);
    }
    if let Some(c) = &o.cpuset_cpus {
        check_cpuset(c).map_err(|why| bad(format!("--cpuset-cpus {c:?}: {why}")))?;
        a.cpuset_cpus = Some(c.clone());
    }
    if let Some(s) = &o.memory_swap {
        let Some(mem) = memory else {
            return Err(bad(
                "--memory-swap needs --memory: it is the limit of memory plus swap".into(),
            ));
        };
        let swap = if s == "-1" {
            -1
        } else {
            let v = parse_size("--memory-swap", s)?;
            if v < mem {
                return Err(bad(format!(
                    "--memory-swap {s} is less than --memory: it is memory plus swap, so at least the memory limit"
                )));
            }
            v as i64
        };
        if !vessel_container::swap_limit_supported() {
            return Err(bad(
                "--memory-swap: this kernel's memory cgroup has no swap accounting (v1 without swapaccount=1, or v2 without memory.swap.max)".into(),
            ));
        }
        a.memory_swap = Some(swap);
    }
    Ok(a)
}

/// Reads a `seccomp=PATH` profile, checked now (with Docker's default capabilities: the
/// container's own are applied when it starts).
fn read_profile(opt: &str, path: &Path) -> Result<String> {
    use std::io::Read;
    let bad = |why: String| EngineError::InvalidFlag(format!("--security-opt {opt:?}: {why}"));
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(|e| bad(format!("{}: {e}", path.display())))?
        .take(MAX_PROFILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("{}: {e}", path.display())))?;
    if text.len() as u64 > MAX_PROFILE {
        return Err(bad(format!("{} is larger than 1 MiB", path.display())));
    }
    let caps = vessel_container::spec::docker_default_capabilities();
    vessel_container::spec::host_access::seccomp_from_docker_json(&text, &caps)
        .map_err(|e| bad(format!("the profile {}: {e}", path.display())))?;
    Ok(text)
}

/// Whether `key` is a namespaced sysctl this container may set (Docker's list).
fn check_sysctl(key: &str, a: &Access, host_network: bool) -> std::result::Result<(), String> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        if a.ipc == Ipc::Host {
            return Err("an IPC sysctl cannot be set with --ipc host (it is the host's)".into());
        }
        return Ok(());
    }
    if key.starts_with("net.") {
        if host_network {
            return Err(
                "a network sysctl cannot be set with --network host (it is the host's)".into(),
            );
        }
        return Ok(());
    }
    Err("not a namespaced sysctl: only kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.* and net.* can be set for a container".into())
}

/// Checks a cpuset list (`0-2,4`) against the CPUs this host has online.
fn check_cpuset(s: &str) -> std::result::Result<(), String> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let have = parse_cpu_list(online.trim()).unwrap_or_default();
    let want = parse_cpu_list(s)?;
    if want.is_empty() {
        return Err("no CPUs".into());
    }
    if let Some(c) = want.iter().find(|c| !have.contains(c)) {
        return Err(format!(
            "CPU {c} is not online on this host (online: {})",
            online.trim()
        ));
    }
    Ok(())
}

/// `0-2,4` as a list of CPU numbers.
fn parse_cpu_list(s: &str) -> std::result::Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("{x:?} is not a CPU number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a > 4096 {
                    return Err(format!("bad range {part:?}"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

/// Applies `a` to the spec of a container whose image layers are `layers_top_first`.
pub fn apply(
    a: &Access,
    spec: &mut oci_spec::runtime::Spec,
    layers_top_first: &[PathBuf],
) -> Result<()> {
    use vessel_container::spec::host_access as h;
    let bad = EngineError::InvalidFlag;
    if a.privileged {
        h::set_privileged(spec);
    }
    for d in &a.devices {
        h::add_device(spec, &d.host, &d.container, &d.perms)
            .map_err(|e| bad(format!("--device {}: {e}", d.host.display())))?;
    }
    match &a.seccomp {
        Seccomp::Default => {}
        Seccomp::Unconfined => h::set_seccomp(spec, None),
        Seccomp::Profile(text) => {
            let caps = h::bounding_capabilities(spec);
            let p = h::seccomp_from_docker_json(text, &caps)
                .map_err(|e| bad(format!("--security-opt seccomp: {e}")))?;
            h::set_seccomp(spec, Some(p));
        }
    }
    if let Some(p) = spec.process_mut() {
        p.set_no_new_privileges(Some(a.no_new_privileges));
    }
    if a.systempaths_unconfined {
        h::unmask_system_paths(spec);
    }
    if a.pid_host {
        h::share_host_namespace(spec, oci_spec::runtime::LinuxNamespaceType::Pid);
    }
    match a.ipc {
        Ipc::Private => {
            if let Some(bytes) = a.shm_size {
                h::set_shm(spec, h::Shm::Private(bytes));
            }
        }
        Ipc::Host => {
            h::share_host_namespace(spec, oci_spec::runtime::LinuxNamespaceType::Ipc);
            h::set_shm(spec, h::Shm::Host);
        }
        Ipc::None => h::set_shm(spec, h::Shm::None),
    }
    let sysctls: Vec<(String, String)> = a.sysctls.clone().into_iter().collect();
    h::set_sysctls(spec, &sysctls);
    if !a.group_add.is_empty() {
        let gids = crate::userdb::group_ids(&a.group_add, layers_top_first)?;
        if let Some(p) = spec.process_mut() {
            let mut user = p.user().clone();
            let mut all = user.additional_gids().clone().unwrap_or_default();
            for g in gids {
                if !all.contains(&g) {
                    all.push(g);
                }
            }
            user.set_additional_gids(Some(all));
            p.set_user(user);
        }
    }
    h::set_cpu_placement(spec, a.cpu_shares, a.cpuset_cpus.as_deref());
    if let Some(s) = a.memory_swap {
        h::set_memory_swap(spec, s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> AccessOptions {
        AccessOptions::default()
    }

    #[test]
    fn devices_parse_as_docker_does() {
        let d = DeviceMapping::parse("/dev/null").unwrap();
        assert_eq!(
            (d.container.to_str(), d.perms.as_str()),
            (Some("/dev/null"), "rwm")
        );
        let d = DeviceMapping::parse("/dev/null:r").unwrap();
        assert_eq!(
            (d.container.to_str(), d.perms.as_str()),
            (Some("/dev/null"), "r")
        );
        let d = DeviceMapping::parse("/dev/null:/dev/n:rw").unwrap();
        assert_eq!(
            (d.container.to_str(), d.perms.as_str()),
            (Some("/dev/n"), "rw")
        );
        for bad in [
            "/etc/passwd",
            "/dev/null:/x:rwx",
            "dev/null",
            "/dev/null:x",
            "/no/such",
        ] {
            assert!(DeviceMapping::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn security_opts_are_known_or_refused() {
        let with = |s: &[&str]| {
            parse(
                &AccessOptions {
                    security_opts: s.iter().map(|x| x.to_string()).collect(),
                    ..opts()
                },
                Isolation::Container,
                None,
                false,
                false,
            )
        };
        assert!(
            !with(&["no-new-privileges=false"])
                .unwrap()
                .no_new_privileges
        );
        assert!(with(&["no-new-privileges"]).unwrap().no_new_privileges);
        assert_eq!(
            with(&["seccomp=unconfined"]).unwrap().seccomp,
            Seccomp::Unconfined
        );
        assert!(with(&["apparmor=unconfined", "label=disable"]).is_ok());
        for bad in [
            "apparmor=docker-default",
            "label=type:x",
            "seccomp=/no/such",
            "bogus",
            "seccomp",
        ] {
            assert!(with(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn sysctls_must_be_namespaced() {
        let with = |k: &str, ipc: Option<&str>, host_net: bool| {
            parse(
                &AccessOptions {
                    sysctls: vec![format!("{k}=1")],
                    ipc: ipc.map(String::from),
                    ..opts()
                },
                Isolation::Container,
                None,
                false,
                host_net,
            )
        };
        assert!(with("net.ipv4.ip_forward", None, false).is_ok());
        assert!(with("kernel.shmmax", None, false).is_ok());
        assert!(with("net.ipv4.ip_forward", None, true).is_err());
        assert!(with("kernel.shmmax", Some("host"), false).is_err());
        assert!(with("kernel.hostname", None, false).is_err());
        assert!(with("vm.swappiness", None, false).is_err());
    }

    #[test]
    fn a_microvm_refuses_every_one() {
        let o = AccessOptions {
            cpu_shares: Some(512),
            ..opts()
        };
        let e = parse(&o, Isolation::Vm, None, false, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cpu-shares"), "{e}");
    }

    #[test]
    fn cpu_lists_and_limits() {
        assert_eq!(parse_cpu_list("0-2,4").unwrap(), vec![0, 1, 2, 4]);
        assert!(parse_cpu_list("2-1").is_err());
        assert!(check_cpuset("0").is_ok());
        assert!(check_cpuset("4095").is_err());
        let shares = |s| {
            parse(
                &AccessOptions {
                    cpu_shares: Some(s),
                    ..opts()
                },
                Isolation::Container,
                None,
                false,
                false,
            )
        };
        assert!(shares(1).is_err() && shares(512).is_ok());
        let swap = parse(
            &AccessOptions {
                memory_swap: Some("1g".into()),
                ..opts()
            },
            Isolation::Container,
            None,
            false,
            false,
        );
        assert!(swap.unwrap_err().to_string().contains("needs --memory"));
    }
}
