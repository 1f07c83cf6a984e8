//! Resource usage of a container, read from its cgroup files.

use serde::{Deserialize, Serialize};

/// A snapshot of a container's resource usage and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Memory charged to the container, in bytes.
    pub memory_usage: u64,
    /// Peak memory usage in bytes, when the kernel reports it.
    pub memory_max_usage: Option<u64>,
    /// Memory limit in bytes; `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// Number of processes the kernel OOM killer killed in this container.
    pub oom_kills: u64,
    /// Whether the OOM killer killed at least one process of this container.
    pub oom_killed: bool,
    /// Number of tasks in the container.
    pub pids_current: u64,
    /// Task limit; `None` when unlimited.
    pub pids_limit: Option<u64>,
    /// Total CPU time consumed, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Number of CFS periods in which the container was throttled.
    pub cpu_throttled_periods: u64,
    /// Bytes read from block devices.
    #[serde(default)]
    pub io_read_bytes: u64,
    /// Bytes written to block devices.
    #[serde(default)]
    pub io_write_bytes: u64,
}

/// Sums v2 `io.stat` (`MAJ:MIN rbytes=N wbytes=N ...` per device): (read, written).
pub fn io_stat(text: &str) -> (u64, u64) {
    let mut out = (0u64, 0u64);
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            out.0 += v.parse::<u64>().unwrap_or(0);
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            out.1 += v.parse::<u64>().unwrap_or(0);
        }
    }
    out
}

/// Sums v1 `blkio.throttle.io_service_bytes(_recursive)` (`MAJ:MIN Read N` lines):
/// (read, written).
pub fn blkio_service_bytes(text: &str) -> (u64, u64) {
    let mut out = (0u64, 0u64);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [_, op, n] = f.as_slice() {
            let n = n.parse::<u64>().unwrap_or(0);
            match *op {
                "Read" => out.0 += n,
                "Write" => out.1 += n,
                _ => {}
            }
        }
    }
    out
}

/// Parse a `key value` per line file (`memory.events`, `cpu.stat`, `memory.oom_control`).
pub fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// Parse a single-value file such as `pids.max`, `memory.max` or `memory.limit_in_bytes`.
/// `max` and the v1 "unlimited" sentinel (close to `i64::MAX`, page aligned) become `None`.
pub fn limit_value(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    let v: u64 = t.parse().ok()?;
    // v1 reports "unlimited" as PAGE_COUNTER_MAX * PAGE_SIZE, e.g. 9223372036854771712.
    (v < (1u64 << 62)).then_some(v)
}

/// Parse a single counter file (`memory.usage_in_bytes`, `cpuacct.usage`, `pids.current`).
pub fn counter(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_keyed() {
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(flat_keyed(oom_control, "oom_kill"), Some(2));
        let events = "low 0\nhigh 0\nmax 14\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(flat_keyed(events, "oom_kill"), Some(1));
        assert_eq!(flat_keyed(events, "oom"), Some(1));
        assert_eq!(
            flat_keyed("usage_usec 1234\nuser_usec 1000\n", "usage_usec"),
            Some(1234)
        );
        assert_eq!(flat_keyed(events, "nope"), None);
    }

    #[test]
    fn parses_limits() {
        assert_eq!(limit_value("max\n"), None);
        assert_eq!(limit_value("9223372036854771712\n"), None);
        assert_eq!(limit_value("16777216\n"), Some(16 * 1024 * 1024));
        assert_eq!(counter(" 42\n"), Some(42));
    }
}
