//! Health checks, as Docker's: the image's `HEALTHCHECK` (its config's `Healthcheck`)
//! under `--health-*` / `--no-healthcheck` (the API's `Config.Healthcheck`), probed by a
//! checker process (`vessel __health ID`) that the instance's monitor starts with it.
//!
//! The checker runs the probe in the instance as `vessel exec` does, every `Interval`
//! (every `StartInterval` while the start period lasts and no probe passed yet), stops
//! one that outlives `Timeout`, and keeps the state Docker shows as `State.Health` in
//! `<instance dir>/health.json`: `starting` until a probe passes (`healthy`), then
//! `unhealthy` after `Retries` failures in a row (failures in the start period do not
//! count). Each change of status is an event (`health_status: healthy`). The checker
//! watches the instance's process through a pidfd and exits with it: nothing outlives
//! the instance.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::catalogue::Status;
use crate::exec::ExecSpec;
use crate::{Engine, EngineConfig, EngineError, Result};

/// Docker's defaults for what a health check leaves unset.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default interval during the start period.
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// Default failures in a row that make an instance unhealthy.
pub const DEFAULT_RETRIES: u32 = 3;
/// Probes kept in the log (Docker keeps 5).
const MAX_LOG: usize = 5;
/// Bytes of a probe's output kept (Docker keeps 4096).
const MAX_OUTPUT: usize = 4096;

/// The state file in the instance's directory.
const STATE_FILE: &str = "health.json";

/// Docker's `HealthConfig` (`Config.Healthcheck`): the test and its timing, durations in
/// nanoseconds, 0 for "the default".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", prog, args...]` or `["CMD-SHELL", command]`.
    #[serde(default)]
    pub test: Vec<String>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Time a probe may take.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// Time to start during which failures do not count.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Time between probes during the start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Failures in a row that make it unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Healthcheck {
    /// Whether there is anything to probe (not `NONE`, not empty).
    pub fn active(&self) -> bool {
        !self.test.is_empty() && self.test[0] != "NONE"
    }

    fn duration(ns: i64, default: Duration) -> Duration {
        match ns {
            n if n > 0 => Duration::from_nanos(n as u64),
            _ => default,
        }
    }

    /// Time between probes.
    pub fn interval(&self) -> Duration {
        Self::duration(self.interval, DEFAULT_INTERVAL)
    }

    /// Time a probe may take.
    pub fn timeout(&self) -> Duration {
        Self::duration(self.timeout, DEFAULT_TIMEOUT)
    }

    /// The start period.
    pub fn start_period(&self) -> Duration {
        Self::duration(self.start_period, Duration::ZERO)
    }

    /// Time between probes during the start period.
    pub fn start_interval(&self) -> Duration {
        Self::duration(self.start_interval, DEFAULT_START_INTERVAL)
    }

    /// Failures in a row that make it unhealthy.
    pub fn retries(&self) -> u32 {
        match self.retries {
            n if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
            _ => DEFAULT_RETRIES,
        }
    }

    /// The probe's argv: the program and its arguments, or the shell's.
    pub fn argv(&self) -> Vec<String> {
        match self.test.first().map(String::as_str) {
            Some("CMD") => self.test[1..].to_vec(),
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), self.test[1..].join(" ")],
            _ => Vec::new(),
        }
    }

    /// Checks the test's form and the timing (Docker's rules and words).
    fn check(&self, what: &str) -> Result<()> {
        let bad = |why: String| EngineError::InvalidFlag(format!("{what}: {why}"));
        match self.test.first().map(String::as_str) {
            None | Some("NONE") => {}
            Some("CMD") if self.test.len() >= 2 && !self.test[1].is_empty() => {}
            Some("CMD-SHELL") if self.test.len() == 2 && !self.test[1].trim().is_empty() => {}
            Some("CMD" | "CMD-SHELL") => return Err(bad("the test has no command".into())),
            Some(other) => {
                return Err(bad(format!(
                    "unknown test type {other:?} (NONE, CMD or CMD-SHELL)"
                )))
            }
        }
        for (name, ns) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ] {
            if ns != 0 && ns < 1_000_000 {
                return Err(bad(format!(
                    "{name} in Healthcheck cannot be less than 1ms"
                )));
            }
        }
        if self.retries < 0 {
            return Err(bad("Retries in Healthcheck cannot be negative".into()));
        }
        Ok(())
    }
}

/// What `run`/`create` say about health checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthOptions {
    /// `--no-healthcheck`: none, whatever the image says.
    pub none: bool,
    /// The test (`--health-cmd C` is `["CMD-SHELL", C]`; the API gives any form) and
    /// the timing; unset fields take the image's.
    pub given: Healthcheck,
}

impl HealthOptions {
    /// Parses `--health-cmd`, `--health-interval`, ... (Go durations: `30s`, `1m30s`).
    #[allow(clippy::too_many_arguments)]
    pub fn from_flags(
        none: bool,
        cmd: Option<&str>,
        interval: Option<&str>,
        timeout: Option<&str>,
        start_period: Option<&str>,
        start_interval: Option<&str>,
        retries: Option<i64>,
    ) -> Result<HealthOptions> {
        let dur = |flag: &str, v: Option<&str>| -> Result<i64> {
            match v {
                None => Ok(0),
                Some(s) => go_duration_ns(s).ok_or_else(|| {
                    EngineError::InvalidFlag(format!(
                        "invalid argument {s:?} for {flag}: not a duration (like 30s, 1m30s, 500ms)"
                    ))
                }),
            }
        };
        let given = Healthcheck {
            test: cmd
                .map(|c| vec!["CMD-SHELL".to_string(), c.to_string()])
                .unwrap_or_default(),
            interval: dur("--health-interval", interval)?,
            timeout: dur("--health-timeout", timeout)?,
            start_period: dur("--health-start-period", start_period)?,
            start_interval: dur("--health-start-interval", start_interval)?,
            retries: retries.unwrap_or(0),
        };
        if none && given != Healthcheck::default() {
            return Err(EngineError::InvalidFlag(
                "--no-healthcheck conflicts with --health-* options".into(),
            ));
        }
        Ok(HealthOptions { none, given })
    }
}

/// The instance's health check: the options over the image's (`image`: its config's
/// `Healthcheck`, if any), field by field as Docker merges them. `None`: no check at
/// all; a `NONE` test is kept (inspect shows it) but never probed.
pub fn resolve(
    opts: &HealthOptions,
    image: Option<&serde_json::Value>,
) -> Result<Option<Healthcheck>> {
    if opts.none {
        return Ok(Some(Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    opts.given.check("the health check")?;
    let image: Option<Healthcheck> = match image {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            let hc: Healthcheck = serde_json::from_value(v.clone()).map_err(|e| {
                EngineError::InvalidFlag(format!("the image's Healthcheck is malformed: {e}"))
            })?;
            hc.check("the image's Healthcheck")?;
            Some(hc)
        }
    };
    let g = &opts.given;
    let Some(base) = image else {
        return Ok((!g.test.is_empty()).then(|| g.clone()));
    };
    let pick = |mine: i64, theirs: i64| if mine != 0 { mine } else { theirs };
    let merged = Healthcheck {
        test: if g.test.is_empty() {
            base.test.clone()
        } else {
            g.test.clone()
        },
        interval: pick(g.interval, base.interval),
        timeout: pick(g.timeout, base.timeout),
        start_period: pick(g.start_period, base.start_period),
        start_interval: pick(g.start_interval, base.start_interval),
        retries: pick(g.retries, base.retries),
    };
    Ok((!merged.test.is_empty()).then_some(merged))
}

/// Parses a Go duration (`1h2m3.5s`, `300ms`, `10us`, `0`) into nanoseconds; `None` if
/// it is not one or does not fit.
pub fn go_duration_ns(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += value * scale;
    }
    (total < i64::MAX as f64).then_some(total as i64)
}

/// Docker's `State.Health`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Failed probes in a row.
    pub failing_streak: u32,
    /// The last probes, oldest first.
    pub log: Vec<Probe>,
}

/// One probe (Docker's `HealthcheckResult`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Probe {
    /// When it started, RFC 3339.
    pub start: String,
    /// When it ended.
    pub end: String,
    /// Its exit status: 0 passed, anything else failed (-1: it could not run or timed
    /// out).
    pub exit_code: i32,
    /// The first 4096 bytes of its output.
    pub output: String,
}

/// The instance's health, as its checker last wrote it.
pub fn read(dir: &Path) -> Option<Health> {
    let data = std::fs::read(dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Writes the state whole (a new file renamed over the old). Nothing is created if the
/// instance's directory is gone (removed while a probe ran).
fn write(dir: &Path, h: &Health) {
    let tmp = dir.join(".health.json.new");
    let Ok(data) = serde_json::to_vec(h) else {
        return;
    };
    if std::fs::write(&tmp, data).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(STATE_FILE));
    }
}

/// Starts the checker of instance `id` (its monitor does, once the instance runs): in a
/// session of its own, and not our child (so that no zombie waits on a monitor that has
/// become the shim).
pub fn spawn_checker(config: &EngineConfig, id: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&config.exe);
    cmd.arg("--root").arg(&config.root).arg("__health").arg(id);
    config.apply_child_env(&mut cmd);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: setsid, fork, _exit.
    // The first child exits at once; its child (reparented to init or the subreaper)
    // goes on to exec the checker.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => Ok(()),
                _ => libc::_exit(0),
            }
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| EngineError::Internal(format!("start the health checker: {e}")))?;
    let _ = child.wait();
    Ok(())
}

/// `vessel __health ID`: probes instance `id` until its process exits. Returns the
/// exit status (0; 1 when it could not watch the instance).
pub fn checker_main(engine: &Engine, id: &str) -> u8 {
    let inst = match engine.get(id) {
        Ok(i) => i,
        Err(_) => return 1,
    };
    let Some(hc) = inst.request.healthcheck.clone().filter(Healthcheck::active) else {
        return 0;
    };
    let (Status::Running, Some(pid)) = (inst.status, inst.pid) else {
        return 1;
    };
    // A pidfd names this process even if the pid is reused later; that it is still the
    // instance's is checked against the catalogue once it is open.
    let Ok(pidfd) = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).expect("a running instance's pid is positive"),
        rustix::process::PidfdFlags::empty(),
    ) else {
        return 1;
    };
    match engine.get(id) {
        Ok(now) if now.status == Status::Running && now.started_at == inst.started_at => {}
        _ => return 0,
    }
    let dir = engine.instance_dir(id);
    let mut health = Health {
        status: "starting".into(),
        ..Default::default()
    };
    write(&dir, &health);
    let born = Instant::now();
    let mut ever_passed = false;
    loop {
        let in_start = born.elapsed() < hc.start_period();
        let wait = if in_start && !ever_passed {
            hc.start_interval()
        } else {
            hc.interval()
        };
        if exited(&pidfd, wait) {
            return 0;
        }
        let probe = run_probe(engine.config(), id, &hc);
        // Gone while it ran: what the probe says is about a stopped instance.
        if exited(&pidfd, Duration::ZERO) {
            return 0;
        }
        let passed = probe.exit_code == 0;
        let before = health.status.clone();
        if passed {
            ever_passed = true;
            health.failing_streak = 0;
            health.status = "healthy".into();
        } else if born.elapsed() >= hc.start_period() || ever_passed {
            health.failing_streak = health.failing_streak.saturating_add(1);
            if health.failing_streak >= hc.retries() {
                health.status = "unhealthy".into();
            }
        }
        health.log.push(probe);
        if health.log.len() > MAX_LOG {
            health.log.remove(0);
        }
        write(&dir, &health);
        if health.status != before {
            engine.instance_event(&inst, &format!("health_status: {}", health.status), &[]);
        }
    }
}

/// Whether the process behind `pidfd` exits within `wait`.
fn exited(pidfd: &OwnedFd, wait: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) if left.is_zero() => return false,
            Ok(0) => continue,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Runs one probe through `vessel __exec`, bounded by the check's timeout.
fn run_probe(config: &EngineConfig, id: &str, hc: &Healthcheck) -> Probe {
    let start = now();
    let failed = |output: String| Probe {
        start: start.clone(),
        end: now(),
        exit_code: -1,
        output,
    };
    let spec = ExecSpec {
        args: hc.argv(),
        ..Default::default()
    };
    let mut helper = match crate::exec::spawn(config, id, &spec) {
        Ok(h) => h,
        Err(e) => return failed(e.to_string()),
    };
    let deadline = Instant::now() + hc.timeout();
    let _ = helper
        .control
        .set_read_timeout(Some(hc.timeout().max(Duration::from_millis(1))));
    let pid = match crate::exec::read_report(&helper.control) {
        crate::exec::HelperReport::Started { pid } => Some(pid),
        crate::exec::HelperReport::Error { message, .. } => {
            let _ = helper.child.kill();
            let _ = helper.child.wait();
            return failed(message);
        }
    };
    // Standard output and error, interleaved as they come, up to MAX_OUTPUT bytes.
    let mut output = Vec::new();
    let mut sources: Vec<OwnedFd> = std::iter::once(helper.stdout)
        .chain(helper.stderr)
        .collect();
    let mut timed_out = false;
    while !sources.is_empty() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let ms = PollTimeout::try_from(left.as_millis().clamp(1, i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds: Vec<PollFd> = sources
            .iter()
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let mut k = 0;
        for r in ready {
            if !r {
                k += 1;
                continue;
            }
            let mut buf = [0u8; 4096];
            match nix::unistd::read(&sources[k], &mut buf) {
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => k += 1,
                Ok(0) | Err(_) => {
                    sources.remove(k);
                }
                Ok(n) => {
                    let room = MAX_OUTPUT.saturating_sub(output.len());
                    output.extend_from_slice(&buf[..n.min(room)]);
                    k += 1;
                }
            }
        }
    }
    let exit_code = if timed_out {
        // The probe and its helper go; the helper's status is then the probe's kill.
        if let Some(pid) = pid {
            // The probe's host pid: the helper, its parent, has not reaped it (the
            // helper is killed only after this), so the pid cannot have been reused.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = helper.child.kill();
        let _ = helper.child.wait();
        return Probe {
            start,
            end: now(),
            exit_code: -1,
            output: format!(
                "Health check exceeded timeout ({})",
                human_duration(hc.timeout())
            ),
        };
    } else {
        match helper.child.wait() {
            Ok(s) => s.code().unwrap_or(-1),
            Err(_) => -1,
        }
    };
    drop(sources);
    Probe {
        start,
        end: now(),
        exit_code,
        output: String::from_utf8_lossy(&output).into_owned(),
    }
}

/// `30s`, `1m30s`, `500ms`: how Go prints a duration, as Docker's messages do.
fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs_f64();
    let (h, rest) = ((s / 3600.0).floor(), s % 3600.0);
    let (m, sec) = ((rest / 60.0).floor(), rest % 60.0);
    let mut out = String::new();
    if h > 0.0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0.0 || m > 0.0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{sec}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(go_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(go_duration_ns("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration_ns("300ms"), Some(300_000_000));
        assert_eq!(go_duration_ns("2h"), Some(7_200_000_000_000));
        assert_eq!(go_duration_ns("0"), Some(0));
        for bad in ["", "30", "s", "1x", "-1s", "1..5s", "1s2"] {
            assert_eq!(go_duration_ns(bad), None, "{bad}");
        }
        assert_eq!(human_duration(Duration::from_secs(30)), "30s");
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn flags_go_over_the_image_field_by_field() {
        let image = json!({"Test": ["CMD", "/ok"], "Interval": 5_000_000_000i64, "Retries": 2});
        let o = HealthOptions::from_flags(false, None, Some("1s"), None, None, None, None).unwrap();
        let hc = resolve(&o, Some(&image)).unwrap().unwrap();
        assert_eq!(hc.test, vec!["CMD", "/ok"]);
        assert_eq!(hc.interval(), Duration::from_secs(1));
        assert_eq!(hc.retries(), 2);
        assert_eq!(hc.timeout(), DEFAULT_TIMEOUT);
        assert_eq!(hc.argv(), vec!["/ok"]);
        let o = HealthOptions::from_flags(false, Some("curl -f x"), None, None, None, None, None)
            .unwrap();
        let hc = resolve(&o, Some(&image)).unwrap().unwrap();
        assert_eq!(hc.argv(), vec!["/bin/sh", "-c", "curl -f x"]);
        assert_eq!(hc.interval(), Duration::from_secs(5));
        // --no-healthcheck: kept as NONE, never probed.
        let o = HealthOptions::from_flags(true, None, None, None, None, None, None).unwrap();
        let hc = resolve(&o, Some(&image)).unwrap().unwrap();
        assert!(!hc.active());
        // No check anywhere: none.
        assert_eq!(resolve(&HealthOptions::default(), None).unwrap(), None);
        // The image's NONE: kept, inactive.
        let hc = resolve(&HealthOptions::default(), Some(&json!({"Test": ["NONE"]})))
            .unwrap()
            .unwrap();
        assert!(!hc.active());
    }

    #[test]
    fn bad_checks_are_refused_by_name() {
        let e = HealthOptions::from_flags(true, Some("x"), None, None, None, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--no-healthcheck conflicts"), "{e}");
        let e = HealthOptions::from_flags(false, Some("x"), Some("ten"), None, None, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--health-interval"), "{e}");
        let o = HealthOptions::from_flags(false, Some("x"), Some("10us"), None, None, None, None)
            .unwrap();
        let e = resolve(&o, None).unwrap_err().to_string();
        assert!(
            e.contains("Interval in Healthcheck cannot be less than 1ms"),
            "{e}"
        );
        let o =
            HealthOptions::from_flags(false, Some("x"), None, None, None, None, Some(-1)).unwrap();
        assert!(resolve(&o, None).is_err());
        for t in [json!(["CMD"]), json!(["CMD-SHELL"]), json!(["SHELL", "x"])] {
            let o = HealthOptions {
                none: false,
                given: Healthcheck {
                    test: serde_json::from_value(t.clone()).unwrap(),
                    ..Default::default()
                },
            };
            assert!(resolve(&o, None).is_err(), "{t}");
        }
        let e = resolve(&HealthOptions::default(), Some(&json!({"Test": "CMD"})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("the image's Healthcheck is malformed"), "{e}");
    }
}
