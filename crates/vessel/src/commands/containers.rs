//! `run`, `create`, `start`, `ps`, `logs`, `exec`, `stop`, `kill`, `wait`, `rm`, `inspect`.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::cli::{ExecArgs, Format, IsolationArg, LogsArgs, PsArgs, RunArgs};
use crate::{CmdResult, Failure, EXIT_ENGINE};
use vessel_engine::backend::{ExecRequest, Stdio};
use vessel_engine::catalogue::{Instance, Status};
use vessel_engine::logs::{self, Stream};
use vessel_engine::monitor::{self, Report};
use vessel_engine::options::RunOptions;
use vessel_engine::request::{parse_signal, Isolation, LogDriver};
use vessel_engine::{Engine, EngineError};

use super::images::human_age;

fn fail(e: EngineError) -> Failure {
    Failure::new(e.exit_code(), e)
}

/// Signals `vessel run` (attached) and `vessel exec` pass on to the process they started.
pub(super) const PROXIED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The signals an attached `run`/`start` forwards, and SIGCHLD.
fn proxied_and_chld() -> SigSet {
    let mut set = SigSet::empty();
    for s in PROXIED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// The flags of `run`/`create` as the engine's options.
fn run_options(a: &RunArgs) -> Result<RunOptions, Failure> {
    let health = vessel_engine::health::HealthOptions::from_flags(
        a.no_healthcheck,
        a.health_cmd.as_deref(),
        a.health_interval.as_deref(),
        a.health_timeout.as_deref(),
        a.health_start_period.as_deref(),
        a.health_start_interval.as_deref(),
        a.health_retries,
    )
    .map_err(|e| Failure::new(EXIT_ENGINE, e))?;
    Ok(RunOptions {
        health,
        expose: a.expose.clone(),
        publish_all: a.publish_all,
        isolation: isolation_of(a.isolation),
        interactive: a.interactive,
        tty: a.tty,
        // An attached terminal gets the size of ours; a detached one, the default.
        console_size: None,
        rm: a.rm,
        env: a.env.clone(),
        env_files: a.env_files.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        volumes: a.volumes.clone(),
        mounts: a.mounts.clone(),
        // `-v /path` is one of `volumes`.
        anonymous_volumes: Vec::new(),
        read_only: a.read_only,
        memory: a.memory.clone(),
        cpus: a.cpus.clone(),
        pids_limit: a.pids_limit,
        init: a.init,
        userns: a.userns,
        network: a.networks.first().cloned(),
        more_networks: a
            .networks
            .iter()
            .skip(1)
            .map(|n| vessel_engine::request::Join {
                network: n.clone(),
                ..Default::default()
            })
            .collect(),
        ip: a.ip.clone(),
        network_aliases: a.network_aliases.clone(),
        publish: a.publish.clone(),
        entrypoint: a.entrypoint.clone(),
        stop_signal: a.stop_signal.clone(),
        kernel: a.kernel.clone(),
        console: a.console,
        stop_timeout: a.stop_timeout,
        log_driver: a.log_driver.clone(),
        log_opts: a.log_opts.clone(),
        labels: a.labels.clone(),
        add_hosts: a.add_hosts.clone(),
        dns: a.dns.clone(),
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        ulimits: a.ulimits.clone(),
        tmpfs: a.tmpfs.clone(),
        restart: a.restart.clone(),
        label_files: a.label_files.clone(),
        dns_search: a.dns_search.clone(),
        access: vessel_engine::access::AccessOptions {
            privileged: a.privileged,
            devices: a.devices.clone(),
            security_opts: a.security_opts.clone(),
            sysctls: a.sysctls.clone(),
            pid: a.pid.clone(),
            ipc: a.ipc.clone(),
            shm_size: a.shm_size.clone(),
            group_add: a.group_add.clone(),
            cpu_shares: a.cpu_shares,
            cpuset_cpus: a.cpuset_cpus.clone(),
            memory_swap: a.memory_swap.clone(),
        },
        command: a.command.clone(),
    })
}

/// `--platform`: vessel runs linux/amd64 images (Docker's spellings of it taken).
pub fn check_platform(p: &str) -> Result<(), Failure> {
    match p.to_ascii_lowercase().as_str() {
        "linux/amd64" | "amd64" | "linux/x86_64" | "x86_64" | "linux/amd64/v1" => Ok(()),
        _ => Err(Failure::new(
            EXIT_ENGINE,
            format!("--platform {p}: vessel runs linux/amd64 images only"),
        )),
    }
}

/// `--pull` (and `--platform`), before the image is looked up, by Docker's rules: a
/// missing image is pulled (saying so, as Docker does, on stderr), `always` pulls first,
/// `never` leaves the lookup to fail. The pull uses the credentials of `vessel login`.
fn ensure_image(engine: &Engine, a: &RunArgs) -> Result<(), Failure> {
    use crate::cli::PullPolicy;
    if let Some(p) = &a.platform {
        check_platform(p)?;
    }
    let store = engine.store().map_err(fail)?;
    let present = match store.resolve(&a.image) {
        Ok(_) => true,
        Err(vessel_image::Error::ImageNotFound(_)) => false,
        Err(e) => return Err(Failure::new(EXIT_ENGINE, e)),
    };
    let fetch = match a.pull {
        PullPolicy::Always => true,
        PullPolicy::Missing => !present,
        PullPolicy::Never => false,
    };
    if !fetch {
        return Ok(());
    }
    let reference: vessel_image::Reference = a
        .image
        .parse()
        .map_err(|e: vessel_image::Error| Failure::new(EXIT_ENGINE, e.to_string()))?;
    if !present {
        eprintln!("Unable to find image '{}' locally", a.image);
    }
    let opts = vessel_image::registry::RegistryOptions {
        stored_credentials: true,
        ..Default::default()
    };
    let bars = crate::progress::Bars::new(false);
    vessel_image::registry::pull(store, &reference, &opts, &bars)
        .map_err(|e| Failure::new(EXIT_ENGINE, e))?;
    Ok(())
}

fn create_instance(engine: &Engine, a: &RunArgs) -> Result<Instance, Failure> {
    ensure_image(engine, a)?;
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
    // `-e NAME` takes NAME's value from our environment, as Docker's client does.
    let caller_env = |k: &str| std::env::var(k).ok();
    let inst = engine
        .create_from_options(&a.image, a.name.clone(), &run_options(a)?, &caller_env)
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
    if !a.detach {
        // Before the monitor starts the process, which may write at once: a signal sent
        // to us once its first output is seen must be waiting for `start_one` to forward
        // it, not kill us with its default action first.
        let _ = proxied_and_chld().thread_block();
    }
    early.begin(&inst).map_err(fail)?;
    let code = start_one(engine, &inst, !a.detach, warm, Some(early))?;
    if a.detach {
        println!("{}", inst.id);
    }
    Ok(code)
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
pub(super) struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    pub(super) fn enable(on: bool) -> RawMode {
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
        // of the monitor's exit without polling. (`run` blocked them already.)
        let _ = proxied_and_chld().thread_block();
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

pub(super) fn short(id: &str, full: bool) -> &str {
    if full {
        id
    } else {
        &id[..12]
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

/// The PORTS column: each published port as `IP:HOST->PORT/PROTO`.
fn ports_text(i: &Instance) -> String {
    let ports: Vec<String> = i
        .request
        .published()
        .iter()
        .map(|p| p.to_string())
        .collect();
    ports.join(", ")
}

/// `vessel ps`.
pub fn ps(engine: &Engine, a: &PsArgs) -> CmdResult {
    let all = engine.list().map_err(|e| Failure::new(1, e))?;
    let filters = PsFilter::parse(&a.filter)?;
    let state = |i: &Instance| -> &'static str { engine.ps_state(i).0 };
    // A status filter shows what it names, running or not (Docker's rule).
    let any_status = filters.has("status") || filters.has("exited");
    // -n N / -l: the last created, in any state (Docker's rule); the list is newest first.
    let last = match (a.last, a.latest) {
        (Some(n), _) => usize::try_from(n).ok().filter(|&n| n > 0),
        (None, true) => Some(1),
        (None, false) => None,
    };
    let mut shown: Vec<&Instance> = all
        .iter()
        .filter(|i| a.all || any_status || last.is_some() || i.status == Status::Running)
        .filter(|i| filters.matches(engine, i, state(i)))
        .collect();
    if let Some(n) = last {
        shown.truncate(n);
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for i in shown {
            let _ = writeln!(out, "{}", short(&i.id, a.no_trunc));
        }
        return Ok(0);
    }
    // `-s`: what it wrote, and that plus its image (Docker's "2B (virtual 4MB)").
    let image_sizes: std::collections::HashMap<String, u64> = if a.size {
        engine
            .store()
            .and_then(|s| Ok(s.list()?))
            .map(|l| l.into_iter().map(|r| (r.id.to_string(), r.size)).collect())
            .unwrap_or_default()
    } else {
        Default::default()
    };
    let size_text = |i: &Instance| -> String {
        let rw = engine.writable_size(i);
        let image = image_sizes.get(&i.image_id).copied().unwrap_or(0);
        format!(
            "{} (virtual {})",
            super::images::human_size(rw),
            super::images::human_size(rw + image)
        )
    };
    if a.format == Format::Json {
        let mut v = sorted_json(&shown.iter().map(|i| engine.inspect(i)).collect::<Vec<_>>());
        if a.size {
            // As the API's list with size=1: bytes written, and that plus the image.
            for (doc, i) in v.as_array_mut().into_iter().flatten().zip(&shown) {
                let rw = engine.writable_size(i);
                doc["SizeRw"] = serde_json::json!(rw);
                doc["SizeRootFs"] =
                    serde_json::json!(rw + image_sizes.get(&i.image_id).copied().unwrap_or(0));
            }
        }
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
        return Ok(0);
    }
    let template_rows = || {
        shown
            .iter()
            .map(|i| {
                let fields = serde_json::json!({
                    "ID": short(&i.id, a.no_trunc),
                    "Image": i.image,
                    "Command": command_text(i, a.no_trunc),
                    "CreatedAt": i.created,
                    "RunningFor": human_age(&i.created).replace(" ago", ""),
                    "Ports": ports_text(i),
                    "State": state(i),
                    "Status": engine.ps_state(i).1,
                    "Names": i.name,
                    "Labels": i.request.labels,
                    "Networks": i.request.network.as_str(),
                    "Isolation": i.request.isolation.as_str(),
                    "Size": if a.size { size_text(i) } else { String::new() },
                });
                match fields {
                    serde_json::Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                }
            })
            .collect()
    };
    if crate::template::print_if_template(
        &a.format,
        template_rows,
        &[
            ("ID", "CONTAINER ID"),
            ("CreatedAt", "CREATED AT"),
            ("RunningFor", "CREATED"),
        ],
    )? {
        return Ok(0);
    }
    let mut headers = vec![
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "ISOLATION",
        "NAMES",
    ];
    if a.size {
        headers.push("SIZE");
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|i| {
            let mut row = vec![
                short(&i.id, a.no_trunc).to_string(),
                i.image.clone(),
                command_text(i, a.no_trunc),
                human_age(&i.created),
                engine.ps_state(i).1,
                ports_text(i),
                i.request.isolation.as_str().to_string(),
                i.name.clone(),
            ];
            if a.size {
                row.push(size_text(i));
            }
            row
        })
        .collect();
    super::images::print_rows(&mut out, &headers, &rows);
    Ok(0)
}

/// `ps --filter`: KEY=VALUE pairs; a key given twice matches either value, keys differ
/// and all must match.
struct PsFilter(Vec<(String, String)>);

impl PsFilter {
    fn parse(given: &[String]) -> Result<PsFilter, Failure> {
        let mut out = Vec::new();
        for f in given {
            let (k, v) = f.split_once('=').ok_or_else(|| {
                Failure::new(
                    1,
                    format!("bad format of filter {f:?} (expected name=value)"),
                )
            })?;
            const KEYS: [&str; 8] = [
                "id",
                "name",
                "label",
                "status",
                "ancestor",
                "exited",
                "isolation",
                "health",
            ];
            if !KEYS.contains(&k) {
                return Err(Failure::new(
                    1,
                    format!(
                        "invalid filter {k:?}: vessel filters on {}",
                        KEYS.join(", ")
                    ),
                ));
            }
            if k == "status"
                && ![
                    "created",
                    "running",
                    "paused",
                    "restarting",
                    "exited",
                    "dead",
                    "removing",
                ]
                .contains(&v)
            {
                return Err(Failure::new(1, format!("invalid filter 'status={v}'")));
            }
            if k == "health" {
                Engine::check_health_filter(v).map_err(|e| Failure::new(1, e))?;
            }
            if k == "exited" && v.parse::<i32>().is_err() {
                return Err(Failure::new(
                    1,
                    format!("invalid filter 'exited={v}': not an exit code"),
                ));
            }
            out.push((k.to_string(), v.to_string()));
        }
        Ok(PsFilter(out))
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    fn matches(&self, engine: &Engine, i: &Instance, state: &str) -> bool {
        let keys: std::collections::BTreeSet<&str> =
            self.0.iter().map(|(k, _)| k.as_str()).collect();
        let grouped: Vec<(String, Vec<String>)> = keys
            .into_iter()
            .map(|key| {
                let vals = self.0.iter().filter(|(k, _)| k == key);
                (key.to_string(), vals.map(|(_, v)| v.clone()).collect())
            })
            .collect();
        vessel_engine::filters::passes(&grouped, |key, v| match key {
            "id" => i.id.starts_with(v),
            "name" => i.name.contains(v),
            "label" => vessel_engine::filters::label(&i.request.labels, v),
            "status" => state == v,
            "ancestor" => {
                i.image == *v
                    || i.image_id
                        .trim_start_matches("sha256:")
                        .starts_with(v.trim_start_matches("sha256:"))
                    || engine
                        .store()
                        .ok()
                        .and_then(|s| s.resolve(v).ok())
                        .is_some_and(|img| img.id.to_string() == i.image_id)
            }
            "exited" => {
                i.status == Status::Exited
                    && i.exit_code.map(|c| c.to_string()).as_deref() == Some(v)
            }
            "isolation" => i.request.isolation.as_str() == v,
            "health" => engine.health_status(i) == v,
            _ => false,
        })
    }
}

/// `docs` as a JSON value, whose objects print with their keys sorted: `inspect` and
/// `ps --format json` have always printed them so.
fn sorted_json(docs: &[vessel_engine::inspect::ContainerJson]) -> serde_json::Value {
    serde_json::to_value(docs).unwrap_or_default()
}

/// `vessel inspect`: instances, or images when no instance matches.
pub fn inspect(
    engine: &Engine,
    names: &[String],
    format: Option<&crate::template::Format>,
) -> CmdResult {
    let mut docs = Vec::new();
    for n in names {
        match engine.get(n) {
            Ok(i) => docs.push(engine.inspect(&i)),
            Err(EngineError::NoSuchInstance(_)) => {
                if let Ok(store) = engine.store() {
                    if store.resolve(n).is_ok() {
                        return super::images::inspect(store, names, format);
                    }
                }
                return Err(Failure::new(1, format!("no such instance or image: {n}")));
            }
            Err(e) => return Err(Failure::new(1, e)),
        }
    }
    let docs = match sorted_json(&docs) {
        serde_json::Value::Array(d) => d,
        _ => Vec::new(),
    };
    crate::template::print_inspect(docs, format)?;
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

/// `vessel restart`: each instance stopped (if it runs) then started in the background,
/// in turn; its name printed, as Docker does.
pub fn restart(engine: &Engine, time: Option<u32>, names: &[String]) -> CmdResult {
    let mut status = 0;
    for n in names {
        let r = engine.stop(n, time).and_then(|_| engine.get(n));
        let started = match r {
            Ok(inst) => {
                let warm = Engine::warm_up(inst.request.isolation, inst.request.userns);
                start_one(engine, &inst, false, warm, None)
            }
            Err(e) => Err(Failure::new(1, e)),
        };
        match started {
            Ok(_) => println!("{n}"),
            Err(f) => {
                eprintln!("vessel: {}", f.message);
                status = 1;
            }
        }
    }
    Ok(status)
}

/// `vessel rm`.
pub fn rm(engine: &Engine, force: bool, volumes: bool, names: &[String]) -> CmdResult {
    each(names, |n| engine.remove_with(n, force, volumes))
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
pub(super) fn each(names: &[String], f: impl Fn(&str) -> Result<(), EngineError>) -> CmdResult {
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
