//! The container backend: an OCI bundle run by `vessel_container::Runtime`, with the
//! image's shared layers as overlayfs lower dirs and a per-instance upper dir.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use vessel_container::spec::{self, BindMount, IdMap, SpecOptions};
use vessel_container::{CreateOptions, Runtime};

use super::backend::{Backend, Exec, ExecRequest, Exit, Started, Stdio};
use super::catalogue::Instance;
use super::{userdb, EngineError, Result};

/// The host uid and gid that a `--userns` container's root is.
pub(crate) const USERNS_HOST_ID: u32 = 100_000;

/// Runs instances as Linux containers.
pub struct ContainerBackend {
    runtime: Runtime,
    networks: vessel_network::Networks,
    /// `vessel-init`, for `--init`.
    init: PathBuf,
}

impl ContainerBackend {
    /// Makes the sealed view of the entry program now, off the path of the next start.
    pub fn prepare_starts(&self) {
        if let Err(e) = self.runtime.seal_entry() {
            // The start itself reports it.
            tracing::debug!("seal the entry program: {e}");
        }
    }

    /// A backend whose runtime state lives under `state_root`, wiring containers to the
    /// bridge networks of `networks`, with `init` as the PID 1 of `--init`, and every
    /// container process exec'd through `entry` (vessel-entry).
    pub fn new(
        state_root: impl Into<PathBuf>,
        networks: vessel_network::Networks,
        init: PathBuf,
        entry: PathBuf,
    ) -> ContainerBackend {
        ContainerBackend {
            runtime: Runtime::new(state_root).with_entry(entry),
            networks,
            init,
        }
    }
}

/// The `/etc/hosts` line (without its newline) that names an instance to its peers: its
/// name, then its network aliases.
pub(super) fn hosts_line(ip: std::net::Ipv4Addr, name: &str, aliases: &[String]) -> String {
    let mut line = format!("{ip}\t{name}");
    for a in aliases {
        line.push(' ');
        line.push_str(a);
    }
    line
}

/// An instance's /etc/hosts (container or VM): localhost, itself (with its aliases), and
/// on a user network the instances already on it.
pub(super) fn hosts(networks: &vessel_network::Networks, inst: &Instance) -> Result<String> {
    let req = &inst.request;
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    match &req.attachment {
        None => out.push_str(&format!("127.0.1.1\t{}\n", req.hostname)),
        Some(att) => {
            out.push_str(&format!("{}\t{}", att.ip, req.hostname));
            if inst.name != req.hostname {
                out.push_str(&format!(" {}", inst.name));
            }
            for a in req.network_aliases.iter().filter(|a| **a != req.hostname) {
                out.push_str(&format!(" {a}"));
            }
            out.push('\n');
        }
    }
    // The instances on each of its user networks (none on the default one, as Docker).
    for att in req.attachments() {
        if att.network != vessel_network::DEFAULT_NETWORK {
            for p in networks.peers(att)? {
                if p.instance != inst.id {
                    out.push_str(&hosts_line(p.ip, &p.name, &p.aliases));
                    out.push('\n');
                }
            }
        }
    }
    for h in &req.extra_hosts {
        let ip = if h.ip == "host-gateway" {
            match &req.attachment {
                Some(att) => att.gateway.to_string(),
                None => {
                    return Err(EngineError::InvalidFlag(format!(
                        "--add-host {}:host-gateway needs a bridge network (this instance has --network {})",
                        h.name,
                        req.network.as_str()
                    )))
                }
            }
        } else {
            h.ip.clone()
        };
        out.push_str(&format!("{ip}\t{}\n", h.name));
    }
    Ok(out)
}

/// A hold on the mount namespace of process `pid` (see [`Started::teardown`]). The last
/// process of a container otherwise unmounts every mount of the container on its way out,
/// and waits for an RCU grace period, before its parent learns of its exit. `None` (the
/// exit does that work, as without the hold) if it cannot be opened.
fn mount_ns_of(pid: i32) -> Option<std::os::fd::OwnedFd> {
    std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(Into::into)
}

pub(crate) fn rt_err(e: vessel_container::Error) -> EngineError {
    match e.exit_code() {
        Some(127) => EngineError::CommandNotFound(e.to_string()),
        Some(126) => EngineError::NotExecutable(e.to_string()),
        _ => EngineError::Backend(e.to_string()),
    }
}

fn write(path: &Path, data: &str) -> Result<()> {
    std::fs::write(path, data).map_err(|e| EngineError::io("write", path, e))
}

/// The host's resolv.conf minus loopback nameservers (unreachable from a private netns),
/// as Docker does; Google's public resolvers if nothing is left. `--dns` replaces the
/// nameservers, `--dns-search` the search line (the host's options lines stay).
pub(super) fn resolv_conf(req: &super::request::RunRequest) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out: Vec<String> = host
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            let server = w.next() == Some("nameserver");
            let search = l.split_whitespace().next() == Some("search");
            !(server
                && (!req.dns.is_empty()
                    || w.next()
                        .is_some_and(|a| a.starts_with("127.") || a == "::1")))
                && (!search || req.dns_search.is_empty())
        })
        .map(str::to_string)
        .collect();
    out.extend(req.dns.iter().map(|d| format!("nameserver {d}")));
    if !req.dns_search.is_empty() {
        out.push(format!("search {}", req.dns_search.join(" ")));
    }
    if !out.iter().any(|l| l.starts_with("nameserver")) {
        out.push("nameserver 8.8.8.8".into());
        out.push("nameserver 8.8.4.4".into());
    }
    out.join("\n") + "\n"
}

/// Bytes received and sent over every interface of a `/proc/PID/net/dev` but loopback.
fn net_dev_totals(text: &str) -> (u64, u64) {
    let mut out = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = counters
            .split_whitespace()
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        if f.len() >= 9 {
            out.0 += f[0];
            out.1 += f[8];
        }
    }
    out
}

fn runtime_stdio(stdio: Stdio) -> vessel_container::Stdio {
    match stdio {
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => vessel_container::Stdio::Fds {
            stdin,
            stdout,
            stderr,
        },
        Stdio::Pty => vessel_container::Stdio::Pty,
    }
}

impl Backend for ContainerBackend {
    fn prepare(&self, inst: &Instance, dir: &Path, layers: &[PathBuf]) -> Result<()> {
        let req = &inst.request;
        for sub in ["upper", "work", "rootfs"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| EngineError::io("create", &p, e))?;
        }
        let top_first: Vec<PathBuf> = layers.iter().rev().cloned().collect();
        let user = userdb::resolve(&req.user, &top_first)?;
        write(&dir.join("hostname"), &format!("{}\n", req.hostname))?;
        write(&dir.join("hosts"), &hosts(&self.networks, inst)?)?;
        write(&dir.join("resolv.conf"), &resolv_conf(req))?;

        let mut binds: Vec<BindMount> = ["hostname", "hosts", "resolv.conf"]
            .iter()
            .map(|f| BindMount {
                source: dir.join(f),
                destination: Path::new("/etc").join(f),
                readonly: req.read_only,
            })
            .collect();
        binds.extend(req.volumes.iter().map(|v| BindMount {
            source: v.source.clone().into(),
            destination: v.target.clone().into(),
            readonly: v.read_only,
        }));

        let mut env = req.env.clone();
        if let Some(h) = userdb::home_env(&env, &user) {
            env.push(h);
        }
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.push(format!("HOSTNAME={}", req.hostname));
        }
        let overlay = serde_json::json!({
            "lower": top_first,
            "upper": dir.join("upper"),
            "work": dir.join("work"),
            // Thrown away with the container: no need to sync it (at unmount, too).
            "volatile": req.auto_remove,
        });
        let mut annotations = HashMap::new();
        annotations.insert(spec::OVERLAY_ANNOTATION.to_string(), overlay.to_string());
        let user_namespace = req.userns.then(|| {
            let map = vec![IdMap {
                container_id: 0,
                host_id: USERNS_HOST_ID,
                size: 65_536,
            }];
            (map.clone(), map)
        });
        let mut args = req.args.clone();
        if req.init {
            args.insert(0, super::init::INIT_PATH.to_string());
            args.insert(1, "--".to_string());
            binds.push(BindMount {
                source: super::init::binary(&self.init)?,
                destination: super::init::INIT_PATH.into(),
                readonly: true,
            });
        }
        let opts = SpecOptions {
            rootfs: dir.join("rootfs"),
            args,
            env,
            cwd: req.workdir.clone(),
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids,
            hostname: Some(req.hostname.clone()),
            terminal: req.tty,
            readonly_rootfs: req.read_only,
            binds,
            memory_limit: req.memory.map(|m| m as i64),
            cpus: req.cpus,
            pids_limit: req.pids_limit,
            network_namespace: req.network != vessel_network::Mode::Host,
            user_namespace,
            cgroups_path: Some(format!("vessel/{}", inst.id)),
            annotations,
        };
        let mut spec = spec::docker_default(&opts);
        if let Some((rows, cols)) = req.console_size {
            spec::set_console_size(&mut spec, rows, cols);
        }
        if !req.cap_add.is_empty() || !req.cap_drop.is_empty() {
            let caps = spec::capabilities_with(&req.cap_add, &req.cap_drop)
                .map_err(EngineError::InvalidFlag)?;
            spec::set_capabilities(&mut spec, &caps);
        }
        for u in &req.ulimits {
            let typ = super::request::ULIMITS
                .iter()
                .find(|(n, _)| *n == u.name)
                .map(|(_, t)| *t)
                .ok_or_else(|| EngineError::InvalidFlag(format!("--ulimit {}", u.name)))?;
            spec::set_rlimit(&mut spec, typ, u.soft, u.hard).map_err(EngineError::InvalidFlag)?;
        }
        for t in &req.tmpfs {
            spec::add_tmpfs(&mut spec, &t.path, &t.options);
        }
        crate::access::apply(&req.access, &mut spec, &top_first)?;
        let json =
            serde_json::to_vec_pretty(&spec).map_err(|e| EngineError::Internal(e.to_string()))?;
        let p = dir.join("config.json");
        std::fs::write(&p, json).map_err(|e| EngineError::io("write", &p, e))
    }

    fn start(&self, inst: &Instance, dir: &Path, stdio: Stdio) -> Result<Started> {
        let stdio = runtime_stdio(stdio);
        // A leftover from a crashed earlier start of the same instance would block create.
        let _ = self.runtime.delete(&inst.id, true);
        tracing::debug!("no leftover");
        let mut state = self
            .runtime
            .create(
                &inst.id,
                dir,
                CreateOptions {
                    stdio,
                    pid_file: None,
                    console_socket: None,
                },
            )
            .map_err(rt_err)?;
        let pid = state
            .pid
            .ok_or_else(|| EngineError::Backend("the runtime reported no init pid".into()))?;
        // Between create and start the container's namespaces exist but its program has
        // not run: the moment to give it its network.
        let wired = inst
            .request
            .attachments()
            .enumerate()
            .try_for_each(|(i, att)| self.networks.connect(&inst.id, att, i == 0, pid))
            .map_err(EngineError::from);
        if let Err(e) = wired.and_then(|()| self.runtime.start(&inst.id).map_err(rt_err)) {
            let _ = self.runtime.delete(&inst.id, true);
            let _ = waitpid(Pid::from_raw(pid), None);
            return Err(e);
        }
        Ok(Started {
            pid,
            pty_master: state.pty_master.take(),
            teardown: mount_ns_of(pid),
        })
    }

    fn wait(&self, inst: &Instance, started: &Started) -> Result<Exit> {
        let code = loop {
            match waitpid(Pid::from_raw(started.pid), None) {
                Ok(WaitStatus::Exited(_, c)) => break c,
                Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(EngineError::Backend(format!(
                        "wait for container init {}: {e}",
                        started.pid
                    )))
                }
            }
        };
        Ok(Exit {
            code,
            oom_killed: self.oom_killed(inst),
        })
    }

    fn oom_killed(&self, inst: &Instance) -> bool {
        self.runtime.oom_killed(&inst.id).unwrap_or(false)
    }

    fn kill(&self, inst: &Instance, signal: i32) -> Result<()> {
        self.runtime.kill(&inst.id, signal, false).map_err(rt_err)
    }

    fn alive(&self, inst: &Instance) -> bool {
        matches!(
            self.runtime.state(&inst.id).map(|s| s.status),
            Ok(vessel_container::Status::Running | vessel_container::Status::Created)
        )
    }

    fn exec(&self, inst: &Instance, dir: &Path, req: &ExecRequest, stdio: Stdio) -> Result<Exec> {
        let spec_path = dir.join("config.json");
        let spec = oci_spec::runtime::Spec::load(&spec_path)
            .map_err(|e| EngineError::Backend(format!("read {}: {e}", spec_path.display())))?;
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| EngineError::Backend("the bundle has no process".into()))?;
        process.set_args(Some(req.args.clone()));
        process.set_terminal(Some(req.tty));
        if let Some(w) = &req.workdir {
            process.set_cwd(w.into());
        }
        if let Some(u) = &req.user {
            // Resolved by the runtime inside the container, against its live /etc (as
            // Docker does): never by reading the container's files from the host.
            let mut pu = process.user().clone();
            pu.set_username(Some(u.clone()));
            process.set_user(pu);
        }
        if !req.env.is_empty() {
            let mut env = process.env().clone().unwrap_or_default();
            for kv in &req.env {
                let key = kv.split('=').next().unwrap_or_default();
                env.retain(|e| e.split('=').next() != Some(key));
                env.push(kv.clone());
            }
            process.set_env(Some(env));
        }
        let stdio = runtime_stdio(stdio);
        let p = self
            .runtime
            .exec_process(&inst.id, &process, stdio)
            .map_err(rt_err)?;
        Ok(Exec {
            pid: p.pid.as_raw(),
            pty_master: p.pty_master,
        })
    }

    fn pause(&self, inst: &Instance) -> Result<()> {
        self.runtime.pause(&inst.id).map_err(rt_err)
    }

    fn resume(&self, inst: &Instance) -> Result<()> {
        self.runtime.resume(&inst.id).map_err(rt_err)
    }

    fn paused(&self, inst: &Instance) -> bool {
        matches!(
            self.runtime.state(&inst.id).map(|s| s.status),
            Ok(vessel_container::Status::Paused)
        )
    }

    fn processes(&self, inst: &Instance) -> Result<Vec<i32>> {
        let pids = self.runtime.pids(&inst.id).map_err(rt_err)?;
        Ok(pids.into_iter().map(|p| p.as_raw()).collect())
    }

    fn usage(&self, inst: &Instance) -> Result<super::backend::Usage> {
        let s = self.runtime.stats(&inst.id).map_err(rt_err)?;
        // Its network namespace's interfaces but loopback, as its init sees them; none
        // of its own with --network host (the host's are not its traffic).
        let net = match (inst.pid, &inst.request.network) {
            (_, vessel_network::Mode::Host) => None,
            (Some(pid), _) => std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                .ok()
                .map(|t| net_dev_totals(&t)),
            (None, _) => None,
        };
        Ok(super::backend::Usage {
            cpu_ns: s.cpu_usage_ns,
            memory: s.memory_usage,
            memory_limit: s.memory_limit,
            pids: Some(s.pids_current),
            net,
            block: Some((s.io_read_bytes, s.io_write_bytes)),
        })
    }

    fn update(&self, inst: &Instance, limits: &super::backend::Limits) -> Result<()> {
        use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};
        let mut res = LinuxResources::default();
        if let Some(m) = limits.memory {
            let mut mem = LinuxMemory::default();
            mem.set_limit(Some(m as i64));
            // No swap unless --memory-swap asked for it (then it is left as it is).
            if inst.request.access.memory_swap.is_none() {
                mem.set_swap(Some(m as i64));
            }
            res.set_memory(Some(mem));
        }
        if limits.cpus.is_some() || limits.cpu_shares.is_some() || limits.cpuset_cpus.is_some() {
            let mut cpu = LinuxCpu::default();
            if let Some(c) = limits.cpus {
                let (quota, period) = spec::cpus_to_quota(c);
                cpu.set_quota(Some(quota));
                cpu.set_period(Some(period));
            }
            cpu.set_shares(limits.cpu_shares);
            cpu.set_cpus(limits.cpuset_cpus.clone());
            res.set_cpu(Some(cpu));
        }
        if let Some(p) = limits.pids_limit {
            let mut pids = LinuxPids::default();
            pids.set_limit(p);
            res.set_pids(Some(pids));
        }
        self.runtime.update(&inst.id, &res).map_err(rt_err)
    }

    fn cleanup(&self, inst: &Instance, _dir: &Path) -> Result<()> {
        let deleted = self.runtime.delete(&inst.id, true).map_err(rt_err);
        let unwired = match &inst.request.attachment {
            Some(att) => self
                .networks
                .unpublish(&inst.id, att)
                .map_err(EngineError::from),
            None => Ok(()),
        };
        deleted.and(unwired)
    }
}
