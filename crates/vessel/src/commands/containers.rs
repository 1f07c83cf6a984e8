//! `run`, `create`, `start`, `ps`, `logs`, `exec`, `stop`, `kill`, `wait`, `rm`, `inspect`.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde_json::json;

use crate::cli::{ExecArgs, Format, IsolationArg, LogsArgs, PsArgs, RunArgs};
use crate::{CmdResult, Failure, EXIT_ENGINE};
use vessel_engine::backend::{ExecRequest, Stdio};
use vessel_engine::catalogue::{Instance, Status};
use vessel_engine::logs::{self, Stream};
use vessel_engine::monitor::{self, Report};
use vessel_engine::request::{
    parse_signal, parse_size, ExtraHost, Isolation, LogConfig, LogDriver, RunRequest, Tmpfs,
    Ulimit, Volume,
};
use vessel_engine::{CreateSpec, Engine, EngineError};

use super::images::{human_age, print_table};

fn fail(e: EngineError) -> Failure {
    Failure::new(e.exit_code(), e)
}

/// Signals `vessel run` (attached) and `vessel exec` pass on to the process they started.
const PROXIED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Builds the request from the flags and the image config.
fn build_request(
    a: &RunArgs,
    config: &oci_spec::image::ImageConfiguration,
    id: &str,
) -> Result<RunRequest, EngineError> {
    if a.userns && a.isolation == IsolationArg::Vm {
        // The guest kernel is the boundary; its root is no host uid at all.
        return Err(EngineError::InvalidFlag(
            "--userns applies to containers: a microVM's root is confined by its own kernel, not by a user namespace".into(),
        ));
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
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue, // Docker drops unset variables named without a value
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
    let volumes = a
        .volumes
        .iter()
        .map(|v| Volume::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
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
    let ports = a
        .publish
        .iter()
        .map(|p| vessel_network::PortMap::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    if !ports.is_empty() && !matches!(network, vessel_network::Mode::Bridge(_)) {
        return Err(EngineError::InvalidFlag(format!(
            "-p needs a bridge network; --network {} has no ports to publish",
            network.as_str()
        )));
    }
    if a.isolation == IsolationArg::Vm && network == vessel_network::Mode::Host {
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
    if a.isolation == IsolationArg::Vm {
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
    }
    // Checked now, so that a bad name fails the run before anything is created.
    vessel_container::spec::capabilities_with(&a.cap_add, &a.cap_drop)
        .map_err(EngineError::InvalidFlag)?;
    let mut labels: std::collections::BTreeMap<String, String> =
        c.labels().clone().unwrap_or_default().into_iter().collect();
    for l in &a.labels {
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
    Ok(RunRequest {
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
        tmpfs: a
            .tmpfs
            .iter()
            .map(|t| Tmpfs::parse(t))
            .collect::<Result<_, _>>()?,
        isolation: isolation_of(a.isolation),
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
        stop_signal,
        stop_timeout: a.stop_timeout.unwrap_or(10),
        kernel: match &a.kernel {
            Some(k) if a.isolation != IsolationArg::Vm => {
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

/// `--env-file`: `KEY=VALUE` lines, or `KEY` to take the caller's value; blank lines and
/// `#` comments skipped. At most 1 MiB.
fn read_env_file(path: &std::path::Path) -> Result<Vec<String>, EngineError> {
    use std::io::Read;
    let bad = |e: String| EngineError::InvalidFlag(format!("--env-file {}: {e}", path.display()));
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

fn create_instance(engine: &Engine, a: &RunArgs) -> Result<Instance, Failure> {
    if let Some(f) = &a.cidfile {
        if f.exists() {
            return Err(Failure::new(
                EXIT_ENGINE,
                format!(
                    "container ID file found, make sure the other container isn't running or delete {}",
                    f.display()
                ),
            ));
        }
    }
    let inst = engine
        .create(
            CreateSpec {
                image: a.image.clone(),
                name: a.name.clone(),
            },
            |_, config, id| build_request(a, config, id),
        )
        .map_err(fail)?;
    if let Some(f) = &a.cidfile {
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(f)
            .and_then(|mut file| std::io::Write::write_all(&mut file, inst.id.as_bytes()));
        if let Err(e) = written {
            return Err(Failure::new(
                EXIT_ENGINE,
                format!("write the container ID file {}: {e}", f.display()),
            ));
        }
    }
    Ok(inst)
}

pub fn isolation_of(a: IsolationArg) -> Isolation {
    match a {
        IsolationArg::Container => Isolation::Container,
        IsolationArg::Vm => Isolation::Vm,
    }
}

/// `vessel run`.
/// `warm` comes from [`Engine::warm_up`] and `early` from [`monitor::fork_early`], both
/// called before the engine was opened.
pub fn run(
    engine: &Engine,
    a: &RunArgs,
    warm: Option<Box<dyn std::any::Any>>,
    mut early: monitor::Spawned,
) -> CmdResult {
    let inst = match create_instance(engine, a) {
        Ok(i) => i,
        Err(f) => {
            early.abandon();
            return Err(f);
        }
    };
    tracing::debug!("run: created");
    early.begin(&inst.id).map_err(fail)?;
    start_one(engine, &inst, !a.detach, warm, Some(early))
}

/// `vessel create`.
pub fn create(engine: &Engine, a: &RunArgs) -> CmdResult {
    let inst = create_instance(engine, a)?;
    println!("{}", inst.id);
    Ok(0)
}

/// `vessel start`.
pub fn start(engine: &Engine, attach: bool, names: &[String]) -> CmdResult {
    let mut status = 0;
    for n in names {
        let inst = engine.get(n).map_err(|e| Failure::new(1, e))?;
        if inst.status == Status::Running {
            if !attach {
                println!("{n}");
            }
            continue;
        }
        let warm = Engine::warm_up(inst.request.isolation, inst.request.userns);
        let code = start_one(engine, &inst, attach, warm, None)?;
        if attach {
            status = code;
        } else {
            println!("{n}");
        }
    }
    Ok(status)
}

/// Puts the terminal in raw mode for the life of the guard.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enable(on: bool) -> RawMode {
        if !on || !std::io::stdin().is_terminal() {
            return RawMode(None);
        }
        let stdin = std::io::stdin();
        let Ok(orig) = nix::sys::termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                orig,
            );
        }
    }
}

/// Starts `inst` through its monitor (`early`, one forked ahead and told the instance,
/// or a new one); attached, waits for the end and returns its status. `warm` (from
/// [`Engine::warm_up`]) is dropped once the monitor has reported the start.
fn start_one(
    engine: &Engine,
    inst: &Instance,
    attached: bool,
    warm: Option<Box<dyn std::any::Any>>,
    early: Option<monitor::Spawned>,
) -> CmdResult {
    let req = &inst.request;
    let mut blocked = SigSet::empty();
    for s in PROXIED {
        blocked.add(*s);
    }
    if attached {
        // Taken synchronously below and forwarded to the instance; SIGCHLD too, to learn
        // of the monitor's exit without polling.
        let mut with_chld = blocked;
        with_chld.add(Signal::SIGCHLD);
        let _ = with_chld.thread_block();
    }
    let raw = RawMode::enable(attached && req.tty && req.interactive);
    let mut m = match early {
        Some(m) => m,
        None => monitor::spawn(
            engine.config(),
            &inst.id,
            attached,
            req.interactive,
            req.tty,
        )
        .map_err(fail)?,
    };
    let first = m.next();
    drop(warm);
    let pid = match first {
        Some(Report::Started { pid }) => pid,
        Some(Report::Error { code, message }) => {
            drop(raw);
            let _ = m.wait();
            return Err(Failure::new(code, message));
        }
        Some(Report::Exited { code } | Report::Done { code }) => return Ok(code as u8),
        None => {
            drop(raw);
            let st = m.wait();
            return Err(Failure::new(
                125,
                format!(
                    "the monitor of {} exited before starting it ({st:?})",
                    inst.name
                ),
            ));
        }
    };
    if !attached {
        println!("{}", inst.id);
        return Ok(0);
    }
    let target = nix::unistd::Pid::from_raw(pid);
    // The proxied signals and SIGCHLD (the monitor's exit), blocked above, arrive here.
    let mut waitset = blocked;
    waitset.add(Signal::SIGCHLD);
    let signals = SignalFd::with_flags(&waitset, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Failure::new(125, format!("signalfd: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    let status = |st: std::process::ExitStatus| match (st.code(), st.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => (128 + s) as u8,
        _ => 125,
    };
    let code = loop {
        if let Ok(Some(st)) = m.try_wait() {
            break status(st);
        }
        let (report, signal) = if m.buffered() {
            (true, false)
        } else {
            let mut fds = [
                PollFd::new(m.report_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            if poll(&mut fds, PollTimeout::from(1000u16)).is_err() {
                continue;
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if signal {
            while let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig != libc::SIGCHLD {
                    if let Ok(s) = Signal::try_from(sig) {
                        let _ = nix::sys::signal::kill(target, s);
                    }
                }
            }
        }
        if report {
            match m.next() {
                // Everything is done, removal included: the monitor's own exit is not
                // worth waiting for.
                Some(Report::Done { code }) => break code.clamp(0, 255) as u8,
                Some(_) => {}
                None => break m.wait().map(status).unwrap_or(125),
            }
        }
    };
    drop(raw);
    Ok(code)
}

fn short(id: &str, full: bool) -> &str {
    if full {
        id
    } else {
        &id[..12]
    }
}

fn status_text(i: &Instance) -> String {
    let age = |t: &Option<String>| {
        t.as_deref()
            .map(human_age)
            .unwrap_or_default()
            .replace(" ago", "")
    };
    match i.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", age(&i.started_at)),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            i.exit_code.unwrap_or(-1),
            age(&i.finished_at)
        ),
        Status::Dead => "Dead".into(),
    }
}

fn command_text(i: &Instance, full: bool) -> String {
    let c = i.request.args.join(" ");
    let c = if !full && c.chars().count() > 20 {
        format!("{}…", c.chars().take(19).collect::<String>())
    } else {
        c
    };
    format!("\"{c}\"")
}

/// `vessel ps`.
pub fn ps(engine: &Engine, a: &PsArgs) -> CmdResult {
    let all = engine.list().map_err(|e| Failure::new(1, e))?;
    let shown: Vec<&Instance> = all
        .iter()
        .filter(|i| a.all || i.status == Status::Running)
        .collect();
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for i in shown {
            let _ = writeln!(out, "{}", short(&i.id, a.no_trunc));
        }
        return Ok(0);
    }
    if a.format == Format::Json {
        let v: Vec<_> = shown.iter().map(|i| instance_json(engine, i)).collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
        return Ok(0);
    }
    let rows: Vec<[String; 7]> = shown
        .iter()
        .map(|i| {
            [
                short(&i.id, a.no_trunc).to_string(),
                i.image.clone(),
                command_text(i, a.no_trunc),
                human_age(&i.created),
                status_text(i),
                i.request.isolation.as_str().to_string(),
                i.name.clone(),
            ]
        })
        .collect();
    print_table(
        &mut out,
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "ISOLATION",
            "NAMES",
        ],
        &rows,
    );
    Ok(0)
}

fn instance_json(engine: &Engine, i: &Instance) -> serde_json::Value {
    let r = &i.request;
    let mut mounts: Vec<_> = r
        .volumes
        .iter()
        .map(|v| json!({"Type": "bind", "Source": v.source, "Destination": v.target, "RW": !v.read_only}))
        .collect();
    if r.isolation == Isolation::Container {
        mounts.insert(0, json!({"Type": "overlay", "Destination": "/", "Upper": engine.instance_dir(&i.id).join("upper"), "RW": !r.read_only}));
    }
    json!({
        "Id": i.id,
        "Name": i.name,
        "Created": i.created,
        "Path": r.args.first(),
        "Args": r.args.get(1..).unwrap_or_default(),
        "Image": i.image_id,
        "ImageName": i.image,
        "State": {
            "Status": i.status.as_str(),
            "Running": i.status == Status::Running,
            "Dead": i.status == Status::Dead,
            "Pid": if i.status == Status::Running { i.pid.unwrap_or(0) } else { 0 },
            "ExitCode": i.exit_code.unwrap_or(0),
            "OOMKilled": i.oom_killed,
            "Error": i.error.clone().unwrap_or_default(),
            "StartedAt": i.started_at,
            "FinishedAt": i.finished_at,
            "MonitorPid": i.monitor.map(|m| m.0),
            // A microVM's jailed VMM process (engine::vm_jail), while it runs.
            "VmmPid": vessel_engine::vm_jail::vmm_pid(&engine.instance_dir(&i.id)),
        },
        "HostConfig": {
            "Isolation": r.isolation.as_str(),
            "Memory": r.memory.unwrap_or(0),
            "NanoCpus": r.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
            "PidsLimit": r.pids_limit,
            "ReadonlyRootfs": r.read_only,
            "Binds": r.volumes.iter().map(|v| format!("{}:{}{}", v.source, v.target, if v.read_only { ":ro" } else { "" })).collect::<Vec<_>>(),
            "AutoRemove": r.auto_remove,
            "Init": r.init,
            "UsernsMode": if r.userns { "private" } else { "host" },
            "NetworkMode": r.network.as_str(),
            "PortBindings": port_bindings(&r.ports),
            "LogConfig": {"Type": r.log.driver.as_str(), "Config": r.log.options},
            "CapAdd": r.cap_add,
            "CapDrop": r.cap_drop,
            "Ulimits": r.ulimits.iter().map(|u| json!({"Name": u.name, "Soft": u.soft as i64, "Hard": u.hard as i64})).collect::<Vec<_>>(),
            "Tmpfs": r.tmpfs.iter().map(|t| (t.path.clone(), serde_json::Value::from(t.options.join(",")))).collect::<serde_json::Map<_, _>>(),
            "ExtraHosts": r.extra_hosts.iter().map(|h| format!("{}:{}", h.name, h.ip)).collect::<Vec<_>>(),
            "Dns": r.dns,
        },
        "Config": {
            "Hostname": r.hostname,
            "User": r.user,
            "Env": r.env,
            "Cmd": r.args,
            "WorkingDir": r.workdir,
            "Tty": r.tty,
            "OpenStdin": r.interactive,
            "Image": i.image,
            "StopSignal": r.stop_signal,
            "StopTimeout": r.stop_timeout,
            "Labels": r.labels,
        },
        "Mounts": mounts,
        "NetworkSettings": network_settings(r),
        "LogPath": engine.log_path(&i.id),
    })
}

/// Docker's shape: `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`.
fn port_bindings(ports: &[vessel_network::PortMap]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for p in ports {
        let key = format!("{}/{}", p.container_port, p.proto.as_str());
        let entry = json!({
            "HostIp": p.host_ip.map(|a| a.to_string()).unwrap_or_default(),
            "HostPort": p.host_port.to_string(),
        });
        match m.get_mut(&key).and_then(|v| v.as_array_mut()) {
            Some(list) => list.push(entry),
            None => {
                m.insert(key, json!([entry]));
            }
        }
    }
    serde_json::Value::Object(m)
}

fn network_settings(r: &RunRequest) -> serde_json::Value {
    let Some(att) = &r.attachment else {
        return json!({"IPAddress": "", "Ports": {}, "Networks": {}});
    };
    json!({
        "IPAddress": att.ip.to_string(),
        "IPPrefixLen": att.prefix,
        "Gateway": att.gateway.to_string(),
        "Ports": port_bindings(&att.ports),
        "Networks": {
            att.network.clone(): {
                "NetworkID": att.network_id,
                "IPAddress": att.ip.to_string(),
                "IPPrefixLen": att.prefix,
                "Gateway": att.gateway.to_string(),
                "Bridge": att.bridge,
            }
        },
    })
}

/// `vessel inspect`: instances, or images when no instance matches.
pub fn inspect(engine: &Engine, names: &[String]) -> CmdResult {
    let mut docs = Vec::new();
    for n in names {
        match engine.get(n) {
            Ok(i) => docs.push(instance_json(engine, &i)),
            Err(EngineError::NoSuchInstance(_)) => {
                if let Ok(store) = engine.store() {
                    if store.resolve(n).is_ok() {
                        return super::images::inspect(store, names);
                    }
                }
                return Err(Failure::new(1, format!("no such instance or image: {n}")));
            }
            Err(e) => return Err(Failure::new(1, e)),
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&docs).unwrap_or_default()
    );
    Ok(0)
}

/// `vessel logs`.
pub fn logs(engine: &Engine, a: &LogsArgs) -> CmdResult {
    let inst = engine.get(&a.instance).map_err(|e| Failure::new(1, e))?;
    if inst.request.log.driver != LogDriver::JsonFile {
        // Docker's words for a driver it cannot read back.
        return Err(Failure::new(
            1,
            format!(
                "configured logging driver does not support reading: {} logs with --log-driver {}",
                inst.name,
                inst.request.log.driver.as_str()
            ),
        ));
    }
    let path = engine.log_path(&inst.id);
    let read_err = |e: std::io::Error| Failure::new(1, format!("read {}: {e}", path.display()));
    let mut reader = logs::Reader::new(&path);
    let print = |e: &logs::Entry| -> bool {
        let line = if a.timestamps {
            format!("{} {}", e.time, e.log)
        } else {
            e.log.clone()
        };
        match e.stream {
            Stream::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Stream::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
        }
        .is_ok()
    };
    // The whole log streams through; only --tail's last lines are held.
    let going = match a.tail {
        Some(n) => {
            let mut last = std::collections::VecDeque::with_capacity(n.min(4096));
            reader
                .read(&mut |e| {
                    if n > 0 {
                        if last.len() == n {
                            last.pop_front();
                        }
                        last.push_back(e);
                    }
                    true
                })
                .map_err(read_err)?;
            last.iter().all(print)
        }
        None => reader.read(&mut |e| print(&e)).map_err(read_err)?,
    };
    let _ = std::io::stdout().flush();
    if !going || !a.follow {
        return Ok(0);
    }
    loop {
        let running = engine
            .get(&inst.id)
            .map(|i| i.status == Status::Running)
            .unwrap_or(false);
        let mut any = false;
        let going = reader
            .read(&mut |e| {
                any = true;
                print(&e)
            })
            .map_err(read_err)?;
        let _ = std::io::stdout().flush();
        if !going || (!running && !any) {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `vessel exec`.
pub fn exec(engine: &Engine, a: &ExecArgs) -> CmdResult {
    let inst = engine.get(&a.instance).map_err(|e| Failure::new(1, e))?;
    if inst.status != Status::Running {
        return Err(Failure::new(
            1,
            format!("instance {} is not running", inst.name),
        ));
    }
    let backend = engine.backend(inst.request.isolation).map_err(fail)?;
    let req = ExecRequest {
        args: a.command.clone(),
        env: a.env.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        tty: a.tty,
    };
    let null = || -> Result<OwnedFd, Failure> {
        std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| Failure::new(125, format!("open /dev/null: {e}")))
    };
    // Without a terminal the process gets pipes that we copy, never our own descriptors:
    // a terminal of ours in the container would let it inject input (TIOCSTI) or read
    // what the user types elsewhere. Docker and containerd always proxy too.
    let mut relay = None;
    let stdio = if a.tty {
        Stdio::Pty
    } else if a.detach {
        Stdio::Fds {
            stdin: null()?,
            stdout: null()?,
            stderr: null()?,
        }
    } else {
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Failure::new(125, format!("pipe: {e}")))
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin, stdin_w) = if a.interactive {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (null()?, None)
        };
        relay = Some(ExecRelay {
            out: out_r,
            err: err_r,
            stdin: stdin_w,
        });
        Stdio::Fds {
            stdin,
            stdout: out_w,
            stderr: err_w,
        }
    };
    let dir = engine.instance_dir(&inst.id);
    // Blocked before the backend starts anything, so none is lost; a thread below passes
    // them on. A microVM's relay process inherits the mask and forwards what it is sent
    // to the guest process.
    let mut proxied = SigSet::empty();
    if !a.detach {
        for s in PROXIED {
            proxied.add(*s);
        }
        let _ = proxied.thread_block();
    }
    let p = backend.exec(&inst, &dir, &req, stdio).map_err(fail)?;
    if a.detach {
        return Ok(0);
    }
    let target = nix::unistd::Pid::from_raw(p.pid);
    std::thread::spawn(move || loop {
        if let Ok(s) = proxied.wait() {
            let _ = nix::sys::signal::kill(target, s);
        }
    });
    let raw = RawMode::enable(a.tty && a.interactive);
    if let Some(master) = &p.pty_master {
        proxy_pty(master, a.interactive);
    }
    if let Some(r) = relay {
        r.run(target);
    }
    let code = loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p.pid), None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => break c,
            Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Failure::new(
                    125,
                    format!("wait for the exec'd process: {e}"),
                ))
            }
        }
    };
    drop(raw);
    Ok(code as u8)
}

/// The pipes of an exec'd process without a terminal, copied to and from our stdio.
struct ExecRelay {
    out: OwnedFd,
    err: OwnedFd,
    stdin: Option<OwnedFd>,
}

impl ExecRelay {
    /// Copies until the process has exited and its pipes hold nothing more (a background
    /// process of the container that keeps them open does not hold us), or both close.
    fn run(self, pid: nix::unistd::Pid) {
        let ExecRelay { out, err, stdin } = self;
        let mut stdin = stdin;
        let mut open = [true, true];
        let mut stdin_open = stdin.is_some();
        let mut exited = false;
        let mut buf = vec![0u8; 64 * 1024];
        while open[0] || open[1] {
            if !exited {
                // WNOWAIT: the caller reaps it.
                exited = matches!(
                    nix::sys::wait::waitid(
                        nix::sys::wait::Id::Pid(pid),
                        nix::sys::wait::WaitPidFlag::WEXITED
                            | nix::sys::wait::WaitPidFlag::WNOHANG
                            | nix::sys::wait::WaitPidFlag::WNOWAIT,
                    ),
                    Ok(st) if st.pid().is_some()
                );
            }
            let stdin_fd = std::io::stdin();
            let mut fds = vec![
                PollFd::new(out.as_fd(), PollFlags::POLLIN),
                PollFd::new(err.as_fd(), PollFlags::POLLIN),
            ];
            if stdin_open {
                fds.push(PollFd::new(stdin_fd.as_fd(), PollFlags::POLLIN));
            }
            let timeout = if exited { 0u16 } else { 50 };
            let n = match poll(&mut fds, PollTimeout::from(timeout)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
            if n == 0 {
                if exited {
                    break;
                }
                continue;
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            for (i, (src, dst)) in [(&out, 1), (&err, 2)].into_iter().enumerate() {
                if !open[i] || !ready[i] {
                    continue;
                }
                match nix::unistd::read(src, &mut buf) {
                    Ok(0) | Err(_) => open[i] = false,
                    // SAFETY: 1 and 2 are open for the life of the process.
                    Ok(k) => write_all(unsafe { BorrowedFd::borrow_raw(dst) }, &buf[..k]),
                }
            }
            if stdin_open && ready.get(2).copied().unwrap_or(false) {
                match nix::unistd::read(stdin_fd.as_fd(), &mut buf) {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        stdin = None; // EOF reaches the process
                    }
                    Ok(k) => {
                        if let Some(w) = &stdin {
                            write_all(w.as_fd(), &buf[..k]);
                        }
                    }
                }
            }
        }
        drop(stdin);
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) | Err(_) => return,
            Ok(k) => data = &data[k..],
        }
    }
}

/// Copies between our terminal and a pty master until the master closes.
fn proxy_pty(master: &OwnedFd, stdin: bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize on fds we hold.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
    let mut stdin_open = stdin;
    let mut buf = [0u8; 16 * 1024];
    loop {
        // SAFETY: fd 0 is open for the life of the process.
        let fd0 = unsafe { BorrowedFd::borrow_raw(0) };
        let mut fds = vec![PollFd::new(
            std::os::fd::AsFd::as_fd(master),
            PollFlags::POLLIN,
        )];
        if stdin_open {
            fds.push(PollFd::new(fd0, PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let m_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let in_ready = stdin_open && fds[1].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        if m_ready {
            match nix::unistd::read(master, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(&buf[..n]);
                    let _ = o.flush();
                }
            }
        }
        if in_ready {
            match nix::unistd::read(fd0, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = nix::unistd::write(master, &buf[..n]);
                }
            }
        }
    }
}

/// `vessel stop`.
pub fn stop(engine: &Engine, time: Option<u32>, names: &[String]) -> CmdResult {
    // In parallel, as Docker does: N stubborn instances take one timeout, not N.
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| s.spawn(move || engine.stop(n, time).map(|_| ())))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(EngineError::Internal("stop panicked".into())))
            })
            .collect()
    });
    let mut status = 0;
    for (n, r) in names.iter().zip(results) {
        match r {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("vessel: {e}");
                status = 1;
            }
        }
    }
    Ok(status)
}

/// `vessel kill`.
pub fn kill(engine: &Engine, signal: &str, names: &[String]) -> CmdResult {
    let sig = parse_signal(signal).map_err(|e| Failure::new(1, e))?;
    each(names, |n| engine.get(n).and_then(|i| engine.kill(&i, sig)))
}

/// `vessel rm`.
pub fn rm(engine: &Engine, force: bool, names: &[String]) -> CmdResult {
    each(names, |n| engine.remove(n, force))
}

/// `vessel wait`.
pub fn wait(engine: &Engine, names: &[String]) -> CmdResult {
    let mut status = 0;
    for n in names {
        match engine.wait(n, None) {
            Ok(i) => println!("{}", i.exit_code.unwrap_or(-1)),
            Err(e) => {
                eprintln!("vessel: {e}");
                status = 1;
            }
        }
    }
    Ok(status)
}

/// Runs `f` on each name, printing it on success (as Docker does) and errors as they come.
fn each(names: &[String], f: impl Fn(&str) -> Result<(), EngineError>) -> CmdResult {
    let mut status = 0;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("vessel: {e}");
                status = 1;
            }
        }
    }
    Ok(status)
}
