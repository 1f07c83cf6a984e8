//! Container state: what is persisted in `<state_root>/<id>/state.json` and the OCI state
//! reported to callers, with the status derived from the live process.

use std::collections::HashMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::error::{Error, Result};

/// Lifecycle status, as in the OCI runtime spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is in progress (or its caller died in the middle of it).
    Creating,
    /// Set up and waiting for `start`.
    Created,
    /// The user program is running.
    Running,
    /// The container's processes are frozen ([`crate::Runtime::pause`]).
    Paused,
    /// The init process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The OCI state of a container.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// OCI runtime spec version of the bundle.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Current status.
    pub status: Status,
    /// Host pid of the container's init (absent once known to be gone... or before it exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// The spec's annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Master side of the container's pty, when `create` allocated one and no console
    /// socket took it. Only set in the value `create` returns.
    #[serde(skip)]
    pub pty_master: Option<OwnedFd>,
}

/// What the runtime remembers about a container between calls (and processes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Persisted {
    pub oci_version: String,
    pub id: String,
    pub bundle: PathBuf,
    pub pid: Option<i32>,
    /// Start time of `pid` (field 22 of /proc/<pid>/stat), to detect pid reuse.
    pub pid_start_time: Option<u64>,
    pub created: u64,
    pub annotations: HashMap<String, String>,
    pub cgroup: Cgroup,
    pub userns: bool,
}

pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const FIFO_FILE: &str = "exec.fifo";
pub(crate) const SPEC_FILE: &str = "config.json";

impl Persisted {
    pub fn load(dir: &Path) -> Result<Persisted> {
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::CorruptState {
            path,
            reason: e.to_string(),
        })
    }

    /// Write atomically (temp file + rename) so a concurrent reader never sees half a file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(".state.json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::CorruptState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fs::write(&tmp, json).map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
    }

    /// Whether the recorded init process still exists (and is not a zombie or a new
    /// process that reused the pid).
    pub fn init_alive(&self) -> bool {
        let (Some(pid), Some(start)) = (self.pid, self.pid_start_time) else {
            return false;
        };
        match read_proc_stat(pid) {
            Some((state, st)) => st == start && state != 'Z' && state != 'X',
            None => false,
        }
    }

    /// Derive the status.
    pub fn status(&self, dir: &Path) -> Status {
        if self.pid.is_none() {
            return Status::Creating;
        }
        if !self.init_alive() {
            return Status::Stopped;
        }
        if dir.join(FIFO_FILE).exists() {
            Status::Created
        } else if self.cgroup.frozen() {
            Status::Paused
        } else {
            Status::Running
        }
    }

    pub fn to_state(&self, dir: &Path) -> State {
        let status = self.status(dir);
        State {
            oci_version: self.oci_version.clone(),
            id: self.id.clone(),
            status,
            pid: self
                .pid
                .filter(|_| matches!(status, Status::Created | Status::Running | Status::Paused)),
            bundle: self.bundle.clone(),
            annotations: self.annotations.clone(),
            created: self.created,
            pty_master: None,
        }
    }
}

/// `(state, starttime)` of a process, from /proc/<pid>/stat.
pub(crate) fn read_proc_stat(pid: i32) -> Option<(char, u64)> {
    parse_proc_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parse `/proc/<pid>/stat`: the command may contain spaces and parentheses, so fields
/// are counted after the last ')'. State is field 3, starttime field 22.
pub(crate) fn parse_proc_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_comm() {
        let s = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(parse_proc_stat(s), Some(('S', 987_654)));
        assert_eq!(parse_proc_stat("garbage"), None);
        let me = read_proc_stat(std::process::id() as i32).unwrap();
        assert!(me.1 > 0);
    }

    #[test]
    fn status_serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&Status::Created).unwrap(),
            "\"created\""
        );
    }
}
