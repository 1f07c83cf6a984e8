//! Validate an OCI spec once, before any side effect, into plain types the container
//! process consumes without further checks.

use std::collections::HashSet;
use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use oci_spec::runtime::{
    Capabilities, LinuxDeviceType, LinuxIdMapping, LinuxNamespaceType, LinuxResources,
    PosixRlimitType, Process, Spec,
};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::seccomp::{self, CompiledSeccomp};
use crate::spec::{DEFAULT_PATH, OVERLAY_ANNOTATION};

/// Everything the container's init needs, validated.
#[derive(Debug, Clone)]
pub(crate) struct ContainerConfig {
    pub rootfs: PathBuf,
    pub readonly_root: bool,
    pub overlay: Option<OverlayMount>,
    pub propagation: MsFlags,
    pub mounts: Vec<MountPlan>,
    pub namespaces: Vec<Namespace>,
    pub uid_mappings: Vec<LinuxIdMapping>,
    pub gid_mappings: Vec<LinuxIdMapping>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub devices: Vec<DeviceNode>,
    pub sysctl: Vec<(String, String)>,
    pub resources: LinuxResources,
    pub cgroups_path: String,
    pub process: ProcessConfig,
}

impl ContainerConfig {
    pub fn has_ns(&self, flag: CloneFlags) -> bool {
        self.namespaces.iter().any(|n| n.flag == flag)
    }

    /// A namespace the container creates (as opposed to joins by path).
    pub fn new_ns(&self, flag: CloneFlags) -> bool {
        self.namespaces
            .iter()
            .any(|n| n.flag == flag && n.path.is_none())
    }
}

/// One namespace to create (`path == None`) or join.
#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    pub flag: CloneFlags,
    pub path: Option<PathBuf>,
}

/// An overlayfs to mount on the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OverlayMount {
    /// Mount data (`lowerdir=...,upperdir=...,workdir=...`).
    pub data: String,
    /// When set, paths in `data` are relative to this directory (to fit in a page).
    pub chdir: Option<PathBuf>,
    /// `data` ends with `,volatile` (see [`OverlayAnnotation`]); a kernel without the
    /// option (before 5.10) is retried without it.
    pub volatile: bool,
    /// The lower layers, absolute: a user namespace sees them through idmapped mounts.
    pub lower: Vec<PathBuf>,
    /// The upper directory, absolute: a user namespace's root gets to own it.
    pub upper: PathBuf,
}

/// The overlay annotation's JSON value.
#[derive(Debug, Deserialize)]
struct OverlayAnnotation {
    lower: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    /// Mount with `volatile`: the upper directory is never synced (not on `sync`, not at
    /// unmount), for a container whose writes are thrown away with it (`--rm`).
    #[serde(default)]
    volatile: bool,
}

/// A mount from the spec with its options decoded.
#[derive(Debug, Clone)]
pub(crate) struct MountPlan {
    pub destination: PathBuf,
    pub typ: String,
    pub source: Option<PathBuf>,
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: String,
    pub bind: bool,
}

/// A device node to create in /dev.
#[derive(Debug, Clone)]
pub(crate) struct DeviceNode {
    pub path: PathBuf,
    pub kind: libc::mode_t,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Capability sets as bit masks (bit n = capability n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// The process to run (container init or exec).
#[derive(Debug, Clone)]
pub(crate) struct ProcessConfig {
    /// The sealed entry program the final `execve` goes through (see
    /// [`crate::Runtime::with_entry`]); `None` to exec the program directly.
    pub entry: Option<std::os::fd::RawFd>,
    pub args: Vec<CString>,
    pub arg0: String,
    pub env: Vec<CString>,
    pub path_env: String,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// `process.user.username`: a user spec (`name[:group]`) to resolve against the
    /// container's own /etc/passwd and /etc/group once inside it; it replaces
    /// uid, gid and additional_gids.
    pub user_spec: Option<String>,
    pub umask: Option<u32>,
    pub caps: Option<CapSets>,
    pub rlimits: Vec<(Resource, u64, u64)>,
    pub no_new_privs: bool,
    pub oom_score_adj: Option<i32>,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
    pub seccomp: Option<CompiledSeccomp>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidSpec(msg.into())
}

/// Check a container id: safe as a single path component.
pub(crate) fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| invalid(format!("{what} {s:?} contains a NUL byte")))
}

/// Validate `spec` (whose bundle is `bundle`) for container `id`.
pub(crate) fn validate(id: &str, bundle: &Path, spec: &Spec) -> Result<ContainerConfig> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root is missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = rootfs
        .canonicalize()
        .map_err(|e| Error::io("root.path", &rootfs, e))?;
    if !rootfs.is_dir() {
        return Err(invalid(format!(
            "root.path {} is not a directory",
            rootfs.display()
        )));
    }

    let linux = spec.linux().clone().unwrap_or_default();
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process is missing"))?;

    // Namespaces.
    let mut namespaces: Vec<Namespace> = Vec::new();
    for ns in linux.namespaces().iter().flatten() {
        let flag = ns_flag(ns.typ());
        if namespaces.iter().any(|n| n.flag == flag) {
            return Err(invalid(format!("namespace {} listed twice", ns.typ())));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return Err(invalid(format!(
                    "namespace path {} is not absolute",
                    p.display()
                )));
            }
        }
        namespaces.push(Namespace {
            flag,
            path: ns.path().clone(),
        });
    }
    let has = |f: CloneFlags| namespaces.iter().any(|n| n.flag == f);
    let new_userns = namespaces
        .iter()
        .any(|n| n.flag == CloneFlags::CLONE_NEWUSER && n.path.is_none());
    let uid_mappings = linux.uid_mappings().clone().unwrap_or_default();
    let gid_mappings = linux.gid_mappings().clone().unwrap_or_default();
    if new_userns && (uid_mappings.is_empty() || gid_mappings.is_empty()) {
        return Err(invalid(
            "a new user namespace needs linux.uidMappings and linux.gidMappings",
        ));
    }
    if !has(CloneFlags::CLONE_NEWUSER) && (!uid_mappings.is_empty() || !gid_mappings.is_empty()) {
        return Err(invalid("uid/gid mappings given without a user namespace"));
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !has(CloneFlags::CLONE_NEWUTS) {
        return Err(invalid(
            "hostname is set but the container has no UTS namespace",
        ));
    }
    if !has(CloneFlags::CLONE_NEWNS) {
        return Err(invalid("a mount namespace is required"));
    }

    // Mounts.
    let mut mounts = Vec::new();
    for m in spec.mounts().iter().flatten() {
        mounts.push(mount_plan(m)?);
    }

    // Overlay annotation.
    let overlay = match spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(OVERLAY_ANNOTATION))
    {
        Some(v) => Some(overlay_mount(v)?),
        None => None,
    };

    let propagation = match linux.rootfs_propagation().as_deref().unwrap_or("") {
        "" | "rprivate" => MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        "private" => MsFlags::MS_PRIVATE,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_REC | MsFlags::MS_SLAVE,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_REC | MsFlags::MS_SHARED,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_REC | MsFlags::MS_UNBINDABLE,
        other => return Err(invalid(format!("rootfsPropagation {other:?} is unknown"))),
    };

    let abs_paths = |what: &str, v: &Option<Vec<String>>| -> Result<Vec<PathBuf>> {
        v.iter()
            .flatten()
            .map(|p| {
                let pb = PathBuf::from(p);
                if pb.is_absolute() {
                    Ok(pb)
                } else {
                    Err(invalid(format!("{what} {p:?} is not absolute")))
                }
            })
            .collect()
    };
    let masked_paths = abs_paths("masked path", linux.masked_paths())?;
    let readonly_paths = abs_paths("readonly path", linux.readonly_paths())?;

    let mut devices = Vec::new();
    for d in linux.devices().iter().flatten() {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(invalid(format!(
                    "device {} has type 'a'",
                    d.path().display()
                )))
            }
        };
        if !d.path().starts_with("/dev") {
            return Err(invalid(format!(
                "device {} is not under /dev",
                d.path().display()
            )));
        }
        devices.push(DeviceNode {
            path: d.path().clone(),
            kind,
            major: u64::try_from(d.major()).map_err(|_| invalid("negative device major"))?,
            minor: u64::try_from(d.minor()).map_err(|_| invalid("negative device minor"))?,
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }

    let mut sysctl: Vec<(String, String)> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sysctl.sort();
    for (k, _) in &sysctl {
        let ok = if k.starts_with("net.") {
            has(CloneFlags::CLONE_NEWNET)
        } else {
            k.starts_with("kernel.msg")
                || k.starts_with("kernel.shm")
                || k == "kernel.sem"
                || k.starts_with("fs.mqueue.")
        };
        if !ok || k.contains('/') || k.contains("..") {
            return Err(invalid(format!(
                "sysctl {k:?} is not namespaced (or needs a namespace the container lacks)"
            )));
        }
    }

    let cgroups_path = match linux.cgroups_path() {
        Some(p) => p.to_string_lossy().into_owned(),
        None => format!("vessel/{id}"),
    };
    if Path::new(&cgroups_path)
        .components()
        .any(|c| c == Component::ParentDir)
        || cgroups_path.trim_matches('/').is_empty()
    {
        return Err(invalid(format!(
            "cgroupsPath {cgroups_path:?} is not allowed"
        )));
    }

    let process = process_config(process, linux.seccomp().as_ref())?;

    Ok(ContainerConfig {
        rootfs,
        readonly_root: root.readonly().unwrap_or(false),
        overlay,
        propagation,
        mounts,
        namespaces,
        uid_mappings,
        gid_mappings,
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
        masked_paths,
        readonly_paths,
        devices,
        sysctl,
        resources: linux.resources().clone().unwrap_or_default(),
        cgroups_path,
        process,
    })
}

pub(crate) fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Validate a process (for init or exec). `seccomp` is the container's profile.
pub(crate) fn process_config(
    p: &Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> Result<ProcessConfig> {
    let args_s = p.args().clone().unwrap_or_default();
    let arg0 = args_s
        .first()
        .filter(|a| !a.is_empty())
        .cloned()
        .ok_or_else(|| invalid("process.args is empty"))?;
    let args = args_s
        .iter()
        .map(|a| cstring("argument", a))
        .collect::<Result<Vec<_>>>()?;
    let env_s = p.env().clone().unwrap_or_default();
    for e in &env_s {
        if !e.contains('=') {
            return Err(invalid(format!("environment entry {e:?} has no '='")));
        }
    }
    let path_env = env_s
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let env = env_s
        .iter()
        .map(|e| cstring("environment entry", e))
        .collect::<Result<Vec<_>>>()?;
    if !p.cwd().is_absolute() {
        return Err(invalid(format!(
            "process.cwd {} is not absolute",
            p.cwd().display()
        )));
    }
    let caps = match p.capabilities() {
        None => None,
        Some(c) => {
            let permitted = cap_mask(c.permitted())?;
            let inheritable = cap_mask(c.inheritable())?;
            let asked = cap_mask(c.ambient())?;
            // The kernel keeps a capability ambient only if it is also permitted and
            // inheritable; runc skips the others (`runc spec` itself asks for ambient
            // capabilities without inheritable ones), and so does vessel.
            let ambient = asked & permitted & inheritable;
            if ambient != asked {
                tracing::debug!(
                    skipped = format!("{:#x}", asked & !ambient),
                    "ambient capabilities that are not both permitted and inheritable are not raised"
                );
            }
            Some(CapSets {
                bounding: cap_mask(c.bounding())?,
                effective: cap_mask(c.effective())?,
                permitted,
                inheritable,
                ambient,
            })
        }
    };
    let mut rlimits = Vec::new();
    let mut seen = HashSet::new();
    for r in p.rlimits().iter().flatten() {
        if !seen.insert(r.typ().to_string()) {
            return Err(invalid(format!("rlimit {} given twice", r.typ())));
        }
        if r.soft() > r.hard() {
            return Err(invalid(format!(
                "rlimit {}: soft {} exceeds hard {}",
                r.typ(),
                r.soft(),
                r.hard()
            )));
        }
        rlimits.push((rlimit_resource(r.typ()), r.soft(), r.hard()));
    }
    let seccomp = match seccomp {
        Some(s) => Some(seccomp::compile(s)?),
        None => None,
    };
    let console_size = p.console_size().map(|b| {
        (
            u16::try_from(b.height()).unwrap_or(u16::MAX),
            u16::try_from(b.width()).unwrap_or(u16::MAX),
        )
    });
    Ok(ProcessConfig {
        entry: None,
        args,
        arg0,
        env,
        path_env,
        cwd: p.cwd().clone(),
        uid: p.user().uid(),
        gid: p.user().gid(),
        additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
        user_spec: p.user().username().clone().filter(|u| !u.is_empty()),
        umask: p.user().umask(),
        caps,
        rlimits,
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
        terminal: p.terminal().unwrap_or(false),
        console_size,
        seccomp,
    })
}

/// Capability names to a bit mask.
pub(crate) fn cap_mask(set: &Option<Capabilities>) -> Result<u64> {
    let mut mask = 0u64;
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        let cap: caps::Capability = name
            .parse()
            .map_err(|_| invalid(format!("unknown capability {name}")))?;
        mask |= 1u64 << cap.index();
    }
    Ok(mask)
}

fn rlimit_resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Decode one spec mount.
fn mount_plan(m: &oci_spec::runtime::Mount) -> Result<MountPlan> {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(invalid(format!(
            "mount destination {} is not absolute",
            dest.display()
        )));
    }
    let typ = m.typ().clone().unwrap_or_default();
    let (flags, propagation, data) = parse_mount_options(m.options().as_deref().unwrap_or(&[]));
    let bind = typ == "bind" || flags.contains(MsFlags::MS_BIND);
    if bind && m.source().is_none() {
        return Err(invalid(format!(
            "bind mount on {} has no source",
            dest.display()
        )));
    }
    if !bind && typ.is_empty() {
        return Err(invalid(format!("mount on {} has no type", dest.display())));
    }
    Ok(MountPlan {
        destination: dest.clone(),
        typ,
        source: m.source().clone(),
        flags,
        propagation,
        data,
        bind,
    })
}

/// Split mount(8)-style options into flags, propagation changes and fs-specific data.
pub(crate) fn parse_mount_options(opts: &[String]) -> (MsFlags, Vec<MsFlags>, String) {
    let mut flags = MsFlags::empty();
    let mut prop = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    for o in opts {
        let (clear, f) = match o.as_str() {
            "defaults" => (false, MsFlags::empty()),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "suid" => (true, MsFlags::MS_NOSUID),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "dev" => (true, MsFlags::MS_NODEV),
            "nodev" => (false, MsFlags::MS_NODEV),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "atime" => (true, MsFlags::MS_NOATIME),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "silent" => (false, MsFlags::MS_SILENT),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let mut f = match o.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if o.starts_with('r') {
                    f |= MsFlags::MS_REC;
                }
                prop.push(f);
                continue;
            }
            _ => {
                data.push(o);
                continue;
            }
        };
        if clear {
            flags.remove(f);
        } else {
            flags.insert(f);
        }
    }
    (flags, prop, data.join(","))
}

/// Longest mount data the kernel accepts (one page, NUL included).
const MAX_MOUNT_DATA: usize = 4095;

/// Decode the overlay annotation into mount data, falling back to paths relative to the
/// layers' common parent when absolute ones do not fit in a page.
pub(crate) fn overlay_mount(json: &str) -> Result<OverlayMount> {
    let a: OverlayAnnotation = serde_json::from_str(json)
        .map_err(|e| invalid(format!("annotation {OVERLAY_ANNOTATION}: {e}")))?;
    if a.lower.is_empty() {
        return Err(invalid(format!(
            "annotation {OVERLAY_ANNOTATION}: \"lower\" is empty"
        )));
    }
    let all: Vec<&PathBuf> = a.lower.iter().chain([&a.upper, &a.work]).collect();
    for p in &all {
        let s = p.to_string_lossy();
        if !p.is_absolute() || s.contains(',') || s.contains(':') {
            return Err(invalid(format!(
                "annotation {OVERLAY_ANNOTATION}: layer path {s:?} must be absolute and contain no ',' or ':'"
            )));
        }
    }
    let render = |f: &dyn Fn(&PathBuf) -> String| {
        format!(
            "lowerdir={},upperdir={},workdir={}{}",
            a.lower.iter().map(f).collect::<Vec<_>>().join(":"),
            f(&a.upper),
            f(&a.work),
            if a.volatile { ",volatile" } else { "" }
        )
    };
    let data = render(&|p| p.to_string_lossy().into_owned());
    if data.len() <= MAX_MOUNT_DATA {
        return Ok(OverlayMount {
            data,
            chdir: None,
            volatile: a.volatile,
            lower: a.lower,
            upper: a.upper,
        });
    }
    // Common parent of every layer.
    let mut common: PathBuf = all[0].clone();
    while !all.iter().all(|p| p.starts_with(&common)) {
        if !common.pop() {
            break;
        }
    }
    let rel = render(&|p| {
        p.strip_prefix(&common)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_else(|_| p.to_string_lossy().into_owned())
    });
    if rel.len() > MAX_MOUNT_DATA {
        return Err(invalid(format!(
            "annotation {OVERLAY_ANNOTATION}: {} layers make {} bytes of overlay options, over the kernel's {MAX_MOUNT_DATA}-byte limit",
            a.lower.len(),
            rel.len()
        )));
    }
    Ok(OverlayMount {
        data: rel,
        chdir: Some(common),
        volatile: a.volatile,
        lower: a.lower,
        upper: a.upper,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2.x").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mount_options() {
        let o =
            |v: &[&str]| parse_mount_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (f, p, d) = o(&["nosuid", "noexec", "mode=755", "size=65536k", "ro"]);
        assert_eq!(
            f,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        );
        assert!(p.is_empty());
        assert_eq!(d, "mode=755,size=65536k");
        let (f, p, _) = o(&["rbind", "rprivate", "ro", "rw"]);
        assert_eq!(f, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(p, [MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        let (_, p, _) = o(&["private", "runbindable"]);
        assert_eq!(
            p,
            [
                MsFlags::MS_PRIVATE,
                MsFlags::MS_UNBINDABLE | MsFlags::MS_REC
            ]
        );
    }

    #[test]
    fn overlay_annotation() {
        let o =
            overlay_mount(r#"{"lower":["/l/top","/l/bottom"],"upper":"/c/up","work":"/c/work"}"#)
                .unwrap();
        assert_eq!(
            o.data,
            "lowerdir=/l/top:/l/bottom,upperdir=/c/up,workdir=/c/work"
        );
        assert_eq!(o.chdir, None);
        assert!(!o.volatile);
        let o =
            overlay_mount(r#"{"lower":["/l"],"upper":"/c/up","work":"/c/work","volatile":true}"#)
                .unwrap();
        assert_eq!(
            o.data,
            "lowerdir=/l,upperdir=/c/up,workdir=/c/work,volatile"
        );
        assert!(o.volatile);

        let json = |n: usize| {
            let lower: Vec<String> = (0..n)
                .map(|i| format!("\"/var/lib/vessel/storage/layers/{i:064}/diff\""))
                .collect();
            format!(
                r#"{{"lower":[{}],"upper":"/var/lib/vessel/storage/c/up","work":"/var/lib/vessel/storage/c/work"}}"#,
                lower.join(",")
            )
        };
        // 40 layers do not fit as absolute paths, but do relative to the common parent.
        let o = overlay_mount(&json(40)).unwrap();
        assert_eq!(
            o.chdir.as_deref(),
            Some(Path::new("/var/lib/vessel/storage"))
        );
        assert!(o.data.starts_with("lowerdir=layers/0000"));
        assert!(o.data.len() <= MAX_MOUNT_DATA);
        let err = overlay_mount(&json(80)).unwrap_err().to_string();
        assert!(err.contains("80 layers"), "{err}");

        assert!(overlay_mount(r#"{"lower":[],"upper":"/u","work":"/w"}"#).is_err());
        assert!(overlay_mount(r#"{"lower":["rel"],"upper":"/u","work":"/w"}"#).is_err());
        assert!(overlay_mount(r#"{"lower":["/a:b"],"upper":"/u","work":"/w"}"#).is_err());
    }

    #[test]
    fn validates_docker_spec() {
        let dir = std::env::temp_dir().join(format!("vessel-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let spec = crate::spec::docker_default(&crate::spec::SpecOptions {
            hostname: Some("h".into()),
            ..Default::default()
        });
        let cfg = validate("c1", &dir, &spec).unwrap();
        assert_eq!(cfg.cgroups_path, "vessel/c1");
        assert!(cfg.new_ns(CloneFlags::CLONE_NEWPID));
        assert_eq!(
            cfg.process.caps.as_ref().unwrap().bounding,
            crate::spec::DOCKER_DEFAULT_CAP_MASK
        );
        assert!(cfg.process.seccomp.is_some());
        assert_eq!(cfg.process.rlimits[0].1, 1_048_576);

        let mut bad = spec.clone();
        bad.process_mut().as_mut().unwrap().set_args(Some(vec![]));
        assert!(matches!(
            validate("c1", &dir, &bad),
            Err(Error::InvalidSpec(_))
        ));

        let mut bad = spec.clone();
        bad.root_mut()
            .as_mut()
            .unwrap()
            .set_path("/nonexistent/rootfs".into());
        assert!(validate("c1", &dir, &bad).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
