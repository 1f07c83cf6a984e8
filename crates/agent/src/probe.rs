//! Probe mode: the measurements `vessel compare` takes from inside an instance, and from the
//! host with the very same binary, so the two sides differ only in where they ran.
//!
//! usage:
//! - `vessel-init probe facts`: what the instance sees of the kernel and the host, as JSON.
//! - `vessel-init probe perf RUNS DIR`: RUNS timings of a CPU-bound loop, a syscall loop
//!   and a file write/fsync/read loop (in DIR), as JSON, with the file system the file
//!   loop wrote on (its type and whether it is mounted `volatile`, where fsync does
//!   nothing), so that a figure that claims to include fsync can be checked.
//!
//! The binary is static, so it runs unchanged in any image and on the host.

use std::ffi::{CStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::exit;
use std::time::Instant;

use serde::Serialize;
use vessel_agent::KALLSYMS_SAMPLE;

/// Iterations of the CPU-bound loop.
const CPU_ITERATIONS: u64 = 20_000_000;
/// `getpid` calls of the syscall loop.
const SYSCALL_ITERATIONS: u64 = 200_000;
/// Bytes written then read back by the file loop, in blocks of [`FILE_BLOCK`].
const FILE_BYTES: usize = 8 << 20;
/// Block size of the file loop.
const FILE_BLOCK: usize = 64 << 10;

/// What an instance sees, read from inside.
#[derive(Serialize, Debug)]
struct Facts {
    /// `uname -r`.
    kernel: String,
    /// `/proc/sys/kernel/random/boot_id`: differs between two kernels.
    boot_id: String,
    /// Processes listed in `/proc`.
    processes: usize,
    /// `CapEff` of `/proc/self/status` (hex).
    cap_eff: String,
    /// `Seccomp` mode of `/proc/self/status` (0 off, 1 strict, 2 filter).
    seccomp: Option<u32>,
    /// `/proc/self/ns/pid` (`pid:[inode]`): the PID namespace whose processes `/proc`
    /// lists.
    pid_ns: String,
    /// FNV-1a hashes of the `name\tmodule` entries of `/proc/kallsyms` whose hash is a
    /// multiple of [`KALLSYMS_SAMPLE`], sorted, without duplicates; when readable.
    kallsyms_sample: Option<Vec<u64>>,
    /// Symbols listed in `/proc/kallsyms`.
    kallsyms_symbols: usize,
    /// Modules listed in `/proc/modules`, sorted, when readable.
    modules: Option<Vec<String>>,
}

/// Timings of one probe loop.
#[derive(Serialize, Debug)]
struct Timings {
    /// Work units per run (iterations, or bytes for the file loop).
    work: u64,
    /// Wall time of each run, in nanoseconds.
    ns: Vec<u64>,
}

/// The file system a path is on, from `/proc/self/mountinfo`.
#[derive(Serialize, Debug, Default, PartialEq)]
struct FileSystem {
    /// Its type (`ext4`, `overlay`, `tmpfs`...); empty when unknown.
    fstype: String,
    /// Mounted `volatile` (overlayfs): `fsync` returns without syncing anything.
    volatile: bool,
}

/// The three performance loops.
#[derive(Serialize, Debug)]
struct Perf {
    cpu: Timings,
    syscall: Timings,
    file: Timings,
    /// Where the file loop wrote.
    file_fs: FileSystem,
}

fn die(msg: &str) -> ! {
    eprintln!("vessel-init probe: {msg}");
    exit(2)
}

/// Runs the probe named by `args` (after `probe`) and exits.
pub fn run(args: &[OsString]) -> ! {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let json = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["facts"] => serde_json::to_string(&facts()),
        ["perf", runs, dir] => {
            let runs: u32 = runs
                .parse()
                .ok()
                .filter(|r| (1..=1000).contains(r))
                .unwrap_or_else(|| die(&format!("RUNS must be 1 to 1000, not {runs:?}")));
            match perf(runs, Path::new(dir)) {
                Ok(p) => serde_json::to_string(&p),
                Err(e) => die(&e),
            }
        }
        _ => die("usage: vessel-init probe facts | probe perf RUNS DIR"),
    };
    match json {
        Ok(j) => {
            println!("{j}");
            exit(0)
        }
        Err(e) => die(&format!("encode JSON: {e}")),
    }
}

fn status_field(status: &str, key: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// FNV-1a: enough to tell two symbol tables apart without a dependency.
fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= *b as u64;
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

fn facts() -> Facts {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid out-pointer.
    let kernel = if unsafe { libc::uname(&mut u) } == 0 {
        // SAFETY: uname NUL-terminates release.
        unsafe { CStr::from_ptr(u.release.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let processes = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0);
    let (kallsyms_sample, kallsyms_symbols) = match std::fs::read_to_string("/proc/kallsyms") {
        Ok(text) if !text.is_empty() => {
            let (sample, n) = kallsyms_sample(&text);
            (Some(sample), n)
        }
        _ => (None, 0),
    };
    let modules = std::fs::read_to_string("/proc/modules").ok().map(|t| {
        let mut m: Vec<String> = t
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        m.sort();
        m
    });
    Facts {
        kernel,
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_default()
            .trim()
            .to_string(),
        processes,
        pid_ns: std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cap_eff: status_field(&status, "CapEff").unwrap_or_default(),
        seccomp: status_field(&status, "Seccomp").and_then(|s| s.parse().ok()),
        kallsyms_sample,
        kallsyms_symbols,
        modules,
    }
}

/// The sampled symbol hashes of a `/proc/kallsyms` text (see [`KALLSYMS_SAMPLE`]) and its
/// number of symbols.
fn kallsyms_sample(text: &str) -> (Vec<u64>, usize) {
    let mut sample = Vec::new();
    let mut n = 0;
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some(name) = f.nth(2) else { continue };
        n += 1;
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        fnv(&mut h, name.as_bytes());
        if let Some(module) = f.next() {
            fnv(&mut h, b"\t");
            fnv(&mut h, module.as_bytes());
        }
        if h % KALLSYMS_SAMPLE == 0 {
            sample.push(h);
        }
    }
    sample.sort_unstable();
    sample.dedup();
    (sample, n)
}

/// The file system `path` is on, from a `/proc/self/mountinfo` text: the mount with the
/// longest mount point that contains `path` (the last one mounted wins a tie).
fn file_system(mountinfo: &str, path: &Path) -> FileSystem {
    let mut best: Option<(usize, FileSystem)> = None;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let point = point.replace("\\040", " ");
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or_default().to_string();
        let superopts = r.nth(1).unwrap_or_default();
        if !path.starts_with(&point) {
            continue;
        }
        if best.as_ref().is_some_and(|(len, _)| *len > point.len()) {
            continue;
        }
        let fs = FileSystem {
            fstype,
            // `volatile` as mounted; Linux 6.x shows it as `fsync=volatile`.
            volatile: superopts
                .split(',')
                .any(|o| o == "volatile" || o == "fsync=volatile"),
        };
        best = Some((point.len(), fs));
    }
    best.map(|(_, fs)| fs).unwrap_or_default()
}

fn time(f: impl FnOnce() -> Result<(), String>) -> Result<u64, String> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_nanos() as u64)
}

fn cpu_loop() -> Result<(), String> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut acc = 0u64;
    for _ in 0..CPU_ITERATIONS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = acc.wrapping_add(x);
    }
    std::hint::black_box(acc);
    Ok(())
}

fn syscall_loop() -> Result<(), String> {
    for _ in 0..SYSCALL_ITERATIONS {
        // SAFETY: the raw getpid syscall has no preconditions (raw, so libc cannot cache it).
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getpid) });
    }
    Ok(())
}

fn file_loop(path: &Path) -> Result<(), String> {
    let err = |op: &str, e: std::io::Error| format!("{op} {}: {e}", path.display());
    let block = vec![0x5au8; FILE_BLOCK];
    let mut f = std::fs::File::create(path).map_err(|e| err("create", e))?;
    for _ in 0..FILE_BYTES / FILE_BLOCK {
        f.write_all(&block).map_err(|e| err("write", e))?;
    }
    f.sync_all().map_err(|e| err("fsync", e))?;
    drop(f);
    let mut f = std::fs::File::open(path).map_err(|e| err("open", e))?;
    let mut buf = vec![0u8; FILE_BLOCK];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).map_err(|e| err("read", e))?;
        if n == 0 {
            break;
        }
        total += n;
    }
    std::fs::remove_file(path).map_err(|e| err("remove", e))?;
    if total != FILE_BYTES {
        return Err(format!("read back {total} of {FILE_BYTES} bytes"));
    }
    Ok(())
}

fn perf(runs: u32, dir: &Path) -> Result<Perf, String> {
    let file: PathBuf = dir.join(format!(".vessel-probe.{}", std::process::id()));
    let mut p = Perf {
        cpu: Timings {
            work: CPU_ITERATIONS,
            ns: Vec::new(),
        },
        syscall: Timings {
            work: SYSCALL_ITERATIONS,
            ns: Vec::new(),
        },
        file: Timings {
            work: FILE_BYTES as u64,
            ns: Vec::new(),
        },
        file_fs: file_system(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            &std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        ),
    };
    for _ in 0..runs {
        p.cpu.ns.push(time(cpu_loop)?);
        p.syscall.ns.push(time(syscall_loop)?);
        p.file.ns.push(time(|| file_loop(&file))?);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let s = "Name:\tx\nCapEff:\t000001ffffffffff\nSeccomp:\t2\n";
        assert_eq!(status_field(s, "CapEff").unwrap(), "000001ffffffffff");
        assert_eq!(status_field(s, "Seccomp").unwrap(), "2");
        assert!(status_field(s, "Nope").is_none());
    }

    #[test]
    fn kallsyms_sample_is_by_name_and_module() {
        let text = (0..4000)
            .map(|i| format!("0000000000000000 T sym_{i}\n0000000000000000 t sym_{i}\t[mod]\n"))
            .collect::<String>();
        let (sample, n) = kallsyms_sample(&text);
        assert_eq!(n, 8000);
        // About one in KALLSYMS_SAMPLE, the same names every time.
        assert!((100..400).contains(&sample.len()), "{}", sample.len());
        assert!(sample.iter().all(|h| h % KALLSYMS_SAMPLE == 0));
        assert!(sample.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(kallsyms_sample(&text).0, sample);
        // A module's symbol differs from the core symbol of the same name.
        let (core, _) = kallsyms_sample(&text.lines().step_by(2).collect::<Vec<_>>().join("\n"));
        assert!(core.len() < sample.len());
    }

    #[test]
    fn file_system_of_a_path() {
        let mi = "\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w,volatile
23 22 0:22 / /proc rw - proc proc rw
24 22 8:1 / /data rw - ext4 /dev/vda rw
25 24 0:30 / /data/tmp rw - tmpfs tmpfs rw
26 22 0:31 / /new rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w,uuid=on,fsync=volatile
27 22 0:32 / /strict rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w,fsync=strict
";
        let fs = |p: &str| file_system(mi, Path::new(p));
        assert_eq!(
            fs("/.vessel-compare/work"),
            FileSystem {
                fstype: "overlay".into(),
                volatile: true
            }
        );
        assert!(fs("/new/x").volatile);
        assert!(!fs("/strict/x").volatile);
        assert_eq!(fs("/data/x").fstype, "ext4");
        assert!(!fs("/data/x").volatile);
        assert_eq!(fs("/data/tmp/x").fstype, "tmpfs");
        // A prefix of a name is not a parent directory.
        assert_eq!(fs("/datax").fstype, "overlay");
        assert_eq!(file_system("", Path::new("/x")), FileSystem::default());
    }

    #[test]
    fn facts_and_perf_on_this_host() {
        let f = facts();
        assert!(!f.kernel.is_empty());
        assert!(f.processes >= 1);
        let dir = tempfile::tempdir().unwrap();
        let p = perf(1, dir.path()).unwrap();
        assert_eq!(p.cpu.ns.len(), 1);
        assert!(p.file.ns[0] > 0);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
