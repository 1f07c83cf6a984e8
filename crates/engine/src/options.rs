//! Docker-shaped options of a new instance and the request built from them with the
//! image's config: what `docker run`/`docker create` and the Engine API's container
//! create decide, in one place for every front end.

use std::path::{Path, PathBuf};

use crate::request::{
    parse_signal, parse_size, ExtraHost, Isolation, LogConfig, Mount, RunRequest, Tmpfs, Ulimit,
    Volume,
};
use crate::{EngineError, Result};

/// The options of `run`/`create`, as given (each parsed and checked by
/// [`build_request`]).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Container or microVM.
    pub isolation: Isolation,
    /// `-i`: keep stdin open.
    pub interactive: bool,
    /// `-t`: a terminal.
    pub tty: bool,
    /// The terminal's first size, rows and columns (the API's `ConsoleSize`); needs
    /// `tty`.
    pub console_size: Option<(u16, u16)>,
    /// `--rm`: removed when it exits.
    pub rm: bool,
    /// `-e KEY=VALUE` or `-e KEY` (the caller's value).
    pub env: Vec<String>,
    /// `--env-file`: files of `KEY=VALUE` lines, read before `-e`.
    pub env_files: Vec<PathBuf>,
    /// `-w`: working directory (the image's, else `/`).
    pub workdir: Option<String>,
    /// `-u`: user (the image's, else root).
    pub user: Option<String>,
    /// `-h`: host name (else the id's first 12 digits).
    pub hostname: Option<String>,
    /// `-v SRC:DST[:ro]`.
    pub volumes: Vec<String>,
    /// Paths that get a new anonymous volume unless something else is mounted there
    /// (the API's `Config.Volumes`, what `docker run -v /path` sends).
    pub anonymous_volumes: Vec<String>,
    /// `--mount type=bind|volume|tmpfs,...`.
    pub mounts: Vec<String>,
    /// `--read-only`.
    pub read_only: bool,
    /// `-m`: memory limit (`512m`, ...).
    pub memory: Option<String>,
    /// `--cpus`: CPU quota, a positive number.
    pub cpus: Option<String>,
    /// `--pids-limit` (`-1` unlimited).
    pub pids_limit: Option<i64>,
    /// `--init`: `vessel-init` as PID 1.
    pub init: bool,
    /// `--userns`: a user namespace of its own (containers only).
    pub userns: bool,
    /// `--network` (default `bridge`).
    pub network: Option<String>,
    /// `--network-alias`: more names on a user-defined network.
    pub network_aliases: Vec<String>,
    /// More bridge networks to join at create beside `network` (`--network` given more
    /// than once; more endpoints in the API's create), each with its aliases and address.
    pub more_networks: Vec<crate::request::Join>,
    /// `--ip`: the address on `network`.
    pub ip: Option<String>,
    /// `-p`: published ports.
    pub publish: Vec<String>,
    /// `--entrypoint` (empty: none; replaces the image's and discards its Cmd).
    pub entrypoint: Option<String>,
    /// `--stop-signal` (the image's, else SIGTERM).
    pub stop_signal: Option<String>,
    /// `--kernel` (microVMs only).
    pub kernel: Option<PathBuf>,
    /// `--console`: the guest console to the log (microVMs).
    pub console: bool,
    /// `--stop-timeout` seconds (default 10).
    pub stop_timeout: Option<u32>,
    /// `--log-driver`.
    pub log_driver: Option<String>,
    /// `--log-opt KEY=VALUE`.
    pub log_opts: Vec<String>,
    /// `-l KEY=VALUE`, over the image's labels.
    pub labels: Vec<String>,
    /// `--add-host NAME:IP`.
    pub add_hosts: Vec<String>,
    /// `--dns IP`.
    pub dns: Vec<String>,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--ulimit NAME=SOFT[:HARD]`.
    pub ulimits: Vec<String>,
    /// `--tmpfs PATH[:OPTIONS]`.
    pub tmpfs: Vec<String>,
    /// `--restart`: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub restart: Option<String>,
    /// `--label-file`: files of `KEY=VALUE` lines, read before `-l`.
    pub label_files: Vec<PathBuf>,
    /// `--dns-search DOMAIN`.
    pub dns_search: Vec<String>,
    /// `--privileged`, `--device`, `--security-opt`, `--sysctl`, `--pid`, `--ipc`, ...
    pub access: crate::access::AccessOptions,
    /// `--health-*`, `--no-healthcheck` (the API's `Config.Healthcheck`).
    pub health: crate::health::HealthOptions,
    /// `--expose PORT[/PROTO]` or a range `FIRST-LAST[/PROTO]`.
    pub expose: Vec<String>,
    /// `-P`: publish every exposed port on a random host port.
    pub publish_all: bool,
    /// The command (replaces the image's Cmd).
    pub command: Vec<String>,
}

/// Builds the request of a new instance (id `id`) from the options and the image's
/// config, as Docker does: the entrypoint and command, the environment (the image's,
/// then `--env-file`s, then `-e`s, each replacing a variable of the same name), the user,
/// the working directory, and every check that the options go together (a microVM takes
/// no `--userns`, `--cap-add`, ... ). A variable named without a value takes the caller's
/// value from `caller_env` (the CLI's environment), or is dropped if it has none.
pub fn build_request(
    a: &RunOptions,
    config: &oci_spec::image::ImageConfiguration,
    image_health: Option<&serde_json::Value>,
    id: &str,
    caller_env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunRequest> {
    if a.userns && a.isolation == Isolation::Vm {
        // The guest kernel is the boundary; its root is no host uid at all.
        return Err(EngineError::InvalidFlag(
            "--userns applies to containers: a microVM's root is confined by its own kernel, not by a user namespace".into(),
        ));
    }
    match a.console_size {
        Some(_) if !a.tty => {
            return Err(EngineError::InvalidFlag(
                "a console size is for a terminal: it needs a TTY (-t)".into(),
            ))
        }
        Some((0, _) | (_, 0)) => {
            return Err(EngineError::InvalidFlag(
                "a console size needs at least 1 row and 1 column".into(),
            ))
        }
        _ => {}
    }
    let c = config.config().clone().unwrap_or_default();
    let entrypoint: Vec<String> = match &a.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => c.entrypoint().clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if !a.command.is_empty() {
        a.command.clone()
    } else if a.entrypoint.is_some() {
        Vec::new() // Docker: --entrypoint discards the image's Cmd
    } else {
        c.cmd().clone().unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(EngineError::InvalidFlag(
            "no command specified: the image has no Cmd or Entrypoint; give one".into(),
        ));
    }
    let mut env: Vec<String> = c.env().clone().unwrap_or_default();
    // --env-file entries first, then -e: the flags win, as in Docker.
    let mut given: Vec<String> = Vec::new();
    for f in &a.env_files {
        given.extend(read_env_file(f)?);
    }
    given.extend(a.env.iter().cloned());
    for e in &given {
        let kv = match e.split_once('=') {
            Some(_) => e.clone(),
            None => match caller_env(e) {
                Some(v) => format!("{e}={v}"),
                None => continue, // Docker drops unset variables named without a value
            },
        };
        let key = kv.split('=').next().unwrap_or_default().to_string();
        if key.is_empty() {
            return Err(EngineError::InvalidFlag(format!(
                "invalid environment variable {e:?}"
            )));
        }
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    let mut volumes = a
        .volumes
        .iter()
        .map(|v| Volume::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut mount_tmpfs = Vec::new();
    for m in &a.mounts {
        match Mount::parse(m)? {
            Mount::Volume(v) => volumes.push(v),
            Mount::Tmpfs(t) => mount_tmpfs.push(t),
        }
    }
    let tmpfs: Vec<Tmpfs> = a
        .tmpfs
        .iter()
        .map(|t| Tmpfs::parse(t))
        .chain(mount_tmpfs.into_iter().map(Ok))
        .collect::<Result<_, _>>()?;
    let mut seen = std::collections::HashSet::new();
    let targets = volumes.iter().map(|v| v.target.as_str());
    if let Some(dup) = targets
        .chain(tmpfs.iter().map(|t| t.path.as_str()))
        .find(|t| !seen.insert(t.trim_end_matches('/').to_string()))
    {
        return Err(EngineError::InvalidFlag(format!(
            "duplicate mount point: {dup}"
        )));
    }
    // As Docker's: a path already mounted otherwise gets no anonymous volume.
    for path in &a.anonymous_volumes {
        if seen.insert(path.trim_end_matches('/').to_string()) {
            volumes.push(Volume::anonymous(path, false).map_err(|why| {
                EngineError::InvalidFlag(format!("invalid volume {path:?}: {why}"))
            })?);
        }
    }
    // The image's VOLUMEs, as Docker's: a new anonymous volume each where nothing else is
    // mounted, filled with the image's content there when the instance is created. A
    // microVM keeps those paths on its own writable disk, which is as much its own.
    if a.isolation == Isolation::Container {
        let mut declared: Vec<&String> = c.volumes().iter().flatten().collect();
        declared.sort();
        for path in declared {
            if seen.insert(path.trim_end_matches('/').to_string()) {
                volumes.push(Volume::anonymous(path, false).map_err(|why| {
                    EngineError::InvalidFlag(format!("the image's VOLUME {path:?}: {why}"))
                })?);
            }
        }
    }
    let memory = a
        .memory
        .as_deref()
        .map(|m| parse_size("--memory", m))
        .transpose()?;
    if memory.is_some_and(|m| m < 6 << 20) {
        return Err(EngineError::InvalidFlag(
            "--memory: the minimum allowed is 6m".into(),
        ));
    }
    let cpus = match &a.cpus {
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => Some(v),
            _ => {
                return Err(EngineError::InvalidFlag(format!(
                    "invalid value {s:?} for --cpus: expected a positive number like 0.5"
                )))
            }
        },
        None => None,
    };
    if a.pids_limit.is_some_and(|p| p == 0 || p < -1) {
        return Err(EngineError::InvalidFlag(
            "--pids-limit must be positive (or -1 for unlimited)".into(),
        ));
    }
    // Both isolations default to the `bridge` network, as Docker does.
    let network = vessel_network::Mode::parse(a.network.as_deref().unwrap_or("bridge"))?;
    let mut ports = a
        .publish
        .iter()
        .map(|p| vessel_network::PortMap::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    // Exposed: the image's, then --expose, then what -p publishes (Docker's order).
    let mut exposed: Vec<(u16, vessel_network::Proto)> = Vec::new();
    let mut expose = |p: (u16, vessel_network::Proto)| {
        if !exposed.contains(&p) {
            exposed.push(p);
        }
    };
    for e in c.exposed_ports().iter().flatten() {
        // Image metadata: a port vessel cannot publish (sctp) stays out of the list,
        // unless -P would have to publish it.
        match parse_expose("the image's ExposedPorts", e) {
            Ok(ports) => ports.into_iter().for_each(&mut expose),
            Err(e) if a.publish_all => return Err(e),
            Err(_) => {}
        }
    }
    for e in &a.expose {
        for p in parse_expose("--expose", e)? {
            expose(p);
        }
    }
    for p in &ports {
        expose((p.container_port, p.proto));
    }
    if a.publish_all {
        // Every exposed port not published already gets a random host port.
        for &(port, proto) in &exposed {
            if !ports
                .iter()
                .any(|p| p.container_port == port && p.proto == proto)
            {
                ports.push(vessel_network::PortMap {
                    host_ip: None,
                    host_port: 0,
                    container_port: port,
                    proto,
                });
            }
        }
    }
    if !ports.is_empty() && !matches!(network, vessel_network::Mode::Bridge(_)) {
        return Err(EngineError::InvalidFlag(format!(
            "-p/-P needs a bridge network; --network {} has no ports to publish",
            network.as_str()
        )));
    }
    let mut join: Vec<crate::request::Join> = Vec::new();
    for j in &a.more_networks {
        let name = &j.network;
        let more = vessel_network::Mode::parse(name)?;
        let vessel_network::Mode::Bridge(more) = more else {
            return Err(EngineError::InvalidFlag(format!(
                "--network {name}: host and none cannot be combined with other networks"
            )));
        };
        if !matches!(network, vessel_network::Mode::Bridge(_)) {
            return Err(EngineError::InvalidFlag(format!(
                "--network {}: host and none cannot be combined with other networks",
                network.as_str()
            )));
        }
        if a.isolation == Isolation::Vm {
            return Err(EngineError::InvalidFlag(format!(
                "--network {more}: a microVM has one NIC, on one network"
            )));
        }
        if network == vessel_network::Mode::Bridge(more.clone())
            || join.iter().any(|k| k.network == more)
        {
            return Err(EngineError::InvalidFlag(format!(
                "--network {more} is given twice"
            )));
        }
        join.push(crate::request::Join {
            network: more,
            ..j.clone()
        });
    }
    let ip =
        a.ip.as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<std::net::Ipv4Addr>().map_err(|_| {
                    EngineError::InvalidFlag(format!("invalid IPv4 address for --ip: {s}"))
                })
            })
            .transpose()?;
    if a.isolation == Isolation::Vm && network == vessel_network::Mode::Host {
        return Err(EngineError::InvalidFlag(
            "--network host: a VM has its own kernel and cannot share the host's network stack; use a bridge network (the default) or --network none".into(),
        ));
    }
    let stop_signal = match a.stop_signal.as_deref().or(c.stop_signal().as_deref()) {
        Some(s) => parse_signal(s)?,
        None => libc::SIGTERM,
    };
    let workdir = a
        .workdir
        .clone()
        .or_else(|| c.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !workdir.starts_with('/') {
        return Err(EngineError::InvalidFlag(format!(
            "the working directory {workdir:?} is not an absolute path"
        )));
    }
    if a.isolation == Isolation::Vm {
        for (given, flag) in [
            (!a.cap_add.is_empty(), "--cap-add"),
            (!a.cap_drop.is_empty(), "--cap-drop"),
            (!a.ulimits.is_empty(), "--ulimit"),
            (!a.tmpfs.is_empty(), "--tmpfs"),
        ] {
            if given {
                return Err(EngineError::InvalidFlag(format!(
                    "{flag} applies to containers only: a microVM's processes are confined by its own kernel, which vessel does not configure this way yet"
                )));
            }
        }
        // Not built for VMs yet: refused rather than accepted and ignored (a user would
        // believe their data mounted or their limit in force).
        if !a.mounts.is_empty() {
            return Err(EngineError::InvalidFlag(
                "--mount is not supported with --isolation vm yet (host directories and volumes are not shared into microVMs): copy the data into the image, or use a container".into(),
            ));
        }
        if !a.volumes.is_empty() || !a.anonymous_volumes.is_empty() {
            return Err(EngineError::InvalidFlag(
                "-v/--volume is not supported with --isolation vm yet (host directories are not shared into microVMs): copy the data into the image, or use a container".into(),
            ));
        }
    } else if a.console {
        return Err(EngineError::InvalidFlag(
            "--console needs --isolation vm: it shows a microVM's guest console; a container has none".into(),
        ));
    }
    // Checked now, so that a bad name fails the run before anything is created.
    vessel_container::spec::capabilities_with(&a.cap_add, &a.cap_drop)
        .map_err(EngineError::InvalidFlag)?;
    let mut labels: std::collections::BTreeMap<String, String> =
        c.labels().clone().unwrap_or_default().into_iter().collect();
    let mut given_labels = Vec::new();
    for f in &a.label_files {
        given_labels.extend(read_kv_file("--label-file", f)?);
    }
    given_labels.extend(a.labels.iter().cloned());
    for l in &given_labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(EngineError::InvalidFlag(format!("invalid label {l:?}")));
        }
        labels.insert(k.to_string(), v.to_string());
    }
    let dns = a
        .dns
        .iter()
        .map(|d| {
            d.parse::<std::net::IpAddr>()
                .map_err(|_| EngineError::InvalidFlag(format!("--dns {d:?}: not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for d in &a.dns_search {
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !ok {
            return Err(EngineError::InvalidFlag(format!(
                "--dns-search {d:?}: not a domain name"
            )));
        }
    }
    let access = crate::access::parse(
        &a.access,
        a.isolation,
        memory,
        a.userns,
        network == vessel_network::Mode::Host,
    )?;
    let restart = crate::restart::RestartPolicy::parse(a.restart.as_deref().unwrap_or("no"))?;
    let healthcheck = crate::health::resolve(&a.health, image_health)?;
    if a.rm && restart != crate::restart::RestartPolicy::No {
        return Err(EngineError::InvalidFlag(
            "conflicting options: --restart and --rm (an instance removed at exit cannot be restarted)".into(),
        ));
    }
    Ok(RunRequest {
        restart,
        healthcheck,
        exposed: exposed
            .iter()
            .map(|(p, proto)| format!("{p}/{}", proto.as_str()))
            .collect(),
        publish_all: a.publish_all,
        export_changes: false,
        dns_search: a.dns_search.clone(),
        access,
        labels,
        extra_hosts: a
            .add_hosts
            .iter()
            .map(|h| ExtraHost::parse(h))
            .collect::<Result<_, _>>()?,
        dns,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        ulimits: a
            .ulimits
            .iter()
            .map(|u| Ulimit::parse(u))
            .collect::<Result<_, _>>()?,
        tmpfs,
        isolation: a.isolation,
        args,
        env,
        workdir,
        user: a
            .user
            .clone()
            .or_else(|| c.user().clone())
            .unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
        tty: a.tty,
        console_size: a.console_size,
        interactive: a.interactive,
        auto_remove: a.rm,
        read_only: a.read_only,
        volumes,
        memory,
        cpus,
        pids_limit: a.pids_limit.filter(|&p| p > 0),
        init: a.init,
        userns: a.userns,
        network,
        ports,
        attachment: None,
        network_aliases: a.network_aliases.clone(),
        more_networks: Vec::new(),
        ip,
        join,
        stop_signal,
        stop_timeout: a.stop_timeout.unwrap_or(10),
        kernel: match &a.kernel {
            Some(k) if a.isolation != Isolation::Vm => {
                return Err(EngineError::InvalidFlag(format!(
                    "--kernel {} needs --isolation vm",
                    k.display()
                )))
            }
            Some(k) => {
                Some(std::fs::canonicalize(k).map_err(|e| {
                    EngineError::InvalidFlag(format!("--kernel {}: {e}", k.display()))
                })?)
            }
            None => None,
        },
        console: a.console,
        log: LogConfig::parse(a.log_driver.as_deref(), &a.log_opts)?,
    })
}

/// Most ports one `--expose` range may name.
const MAX_EXPOSE_RANGE: u32 = 4096;

/// `PORT[/PROTO]` or `FIRST-LAST[/PROTO]` (`--expose`, an image's `ExposedPorts` key).
fn parse_expose(what: &str, s: &str) -> Result<Vec<(u16, vessel_network::Proto)>> {
    let bad = |why: &str| EngineError::InvalidFlag(format!("{what} {s:?}: {why}"));
    let (ports, proto) = match s.rsplit_once('/') {
        Some((p, "tcp")) => (p, vessel_network::Proto::Tcp),
        Some((p, "udp")) => (p, vessel_network::Proto::Udp),
        Some((_, other)) => return Err(bad(&format!("unknown protocol {other:?} (tcp or udp)"))),
        None => (s, vessel_network::Proto::Tcp),
    };
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad("expected a port (1-65535) or a range FIRST-LAST")),
    };
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if first > last || u32::from(last - first) >= MAX_EXPOSE_RANGE {
        return Err(bad(&format!(
            "invalid range (FIRST-LAST, at most {MAX_EXPOSE_RANGE} ports)"
        )));
    }
    Ok((first..=last).map(|p| (p, proto)).collect())
}

/// `--env-file`: `KEY=VALUE` lines, or `KEY` to take the caller's value; blank lines and
/// `#` comments skipped. At most 1 MiB.
pub fn read_env_file(path: &Path) -> Result<Vec<String>> {
    read_kv_file("--env-file", path)
}

/// A file of `KEY=VALUE` (or `KEY`) lines for `flag` (`--env-file`, `--label-file`);
/// blank lines and `#` comments skipped. At most 1 MiB.
fn read_kv_file(flag: &str, path: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    let bad = |e: String| EngineError::InvalidFlag(format!("{flag} {}: {e}", path.display()));
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(|e| bad(e.to_string()))?
        .take((1 << 20) + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    if text.len() > 1 << 20 {
        return Err(bad("larger than 1 MiB".into()));
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split('=').next().unwrap_or_default();
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(bad(format!(
                "line {}: variable {key:?} has white space or no name",
                n + 1
            )));
        }
        out.push(line.to_string());
    }
    Ok(out)
}

impl crate::Engine {
    /// `run`/`create`: resolves `image`, builds the request from `opts` and the image's
    /// config ([`build_request`]; `caller_env` gives the values of variables named without
    /// one) and records the new instance, named `name` or a generated name.
    pub fn create_from_options(
        &self,
        image: &str,
        name: Option<String>,
        opts: &RunOptions,
        caller_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<crate::catalogue::Instance> {
        self.create(
            crate::CreateSpec {
                image: image.to_string(),
                name,
            },
            |image, config, id| {
                let health = self.store()?.config_field(image, "Healthcheck")?;
                build_request(opts, config, health.as_ref(), id, caller_env)
            },
        )
    }

    /// Points each named volume of `r` at its directory, making the volumes that do not
    /// exist yet (as `docker run -v NAME:/path` does). Called by [`Engine::create`] once
    /// the instance is recorded, so that a prune meanwhile sees the volumes' user.
    pub(crate) fn resolve_volumes(&self, r: &mut RunRequest) -> Result<(), EngineError> {
        for v in &mut r.volumes {
            if let Some(name) = &v.name {
                let mut labels = std::collections::BTreeMap::new();
                if v.anonymous {
                    labels.insert(crate::volumes::ANONYMOUS_LABEL.to_string(), String::new());
                }
                let info = self.volumes().create(Some(name), labels)?;
                v.source = info.mountpoint.to_string_lossy().into_owned();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(json: &str) -> oci_spec::image::ImageConfiguration {
        serde_json::from_str(json).unwrap()
    }

    const BUSYBOX: &str = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
        "config":{"Env":["PATH=/bin","A=image"],"Entrypoint":["/entry"],"Cmd":["sh"],"WorkingDir":"/srv","User":"nobody","StopSignal":"SIGQUIT"}}"#;
    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_image_config_fills_what_the_options_leave() {
        let r = build_request(&RunOptions::default(), &image(BUSYBOX), None, ID, &no_env).unwrap();
        assert_eq!(r.args, ["/entry", "sh"]);
        assert_eq!(r.workdir, "/srv");
        assert_eq!(r.user, "nobody");
        assert_eq!(r.hostname, "0123456789ab");
        assert_eq!(r.stop_signal, libc::SIGQUIT);
        assert_eq!(r.env, ["PATH=/bin", "A=image"]);
    }

    #[test]
    fn anonymous_volumes_go_only_where_nothing_else_is_mounted() {
        let o = RunOptions {
            volumes: vec!["/tmp:/www".into()],
            tmpfs: vec!["/scratch".into()],
            anonymous_volumes: vec!["/www/".into(), "/scratch".into(), "/data".into()],
            command: vec!["true".into()],
            ..Default::default()
        };
        let r = build_request(&o, &image(BUSYBOX), None, ID, &no_env).unwrap();
        let got: Vec<(&str, bool)> = r
            .volumes
            .iter()
            .map(|v| (v.target.as_str(), v.anonymous))
            .collect();
        assert_eq!(got, [("/www", false), ("/data", true)]);
        assert_eq!(r.tmpfs.len(), 1);
    }

    #[test]
    fn entrypoint_discards_the_image_cmd_and_a_command_replaces_it() {
        let o = RunOptions {
            entrypoint: Some("/other".into()),
            ..Default::default()
        };
        assert_eq!(
            build_request(&o, &image(BUSYBOX), None, ID, &no_env)
                .unwrap()
                .args,
            ["/other"]
        );
        let o = RunOptions {
            command: vec!["echo".into(), "hi".into()],
            ..Default::default()
        };
        let r = build_request(&o, &image(BUSYBOX), None, ID, &no_env).unwrap();
        assert_eq!(r.args, ["/entry", "echo", "hi"]);
        let o = RunOptions {
            entrypoint: Some(String::new()),
            ..Default::default()
        };
        let e = build_request(&o, &image(r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#), None, ID, &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no command specified"), "{e}");
    }

    #[test]
    fn more_networks_are_bridges_for_containers_each_once() {
        let with = |network: &str, more: &[&str], isolation: Isolation| RunOptions {
            network: Some(network.into()),
            more_networks: more
                .iter()
                .map(|n| crate::request::Join {
                    network: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            isolation,
            ..Default::default()
        };
        let no_env = |_: &str| None;
        let r = build_request(
            &with("a", &["b", "bridge"], Isolation::Container),
            &image(BUSYBOX),
            None,
            ID,
            &no_env,
        )
        .unwrap();
        let joined: Vec<&str> = r.join.iter().map(|j| j.network.as_str()).collect();
        assert_eq!(joined, ["b", "bridge"]);
        for (o, why) in [
            (with("a", &["b"], Isolation::Vm), "one NIC"),
            (with("a", &["a"], Isolation::Container), "given twice"),
            (with("a", &["b", "b"], Isolation::Container), "given twice"),
            (
                with("none", &["b"], Isolation::Container),
                "cannot be combined",
            ),
            (
                with("a", &["host"], Isolation::Container),
                "cannot be combined",
            ),
        ] {
            let e = build_request(&o, &image(BUSYBOX), None, ID, &no_env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{o:?}: {e}");
        }
    }

    #[test]
    fn env_files_then_flags_replace_the_image_env_and_named_variables_come_from_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "# comment\n\nA=file\nB=file\nFROM_CALLER\n").unwrap();
        let o = RunOptions {
            env_files: vec![f],
            env: vec!["B=flag".into(), "UNSET".into()],
            ..Default::default()
        };
        let caller = |k: &str| (k == "FROM_CALLER").then(|| "caller".to_string());
        let r = build_request(&o, &image(BUSYBOX), None, ID, &caller).unwrap();
        assert_eq!(
            r.env,
            ["PATH=/bin", "A=file", "FROM_CALLER=caller", "B=flag"]
        );
    }

    #[test]
    fn a_bad_env_file_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "OK=1\nBAD KEY=2\n").unwrap();
        let e = read_env_file(&f).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("BAD KEY"), "{e}");
    }

    #[test]
    fn container_only_options_are_refused_for_a_microvm() {
        for o in [
            RunOptions {
                userns: true,
                ..Default::default()
            },
            RunOptions {
                cap_add: vec!["NET_ADMIN".into()],
                ..Default::default()
            },
            RunOptions {
                network: Some("host".into()),
                ..Default::default()
            },
        ] {
            let o = RunOptions {
                isolation: Isolation::Vm,
                ..o
            };
            assert!(
                build_request(&o, &image(BUSYBOX), None, ID, &no_env).is_err(),
                "{o:?}"
            );
        }
        let o = RunOptions {
            kernel: Some("/boot/vmlinuz".into()),
            ..Default::default()
        };
        let e = build_request(&o, &image(BUSYBOX), None, ID, &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --isolation vm"), "{e}");
    }

    #[test]
    fn a_relative_workdir_is_refused() {
        let o = RunOptions {
            workdir: Some("srv".into()),
            ..Default::default()
        };
        let e = build_request(&o, &image(BUSYBOX), None, ID, &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"srv\""), "{e}");
    }
}
