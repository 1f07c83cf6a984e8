//! End-to-end attacks on the device cgroup: a container, root with the default
//! capabilities, with or without `--userns`, tries the host's devices it was not given,
//! both through nodes it makes with mknod and nodes its image ships. It must get none
//! of them, and still use /dev/null & co.
//!
//! The tests that run on the host cover its cgroup layout (v1 controller on this hybrid
//! host, plus the cgroup2 program where a unified hierarchy exists). The `#[ignore]`d
//! one needs a pure cgroup2 host, where the eBPF program is the only guard: it runs in
//! the nested testbed (`scripts/test-all`'s vm suite) and fails anywhere else.

mod common;

use std::ffi::CString;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use common::*;

/// major:minor of a real block device that root on this host can read (each is tried:
/// some hosts refuse even root their own disk), so that a container failing to is the
/// container's confinement.
fn host_block_device(dir: &Path) -> (u32, u32) {
    if let Some(d) = readable_block_device(dir) {
        return d;
    }
    // A testbed may boot with no block device at all: loop devices are real ones.
    let _ = Command::new("modprobe").arg("loop").status();
    readable_block_device(dir).unwrap_or_else(|| {
        panic!("no block device of this host is readable by root here, even after modprobe loop: nothing to attack")
    })
}

fn readable_block_device(dir: &Path) -> Option<(u32, u32)> {
    let mut found: Vec<(String, (u32, u32))> = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(dev) = std::fs::read_to_string(e.path().join("dev")) else {
            continue;
        };
        if let Some((a, b)) = dev.trim().split_once(':') {
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                found.push((name, (a, b)));
            }
        }
    }
    found.sort_by_key(|(n, _)| ["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)));
    for (name, (maj, min)) in &found {
        let node = dir.join("blk");
        let _ = std::fs::remove_file(&node);
        mknod(&node, libc::S_IFBLK, *maj, *min);
        if std::fs::File::open(&node).is_ok() {
            eprintln!("block device under attack: {name} ({maj}:{min})");
            return Some((*maj, *min));
        }
    }
    let _ = std::fs::remove_file(dir.join("blk"));
    eprintln!("no readable block device among {found:?}");
    None
}

fn mknod(path: &Path, kind: libc::mode_t, maj: u32, min: u32) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: plain syscall on a NUL-terminated path that outlives it.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | 0o666, libc::makedev(maj, min)) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// An image whose /hostdev holds nodes of host devices (a block device, kvm, mem,
/// kmsg), made and imported once per test binary; and the block device's numbers.
fn attack_image() -> (u32, u32) {
    static IMAGE: OnceLock<(u32, u32)> = OnceLock::new();
    *IMAGE.get_or_init(|| {
        let rootfs = root().parent().unwrap().join("devattack-rootfs");
        let _ = std::fs::remove_dir_all(&rootfs);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs");
        let st = Command::new(&script)
            .arg(&rootfs)
            .status()
            .expect("run scripts/busybox-rootfs");
        assert!(st.success(), "scripts/busybox-rootfs failed");
        let dev = rootfs.join("hostdev");
        std::fs::create_dir_all(&dev).unwrap();
        let blk = host_block_device(&dev);
        mknod(&dev.join("kvm"), libc::S_IFCHR, 10, 232);
        mknod(&dev.join("mem"), libc::S_IFCHR, 1, 1);
        mknod(&dev.join("kmsg"), libc::S_IFCHR, 1, 11);
        // The host's root gets past the device checks (a kernel without the driver,
        // e.g. no /dev/mem, answers ENXIO after them): only the container must not.
        for n in ["blk", "mem", "kmsg"] {
            if let Err(e) = std::fs::File::open(dev.join(n)) {
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::ENXIO),
                    "host root cannot open {n}: {e}"
                );
            }
        }
        let out = ok(&[
            "import",
            "-c",
            r#"CMD ["sh"]"#,
            "-c",
            "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            rootfs.to_str().unwrap(),
            "devattack:latest",
        ]);
        eprintln!("imported devattack: {out}");
        blk
    })
}

/// Runs the attack in a container started with `extra` flags; returns what it saw.
fn attack(extra: &[&str]) -> String {
    let (maj, min) = attack_image();
    // `true <NODE` opens for reading, `true >>NODE` for writing; a redirection that fails
    // makes the builtin fail with the errno on stderr (2>&1: all in one transcript).
    let script = format!(
        "for n in kvm mem kmsg blk; do [ -e /hostdev/$n ] && echo shipped-$n; done
         mknod /tmp/blk b {maj} {min} && echo mknod-blk-ok
         mknod /tmp/kvm c 10 232 && echo mknod-kvm-ok
         mknod /tmp/mem c 1 1 && mknod /tmp/kmsg c 1 11
         for p in /hostdev/blk /hostdev/kvm /hostdev/mem /hostdev/kmsg \
                  /tmp/blk /tmp/kvm /tmp/mem /tmp/kmsg /dev/kvm /dev/mem /dev/kmsg; do
           [ -e $p ] || continue
           true <$p && echo OPENED-FOR-READ $p
           true >>$p && echo OPENED-FOR-WRITE $p
         done
         head -c1 /tmp/blk >/dev/null && echo READ-BLOCK-DEVICE
         true </dev/null && true >>/dev/null && echo null-ok
         echo zero-$(head -c 3 /dev/zero | wc -c) urandom-$(head -c 3 /dev/urandom | wc -c)"
    );
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["devattack", "sh", "-c"]);
    let script = format!("exec 2>&1; {script}");
    args.push(&script);
    let o = vessel(&args);
    let out = stdout(&o);
    eprintln!("vessel {extra:?} transcript:\n{out}{}", stderr(&o));
    assert_eq!(code(&o), 0, "{out}{}", stderr(&o));
    assert!(
        !out.contains("OPENED") && !out.contains("READ-BLOCK"),
        "a host device was opened:\n{out}"
    );
    assert!(
        out.contains("null-ok") && out.contains("zero-3 urandom-3"),
        "default devices unusable:\n{out}"
    );
    for n in ["kvm", "mem", "kmsg", "blk"] {
        assert!(
            out.contains(&format!("shipped-{n}")),
            "the image's /hostdev/{n} is missing:\n{out}"
        );
    }
    out
}

/// Without a user namespace mknod works (Docker allows it for every device), and every
/// open is refused by the device cgroup with EPERM.
fn attack_as_root() {
    let out = attack(&[]);
    assert!(
        out.contains("mknod-blk-ok") && out.contains("mknod-kvm-ok"),
        "mknod must stay allowed:\n{out}"
    );
    let denied = out.matches("Operation not permitted").count();
    // 8 nodes (4 shipped, 4 made), each opened twice, and the block read.
    assert!(
        denied >= 17,
        "expected every open to fail with EPERM ({denied} did):\n{out}"
    );
}

#[test]
fn container_root_cannot_open_host_devices() {
    attack_as_root();
}

/// In a user namespace mknod of a device is refused by the kernel itself; the nodes the
/// image ships remain, and opening any of them must fail.
fn attack_in_userns() {
    let out = attack(&["--userns"]);
    let denied = out.matches("Operation not permitted").count();
    assert!(
        denied >= 8,
        "expected the 4 shipped nodes to fail both opens with EPERM ({denied} did):\n{out}"
    );
}

#[test]
fn userns_container_root_cannot_open_host_devices() {
    attack_in_userns();
}

/// On a pure cgroup2 host the eBPF program is the only guard. Run by the vm suite in
/// the nested testbed (which mounts only cgroup2).
#[test]
#[ignore = "needs a pure cgroup2 host: runs in the nested testbed (scripts/test-all vm suite)"]
fn pure_cgroup2_host_denies_host_devices() {
    assert_pure_cgroup2();
    data_root_that_can_be_idmapped();
    attack_as_root();
    attack_in_userns();
}

/// Fails unless this host mounts only cgroup2 (as the nested testbed does).
fn assert_pure_cgroup2() {
    let mode = vessel_container::cgroup_mode().expect("read the cgroup layout");
    assert_eq!(
        mode,
        vessel_container::CgroupMode::Unified,
        "this test is for a pure cgroup2 host (the nested testbed); this one is {mode:?}"
    );
}

/// --userns needs the image layers on a filesystem that can be idmapped. The testbed's
/// /tmp is a tmpfs, which its kernel (6.1) cannot idmap (tmpfs can from 6.3): the data
/// root then goes on an ext4 filesystem of its own, through TMPDIR, which `common::root`
/// reads once, the first time any test of this binary needs it. So every test the VM
/// suite runs here calls this first; it does its work once.
fn data_root_that_can_be_idmapped() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(idmappable_tmpdir);
}

fn idmappable_tmpdir() {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    let tmp = std::env::temp_dir();
    let fs = rustix::fs::statfs(&tmp).expect("statfs TMPDIR");
    if fs.f_type as u64 != TMPFS_MAGIC {
        return;
    }
    let img = tmp.join(format!("vessel-devices-{}.ext4", std::process::id()));
    let dir = tmp.join(format!("vessel-devices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let st = Command::new(args[0])
            .args(&args[1..])
            .status()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(st.success(), "{args:?}: {st}");
    };
    run(&["truncate", "-s", "1G", img.to_str().unwrap()]);
    run(&["mkfs.ext4", "-q", "-F", img.to_str().unwrap()]);
    run(&[
        "mount",
        "-o",
        "loop",
        img.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    eprintln!(
        "TMPDIR is a tmpfs: the data root goes on ext4 at {}",
        dir.display()
    );
    std::env::set_var("TMPDIR", &dir);
}

/// Makes `bpf(2)` fail with EPERM for this process and everything it starts: a seccomp
/// filter installed between fork and exec (root may install one without no_new_privs).
fn deny_bpf() -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let filter = [
        // A = seccomp_data.arch; another architecture: allowed (nothing else runs here).
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 4,
        },
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 3,
            k: AUDIT_ARCH_X86_64,
        },
        // A = seccomp_data.nr
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_bpf as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// cgroup2 has no devices controller: where the eBPF program cannot be loaded or
/// attached (here: `bpf(2)` denied to vessel by a seccomp filter), the container must not
/// start at all, with a clear error and Docker's exit code 125, and nothing may be left.
/// (A warning and a container with every device open would be the failure.) Runs in the
/// nested testbed, which mounts only cgroup2.
#[test]
#[ignore = "needs a pure cgroup2 host: runs in the nested testbed (scripts/test-all vm suite)"]
fn device_program_that_cannot_be_attached_stops_the_start() {
    use std::os::unix::process::CommandExt;
    assert_pure_cgroup2();
    data_root_that_can_be_idmapped();
    let n = name("nobpf");
    let mut c = cmd(&["run", "--name", &n, "--network", "none", "busybox", "true"]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: deny_bpf only makes a raw syscall: async-signal-safe between fork and exec.
    unsafe {
        c.pre_exec(deny_bpf);
    }
    let out = output_within(
        c.spawn().expect("start vessel run"),
        "vessel run without bpf",
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "stdout {}\nstderr {err}", stdout(&out));
    assert!(
        err.contains("eBPF") && err.contains("Operation not permitted"),
        "the error must say the device program could not be set up: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // Docker leaves a container whose start failed as created, never running.
    let inspected = vessel(&["inspect", &n]);
    let id = if inspected.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
        assert_eq!(v[0]["State"]["Running"], false, "the container runs: {v}");
        v[0]["Id"].as_str().map(str::to_string)
    } else {
        None
    };
    let _ = vessel(&["rm", "-f", &n]);
    if let Some(id) = id {
        assert_no_leftovers(&id);
    }
}
