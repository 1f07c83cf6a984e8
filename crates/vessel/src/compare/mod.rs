//! `vessel compare`: measures the seed's comparison table (hypervisor vs container engine)
//! on this host, for one image, with both of vessel's isolations side by side.
//!
//! It is a client of vessel like any user: every instance is started by running the
//! `vessel` binary itself (`run --rm`, `run -d`, `inspect`, `rm -f`), so the times are
//! what a user sees. Memory and disk are read from the host; what an instance can see
//! is read from inside by the static probe (`vessel-init probe`), added to a derived
//! image as one extra layer so that containers and microVMs run it from the image alike
//! (microVMs have no bind mounts). The same probe binary runs on the host for the
//! "relative to the host" figures. Nothing is assumed: a measurement that fails says why.

pub mod html;
mod measure;
pub mod report;
pub mod table;
mod verdict;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vessel_image::Store;

use self::measure::{Facts, Perf, Vessel};
use self::report::{Cell, Host, Metric, Report, Row};
use vessel_engine::request::Isolation;

/// Where the probe lives inside the derived image.
const PROBE_PATH: &str = "/.vessel-compare/probe";
/// A directory of the derived image the file loop writes in.
const PROBE_WORK: &str = "/.vessel-compare/work";

/// What to compare.
pub struct Options {
    /// Data root.
    pub root: PathBuf,
    /// `vessel-init`, the static probe run inside both isolations.
    pub init: PathBuf,
    /// Image name or id.
    pub image: String,
    /// Samples per timed measurement.
    pub runs: u32,
    /// The user's own workload (after `--`), timed like `true`.
    pub command: Vec<String>,
    /// Which isolations to run.
    pub isolations: Vec<Isolation>,
    /// Memory budget for the "how many fit" extrapolation, bytes.
    pub budget: u64,
}

/// Errors that stop the comparison before it measures anything.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A bad option.
    #[error("{0}")]
    Invalid(String),
    /// The image store.
    #[error(transparent)]
    Image(#[from] vessel_image::Error),
    /// Something the comparison needs is missing.
    #[error("{0}")]
    Setup(String),
}

/// Told about progress (the CLI draws a bar).
pub trait Observer {
    /// The number of steps about to run.
    fn plan(&self, steps: u64);
    /// One step is starting.
    fn step(&self, what: &str);
}

/// What one isolation gave.
struct Side {
    isolation: Isolation,
    unavailable: Option<String>,
    idle: Result<Idle, String>,
    start: Result<Vec<Duration>, String>,
    first_output: Result<Vec<Duration>, String>,
    workload: Result<Vec<Duration>, String>,
    facts: Result<Facts, String>,
    /// The host's facts read just before and just after `facts` (kernel-wide lists may
    /// change meanwhile: only what both readings hold is compared).
    host_facts: Result<(Facts, Facts), String>,
    perf: Result<Perf, String>,
    /// The same loops on the host, run just before and just after `perf` (their samples
    /// together): the ratio compares runs under the same load, not the host at the
    /// start against an instance minutes later.
    host_perf: Result<Perf, String>,
    /// Successful instance runs.
    ran: u32,
    /// Instance runs that failed.
    failed: u32,
}

/// Idle instances: memory per instance and disk use.
struct Idle {
    /// (bytes, how it was made up) per instance.
    memory: Vec<(u64, String)>,
    /// Bytes written by the first and by the second instance, and what they are.
    first_disk: (u64, String),
    more_disk: (u64, String),
    /// Bytes of what all instances share.
    shared: u64,
    shared_what: String,
}

/// Runs the comparison.
pub fn run(opts: &Options, obs: &dyn Observer) -> Result<Report, CompareError> {
    if opts.runs == 0 || opts.runs > 1000 {
        return Err(CompareError::Invalid(format!(
            "--runs must be 1 to 1000, not {}",
            opts.runs
        )));
    }
    let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let clock = Instant::now();
    let exe = vessel_container::sealed::host_exe()
        .map_err(|e| CompareError::Setup(format!("locate the vessel binary: {e}")))?;
    let probe = vessel_engine::init::binary(&opts.init).map_err(|e| {
        CompareError::Setup(format!(
            "compare runs the static probe vessel-init: {}",
            e.to_string().trim_start_matches("internal error: ")
        ))
    })?;
    let vessel = Vessel {
        exe,
        root: opts.root.clone(),
    };
    let store = Store::open(&opts.root)?;
    let base = store.resolve(&opts.image)?;

    let per_side = 2
        + 2 * opts.runs as u64
        + if opts.command.is_empty() {
            0
        } else {
            opts.runs as u64
        }
        + 2;
    obs.plan(2 + per_side * opts.isolations.len() as u64);

    obs.step("probe image");
    let probe_image = ProbeImage::create(&store, &base, &probe)?;
    obs.step("host probes");
    let host_dir = tempfile::Builder::new()
        .prefix("compare-host.")
        .tempdir_in(&opts.root)
        .map_err(|e| CompareError::Setup(format!("temp dir in {}: {e}", opts.root.display())))?;
    let sides: Vec<Side> = opts
        .isolations
        .iter()
        .map(|&iso| {
            let host = HostRun {
                probe: &probe,
                dir: host_dir.path(),
            };
            measure_side(&vessel, opts, &probe_image.tag, &host, iso, obs)
        })
        .collect();
    probe_image.remove(&store, &opts.root);

    let hypervisor = vessel_vmm::detect_hypervisor();
    let kvm = vessel_vmm::detect_kvm();
    let host = Host {
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory: measure::mem_total(),
        kvm: match hypervisor.as_ref().and_then(|h| h.emulator) {
            // Hardware KVM offered by an emulated CPU is the emulator's, not a machine's.
            Some(e) if kvm.runs_stock_kernels() => {
                format!("{kvm}, nested inside {e}: emulated, not hardware")
            }
            _ => kvm.to_string(),
        },
        hypervisor: hypervisor.as_ref().map(ToString::to_string),
    };
    let side = |iso| sides.iter().find(|s| s.isolation == iso);
    let not_asked = |iso: Isolation| Cell::Unavailable {
        reason: format!("not requested (--isolation {})", other(iso).as_str()),
    };
    let emulator = hypervisor.as_ref().and_then(|h| h.emulator);
    let rows = build_rows(
        opts,
        &host,
        emulator.is_some(),
        side(Isolation::Container),
        side(Isolation::Vm),
        &not_asked,
    );
    let mut report = Report {
        image: opts.image.clone(),
        command: opts.command.clone(),
        runs: opts.runs,
        budget: opts.budget,
        host,
        isolations: opts
            .isolations
            .iter()
            .map(|i| i.as_str().to_string())
            .collect(),
        vm_unavailable: side(Isolation::Vm).and_then(|s| s.unavailable.clone()),
        emulated: None,
        started,
        seconds: clock.elapsed().as_secs_f64(),
        rows,
    };
    if let Some((by, h)) = hypervisor.as_ref().and_then(|h| Some((h.emulator?, h))) {
        report.mark_emulated(by, &h.signature);
    }
    Ok(report)
}

fn other(i: Isolation) -> Isolation {
    match i {
        Isolation::Container => Isolation::Vm,
        Isolation::Vm => Isolation::Container,
    }
}

/// The base image plus the probe, tagged for the duration of the comparison with a tag of
/// this process's own, so that concurrent comparisons do not remove each other's.
struct ProbeImage {
    tag: String,
    id: vessel_image::digest::Digest,
}

impl ProbeImage {
    fn create(
        store: &Store,
        base: &vessel_image::ImageRecord,
        probe: &Path,
    ) -> Result<ProbeImage, CompareError> {
        let tag = format!(
            "vessel-compare-probe:{}-{}",
            base.id.short(),
            std::process::id()
        );
        let dir = tempfile::tempdir()
            .map_err(|e| CompareError::Setup(format!("temp dir for the probe layer: {e}")))?;
        let setup = |op: &str, e: std::io::Error| CompareError::Setup(format!("{op}: {e}"));
        let inner = dir.path().join(PROBE_PATH.trim_start_matches('/'));
        let work = dir.path().join(PROBE_WORK.trim_start_matches('/'));
        std::fs::create_dir_all(&work).map_err(|e| setup("create the probe layer", e))?;
        std::fs::copy(probe, &inner)
            .map_err(|e| setup(&format!("copy {} into the probe layer", probe.display()), e))?;
        use std::os::unix::fs::PermissionsExt;
        for (p, mode) in [(&inner, 0o755), (&work, 0o1777)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| setup("chmod the probe layer", e))?;
        }
        let reference = tag
            .parse()
            .map_err(|e| CompareError::Setup(format!("probe image tag {tag}: {e}")))?;
        let img = vessel_image::import::add_layer(
            store,
            base,
            dir.path(),
            Some(&reference),
            "vessel compare: the probe",
        )?;
        Ok(ProbeImage { tag, id: img.id })
    }

    /// Removes the probe image and the VM root disk built from it.
    fn remove(&self, store: &Store, root: &Path) {
        // The disk goes only with the image (another comparison may share the image).
        let removed = store.remove(&self.tag, false).unwrap_or_default();
        if removed
            .iter()
            .any(|r| matches!(r, vessel_image::store::Removed::Deleted(_)))
        {
            vessel_engine::vm::remove_image_disk(root, &self.id.to_string());
        }
    }
}

fn host_probe(probe: &Path, args: &[&str]) -> Result<String, String> {
    let mut c = std::process::Command::new(probe);
    c.arg("probe").args(args);
    measure::timed(c).map(|t| t.stdout)
}

/// Where the probe runs on the host.
struct HostRun<'a> {
    probe: &'a Path,
    /// The directory in the vessel root that the host's file loop writes in.
    dir: &'a Path,
}

impl HostRun<'_> {
    /// The probe's performance loops, `runs` of each, on the host.
    fn perf(&self, runs: u32) -> Result<Perf, String> {
        host_probe(
            self.probe,
            &["perf", &runs.to_string(), &self.dir.display().to_string()],
        )
        .and_then(|o| measure::parse::<Perf>("perf", &o))
    }
}

/// Two runs of the same loops as one: their samples together.
fn merge_perf(a: Result<Perf, String>, b: Result<Perf, String>) -> Result<Perf, String> {
    let (mut a, b) = (a?, b?);
    if a.file_fs != b.file_fs {
        return Err(format!(
            "the host's file loop changed file system meanwhile ({:?}, then {:?})",
            a.file_fs, b.file_fs
        ));
    }
    for (x, y) in [
        (&mut a.cpu, b.cpu),
        (&mut a.syscall, b.syscall),
        (&mut a.file, b.file),
    ] {
        if x.work != y.work {
            return Err(format!(
                "the host's loops did {} then {} units of work",
                x.work, y.work
            ));
        }
        x.ns.extend(y.ns);
    }
    Ok(a)
}

fn measure_side(
    vessel: &Vessel,
    opts: &Options,
    probe_tag: &str,
    host: &HostRun,
    iso: Isolation,
    obs: &dyn Observer,
) -> Side {
    let name = iso.as_str();
    let run = |extra: &[&str], image: &str, cmd: &[&str]| {
        // No network on either side: microVMs have none yet, and the same work is compared.
        let mut args = vec!["run", "--isolation", name, "--network", "none"];
        args.extend_from_slice(extra);
        args.push(image);
        args.extend_from_slice(cmd);
        vessel.timed(&args)
    };
    let mut side = Side {
        isolation: iso,
        unavailable: None,
        idle: Err(String::new()),
        start: Err(String::new()),
        first_output: Err(String::new()),
        workload: Err(String::new()),
        facts: Err(String::new()),
        host_facts: Err(String::new()),
        perf: Err(String::new()),
        host_perf: Err(String::new()),
        ran: 0,
        failed: 0,
    };
    // First: idle instances (memory, disk). The first start is also the check that this
    // isolation runs here at all.
    obs.step(&format!("{name}: idle instances"));
    side.idle = idle_instances(vessel, opts, iso, obs);
    match &side.idle {
        Err(e) if e.starts_with(CANNOT_START) => {
            side.unavailable = Some(e[CANNOT_START.len()..].to_string());
            return side;
        }
        Ok(i) => side.ran += i.memory.len() as u32,
        Err(_) => side.failed += 1,
    }
    let times = |label: &str, cmd: &[&str], first: bool| {
        let mut v = Vec::new();
        for i in 0..opts.runs {
            obs.step(&format!("{name}: {label} {}/{}", i + 1, opts.runs));
            let t = run(&["--rm"], &opts.image, cmd)?;
            v.push(if first {
                t.first_output
                    .ok_or_else(|| format!("{cmd:?} printed nothing"))?
            } else {
                t.total
            });
        }
        Ok::<_, String>(v)
    };
    side.start = times("start", &["true"], false);
    side.first_output = times("first output", &["echo", "vessel-compare"], true);
    if !opts.command.is_empty() {
        let cmd: Vec<&str> = opts.command.iter().map(String::as_str).collect();
        side.workload = times("workload", &cmd, false);
    }
    // A series stops at its first failure: what ran before it succeeded.
    for r in [&side.start, &side.first_output] {
        match r {
            Ok(v) => side.ran += v.len() as u32,
            Err(_) => side.failed += 1,
        }
    }
    match &side.workload {
        Ok(v) => side.ran += v.len() as u32,
        Err(_) if !opts.command.is_empty() => side.failed += 1,
        Err(_) => {}
    }
    obs.step(&format!("{name}: isolation facts"));
    // The host read just before and just after the instance's own reading: kernel-wide
    // lists (modules, symbols) are compared on what the host held throughout.
    let host_facts =
        || host_probe(host.probe, &["facts"]).and_then(|o| measure::parse::<Facts>("facts", &o));
    let before = host_facts();
    side.facts = run(&["--rm"], probe_tag, &[PROBE_PATH, "probe", "facts"])
        .and_then(|t| measure::parse("facts", &t.stdout));
    side.host_facts = before.and_then(|b| Ok((b, host_facts()?)));
    obs.step(&format!("{name}: performance loops"));
    // Not `--rm`: a container removed at exit gets a `volatile` overlay, where fsync does
    // nothing, and the file loop would skip the durability it claims to time. This
    // instance writes like any kept one; it is removed afterwards.
    let perf_name = format!("vessel-compare-perf-{}-{name}", std::process::id());
    let host_before = host.perf(opts.runs);
    side.perf = run(
        &["--name", &perf_name],
        probe_tag,
        &[
            PROBE_PATH,
            "probe",
            "perf",
            &opts.runs.to_string(),
            PROBE_WORK,
        ],
    )
    .and_then(|t| measure::parse("perf", &t.stdout));
    side.host_perf = merge_perf(host_before, host.perf(opts.runs));
    if let Err(e) = vessel.timed(&["rm", "-f", &perf_name]) {
        if side.perf.is_ok() {
            side.perf = Err(format!("remove the perf instance {perf_name}: {e}"));
        }
    }
    for ok in [side.facts.is_ok(), side.perf.is_ok()] {
        if ok {
            side.ran += 1;
        } else {
            side.failed += 1;
        }
    }
    side
}

/// Prefix of an idle-instance error meaning the isolation cannot run here at all.
const CANNOT_START: &str = "cannot start: ";

/// Starts two idle instances one after the other, measuring the disk each one wrote and
/// their memory once each has settled; removes them.
fn idle_instances(
    vessel: &Vessel,
    opts: &Options,
    iso: Isolation,
    obs: &dyn Observer,
) -> Result<Idle, String> {
    // What an instance writes on disk: its own directory (container: upper dir, bundle,
    // log; VM: its sparse writable disk, log) and, on first use, the artefacts every
    // instance of the image shares (VM: the image's root disk, the initramfs). Runtime
    // state under /run is tmpfs (RAM), and the instance's row in the catalogue is a few
    // hundred bytes of SQLite; neither is counted.
    let shared_tree = [opts.root.join("vm")];
    let mut ids = Vec::new();
    let result = (|| {
        let mut disk = Vec::new();
        let mut memory = Vec::new();
        for i in 0..2 {
            if i == 1 {
                obs.step(&format!("{}: second idle instance", iso.as_str()));
            }
            let shared_before = measure::disk_usage(&shared_tree);
            let t = vessel
                .timed(&[
                    "run",
                    "-d",
                    "--isolation",
                    iso.as_str(),
                    "--network",
                    "none",
                    &opts.image,
                    "sleep",
                    "100000",
                ])
                .map_err(|e| {
                    if i == 0 {
                        format!("{CANNOT_START}{e}")
                    } else {
                        e
                    }
                })?;
            let id = t.stdout.trim().to_string();
            ids.push(id.clone());
            // Let it reach its idle state (a guest finishes booting, a shell settles).
            std::thread::sleep(Duration::from_secs(1));
            memory.push(instance_memory(vessel, &id, iso)?);
            disk.push(instance_disk(
                vessel,
                opts,
                &id,
                &shared_tree,
                shared_before,
            )?);
        }
        let (shared, shared_what) = shared_artefacts(vessel, opts, iso, &ids[0])?;
        let mut disk = disk.into_iter();
        Ok(Idle {
            memory,
            first_disk: disk.next().unwrap_or_default(),
            more_disk: disk.next().unwrap_or_default(),
            shared,
            shared_what,
        })
    })();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        if let Err(e) = vessel.timed(&args) {
            return Err(format!("remove the idle instances: {e}"));
        }
    }
    result
}

/// The disk one running instance wrote, after `sync` inside it (a guest's writes still in
/// its page cache have not reached its disk file yet): its own directory, plus what the
/// shared artefacts grew by while it started.
fn instance_disk(
    vessel: &Vessel,
    opts: &Options,
    id: &str,
    shared_tree: &[PathBuf],
    shared_before: u64,
) -> Result<(u64, String), String> {
    let synced = match vessel.timed(&["exec", id, "sync"]) {
        Ok(_) => "after `sync` inside",
        Err(_) => {
            "no `sync` ran inside (the image has none): writes still cached inside are not counted"
        }
    };
    let own = measure::disk_usage(&[opts.root.join("instances").join(id)]);
    let shared = measure::disk_usage(shared_tree).saturating_sub(shared_before);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    Ok((
        own + shared,
        format!(
            "its directory {:.2} MiB + shared artefacts built for it {:.2} MiB; {synced}",
            mib(own),
            mib(shared)
        ),
    ))
}

fn inspect(vessel: &Vessel, id: &str) -> Result<serde_json::Value, String> {
    let t = vessel.timed(&["inspect", id])?;
    let v: serde_json::Value =
        serde_json::from_str(&t.stdout).map_err(|e| format!("inspect {id}: {e}"))?;
    Ok(v[0].clone())
}

/// Host memory one idle instance costs, and what it is made of.
fn instance_memory(vessel: &Vessel, id: &str, iso: Isolation) -> Result<(u64, String), String> {
    let v = inspect(vessel, id)?;
    let pid = v["State"]["Pid"].as_i64().unwrap_or(0) as i32;
    let monitor = v["State"]["MonitorPid"].as_i64().unwrap_or(0) as i32;
    if pid <= 0 || monitor <= 0 {
        return Err(format!("instance {id} is not running: {}", v["State"]));
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    match iso {
        Isolation::Container => {
            let (cg, file) = measure::cgroup_memory(pid)?;
            let mon = measure::pss(monitor)?;
            Ok((
                cg + mon,
                format!(
                    "cgroup {:.1} MiB ({}) + monitor PSS {:.1} MiB",
                    mib(cg),
                    file.file_name().unwrap_or_default().to_string_lossy(),
                    mib(mon)
                ),
            ))
        }
        Isolation::Vm => {
            // The process that holds the KVM VM (the monitor, or its VMM child), checked
            // by its descriptor rather than assumed.
            let vmm_pid = measure::kvm_process(monitor)?;
            let vmm = measure::pss(vmm_pid)?;
            let mon = if vmm_pid == monitor {
                0
            } else {
                measure::pss(monitor)?
            };
            let guest = v["HostConfig"]["Memory"]
                .as_u64()
                .filter(|m| *m > 0)
                .unwrap_or((vessel_engine::vm::DEFAULT_MEMORY_MIB as u64) << 20);
            Ok((
                vmm + mon,
                format!(
                    "VMM PSS {:.1} MiB (pid {vmm_pid}, holds the KVM VM; guest RAM touched so far included){}; guest RAM committed {:.0} MiB",
                    mib(vmm),
                    if mon > 0 {
                        format!(" + monitor PSS {:.1} MiB", mib(mon))
                    } else {
                        String::new()
                    },
                    mib(guest)
                ),
            ))
        }
    }
}

/// What every instance of the image shares on disk.
fn shared_artefacts(
    vessel: &Vessel,
    opts: &Options,
    iso: Isolation,
    id: &str,
) -> Result<(u64, String), String> {
    let v = inspect(vessel, id)?;
    let image_id = v["Image"].as_str().unwrap_or_default().to_string();
    let store = Store::open(&opts.root).map_err(|e| e.to_string())?;
    let img = store.resolve(&image_id).map_err(|e| e.to_string())?;
    let layers = store.layer_dirs(&img).map_err(|e| e.to_string())?;
    match iso {
        Isolation::Container => Ok((
            measure::disk_usage(&layers),
            format!(
                "{} unpacked layer(s), used as overlay lower dirs",
                layers.len()
            ),
        )),
        Isolation::Vm => {
            let disk = vessel_engine::vm::image_disk_path(&opts.root, &image_id);
            let initramfs = opts.root.join("vm/initramfs");
            Ok((
                measure::disk_usage(&[disk, initramfs]),
                "read-only ext4 root disk of the image + agent initramfs (the layers stay in the image store too)".into(),
            ))
        }
    }
}

fn ms_cell(r: &Result<Vec<Duration>, String>, pick: fn(f64, f64) -> f64) -> Cell {
    match r {
        Ok(v) => match measure::median_p95(v) {
            Some((med, p95)) => Cell::measured(pick(med, p95), "ms", v.len() as u32, None),
            None => Cell::Failed {
                reason: "no samples".into(),
            },
        },
        Err(e) => Cell::Failed { reason: e.clone() },
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Builds the table from what each side gave.
fn build_rows(
    opts: &Options,
    host: &Host,
    emulated: bool,
    container: Option<&Side>,
    vm: Option<&Side>,
    not_asked: &dyn Fn(Isolation) -> Cell,
) -> Vec<Row> {
    // One cell per side from a function of that side's results.
    let pair = |f: &dyn Fn(&Side) -> Cell| -> (Cell, Cell) {
        let one = |s: Option<&Side>, iso: Isolation| match s {
            None => not_asked(other(iso)),
            Some(s) => match &s.unavailable {
                Some(r) => Cell::Unavailable { reason: r.clone() },
                None => f(s),
            },
        };
        (one(container, Isolation::Container), one(vm, Isolation::Vm))
    };
    let metric = |key: &str, label: &str, method: &str, f: &dyn Fn(&Side) -> Cell| {
        let (c, v) = pair(f);
        Metric::new(key, label, method, c, v)
    };
    let facts_cell = |s: &Side, f: &dyn Fn(&Facts) -> Cell| match &s.facts {
        Ok(x) => f(x),
        Err(e) => Cell::Failed { reason: e.clone() },
    };
    // The instance's facts with the host's read around them, and whether the instance
    // ran on the host's kernel (from the boot ids, checked to be boot ids): every row
    // about the kernel comes from this one verdict, so no two rows can disagree on it.
    let with_host = |s: &Side, f: &dyn Fn(&Facts, &Facts, &Facts, bool) -> Cell| {
        let (inside, (before, after)) = match (&s.facts, &s.host_facts) {
            (Ok(i), Ok(h)) => (i, h),
            (Err(e), _) => return Cell::Failed { reason: e.clone() },
            (_, Err(e)) => {
                return Cell::Failed {
                    reason: format!("host probe: {e}"),
                }
            }
        };
        match verdict::same_kernel(&inside.boot_id, &before.boot_id) {
            Ok(same) => f(inside, before, after, same),
            Err(e) => Cell::Failed { reason: e },
        }
    };
    let runs = opts.runs;
    let host_runs = 2 * runs;
    let mut rows = Vec::new();

    rows.push(Row {
        key: "virtualization".into(),
        title: "Virtualization level".into(),
        // Wrong if uname were all there is (a kernel reports what it likes): the boot id
        // below decides whose kernel it is, checked to be a boot id on both sides.
        metrics: vec![
            metric(
                "kernel",
                "kernel seen inside",
                &format!(
                    "uname(2) inside one instance, by the probe; host: {}",
                    host.kernel
                ),
                &|s| {
                    facts_cell(s, &|f| Cell::Observed {
                        text: f.kernel.clone(),
                        samples: 1,
                    })
                },
            ),
            metric(
                "syscalls_handled_by",
                "kernel handling its syscalls",
                "boot id inside (/proc/sys/kernel/random/boot_id) compared with the host's",
                &|s| {
                    with_host(s, &|f, h, _, same| Cell::Observed {
                        text: if same {
                            format!("the host's ({})", h.kernel)
                        } else {
                            format!("its own guest kernel ({})", f.kernel)
                        },
                        samples: 1,
                    })
                },
            ),
        ],
    });

    rows.push(Row {
        key: "start".into(),
        title: "Boot/start time".into(),
        // Wrong if the series paid one-time costs (a VM's image root disk and initramfs
        // are built at its first start; cold page cache): the idle instances ran first and
        // paid them. Each figure is the whole `vessel run --rm`, removal included, as a
        // user waits for it; under an emulator they carry the "emulated" caveat.
        metrics: vec![
            metric(
                "start_median",
                "start to exit of `true`, median",
                &format!("wall time of `vessel run --rm --network none IMAGE true`, spawn to exit, {runs} runs"),
                &|s| ms_cell(&s.start, |m, _| m),
            ),
            metric(
                "start_p95",
                "start to exit of `true`, p95",
                &format!("95th percentile (nearest rank) of the same {runs} runs"),
                &|s| ms_cell(&s.start, |_, p| p),
            ),
            metric(
                "first_output_median",
                "time to first output, median",
                &format!("spawn of `vessel run --rm --network none IMAGE echo` to its first byte on stdout, {runs} runs"),
                &|s| ms_cell(&s.first_output, |m, _| m),
            ),
        ],
    });

    if !opts.command.is_empty() {
        let cmd = opts.command.join(" ");
        rows.push(Row {
            key: "workload".into(),
            title: "Your workload".into(),
            metrics: vec![
                metric(
                    "workload_median",
                    "run to exit, median",
                    &format!(
                        "wall time of `vessel run --rm --network none IMAGE {cmd}`, {runs} runs"
                    ),
                    &|s| ms_cell(&s.workload, |m, _| m),
                ),
                metric(
                    "workload_p95",
                    "run to exit, p95",
                    &format!("95th percentile of the same {runs} runs"),
                    &|s| ms_cell(&s.workload, |_, p| p),
                ),
            ],
        });
    }

    let idle_cell = |s: &Side, f: &dyn Fn(&Idle) -> Cell| match &s.idle {
        Ok(i) => f(i),
        Err(e) => Cell::Failed { reason: e.clone() },
    };
    let per_instance = |i: &Idle| {
        let mut v: Vec<f64> = i.memory.iter().map(|(b, _)| *b as f64).collect();
        v.sort_by(f64::total_cmp);
        measure::median_sorted(&v)
    };
    let budget_mib = opts.budget >> 20;
    rows.push(Row {
        key: "resources".into(),
        title: "Resource overhead".into(),
        metrics: vec![
            // Wrong if the two sides counted different things: the container's cgroup
            // holds its processes' memory, kernel memory and the page cache they read
            // (charged to the first reader); its monitor is added. The VM's VMM (the
            // process found holding the KVM VM) holds the guest's RAM as far as the guest
            // touched it; its kernel-side KVM structures are in neither figure. PSS splits
            // pages shared with other processes (libc, the vessel binary) among them.
            metric(
                "idle_memory",
                "host memory per idle instance",
                "2 idle instances (`sleep`), 1 s after start: container = its cgroup's memory usage (processes, kernel memory, page cache it read) + monitor PSS; VM = PSS of the process holding the KVM VM (guest RAM it touched included) + monitor PSS if separate; PSS splits shared pages among the processes sharing them",
                &|s| {
                    idle_cell(s, &|i| {
                        Cell::measured(
                            per_instance(i),
                            "B",
                            i.memory.len() as u32,
                            i.memory.last().map(|(_, d)| d.clone()),
                        )
                    })
                },
            ),
            metric(
                "instances_in_budget",
                &format!("idle instances in {budget_mib} MiB (extrapolated)"),
                &format!("extrapolated, not run: {budget_mib} MiB / measured memory per idle instance"),
                &|s| {
                    idle_cell(s, &|i| {
                        let per = per_instance(i);
                        if per > 0.0 {
                            Cell::Extrapolated {
                                value: (opts.budget as f64 / per).floor(),
                                unit: "instances".into(),
                                samples: i.memory.len() as u32,
                                basis: format!(
                                    "not run: {budget_mib} MiB / {} per idle instance",
                                    table::bytes(per)
                                ),
                            }
                        } else {
                            Cell::Failed {
                                reason: "measured 0 bytes per instance".into(),
                            }
                        }
                    })
                },
            ),
        ],
    });

    rows.push(Row {
        key: "storage".into(),
        title: "Storage efficiency".into(),
        metrics: vec![
            // Wrong if part of what an instance wrote were elsewhere or still cached:
            // `sync` runs inside first (a guest's page cache), and the shared artefacts
            // built for it on first use are counted with it (see `instance_disk`).
            metric(
                "first_instance_disk",
                "disk written by the first instance",
                "after `sync` inside: blocks allocated in its directory <root>/instances/ID (container: upper dir, bundle, log; VM: its sparse writable disk, log) + growth of <root>/vm (image root disk, initramfs built on first use) while it started",
                &|s| {
                    idle_cell(s, &|i| {
                        Cell::measured(i.first_disk.0 as f64, "B", 1, Some(i.first_disk.1.clone()))
                    })
                },
            ),
            metric(
                "additional_instance_disk",
                "disk written by each additional instance",
                "the same for a second idle instance of the same image",
                &|s| {
                    idle_cell(s, &|i| {
                        Cell::measured(i.more_disk.0 as f64, "B", 1, Some(i.more_disk.1.clone()))
                    })
                },
            ),
            // Wrong if counted per instance or twice: blocks of hard links once; for a VM
            // the layers stay in the store too, which the text says.
            metric(
                "shared_disk",
                "shared by all instances of the image",
                "blocks allocated by what every instance of the image uses read-only",
                &|s| {
                    idle_cell(s, &|i| {
                        Cell::measured(i.shared as f64, "B", 1, Some(i.shared_what.clone()))
                    })
                },
            ),
        ],
    });

    let obs = |text: String| Cell::Observed { text, samples: 1 };
    // Kernel-wide lists (symbols, modules): what share of the host's entries the instance
    // reads, judged by `verdict::visibility` (see there what would make it wrong).
    let sample = format!("sampled symbols (1 in {})", vessel_agent::KALLSYMS_SAMPLE);
    rows.push(Row {
        key: "isolation".into(),
        title: "Isolation".into(),
        metrics: vec![
            metric(
                "own_kernel",
                "own kernel",
                "boot id inside vs the host's: a different one is a different kernel",
                &|s| {
                    with_host(s, &|_, _, _, same| {
                        obs(format!(
                            "{} ({})",
                            yes_no(!same),
                            if same {
                                "shared with the host"
                            } else {
                                "separate boot"
                            }
                        ))
                    })
                },
            ),
            metric(
                "host_processes_visible",
                "host processes visible",
                "the PID namespace /proc lists inside (/proc/self/ns/pid) vs the host's, on the host's kernel only; counts of processes listed",
                &|s| {
                    with_host(s, &|f, h, _, same| {
                        obs(format!(
                            "{} ({} inside, host has {})",
                            yes_no(verdict::processes_visible(same, &f.pid_ns, &h.pid_ns)),
                            f.processes,
                            h.processes
                        ))
                    })
                },
            ),
            metric(
                "host_kallsyms_visible",
                "host kernel symbols visible",
                "share of the host's /proc/kallsyms entries (a fixed sample by name) readable inside, the host read just before and after; another kernel's symbols are its own",
                &|s| {
                    with_host(s, &|f, before, after, same| {
                        let v = verdict::visibility(
                            same,
                            f.kallsyms_sample.as_deref(),
                            before.kallsyms_sample.as_deref().unwrap_or_default(),
                            after.kallsyms_sample.as_deref().unwrap_or_default(),
                        );
                        if before.kallsyms_sample.is_none() {
                            return Cell::Failed {
                                reason: "the host's /proc/kallsyms is unreadable".into(),
                            };
                        }
                        let host_n = before.kallsyms_sample.as_ref().map_or(0, Vec::len);
                        let text = verdict::visibility_text(&v, &sample, host_n, host_n);
                        obs(match v {
                            verdict::Visibility::OwnKernel { common } => format!(
                                "no (its own kernel's {} symbols; {} of the host's sampled names also occur there)",
                                f.kallsyms_symbols,
                                verdict::percent(common)
                            ),
                            _ => text,
                        })
                    })
                },
            ),
            metric(
                "host_modules_visible",
                "host kernel modules visible",
                "share of the host's /proc/modules names readable inside, the host read just before and after; another kernel's modules are its own",
                &|s| {
                    with_host(s, &|f, before, after, same| {
                        // A host kernel without loadable modules has no /proc/modules:
                        // an empty list, nothing to see.
                        let none = Vec::new();
                        let b = before.modules.as_ref().unwrap_or(&none);
                        let a = after.modules.as_ref().unwrap_or(&none);
                        let v = verdict::visibility(same, f.modules.as_deref(), b, a);
                        let listed = f.modules.as_ref().map_or(0, Vec::len);
                        obs(verdict::visibility_text(&v, "modules", listed, b.len()))
                    })
                },
            ),
            // Capabilities and seccomp are those of the probe, started like any command of
            // the instance (same `run` options): wrong only if the image's user differed,
            // which a derived image with one added layer does not change.
            metric(
                "cap_eff",
                "effective capabilities",
                "CapEff of /proc/self/status inside (bits set)",
                &|s| {
                    facts_cell(s, &|f| {
                        let n = u64::from_str_radix(&f.cap_eff, 16).map(u64::count_ones);
                        obs(match n {
                            Ok(n) => format!("{} ({n} capabilities)", f.cap_eff),
                            Err(_) => f.cap_eff.clone(),
                        })
                    })
                },
            ),
            metric(
                "seccomp",
                "seccomp mode",
                "Seccomp of /proc/self/status inside",
                &|s| {
                    facts_cell(s, &|f| {
                        obs(match f.seccomp {
                            Some(0) => "0 (off)".into(),
                            Some(1) => "1 (strict)".into(),
                            Some(2) => "2 (filter)".into(),
                            Some(n) => n.to_string(),
                            None => "unknown (no Seccomp field)".into(),
                        })
                    })
                },
            ),
            metric(
                "kernel_panic_scope",
                "a kernel panic inside takes down",
                "stated from the kernel observed above, not triggered",
                &|s| {
                    with_host(s, &|_, _, _, same| Cell::Stated {
                        text: if same {
                            "the host and every instance on it (one shared kernel)".into()
                        } else {
                            "this VM only (its own kernel; the host's keeps running)".into()
                        },
                    })
                },
            ),
        ],
    });

    let perf_cell = |s: &Side, pick: fn(&Perf) -> &measure::Timings| match (&s.perf, &s.host_perf) {
        (Ok(p), Ok(h)) => {
            let (inside, on_host) = (
                measure::median_ns_ms(&pick(p).ns),
                measure::median_ns_ms(&pick(h).ns),
            );
            Cell::measured(
                inside / on_host,
                "x host",
                pick(p).ns.len() as u32,
                Some(format!(
                    "median {inside:.1} ms inside, {on_host:.1} ms on the host, for {} units of work",
                    pick(p).work
                )),
            )
        }
        (Err(e), _) => Cell::Failed { reason: e.clone() },
        (_, Err(e)) => Cell::Failed {
            reason: format!("host run: {e}"),
        },
    };
    rows.push(Row {
        key: "performance".into(),
        title: "Performance".into(),
        metrics: vec![
            // Wrong if the host and the instance ran under different load: the same static
            // binary, medians, the host's runs just before and just after the instance's
            // (so both see the load of the same minute); the figure is a ratio, so under
            // an emulator it holds where absolute times do not.
            metric(
                "cpu",
                "CPU-bound loop",
                &format!("xorshift rounds by the probe: median of {runs} inside / median of {host_runs} on the host (half just before the instance, half just after), same static binary"),
                &|s| perf_cell(s, |p| &p.cpu),
            ),
            metric(
                "syscall",
                "syscall loop (getpid)",
                &format!("raw getpid(2) calls by the probe: median of {runs} inside / median of {host_runs} on the host, just before and after"),
                &|s| perf_cell(s, |p| &p.syscall),
            ),
            metric(
                "file",
                "file write+fsync+read",
                &format!("8 MiB written in 64 KiB blocks, fsync, read back: in a kept (not --rm) instance's writable root, whose overlay is not volatile, so fsync syncs (container: overlay upper dir on the host's file system; VM: ext4 on its virtio disk, each flush an fdatasync of the disk file on the host); host: in the vessel root; median of {runs} inside / median of {host_runs} on the host, just before and after"),
                &|s| match (&s.perf, &s.host_perf) {
                    (Ok(p), Ok(h)) => verdict::file_cell(
                        p,
                        h,
                        (s.isolation == Isolation::Vm).then_some(&h.file_fs),
                    ),
                    (Err(e), _) => Cell::Failed { reason: e.clone() },
                    (_, Err(e)) => Cell::Failed {
                        reason: format!("host run: {e}"),
                    },
                },
            ),
        ],
    });

    rows.push(Row {
        key: "portability".into(),
        title: "Portability and use cases".into(),
        metrics: vec![
            metric(
                "runs_other_kernel",
                "runs a kernel other than the host's",
                "the kernel observed inside vs the host's",
                &|s| {
                    with_host(s, &|f, _, _, same| {
                        if f.kernel != host.kernel || !same {
                            Cell::Stated {
                                text: format!("yes: ran {} (host {})", f.kernel, host.kernel),
                            }
                        } else {
                            Cell::Stated {
                                text: format!("no: ran the host's {}", host.kernel),
                            }
                        }
                    })
                },
            ),
            metric(
                "same_image",
                "the same image ran unchanged",
                "instance runs of this image (and of it plus the probe layer) in this comparison that succeeded; failed ones are named, not counted",
                &|s| verdict::same_image(s.ran, s.failed),
            ),
            metric("use_case", "fits", "stated from the figures above (the instance count is extrapolated, not run)", &|s| {
                let start = s
                    .start
                    .as_ref()
                    .ok()
                    .and_then(|v| measure::median_p95(v))
                    .map(|(m, _)| {
                        let caveat = if emulated { ", emulated" } else { "" };
                        format!("{m:.0} ms start{caveat}")
                    })
                    .unwrap_or_else(|| "start not measured".into());
                let fit = s
                    .idle
                    .as_ref()
                    .ok()
                    .map(|i| {
                        format!(
                            "~{:.0} per {budget_mib} MiB, extrapolated",
                            (opts.budget as f64 / per_instance(i)).floor()
                        )
                    })
                    .unwrap_or_else(|| "memory not measured".into());
                Cell::Stated {
                    text: match s.isolation {
                        Isolation::Container => {
                            format!("many apps on the host's kernel ({start}, {fit})")
                        }
                        Isolation::Vm => {
                            format!("own kernel or a kernel boundary ({start}, {fit})")
                        }
                    },
                }
            }),
        ],
    });
    rows
}
