//! The validated run request: the image's config merged with the user's flags, parsed
//! once at the boundary. Both backends take the same request.

use serde::{Deserialize, Serialize};

use super::{EngineError, Result};

/// Which kind of isolation runs the instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces and cgroups on the host kernel.
    #[default]
    Container,
    /// A KVM microVM with its own kernel.
    Vm,
}

impl Isolation {
    /// The word the CLI and `ps` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Vm => "vm",
        }
    }
}

/// A host path (`-v /host:/ctr[:ro]`, `--mount type=bind`) or a named volume (`-v
/// NAME:/ctr`, `--mount type=volume`) mounted into the instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Absolute host path (for a named volume, its directory once resolved).
    pub source: String,
    /// Absolute path inside.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// The named volume, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Made for this instance without a name (`--mount type=volume` without `source`):
    /// labelled so that `volume prune` takes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    /// A new volume is not filled with the image's content at its path (`-v
    /// NAME:/path:nocopy`, `--mount ...,volume-nocopy`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nocopy: bool,
}

impl Volume {
    /// Parses `-v SRC:DST[:MODES]`, or `-v /DST`: an anonymous volume (a new volume
    /// named by a new id, labelled so that `volume prune` takes it). MODES is a comma
    /// list of `ro`/`rw` and, for a volume, `nocopy`.
    pub fn parse(s: &str) -> Result<Volume> {
        let bad = |why: &str| {
            EngineError::InvalidFlag(format!("invalid volume specification {s:?}: {why}"))
        };
        let parts: Vec<&str> = s.split(':').collect();
        if let [target] = parts.as_slice() {
            if !target.starts_with('/') {
                return Err(bad(
                    "expected /host/path:/container/path[:ro], NAME:/path[:ro] or /path",
                ));
            }
            return Volume::anonymous(target, false).map_err(|why| bad(&why));
        }
        let (source, target, mode) = match parts.as_slice() {
            [src, dst] => (*src, *dst, "rw"),
            [src, dst, mode] => (*src, *dst, *mode),
            _ => return Err(bad("expected /host/path:/container/path[:ro]")),
        };
        let (mut read_only, mut nocopy) = (false, false);
        for m in mode.split(',') {
            match m {
                "ro" | "readonly" => read_only = true,
                "rw" => read_only = false,
                "nocopy" if !source.starts_with('/') => nocopy = true,
                "nocopy" => return Err(bad("nocopy is for volumes, not host paths")),
                _ => {
                    return Err(bad(&format!(
                        "unknown mode {m:?} (vessel takes ro, rw and nocopy)"
                    )))
                }
            }
        }
        if source.starts_with('/') {
            Volume::bind(source, target, read_only).map_err(|why| bad(&why))
        } else {
            Volume::named(source, target, read_only)
                .map(|v| Volume { nocopy, ..v })
                .map_err(|why| bad(&why))
        }
    }

    /// A bind mount of host path `source`, which must exist.
    pub fn bind(source: &str, target: &str, read_only: bool) -> Result<Volume, String> {
        check_target(target)?;
        if !source.starts_with('/') {
            return Err("the host path must be absolute".into());
        }
        if !std::path::Path::new(source).exists() {
            return Err(format!("the host path {source} does not exist"));
        }
        Ok(Volume {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
            name: None,
            anonymous: false,
            nocopy: false,
        })
    }

    /// A new anonymous volume at `target`.
    pub fn anonymous(target: &str, read_only: bool) -> Result<Volume, String> {
        Volume::named(&crate::names::new_id(), target, read_only).map(|v| Volume {
            anonymous: true,
            ..v
        })
    }

    /// Named volume `name` (made if missing when the instance is created).
    pub fn named(name: &str, target: &str, read_only: bool) -> Result<Volume, String> {
        check_target(target)?;
        if !crate::volumes::valid_name(name) {
            return Err(format!(
                "{name:?} is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
            ));
        }
        Ok(Volume {
            source: String::new(),
            target: target.to_string(),
            read_only,
            name: Some(name.to_string()),
            anonymous: false,
            nocopy: false,
        })
    }
}

/// What one `--mount` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    /// `type=bind` or `type=volume`.
    Volume(Volume),
    /// `type=tmpfs`.
    Tmpfs(Tmpfs),
}

impl Mount {
    /// Parses Docker's `--mount type=bind|volume|tmpfs,source=...,target=...[,readonly]`
    /// (also `src`, `destination`/`dst`, `ro`, `tmpfs-size`, `tmpfs-mode`). Options vessel
    /// does not implement (propagation, volume drivers and their options, ...) are refused
    /// by name.
    pub fn parse(s: &str) -> Result<Mount> {
        let bad = |why: String| EngineError::InvalidFlag(format!("invalid --mount {s:?}: {why}"));
        let (mut kind, mut source, mut target, mut read_only) = (None, None, None, false);
        let mut nocopy = None;
        let mut tmpfs_opts = Vec::new();
        for field in s.split(',').filter(|f| !f.is_empty()) {
            let (k, v) = match field.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (field.trim(), None),
            };
            match (k, v) {
                ("type", Some(t)) => kind = Some(t.to_string()),
                ("source" | "src", Some(v)) => source = Some(v.to_string()),
                ("target" | "destination" | "dst", Some(v)) => target = Some(v.to_string()),
                ("readonly" | "ro", None) => read_only = true,
                ("readonly" | "ro", Some(v)) => {
                    read_only = match v {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(bad(format!("{k}={v}: expected true or false"))),
                    }
                }
                ("volume-nocopy", None) => nocopy = Some(true),
                ("volume-nocopy", Some(v)) => {
                    nocopy = Some(match v {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(bad(format!("{k}={v}: expected true or false"))),
                    })
                }
                ("tmpfs-size", Some(v)) => tmpfs_opts.push(format!("size={v}")),
                ("tmpfs-mode", Some(v)) => tmpfs_opts.push(format!("mode={v}")),
                ("bind-propagation", Some("rprivate")) => {}
                _ => {
                    return Err(bad(format!(
                        "{field:?} is not supported (vessel takes type, source, target, readonly, volume-nocopy, tmpfs-size, tmpfs-mode)"
                    )))
                }
            }
        }
        let target = target.ok_or_else(|| bad("target is required".into()))?;
        let kind = kind.as_deref().unwrap_or("volume");
        if nocopy.is_some() && kind != "volume" {
            return Err(bad(format!(
                "volume-nocopy is for type=volume, not type={kind}"
            )));
        }
        let nocopy = nocopy.unwrap_or(false);
        match kind {
            "bind" => {
                let source =
                    source.ok_or_else(|| bad("source is required for type=bind".into()))?;
                Volume::bind(&source, &target, read_only)
                    .map(Mount::Volume)
                    .map_err(bad)
            }
            "volume" => match source {
                Some(name) => Volume::named(&name, &target, read_only),
                None => Volume::anonymous(&target, read_only),
            }
            .map(|v| Mount::Volume(Volume { nocopy, ..v }))
            .map_err(bad),
            "tmpfs" => {
                if source.is_some() {
                    return Err(bad("type=tmpfs takes no source".into()));
                }
                if read_only {
                    tmpfs_opts.push("ro".into());
                }
                let spec = format!("{target}:{}", tmpfs_opts.join(","));
                Tmpfs::parse(&spec).map(Mount::Tmpfs)
            }
            other => Err(bad(format!(
                "type={other} is not supported (bind, volume or tmpfs)"
            ))),
        }
    }
}

fn check_target(target: &str) -> Result<(), String> {
    if !target.starts_with('/') || target.split('/').any(|c| c == "..") {
        return Err("the container path must be absolute, without '..'".into());
    }
    Ok(())
}

/// Everything needed to run an instance, resolved from flags and the image config.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRequest {
    /// Container or VM.
    pub isolation: Isolation,
    /// The full argv (entrypoint + command), never empty.
    pub args: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
    /// Working directory inside.
    pub workdir: String,
    /// `user[:group]` as given (resolved against the image's /etc/passwd at start).
    pub user: String,
    /// Hostname (defaults to the id's first 12 digits).
    pub hostname: String,
    /// Allocate a terminal.
    pub tty: bool,
    /// The terminal's first size, rows and columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<(u16, u16)>,
    /// Keep stdin open.
    pub interactive: bool,
    /// Remove when it exits.
    pub auto_remove: bool,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// Bind mounts.
    pub volumes: Vec<Volume>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU limit in CPUs.
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
    /// Run a reaping init as PID 1.
    pub init: bool,
    /// Private user namespace (root inside maps to an unprivileged range).
    pub userns: bool,
    /// Signal `stop` sends first.
    pub stop_signal: i32,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: u32,
    /// VM only: the guest kernel to boot instead of the default one.
    #[serde(default)]
    pub kernel: Option<std::path::PathBuf>,
    /// VM only: show the guest's console on the attached terminal.
    #[serde(default)]
    pub console: bool,
    /// `--network`: none, host, or a bridge network (records from before networking
    /// had none: loopback only).
    #[serde(default)]
    pub network: vessel_network::Mode,
    /// `-p`: ports published on the host.
    #[serde(default)]
    pub ports: Vec<vessel_network::PortMap>,
    /// The instance's address and ports on its network, decided at create.
    #[serde(default)]
    pub attachment: Option<vessel_network::Attachment>,
    /// `--network-alias`: more names of the instance on its (user-defined) network.
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// The networks it joined beside its first (`network connect`, or more than one
    /// network at create), each through an interface of its own (`eth1`, ...). A
    /// container's only: a microVM has one NIC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_networks: Vec<vessel_network::Attachment>,
    /// `--ip`: the address asked for on its first network (else one is handed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// The networks to join at create beside the first: made into `more_networks` by
    /// create, never recorded.
    #[serde(skip)]
    pub join: Vec<Join>,
    /// `--log-driver`, `--log-opt`: where output goes and how much of it is kept
    /// (records from before logs were bounded get the default bound).
    #[serde(default)]
    pub log: LogConfig,
    /// `-l`/`--label` over the image's labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--add-host`: extra lines of /etc/hosts.
    #[serde(default)]
    pub extra_hosts: Vec<ExtraHost>,
    /// `--dns`: the nameservers of /etc/resolv.conf (empty: the host's).
    #[serde(default)]
    pub dns: Vec<std::net::IpAddr>,
    /// `--cap-add` (container only), as given.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// `--cap-drop` (container only), as given.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--ulimit` (container only).
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
    /// `--tmpfs` (container only).
    #[serde(default)]
    pub tmpfs: Vec<Tmpfs>,
    /// `--dns-search`: the search domains of /etc/resolv.conf (empty: the host's).
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--privileged`, `--device`, `--security-opt`, ... (container only).
    #[serde(default)]
    pub access: crate::access::Access,
    /// `--restart`.
    #[serde(default)]
    pub restart: crate::restart::RestartPolicy,
    /// The health check (the image's under `--health-*`); `None`: none at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::health::Healthcheck>,
    /// The ports it exposes (the image's `ExposedPorts`, `--expose`, and those `-p`
    /// publishes), as `PORT/PROTO`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed: Vec<String>,
    /// `-P`: every exposed port was published on a random host port.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish_all: bool,
    /// A build step in a microVM: when its command exits 0, the guest sends what it
    /// changed as an OCI layer, which the VM backend writes to `changes.tar` in the
    /// instance's directory (containers leave their changes in `upper`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub export_changes: bool,
}

/// One more network to join at create (`--network` again; another endpoint of the API's
/// create).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Join {
    /// The network's name.
    pub network: String,
    /// The instance's other names on it.
    pub aliases: Vec<String>,
    /// The address asked for on it.
    pub ip: Option<std::net::Ipv4Addr>,
}

impl RunRequest {
    /// Every network the instance is on: its first, then those it joined later.
    pub fn attachments(&self) -> impl Iterator<Item = &vessel_network::Attachment> + Clone {
        self.attachment.iter().chain(&self.more_networks)
    }

    /// Its published ports as they are: with the host ports allocated at create (a random
    /// one, `-p 80` or `-P`, is 0 in `ports` until then).
    pub fn published(&self) -> &[vessel_network::PortMap] {
        self.attachment.as_ref().map_or(&self.ports, |a| &a.ports)
    }

    /// Its names on the network of `att` beside its own: `--network-alias` on its first
    /// network, the aliases it joined with on the others.
    pub fn aliases_on<'a>(&'a self, att: &'a vessel_network::Attachment) -> &'a [String] {
        if self.attachment.as_ref() == Some(att) {
            &self.network_aliases
        } else {
            &att.aliases
        }
    }

    /// A request to run `args` with nothing else asked for: no limits, no network, no
    /// volumes, the image's defaults left to the caller (the bundle and build front ends
    /// fill in what they have over this).
    pub fn plain(isolation: Isolation, args: Vec<String>) -> RunRequest {
        RunRequest {
            isolation,
            args,
            env: Vec::new(),
            workdir: "/".into(),
            user: String::new(),
            hostname: String::new(),
            tty: false,
            console_size: None,
            interactive: false,
            auto_remove: false,
            read_only: false,
            volumes: Vec::new(),
            memory: None,
            cpus: None,
            pids_limit: None,
            init: false,
            userns: false,
            stop_signal: libc::SIGTERM,
            stop_timeout: 10,
            kernel: None,
            console: false,
            network: vessel_network::Mode::None,
            ports: Vec::new(),
            attachment: None,
            network_aliases: Vec::new(),
            more_networks: Vec::new(),
            ip: None,
            join: Vec::new(),
            log: LogConfig::default(),
            labels: Default::default(),
            extra_hosts: Vec::new(),
            dns: Vec::new(),
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            ulimits: Vec::new(),
            tmpfs: Vec::new(),
            dns_search: Vec::new(),
            access: Default::default(),
            restart: Default::default(),
            healthcheck: None,
            exposed: Vec::new(),
            publish_all: false,
            export_changes: false,
        }
    }
}

/// `--add-host NAME:IP`: a line of /etc/hosts. `host-gateway` is the instance's gateway
/// on its bridge network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    /// The host name.
    pub name: String,
    /// An address, or `host-gateway`.
    pub ip: String,
}

impl ExtraHost {
    /// Parses `NAME:IP` (or Docker's newer `NAME=IP`); IPv6 may be bracketed.
    pub fn parse(s: &str) -> Result<ExtraHost> {
        let bad = |why: &str| EngineError::InvalidFlag(format!("--add-host {s:?}: {why}"));
        let (name, ip) = match (s.split_once('='), s.split_once(':')) {
            (Some((n, ip)), _) => (n, ip),
            (None, Some((n, ip))) => (n, ip),
            _ => return Err(bad("expected NAME:IP")),
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(bad("invalid host name"));
        }
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        if ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("invalid IP address"));
        }
        Ok(ExtraHost {
            name: name.to_string(),
            ip: ip.to_string(),
        })
    }
}

/// `--ulimit NAME=SOFT[:HARD]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Docker's name (`nofile`, `nproc`, ...).
    pub name: String,
    /// Soft limit (`u64::MAX` is unlimited).
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Docker's ulimit names and the OCI rlimit each is.
pub const ULIMITS: &[(&str, &str)] = &[
    ("as", "RLIMIT_AS"),
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

impl Ulimit {
    /// Parses `NAME=SOFT[:HARD]`; `-1` is unlimited; one value sets both.
    pub fn parse(s: &str) -> Result<Ulimit> {
        let bad = |why: String| EngineError::InvalidFlag(format!("--ulimit {s:?}: {why}"));
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SOFT[:HARD]".into()))?;
        if !ULIMITS.iter().any(|(n, _)| *n == name) {
            let names: Vec<&str> = ULIMITS.iter().map(|(n, _)| *n).collect();
            return Err(bad(format!(
                "unknown limit {name:?} (one of {})",
                names.join(", ")
            )));
        }
        let value = |v: &str| -> Result<u64> {
            match v {
                "-1" | "unlimited" => Ok(u64::MAX),
                v => v
                    .parse::<u64>()
                    .map_err(|_| bad(format!("invalid value {v:?}"))),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((a, b)) => (value(a)?, value(b)?),
            None => (value(values)?, value(values)?),
        };
        if soft > hard {
            return Err(bad(
                "the soft limit must be less than or equal to the hard limit".into(),
            ));
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }
}

/// `--tmpfs PATH[:OPTIONS]`: a tmpfs mounted at `path`, `noexec,nosuid,nodev` unless
/// the options say otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    /// Where, inside the instance.
    pub path: String,
    /// Mount options as given (`size=64m,mode=1777`...).
    pub options: Vec<String>,
}

impl Tmpfs {
    /// Parses `PATH[:OPTIONS]`.
    pub fn parse(s: &str) -> Result<Tmpfs> {
        let bad = |why: &str| EngineError::InvalidFlag(format!("--tmpfs {s:?}: {why}"));
        let (path, opts) = s.split_once(':').unwrap_or((s, ""));
        if !path.starts_with('/') || path == "/" {
            return Err(bad("the path must be absolute and not /"));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(bad("the path must not contain .."));
        }
        let options: Vec<String> = opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        for o in &options {
            let key = o.split('=').next().unwrap_or_default();
            const KNOWN: &[&str] = &[
                "size",
                "mode",
                "uid",
                "gid",
                "nr_inodes",
                "nr_blocks",
                "ro",
                "rw",
                "exec",
                "noexec",
                "suid",
                "nosuid",
                "dev",
                "nodev",
                "atime",
                "noatime",
                "relatime",
                "norelatime",
                "strictatime",
                "nostrictatime",
                "diratime",
                "nodiratime",
                "sync",
                "async",
                "dirsync",
                "mand",
                "nomand",
                "huge",
                "mpol",
            ];
            if !KNOWN.contains(&key) {
                return Err(bad(&format!("unknown tmpfs option {o:?}")));
            }
        }
        Ok(Tmpfs {
            path: path.to_string(),
            options,
        })
    }
}

/// `--log-driver`: what is done with an instance's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    /// Docker's `json-file`: JSON lines in `log.json`, rotated.
    JsonFile,
    /// Nothing is kept; `vessel logs` has nothing to read.
    None,
}

impl LogDriver {
    /// The name Docker uses.
    pub fn as_str(self) -> &'static str {
        match self {
            LogDriver::JsonFile => "json-file",
            LogDriver::None => "none",
        }
    }
}

/// The logging configuration of an instance, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// The driver.
    pub driver: LogDriver,
    /// The options in force, as `inspect` shows them (`max-size`, `max-file`).
    pub options: std::collections::BTreeMap<String, String>,
    /// What `max-size` and `max-file` mean for the writer.
    pub rotation: vessel_shim::logs::Rotation,
}

impl Default for LogConfig {
    /// json-file with the default bound ([`vessel_shim::logs::Rotation::DEFAULT`]).
    fn default() -> Self {
        LogConfig {
            driver: LogDriver::JsonFile,
            options: [("max-size", "20m"), ("max-file", "5")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            rotation: vessel_shim::logs::Rotation::DEFAULT,
        }
    }
}

impl LogConfig {
    /// Parses `--log-driver` (json-file when absent) and the `--log-opt KEY=VALUE`s, as
    /// Docker's json-file driver reads them: `max-size` a positive size with an optional
    /// k, m or g (decimal units, as Docker's) or -1 for no limit; `max-file` at least 1
    /// and only with a `max-size`. With neither, the default bound applies.
    pub fn parse(driver: Option<&str>, opts: &[String]) -> Result<LogConfig> {
        let driver = match driver.unwrap_or("json-file") {
            "json-file" => LogDriver::JsonFile,
            "none" => LogDriver::None,
            other => {
                return Err(EngineError::InvalidFlag(format!(
                    "invalid --log-driver {other:?}: vessel supports json-file and none"
                )))
            }
        };
        let mut options = std::collections::BTreeMap::new();
        for o in opts {
            let Some((k, v)) = o.split_once('=') else {
                return Err(EngineError::InvalidFlag(format!(
                    "invalid --log-opt {o:?}: expected KEY=VALUE"
                )));
            };
            match (driver, k) {
                (LogDriver::JsonFile, "max-size" | "max-file") => {}
                (LogDriver::JsonFile, _) => {
                    return Err(EngineError::InvalidFlag(format!(
                        "unknown log opt {k:?} for the json-file log driver (--log-opt {o:?}): vessel supports max-size and max-file"
                    )))
                }
                (LogDriver::None, _) => {
                    return Err(EngineError::InvalidFlag(format!(
                        "unknown log opt {k:?} for the none log driver (--log-opt {o:?}): it takes none"
                    )))
                }
            }
            options.insert(k.to_string(), v.to_string());
        }
        if driver == LogDriver::None {
            return Ok(LogConfig {
                driver,
                options,
                rotation: vessel_shim::logs::Rotation::UNLIMITED,
            });
        }
        if options.is_empty() {
            return Ok(LogConfig::default());
        }
        let max_size = match options.get("max-size") {
            Some(v) => parse_log_size(v)?,
            None => None,
        };
        let max_files = match options.get("max-file") {
            None => 1,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(EngineError::InvalidFlag(format!(
                    "invalid --log-opt max-file={v}: expected a whole number of files, at least 1"
                )))
                }
            },
        };
        if max_files > 1 && max_size.is_none() {
            return Err(EngineError::InvalidFlag(format!(
                "--log-opt max-file={max_files} needs a max-size (files are rotated when they reach it)"
            )));
        }
        Ok(LogConfig {
            driver,
            options,
            rotation: vessel_shim::logs::Rotation {
                max_size,
                max_files,
            },
        })
    }
}

/// Parses json-file's `max-size`: `-1` (no limit) or a positive size in bytes with an
/// optional decimal unit (`100k`, `20m`, `1.5g`, `10MB`), as Docker's `FromHumanSize`.
fn parse_log_size(v: &str) -> Result<Option<u64>> {
    if v == "-1" {
        return Ok(None);
    }
    let bad = || {
        EngineError::InvalidFlag(format!(
            "invalid --log-opt max-size={v}: expected a size like 100k, 20m or 1g, or -1 for no limit"
        ))
    };
    let t = v.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('g') => (&t[..t.len() - 1], 1e9),
        Some(c) if c.is_ascii_digit() => (t, 1.0),
        _ => return Err(bad()),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = n * mult;
    if !(1.0..=1e15).contains(&bytes) {
        return Err(bad());
    }
    Ok(Some(bytes as u64))
}

/// Parses Docker-style sizes: `64m`, `1g`, `512k`, `1048576`, `1.5g` (binary units).
pub fn parse_size(flag: &str, s: &str) -> Result<u64> {
    let bad = || {
        EngineError::InvalidFlag(format!(
            "invalid value {s:?} for {flag}: expected a size like 64m, 1g, 512k or bytes"
        ))
    };
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() => (t, 1),
        _ => return Err(bad()),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 {
        return Err(bad());
    }
    let bytes = v * mult as f64;
    if bytes > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Parses a signal by name (`TERM`, `SIGTERM`, `sigterm`) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| EngineError::InvalidFlag(format!("invalid signal {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("--memory", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("--memory", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("--memory", "512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("--memory", "1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("--memory", "4096").unwrap(), 4096);
        assert_eq!(parse_size("--memory", "64mb").unwrap(), 64 << 20);
        for bad in ["12zz", "", "m", "-1m", "0", "nan", "infg"] {
            let e = parse_size("--memory", bad).unwrap_err().to_string();
            assert!(e.contains("--memory"), "{bad}: {e}");
        }
    }

    #[test]
    fn log_options() {
        use vessel_shim::logs::Rotation;
        let opts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let d = LogConfig::parse(None, &[]).unwrap();
        assert_eq!(d, LogConfig::default());
        assert_eq!(d.rotation, Rotation::DEFAULT);
        let c =
            LogConfig::parse(Some("json-file"), &opts(&["max-size=100k", "max-file=2"])).unwrap();
        assert_eq!(
            c.rotation,
            Rotation {
                max_size: Some(100_000),
                max_files: 2
            }
        );
        assert_eq!(c.options["max-size"], "100k");
        let c = LogConfig::parse(None, &opts(&["max-size=1.5MB"])).unwrap();
        assert_eq!(c.rotation.max_size, Some(1_500_000));
        assert_eq!(c.rotation.max_files, 1);
        let c = LogConfig::parse(None, &opts(&["max-size=-1"])).unwrap();
        assert_eq!(c.rotation, Rotation::UNLIMITED);
        assert_eq!(
            LogConfig::parse(Some("none"), &[]).unwrap().driver,
            LogDriver::None
        );
        for (driver, bad, needle) in [
            (None, "max-size=bogus", "bogus"),
            (None, "max-size=0", "max-size=0"),
            (None, "max-size=-5m", "-5m"),
            (None, "foo=bar", "foo"),
            (None, "compress=true", "compress"),
            (None, "max-size", "max-size"),
            (None, "max-file=0", "max-file=0"),
            (None, "max-file=3", "needs a max-size"),
            (Some("none"), "max-size=1m", "none"),
            (Some("syslog"), "max-size=1m", "syslog"),
        ] {
            let e = LogConfig::parse(driver, &opts(&[bad]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("HUP").unwrap(), 1);
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("15").unwrap(), 15);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn volumes() {
        let v = Volume::parse("/tmp:/data:ro").unwrap();
        assert_eq!(
            (v.source.as_str(), v.target.as_str(), v.read_only),
            ("/tmp", "/data", true)
        );
        // A word that is no absolute path is a named volume; anything else with a
        // slash, or a name Docker would refuse, is an error.
        let named = Volume::parse("rel:/data").unwrap();
        assert_eq!(named.name.as_deref(), Some("rel"));
        assert!(
            named.source.is_empty(),
            "resolved only when the instance is created"
        );
        assert!(Volume::parse("./rel:/data").is_err());
        assert!(Volume::parse("../../etc:/data").is_err());
        assert!(Volume::parse("a:/data").is_err());
        assert!(Volume::parse("/tmp:/../x").is_err());
        assert!(Volume::parse("/tmp:/x:zz").is_err());
        assert!(Volume::parse("/does/not/exist:/x").is_err());
    }

    #[test]
    fn extra_hosts() {
        let h = ExtraHost::parse("db:10.0.0.2").unwrap();
        assert_eq!((h.name.as_str(), h.ip.as_str()), ("db", "10.0.0.2"));
        assert_eq!(
            ExtraHost::parse("v6:[2001:db8::1]").unwrap().ip,
            "2001:db8::1"
        );
        assert_eq!(
            ExtraHost::parse("v6:2001:db8::1").unwrap().ip,
            "2001:db8::1"
        );
        assert_eq!(
            ExtraHost::parse("gw=host-gateway").unwrap().ip,
            "host-gateway"
        );
        for bad in ["db", ":1.2.3.4", "db:nope", "a b:1.2.3.4", "db:1.2.3"] {
            assert!(ExtraHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ulimits() {
        let u = Ulimit::parse("nofile=1024:2048").unwrap();
        assert_eq!((u.soft, u.hard), (1024, 2048));
        let u = Ulimit::parse("nproc=50").unwrap();
        assert_eq!((u.soft, u.hard), (50, 50));
        assert_eq!(Ulimit::parse("core=-1").unwrap().hard, u64::MAX);
        for bad in [
            "nofile",
            "nofile=",
            "nofile=2:1",
            "bogus=1",
            "nofile=x",
            "nofile=1:2:3",
        ] {
            assert!(Ulimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfs() {
        let t = Tmpfs::parse("/run/x:size=64m,mode=1777").unwrap();
        assert_eq!(t.path, "/run/x");
        assert_eq!(t.options, ["size=64m", "mode=1777"]);
        assert!(Tmpfs::parse("/data").unwrap().options.is_empty());
        for bad in ["", "/", "rel", "/a/../b", "/x:bogus=1"] {
            assert!(Tmpfs::parse(bad).is_err(), "{bad}");
        }
    }
}
