//! End-to-end tests of `--isolation vm`: the real binary booting real microVMs.
//!
//! They need hardware KVM, which the project's own machines lack (their /dev/kvm is PVM),
//! so they are `#[ignore]`d in a plain `cargo test` and run by `scripts/vm-suite` inside
//! the nested testbed (`./x test` does that), where each one must pass.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const NEEDS_KVM: &str = "needs hardware KVM: run through scripts/vm-suite (./x test does)";

fn vm(args: &[&str]) -> std::process::Output {
    assert!(
        std::env::var_os("VESSEL_KERNEL_DIR").is_some(),
        "VESSEL_KERNEL_DIR is not set: run these tests through scripts/vm-suite"
    );
    let mut full = vec!["run", "--isolation", "vm"];
    full.extend_from_slice(args);
    vessel(&full)
}

fn vm_ok(args: &[&str]) -> String {
    let o = vm(args);
    assert!(
        o.status.success(),
        "vessel run --isolation vm {args:?} failed ({:?}): {}\nstdout: {}",
        o.status,
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn guest_has_its_own_kernel() {
    let _ = NEEDS_KVM;
    let host_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let out = vm_ok(&[
        "--rm",
        "busybox",
        "sh",
        "-c",
        "uname -r; cat /proc/sys/kernel/random/boot_id",
    ]);
    let mut lines = out.lines();
    let release = lines.next().unwrap_or_default();
    let want = std::env::var("VESSEL_TEST_KERNEL_VERSION").unwrap_or_default();
    assert_eq!(release, want, "the guest runs the guest kernel");
    assert_ne!(
        lines.next().unwrap_or_default(),
        host_boot.trim(),
        "a separate kernel boot"
    );
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn exit_codes_and_streams() {
    let o = vm(&[
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).ends_with("err\n"), "{}", stderr(&o));
    let o = vm(&["--rm", "busybox", "no-such-command"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn env_workdir_user_hostname() {
    let out = vm_ok(&[
        "--rm",
        "-e",
        "K=V",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        "--hostname",
        "vmhost",
        "busybox",
        "sh",
        "-c",
        "echo $K; pwd; id -u; id -g; hostname",
    ]);
    assert_eq!(out, "V\n/tmp\n1000\n1000\nvmhost\n");
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn pids_limit_is_a_pids_cgroup_in_the_guest() {
    // An inner shell forks sleeps until the limit refuses one (which ends that shell);
    // the outer one then reads the cgroup's counters with builtins (cat would fork).
    let out = vm_ok(&[
        "--rm",
        "--pids-limit",
        "8",
        "busybox",
        "sh",
        "-c",
        "cat /proc/self/cgroup; cat /sys/fs/cgroup/vessel/pids.max; \
         sh -c 'for i in $(seq 1 20); do sleep 60 & done' 2>/dev/null; echo inner=$?; \
         read c < /sys/fs/cgroup/vessel/pids.current; echo current=$c; \
         while read l; do echo $l; done < /sys/fs/cgroup/vessel/pids.events",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"0::/vessel"), "{out}");
    assert_eq!(lines.get(1), Some(&"8"), "{out}");
    assert!(
        lines
            .get(2)
            .is_some_and(|l| l.starts_with("inner=") && *l != "inner=0"),
        "the shell that forks past the limit fails: {out}"
    );
    assert_eq!(
        lines.get(3),
        Some(&"current=7"),
        "the outer shell and the 6 sleeps the limit let the inner one start: {out}"
    );
    let refused: u32 = lines
        .get(4)
        .and_then(|l| l.strip_prefix("max "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("pids.events has no max count: {out}"));
    assert!(refused >= 1, "a fork was refused at the limit: {out}");
    // Without the flag there is no limit: no cgroup of the workload's, and no cgroup2
    // mounted at all (/proc/self/cgroup stays empty until one is).
    let free = vm_ok(&[
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo \"[$(cat /proc/self/cgroup)]\"; test -e /sys/fs/cgroup/vessel || echo no-cgroup",
    ]);
    assert_eq!(free, "[]\nno-cgroup\n", "{free}");
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn memory_and_vcpus_are_what_was_asked() {
    let out = vm_ok(&[
        "--rm",
        "--memory",
        "256m",
        "--cpus",
        "2",
        "busybox",
        "sh",
        "-c",
        "nproc; grep MemTotal /proc/meminfo",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("2"));
    let kb: u64 = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap();
    assert!(
        (180_000..=262_144).contains(&kb),
        "MemTotal {kb} kB for a 256 MiB guest"
    );
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn writes_stay_on_the_vm_disk_and_the_image_disk_is_shared() {
    let a = name("vmwrite");
    vm_ok(&[
        "--name",
        &a,
        "busybox",
        "sh",
        "-c",
        "echo mine > /written; cat /written",
    ]);
    let shared = root().join("vm/images");
    let disks: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ext4"))
        .collect();
    assert_eq!(disks.len(), 1, "one shared image disk");
    let before = std::fs::read(disks[0].path()).unwrap();
    // Another VM of the same image does not see the first one's write.
    let out = vm_ok(&[
        "--rm",
        "busybox",
        "sh",
        "-c",
        "cat /written 2>/dev/null || echo absent",
    ]);
    assert_eq!(out, "absent\n");
    assert_eq!(
        std::fs::read(disks[0].path()).unwrap(),
        before,
        "the shared image disk changed"
    );
    // The per-VM disk is sparse: it costs what was written, not its size.
    let id = id_of(&a);
    let scratch = root().join("instances").join(&id).join("scratch.ext4");
    use std::os::unix::fs::MetadataExt;
    let used = std::fs::metadata(&scratch).unwrap().blocks() * 512;
    assert!(used < 64 << 20, "per-VM disk uses {used} bytes");
    ok(&["rm", &a]);
    assert!(!root().join("instances").join(&id).exists());
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn two_vms_of_one_image_at_once() {
    let handles: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                vm(&["--rm", "busybox", "sh", "-c", &format!("echo vm-{i}")])
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let o = h.join().unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(stdout(&o), format!("vm-{i}\n"));
    }
}

/// A field of a `/proc/<pid>/status`-like text, trimmed.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// The VMM process's host pid: `State.VmmPid`. Before the VMM had a process of its own
/// (vessel before the jail), the VMM was the monitor: then the monitor is what the
/// assertions below look at, and they fail.
fn vmm_pid(st: &serde_json::Value) -> i64 {
    st["State"]["VmmPid"]
        .as_i64()
        .or_else(|| st["State"]["MonitorPid"].as_i64())
        .unwrap()
}

/// Every thread of the VMM process (the vCPUs, the I/O thread and the rest) runs under a
/// seccomp filter (mode 2), with no capabilities and no_new_privs.
fn assert_vmm_threads_confined(vmm: i64) {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{vmm}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let comm = comm.trim().to_string();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let field = |name: &str| status_field(&status, name);
        assert_eq!(field("Seccomp:"), "2", "thread {comm}: {status}");
        for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(field(cap), "0000000000000000", "thread {comm}: {cap}");
        }
        assert_eq!(field("NoNewPrivs:"), "1", "thread {comm}");
        names.push(comm);
    }
    for want in ["vcpu0", "vmm-io"] {
        assert!(
            names.iter().any(|n| n == want),
            "no {want} thread in the VMM {vmm}: {names:?}"
        );
    }
}

/// The socket inodes (`socket:[N]`) and paths the descriptors of `pid` point to.
fn fd_targets(pid: i64) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn vmm_runs_jailed() {
    let n = name("jail");
    let id = vm_ok(&["-d", "--name", &n, "busybox", "sleep", "1000"])
        .trim()
        .to_string();
    let st = inspect(&n);
    let monitor = st["State"]["MonitorPid"].as_i64().unwrap();
    let vmm = vmm_pid(&st);
    let status = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap();

    // A process of its own, pid 1 of its own pid namespace.
    assert_ne!(vmm, monitor, "the VMM runs in the monitor's process");
    assert_eq!(
        status_field(&status, "NSpid:"),
        format!("{vmm}\t1"),
        "the VMM is not pid 1 of a pid namespace of its own"
    );
    // Unprivileged ids that are nobody's on the host, no supplementary groups.
    for field in ["Uid:", "Gid:"] {
        let ids: Vec<u32> = status_field(&status, field)
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(ids.len(), 4, "{field}");
        assert!(
            ids.iter().all(|&i| i == ids[0] && i >= 0x7000_0000),
            "{field} {ids:?}: the VMM runs with host ids"
        );
    }
    assert_eq!(status_field(&status, "Groups:"), "", "supplementary groups");
    // Not dumpable: its /proc files belong to root, not to its uid.
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(format!("/proc/{vmm}/environ")).unwrap();
        assert_eq!(
            meta.uid(),
            0,
            "the VMM is dumpable (its /proc files are its own)"
        );
    }
    // No capability in any set, a seccomp filter and no_new_privs on every thread.
    assert_vmm_threads_confined(vmm);
    // Namespaces of its own: mounts, network, pids, IPC, host name.
    for ns in ["mnt", "net", "pid", "ipc", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{vmm}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "the VMM shares the host's {ns} namespace");
    }
    // Its root is an empty, read-only tmpfs, and it is the only mount it has: nothing of
    // the host (no /etc, no vessel binary, no data root, no /dev, no /proc).
    let listing: Vec<_> = std::fs::read_dir(format!("/proc/{vmm}/root"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(listing.is_empty(), "the VMM's root holds {listing:?}");
    let mountinfo = std::fs::read_to_string(format!("/proc/{vmm}/mountinfo")).unwrap();
    let mounts: Vec<&str> = mountinfo.lines().collect();
    assert_eq!(
        mounts.len(),
        1,
        "the VMM sees more than its root:\n{mountinfo}"
    );
    let fields: Vec<&str> = mounts[0].split_whitespace().collect();
    assert_eq!(fields[4], "/", "{mountinfo}");
    assert!(
        fields[5].split(',').any(|o| o == "ro"),
        "root not read-only: {mountinfo}"
    );
    assert!(mounts[0].contains(" - tmpfs "), "{mountinfo}");
    // Its binary is a sealed view of vessel (a read-only overlay without an upper layer,
    // or a write-sealed memfd), never the host's file, so nothing can write through
    // /proc/<pid>/exe, not even once the process is gone.
    {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/{vmm}/exe")).unwrap();
        assert_ne!(link, std::path::Path::new(vessel_bin()), "the host binary");
        let exe = std::fs::File::open(format!("/proc/{vmm}/exe")).unwrap();
        // SAFETY: fcntl, fstatfs and fstatvfs on a descriptor we own, into zeroed structs.
        let sealed = unsafe {
            let seals = libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS);
            if seals >= 0 {
                seals & libc::F_SEAL_WRITE != 0 && seals & libc::F_SEAL_SEAL != 0
            } else {
                let mut fs: libc::statfs = std::mem::zeroed();
                let mut vfs: libc::statvfs = std::mem::zeroed();
                libc::fstatfs(exe.as_raw_fd(), &mut fs) == 0
                    && fs.f_type == 0x794c_7630
                    && libc::fstatvfs(exe.as_raw_fd(), &mut vfs) == 0
                    && vfs.f_flag & libc::ST_RDONLY != 0
            }
        };
        assert!(sealed, "the VMM's exe {} is not sealed", link.display());
    }
    // What it holds open: the VM's files, no directory, nothing of the engine (no
    // database, no exec.sock, no log).
    let targets = fd_targets(vmm);
    for t in &targets {
        assert!(
            !(t.ends_with(".db")
                || t.contains("exec.sock")
                || (t.ends_with(".log") && !t.ends_with("console.log"))),
            "the VMM holds {t}: {targets:?}"
        );
        if t.starts_with('/') {
            assert!(
                !std::path::Path::new(t).is_dir(),
                "the VMM holds the directory {t}"
            );
        }
    }
    // The listener of `vessel exec` (bound through /proc/self/fd/N/exec.sock) is the
    // monitor's, not the VMM's.
    let unix = std::fs::read_to_string(format!("/proc/{monitor}/net/unix")).unwrap();
    let listeners: Vec<String> = unix
        .lines()
        .filter(|l| l.ends_with("/exec.sock"))
        .filter_map(|l| l.split_whitespace().nth(6))
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    let theirs = fd_targets(monitor);
    assert!(
        listeners.iter().any(|s| theirs.contains(s)),
        "the monitor holds no exec.sock listener ({listeners:?}):\n{unix}"
    );
    assert!(
        !listeners.iter().any(|s| targets.contains(s)),
        "the VMM holds exec.sock: {targets:?}"
    );
    assert_eq!(ok(&["exec", &n, "echo", "hi"]), "hi\n");

    // kill -9 of the monitor takes the VMM with it; rm then leaves nothing.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{vmm}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(
            Instant::now() < deadline,
            "the VMM {vmm} outlived its monitor"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&["rm", "-f", &n]);
    assert_no_leftovers(&id);
}

/// Memory the guest frees goes back to the host (virtio-balloon free page reporting): the
/// VMM's resident memory grows while a process in the guest holds 96 MiB (`dd`'s buffer,
/// filled from /dev/zero, held while dd waits on a pipe nobody reads), and shrinks again
/// once it has exited.
fn guest_memory_returns_to_the_host(vm: &str, vmm: i64) {
    let rss_mib = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb >> 10
    };
    let before = rss_mib();
    let mut c = cmd(&[
        "exec",
        vm,
        "sh",
        "-c",
        "dd if=/dev/zero bs=96M count=1 2>/dev/null | sleep 6",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut held = before;
    while c.try_wait().unwrap().is_none() {
        held = held.max(rss_mib());
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = output_within(c, "vessel exec (dd | sleep 6)");
    assert!(
        held >= before + 64,
        "holding 96 MiB in the guest: VMM RSS {before} -> {held} MiB ({})",
        String::from_utf8_lossy(&o.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = rss_mib();
        if now + 48 <= held {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "freed guest memory stayed on the host: VMM RSS {before} MiB idle, {held} MiB \
             holding 96 MiB, still {now} MiB a minute after it was freed"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn detached_lifecycle_stop_and_no_leftovers() {
    let n = name("v1");
    // On the default network (a VM's default, as a container's), with a published port.
    let publish = format!("127.0.0.1:{}:80", free_port());
    let id = vm_ok(&[
        "-d",
        "--name",
        &n,
        "-p",
        &publish,
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.2; done",
    ])
    .trim()
    .to_string();
    let st = inspect(&n);
    assert_eq!(st["State"]["Status"], "running");
    assert_eq!(st["HostConfig"]["Isolation"], "vm");
    assert_vmm_threads_confined(vmm_pid(&st));
    assert!(ok(&["ps"]).contains(&n));
    // Only root may start processes in the VM, and its instance directory is root's.
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = root().join("instances").join(&id);
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir.join("exec.sock")), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok(&["logs", &n]).contains("up") {
        assert!(Instant::now() < deadline, "no output from the VM");
        std::thread::sleep(Duration::from_millis(200));
    }
    guest_memory_returns_to_the_host(&n, vmm_pid(&st));
    // Graceful stop: TERM reaches the workload inside the guest.
    ok(&["stop", "-t", "60", &n]);
    assert_eq!(ok(&["wait", &n]), "0\n");
    assert!(ok(&["logs", &n]).contains("bye"));
    // Forced stop of a workload that ignores TERM.
    let m = name("v2");
    vm_ok(&[
        "-d",
        "--name",
        &m,
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; echo ready; sleep 1000",
    ]);
    // Stopped once the trap is set: a TERM before it would end the shell (143).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok(&["logs", &m]).contains("ready") {
        assert!(Instant::now() < deadline, "no output from the VM");
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(&["stop", "-t", "2", &m]);
    assert_eq!(inspect(&m)["State"]["ExitCode"], 137);
    let mid = id_of(&m);
    let vmm = vmm_pid(&st);
    ok(&["rm", &n, &m]);
    assert!(
        std::fs::read_to_string(format!("/proc/{vmm}/stat")).map_or(true, |s| s.contains(") Z ")),
        "the VMM {vmm} of {n} is left"
    );
    for i in [&id, &mid] {
        assert_vm_net_gone(i, "bridge");
        assert!(!root().join("instances").join(i).exists());
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(i.as_str()),
                "a process of {i} is left"
            );
        }
    }
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn interactive_stdin_reaches_the_guest() {
    let mut child = cmd(&[
        "run",
        "--isolation",
        "vm",
        "--rm",
        "-i",
        "busybox",
        "sh",
        "-c",
        "read a; echo got:$a",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let o = output_within(child, "vessel run -i (read a)");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "got:hi\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // With -it the guest's terminal has the caller's size (script gives vessel a
    // terminal; stty sizes it first).
    let cmdline = format!(
        "stty rows 31 cols 97; {} --root {} run --isolation vm --rm -it busybox sh -c 'sleep 1; stty size'",
        vessel_bin(),
        root().display()
    );
    let o = on_a_terminal(&cmdline).output().expect("script (bsdutils)");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("31 97"), "the guest's terminal size: {out}");
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn bad_vm_input_is_a_clear_125() {
    let o = vm(&["--rm", "--memory", "16m", "busybox", "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("--memory"), "{}", stderr(&o));
    let o = vm(&[
        "--rm",
        "--kernel",
        "/nonexistent/vmlinuz",
        "busybox",
        "true",
    ]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).contains("/nonexistent/vmlinuz"),
        "{}",
        stderr(&o)
    );
    let bogus = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bogus.path(), b"not a kernel").unwrap();
    let o = vm(&[
        "--rm",
        "--kernel",
        bogus.path().to_str().unwrap(),
        "busybox",
        "true",
    ]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn exec_runs_in_the_running_vm() {
    let n = name("vx");
    vm_ok(&[
        "-d",
        "--name",
        &n,
        "-e",
        "FROM_RUN=r",
        "busybox",
        "sh",
        "-c",
        "echo main > /tmp/marker; sleep 1000",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = vessel(&["exec", &n, "cat", "/tmp/marker"]);
        if o.status.success() {
            assert_eq!(stdout(&o), "main\n", "the same guest file system");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exec never saw the marker: {}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Same kernel as the workload, streams, exit codes, environment.
    let o = vessel(&[
        "exec",
        "-e",
        "X=1",
        &n,
        "sh",
        "-c",
        "echo out $X $FROM_RUN; echo err >&2; uname -r; exit 7",
    ]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    let want = std::env::var("VESSEL_TEST_KERNEL_VERSION").unwrap_or_default();
    assert_eq!(stdout(&o), format!("out 1 r\n{want}\n"));
    assert_eq!(stderr(&o), "err\n");
    let o = vessel(&["exec", &n, "no-such-cmd"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-cmd"), "{}", stderr(&o));
    exec_forwards_signals(&n);
    // stdin with -i; two sessions at once.
    let spawn = |input: &'static [u8], tag: &str| {
        let mut c = cmd(&[
            "exec",
            "-i",
            &n,
            "sh",
            "-c",
            &format!("read a; sleep 1; echo {tag}:$a"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(input).unwrap();
        c
    };
    let (a, b) = (spawn(b"x\n", "a"), spawn(b"y\n", "b"));
    for (c, want) in [(a, "a:x\n"), (b, "b:y\n")] {
        let o = output_within(c, "vessel exec -i (read a)");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            want,
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // A terminal with -it: util-linux's `script` gives vessel one.
    let cmdline = format!(
        "{} --root {} exec -it {n} sh -c 'tty; test -t 0 && echo is-a-tty; exit 4'",
        vessel_bin(),
        root().display()
    );
    let o = on_a_terminal(&cmdline).output().expect("script (bsdutils)");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("/dev/pts/") && out.contains("is-a-tty"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(4), "{out}");
    let id = id_of(&n);
    ok(&["rm", "-f", &n]);
    assert!(!root().join("instances").join(&id).exists());
    assert_ne!(
        code(&vessel(&["exec", &n, "true"])),
        0,
        "no exec into a removed VM"
    );
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn console_shows_the_guest_boot() {
    let out = vm_ok(&["--rm", "--console", "busybox", "echo", "workload-output"]);
    assert!(out.contains("Linux version"), "no kernel console in: {out}");
    assert!(out.contains("workload-output"), "{out}");
}

/// The host's links, over netlink (`ip -j link`).
fn links() -> Vec<(String, Option<String>)> {
    let o = std::process::Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
        .expect("ip (iproute2)");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap_or_default().to_string(),
                l["master"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn tap_of(id: &str) -> String {
    format!("vt{}", &id[..12])
}

/// Nothing of VM `id` is left: no tap, no nft rule, no lease on `network`, no process,
/// no directory.
fn assert_vm_net_gone(id: &str, network: &str) {
    let tap = tap_of(id);
    assert!(
        !links().iter().any(|(l, _)| *l == tap),
        "tap {tap} of {id} is left"
    );
    assert_no_leftovers(id);
    let v: serde_json::Value = serde_json::from_str(&ok(&["network", "inspect", network])).unwrap();
    assert!(
        v[0]["Containers"].get(id).is_none(),
        "the lease of {id} on {network} is left: {v}"
    );
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn vm_network_published_port_names_both_ways_and_kill_9_cleanup() {
    let net = name("vnet");
    ok(&["network", "create", &net]);
    // A container web server on the user network, up before the VM boots.
    let c = name("cweb");
    ok(&[
        "run",
        "-d",
        "--name",
        &c,
        "--network",
        &net,
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo from-container > /www/index.html && dd if=/dev/zero bs=1000 count=300 2>/dev/null | tr '\\0' c > /www/big && exec httpd -f -p 80 -h /www",
    ]);
    // The VM web server, published on the host's loopback.
    let v = name("vweb");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    vm_ok(&[
        "-d",
        "--name",
        &v,
        "--network",
        &net,
        "-p",
        &publish,
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo from-vm > /www/index.html && dd if=/dev/zero bs=1000 count=300 2>/dev/null | tr '\\0' v > /www/big && exec httpd -f -p 80 -h /www",
    ]);
    let id = id_of(&v);
    let ins = inspect(&v);
    let ip = ins["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with("10.89."), "on the user network: {ins}");
    // The tap is a port of the network's bridge.
    let tap = tap_of(&id);
    let master = links()
        .into_iter()
        .find(|(l, _)| *l == tap)
        .unwrap_or_else(|| panic!("no tap {tap}: {:?}", links()))
        .1;
    assert!(
        master.as_deref().is_some_and(|m| m.starts_with("vsl-")),
        "{tap} is not on the user network's bridge ({master:?})"
    );

    // From the host, through the DNAT rule, to the guest's httpd.
    let reply = http_get(port, Duration::from_secs(60));
    assert!(
        reply.starts_with("HTTP/1.") && reply.contains("200"),
        "{reply}"
    );
    assert!(reply.ends_with("from-vm\n"), "{reply}");
    // The guest's driver took the offloads and mergeable receive buffers: CSUM,
    // GUEST_CSUM, GUEST_TSO4/6, HOST_TSO4/6, MRG_RXBUF (virtio-net feature bits).
    let features = ok(&[
        "exec",
        &v,
        "sh",
        "-c",
        "for d in /sys/bus/virtio/devices/*; do if [ \"$(cat $d/device)\" = 0x0001 ]; then cat $d/features; fi; done",
    ]);
    let bits = features.trim().as_bytes();
    for bit in [0, 1, 7, 8, 11, 12, 15] {
        assert_eq!(
            bits.get(bit),
            Some(&b'1'),
            "virtio-net feature bit {bit} not negotiated: {features}"
        );
    }

    // The guest's eth0 has the leased address; it has lo and eth0 only.
    let o = vessel(&[
        "exec",
        &v,
        "sh",
        "-c",
        "ls /sys/class/net; ifconfig eth0; route -n",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("eth0\nlo\n"), "{out}");
    assert!(
        out.contains(&format!("inet addr:{ip} ")) && out.contains("Mask:255.255.255.0"),
        "{out}"
    );
    // The network's MTU (a user network's default, the most a tap takes), told by the device.
    assert!(out.contains("MTU:65521"), "{out}");
    assert!(
        out.contains("0.0.0.0         10.89."),
        "no default route: {out}"
    );
    // VM -> container by name.
    let o = vessel(&["exec", &v, "wget", "-qO-", &format!("http://{c}/")]);
    assert_eq!(stdout(&o), "from-container\n", "{}", stderr(&o));
    // Frames up to the MTU both ways: 300 kB from the container into the VM, and from
    // the VM into the container (TCP segments of up to 65495 bytes each). All of it
    // arrives, and nothing but the server's byte (none is left once it is deleted).
    let big = |server: &str, byte: char| {
        format!("wget -qO- http://{server}/big | wc -c; wget -qO- http://{server}/big | tr -d {byte} | wc -c")
    };
    for (client, server, byte) in [(&v, &c, 'c'), (&c, &v, 'v')] {
        let o = vessel(&["exec", client, "sh", "-c", &big(server, byte)]);
        let counts: Vec<String> = stdout(&o).split_whitespace().map(String::from).collect();
        assert_eq!(
            counts,
            ["300000", "0"],
            "{client} <- {server}: {}",
            stderr(&o)
        );
    }
    // Container -> VM by name (a container started after the VM).
    let got = ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "busybox",
        "wget",
        "-qO-",
        &format!("http://{v}/"),
    ]);
    assert_eq!(got, "from-vm\n");
    // The first container learnt the VM's name too.
    let o = vessel(&["exec", &c, "wget", "-qO-", &format!("http://{v}/")]);
    assert_eq!(stdout(&o), "from-vm\n", "{}", stderr(&o));
    // A container that joins after the VM booted: the running VM learns its name, and
    // forgets it when it goes.
    let late = name("clate");
    ok(&[
        "run",
        "-d",
        "--name",
        &late,
        "--network",
        &net,
        "busybox",
        "sleep",
        "1000",
    ]);
    let o = vessel(&["exec", &v, "ping", "-c", "1", "-W", "10", &late]);
    assert!(
        o.status.success(),
        "VM -> {late}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let late_id = id_of(&late);
    ok(&["rm", "-f", &late]);
    assert_no_leftovers(&late_id);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hosts = ok(&["exec", &v, "cat", "/etc/hosts"]);
        if !hosts.contains(&late) {
            assert!(hosts.contains(&c), "{hosts}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{late} never left the VM's hosts:\n{hosts}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Crash the VMM process (vmm_runs_jailed kills the monitor): its tap (not
    // persistent) goes with it at once.
    let vmm = vmm_pid(&ins);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vmm as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while links().iter().any(|(l, _)| *l == tap) {
        assert!(Instant::now() < deadline, "{tap} outlived the VMM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The monitor sees the VMM die and records the end (it does not hang).
    let o = vessel(&["wait", &v]);
    assert!(
        o.status.success(),
        "wait after the VMM crashed: {}",
        stderr(&o)
    );
    // rm -f removes what a crash cannot: the DNAT rule and the lease.
    ok(&["rm", "-f", &v]);
    assert_vm_net_gone(&id, &net);
    let cid = id_of(&c);
    ok(&["rm", "-f", &c]);
    assert_no_leftovers(&cid);
    ok(&["network", "rm", &net]);
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn vm_without_network_has_only_lo_and_host_network_is_refused() {
    let out = vm_ok(&[
        "--rm",
        "--network",
        "none",
        "busybox",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(out, "lo\n");
    let o = vm(&["--rm", "--network", "host", "busybox", "true"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("--network host"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn health_checks_probe_inside_the_guest() {
    let n = name("vm-health");
    vm_ok(&[
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        "--health-cmd",
        "uname -r; test -f /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ]);
    let id = id_of(&n);
    let wait = |want: &str| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let h = inspect(&n)["State"]["Health"].clone();
            if h["Status"] == want {
                return h;
            }
            assert!(Instant::now() < deadline, "{n}: never {want}: {h}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let h = wait("unhealthy");
    // The probe ran in the guest: its kernel answered.
    let kernel = std::env::var("VESSEL_TEST_KERNEL_VERSION").unwrap_or_default();
    let outputs: Vec<&str> = h["Log"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["Output"].as_str())
        .collect();
    assert!(
        outputs.iter().any(|o| o.contains(&kernel)),
        "no probe ran in the guest: {h}"
    );
    ok(&["exec", &n, "touch", "/tmp/ok"]);
    wait("healthy");
    ok(&["rm", "-f", &n]);
    assert_no_leftovers(&id);
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn build_isolation_vm_runs_every_run_step_in_a_microvm() {
    assert!(
        std::env::var_os("VESSEL_KERNEL_DIR").is_some(),
        "VESSEL_KERNEL_DIR is not set: run these tests through scripts/vm-suite"
    );
    let ctx = tempfile::tempdir().unwrap();
    // Deletions (a whiteout), a directory made again (opaque), set-user-ID, a hard link
    // and a symbolic link: every kind of change crosses from the guest as a layer.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\n\
         RUN uname -r > /kernel && cat /proc/sys/kernel/random/boot_id > /boot_id \
             && mkdir -p /opq && echo old > /opq/old\n\
         RUN rm /bin/true && rm -rf /opq && mkdir /opq && echo new > /opq/new \
             && mkdir -p /srv && echo hi > /srv/f && chmod 4711 /srv/f && ln /srv/f /srv/hard \
             && ln -s f /srv/soft && echo peer > /etc/hostname-was-written\n\
         CMD [\"cat\", \"/srv/f\"]\n",
    )
    .unwrap();
    let tag = format!("{}:t", name("vmbuild"));
    let before = ok(&["ps", "-aq"]);
    let disks = || -> Vec<std::ffi::OsString> {
        std::fs::read_dir(root().join("vm/images"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    };
    let disks_before = disks();
    let o = vessel_within(
        &[
            "build",
            "--isolation",
            "vm",
            "-t",
            &tag,
            ctx.path().to_str().unwrap(),
        ],
        Duration::from_secs(600),
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert_eq!(ok(&["ps", "-aq"]), before, "the build's microVMs are left");
    // Run as a container: the steps ran in the guest kernel, not in this one.
    let host_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &tag,
        "sh",
        "-c",
        "cat /kernel /boot_id; ls /opq; stat -c '%a %h' /srv/f; readlink /srv/soft; \
         test -e /bin/true || echo no-true; cat /etc/hostname-was-written",
    ]);
    let kernel = std::env::var("VESSEL_TEST_KERNEL_VERSION").unwrap_or_default();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&kernel.as_str()), "{out}");
    assert_ne!(lines.get(1).copied(), Some(host_boot.trim()), "{out}");
    assert_eq!(
        &lines[2..],
        ["new", "4711 2", "f", "no-true", "peer"],
        "{out}"
    );
    assert_eq!(ok(&["run", "--rm", "--network", "none", &tag]), "hi\n");
    // Rebuilt: every step from the cache, no VM booted.
    let o = vessel_within(
        &[
            "build",
            "--isolation",
            "vm",
            "-t",
            &tag,
            ctx.path().to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).matches("Using cache").count() >= 2,
        "{}",
        stdout(&o)
    );
    // A failing step names its line and exit code, and leaves nothing behind.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo failing in the guest && exit 3\n",
    )
    .unwrap();
    let o = vessel_within(
        &["build", "--isolation", "vm", ctx.path().to_str().unwrap()],
        Duration::from_secs(300),
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("exited with 3"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("failing in the guest"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        ok(&["ps", "-aq"]),
        before,
        "the failed build's microVM is left"
    );
    ok(&["rmi", &tag]);
    // The root disks of the steps' images went with the images (the base image's, which
    // its first step used, stays with it).
    let base = ok(&["image", "inspect", "busybox"]);
    let left: Vec<_> = disks()
        .into_iter()
        .filter(|d| !disks_before.contains(d))
        .filter(|d| !base.contains(d.to_string_lossy().trim_end_matches(".ext4")))
        .collect();
    assert!(left.is_empty(), "VM root disks left: {left:?}");
}
