//! The inspect document of an instance: a typed struct that serializes as (a subset of)
//! Docker's `ContainerJSON`, with vessel's additions (`ImageName`, `State.MonitorPid`,
//! `State.VmmPid`, `HostConfig.Isolation`). Fields serialize in declaration order (the
//! CLI prints them through a `serde_json::Value`, keys sorted, as it always has).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::catalogue::{Instance, Status};
use crate::request::{Isolation, RunRequest};
use crate::Engine;

/// A JSON object whose keys keep the order they were first given in (Docker's
/// `PortBindings`, `Tmpfs`, `Networks`); a key given again replaces its value in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    /// Sets `key` to `value`, in place if it is there.
    pub fn insert(&mut self, key: String, value: V) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    /// Whether it has no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Docker's `ContainerJSON`: one instance's configuration and state.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerJson {
    /// Full id.
    pub id: String,
    /// Name (without Docker's leading `/`).
    pub name: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The program run (first word of the command).
    pub path: Option<String>,
    /// Its arguments.
    pub args: Vec<String>,
    /// The image's id.
    pub image: String,
    /// The image as the user named it.
    pub image_name: String,
    /// Run state.
    pub state: ContainerState,
    /// Restarts made by its restart policy.
    pub restart_count: u32,
    /// Resources and host-side settings.
    pub host_config: HostConfig,
    /// The process's configuration.
    pub config: ContainerConfig,
    /// Volumes and bind mounts (as Docker's, not the root file system: see
    /// `graph_driver`).
    pub mounts: Vec<MountPoint>,
    /// A container's root file system: its overlay's directories (none for a microVM,
    /// whose root is a disk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_driver: Option<GraphDriver>,
    /// Address and ports.
    pub network_settings: NetworkSettings,
    /// The json-file log.
    pub log_path: PathBuf,
}

/// Docker's `ContainerState`, plus the monitor's and VMM's pids.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    /// `created`, `running`, `paused`, `exited` or `dead`.
    pub status: String,
    /// Whether it runs (also while paused, as Docker says).
    pub running: bool,
    /// Whether it is paused.
    pub paused: bool,
    /// Whether its restart policy is about to start it again.
    pub restarting: bool,
    /// Whether it is dead (its monitor vanished).
    pub dead: bool,
    /// Host pid of its main process while it runs, else 0.
    pub pid: i32,
    /// Exit status (0 before it exited).
    pub exit_code: i32,
    /// Whether the OOM killer ended it.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Why it failed or died, else empty.
    pub error: String,
    /// Start time, RFC 3339.
    pub started_at: Option<String>,
    /// End time, RFC 3339.
    pub finished_at: Option<String>,
    /// Its monitor process.
    pub monitor_pid: Option<i32>,
    /// A microVM's jailed VMM process (`vm_jail`), while it runs.
    pub vmm_pid: Option<i32>,
    /// Its health, while it runs with a health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
}

/// Docker's `HostConfig`, the fields vessel has.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// `container` or `vm`.
    pub isolation: String,
    /// `--restart`.
    pub restart_policy: RestartPolicyJson,
    /// Memory limit, bytes (0: none).
    pub memory: u64,
    /// CPU quota in billionths of a CPU (0: none).
    pub nano_cpus: i64,
    /// Process limit.
    pub pids_limit: Option<i64>,
    /// `--read-only`.
    pub readonly_rootfs: bool,
    /// `SRC:DST[:ro]` per volume.
    pub binds: Vec<String>,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--init`.
    pub init: bool,
    /// `private` with a user namespace of its own, else `host`.
    pub userns_mode: String,
    /// `bridge`, a network's name, `host` or `none`.
    pub network_mode: String,
    /// Published ports as requested.
    pub port_bindings: OrderedMap<Vec<PortBinding>>,
    /// Log driver and its options.
    pub log_config: LogConfigJson,
    /// Added capabilities.
    pub cap_add: Vec<String>,
    /// Dropped capabilities.
    pub cap_drop: Vec<String>,
    /// Resource limits.
    pub ulimits: Vec<UlimitJson>,
    /// tmpfs mounts: path to options.
    pub tmpfs: OrderedMap<String>,
    /// `NAME:IP` entries of `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    /// Name servers.
    pub dns: Vec<IpAddr>,
    /// Search domains.
    pub dns_search: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--device` mappings.
    pub devices: Vec<DeviceJson>,
    /// `--security-opt` as given.
    pub security_opt: Vec<String>,
    /// `--sysctl`.
    pub sysctls: BTreeMap<String, String>,
    /// `host`, or empty for a PID namespace of its own.
    pub pid_mode: String,
    /// `private`, `host` or `none`.
    pub ipc_mode: String,
    /// Size of /dev/shm in bytes.
    pub shm_size: u64,
    /// `--group-add`.
    pub group_add: Vec<String>,
    /// `--cpu-shares` (0: the default weight).
    pub cpu_shares: u64,
    /// `--cpuset-cpus`.
    pub cpuset_cpus: String,
    /// `--memory-swap` (0: unset).
    pub memory_swap: i64,
    /// `-P`.
    pub publish_all_ports: bool,
}

/// Docker's `RestartPolicy`.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicyJson {
    /// `no`, `always`, `unless-stopped` or `on-failure`.
    pub name: String,
    /// For `on-failure`: at most this many restarts (0: no limit).
    pub maximum_retry_count: u32,
}

/// Docker's `DeviceMapping`.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceJson {
    /// The host's node.
    pub path_on_host: String,
    /// Where it is inside.
    pub path_in_container: String,
    /// `rwm` or a part of it.
    pub cgroup_permissions: String,
}

/// One host side of a published port.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// Host address (empty: all).
    pub host_ip: String,
    /// Host port, as a string (Docker's type).
    pub host_port: String,
}

/// Docker's `LogConfig`.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogConfigJson {
    /// Driver name.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Its options.
    pub config: BTreeMap<String, String>,
}

/// Docker's `Ulimit`.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UlimitJson {
    /// Resource name (`nofile`, ...).
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// Docker's `Config` of a container, the fields vessel has.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// Host name.
    pub hostname: String,
    /// User.
    pub user: String,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// The whole command line.
    pub cmd: Vec<String>,
    /// Working directory.
    pub working_dir: String,
    /// With a terminal.
    pub tty: bool,
    /// stdin kept open.
    pub open_stdin: bool,
    /// The image as the user named it.
    pub image: String,
    /// Stop signal number.
    pub stop_signal: i32,
    /// Seconds between the stop signal and SIGKILL.
    pub stop_timeout: u32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The health check, if it has one (a `NONE` test: disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::health::Healthcheck>,
    /// Exposed ports, `PORT/PROTO` to `{}`.
    #[serde(skip_serializing_if = "OrderedMap::is_empty")]
    pub exposed_ports: OrderedMap<serde_json::Map<String, serde_json::Value>>,
}

/// Docker's `GraphDriver`: the storage driver and its directories.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriver {
    /// `overlay`.
    pub name: String,
    /// `UpperDir`, `WorkDir`, `MergedDir`.
    pub data: BTreeMap<String, PathBuf>,
}

/// Docker's `MountPoint`: a volume or a bind mount.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountPoint {
    /// `overlay`, `bind` or `volume`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// A named volume's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A named volume's driver (`local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Host path of a bind mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Path inside.
    pub destination: String,
    /// Writable.
    #[serde(rename = "RW")]
    pub rw: bool,
}

/// Docker's `NetworkSettings`, the fields vessel has.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    /// Address (empty without a network).
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// Its prefix length.
    #[serde(rename = "IPPrefixLen", skip_serializing_if = "Option::is_none")]
    pub ip_prefix_len: Option<u8>,
    /// The network's gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Published ports as bound.
    pub ports: OrderedMap<Vec<PortBinding>>,
    /// Per network.
    pub networks: OrderedMap<EndpointSettings>,
}

/// Docker's `EndpointSettings`, the fields vessel has.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EndpointSettings {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Address.
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// Its prefix length.
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    /// Gateway.
    #[serde(rename = "Gateway")]
    pub gateway: String,
    /// The host bridge.
    #[serde(rename = "Bridge")]
    pub bridge: String,
    /// `--network-alias` (null when none, as Docker shows it).
    #[serde(rename = "Aliases")]
    pub aliases: Option<Vec<String>>,
    /// The address asked for (`--ip`): `{"IPv4Address": ...}`, null when none.
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<serde_json::Value>,
}

/// Docker's shape: `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`, as asked
/// (`HostConfig.PortBindings`).
pub fn port_bindings(ports: &[vessel_network::PortMap]) -> OrderedMap<Vec<PortBinding>> {
    bindings(ports, "")
}

/// The bindings as they are (`NetworkSettings.Ports`): every address is `0.0.0.0`, as
/// Docker shows it (Compose's `ps` prints it).
fn bound_ports(ports: &[vessel_network::PortMap]) -> OrderedMap<Vec<PortBinding>> {
    bindings(ports, "0.0.0.0")
}

fn bindings(ports: &[vessel_network::PortMap], any: &str) -> OrderedMap<Vec<PortBinding>> {
    let mut m: OrderedMap<Vec<PortBinding>> = OrderedMap::default();
    for p in ports {
        let key = format!("{}/{}", p.container_port, p.proto.as_str());
        let entry = PortBinding {
            host_ip: p
                .host_ip
                .map(|a| a.to_string())
                .unwrap_or_else(|| any.to_string()),
            // A random host port is "" in HostConfig until it is allocated, as Docker's.
            host_port: match p.host_port {
                0 => String::new(),
                n => n.to_string(),
            },
        };
        match m.get_mut(&key) {
            Some(list) => list.push(entry),
            None => m.insert(key, vec![entry]),
        }
    }
    m
}

fn network_settings(r: &RunRequest) -> NetworkSettings {
    let Some(att) = &r.attachment else {
        return NetworkSettings {
            ip_address: String::new(),
            ip_prefix_len: None,
            gateway: None,
            ports: OrderedMap::default(),
            networks: OrderedMap::default(),
        };
    };
    let mut networks = OrderedMap::default();
    for a in r.attachments() {
        let aliases = r.aliases_on(a);
        networks.insert(
            a.network.clone(),
            EndpointSettings {
                network_id: a.network_id.clone(),
                ip_address: a.ip.to_string(),
                ip_prefix_len: a.prefix,
                gateway: a.gateway.to_string(),
                bridge: a.bridge.clone(),
                aliases: (!aliases.is_empty()).then(|| aliases.to_vec()),
                ipam_config: a
                    .fixed
                    .then(|| serde_json::json!({ "IPv4Address": a.ip.to_string() })),
            },
        );
    }
    NetworkSettings {
        ip_address: att.ip.to_string(),
        ip_prefix_len: Some(att.prefix),
        gateway: Some(att.gateway.to_string()),
        ports: bound_ports(&att.ports),
        networks,
    }
}

impl Engine {
    /// The inspect document of `inst` (as [`Engine::get`] returns it: refreshed).
    pub fn inspect(&self, i: &Instance) -> ContainerJson {
        let r = &i.request;
        let dir = self.instance_dir(&i.id);
        let mounts: Vec<MountPoint> = r
            .volumes
            .iter()
            .map(|v| MountPoint {
                kind: if v.name.is_some() { "volume" } else { "bind" }.into(),
                name: v.name.clone(),
                driver: v.name.as_ref().map(|_| "local".to_string()),
                source: Some(v.source.clone()),
                destination: v.target.clone(),
                rw: !v.read_only,
            })
            .collect();
        let graph_driver = (r.isolation == Isolation::Container).then(|| GraphDriver {
            name: "overlay".into(),
            data: [
                ("UpperDir", dir.join("upper")),
                ("WorkDir", dir.join("work")),
                ("MergedDir", dir.join("rootfs")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        });
        let running = i.status == Status::Running;
        let paused = self.paused(i);
        let restart = crate::restart::RestartState::load(&dir);
        let restarting = restart.restarting && i.status != Status::Running;
        ContainerJson {
            id: i.id.clone(),
            name: i.name.clone(),
            created: i.created.clone(),
            path: r.args.first().cloned(),
            args: r.args.get(1..).unwrap_or_default().to_vec(),
            image: i.image_id.clone(),
            image_name: i.image.clone(),
            state: ContainerState {
                status: if paused {
                    "paused".to_string()
                } else if restarting {
                    "restarting".to_string()
                } else {
                    i.status.as_str().to_string()
                },
                running,
                paused,
                restarting,
                dead: i.status == Status::Dead,
                pid: if running { i.pid.unwrap_or(0) } else { 0 },
                exit_code: i.exit_code.unwrap_or(0),
                oom_killed: i.oom_killed,
                error: i.error.clone().unwrap_or_default(),
                started_at: i.started_at.clone(),
                finished_at: i.finished_at.clone(),
                monitor_pid: i.monitor.map(|m| m.0),
                vmm_pid: crate::vm_jail::vmm_pid(&dir),
                health: self.health(i),
            },
            restart_count: restart.count,
            host_config: HostConfig {
                restart_policy: RestartPolicyJson {
                    name: r.restart.docker().0.into(),
                    maximum_retry_count: r.restart.docker().1,
                },
                isolation: r.isolation.as_str().to_string(),
                memory: r.memory.unwrap_or(0),
                nano_cpus: r.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
                pids_limit: r.pids_limit,
                readonly_rootfs: r.read_only,
                binds: r
                    .volumes
                    .iter()
                    .map(|v| {
                        let ro = if v.read_only { ":ro" } else { "" };
                        let source = v.name.as_ref().unwrap_or(&v.source);
                        format!("{source}:{}{ro}", v.target)
                    })
                    .collect(),
                auto_remove: r.auto_remove,
                init: r.init,
                userns_mode: if r.userns { "private" } else { "host" }.into(),
                network_mode: r.network.as_str().to_string(),
                port_bindings: port_bindings(&r.ports),
                log_config: LogConfigJson {
                    kind: r.log.driver.as_str().to_string(),
                    config: r.log.options.clone(),
                },
                cap_add: r.cap_add.clone(),
                cap_drop: r.cap_drop.clone(),
                ulimits: r
                    .ulimits
                    .iter()
                    .map(|u| UlimitJson {
                        name: u.name.clone(),
                        soft: u.soft as i64,
                        hard: u.hard as i64,
                    })
                    .collect(),
                tmpfs: {
                    let mut m = OrderedMap::default();
                    for t in &r.tmpfs {
                        m.insert(t.path.clone(), t.options.join(","));
                    }
                    m
                },
                extra_hosts: r
                    .extra_hosts
                    .iter()
                    .map(|h| format!("{}:{}", h.name, h.ip))
                    .collect(),
                dns: r.dns.clone(),
                dns_search: r.dns_search.clone(),
                privileged: r.access.privileged,
                devices: r
                    .access
                    .devices
                    .iter()
                    .map(|d| DeviceJson {
                        path_on_host: d.host.display().to_string(),
                        path_in_container: d.container.display().to_string(),
                        cgroup_permissions: d.perms.clone(),
                    })
                    .collect(),
                security_opt: r.access.security_opts.clone(),
                sysctls: r.access.sysctls.clone(),
                pid_mode: if r.access.pid_host { "host" } else { "" }.into(),
                ipc_mode: match r.access.ipc {
                    crate::access::Ipc::Private => "private",
                    crate::access::Ipc::Host => "host",
                    crate::access::Ipc::None => "none",
                }
                .into(),
                shm_size: match r.access.ipc {
                    crate::access::Ipc::Private => r.access.shm_size.unwrap_or(64 << 20),
                    _ => 0,
                },
                group_add: r.access.group_add.clone(),
                cpu_shares: r.access.cpu_shares.unwrap_or(0),
                cpuset_cpus: r.access.cpuset_cpus.clone().unwrap_or_default(),
                memory_swap: r.access.memory_swap.unwrap_or(0),
                publish_all_ports: r.publish_all,
            },
            config: ContainerConfig {
                hostname: r.hostname.clone(),
                user: r.user.clone(),
                env: r.env.clone(),
                cmd: r.args.clone(),
                working_dir: r.workdir.clone(),
                tty: r.tty,
                open_stdin: r.interactive,
                image: i.image.clone(),
                stop_signal: r.stop_signal,
                stop_timeout: r.stop_timeout,
                labels: r.labels.clone(),
                healthcheck: r.healthcheck.clone(),
                exposed_ports: {
                    let mut m = OrderedMap::default();
                    for p in &r.exposed {
                        m.insert(p.clone(), serde_json::Map::new());
                    }
                    m
                },
            },
            mounts,
            graph_driver,
            network_settings: network_settings(r),
            log_path: self.log_path(&i.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_map_keeps_first_order_and_replaces_in_place() {
        let mut m = OrderedMap::default();
        m.insert("b".to_string(), 1);
        m.insert("a".to_string(), 2);
        m.insert("b".to_string(), 3);
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"b":3,"a":2}"#);
    }

    #[test]
    fn port_bindings_group_by_container_port_in_docker_shape() {
        let ports: Vec<vessel_network::PortMap> = ["8080:80", "127.0.0.1:8081:80", "53:53/udp"]
            .iter()
            .map(|p| vessel_network::PortMap::parse(p).unwrap())
            .collect();
        let v = serde_json::to_value(port_bindings(&ports)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "8081"}],
                "53/udp": [{"HostIp": "", "HostPort": "53"}],
            })
        );
        let v = serde_json::to_value(bound_ports(&ports)).unwrap();
        assert_eq!(v["80/tcp"][0]["HostIp"], "0.0.0.0");
        assert_eq!(v["80/tcp"][1]["HostIp"], "127.0.0.1");
    }

    #[test]
    fn mounts_and_network_settings_keep_docker_keys() {
        let bind = MountPoint {
            name: None,
            driver: None,
            kind: "bind".into(),
            source: Some("/x".into()),
            destination: "/y".into(),
            rw: false,
        };
        assert_eq!(
            serde_json::to_string(&bind).unwrap(),
            r#"{"Type":"bind","Source":"/x","Destination":"/y","RW":false}"#
        );
        let none =
            network_settings(&serde_json::from_value::<RunRequest>(minimal_request()).unwrap());
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"IPAddress":"","Ports":{},"Networks":{}}"#
        );
    }

    fn minimal_request() -> serde_json::Value {
        let o = crate::options::RunOptions {
            command: vec!["true".into()],
            ..Default::default()
        };
        let image: oci_spec::image::ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#,
        )
        .unwrap();
        let r =
            crate::options::build_request(&o, &image, None, "0123456789abcdef", &|_| None).unwrap();
        serde_json::to_value(r).unwrap()
    }
}
