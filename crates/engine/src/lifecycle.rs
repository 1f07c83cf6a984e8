//! Operations on a running instance beyond start/stop/kill: `pause`/`unpause`,
//! `rename`, `top`, `stats` and `update`, with Docker's errors for the wrong state.

use crate::backend::{Limits, Usage};
use crate::catalogue::{Instance, Status};
use crate::{EngineError, Result};

/// One process of an instance, as `top` lists it (`ps -ef`'s columns).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Process {
    /// User name (the host's name for the uid, else the number).
    pub uid: String,
    /// Host pid.
    pub pid: i32,
    /// Parent's host pid.
    pub ppid: i32,
    /// CPU use over its life, percent (integer, as ps shows).
    pub c: u64,
    /// Start time (`HH:MM` today, else `MonDD`).
    pub stime: String,
    /// Controlling terminal (`?` for none).
    pub tty: String,
    /// CPU time, `HH:MM:SS`.
    pub time: String,
    /// Command line.
    pub cmd: String,
}

/// `top`'s column titles, as Docker's API names them.
pub const TOP_TITLES: [&str; 8] = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];

impl Process {
    /// The row as strings, in [`TOP_TITLES`] order.
    pub fn row(&self) -> Vec<String> {
        vec![
            self.uid.clone(),
            self.pid.to_string(),
            self.ppid.to_string(),
            self.c.to_string(),
            self.stime.clone(),
            self.tty.clone(),
            self.time.clone(),
            self.cmd.clone(),
        ]
    }
}

impl crate::Engine {
    /// The instance `key`, which must be running (Docker's 409 otherwise).
    fn running(&self, key: &str) -> Result<Instance> {
        let inst = self.get(key)?;
        if inst.status != Status::Running {
            return Err(EngineError::Conflict(format!(
                "container {} is not running",
                inst.name
            )));
        }
        Ok(inst)
    }

    /// Connects to the attach socket of instance `id` (through a descriptor of its
    /// directory: the path may not fit in a `sockaddr_un`). See `vessel_shim::attach`
    /// for the protocol.
    pub fn attach_socket(&self, id: &str) -> Result<std::os::unix::net::UnixStream> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.instance_dir(id);
        let d = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .map_err(|e| EngineError::io("open", &dir, e))?;
        let path = format!(
            "/proc/self/fd/{}/{}",
            d.as_raw_fd(),
            vessel_shim::attach::SOCKET
        );
        std::os::unix::net::UnixStream::connect(&path)
            .map_err(|e| EngineError::io("attach to", dir.join(vessel_shim::attach::SOCKET), e))
    }

    /// Sets the terminal size of running instance `key` (Docker's `resize`), through its
    /// attach socket; returns once its holder applied it. An instance without a terminal,
    /// or a size with a 0 in it, leaves the instance as it is, as Docker does.
    pub fn resize(&self, key: &str, rows: u16, cols: u16) -> Result<()> {
        use std::io::{Read, Write};
        let inst = self.running(key)?;
        if !inst.request.tty || rows == 0 || cols == 0 {
            return Ok(());
        }
        let not_running = |e: std::io::Error| {
            EngineError::Conflict(format!("container {} is not running: {e}", inst.name))
        };
        let mut s = match self.attach_socket(&inst.id) {
            Ok(s) => s,
            // Its holder is gone: the instance ended since we looked.
            Err(EngineError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(not_running(source))
            }
            Err(e) => return Err(e),
        };
        let gone = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                EngineError::Internal(format!(
                    "the monitor of {} did not apply the terminal size within 5 s",
                    inst.name
                ))
            } else {
                not_running(e)
            }
        };
        let [r0, r1] = rows.to_be_bytes();
        let [c0, c1] = cols.to_be_bytes();
        s.write_all(&[vessel_shim::attach::RESIZE, r0, r1, c0, c1])
            .map_err(gone)?;
        s.shutdown(std::net::Shutdown::Write).map_err(gone)?;
        // The holder hangs up once it applied the size; a holder that does not within
        // seconds is wedged, and the caller must not wait on it for ever.
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .map_err(gone)?;
        let mut rest = Vec::new();
        s.take(4096).read_to_end(&mut rest).map_err(gone)?;
        Ok(())
    }

    /// Whether a running instance is paused.
    pub fn paused(&self, inst: &Instance) -> bool {
        inst.status == Status::Running
            && self
                .backend(inst.request.isolation)
                .is_ok_and(|b| b.paused(inst))
    }

    /// What `ps` shows of an instance, for every front end: Docker's `State` (`paused`
    /// and `restarting` are states its recorded status does not tell) and its `Status`
    /// text (`Up 5 minutes (Paused)`, `Exited (0) 2 hours ago`, `Restarting (1) ...`).
    pub fn ps_state(&self, i: &Instance) -> (&'static str, String) {
        let paused = self.paused(i);
        let restarting = i.status != Status::Running
            && crate::restart::RestartState::load(&self.instance_dir(&i.id)).restarting;
        let age = |t: &Option<String>| {
            t.as_deref()
                .map(human_age)
                .unwrap_or_default()
                .replace(" ago", "")
        };
        let code = i.exit_code.unwrap_or(-1);
        match i.status {
            Status::Running if paused => ("paused", format!("Up {} (Paused)", age(&i.started_at))),
            Status::Running => (
                "running",
                format!("Up {}{}", age(&i.started_at), self.health_suffix(i)),
            ),
            _ if restarting => (
                "restarting",
                format!("Restarting ({code}) {} ago", age(&i.finished_at)),
            ),
            Status::Created => ("created", "Created".into()),
            Status::Exited => (
                "exited",
                format!("Exited ({code}) {} ago", age(&i.finished_at)),
            ),
            Status::Dead => ("dead", "Dead".into()),
        }
    }

    /// The health of a running instance with a health check, as `ps` shows it after
    /// the uptime: ` (health: starting)`, ` (healthy)`, ` (unhealthy)`; else empty.
    fn health_suffix(&self, i: &Instance) -> String {
        match self.health(i).map(|h| h.status) {
            Some(s) if s == "starting" => " (health: starting)".into(),
            Some(s) => format!(" ({s})"),
            None => String::new(),
        }
    }

    /// The health of a running instance with a health check (`starting` until its
    /// checker wrote a state); `None` without one, or when it does not run.
    pub fn health(&self, i: &Instance) -> Option<crate::health::Health> {
        if i.status != Status::Running
            || !i
                .request
                .healthcheck
                .as_ref()
                .is_some_and(crate::health::Healthcheck::active)
        {
            return None;
        }
        Some(
            crate::health::read(&self.instance_dir(&i.id)).unwrap_or_else(|| {
                crate::health::Health {
                    status: "starting".into(),
                    ..Default::default()
                }
            }),
        )
    }

    /// Bytes the instance wrote to its own root file system (Docker's `SizeRw`): a
    /// container's overlay upper directory; a microVM's writable disk, as allocated.
    pub fn writable_size(&self, i: &Instance) -> u64 {
        let dir = self.instance_dir(&i.id);
        match i.request.isolation {
            crate::request::Isolation::Container => {
                vessel_image::store::dir_size(&dir.join("upper"))
            }
            crate::request::Isolation::Vm => {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(dir.join("scratch.ext4")).map_or(0, |m| m.blocks() * 512)
            }
        }
    }

    /// The health status `ps --filter health=` matches: `starting`, `healthy`,
    /// `unhealthy`, or `none` (no health check, or not running).
    pub fn health_status(&self, i: &Instance) -> String {
        self.health(i).map_or_else(|| "none".into(), |h| h.status)
    }

    /// Checks a `health=` filter's value (Docker's words).
    pub fn check_health_filter(v: &str) -> Result<()> {
        match v {
            "starting" | "healthy" | "unhealthy" | "none" => Ok(()),
            _ => Err(EngineError::InvalidFlag(format!(
                "invalid filter 'health={v}': expected starting, healthy, unhealthy or none"
            ))),
        }
    }

    /// `pause`: freezes every process of the instance.
    pub fn pause(&self, key: &str) -> Result<Instance> {
        let inst = self.running(key)?;
        if self.paused(&inst) {
            return Err(EngineError::Conflict(format!(
                "container {} is already paused",
                inst.name
            )));
        }
        self.backend(inst.request.isolation)?.pause(&inst)?;
        Ok(inst)
    }

    /// `unpause`: thaws a paused instance.
    pub fn unpause(&self, key: &str) -> Result<Instance> {
        let inst = self.running(key)?;
        if !self.paused(&inst) {
            return Err(EngineError::Conflict(format!(
                "container {} is not paused",
                inst.name
            )));
        }
        self.backend(inst.request.isolation)?.resume(&inst)?;
        Ok(inst)
    }

    /// Thaws `inst` if it is paused, so that a signal sent to it is acted on (what stop,
    /// kill and rm -f do, as Docker does).
    pub(crate) fn thaw_for_signal(&self, inst: &Instance) {
        if self.paused(inst) {
            if let Ok(b) = self.backend(inst.request.isolation) {
                let _ = b.resume(inst);
            }
        }
    }

    /// `rename`: gives the instance a new name.
    pub fn rename(&self, key: &str, new_name: &str) -> Result<Instance> {
        let name = new_name.strip_prefix('/').unwrap_or(new_name);
        crate::names::validate(name)?;
        let inst = self.get(key)?;
        if inst.name == name {
            return Err(EngineError::Conflict(format!(
                "renaming a container with the same name as its current name: {name}"
            )));
        }
        self.catalogue().rename(&inst.id, name)?;
        self.get(&inst.id)
    }

    /// `top`: the instance's processes.
    pub fn top(&self, key: &str) -> Result<Vec<Process>> {
        let inst = self.running(key)?;
        let pids = self.backend(inst.request.isolation)?.processes(&inst)?;
        let mut out: Vec<Process> = pids.iter().filter_map(|&p| read_process(p)).collect();
        out.sort_by_key(|p| p.pid);
        Ok(out)
    }

    /// `stats`: what the instance uses now.
    pub fn usage(&self, key: &str) -> Result<(Instance, Usage)> {
        let inst = self.running(key)?;
        let u = self.backend(inst.request.isolation)?.usage(&inst)?;
        Ok((inst, u))
    }

    /// `update`: new limits for a running (or created) instance, also recorded with it.
    pub fn update(&self, key: &str, limits: &Limits) -> Result<Instance> {
        let inst = self.get(key)?;
        if let Some(m) = limits.memory {
            if m < 6 << 20 {
                return Err(EngineError::InvalidFlag(
                    "--memory: the minimum allowed is 6m".into(),
                ));
            }
            if inst
                .request
                .access
                .memory_swap
                .is_some_and(|s| s >= 0 && (s as u64) < m)
            {
                return Err(EngineError::InvalidFlag(
                    "--memory: more than the container's --memory-swap (memory plus swap)".into(),
                ));
            }
        }
        if inst.request.isolation == crate::request::Isolation::Vm {
            return Err(crate::backend::unsupported(&inst, "update"));
        }
        if inst.status == Status::Running {
            self.backend(inst.request.isolation)?
                .update(&inst, limits)?;
        } else if inst.status != Status::Created {
            return Err(EngineError::Conflict(format!(
                "container {} is not running: start it, or create a new one with these limits",
                inst.name
            )));
        }
        let mut r = inst.request.clone();
        if let Some(m) = limits.memory {
            r.memory = Some(m);
        }
        if let Some(c) = limits.cpus {
            r.cpus = Some(c);
        }
        if let Some(p) = limits.pids_limit {
            r.pids_limit = (p > 0).then_some(p);
        }
        if let Some(s) = limits.cpu_shares {
            r.access.cpu_shares = Some(s);
        }
        if let Some(c) = &limits.cpuset_cpus {
            r.access.cpuset_cpus = Some(c.clone());
        }
        self.catalogue().set_request(&inst.id, &r)?;
        if inst.status == Status::Created {
            // Not started yet: its bundle is written again with the new limits.
            let fresh = self.get(&inst.id)?;
            let layers = self
                .store()?
                .layer_dirs(&self.store()?.resolve(&fresh.image_id)?)?;
            self.backend(fresh.request.isolation)?.prepare(
                &fresh,
                &self.instance_dir(&fresh.id),
                &layers,
            )?;
        }
        self.get(&inst.id)
    }
}

/// One process from /proc (`None` if it is gone).
fn read_process(pid: i32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ppid = num(1) as i32;
    let tty_nr = num(4);
    let (utime, stime, start) = (num(11), num(12), num(19));
    let hz = 100u64; // USER_HZ, fixed by the kernel ABI for /proc
    let cpu_s = (utime + stime) / hz;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let age_s = (uptime - start as f64 / hz as f64).max(0.001);
    let c = ((utime + stime) as f64 / hz as f64 / age_s * 100.0) as u64;
    let started = chrono::Local::now() - chrono::Duration::milliseconds((age_s * 1000.0) as i64);
    let stime_s = if chrono::Local::now().date_naive() == started.date_naive() {
        started.format("%H:%M").to_string()
    } else {
        started.format("%b%d").to_string()
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = if cmdline.is_empty() {
        format!("[{}]", &stat[stat.find('(')? + 1..stat.rfind(')')?])
    } else {
        String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ")
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some(Process {
        uid: host_user_name(uid),
        pid,
        ppid,
        c,
        stime: stime_s,
        tty: tty_name(tty_nr),
        time: format!(
            "{:02}:{:02}:{:02}",
            cpu_s / 3600,
            cpu_s / 60 % 60,
            cpu_s % 60
        ),
        cmd,
    })
}

/// The host's name for `uid` (what `ps` on the host shows), else the number.
fn host_user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

/// `ps`'s TTY column from `tty_nr` (`pts/N` for pseudo-terminals, `?` for none).
fn tty_name(tty_nr: u64) -> String {
    if tty_nr == 0 {
        return "?".into();
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        136..=143 => format!("pts/{}", minor + (major - 136) * 256),
        4 if minor < 64 => format!("tty{minor}"),
        _ => format!("{major}:{minor}"),
    }
}

/// The host's memory in bytes (`/proc/meminfo`'s MemTotal): the limit shown for an
/// instance without one, as Docker shows it.
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// How long ago an RFC 3339 time was, in Docker's words ("Less than a second ago",
/// "5 minutes ago", "An hour ago"); the text itself if it is not one.
pub fn human_age(rfc3339: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else {
        return rfc3339.to_string();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    let (n, unit) = match secs {
        s if s < 60 => {
            return if s < 2 {
                "Less than a second ago".into()
            } else {
                format!("{s} seconds ago")
            }
        }
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86400 => (s / 3600, "hour"),
        s if s < 86400 * 14 => (s / 86400, "day"),
        s if s < 86400 * 60 => (s / (86400 * 7), "week"),
        s if s < 86400 * 365 * 2 => (s / (86400 * 30), "month"),
        s => (s / (86400 * 365), "year"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "An" } else { "1" })
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_as_ps_would() {
        let me = read_process(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert_eq!(me.ppid as u32, std::os::unix::process::parent_id());
        assert!(
            me.time.len() == 8 && me.time.as_bytes()[2] == b':',
            "{}",
            me.time
        );
        assert!(!me.cmd.is_empty());
        assert_eq!(me.row().len(), TOP_TITLES.len());
    }

    #[test]
    fn tty_names() {
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(tty_name((4 << 8) | 1), "tty1");
    }
}
