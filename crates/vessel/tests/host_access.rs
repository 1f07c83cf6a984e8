//! End-to-end tests of the `run` flags that widen or narrow a container's reach into the
//! host: `--privileged`, `--device`, `--security-opt`, `--sysctl`, `--pid`, `--ipc`,
//! `--shm-size`, `--group-add`, `--cpu-shares`, `--cpuset-cpus`, `--memory-swap`, and
//! `--label-file`/`--dns-search`. Each widening is checked against the default it widens
//! (what the container cannot do without it), each value vessel cannot honour is refused
//! with 125 and one line.

mod common;

use common::*;

/// `run --rm --network none ARGS... busybox sh -c SCRIPT`, its stdout.
fn sh(args: &[&str], script: &str) -> String {
    let mut a = vec!["run", "--rm", "--network", "none"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["busybox", "sh", "-c", script]);
    ok(&a)
}

/// `run` with `args` is refused: 125, one line, naming `needle`; nothing created.
fn refused(args: &[&str], needle: &str) {
    let n = name("refused");
    let mut a = vec!["run", "--name", &n];
    if !args.contains(&"--network") {
        a.extend_from_slice(&["--network", "none"]);
    }
    a.extend_from_slice(args);
    a.extend_from_slice(&["busybox", "true"]);
    let o = vessel(&a);
    let err = stderr(&o);
    assert_eq!(code(&o), 125, "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.contains(needle), "{args:?}: names {needle:?}: {err}");
    assert!(
        !vessel(&["inspect", &n]).status.success(),
        "{args:?} created {n}"
    );
}

/// The capability mask the engine (this test's process, root) holds.
fn own_bounding_set() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn privileged_opens_what_the_default_closes() {
    let script = "grep -E '^(CapEff|Seccomp):' /proc/self/status; \
                  grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; \
                  test -e /dev/kmsg && echo kmsg || echo no-kmsg";
    let default = sh(&[], script);
    assert!(default.contains("CapEff:\t00000000a80425fb"), "{default}");
    assert!(default.contains("Seccomp:\t2"), "{default}");
    assert!(default.contains("\nro\n"), "{default}");
    assert!(default.contains("no-kmsg"), "{default}");
    let privileged = sh(&["--privileged"], script);
    assert!(
        privileged.contains(&format!("CapEff:\t{}", own_bounding_set())),
        "every capability the engine holds: {privileged}"
    );
    assert!(privileged.contains("Seccomp:\t0"), "{privileged}");
    assert!(privileged.contains("\nrw\n"), "{privileged}");
    assert!(privileged.contains("\nkmsg"), "{privileged}");
    // User namespaces and --privileged do not go together (Docker's rule too).
    refused(&["--privileged", "--userns"], "--privileged");
}

#[test]
fn a_device_is_given_with_exactly_its_permissions() {
    // /dev/kmsg is no default device: without --device the node cannot be used even if
    // made (the device cgroup), with `r` it cannot be written, with `w` it can.
    let write = "echo 'vessel test: --device' > /dev/kmsg && echo wrote || echo denied";
    let made = sh(&[], &format!("mknod /dev/kmsg c 1 11; {write}"));
    assert!(made.ends_with("denied\n"), "{made}");
    assert_eq!(
        sh(&["--device", "/dev/kmsg:/dev/kmsg:r"], write),
        "denied\n"
    );
    assert_eq!(sh(&["--device", "/dev/kmsg:/dev/kmsg:w"], write), "wrote\n");
    // At another path, with the host node's type and numbers.
    let at = sh(
        &["--device", "/dev/kmsg:/dev/k2"],
        "stat -c '%F %t:%T' /dev/k2",
    );
    assert_eq!(at, "character special file 1:b\n");
    refused(&["--device", "/etc/passwd"], "not a device node");
    refused(&["--device", "/dev/kmsg:/dev/k:rwx"], "permissions");
    refused(&["--device", "/no/such/dev"], "--device");
}

#[test]
fn security_opts_change_the_filter_and_no_new_privs_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                          "includes": {}, "excludes": {}, "comment": "no new directories"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    assert_eq!(
        sh(&["--security-opt", &opt], "mkdir /x 2>&1; echo $?"),
        "mkdir: can't create directory '/x': Permission denied\n1\n"
    );
    assert_eq!(sh(&[], "mkdir /x && echo made"), "made\n");
    assert_eq!(
        sh(
            &["--security-opt", "seccomp=unconfined"],
            "grep Seccomp: /proc/self/status"
        ),
        "Seccomp:\t0\n"
    );
    assert_eq!(
        sh(&[], "grep NoNewPrivs /proc/self/status"),
        "NoNewPrivs:\t1\n"
    );
    assert_eq!(
        sh(
            &["--security-opt", "no-new-privileges=false"],
            "grep NoNewPrivs /proc/self/status"
        ),
        "NoNewPrivs:\t0\n"
    );
    // systempaths=unconfined: nothing mounted over /proc's entries (masked with
    // /dev/null or an empty tmpfs, or read-only like /proc/sys).
    let masked = "cut -d' ' -f2 /proc/mounts | grep -c '^/proc/' || true";
    assert_ne!(sh(&[], masked), "0\n");
    assert_eq!(
        sh(&["--security-opt", "systempaths=unconfined"], masked),
        "0\n"
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}"#,
    )
    .unwrap();
    for (opt, needle) in [
        ("apparmor=docker-default", "AppArmor"),
        ("label=type:svirt", "SELinux"),
        ("seccomp=/no/such/profile.json", "/no/such/profile.json"),
        ("bogus", "unknown"),
    ] {
        refused(&["--security-opt", opt], needle);
    }
    refused(
        &["--security-opt", &format!("seccomp={}", bad.display())],
        "listenerPath",
    );
}

#[test]
fn sysctls_namespaces_and_shm() {
    assert_eq!(
        sh(
            &[
                "--sysctl",
                "kernel.shmmax=12345",
                "--sysctl",
                "net.ipv4.ip_forward=1"
            ],
            "cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward"
        ),
        "12345\n1\n"
    );
    refused(
        &["--sysctl", "kernel.hostname=x"],
        "not a namespaced sysctl",
    );
    refused(&["--sysctl", "vm.swappiness=1"], "not a namespaced sysctl");
    refused(
        &["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
        "--network host",
    );
    refused(&["--sysctl", "noequals"], "KEY=VALUE");

    // --pid host: this test's own process is visible.
    let me = std::process::id();
    let probe = format!("test -d /proc/{me} && echo seen || echo unseen");
    assert_eq!(sh(&["--pid", "host"], &probe), "seen\n");
    assert_eq!(sh(&[], &probe), "unseen\n");
    refused(&["--pid", "container:other"], "--pid");

    // --ipc: host shares the host's namespace; none has no /dev/shm.
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let ns = "readlink /proc/self/ns/ipc";
    assert_eq!(
        sh(&["--ipc", "host"], ns).trim(),
        host_ipc.to_str().unwrap()
    );
    assert_ne!(sh(&[], ns).trim(), host_ipc.to_str().unwrap());
    assert_eq!(
        sh(&["--ipc", "none"], "test -e /dev/shm || echo none"),
        "none\n"
    );
    let size = "df -k /dev/shm | tail -1 | awk '{print $2}'";
    assert_eq!(sh(&[], size), "65536\n");
    assert_eq!(sh(&["--shm-size", "8m"], size), "8192\n");
    refused(&["--ipc", "host", "--shm-size", "8m"], "--shm-size");
    refused(&["--ipc", "container:x"], "--ipc");
}

#[test]
fn groups_cpu_weight_cpuset_and_swap() {
    assert_eq!(
        sh(&["--group-add", "daemon", "--group-add", "4242"], "id -G"),
        "0 1 4242\n"
    );
    refused(&["--group-add", "no-such-group"], "no-such-group");

    let weight = "cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || cat /sys/fs/cgroup/cpu.weight";
    let w = sh(&["--cpu-shares", "512"], weight);
    // v1 takes the shares; v2 the weight runc and crun derive from them.
    assert!(w == "512\n" || w == "20\n", "{w}");
    refused(&["--cpu-shares", "1"], "--cpu-shares");
    assert_eq!(
        sh(
            &["--cpuset-cpus", "0"],
            "grep Cpus_allowed_list /proc/self/status"
        ),
        "Cpus_allowed_list:\t0\n"
    );
    refused(&["--cpuset-cpus", "4095"], "not online");

    refused(&["--memory-swap", "1g"], "needs --memory");
    refused(&["-m", "64m", "--memory-swap", "32m"], "less than --memory");
    let memsw = std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes");
    let v1_memory = std::path::Path::new("/sys/fs/cgroup/memory").is_dir();
    let script = "cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.swap.max";
    if v1_memory && !memsw.exists() {
        // No swap accounting on this kernel: a limit that could not hold is refused.
        refused(&["-m", "64m", "--memory-swap", "128m"], "swap accounting");
    } else {
        let out = sh(&["-m", "64m", "--memory-swap", "128m"], script);
        // v1: memory+swap; v2: the swap part alone.
        assert!(out == "134217728\n" || out == "67108864\n", "{out}");
        let default = sh(&["-m", "64m"], script);
        assert!(
            default == "67108864\n" || default == "0\n",
            "no swap by default: {default}"
        );
    }
}

#[test]
fn inspect_shows_what_was_asked_and_files_and_search_domains_work() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(&labels, "# team labels\na=from-file\nb=from-file\n").unwrap();
    let n = name("access");
    ok(&[
        "create",
        "--name",
        &n,
        "--network",
        "none",
        "--label-file",
        labels.to_str().unwrap(),
        "-l",
        "b=from-flag",
        "--dns-search",
        "example.test",
        "--device",
        "/dev/kmsg:/dev/k:r",
        "--security-opt",
        "no-new-privileges=false",
        "--sysctl",
        "kernel.shmmax=4096",
        "--pid",
        "host",
        "--shm-size",
        "16m",
        "--group-add",
        "daemon",
        "--cpu-shares",
        "256",
        "--cpuset-cpus",
        "0",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    let doc = inspect(&n);
    let h = &doc["HostConfig"];
    assert_eq!(doc["Config"]["Labels"]["a"], "from-file");
    assert_eq!(doc["Config"]["Labels"]["b"], "from-flag");
    assert_eq!(h["DnsSearch"][0], "example.test");
    assert_eq!(h["Devices"][0]["PathOnHost"], "/dev/kmsg");
    assert_eq!(h["Devices"][0]["PathInContainer"], "/dev/k");
    assert_eq!(h["Devices"][0]["CgroupPermissions"], "r");
    assert_eq!(h["SecurityOpt"][0], "no-new-privileges=false");
    assert_eq!(h["Sysctls"]["kernel.shmmax"], "4096");
    assert_eq!(h["PidMode"], "host");
    assert_eq!(h["ShmSize"], 16 << 20);
    assert_eq!(h["GroupAdd"][0], "daemon");
    assert_eq!(h["CpuShares"], 256);
    assert_eq!(h["CpusetCpus"], "0");
    assert_eq!(h["Privileged"], false);
    let out = ok(&["start", "-a", &n]);
    assert!(out.lines().any(|l| l == "search example.test"), "{out}");
    ok(&["rm", &n]);
}
