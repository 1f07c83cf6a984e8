//! The measuring instruments of `compare`: running `vessel` itself as a user would, with
//! a clock on it; reading memory and disk use from the host; summarising samples.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Longest any single `vessel` invocation may take before it is killed and reported.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The `vessel` binary over one data root.
pub struct Vessel {
    /// The binary (the one running `compare`).
    pub exe: PathBuf,
    /// Its data root.
    pub root: PathBuf,
}

/// What one timed invocation produced.
pub struct Timed {
    /// From spawn to exit.
    pub total: Duration,
    /// From spawn to the first byte on stdout, if any came.
    pub first_output: Option<Duration>,
    /// Its stdout.
    pub stdout: String,
}

impl Vessel {
    /// `vessel --root ROOT args...`.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    /// Runs `vessel args...` to its end with a clock on it; an error is the reason it
    /// failed, in one line.
    pub fn timed<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Timed, String> {
        timed(self.command(args))
    }
}

/// The last line of a failed command's stderr, without our `vessel: ` prefix.
fn reason(stderr: &str, status: std::process::ExitStatus) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("vessel: ").to_string());
    use std::os::unix::process::ExitStatusExt;
    match (line, status.code(), status.signal()) {
        (Some(l), _, _) => l,
        (None, Some(c), _) => format!("exited with status {c} and printed no error"),
        (None, None, Some(s)) => format!("vessel was killed by signal {s}"),
        (None, None, None) => format!("ended with {status}"),
    }
}

/// Runs `cmd` with stdin closed, timing it to exit and to its first byte of output.
pub fn timed(mut cmd: Command) -> Result<Timed, String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", cmd.get_program().to_string_lossy()))?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let mut err = child.stderr.take().ok_or("no stderr pipe")?;
    let reader = std::thread::spawn(move || {
        let mut first = None;
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| start.elapsed());
            data.extend_from_slice(&buf[..n]);
        }
        (first, data)
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() > RUN_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", RUN_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_micros(500)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let total = start.elapsed();
    let (first_output, data) = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(reason(&stderr, status));
    }
    Ok(Timed {
        total,
        // The reader may be scheduled only after the exit was seen; what a process wrote,
        // it wrote before it exited.
        first_output: first_output.map(|f| f.min(total)),
        stdout: String::from_utf8_lossy(&data).into_owned(),
    })
}

/// Median and 95th percentile (nearest rank) of some durations, in milliseconds.
pub fn median_p95(samples: &[Duration]) -> Option<(f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Some((median_sorted(&ms), percentile_sorted(&ms, 95.0)))
}

/// The median of sorted values.
pub fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `p`th percentile of sorted values, by nearest rank.
pub fn percentile_sorted(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The median of unsorted nanosecond samples, in milliseconds.
pub fn median_ns_ms(ns: &[u64]) -> f64 {
    let mut v: Vec<f64> = ns.iter().map(|n| *n as f64 / 1e6).collect();
    v.sort_by(f64::total_cmp);
    median_sorted(&v)
}

/// Bytes allocated on disk under each of `paths` (blocks, so sparse files count what they
/// hold; hard links once; symlinks not followed).
pub fn disk_usage(paths: &[PathBuf]) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// Proportional set size of a process (`/proc/PID/smaps_rollup`), bytes.
pub fn pss(pid: i32) -> Result<u64, String> {
    let p = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("read {p}: {e}"))?;
    kb_field(&text, "Pss:")
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no Pss in {p}"))
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The process among `pid` and its descendants that holds a KVM VM (an
/// `anon_inode:kvm-vm` descriptor): the VMM whose memory is the guest's. Searching the
/// descendants keeps this right when the VMM runs as a child of the monitor.
pub fn kvm_process(pid: i32) -> Result<i32, String> {
    let mut queue = vec![pid];
    let mut seen = HashSet::new();
    while let Some(p) = queue.pop() {
        if !seen.insert(p) || seen.len() > 256 {
            continue;
        }
        if holds_kvm_vm(p) {
            return Ok(p);
        }
        queue.extend(children(p));
    }
    Err(format!(
        "no process holding a KVM VM (anon_inode:kvm-vm) among pid {pid} and its descendants"
    ))
}

fn holds_kvm_vm(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:kvm-vm")
        })
    })
}

fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The memory a process's cgroup is charged (v1 `memory.usage_in_bytes` or v2
/// `memory.current`), bytes, with the file it was read from.
pub fn cgroup_memory(pid: i32) -> Result<(u64, PathBuf), String> {
    let p = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("read {p}: {e}"))?;
    let file = cgroup_memory_file(&text, Path::new("/sys/fs/cgroup"))
        .ok_or_else(|| format!("no memory cgroup in {p}"))?;
    let v = std::fs::read_to_string(&file)
        .map_err(|e| format!("read {}: {e}", file.display()))?
        .trim()
        .parse()
        .map_err(|e| format!("parse {}: {e}", file.display()))?;
    Ok((v, file))
}

/// Where a process's memory usage is, from its `/proc/PID/cgroup`: the v1 memory
/// hierarchy if it has one (hybrid hosts), else the v2 unified one.
fn cgroup_memory_file(proc_cgroup: &str, fs: &Path) -> Option<PathBuf> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        // The root cgroup is the whole host's, never one instance's.
        if rel.is_empty() {
            continue;
        }
        if controllers.split(',').any(|c| c == "memory") {
            return Some(fs.join("memory").join(rel).join("memory.usage_in_bytes"));
        }
        if controllers.is_empty() && fs.join("cgroup.controllers").exists() {
            v2 = Some(fs.join(rel).join("memory.current"));
        }
    }
    v2
}

/// `/proc/meminfo`'s `MemTotal`, bytes.
pub fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| kb_field(&t, "MemTotal:"))
        .unwrap_or(0)
        * 1024
}

/// What the probe's `facts` reports (see `vessel-agent`'s `probe.rs`).
#[derive(Clone, Debug, Deserialize)]
pub struct Facts {
    /// `uname -r`.
    pub kernel: String,
    /// The kernel's boot id.
    pub boot_id: String,
    /// Processes visible in `/proc`.
    pub processes: usize,
    /// `/proc/self/ns/pid`: the PID namespace whose processes `/proc` lists.
    pub pid_ns: String,
    /// `CapEff`, hex.
    pub cap_eff: String,
    /// Seccomp mode.
    pub seccomp: Option<u32>,
    /// Hashes of a fixed sample of the `/proc/kallsyms` entries (the same names on every
    /// kernel: those whose hash is a multiple of the probe's sampling modulus).
    pub kallsyms_sample: Option<Vec<u64>>,
    /// How many symbols.
    pub kallsyms_symbols: usize,
    /// Module names from `/proc/modules`.
    pub modules: Option<Vec<String>>,
}

/// One probe loop's timings.
#[derive(Clone, Debug, Deserialize)]
pub struct Timings {
    /// Work per run.
    pub work: u64,
    /// Nanoseconds per run.
    pub ns: Vec<u64>,
}

/// What the probe's `perf` reports.
#[derive(Clone, Debug, Deserialize)]
pub struct Perf {
    /// CPU-bound loop.
    pub cpu: Timings,
    /// `getpid` loop.
    pub syscall: Timings,
    /// File write, fsync, read back.
    pub file: Timings,
    /// The file system the file loop wrote on.
    pub file_fs: FileSystem,
}

/// A file system as the probe saw it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct FileSystem {
    /// Its type; empty when unknown.
    pub fstype: String,
    /// Mounted `volatile`: fsync syncs nothing.
    pub volatile: bool,
}

/// Parses a probe's JSON output.
pub fn parse<T: serde::de::DeserializeOwned>(what: &str, out: &str) -> Result<T, String> {
    serde_json::from_str(out.trim()).map_err(|e| format!("unreadable {what} from the probe: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(median_p95(&ms(&[30, 10, 20])), Some((20.0, 30.0)));
        assert_eq!(median_p95(&ms(&[10, 20, 30, 40])), Some((25.0, 40.0)));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(median_p95(&ms(&hundred)).unwrap().1, 95.0);
        assert_eq!(median_p95(&[]), None);
        assert_eq!(median_ns_ms(&[3_000_000, 1_000_000, 2_000_000]), 2.0);
    }

    #[test]
    fn memory_cgroup_of_v1_hybrid_and_v2() {
        let fs = tempfile::tempdir().unwrap();
        let hybrid = "12:memory:/vessel/abc\n0::/vessel/abc\n";
        assert_eq!(
            cgroup_memory_file(hybrid, fs.path()).unwrap(),
            fs.path().join("memory/vessel/abc/memory.usage_in_bytes")
        );
        assert_eq!(cgroup_memory_file("0::/vessel/abc\n", fs.path()), None);
        // A process in the root cgroup is charged to the whole host: no figure.
        assert_eq!(cgroup_memory_file("12:memory:/\n0::/\n", fs.path()), None);
        std::fs::write(fs.path().join("cgroup.controllers"), "memory").unwrap();
        assert_eq!(
            cgroup_memory_file("0::/vessel/abc\n", fs.path()).unwrap(),
            fs.path().join("vessel/abc/memory.current")
        );
    }

    #[test]
    fn disk_usage_counts_blocks_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), vec![1u8; 64 << 10]).unwrap();
        std::fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
        let sparse = std::fs::File::create(d.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        let used = disk_usage(&[d.path().to_path_buf()]);
        assert!((64 << 10..1 << 20).contains(&used), "{used}");
    }

    #[test]
    fn kvm_process_is_not_any_process() {
        // This test process holds no KVM VM, and neither does anything it started.
        let e = kvm_process(std::process::id() as i32).unwrap_err();
        assert!(e.contains("kvm-vm"), "{e}");
    }

    #[test]
    fn timed_reports_output_and_failures() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo hi"]);
        let t = timed(c).unwrap();
        assert_eq!(t.stdout, "hi\n");
        assert!(t.first_output.unwrap() <= t.total);
        let mut c = Command::new("sh");
        c.args(["-c", "echo 'vessel: no such image: x' >&2; exit 125"]);
        assert_eq!(timed(c).err().unwrap(), "no such image: x");
    }
}
