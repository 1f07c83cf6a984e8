//! Build OCI runtime specs the way Docker does, from a handful of user-facing options.

pub mod host_access;
mod seccomp_profile;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup, LinuxIdMappingBuilder, LinuxMemory,
    LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources, Mount, PosixRlimitBuilder,
    PosixRlimitType, Process, Root, Spec, User,
};

pub use seccomp_profile::docker_seccomp_profile;

use crate::cgroups::resources::DEFAULT_CFS_PERIOD;

/// Annotation through which the engine asks the runtime to mount an overlay rootfs.
pub const OVERLAY_ANNOTATION: &str = "org.vessel.rootfs.overlay";

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: PathBuf,
    /// Mount read-only.
    pub readonly: bool,
}

/// A user-namespace id mapping range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First id inside the container.
    pub container_id: u32,
    /// First id on the host.
    pub host_id: u32,
    /// Number of ids.
    pub size: u32,
}

/// What [`docker_default`] needs to know; `Default` gives `sh` as root in `rootfs`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecOptions {
    /// Root filesystem path (absolute, or relative to the bundle).
    pub rootfs: PathBuf,
    /// argv of the process.
    pub args: Vec<String>,
    /// Environment (`KEY=value`); a default `PATH` is added when missing.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Hostname (the UTS namespace is always private).
    pub hostname: Option<String>,
    /// Allocate a pseudo-terminal for the process.
    pub terminal: bool,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// Extra bind mounts.
    pub binds: Vec<BindMount>,
    /// Memory limit in bytes (swap is disabled: memory+swap = the same value).
    pub memory_limit: Option<i64>,
    /// CPU limit in CPUs (1.5 = one and a half cores), as `docker run --cpus`.
    pub cpus: Option<f64>,
    /// Maximum number of tasks.
    pub pids_limit: Option<i64>,
    /// A fresh network namespace holding only loopback (which the runtime brings up).
    /// `false` shares the host's network, like `--network host`.
    pub network_namespace: bool,
    /// Run in a new user namespace with these uid and gid maps.
    pub user_namespace: Option<(Vec<IdMap>, Vec<IdMap>)>,
    /// cgroup path (relative paths are placed under the caller's own cgroup).
    pub cgroups_path: Option<String>,
    /// Annotations (e.g. [`OVERLAY_ANNOTATION`]).
    pub annotations: HashMap<String, String>,
}

impl Default for SpecOptions {
    fn default() -> Self {
        SpecOptions {
            rootfs: PathBuf::from("rootfs"),
            args: vec!["sh".into()],
            env: Vec::new(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: None,
            terminal: false,
            readonly_rootfs: false,
            binds: Vec::new(),
            memory_limit: None,
            cpus: None,
            pids_limit: None,
            network_namespace: true,
            user_namespace: None,
            cgroups_path: None,
            annotations: HashMap::new(),
        }
    }
}

/// Default `PATH` Docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set (what `docker run` grants without `--cap-add`).
pub fn docker_default_capabilities() -> HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// Paths Docker hides from containers.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// [`MASKED_PATHS`] and, as Docker 28 masks them, every CPU's thermal throttle
/// directory (its counters leak what other tenants run).
pub fn masked_paths() -> Vec<String> {
    let mut out: Vec<String> = MASKED_PATHS.iter().map(|s| s.to_string()).collect();
    if let Ok(cpus) = std::fs::read_dir("/sys/devices/system/cpu") {
        let mut per_cpu: Vec<String> = cpus
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                n.strip_prefix("cpu")
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|n| format!("/sys/devices/system/cpu/{n}/thermal_throttle"))
            .collect();
        per_cpu.sort();
        out.extend(per_cpu);
    }
    out
}

/// Paths Docker makes read-only in containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `docker run --cpus` as CFS quota/period: `(quota, period)` in microseconds.
pub fn cpus_to_quota(cpus: f64) -> (i64, u64) {
    let quota = (cpus * DEFAULT_CFS_PERIOD as f64).round() as i64;
    (quota.max(1000), DEFAULT_CFS_PERIOD)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some(typ.into()));
    m.set_source(Some(source.into()));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// Every Linux capability (0 to 40, `CAP_CHOWN` to `CAP_CHECKPOINT_RESTORE`).
pub fn all_capabilities() -> HashSet<Capability> {
    const NAMES: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    NAMES
        .iter()
        .filter_map(|n| serde_json::from_value(serde_json::Value::from(*n)).ok())
        .collect()
}

/// Every capability this process may hand on (its bounding set): "all" for `--cap-add
/// ALL` and `--privileged`, which cannot give what the engine itself was not given (a
/// host may run it without `CAP_SYS_RESOURCE`, say). Every one if the set is unreadable.
pub fn held_capabilities() -> HashSet<Capability> {
    let all = all_capabilities();
    let Ok(bounding) = caps::read(None, caps::CapSet::Bounding) else {
        return all;
    };
    all.into_iter()
        .filter(|c| {
            format!("CAP_{c}")
                .parse::<caps::Capability>()
                .is_ok_and(|k| bounding.contains(&k))
        })
        .collect()
}

/// Docker's `--cap-add`/`--cap-drop` arithmetic over its default set: `ALL` in the adds
/// is every capability but the drops; `ALL` in the drops is only the adds; otherwise the
/// defaults minus the drops plus the adds. Names are taken with or without `CAP_`, in
/// any case; an unknown one is an error naming it.
pub fn capabilities_with(
    add: &[String],
    drop: &[String],
) -> std::result::Result<HashSet<Capability>, String> {
    let is_all = |n: &String| n.eq_ignore_ascii_case("all") || n.eq_ignore_ascii_case("cap_all");
    let parse = |names: &[String]| -> std::result::Result<HashSet<Capability>, String> {
        names
            .iter()
            .filter(|n| !is_all(n))
            .map(|n| {
                serde_json::from_value::<Capability>(serde_json::Value::from(n.as_str()))
                    .map_err(|_| format!("unknown capability: {n:?}"))
            })
            .collect()
    };
    let (adds, drops) = (parse(add)?, parse(drop)?);
    Ok(if add.iter().any(is_all) {
        held_capabilities().difference(&drops).copied().collect()
    } else if drop.iter().any(is_all) {
        adds
    } else {
        docker_default_capabilities()
            .difference(&drops)
            .copied()
            .chain(adds)
            .collect()
    })
}

/// Gives the spec's process exactly `caps` (bounding, effective, permitted) and the
/// seccomp profile Docker pairs with them (it allows what some capabilities need).
pub fn set_capabilities(spec: &mut Spec, caps: &HashSet<Capability>) {
    if let Some(process) = spec.process_mut() {
        let mut c = LinuxCapabilities::default();
        c.set_bounding(Some(caps.clone()));
        c.set_effective(Some(caps.clone()));
        c.set_permitted(Some(caps.clone()));
        c.set_inheritable(None);
        c.set_ambient(None);
        process.set_capabilities(Some(c));
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(Some(docker_seccomp_profile(caps)));
    }
}

/// Sets the rlimit `typ` (`RLIMIT_NOFILE`...) to `soft`/`hard`, replacing any of its type.
pub fn set_rlimit(
    spec: &mut Spec,
    typ: &str,
    soft: u64,
    hard: u64,
) -> std::result::Result<(), String> {
    let typ: PosixRlimitType = serde_json::from_value(serde_json::Value::from(typ))
        .map_err(|_| format!("unknown rlimit {typ}"))?;
    let limit = PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()
        .map_err(|e| e.to_string())?;
    if let Some(process) = spec.process_mut() {
        let mut all = process.rlimits().clone().unwrap_or_default();
        all.retain(|r| r.typ() != typ);
        all.push(limit);
        process.set_rlimits(Some(all));
    }
    Ok(())
}

/// Sets the process's terminal's first size (`process.consoleSize`).
pub fn set_console_size(spec: &mut Spec, rows: u16, cols: u16) {
    if let Some(process) = spec.process_mut() {
        let size = oci_spec::runtime::BoxBuilder::default()
            .height(u64::from(rows))
            .width(u64::from(cols))
            .build();
        if let Ok(size) = size {
            process.set_console_size(Some(size));
        }
    }
}

/// Adds a tmpfs at `dest`: `noexec,nosuid,nodev` (Docker's `--tmpfs` defaults) unless
/// `options` say otherwise, then `options`.
pub fn add_tmpfs(spec: &mut Spec, dest: &str, options: &[String]) {
    let mut opts: Vec<&str> = Vec::new();
    for (default, opposite) in [("noexec", "exec"), ("nosuid", "suid"), ("nodev", "dev")] {
        if !options.iter().any(|o| o == opposite || o == default) {
            opts.push(default);
        }
    }
    opts.extend(options.iter().map(String::as_str));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(mount(dest, "tmpfs", "tmpfs", &opts));
    spec.set_mounts(Some(mounts));
}

/// Docker's default mounts: /proc, /dev, /dev/pts, /sys, /sys/fs/cgroup, /dev/mqueue,
/// /dev/shm.
pub fn docker_default_mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
        ),
    ]
}

/// Build the spec `docker run` would hand to runc for these options.
pub fn docker_default(o: &SpecOptions) -> Spec {
    let caps = docker_default_capabilities();

    let mut user = User::default();
    user.set_uid(o.uid);
    user.set_gid(o.gid);
    if !o.additional_gids.is_empty() {
        user.set_additional_gids(Some(o.additional_gids.clone()));
    }

    let mut env = o.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if o.terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if let Some(h) = &o.hostname {
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.push(format!("HOSTNAME={h}"));
        }
    }

    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps.clone()));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);

    // Every field is given, so the builders below cannot fail.
    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(1_048_576u64)
        .hard(1_048_576u64)
        .build()
        .unwrap_or_default();

    let mut process = Process::default();
    process.set_terminal(Some(o.terminal));
    process.set_user(user);
    process.set_args(Some(o.args.clone()));
    process.set_env(Some(env));
    process.set_cwd(o.cwd.clone().into());
    process.set_capabilities(Some(capabilities));
    process.set_rlimits(Some(vec![nofile]));
    process.set_no_new_privileges(Some(true));
    process.set_apparmor_profile(None);
    process.set_oom_score_adj(None);

    let mut root = Root::default();
    root.set_path(o.rootfs.clone());
    root.set_readonly(Some(o.readonly_rootfs));

    let mut mounts = docker_default_mounts();
    for b in &o.binds {
        let mut opts = vec!["rbind", "rprivate"];
        if b.readonly {
            opts.push("ro");
        }
        let mut m = mount(
            &b.destination.to_string_lossy(),
            "bind",
            &b.source.to_string_lossy(),
            &opts,
        );
        m.set_destination(b.destination.clone());
        mounts.push(m);
    }

    let mut ns_types = vec![
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Cgroup,
    ];
    if o.network_namespace {
        ns_types.push(LinuxNamespaceType::Network);
    }
    if o.user_namespace.is_some() {
        ns_types.push(LinuxNamespaceType::User);
    }
    let namespaces = ns_types
        .into_iter()
        .map(|t| {
            let mut n = LinuxNamespace::default();
            n.set_typ(t);
            n
        })
        .collect::<Vec<_>>();

    let mut resources = LinuxResources::default();
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(false);
    deny_all.set_access(Some("rwm".into()));
    resources.set_devices(Some(vec![deny_all]));
    if let Some(limit) = o.memory_limit {
        let mut m = LinuxMemory::default();
        m.set_limit(Some(limit));
        m.set_swap(Some(limit));
        resources.set_memory(Some(m));
    }
    if let Some(cpus) = o.cpus {
        let (quota, period) = cpus_to_quota(cpus);
        let mut c = LinuxCpu::default();
        c.set_quota(Some(quota));
        c.set_period(Some(period));
        resources.set_cpu(Some(c));
    }
    if let Some(p) = o.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        resources.set_pids(Some(pids));
    }

    let mut linux = oci_spec::runtime::Linux::default();
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(resources));
    linux.set_masked_paths(Some(masked_paths()));
    linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|s| s.to_string()).collect()));
    linux.set_seccomp(Some(docker_seccomp_profile(&caps)));
    linux.set_cgroups_path(o.cgroups_path.as_ref().map(PathBuf::from));
    if let Some((uids, gids)) = &o.user_namespace {
        let conv = |v: &[IdMap]| {
            v.iter()
                .map(|m| {
                    LinuxIdMappingBuilder::default()
                        .container_id(m.container_id)
                        .host_id(m.host_id)
                        .size(m.size)
                        .build()
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
        };
        linux.set_uid_mappings(Some(conv(uids)));
        linux.set_gid_mappings(Some(conv(gids)));
    }

    let mut spec = Spec::default();
    spec.set_version("1.0.2".into());
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_hostname(o.hostname.clone());
    spec.set_mounts(Some(mounts));
    spec.set_annotations(Some(o.annotations.clone()));
    spec.set_linux(Some(linux));
    spec
}

/// The Docker default capability mask, as it appears in `CapEff` of /proc/<pid>/status.
pub const DOCKER_DEFAULT_CAP_MASK: u64 = 0x0000_0000_a804_25fb;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_math() {
        assert_eq!(cpus_to_quota(1.5), (150_000, 100_000));
        assert_eq!(cpus_to_quota(0.5), (50_000, 100_000));
        assert_eq!(cpus_to_quota(2.0), (200_000, 100_000));
        assert_eq!(
            cpus_to_quota(0.001),
            (1000, 100_000),
            "kernel minimum is 1ms"
        );
    }

    #[test]
    fn default_caps_mask_matches_docker() {
        let mask = docker_default_capabilities()
            .iter()
            .map(|c| {
                let name = format!("CAP_{c}");
                let cap: caps::Capability = name.parse().unwrap();
                1u64 << cap.index()
            })
            .fold(0, |a, b| a | b);
        assert_eq!(mask, DOCKER_DEFAULT_CAP_MASK);
    }

    #[test]
    fn builds_docker_like_spec() {
        let spec = docker_default(&SpecOptions {
            args: vec!["echo".into(), "hi".into()],
            hostname: Some("box".into()),
            memory_limit: Some(1 << 26),
            cpus: Some(1.5),
            pids_limit: Some(64),
            readonly_rootfs: true,
            binds: vec![BindMount {
                source: "/srv".into(),
                destination: "/data".into(),
                readonly: true,
            }],
            ..Default::default()
        });
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["echo", "hi"]);
        assert!(p.env().as_ref().unwrap()[0].starts_with("PATH="));
        assert_eq!(p.no_new_privileges(), Some(true));
        let rl = &p.rlimits().as_ref().unwrap()[0];
        assert_eq!((rl.soft(), rl.hard()), (1_048_576, 1_048_576));
        let linux = spec.linux().as_ref().unwrap();
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().unwrap().limit(), Some(1 << 26));
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(150_000));
        assert_eq!(res.pids().unwrap().limit(), 64);
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(ns.contains(&LinuxNamespaceType::Network));
        assert!(!ns.contains(&LinuxNamespaceType::User));
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let bind = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == std::path::Path::new("/data"))
            .unwrap();
        assert!(bind.options().as_ref().unwrap().contains(&"ro".to_string()));
        // Survives a JSON round trip (what the engine writes to config.json).
        let json = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn seccomp_profile_blocks_namespace_and_key_syscalls() {
        let prof = docker_seccomp_profile(&docker_default_capabilities());
        let allowed_unconditionally: Vec<&String> = prof
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| {
                s.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
                    && s.args().is_none()
            })
            .flat_map(|s| s.names())
            .collect();
        for forbidden in [
            "unshare",
            "mount",
            "keyctl",
            "add_key",
            "reboot",
            "kexec_load",
            "setns",
            "clone",
        ] {
            assert!(
                !allowed_unconditionally.iter().any(|n| *n == forbidden),
                "{forbidden} must not be allowed"
            );
        }
        let mut with_admin = docker_default_capabilities();
        with_admin.insert(Capability::SysAdmin);
        let prof = docker_seccomp_profile(&with_admin);
        assert!(prof
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|s| s.names().contains(&"unshare".to_string())));
    }

    #[test]
    fn capability_arithmetic_follows_docker() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let base = docker_default_capabilities();
        let c = capabilities_with(&names(&["SYS_ADMIN"]), &names(&["cap_net_raw"])).unwrap();
        assert!(c.contains(&Capability::SysAdmin) && !c.contains(&Capability::NetRaw));
        assert_eq!(c.len(), base.len());
        // ALL is every capability this process holds (fewer than 41 on a host whose
        // bounding set is narrowed, as in many CI containers), less the drops.
        let held = held_capabilities();
        let c = capabilities_with(&names(&["ALL"]), &names(&["MKNOD"])).unwrap();
        let mut want = held.clone();
        want.remove(&Capability::Mknod);
        assert_eq!(c, want);
        let c = capabilities_with(&names(&["CHOWN"]), &names(&["all"])).unwrap();
        assert_eq!(c, [Capability::Chown].into_iter().collect());
        assert_eq!(all_capabilities().len(), 41);
        let e = capabilities_with(&names(&["CAP_BOGUS"]), &[]).unwrap_err();
        assert!(e.contains("CAP_BOGUS"), "{e}");
    }

    #[test]
    fn rlimits_and_tmpfs_are_set() {
        let mut spec = docker_default(&SpecOptions::default());
        set_rlimit(&mut spec, "RLIMIT_NOFILE", 10, 20).unwrap();
        set_rlimit(&mut spec, "RLIMIT_NPROC", 5, 5).unwrap();
        let rl = spec.process().as_ref().unwrap().rlimits().clone().unwrap();
        assert_eq!(rl.len(), 2);
        assert!(rl
            .iter()
            .any(|r| r.typ() == PosixRlimitType::RlimitNofile && r.soft() == 10 && r.hard() == 20));
        add_tmpfs(
            &mut spec,
            "/scratch",
            &["exec".to_string(), "size=1m".to_string()],
        );
        let m = spec.mounts().as_ref().unwrap().last().unwrap().clone();
        assert_eq!(m.destination(), &PathBuf::from("/scratch"));
        assert_eq!(
            m.options().clone().unwrap(),
            ["nosuid", "nodev", "exec", "size=1m"]
        );
    }
}
