//! End-to-end tests of the commands on running instances: `pause`/`unpause` (the
//! processes stop making progress and resume), `restart`, `rename`, `top`, `stats` and
//! `update` (the cgroup limits change under the running process), with Docker's errors
//! for an instance in the wrong state.

mod common;

use std::time::Duration;

use common::*;

/// A container removed (`rm -f`) when dropped: a failed test leaves no busy loop behind.
struct Counter(String);

impl std::ops::Deref for Counter {
    type Target = String;
    fn deref(&self) -> &String {
        &self.0
    }
}

impl std::fmt::Display for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = vessel(&["rm", "-f", &self.0]);
    }
}

/// A detached container counting into /tmp/n as fast as it can.
fn counter(prefix: &str) -> Counter {
    let n = name(prefix);
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/m; mv /tmp/m /tmp/n; done",
    ]);
    Counter(n)
}

fn count(n: &str) -> u64 {
    // Renamed into place whole: a read sees a whole count, once there is one.
    for _ in 0..100 {
        if let Ok(v) = ok(&["exec", n, "sh", "-c", "cat /tmp/n 2>/dev/null; true"])
            .trim()
            .parse()
        {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{n} never showed its count");
}

/// `vessel ARGS` fails with status 1 and one line holding `needle`.
fn fails(args: &[&str], needle: &str) {
    let o = vessel(args);
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn pause_freezes_and_unpause_thaws_and_states_say_so() {
    let n = counter("pause");
    assert_eq!(ok(&["pause", &n]), format!("{n}\n"));
    let doc = inspect(&n);
    assert_eq!(doc["State"]["Status"], "paused");
    assert_eq!(doc["State"]["Paused"], true);
    assert_eq!(doc["State"]["Running"], true);
    let ps = ok(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.contains(n.as_str()) && l.contains("(Paused)")),
        "{ps}"
    );
    // Frozen: the count read through the file system does not move (an exec would be
    // frozen too: read the upper directory from the host).
    let upper = std::path::PathBuf::from(
        doc["GraphDriver"]["Data"]["UpperDir"]
            .as_str()
            .unwrap_or_default(),
    );
    let read = || -> u64 {
        let p = if upper.as_os_str().is_empty() {
            root().join("instances").join(id_of(&n)).join("upper/tmp/n")
        } else {
            upper.join("tmp/n")
        };
        std::fs::read_to_string(&p)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let a = read();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(), a, "the count moved while paused");
    fails(&["pause", &n], "already paused");
    assert_eq!(ok(&["unpause", &n]), format!("{n}\n"));
    let b = count(&n);
    std::thread::sleep(Duration::from_millis(300));
    assert!(count(&n) > b, "the count does not move after unpause");
    fails(&["unpause", &n], "not paused");
    assert_eq!(inspect(&n)["State"]["Status"], "running");
    // A paused instance stops and is removed like any other.
    ok(&["pause", &n]);
    ok(&["stop", "-t", "1", &n]);
    assert_eq!(inspect(&n)["State"]["Status"], "exited");
    fails(&["pause", &n], "is not running");
    ok(&["rm", &n]);
    fails(&["pause", "no-such-instance-at-all"], "no such instance");
}

#[test]
fn restart_runs_it_again_and_rename_renames() {
    let n = counter("restart");
    let started = inspect(&n)["State"]["StartedAt"].clone();
    assert_eq!(ok(&["restart", "-t", "1", &n]), format!("{n}\n"));
    let doc = inspect(&n);
    assert_eq!(doc["State"]["Status"], "running");
    assert_ne!(doc["State"]["StartedAt"], started);
    // Restarting a stopped instance starts it.
    ok(&["stop", "-t", "1", &n]);
    ok(&["restart", &n]);
    assert_eq!(inspect(&n)["State"]["Status"], "running");

    let other = name("taken");
    ok(&["create", "--name", &other, "busybox", "true"]);
    fails(&["rename", &n, &other], "already in use");
    fails(&["rename", &n, "bad/name"], "name");
    let renamed = name("renamed");
    assert_eq!(ok(&["rename", &n, &renamed]), "");
    assert!(!vessel(&["inspect", &n]).status.success());
    assert_eq!(inspect(&renamed)["Name"], renamed.as_str());
    assert!(count(&renamed) > 0);
    ok(&["rm", "-f", &renamed, &other]);
}

#[test]
fn top_lists_its_processes_and_stats_its_use() {
    let n = counter("stats");
    let top = ok(&["top", &n]);
    let mut lines = top.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let pid = inspect(&n)["State"]["Pid"].as_i64().unwrap();
    assert!(
        lines.any(|l| l.split_whitespace().nth(1) == Some(&pid.to_string()) && l.contains("sh -c")),
        "its main process {pid} is not listed:\n{top}"
    );
    fails(&["top", &n, "-o", "pid"], "not supported");

    let out = ok(&["stats", "--no-stream", &n]);
    let row = out
        .lines()
        .find(|l| l.contains(n.as_str()))
        .unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = row
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    // CPU % of a busy loop (some of one core: the host may be loaded), memory under its
    // 64 MiB limit.
    let cpu: f64 = cells[2].trim_end_matches('%').parse().unwrap();
    assert!(cpu > 0.5 && cpu < 101.0, "{row}");
    assert!(cells[3].ends_with(" / 64MiB"), "{row}");
    // Its shell, and at times the mv it forks.
    let pids: u32 = cells.last().unwrap().parse().unwrap();
    assert!((1..=3).contains(&pids), "{row}");
    let json = ok(&["stats", "--no-stream", "--format", "json", &n]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["Name"], n.as_str());
    assert!(
        v["PIDs"].as_str().unwrap().parse::<u32>().unwrap() >= 1,
        "{v}"
    );
    assert!(v["NetIO"].as_str().unwrap().contains(" / "));

    ok(&["stop", "-t", "1", &n]);
    fails(&["top", &n], "is not running");
    fails(&["stats", "--no-stream", &n], "is not running");
    ok(&["rm", &n]);
}

#[test]
fn update_changes_the_limits_under_the_running_process() {
    let n = counter("update");
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                  cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max";
    assert_eq!(ok(&["exec", &n, "sh", "-c", script]), "67108864\nmax\n");
    // Up (memory+swap must follow on v1) and down again, and a process limit.
    ok(&[
        "update",
        "-m",
        "128m",
        "--pids-limit",
        "50",
        "--cpus",
        "0.5",
        &n,
    ]);
    assert_eq!(ok(&["exec", &n, "sh", "-c", script]), "134217728\n50\n");
    ok(&["update", "-m", "96m", &n]);
    assert_eq!(ok(&["exec", &n, "sh", "-c", script]), "100663296\n50\n");
    let h = &inspect(&n)["HostConfig"];
    assert_eq!(h["Memory"], 96 << 20);
    assert_eq!(h["NanoCpus"], 500_000_000);
    assert_eq!(h["PidsLimit"], 50);
    fails(&["update", &n], "at least one");
    fails(&["update", "-m", "1m", &n], "minimum");
    ok(&["rm", "-f", &n]);

    // Before the start: the new limits are what it starts with.
    let c = name("update-created");
    ok(&[
        "create",
        "--name",
        &c,
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    ok(&["update", "-m", "80m", &c]);
    assert_eq!(ok(&["start", "-a", &c]), "83886080\nmax\n");
    fails(&["update", "-m", "90m", &c], "is not running");
    ok(&["rm", &c]);
}

/// Polls until `f` holds (or fails after the test limit).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit();
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `vessel serve` starts every `always` instance of the root that is not running, also
/// one stopped by the user (Docker's rule for a daemon start): the two tests that use
/// such instances do not run at once.
static POLICIES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn policies() -> std::sync::MutexGuard<'static, ()> {
    POLICIES.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn restart_policies_restart_as_dockers_do() {
    let _one = policies();
    // on-failure:2: two restarts, then it stays exited; each run is in the log.
    let n = name("onfail");
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo ran; exit 3",
    ]);
    eventually("two restarts", || inspect(&n)["RestartCount"] == 2);
    eventually("exited for good", || {
        let d = inspect(&n);
        d["State"]["Status"] == "exited" && d["State"]["Restarting"] == false
    });
    std::thread::sleep(Duration::from_millis(800));
    let d = inspect(&n);
    assert_eq!(d["RestartCount"], 2, "a third restart");
    assert_eq!(d["State"]["ExitCode"], 3);
    assert_eq!(d["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(d["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2);
    assert_eq!(ok(&["logs", &n]), "ran\nran\nran\n");
    ok(&["rm", &n]);

    // on-failure does not restart a success.
    let s = name("onfail-ok");
    ok(&[
        "run",
        "--name",
        &s,
        "--network",
        "none",
        "--restart",
        "on-failure",
        "busybox",
        "true",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inspect(&s)["RestartCount"], 0);
    ok(&["rm", &s]);

    // always: restarted after each exit until the user stops it; a start by hand makes
    // the policy apply again; update --restart no ends it.
    let a = name("always");
    ok(&[
        "run",
        "-d",
        "--name",
        &a,
        "--network",
        "none",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "sleep 0.3",
    ]);
    eventually("restarted twice", || {
        inspect(&a)["RestartCount"].as_u64() >= Some(2)
    });
    ok(&["stop", "-t", "1", &a]);
    eventually("stopped", || inspect(&a)["State"]["Status"] == "exited");
    let count = inspect(&a)["RestartCount"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    let d = inspect(&a);
    assert_eq!(d["State"]["Status"], "exited", "restarted after stop");
    assert_eq!(d["RestartCount"], count);
    ok(&["start", &a]);
    eventually("restarted after a start by hand", || {
        inspect(&a)["RestartCount"].as_u64() > count.as_u64()
    });
    ok(&["update", "--restart", "no", &a]);
    assert_eq!(inspect(&a)["HostConfig"]["RestartPolicy"]["Name"], "no");
    ok(&["rm", "-f", &a]);

    for (args, needle) in [
        (vec!["--restart", "sometimes"], "invalid restart policy"),
        (vec!["--restart", "always:3"], "max-retries"),
        (vec!["--restart", "always", "--rm"], "--rm"),
    ] {
        let mut full = vec!["run", "--network", "none"];
        full.extend(args.iter().copied());
        full.extend(["busybox", "true"]);
        let o = vessel(&full);
        assert_eq!(code(&o), 125, "{full:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{full:?}: {}", stderr(&o));
    }
}

#[test]
fn the_engine_starting_starts_always_and_unless_stopped_instances_again() {
    let _one = policies();
    let always = name("policy-always");
    let stopped = name("policy-stopped");
    ok(&[
        "run",
        "-d",
        "--name",
        &always,
        "--network",
        "none",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "300",
    ]);
    ok(&[
        "run",
        "-d",
        "--name",
        &stopped,
        "--network",
        "none",
        "--restart",
        "unless-stopped",
        "busybox",
        "sleep",
        "300",
    ]);
    ok(&["stop", "-t", "0", &stopped]);
    // As after a reboot: its monitor and its process gone without a word.
    let d = inspect(&always);
    for key in ["MonitorPid", "Pid"] {
        let pid = d["State"][key].as_i64().unwrap() as i32;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    eventually("dead", || inspect(&always)["State"]["Status"] == "dead");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("d.sock");
    let mut serve = cmd(&["serve", "-H", &format!("unix://{}", sock.display())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("started by vessel serve", || {
        inspect(&always)["State"]["Status"] == "running"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        inspect(&stopped)["State"]["Status"],
        "exited",
        "stopped by the user, started anyway"
    );
    let _ = serve.kill();
    let _ = serve.wait();
    ok(&["rm", "-f", &always, &stopped]);
}

/// `ps -n N` and `ps -l`: the last created, in any state, after the filters (Docker's
/// rule); the API's `limit` likewise.
#[test]
fn ps_last_and_latest_show_the_last_created_in_any_state() {
    let label = format!("ps-last={}", std::process::id());
    let made: Vec<String> = ["exited", "created", "running"]
        .iter()
        .map(|what| {
            let n = name(&format!("ps-last-{what}"));
            let base = ["--name", n.as_str(), "-l", label.as_str(), "busybox"];
            match *what {
                "exited" => ok(&[&["run"][..], &base, &["true"]].concat()),
                "created" => ok(&[&["create"][..], &base, &["true"]].concat()),
                _ => ok(&[&["run", "-d"][..], &base, &["sleep", "60"]].concat()),
            };
            n
        })
        .collect();
    let names = |args: &[&str]| -> Vec<String> {
        let filter = format!("label={label}");
        let all = [
            &["ps", "--filter", filter.as_str(), "--format", "{{.Names}}"][..],
            args,
        ]
        .concat();
        ok(&all).lines().map(str::to_string).collect()
    };
    assert_eq!(names(&[]), [made[2].clone()], "running only by default");
    assert_eq!(names(&["-n", "2"]), [made[2].clone(), made[1].clone()]);
    assert_eq!(
        names(&["--last", "5"]),
        [made[2].clone(), made[1].clone(), made[0].clone()]
    );
    assert_eq!(names(&["-l"]), [made[2].clone()]);
    assert_eq!(
        names(&["-n", "0"]),
        [made[2].clone()],
        "0: no limit, as Docker's"
    );
    assert_eq!(
        names(&["-l", "-n", "2"]).len(),
        2,
        "-n wins over -l, as in Docker"
    );
    ok(&["rm", "-f", &made[2]]);
    assert_eq!(
        names(&["--latest"]),
        [made[1].clone()],
        "the created one, not running"
    );
    for n in &made[..2] {
        ok(&["rm", n]);
    }
}

/// The internal commands take only the descriptors their parent placed for them: run by
/// hand, with nothing on descriptor 3, they must not take the database the engine opened
/// there for their report channel (which once wrote a JSON report into it).
#[test]
fn internal_commands_run_by_hand_leave_the_databases_intact() {
    let n = name("byhand");
    ok(&["create", "--name", &n, "busybox", "true"]);
    let id = id_of(&n);
    let o = vessel(&["__monitor", "vessel-no-such-instance"]);
    assert_ne!(code(&o), 0);
    let o = vessel(&["__exec", &id, "{}"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("control socket"), "{}", stderr(&o));
    // The catalogue still reads, and the monitor run by hand runs the instance.
    assert!(ok(&["ps", "-a"]).contains(&n));
    let o = vessel(&["__monitor", &id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(inspect(&n)["State"]["Status"], "exited");
    ok(&["rm", &n]);
    assert!(!ok(&["ps", "-a"]).contains(&n));
}

#[test]
fn attach_joins_a_running_instances_streams_and_returns_its_status() {
    use std::io::Write;
    // Input reaches its stdin, stdout and stderr come back apart, and its exit status is
    // attach's.
    let n = running_with("attach", &["-i"], &["sh", "-c", "while read l; do [ \"$l\" = quit ] && exit 7; echo \"got $l\"; echo \"err $l\" >&2; done"]);
    let mut child = spawn_piped(&["attach", &n], std::process::Stdio::piped());
    let mut input = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    input.write_all(b"hello\nquit\n").unwrap();
    let o = output_within(child, "vessel attach");
    assert_eq!(stdout(&o), "got hello\n");
    assert_eq!(stderr(&o), "err hello\n");
    assert_eq!(code(&o), 7);
    ok(&["rm", &n]);

    // Without a terminal the signals attach gets go to the instance (--sig-proxy).
    let n = running_with(
        "attachsig",
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; while true; do sleep 0.1; done",
        ],
    );
    let child = spawn_piped(&["attach", "--no-stdin", &n], std::process::Stdio::null());
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = output_within(child, "vessel attach (SIGTERM)");
    assert_eq!(stdout(&o), "got-term\n");
    assert_eq!(code(&o), 3);
    ok(&["rm", &n]);

    // On a terminal the detach keys leave it running; --detach-keys changes them.
    let n = running_with("attachtty", &["-it"], &["sh"]);
    let line = format!(
        "{} --root {} attach --detach-keys ctrl-x,y {n}",
        vessel_bin(),
        root().display()
    );
    let mut child = on_a_terminal(&line)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    input.write_all(b"echo in-the-$((40+2))\r").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    input.write_all(&[0x18, b'y']).unwrap();
    let o = output_within(child, "vessel attach (detach keys)");
    assert!(stdout(&o).contains("in-the-42"), "{}", stdout(&o));
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(inspect(&n)["State"]["Status"], "running");

    // Refusals, in Docker's words.
    let o = vessel(&["attach", "--detach-keys", "ctrl-1", &n]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    ok(&["rm", "-f", &n]);
    let n = name("attachstopped");
    ok(&["create", "--name", &n, "busybox"]);
    let o = vessel(&["attach", &n]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("cannot attach to a stopped container"),
        "{}",
        stderr(&o)
    );
    ok(&["rm", &n]);
}

#[test]
fn info_counts_instances_and_describes_the_host() {
    let n = name("info");
    ok(&["create", "--name", &n, "busybox"]);
    let doc: serde_json::Value = serde_json::from_str(&ok(&["info", "--format", "json"])).unwrap();
    assert!(doc["Containers"].as_u64().unwrap() >= 1, "{doc}");
    assert!(doc["ContainersStopped"].as_u64().unwrap() >= 1, "{doc}");
    assert!(doc["Images"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(doc["DockerRootDir"], root().display().to_string());
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    assert_eq!(doc["CgroupVersion"], if v2 { "2" } else { "1" });
    let text = ok(&["info"]);
    for want in [
        "Containers:",
        "Server Version:",
        "Storage Driver: overlay2",
        "Kernel Version:",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert_eq!(
        ok(&["system", "info", "-f", "{{.Driver}} {{.OSType}}"]),
        "overlay2 linux\n"
    );
    ok(&["rm", &n]);
}
