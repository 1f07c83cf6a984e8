//! `--restart`: the policy that starts an instance again when it exits, with Docker's
//! rules. The instance's monitor decides once the exit is recorded: after a backoff
//! (100 ms, doubling per quick restart, at most a minute; back to 100 ms after a run of
//! 10 s or more) it starts a new monitor, unless the user stopped the instance meanwhile
//! (`stop`, `kill` with SIGKILL or its stop signal, `rm`). What it needs between runs
//! lives in `restart.json` in the instance's directory.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalogue::Status;
use crate::{EngineError, Result};

/// Docker's restart policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never (the default).
    #[default]
    No,
    /// Always, unless stopped by the user; also when the engine starts again.
    Always,
    /// As `always`, but not when the engine starts again if the user had stopped it.
    UnlessStopped,
    /// When it exits non-zero, at most this many times (0: no limit).
    OnFailure(u32),
}

impl RestartPolicy {
    /// Parses `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub fn parse(s: &str) -> Result<RestartPolicy> {
        let bad =
            |why: &str| EngineError::InvalidFlag(format!("invalid restart policy {s:?}: {why}"));
        Ok(match s.split_once(':') {
            None => match s {
                "" | "no" => RestartPolicy::No,
                "always" => RestartPolicy::Always,
                "unless-stopped" => RestartPolicy::UnlessStopped,
                "on-failure" => RestartPolicy::OnFailure(0),
                _ => {
                    return Err(bad(
                        "expected no, always, unless-stopped or on-failure[:max-retries]",
                    ))
                }
            },
            Some(("on-failure", n)) => RestartPolicy::OnFailure(
                n.parse::<u32>()
                    .map_err(|_| bad("max-retries is a non-negative number"))?,
            ),
            Some((p, _)) => {
                return Err(bad(&format!(
                    "{p} takes no max-retries (only on-failure does)"
                )))
            }
        })
    }

    /// Docker's `RestartPolicy` fields: (name, maximum retry count).
    pub fn docker(&self) -> (&'static str, u32) {
        match self {
            RestartPolicy::No => ("no", 0),
            RestartPolicy::Always => ("always", 0),
            RestartPolicy::UnlessStopped => ("unless-stopped", 0),
            RestartPolicy::OnFailure(n) => ("on-failure", *n),
        }
    }
}

/// Between runs, in `restart.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartState {
    /// Restarts made by the policy (Docker's `RestartCount`).
    pub count: u32,
    /// Restarts in a row after runs shorter than 10 s (the backoff's exponent).
    pub quick: u32,
    /// The user stopped it: no restart until it is started by hand.
    pub manual_stop: bool,
    /// Waiting out the backoff now (`ps` says `Restarting`).
    pub restarting: bool,
}

const FILE: &str = "restart.json";

impl RestartState {
    /// The state in instance directory `dir` (default when there is none).
    pub fn load(dir: &Path) -> RestartState {
        std::fs::read(dir.join(FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes it (whole, by rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(".restart.json.tmp");
        let text = serde_json::to_vec(self).map_err(|e| EngineError::Internal(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| EngineError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, dir.join(FILE)).map_err(|e| EngineError::io("rename", &tmp, e))
    }

    /// Changes it in `dir` (if the directory is still there), under [`hold`].
    pub fn update(dir: &Path, f: impl FnOnce(&mut RestartState)) {
        let Some(_held) = hold(dir) else { return };
        let mut s = RestartState::load(dir);
        f(&mut s);
        if let Err(e) = s.save(dir) {
            tracing::warn!("restart state in {}: {e}", dir.display());
        }
    }
}

/// An exclusive hold on the restart state of the instance in `dir` (an `flock` on
/// `restart.lock` there), `None` once the directory is gone. Every change is made under
/// it, so that none is lost to another process's load-change-save; and the monitor holds
/// it from its last look at the state until the restarted run has started, so that a
/// user's `stop` either comes first (no restart) or finds the new run (and stops it).
/// Not re-entrant: a process holding it must not take it again.
fn hold(dir: &Path) -> Option<Held> {
    use nix::fcntl::{Flock, FlockArg};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("restart.lock"))
        .ok()?;
    loop {
        match Flock::lock(f, FlockArg::LockExclusive) {
            Ok(lock) => return Some(Held { _lock: Some(lock) }),
            Err((back, nix::errno::Errno::EINTR)) => f = back,
            // No lock to be had (ENOLCK): go on without it rather than lose the change.
            Err((_, e)) => {
                tracing::warn!("lock the restart state in {}: {e}", dir.display());
                return Some(Held { _lock: None });
            }
        }
    }
}

/// What [`hold`] holds: released when dropped.
struct Held {
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// The delay before the next restart, or `None` if `policy` says not to restart after an
/// exit with `code` of a run that lasted `ran`.
pub fn decide(
    policy: RestartPolicy,
    state: &RestartState,
    code: i32,
    ran: Duration,
) -> Option<(Duration, u32)> {
    if state.manual_stop {
        return None;
    }
    match policy {
        RestartPolicy::No => return None,
        RestartPolicy::OnFailure(_) if code == 0 => return None,
        RestartPolicy::OnFailure(max) if max > 0 && state.count >= max => return None,
        _ => {}
    }
    let quick = if ran >= Duration::from_secs(10) {
        0
    } else {
        state.quick + 1
    };
    let delay = Duration::from_millis(100)
        .saturating_mul(1 << quick.saturating_sub(1).min(10))
        .min(Duration::from_secs(60));
    Some((delay, quick))
}

impl crate::Engine {
    /// Marks instance `id` as stopped by the user: its policy does not restart it until
    /// it is started by hand.
    pub fn mark_stopped_by_user(&self, id: &str) {
        RestartState::update(&self.instance_dir(id), |s| s.manual_stop = true);
    }

    /// `update --restart`: a new policy for instance `key`.
    pub fn set_restart_policy(&self, key: &str, policy: RestartPolicy) -> Result<()> {
        let inst = self.get(key)?;
        if inst.request.auto_remove && policy != RestartPolicy::No {
            return Err(EngineError::InvalidFlag(
                "conflicting options: --restart and --rm (an instance removed at exit cannot be restarted)".into(),
            ));
        }
        let mut r = inst.request.clone();
        r.restart = policy;
        self.catalogue().set_request(&inst.id, &r)
    }

    /// Called before a start by hand: the policy applies again.
    pub fn clear_stopped_by_user(&self, id: &str) {
        let dir = self.instance_dir(id);
        if RestartState::load(&dir).manual_stop {
            RestartState::update(&dir, |s| s.manual_stop = false);
        }
    }

    /// After a monitor recorded the exit of instance `id`: waits out the backoff and
    /// starts it again if its policy says so. Runs in the (detached) monitor, once its
    /// reports are sent and its standard descriptors released.
    pub fn restart_if_due(&self, id: &str) {
        let Ok(inst) = self.catalogue().find(id) else {
            return;
        };
        let policy = inst.request.restart;
        if policy == RestartPolicy::No || inst.status != Status::Exited {
            return;
        }
        let dir = self.instance_dir(id);
        let ran = match (&inst.started_at, &inst.finished_at) {
            (Some(a), Some(b)) => chrono::DateTime::parse_from_rfc3339(b)
                .ok()
                .zip(chrono::DateTime::parse_from_rfc3339(a).ok())
                .and_then(|(b, a)| (b - a).to_std().ok())
                .unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let state = RestartState::load(&dir);
        let Some((delay, quick)) = decide(policy, &state, inst.exit_code.unwrap_or(0), ran) else {
            return;
        };
        RestartState::update(&dir, |s| s.restarting = true);
        std::thread::sleep(delay);
        // Held until the new run has started (or failed to): see `hold`.
        let Some(_held) = hold(&dir) else { return };
        let mut now = RestartState::load(&dir);
        // Stopped or removed meanwhile, or started by hand: nothing to do.
        let still = self
            .catalogue()
            .find(id)
            .is_ok_and(|i| i.status == Status::Exited);
        now.restarting = false;
        let due = still && !now.manual_stop;
        if due {
            now.count += 1;
            now.quick = quick;
        }
        if let Err(e) = now.save(&dir) {
            tracing::warn!("restart state in {}: {e}", dir.display());
        }
        if !due {
            return;
        }
        match crate::monitor::spawn_restart(self.config(), id) {
            Ok(mut m) => {
                // Wait for its first report, so that a failure is logged here.
                if let Some(crate::monitor::Report::Error { message, .. }) = m.next() {
                    tracing::warn!("restart of {id}: {message}");
                }
            }
            Err(e) => tracing::warn!("restart of {id}: {e}"),
        }
    }

    /// When the engine starts (`vessel serve`): starts again the instances whose policy
    /// is `always`, or `unless-stopped` and not stopped by the user, that do not run
    /// (the host rebooted, or their monitor was killed). Returns their names.
    pub fn start_by_policy(&self) -> Vec<String> {
        let mut out = Vec::new();
        for inst in self.list().unwrap_or_default() {
            let dir = self.instance_dir(&inst.id);
            let state = RestartState::load(&dir);
            let due = match inst.request.restart {
                RestartPolicy::Always => true,
                RestartPolicy::UnlessStopped => !state.manual_stop,
                _ => false,
            };
            if !due || inst.status == Status::Running || inst.status == Status::Created {
                continue;
            }
            if inst.status == Status::Dead {
                // Its processes and mounts from before: gone with the reboot, or
                // removed now.
                if let Ok(b) = self.backend(inst.request.isolation) {
                    let _ = b.cleanup(&inst, &dir);
                }
            }
            if let Ok(mut m) = crate::monitor::spawn_restart(self.config(), &inst.id) {
                if let Some(crate::monitor::Report::Started { .. }) = m.next() {
                    out.push(inst.name.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_dockers() {
        assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::parse("always").unwrap(),
            RestartPolicy::Always
        );
        assert_eq!(
            RestartPolicy::parse("unless-stopped").unwrap(),
            RestartPolicy::UnlessStopped
        );
        assert_eq!(
            RestartPolicy::parse("on-failure:3").unwrap(),
            RestartPolicy::OnFailure(3)
        );
        for bad in ["sometimes", "always:3", "on-failure:x", "on-failure:-1"] {
            assert!(RestartPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_and_resets_and_limits_hold() {
        let s = RestartState::default();
        let quick = Duration::from_secs(1);
        let (d, q) = decide(RestartPolicy::Always, &s, 0, quick).unwrap();
        assert_eq!((d, q), (Duration::from_millis(100), 1));
        let s = RestartState { quick: 3, ..s };
        assert_eq!(
            decide(RestartPolicy::Always, &s, 0, quick).unwrap().0,
            Duration::from_millis(800)
        );
        assert_eq!(
            decide(RestartPolicy::Always, &s, 0, Duration::from_secs(11))
                .unwrap()
                .0,
            Duration::from_millis(100)
        );
        let s = RestartState { quick: 40, ..s };
        assert_eq!(
            decide(RestartPolicy::Always, &s, 0, quick).unwrap().0,
            Duration::from_secs(60)
        );
        assert!(decide(RestartPolicy::OnFailure(0), &s, 0, quick).is_none());
        let s = RestartState {
            count: 2,
            ..RestartState::default()
        };
        assert!(decide(RestartPolicy::OnFailure(2), &s, 1, quick).is_none());
        assert!(decide(RestartPolicy::OnFailure(3), &s, 1, quick).is_some());
        let s = RestartState {
            manual_stop: true,
            ..RestartState::default()
        };
        assert!(decide(RestartPolicy::Always, &s, 1, quick).is_none());
        assert!(decide(RestartPolicy::No, &RestartState::default(), 1, quick).is_none());
    }
}
