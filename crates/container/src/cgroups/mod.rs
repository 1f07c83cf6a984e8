//! cgroup management for v1, v2 and hybrid hosts: create the container's cgroup in every
//! hierarchy, apply limits, move processes in, signal them, read stats, remove it.

pub mod detect;
pub mod devices_bpf;
pub mod resources;
pub mod stats;
pub mod warm;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use detect::CgroupMode;
use detect::Layout;
pub use stats::Stats;

/// The container's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    /// Absolute host path, e.g. `/sys/fs/cgroup/memory/vessel/abc`.
    pub path: PathBuf,
    /// Mount point of the hierarchy (ancestors above it are never touched).
    pub mountpoint: PathBuf,
    /// v1 controllers of the hierarchy; empty for v2.
    pub controllers: Vec<String>,
    /// Whether this is the cgroup2 hierarchy.
    pub v2: bool,
}

/// Open descriptors with which a single-threaded process moves itself into a cgroup
/// without waiting for an RCU grace period.
///
/// Every write of a pid to a `cgroup.procs` file takes the kernel's global
/// `cgroup_threadgroup_rwsem` for writing, and a writer of that per-CPU rwsem waits a
/// grace period (5-15 ms on these hosts) unless another writer just did: on the path of
/// every container start. Two ways into a cgroup skip the rwsem: in a v1 hierarchy, a
/// thread writing `0` (itself) to `tasks` (`cgroup_procs_write_start` takes it only to
/// move a whole thread group or another task), which for a single-threaded process moves
/// the process; in the cgroup2 hierarchy, being created there by `clone3` with
/// `CLONE_INTO_CGROUP` (which takes it only for reading, as every fork does). The
/// intermediate process does the first before it clones the container's init, and the
/// second as it does.
#[derive(Debug)]
pub(crate) struct SelfJoin {
    /// `tasks` of each v1 hierarchy.
    pub tasks: Vec<std::os::fd::OwnedFd>,
    /// The cgroup2 directory, for `CLONE_INTO_CGROUP`.
    pub v2_dir: Option<std::os::fd::OwnedFd>,
    /// Its `cgroup.procs`: the way in where `clone3` cannot do it (Linux before 5.7).
    pub v2_procs: Option<std::os::fd::OwnedFd>,
}

impl SelfJoin {
    /// Every descriptor, to keep open across a close-all.
    pub(crate) fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.tasks
            .iter()
            .chain(&self.v2_dir)
            .chain(&self.v2_procs)
            .map(|f| f.as_raw_fd())
            .collect()
    }

    /// Moves the calling thread, which must be its process's only one, into the cgroup
    /// in every v1 hierarchy. Only write(2): usable in a forked child.
    pub(crate) fn join_v1(&self) -> Result<()> {
        for f in &self.tasks {
            nix::unistd::write(f, b"0")
                .map_err(|e| Error::syscall("join the container's cgroup (write 0 to tasks)", e))?;
        }
        Ok(())
    }
}

/// Whether this host's memory cgroup limits swap (`memory.memsw.*` in v1, which needs
/// `swapaccount=1` on older kernels; `memory.swap.max` in v2): without it a swap limit
/// could not be honoured.
pub fn swap_limit_supported() -> bool {
    let (Ok(mountinfo), Ok(own)) = (read("/proc/self/mountinfo"), read("/proc/self/cgroup")) else {
        return false;
    };
    let Some(layout) = detect::parse_mountinfo(&mountinfo) else {
        return false;
    };
    if let Some(h) = layout
        .v1
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == "memory"))
    {
        return h.mountpoint.join("memory.memsw.limit_in_bytes").exists();
    }
    let Some(v2) = &layout.v2 else {
        return false;
    };
    // The root cgroup has no memory.swap.max: look at ours, else at any child of the root.
    let own = detect::parse_proc_cgroup(&own);
    let ours = detect::host_dir(v2, detect::own_cgroup(v2, &own));
    if ours.join("memory.swap.max").exists() {
        return true;
    }
    fs::read_dir(&v2.mountpoint).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("memory.swap.max").exists())
    })
}

/// A container's cgroup across all hierarchies. Serialised into the state file so a
/// different process can delete it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// One directory per hierarchy.
    pub dirs: Vec<CgroupDir>,
    /// Host mode when this was resolved.
    pub unified: bool,
}

impl Cgroup {
    /// Resolve where the cgroup `cgroups_path` lives on this host. An absolute path is
    /// taken from each hierarchy's root. A relative one is taken from the caller's own
    /// cgroup in v1 hierarchies (so containers stay inside whatever cgroup the engine was
    /// placed in, e.g. a memory-limited sandbox), but from the root on a pure cgroup2
    /// host, where the caller's own cgroup holds processes and so could not delegate
    /// controllers to children ("no internal processes" rule).
    pub fn resolve(cgroups_path: &str) -> Result<Cgroup> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let layout = detect::parse_mountinfo(&mountinfo)
            .ok_or_else(|| Error::Cgroup("no cgroup filesystem is mounted".into()))?;
        let own = detect::parse_proc_cgroup(&read("/proc/self/cgroup")?);
        Ok(Self::resolve_with(&layout, &own, cgroups_path))
    }

    /// Pure part of [`Cgroup::resolve`].
    pub fn resolve_with(layout: &Layout, own: &[detect::Membership], cgroups_path: &str) -> Cgroup {
        let unified = layout.mode == CgroupMode::Unified;
        let dir_of = |h: &detect::Hierarchy| {
            let cg = if cgroups_path.starts_with('/') || (unified && h.v2) {
                // Absolute: relative to the hierarchy root as this process sees it.
                format!(
                    "{}/{}",
                    h.root.trim_end_matches('/'),
                    cgroups_path.trim_start_matches('/')
                )
            } else {
                format!(
                    "{}/{}",
                    detect::own_cgroup(h, own).trim_end_matches('/'),
                    cgroups_path
                )
            };
            CgroupDir {
                path: detect::host_dir(h, &cg),
                mountpoint: h.mountpoint.clone(),
                controllers: h.controllers.clone(),
                v2: h.v2,
            }
        };
        let mut dirs: Vec<CgroupDir> = layout.v1.iter().map(dir_of).collect();
        if let Some(v2) = &layout.v2 {
            dirs.push(dir_of(v2));
        }
        Cgroup { dirs, unified }
    }

    /// Create the directories (with parents), preparing cpuset and v2 controllers.
    pub fn create(&self) -> Result<()> {
        for d in &self.dirs {
            let rel = d.path.strip_prefix(&d.mountpoint).map_err(|_| {
                Error::Cgroup(format!(
                    "{} is not below its hierarchy {}",
                    d.path.display(),
                    d.mountpoint.display()
                ))
            })?;
            let mut cur = d.mountpoint.clone();
            for comp in rel.components() {
                let parent = cur.clone();
                cur.push(comp);
                if d.v2 {
                    enable_v2_controllers(&parent);
                }
                match fs::create_dir(&cur) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("create cgroup", &cur, e)),
                }
                if d.controllers.iter().any(|c| c == "cpuset") {
                    inherit_cpuset(&parent, &cur)?;
                }
            }
        }
        Ok(())
    }

    /// Apply resource limits. A limit whose controller is not available is an error.
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        self.apply_limits(res, true)
    }

    fn apply_limits(&self, res: &LinuxResources, devices: bool) -> Result<()> {
        let v1 = resources::plan_v1(res);
        let v2 = resources::plan_v2(res);
        let v2_dir = self.dirs.iter().find(|d| d.v2);
        let v2_available: Vec<String> = v2_dir
            .map(|d| read_controllers(&d.path))
            .unwrap_or_default();
        // Each controller is configured in exactly one place: its v1 hierarchy if it has
        // one, else cgroup2.
        let mut writes: Vec<(PathBuf, resources::Write)> = Vec::new();
        for wr in v1 {
            if let Some(d) = self.v1_dir(&wr.controller) {
                writes.push((d.path.join(&wr.file), wr));
            }
        }
        for wr in v2 {
            if self.v1_dir(&wr.controller).is_some() {
                continue;
            }
            match v2_dir {
                Some(d) if v2_available.contains(&wr.controller) => {
                    writes.push((d.path.join(&wr.file), wr))
                }
                _ if wr.optional => {}
                _ => {
                    return Err(Error::Cgroup(format!(
                        "cannot set {} = {}: the {} controller is not available on this host",
                        wr.file, wr.value, wr.controller
                    )))
                }
            }
        }
        if devices {
            let device_rules =
                devices_bpf::effective_rules(res.devices().as_deref().unwrap_or_default())?;
            let v1_devices = self.v1_dir("devices");
            if let Some(d) = v1_devices {
                for wr in resources::plan_devices_v1(&device_rules) {
                    writes.push((d.path.join(&wr.file), wr));
                }
            }
            // cgroup2 has no devices controller: an eBPF program decides. On a hybrid host it
            // also guards what the v1 controller does, and only there may it fail.
            if let Some(d) = v2_dir {
                match devices_bpf::attach(&d.path, &device_rules) {
                    Ok(()) => {}
                    Err(e) if v1_devices.is_some() => {
                        tracing::warn!(error = %e, "device eBPF program not attached; the v1 devices controller still enforces the rules");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let mut i = 0;
        while i < writes.len() {
            let (path, wr) = &writes[i];
            if wr.optional && !path.exists() {
                tracing::debug!(file = %path.display(), "optional cgroup file missing, skipped");
                i += 1;
                continue;
            }
            // v1 wants memory <= memory+swap at every moment: raising both (an update of
            // a running container) must raise memsw first, lowering both memory first.
            if wr.file == "memory.limit_in_bytes" {
                if let Some((sw_path, sw)) = writes
                    .get(i + 1)
                    .filter(|(p, w)| w.file == "memory.memsw.limit_in_bytes" && p.exists())
                {
                    if write_file(path, &wr.value).is_err() {
                        write_file(sw_path, &sw.value)?;
                        write_file(path, &wr.value)?;
                    } else {
                        write_file(sw_path, &sw.value)?;
                    }
                    i += 2;
                    continue;
                }
            }
            write_file(path, &wr.value)?;
            i += 1;
        }
        Ok(())
    }

    fn v1_dir(&self, controller: &str) -> Option<&CgroupDir> {
        self.dirs
            .iter()
            .find(|d| !d.v2 && d.controllers.iter().any(|c| c == controller))
    }

    /// The directory holding `controller`'s files (v1 hierarchy, else cgroup2).
    fn dir_for(&self, controller: &str) -> Option<&CgroupDir> {
        self.v1_dir(controller)
            .or_else(|| self.dirs.iter().find(|d| d.v2))
    }

    /// Move `pid` into the cgroup in every hierarchy.
    pub fn add_pid(&self, pid: Pid) -> Result<()> {
        for d in &self.dirs {
            write_file(&d.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Opens what a process needs to move itself in (see [`SelfJoin`]). Call after
    /// [`Cgroup::create`].
    pub(crate) fn self_join(&self) -> Result<SelfJoin> {
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::Mode;
        let open_file = |path: &Path, flags: OFlag| {
            open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| Error::sys("open", path, e))
        };
        let mut join = SelfJoin {
            tasks: Vec::new(),
            v2_dir: None,
            v2_procs: None,
        };
        for d in &self.dirs {
            if d.v2 {
                join.v2_dir = Some(open_file(&d.path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?);
                join.v2_procs = Some(open_file(&d.path.join("cgroup.procs"), OFlag::O_WRONLY)?);
            } else {
                join.tasks
                    .push(open_file(&d.path.join("tasks"), OFlag::O_WRONLY)?);
            }
        }
        Ok(join)
    }

    /// Pids of all processes in the container's cgroup (empty if it is gone).
    pub fn pids(&self) -> Vec<Pid> {
        let dir = self
            .v1_dir("pids")
            .or_else(|| self.v1_dir("memory"))
            .or_else(|| self.dirs.first());
        let Some(d) = dir else {
            return Vec::new();
        };
        fs::read_to_string(d.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .map(Pid::from_raw)
            .collect()
    }

    /// Send `sig` to every process of the container.
    pub fn signal_all(&self, sig: Signal) -> Result<()> {
        if sig == Signal::SIGKILL {
            if let Some(d) = self.dirs.iter().find(|d| d.v2 && self.unified) {
                let kill = d.path.join("cgroup.kill");
                if kill.exists() {
                    return write_file(&kill, "1");
                }
            }
        }
        // Repeat: a process may fork between reading cgroup.procs and the kill.
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                match nix::sys::signal::kill(p, sig) {
                    Ok(()) | Err(nix::Error::ESRCH) => {}
                    Err(e) => return Err(Error::syscall(format!("kill({p}, {sig})"), e)),
                }
            }
            if sig != Signal::SIGKILL {
                break;
            }
        }
        Ok(())
    }

    /// Wait until no process is left in the cgroup, up to `timeout`.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.pids().is_empty() {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Remove the cgroup (and any child cgroups) from every hierarchy. Missing
    /// directories are fine, so this is idempotent.
    pub fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = remove_tree(&d.path) {
                tracing::warn!(error = %e, "cannot remove cgroup");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Freeze (`true`) or thaw (`false`) every process of the container: the v1
    /// `freezer` controller where it has a hierarchy, else cgroup2's `cgroup.freeze`.
    /// Returns once the kernel reports the new state (a freeze waits for every task to
    /// stop), or an error naming the file after 5 s.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let (file, value, done): (PathBuf, &str, Box<dyn Fn() -> bool>) =
            if let Some(d) = self.v1_dir("freezer") {
                let state = d.path.join("freezer.state");
                let want = if frozen { "FROZEN" } else { "THAWED" };
                let st = state.clone();
                (
                    state,
                    want,
                    Box::new(move || fs::read_to_string(&st).is_ok_and(|t| t.trim() == want)),
                )
            } else if let Some(d) = self.dirs.iter().find(|d| d.v2) {
                let events = d.path.join("cgroup.events");
                let want = if frozen { 1 } else { 0 };
                (
                    d.path.join("cgroup.freeze"),
                    if frozen { "1" } else { "0" },
                    Box::new(move || {
                        fs::read_to_string(&events)
                            .ok()
                            .and_then(|t| stats::flat_keyed(&t, "frozen"))
                            == Some(want)
                    }),
                )
            } else {
                return Err(Error::Cgroup(
                    "no freezer: this host has neither a v1 freezer hierarchy nor cgroup2".into(),
                ));
            };
        let start = Instant::now();
        loop {
            // v1: a freeze can stop half-way (FREEZING) when a task is busy; writing
            // again resumes it.
            write_file(&file, value)?;
            if done() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(5) {
                return Err(Error::Cgroup(format!(
                    "{} did not reach {value:?} within 5 s",
                    file.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the container's processes are frozen (by [`Cgroup::set_frozen`]).
    pub fn frozen(&self) -> bool {
        if let Some(d) = self.v1_dir("freezer") {
            return fs::read_to_string(d.path.join("freezer.state"))
                .is_ok_and(|t| t.trim() == "FROZEN");
        }
        self.dirs.iter().find(|d| d.v2).is_some_and(|d| {
            fs::read_to_string(d.path.join("cgroup.freeze")).is_ok_and(|t| t.trim() == "1")
        })
    }

    /// Apply changed limits to a running container (`runc update`): like
    /// [`Cgroup::apply`], but the device rules are left as they are.
    pub fn update(&self, res: &LinuxResources) -> Result<()> {
        self.apply_limits(res, false)
    }

    /// Whether the OOM killer has killed a process of the cgroup: the one figure of
    /// [`Cgroup::stats`] that an exit needs, read alone.
    pub fn oom_killed(&self) -> bool {
        let Some(d) = self.dir_for("memory") else {
            return false;
        };
        if d.v2 {
            fs::read_to_string(d.path.join("memory.events"))
                .ok()
                .and_then(|t| stats::flat_keyed(&t, "oom_kill"))
                .is_some_and(|n| n > 0)
        } else {
            let oom = fs::read_to_string(d.path.join("memory.oom_control")).unwrap_or_default();
            stats::flat_keyed(&oom, "oom_kill").is_some_and(|n| n > 0)
                || stats::flat_keyed(&oom, "under_oom") == Some(1)
        }
    }

    /// Read usage and limits.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        let rd = |d: &CgroupDir, f: &str| fs::read_to_string(d.path.join(f)).ok();
        if let Some(d) = self.dir_for("memory") {
            if d.v2 {
                s.memory_usage = rd(d, "memory.current")
                    .and_then(|t| stats::counter(&t))
                    .unwrap_or(0);
                s.memory_max_usage = rd(d, "memory.peak").and_then(|t| stats::counter(&t));
                s.memory_limit = rd(d, "memory.max").and_then(|t| stats::limit_value(&t));
                s.oom_kills = rd(d, "memory.events")
                    .and_then(|t| stats::flat_keyed(&t, "oom_kill"))
                    .unwrap_or(0);
            } else {
                if !d.path.exists() {
                    return Err(Error::Cgroup(format!(
                        "{} does not exist",
                        d.path.display()
                    )));
                }
                s.memory_usage = rd(d, "memory.usage_in_bytes")
                    .and_then(|t| stats::counter(&t))
                    .unwrap_or(0);
                s.memory_max_usage =
                    rd(d, "memory.max_usage_in_bytes").and_then(|t| stats::counter(&t));
                s.memory_limit =
                    rd(d, "memory.limit_in_bytes").and_then(|t| stats::limit_value(&t));
                let oom = rd(d, "memory.oom_control").unwrap_or_default();
                s.oom_kills = stats::flat_keyed(&oom, "oom_kill").unwrap_or(0);
                if stats::flat_keyed(&oom, "under_oom") == Some(1) {
                    s.oom_kills = s.oom_kills.max(1);
                }
            }
            s.oom_killed = s.oom_kills > 0;
        }
        if let Some(d) = self.dir_for("pids") {
            s.pids_current = rd(d, "pids.current")
                .and_then(|t| stats::counter(&t))
                .unwrap_or(0);
            s.pids_limit = rd(d, "pids.max").and_then(|t| stats::limit_value(&t));
        }
        if let Some(d) = self.v1_dir("cpuacct") {
            s.cpu_usage_ns = rd(d, "cpuacct.usage")
                .and_then(|t| stats::counter(&t))
                .unwrap_or(0);
        } else if let Some(d) = self.dirs.iter().find(|d| d.v2) {
            s.cpu_usage_ns = rd(d, "cpu.stat")
                .and_then(|t| stats::flat_keyed(&t, "usage_usec"))
                .unwrap_or(0)
                * 1000;
        }
        if let Some(d) = self.dir_for("cpu") {
            s.cpu_throttled_periods = rd(d, "cpu.stat")
                .and_then(|t| stats::flat_keyed(&t, "nr_throttled"))
                .unwrap_or(0);
        }
        if let Some(d) = self.v1_dir("blkio") {
            let t = rd(d, "blkio.throttle.io_service_bytes_recursive")
                .or_else(|| rd(d, "blkio.throttle.io_service_bytes"))
                .unwrap_or_default();
            (s.io_read_bytes, s.io_write_bytes) = stats::blkio_service_bytes(&t);
        } else if let Some(d) = self.dirs.iter().find(|d| d.v2) {
            (s.io_read_bytes, s.io_write_bytes) =
                stats::io_stat(&rd(d, "io.stat").unwrap_or_default());
        }
        Ok(s)
    }
}

fn read(path: &str) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value)
        .map_err(|e| Error::Cgroup(format!("write {value:?} to {}: {e}", path.display())))
}

fn read_controllers(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Enable every available controller for the children of `dir` (v2). Failure is only
/// logged: a cgroup with processes of its own cannot delegate ("no internal processes"),
/// and limits that needed it fail later with a precise message.
fn enable_v2_controllers(dir: &Path) {
    let available = read_controllers(dir);
    let wanted: Vec<String> = available
        .iter()
        .filter(|c| ["cpu", "cpuset", "memory", "pids", "io", "hugetlb"].contains(&c.as_str()))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let file = dir.join("cgroup.subtree_control");
    if let Err(e) = fs::write(&file, wanted.join(" ")) {
        tracing::debug!(file = %file.display(), error = %e, "cannot enable v2 controllers");
    }
}

/// A new v1 cpuset cgroup starts with empty cpus/mems and refuses tasks until they are set.
fn inherit_cpuset(parent: &Path, child: &Path) -> Result<()> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let cur = fs::read_to_string(child.join(f)).unwrap_or_default();
        if cur.trim().is_empty() {
            let from = fs::read_to_string(parent.join(f))
                .map_err(|e| Error::io("read", parent.join(f), e))?;
            write_file(&child.join(f), from.trim())?;
        }
    }
    Ok(())
}

/// rmdir a cgroup and its sub-cgroups, deepest first; retries while tasks are exiting.
fn remove_tree(dir: &Path) -> Result<()> {
    // Mostly there is nothing below the container's cgroup: one rmdir, without listing
    // the dozens of control files of a v1 cgroup directory first.
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(e) => return Err(Error::io("remove cgroup", dir, e)),
    }
    // Child cgroups (or processes, which the loop below waits out): children first.
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read cgroup dir", dir, e)),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    let start = Instant::now();
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && start.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(Error::io("remove cgroup", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_to_own_cgroup_and_absolute_to_root() {
        let layout = detect::parse_mountinfo(
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        )
        .unwrap();
        let own = detect::parse_proc_cgroup("8:pids:/\n4:memory:/sandbox/x\n0::/\n");
        let cg = Cgroup::resolve_with(&layout, &own, "vessel/c1");
        let paths: Vec<_> = cg.dirs.iter().map(|d| d.path.clone()).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/sys/fs/cgroup/memory/sandbox/x/vessel/c1"),
                PathBuf::from("/sys/fs/cgroup/pids/vessel/c1"),
                PathBuf::from("/sys/fs/cgroup/unified/vessel/c1"),
            ]
        );
        assert!(!cg.unified);
        let cg = Cgroup::resolve_with(&layout, &own, "/abs/c1");
        assert_eq!(cg.dirs[0].path, Path::new("/sys/fs/cgroup/memory/abs/c1"));
        assert_eq!(cg.dir_for("memory").unwrap().controllers, ["memory"]);
        assert!(cg.dir_for("hugetlb").unwrap().v2);

        let v2 = detect::parse_mountinfo("25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
            .unwrap();
        let own = detect::parse_proc_cgroup("0::/system.slice/vessel.service\n");
        let cg = Cgroup::resolve_with(&v2, &own, "vessel/c1");
        assert_eq!(cg.dirs[0].path, Path::new("/sys/fs/cgroup/vessel/c1"));
        assert!(cg.unified);
    }
}
