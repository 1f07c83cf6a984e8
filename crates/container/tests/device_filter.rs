//! The cgroup2 device filter, attacked directly: a cgroup in this host's cgroup2
//! hierarchy (`/sys/fs/cgroup/unified` on a hybrid host, `/sys/fs/cgroup` on a pure v2
//! one) gets the program for Docker's default rules, a forked child moves in and tries
//! the host devices a container must not reach. Root only; fails (never skips) otherwise.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use vessel_container::devices_bpf;

/// The cgroup2 mount point, from this process's mountinfo.
fn cgroup2_mount() -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mnt = pre.split(' ').nth(4)?;
            (post.split(' ').next()? == "cgroup2").then(|| PathBuf::from(mnt))
        })
        .collect();
    assert!(
        !mounts.is_empty(),
        "no cgroup2 hierarchy is mounted: this test needs one (hybrid or pure v2 host)"
    );
    mounts
        .iter()
        .find(|m| *m == Path::new("/sys/fs/cgroup"))
        .unwrap_or(&mounts[0])
        .clone()
}

/// major:minor of a real block device of this host that this (root) process can read
/// through a node of its own in `dir`, not a loop or RAM disk if another will do: the
/// container must fail where the host itself succeeds. Some hosts refuse even root
/// some disks (this one: its root disk), so each is tried.
fn host_block_device(dir: &Path) -> (u32, u32) {
    let mut found: Vec<(String, (u32, u32))> = Vec::new();
    for e in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(dev) = fs::read_to_string(e.path().join("dev")) else {
            continue;
        };
        if let Some((a, b)) = dev.trim().split_once(':') {
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                found.push((name, (a, b)));
            }
        }
    }
    found.sort_by_key(|(n, _)| ["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)));
    let node = dir.join("probe-blk");
    for (name, (maj, min)) in &found {
        let _ = fs::remove_file(&node);
        let c = CString::new(node.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: plain syscall on a NUL-terminated path that outlives it.
        let r =
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(*maj, *min)) };
        assert_eq!(
            r,
            0,
            "mknod {}: {}",
            node.display(),
            std::io::Error::last_os_error()
        );
        let readable = fs::File::open(&node).is_ok();
        let _ = fs::remove_file(&node);
        if readable {
            eprintln!("block device: {name} ({maj}:{min})");
            return (*maj, *min);
        }
    }
    panic!("no block device of this host ({found:?}) can be read by root here: nothing to attack");
}

struct CgroupDir(PathBuf);
impl Drop for CgroupDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

const NULL_RW: i32 = 1;
const KVM_DENIED: i32 = 2;
const MEM_DENIED: i32 = 4;
const MKNOD_BLOCK: i32 = 8;
const BLOCK_READ_DENIED: i32 = 16;
const BLOCK_WRITE_DENIED: i32 = 32;
const MKNOD_KMSG: i32 = 64;
const KMSG_DENIED: i32 = 128;
const ALL: i32 = 255;

/// Forks a child that joins `procs` (if any), tries every device and exits with the
/// bits of what went as a container must see it.
fn probe(procs: Option<&fs::File>, dir: &Path, (maj, min): (u32, u32)) -> i32 {
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let null = c(Path::new("/dev/null"));
    let kvm = c(&dir.join("kvm"));
    let mem = c(&dir.join("mem"));
    let blk = c(&dir.join("blk"));
    let kmsg = c(&dir.join("kmsg"));
    for p in ["kvm", "mem", "blk", "kmsg"] {
        let _ = fs::remove_file(dir.join(p));
    }
    // Made outside the cgroup: nodes an image could ship.
    for (p, maj, min) in [(&kvm, 10, 232), (&mem, 1, 1)] {
        // SAFETY: plain syscall on a NUL-terminated path that outlives it.
        let r = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(maj, min)) };
        assert_eq!(
            r,
            0,
            "mknod {p:?} in the test's own cgroup: {}",
            std::io::Error::last_os_error()
        );
    }
    let procs_fd = procs.map(|f| f.as_raw_fd());
    // SAFETY: the child only makes syscalls (no allocation, no locks) and _exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // SAFETY: syscalls on NUL-terminated paths that live until _exit, and on
            // descriptors this process owns.
            unsafe {
                if let Some(fd) = procs_fd {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        libc::_exit(200);
                    }
                }
                let eperm = |path: &CString, flags: i32| {
                    let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::close(fd);
                        false
                    } else {
                        *libc::__errno_location() == libc::EPERM
                    }
                };
                let mut bits = 0;
                let fd = libc::open(null.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                if fd >= 0 {
                    bits |= NULL_RW;
                }
                if eperm(&kvm, libc::O_RDWR) {
                    bits |= KVM_DENIED;
                }
                if eperm(&mem, libc::O_RDONLY) {
                    bits |= MEM_DENIED;
                }
                if libc::mknod(blk.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(maj, min)) == 0 {
                    bits |= MKNOD_BLOCK;
                }
                if eperm(&blk, libc::O_RDONLY) {
                    bits |= BLOCK_READ_DENIED;
                }
                if eperm(&blk, libc::O_WRONLY) {
                    bits |= BLOCK_WRITE_DENIED;
                }
                if libc::mknod(kmsg.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 11)) == 0 {
                    bits |= MKNOD_KMSG;
                }
                if eperm(&kmsg, libc::O_RDONLY) {
                    bits |= KMSG_DENIED;
                }
                libc::_exit(bits);
            }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("probe child: {other:?}"),
        },
    }
}

#[test]
fn cgroup2_program_denies_host_devices_but_not_null_or_mknod() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root: this test attaches an eBPF program to a cgroup"
    );
    let cg = CgroupDir(cgroup2_mount().join(format!("vessel-devbpf-test-{}", std::process::id())));
    fs::create_dir(&cg.0).unwrap();
    let tmp = std::env::temp_dir().join(format!("vessel-devbpf-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();

    // Control: outside the cgroup (and the host's v1 devices controller, if any, lets
    // this root test process through), the devices open; the probe sees the difference.
    let blk = host_block_device(&tmp);
    let outside = probe(None, &tmp, blk);
    assert_eq!(
        outside & (KVM_DENIED | MEM_DENIED | BLOCK_READ_DENIED | KMSG_DENIED),
        0,
        "the host itself denies these: the test would prove nothing ({outside:#b})"
    );

    let rules = devices_bpf::effective_rules(&[]).unwrap();
    devices_bpf::attach(&cg.0, &rules).unwrap();
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(cg.0.join("cgroup.procs"))
        .unwrap();
    let inside = probe(Some(&procs), &tmp, blk);
    let _ = fs::remove_dir_all(&tmp);
    assert_eq!(
        inside, ALL,
        "in the cgroup: got {inside:#010b}, want {ALL:#010b} (bits: null rw, kvm/mem EPERM, mknod b, block r/w EPERM, mknod kmsg, kmsg EPERM)"
    );
}
