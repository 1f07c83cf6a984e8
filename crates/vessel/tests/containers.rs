//! End-to-end tests of `--isolation container`: the real binary, as a user runs it.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn echo_prints_and_exits_zero() {
    let o = vessel(&["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello\n");
    assert_eq!(stderr(&o), "");
}

#[test]
fn only_a_throwaway_root_is_mounted_volatile() {
    // `--rm`: the upper directory goes with the container, so it is never synced.
    let root = |args: &[&str]| {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["busybox", "sh", "-c", "grep ' / / ' /proc/self/mountinfo"]);
        let o = vessel(&a);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let line = stdout(&o);
        assert!(line.contains(" - overlay "), "{line}");
        line
    };
    assert!(root(&["--rm"]).contains("volatile"));
    let n = name("keep");
    let kept = root(&["--name", &n]);
    assert!(!kept.contains("volatile"), "{kept}");
    ok(&["rm", &n]);
}

#[test]
fn userns_root_is_unprivileged_on_the_host_and_the_layers_stay_shared() {
    let n = name("userns");
    let o = vessel(&[
        "run", "-d", "--userns", "--name", &n, "busybox", "sleep", "1000",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Inside: root, owning the image's files and able to write anywhere in its root.
    let out = ok(&[
        "exec",
        &n,
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; stat -c '%u:%g' / /bin/busybox /etc; \
         echo x > /etc/written && touch /bin/busybox && echo wrote",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "{out}");
    let map: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"], "{out}");
    assert_eq!(
        lines.collect::<Vec<_>>(),
        ["0:0", "0:0", "0:0", "wrote"],
        "{out}"
    );
    // Outside: the container's processes run as host uid 100000.
    let pid = inspect(&n)["State"]["Pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "100000", "100000", "100000", "100000"]
    );
    // The shared layers were neither chowned nor written: the writes went to the upper
    // directory, owned by the container's root.
    let id = id_of(&n);
    let layers = root().join("images/layers");
    for layer in std::fs::read_dir(&layers).unwrap().flatten() {
        let busybox = layer.path().join("bin/busybox");
        if let Ok(m) = std::fs::symlink_metadata(&busybox) {
            use std::os::unix::fs::MetadataExt;
            assert_eq!((m.uid(), m.gid()), (0, 0), "{}", busybox.display());
        }
        assert!(!layer.path().join("etc/written").exists());
    }
    let written = root().join("instances").join(&id).join("upper/etc/written");
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&written).expect("the write is in the upper directory");
        assert_eq!((m.uid(), m.gid()), (100_000, 100_000));
    }
    // Nothing of the idmapped layers or the overlay is mounted on the host.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&layers.to_string_lossy().to_string()),
        "{mountinfo}"
    );
    ok(&["rm", "-f", &n]);
    assert_no_leftovers(&id);
}

#[test]
fn exit_status_propagates() {
    assert_eq!(
        code(&vessel(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])),
        3
    );
    // Killed by a signal: 128 + N (under --init, since PID 1 cannot be killed from inside).
    assert_eq!(
        code(&vessel(&[
            "run",
            "--rm",
            "--init",
            "busybox",
            "sh",
            "-c",
            "kill -9 $$"
        ])),
        137
    );
}

#[test]
fn stdout_and_stderr_stay_separate() {
    let o = vessel(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
}

#[test]
fn docker_exit_codes_for_failures() {
    let o = vessel(&["run", "--rm", "--pull", "never", "no-such-image:1", "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("image not found"), "{}", stderr(&o));
    let o = vessel(&["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-command"));
    let o = vessel(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    let o = vessel(&["run", "--rm", "--memory", "12zz", "busybox", "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("--memory"), "{}", stderr(&o));
    let o = vessel(&["run", "--no-such-flag", "busybox", "true"]);
    assert_eq!(code(&o), 125);
    let o = vessel(&[
        "run",
        "--rm",
        "--isolation",
        "vm",
        "--userns",
        "busybox",
        "true",
    ]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).contains("--userns applies to containers"),
        "{}",
        stderr(&o)
    );
    // Nothing was left behind by the failed runs.
    let ps = ok(&["ps", "-a", "--format", "json"]);
    assert!(
        !ps.contains("no-such-command") && !ps.contains("/etc/passwd"),
        "{ps}"
    );
}

#[test]
fn name_in_use_is_refused_and_running_rm_needs_force() {
    let n = name("dup");
    ok(&["run", "-d", "--name", &n, "busybox", "sleep", "1000"]);
    let o = vessel(&["run", "-d", "--name", &n, "busybox", "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    let id = id_of(&n);
    let o = vessel(&["rm", &n]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("stop it first"), "{}", stderr(&o));
    assert_eq!(inspect(&n)["State"]["Status"], "running");
    ok(&["rm", "-f", &n]);
    assert_no_leftovers(&id);
}

#[test]
fn env_workdir_user_hostname_readonly_and_binds() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from-host\n").unwrap();
    let vol = format!("{}:/data:ro", host.path().display());
    let o = vessel(&[
        "run", "--rm", "-v", &vol, "-e", "K=V", "-w", "/data", "-u", "1000:1000", "--hostname", "h1", "--read-only", "busybox",
        "sh", "-c", "cat f; echo $K; pwd; id -u; id -g; hostname; touch /x 2>/dev/null || echo ro-root; touch /data/y 2>/dev/null || echo ro-bind",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "from-host\nV\n/data\n1000\n1000\nh1\nro-root\nro-bind\n"
    );
    assert!(!host.path().join("y").exists());
}

#[test]
fn rw_bind_mount_writes_through() {
    let host = tempfile::tempdir().unwrap();
    let vol = format!("{}:/out", host.path().display());
    ok(&[
        "run",
        "--rm",
        "-v",
        &vol,
        "busybox",
        "sh",
        "-c",
        "echo written > /out/file",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("file")).unwrap(),
        "written\n"
    );
}

#[test]
fn memory_limit_ooms_and_is_reported() {
    let n = name("oom");
    let o = vessel(&[
        "run",
        "--name",
        &n,
        "--memory",
        "16m",
        "busybox",
        "sh",
        "-c",
        "tail /dev/zero",
    ]);
    assert_eq!(code(&o), 137, "{}", stderr(&o));
    let st = &inspect(&n)["State"];
    assert_eq!(st["OOMKilled"], true, "{st}");
    assert_eq!(st["ExitCode"], 137);
    assert_eq!(inspect(&n)["HostConfig"]["Memory"], 16 << 20);
    let id = id_of(&n);
    ok(&["rm", &n]);
    assert_no_leftovers(&id);
}

#[test]
fn a_detached_container_is_watched_by_the_lean_shim() {
    // Once a detached container runs, its monitor is `vessel-shim`, not `vessel`; it
    // still logs, and once the container ends (here killed by the OOM killer) it records
    // the exit, OOMKilled included, and cleans up.
    let n = name("shim");
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--memory",
        "16m",
        "busybox",
        "sh",
        "-c",
        "echo before; echo oops >&2; sleep 1; tail /dev/zero",
    ]);
    let monitor = inspect(&n)["State"]["MonitorPid"]
        .as_i64()
        .expect("a running instance has a monitor pid");
    let exe = std::fs::read_link(format!("/proc/{monitor}/exe")).unwrap();
    assert_eq!(
        exe.file_name().and_then(|f| f.to_str()),
        Some("vessel-shim"),
        "{exe:?}"
    );
    let o = vessel(&["wait", &n]);
    assert_eq!(stdout(&o).trim(), "137", "{}", stderr(&o));
    let st = &inspect(&n)["State"];
    assert_eq!(st["Status"], "exited", "{st}");
    assert_eq!(st["OOMKilled"], true, "{st}");
    let o = vessel(&["logs", &n]);
    assert_eq!(stdout(&o), "before\n");
    assert_eq!(stderr(&o), "oops\n");
    let id = id_of(&n);
    ok(&["rm", &n]);
    assert_no_leftovers(&id);
}

#[test]
fn pids_limit_is_enforced() {
    let o = vessel(&[
        "run", "--rm", "--pids-limit", "10", "busybox", "sh", "-c",
        "n=0; for i in $(seq 30); do sleep 5 & n=$((n+1)); done; echo started; kill $(jobs -p) 2>/dev/null; exit 0",
    ]);
    assert!(
        stderr(&o).contains("can't fork")
            || stderr(&o).contains("Resource temporarily unavailable"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn capabilities_are_dockers_default() {
    let out = ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "grep -E '^Cap(Eff|Bnd)|^NoNewPrivs|^Seccomp:' /proc/self/status",
    ]);
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

#[test]
fn seccomp_blocks_namespace_creation() {
    let o = vessel(&["run", "--rm", "busybox", "unshare", "-n", "true"]);
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn cgroup_namespace_is_rooted_at_the_containers_cgroup() {
    // The init makes its cgroup namespace only once the runtime has moved it into the
    // container's cgroup: every hierarchy then shows it at its root.
    let out = ok(&["run", "--rm", "busybox", "cat", "/proc/self/cgroup"]);
    assert!(out.lines().count() >= 1, "{out}");
    for l in out.lines() {
        assert!(l.ends_with(":/"), "not at the namespace's root: {l}\n{out}");
    }
}

#[test]
fn pid_namespace_makes_the_command_pid_1() {
    let out = ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo $$; ps -o pid,comm; true",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"));
    let pids: Vec<&str> = lines
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(pids, vec!["1", "2"], "{out}");
}

#[test]
fn network_none_has_only_loopback_and_the_default_adds_eth0() {
    let links = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|s| s.trim().split('@').next().unwrap_or_default().to_string())
            .collect()
    };
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert_eq!(links(&out), vec!["lo"], "{out}");
    // The default is the default bridge network, as in Docker.
    let out = ok(&["run", "--rm", "busybox", "ip", "-o", "link"]);
    assert_eq!(links(&out), vec!["lo", "eth0"], "{out}");
}

#[test]
fn masked_and_readonly_proc_paths() {
    let out = ok(&[
        "run", "--rm", "busybox", "sh", "-c",
        "cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo ro",
    ]);
    assert_eq!(out, "0\n0\nro\n");
}

#[test]
fn detached_lifecycle_logs_exec_stop_wait() {
    let n = name("web");
    let id = ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "100",
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo started; echo oops >&2; while true; do sleep 0.1; done",
    ])
    .trim()
    .to_string();
    assert_eq!(id.len(), 64);
    let ps = ok(&["ps"]);
    assert!(ps.contains(&n) && ps.contains("Up"), "{ps}");
    // Logs: wait for the first lines.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let o = vessel(&["logs", &n]);
        if stdout(&o).contains("started") && stderr(&o).contains("oops") {
            break o;
        }
        assert!(Instant::now() < deadline, "logs never showed the output");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stdout(&logs), "started\n");
    assert_eq!(stderr(&logs), "oops\n");
    let ts = ok(&["logs", "-t", &n]);
    assert!(ts.starts_with("20") && ts.contains("Z started"), "{ts}");
    // exec joins the same namespaces and cgroup.
    let out = ok(&[
        "exec",
        &n,
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname",
    ]);
    assert!(out.starts_with("sh -c trap "), "{out}");
    assert_eq!(out.lines().nth(1), Some(&id[..12]));
    assert_eq!(code(&vessel(&["exec", &n, "sh", "-c", "exit 7"])), 7);
    assert_eq!(code(&vessel(&["exec", &n, "no-such-cmd"])), 127);
    exec_forwards_signals(&n);
    let st = inspect(&n);
    assert_eq!(st["State"]["Running"], true);
    assert!(st["State"]["Pid"].as_i64().unwrap() > 1);
    // stop: the trap runs, the exit is 0, wait reports it.
    ok(&["stop", &n]);
    assert_eq!(ok(&["wait", &n]), "0\n");
    assert!(ok(&["logs", &n]).contains("bye"));
    assert_eq!(inspect(&n)["State"]["Status"], "exited");
    let ps = ok(&["ps"]);
    assert!(!ps.contains(&n), "{ps}");
    assert!(ok(&["ps", "-a"]).contains("Exited (0)"));
    // A stopped container starts again.
    ok(&["start", &n]);
    assert_eq!(inspect(&n)["State"]["Status"], "running");
    // PID 1 of a PID namespace gets only the signals it has a handler for: send TERM
    // once the shell has printed its second "started", i.e. has set its trap.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok(&["logs", &n]).matches("started").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the restarted container printed nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&["kill", "-s", "TERM", &n]);
    assert_eq!(ok(&["wait", &n]), "0\n");
    ok(&["rm", &n]);
    assert_no_leftovers(&id);
    assert_ne!(code(&vessel(&["inspect", &n])), 0);
}

#[test]
fn stop_kills_after_the_timeout() {
    let n = name("stubborn");
    // PID 1 without a TERM handler ignores TERM: stop must fall back to KILL.
    ok(&["run", "-d", "--name", &n, "busybox", "sleep", "1000"]);
    let t = Instant::now();
    ok(&["stop", "-t", "1", &n]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(inspect(&n)["State"]["ExitCode"], 137);
    let id = id_of(&n);
    ok(&["rm", &n]);
    assert_no_leftovers(&id);
}

#[test]
fn init_reaps_zombies_and_forwards_signals() {
    let init = std::path::Path::new(vessel_bin()).with_file_name("vessel-init");
    assert!(
        init.exists(),
        "{} is missing: build it with ./x setup (static vessel-agent)",
        init.display()
    );
    // Without an init, an orphan's zombie stays; with --init it is reaped.
    let out = ok(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "sh -c 'sleep 0.2 & exit 0'; sleep 0.6; ps -o stat,comm | grep -c '^Z' || true",
    ]);
    assert_eq!(out.trim(), "0", "zombies left: {out}");
    let out = ok(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert!(out.starts_with("/dev/init -- sh"), "{out}");
}

#[test]
fn signals_reach_the_attached_container() {
    let mut child = cmd(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.1; done",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(st.code(), Some(9));
}

#[test]
fn interactive_stdin_and_tty() {
    let mut child = cmd(&[
        "run",
        "--rm",
        "-i",
        "busybox",
        "sh",
        "-c",
        "read a; echo got:$a",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let o = output_within(child, "vessel run");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got:hi\n");
    // A real terminal with -t: util-linux's `script` gives vessel one.
    let cmdline = format!(
        "{} --root {} run --rm -it busybox sh -c 'tty; test -t 0 && echo is-a-tty; exit 4'",
        vessel_bin(),
        root().display()
    );
    let o = on_a_terminal(&cmdline).output().expect("script (bsdutils)");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("/dev/pts/0") && out.contains("is-a-tty"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(4), "{out}");
    // The terminal's hangup reaches the monitor as it finishes; it must still end (it
    // once spun on SIGPIPE from its own signal pipe instead).
    let marker = "sh -c tty; test -t 0 && echo is-a-tty; exit 4";
    let lingering = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok().map(|c| (e, c)))
            .map(|(e, c)| {
                (
                    e.file_name(),
                    String::from_utf8_lossy(&c).replace('\0', " "),
                )
            })
            .filter(|(_, c)| c.contains(marker) && c.contains(&*root().to_string_lossy()))
            .filter(|(_, c)| !c.starts_with("script"))
            .map(|(pid, c)| format!("{}: {c}", pid.to_string_lossy()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lingering().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        lingering(),
        Vec::<String>::new(),
        "vessel processes left behind"
    );
}

#[test]
fn killed_monitor_leaves_a_truthful_state_and_rm_cleans_up() {
    let n = name("orphan");
    ok(&["run", "-d", "--name", &n, "busybox", "sleep", "1000"]);
    let id = id_of(&n);
    let monitor = inspect(&n)["State"]["MonitorPid"]
        .as_i64()
        .expect("monitor pid") as i32;
    let init = inspect(&n)["State"]["Pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let st = inspect(&n)["State"].clone();
    assert_eq!(st["Status"], "dead", "{st}");
    assert!(st["Error"].as_str().unwrap().contains("monitor"), "{st}");
    assert!(ok(&["ps", "-a"]).contains("Dead"));
    // The container's processes linger until rm -f.
    assert!(std::path::Path::new(&format!("/proc/{init}")).exists());
    ok(&["rm", "-f", &n]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !std::path::Path::new(&format!("/proc/{init}/cmdline")).exists()
            || std::fs::read(format!("/proc/{init}/cmdline"))
                .unwrap()
                .is_empty()
    );
    assert_no_leftovers(&id);
}

#[test]
fn interrupted_start_is_shown_as_created_and_removable() {
    // `create` leaves exactly what a `vessel run` killed before its monitor started leaves.
    let n = name("half");
    ok(&["create", "--name", &n, "busybox", "true"]);
    let id = id_of(&n);
    assert_eq!(inspect(&n)["State"]["Status"], "created");
    assert!(ok(&["ps", "-a"]).contains("Created"));
    ok(&["rm", &n]);
    assert_no_leftovers(&id);
    // And a `vessel run` killed while attached: the monitor carries on; rm -f cleans up.
    let n = name("attached");
    let mut child = cmd(&["run", "--name", &n, "busybox", "sleep", "1000"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while vessel(&["inspect", &n]).status.code() != Some(0)
        || inspect(&n)["State"]["Status"] != "running"
    {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(inspect(&n)["State"]["Status"], "running");
    let id = id_of(&n);
    ok(&["rm", "-f", &n]);
    assert_no_leftovers(&id);
}

#[test]
fn twenty_concurrent_runs_all_succeed_without_leftovers() {
    let handles: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let n = name("many");
                let o = vessel(&[
                    "run",
                    "--name",
                    &n,
                    "busybox",
                    "sh",
                    "-c",
                    &format!("echo run-{i}"),
                ]);
                (n, i, o)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        let (n, i, o) = h.join().unwrap();
        assert_eq!(code(&o), 0, "run {i}: {}", stderr(&o));
        assert_eq!(stdout(&o), format!("run-{i}\n"));
        ids.push(id_of(&n));
        ok(&["rm", &n]);
    }
    for id in ids {
        assert_no_leftovers(&id);
    }
}

#[test]
fn oci_runtime_commands_drive_a_bundle() {
    let bundle = tempfile::tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    let st = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs"),
    )
    .arg(&rootfs)
    .status()
    .unwrap();
    assert!(st.success());
    let out_file = bundle.path().join("out");
    std::fs::File::create(&out_file).unwrap();
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["sh", "-c", "echo from-oci > /out/file"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "hostname": "oci",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/out", "type": "bind", "source": bundle.path(), "options": ["rbind", "rw"]}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}]}
    });
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    let state_root = bundle.path().join("state");
    let sr = state_root.to_str().unwrap();
    let id = name("oci");
    let b = bundle.path().to_str().unwrap();
    // The container inherits create's stdio (as with runc): don't capture it.
    let st = cmd(&["oci", "--root", sr, "create", "--bundle", b, &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let st: serde_json::Value =
        serde_json::from_str(&ok(&["oci", "--root", sr, "state", &id])).unwrap();
    assert_eq!(st["status"], "created");
    ok(&["oci", "--root", sr, "start", &id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&ok(&["oci", "--root", sr, "state", &id])).unwrap();
        if st["status"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "never stopped: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_to_string(bundle.path().join("file")).unwrap(),
        "from-oci\n"
    );
    ok(&["oci", "--root", sr, "delete", &id]);
    assert!(!state_root.join(&id).exists());
}

#[test]
fn vm_isolation_says_clearly_when_this_host_cannot_run_it() {
    // Whatever the host, --isolation vm must answer at once with a clear 125, and leave
    // nothing behind, when it cannot boot the default kernel here.
    let empty = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let o = cmd(&["run", "--isolation", "vm", "--rm", "busybox", "true"])
        .env("VESSEL_KERNEL_DIR", empty.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    let err = stderr(&o);
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert!(err.contains("PVM") && err.contains("--kernel"), "{err}");
    } else if !std::path::Path::new("/dev/kvm").exists() {
        assert!(err.contains("/dev/kvm"), "{err}");
    } else {
        assert!(
            err.contains("guest kernel") && err.contains(&empty.path().display().to_string()),
            "{err}"
        );
    }
    let all: serde_json::Value =
        serde_json::from_str(&ok(&["ps", "-a", "--format", "json"])).unwrap();
    let vms = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["HostConfig"]["Isolation"] == "vm")
        .count();
    assert_eq!(vms, 0, "a failed VM run left an instance");
}

#[test]
fn ps_size_shows_what_an_instance_wrote_and_its_virtual_size() {
    let n = running("ps-size");
    ok(&[
        "exec",
        &n,
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1000 count=3000 2>/dev/null",
    ]);
    let table = ok(&["ps", "-s", "--filter", &format!("name={n}")]);
    let header = table.lines().next().unwrap();
    assert!(header.ends_with("SIZE"), "{table}");
    let row = table.lines().nth(1).unwrap();
    // 3 MB written; the virtual size adds the image's (busybox: about 2 MB).
    assert!(
        row.contains("3MB (virtual 4.") || row.contains("3MB (virtual 5"),
        "{table}"
    );
    let t = ok(&[
        "ps",
        "-s",
        "--filter",
        &format!("name={n}"),
        "--format",
        "{{.Size}}",
    ]);
    assert!(t.trim().starts_with("3MB (virtual "), "{t}");
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "ps",
        "-s",
        "--filter",
        &format!("name={n}"),
        "--format",
        "json",
    ]))
    .unwrap();
    let rw = v[0]["SizeRw"].as_u64().unwrap();
    assert!((3_000_000..3_100_000).contains(&rw), "{}", v[0]["SizeRw"]);
    assert!(v[0]["SizeRootFs"].as_u64().unwrap() > rw);
    // Without -s: no size column (computing sizes walks every upper directory).
    assert!(!ok(&["ps"]).lines().next().unwrap().contains("SIZE"));
    let id = id_of(&n);
    ok(&["rm", "-f", &n]);
    assert_no_leftovers(&id);
}
