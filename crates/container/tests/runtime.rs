//! End-to-end tests: real containers from a busybox rootfs. They need root.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::*;
use nix::sys::signal::Signal;
use vessel_container::spec::OVERLAY_ANNOTATION;
use vessel_container::{Error, Status, Stdio};

#[test]
fn echo_exit_code_and_lifecycle() {
    require_root();
    let b = Bundle::new(
        "echo",
        &["sh", "-c", "echo hello; echo oops >&2; exit 3"],
        |_| {},
    );
    let mut g = Guard::new("echo");
    let (stdio, p) = pipes();
    let st = g.create(&b, stdio).unwrap();
    assert_eq!(st.status, Status::Created);
    assert!(st.pid.is_some());
    assert_eq!(g.rt.state(&g.id).unwrap().status, Status::Created);
    assert!(g.rt.list().unwrap().iter().any(|s| s.id == g.id));
    g.rt.start(&g.id).unwrap();
    let out = read_all(p.stdout);
    let err = read_all(p.stderr);
    assert_eq!(g.wait(), 3);
    assert_eq!(out, "hello\n");
    assert_eq!(err, "oops\n");
    assert_eq!(g.rt.state(&g.id).unwrap().status, Status::Stopped);
    // A second start is refused.
    assert!(matches!(
        g.rt.start(&g.id),
        Err(Error::InvalidStatus { .. })
    ));
}

#[test]
fn pid_one_hostname_and_loopback() {
    require_root();
    let b = Bundle::new(
        "pid1",
        &["sh", "-c", "echo $$; hostname; ip link show lo"],
        |_| {},
    );
    let mut g = Guard::new("pid1");
    let o = run(&mut g, &b);
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "1", "init must be pid 1: {o:?}");
    assert_eq!(lines[1], "vessel-test");
    assert!(
        o.stdout.contains("LOOPBACK,UP"),
        "loopback must be up in the new netns: {o:?}"
    );
    assert!(
        !o.stdout.contains("eth0"),
        "a fresh netns holds only loopback"
    );
}

#[test]
fn docker_default_capabilities() {
    require_root();
    let b = Bundle::new(
        "caps",
        &[
            "sh",
            "-c",
            "grep -E '^Cap(Eff|Bnd|Prm|Inh)' /proc/self/status",
        ],
        |_| {},
    );
    let mut g = Guard::new("caps");
    let o = run(&mut g, &b);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("CapEff:\t00000000a80425fb"), "{o:?}");
    assert!(o.stdout.contains("CapBnd:\t00000000a80425fb"), "{o:?}");
    assert!(o.stdout.contains("CapInh:\t0000000000000000"), "{o:?}");
}

#[test]
fn non_root_user_has_no_capabilities() {
    require_root();
    let b = Bundle::new(
        "user",
        &[
            "sh",
            "-c",
            "id -u; id -g; id -G; grep CapEff /proc/self/status",
        ],
        |o| {
            o.uid = 1000;
            o.gid = 1001;
            o.additional_gids = vec![1002];
        },
    );
    let mut g = Guard::new("user");
    let o = run(&mut g, &b);
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1001");
    assert_eq!(lines[2], "1001 1002", "supplementary groups: {o:?}");
    assert_eq!(lines[3], "CapEff:\t0000000000000000");
}

#[test]
fn seccomp_blocks_unshare_and_no_new_privs_is_set() {
    require_root();
    let b = Bundle::new(
        "seccomp",
        &[
            "sh",
            "-c",
            "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; unshare -U true; echo unshare=$?; unshare -n true; echo unshare_net=$?",
        ],
        |_| {},
    );
    let mut g = Guard::new("seccomp");
    let o = run(&mut g, &b);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("Seccomp:\t2"), "filter mode: {o:?}");
    assert!(o.stdout.contains("NoNewPrivs:\t1"), "{o:?}");
    assert!(
        o.stdout.contains("unshare=1"),
        "unshare -U must fail: {o:?}"
    );
    assert!(
        o.stdout.contains("unshare_net=1"),
        "unshare -n must fail: {o:?}"
    );
    assert!(
        o.stderr.contains("Operation not permitted"),
        "seccomp answers EPERM: {o:?}"
    );
}

#[test]
fn memory_limit_and_oom_kill() {
    require_root();
    let limit: i64 = 32 * 1024 * 1024;
    let b = Bundle::new(
        "oom",
        &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; dd if=/dev/zero of=/dev/null bs=128M count=1; echo dd=$?"],
        |o| o.memory_limit = Some(limit),
    );
    let mut g = Guard::new("oom");
    let o = run(&mut g, &b);
    assert!(
        o.stdout.starts_with(&limit.to_string()),
        "the container sees its limit: {o:?}"
    );
    // dd was OOM-killed (SIGKILL -> 137) while the shell survived to report it.
    assert!(o.stdout.contains("dd=137"), "{o:?}");
    let stats = g.rt.stats(&g.id).unwrap();
    assert!(
        stats.oom_killed,
        "stats must report the OOM kill: {stats:?}"
    );
    assert!(stats.oom_kills >= 1);
    assert_eq!(stats.memory_limit, Some(limit as u64));
}

#[test]
fn pids_limit_is_enforced() {
    require_root();
    let b = Bundle::new(
        "pids",
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done; wait; echo done",
        ],
        |o| o.pids_limit = Some(6),
    );
    let mut g = Guard::new("pids");
    let (stdio, p) = pipes();
    g.create(&b, stdio).unwrap();
    let stats = g.rt.stats(&g.id).unwrap();
    assert_eq!(stats.pids_limit, Some(6));
    g.rt.start(&g.id).unwrap();
    let err = std::thread::spawn(move || read_all(p.stderr));
    let out = read_all(p.stdout);
    let code = g.wait();
    let err = err.join().unwrap();
    // busybox sh gives up (exit 2) at the first failed fork.
    assert!(
        err.contains("can't fork"),
        "forks past the limit fail: {code} {out:?} {err:?}"
    );
    assert_ne!(out, "done\n");
}

#[test]
fn cpu_quota_is_written() {
    require_root();
    let b = Bundle::new(
        "cpu",
        &["sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max"],
        |o| o.cpus = Some(0.5),
    );
    let mut g = Guard::new("cpu");
    let o = run(&mut g, &b);
    assert_eq!(o.code, 0, "{o:?}");
    let words: Vec<&str> = o.stdout.split_whitespace().collect();
    assert_eq!(words, ["50000", "100000"], "{o:?}");
}

#[test]
fn readonly_root_and_masked_paths() {
    require_root();
    let b = Bundle::new(
        "ro",
        &[
            "sh",
            "-c",
            "touch /newfile; echo touch=$?; for f in /proc/kcore /proc/keys /proc/timer_list; do [ -e $f ] && echo $f=$(cat $f | wc -c); done; echo firmware=$(ls -A /sys/firmware | wc -l); echo 1 > /proc/sys/kernel/domainname; echo sysctl=$?; echo ok > /dev/shm/x && cat /dev/shm/x",
        ],
        |o| o.readonly_rootfs = true,
    );
    let mut g = Guard::new("ro");
    let o = run(&mut g, &b);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("touch=1"), "{o:?}");
    assert!(o.stderr.contains("Read-only file system"), "{o:?}");
    // Masked files read as empty (/dev/null over them), masked dirs list nothing.
    let mut checked = 0;
    for f in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if std::path::Path::new(f).exists() {
            assert!(
                o.stdout.contains(&format!("{f}=0\n")),
                "{f} is masked: {o:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no masked file exists on this host to check");
    assert!(
        o.stdout.contains("firmware=0"),
        "/sys/firmware is masked: {o:?}"
    );
    assert!(
        o.stdout.contains("sysctl=1"),
        "/proc/sys is read-only: {o:?}"
    );
    assert!(
        o.stdout.contains("\nok\n"),
        "/dev/shm stays writable: {o:?}"
    );
    assert!(!b.rootfs().join("newfile").exists());
}

#[test]
fn overlay_annotation_mounts_layers_inside_the_container_only() {
    require_root();
    let layers = TempDir::new("layers");
    let top = layers.path().join("top");
    let bottom = layers.path().join("bottom");
    let upper = layers.path().join("upper");
    let work = layers.path().join("work");
    let merged = layers.path().join("merged");
    busybox_rootfs(&bottom);
    fs::write(bottom.join("a"), "bottom-a\n").unwrap();
    fs::write(bottom.join("b"), "bottom-b\n").unwrap();
    for d in [&top, &upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(top.join("a"), "top-a\n").unwrap();
    let annotation = serde_json::json!({
        "lower": [top, bottom],
        "upper": upper,
        "work": work,
    })
    .to_string();
    let b = Bundle::new(
        "overlay",
        &["sh", "-c", "cat /a /b; echo written > /c; rm /b"],
        |o| {
            o.rootfs = merged.clone();
            o.annotations.insert(OVERLAY_ANNOTATION.into(), annotation);
        },
    );
    let mut g = Guard::new("overlay");
    let o = run(&mut g, &b);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "top-a\nbottom-b\n");
    assert_eq!(fs::read_to_string(upper.join("c")).unwrap(), "written\n");
    assert!(bottom.join("b").exists(), "lower layers are never modified");
    assert!(
        fs::read_dir(&merged).unwrap().next().is_none(),
        "the overlay must not be visible on the host"
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(merged.to_str().unwrap()));
}

#[test]
fn exec_into_running_container() {
    require_root();
    let b = Bundle::new("exec", &["sleep", "60"], |_| {});
    fs::write(b.rootfs().join("etc/notexec"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        b.rootfs().join("etc/notexec"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let mut g = Guard::new("exec");
    g.create(&b, Stdio::Inherit).unwrap();
    g.rt.start(&g.id).unwrap();
    assert_eq!(g.rt.state(&g.id).unwrap().status, Status::Running);

    let mut process = b.spec.process().clone().unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; grep CapEff /proc/self/status; unshare -U true; echo unshare=$?".into(),
    ]));
    let (stdio, p) = pipes();
    let pid = g.rt.exec(&g.id, &process, stdio).unwrap();
    let out = read_all(p.stdout);
    assert_eq!(wait_code(pid), 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1");
    assert!(
        lines[0].parse::<i32>().unwrap() < 100,
        "pid inside the container's pidns: {out}"
    );
    assert_eq!(lines[1].trim(), "sleep 60");
    assert_eq!(lines[2], "vessel-test");
    assert_eq!(lines[3], "CapEff:\t00000000a80425fb");
    assert!(
        out.contains("unshare=1"),
        "seccomp applies to exec too: {out}"
    );

    process.set_args(Some(vec!["no-such-program".into()]));
    let e = g.rt.exec(&g.id, &process, Stdio::Inherit).unwrap_err();
    assert!(matches!(e, Error::ExecutableNotFound(_)), "{e}");
    assert_eq!(e.exit_code(), Some(127));

    process.set_args(Some(vec!["/etc/notexec".into()]));
    let e = g.rt.exec(&g.id, &process, Stdio::Inherit).unwrap_err();
    assert!(matches!(e, Error::NotExecutable { .. }), "{e}");
    assert_eq!(e.exit_code(), Some(126));

    g.rt.kill(&g.id, Signal::SIGKILL as i32, false).unwrap();
    assert_eq!(g.wait(), 128 + 9);
}

#[test]
fn kill_and_delete_leave_nothing_behind() {
    require_root();
    let b = Bundle::new("delete", &["sh", "-c", "sleep 60 & sleep 60"], |o| {
        o.memory_limit = Some(64 << 20);
        o.pids_limit = Some(32);
    });
    let mut g = Guard::new("delete");
    let st = g.create(&b, Stdio::Inherit).unwrap();
    let pid = nix::unistd::Pid::from_raw(st.pid.unwrap());
    g.rt.start(&g.id).unwrap();
    let dirs = cgroup_dirs_of(pid);
    assert!(dirs.len() >= 2, "{dirs:?}");
    for d in &dirs {
        assert!(d.exists(), "{} should exist while running", d.display());
        assert!(
            d.to_string_lossy().contains(&g.id),
            "container cgroup {} is named after it",
            d.display()
        );
    }
    assert!(matches!(
        g.rt.delete(&g.id, false),
        Err(Error::InvalidStatus { .. })
    ));
    g.rt.kill(&g.id, Signal::SIGKILL as i32, true).unwrap();
    assert_eq!(g.wait(), 137);
    assert_eq!(g.rt.state(&g.id).unwrap().status, Status::Stopped);
    g.rt.delete(&g.id, false).unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} must be removed", d.display());
    }
    assert!(!g.rt.state_dir(&g.id).exists());
    assert!(matches!(g.rt.state(&g.id), Err(Error::NotFound(_))));
    // Idempotent.
    g.rt.delete(&g.id, true).unwrap();
}

#[test]
fn force_delete_of_created_container_whose_init_was_killed() {
    require_root();
    let b = Bundle::new("killed", &["true"], |_| {});
    let mut g = Guard::new("killed");
    let st = g.create(&b, Stdio::Inherit).unwrap();
    let pid = nix::unistd::Pid::from_raw(st.pid.unwrap());
    let dirs = cgroup_dirs_of(pid);
    nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
    assert_eq!(g.wait(), 137);
    assert_eq!(g.rt.state(&g.id).unwrap().status, Status::Stopped);
    assert!(matches!(
        g.rt.start(&g.id),
        Err(Error::InvalidStatus { .. })
    ));
    g.rt.delete(&g.id, true).unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{}", d.display());
    }
}

#[test]
fn create_fails_cleanly_for_missing_or_non_executable_program() {
    require_root();
    let b = Bundle::new("notfound", &["does-not-exist"], |_| {});
    let g = Guard::new("notfound");
    let e =
        g.rt.create(&g.id, b.dir.path(), Default::default())
            .unwrap_err();
    assert!(
        matches!(e, Error::ExecutableNotFound(ref p) if p == "does-not-exist"),
        "{e}"
    );
    assert_eq!(e.exit_code(), Some(127));
    assert!(!g.rt.state_dir(&g.id).exists(), "no state left behind");
    assert!(g.rt.list().unwrap().is_empty());

    let b = Bundle::new("notexec", &["/etc/passwd"], |_| {});
    fs::write(b.rootfs().join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
    let e =
        g.rt.create(&g.id, b.dir.path(), Default::default())
            .unwrap_err();
    assert!(matches!(e, Error::NotExecutable { .. }), "{e}");
    assert_eq!(e.exit_code(), Some(126));

    let b = Bundle::new("isdir", &["/etc"], |_| {});
    let e =
        g.rt.create(&g.id, b.dir.path(), Default::default())
            .unwrap_err();
    assert_eq!(e.exit_code(), Some(126), "{e}");
}

#[test]
fn invalid_spec_is_rejected_before_side_effects() {
    require_root();
    let mut b = Bundle::new("invalid", &["true"], |_| {});
    b.spec
        .process_mut()
        .as_mut()
        .unwrap()
        .set_cwd(PathBuf::from("relative"));
    b.save();
    let g = Guard::new("invalid");
    let e =
        g.rt.create(&g.id, b.dir.path(), Default::default())
            .unwrap_err();
    assert!(matches!(e, Error::InvalidSpec(_)), "{e}");
    assert!(!g.rt.state_dir(&g.id).exists());

    let e =
        g.rt.create("../escape", b.dir.path(), Default::default())
            .unwrap_err();
    assert!(matches!(e, Error::InvalidId(_)));
}

#[test]
fn pty_master_is_returned() {
    require_root();
    let b = Bundle::new("pty", &["sh", "-c", "tty; echo $TERM"], |o| {
        o.terminal = true
    });
    let mut g = Guard::new("pty");
    let st = g.create(&b, Stdio::Pty).unwrap();
    let master = st.pty_master.expect("pty master");
    g.rt.start(&g.id).unwrap();
    let mut f = fs::File::from(master);
    let mut out = Vec::new();
    // EIO once the slave side is closed is how a pty says EOF.
    let mut buf = [0u8; 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(g.wait(), 0);
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(out.contains("xterm"), "{out:?}");
}

#[test]
fn console_socket_receives_pty_master() {
    require_root();
    let b = Bundle::new("console", &["sh", "-c", "echo via-console"], |o| {
        o.terminal = true
    });
    let sock_dir = TempDir::new("console-sock");
    let sock_path = sock_dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let receiver = std::thread::spawn(move || {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(f) => Some(f[0]),
                _ => None,
            })
            .expect("an fd over SCM_RIGHTS");
        // SAFETY: the fd was just received and is ours.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    let mut g = Guard::new("console");
    let st =
        g.rt.create(
            &g.id,
            b.dir.path(),
            vessel_container::CreateOptions {
                stdio: Stdio::Pty,
                console_socket: Some(sock_path.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    g.pid = st.pid.map(nix::unistd::Pid::from_raw);
    assert!(
        st.pty_master.is_none(),
        "the master went to the console socket"
    );
    let master = receiver.join().unwrap();
    g.rt.start(&g.id).unwrap();
    let mut f = fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(g.wait(), 0);
    assert!(String::from_utf8_lossy(&out).contains("via-console"));
}

#[test]
fn user_namespace_maps_root() {
    require_root();
    use vessel_container::spec::IdMap;
    let map = vec![IdMap {
        container_id: 0,
        host_id: 200_000,
        size: 65_536,
    }];
    let b = Bundle::new(
        "userns",
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map; id -u; echo $$; ls -ln /bin/busybox",
        ],
        |o| o.user_namespace = Some((map.clone(), map.clone())),
    );
    let mut g = Guard::new("userns");
    let o = run(&mut g, &b);
    assert_eq!(o.code, 0, "{o:?}");
    let words: Vec<&str> = o.stdout.split_whitespace().collect();
    assert_eq!(&words[..3], ["0", "200000", "65536"], "{o:?}");
    assert_eq!(words[3], "0", "root inside: {o:?}");
    assert_eq!(words[4], "1", "pid 1: {o:?}");
    // Host root is not mapped: its files show up as the overflow id.
    assert!(o.stdout.contains("65534"), "{o:?}");
}

#[test]
fn host_network_and_no_cgroup_namespace() {
    require_root();
    let limit: i64 = 48 << 20;
    let mut b = Bundle::new(
        "hostnet",
        &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; ls /sys/class/net; touch /sys/x; echo sys=$?"],
        |o| {
            o.network_namespace = false;
            o.memory_limit = Some(limit);
        },
    );
    let linux = b.spec.linux_mut().as_mut().unwrap();
    let ns: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Cgroup)
        .collect();
    linux.set_namespaces(Some(ns));
    b.save();
    let mut g = Guard::new("hostnet");
    let o = run(&mut g, &b);
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        lines[0],
        limit.to_string(),
        "container cgroup bind-mounted: {o:?}"
    );
    let host_ifaces: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for i in &host_ifaces {
        assert!(
            o.stdout.contains(i.as_str()),
            "host interface {i} visible: {o:?}"
        );
    }
    assert!(o.stdout.contains("sys=1"), "/sys stays read-only: {o:?}");
}
