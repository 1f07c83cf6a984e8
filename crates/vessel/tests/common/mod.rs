//! Shared helpers for the end-to-end tests: run the real `vessel` binary against a
//! private data root that holds the default busybox image.

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A data root with `busybox:latest` imported, shared by the tests of one binary.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        assert!(
            rustix::process::geteuid().is_root(),
            "these end-to-end tests create namespaces, cgroups and mounts: run them as root"
        );
        let dir = std::env::temp_dir().join(format!("vessel-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rootfs = dir.join("busybox-rootfs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs");
        let st = Command::new(&script).arg(&rootfs).status().expect("run scripts/busybox-rootfs");
        assert!(st.success(), "scripts/busybox-rootfs failed: is busybox-static installed? (apt-get install busybox-static)");
        let out = Command::new(vessel_bin())
            .args(["--root"])
            .arg(dir.join("data"))
            .args(["import", "-c", r#"CMD ["sh"]"#, "-c", "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
            .arg(&rootfs)
            .arg("busybox:latest")
            .output()
            .unwrap();
        assert!(out.status.success(), "import busybox: {}", String::from_utf8_lossy(&out.stderr));
        dir.join("data")
    })
}

/// The binary under test.
pub fn vessel_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vessel")
}

/// `vessel --root <shared root> args...`, stdin closed, bounded by [`limit`].
pub fn vessel(args: &[&str]) -> Output {
    vessel_within(args, limit())
}

/// [`vessel`] with a time limit of its own, for a command known to take long.
pub fn vessel_within(args: &[&str], limit: Duration) -> Output {
    let child = cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vessel");
    output_within_limit(child, &format!("vessel {args:?}"), limit)
}

/// How long one command of a test may take: `VESSEL_TEST_TIMEOUT` seconds, 300 unless
/// set (a VM command under nested emulation takes up to a minute).
pub fn limit() -> Duration {
    let secs = std::env::var("VESSEL_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// `child.wait_with_output()`, bounded by [`limit`]. A command that does not end in time,
/// or that ends while something else still holds its stdout or stderr open (which would
/// keep `wait_with_output` waiting forever), fails the test with every process involved:
/// its command line, state, kernel wait channel and stack. They are then killed, so that
/// the tests after this one still run.
pub fn output_within(child: Child, what: &str) -> Output {
    output_within_limit(child, what, limit())
}

/// [`output_within`] with a time limit of its own.
pub fn output_within_limit(mut child: Child, what: &str, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    let mut pipes = Vec::new();
    let mut read_all = |i: usize, fd: Option<OwnedFd>| {
        let Some(fd) = fd else { return };
        pipes.push(
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = std::fs::File::from(fd).read_to_end(&mut buf);
            let _ = tx.send((i, buf));
        });
    };
    read_all(0, child.stdout.take().map(OwnedFd::from));
    read_all(1, child.stderr.take().map(OwnedFd::from));
    drop(tx);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for vessel") {
            break st;
        }
        if Instant::now() >= deadline {
            let report = hang_report(pid, &pipes);
            panic!("{what} did not end within {limit:?}:\n{report}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    for _ in 0..pipes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_secs(5))) {
            Ok((0, b)) => out.stdout = b,
            Ok((_, b)) => out.stderr = b,
            Err(_) => {
                let report = hang_report(pid, &pipes);
                panic!(
                    "{what} ended ({status}) but its stdout or stderr stayed open:\n{report}\nstderr so far: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    out
}

/// The fields of `/proc/PID/stat` after the command name (state, ppid, ...), for the
/// process directory `dir`; empty if it is gone.
fn proc_stat(dir: &Path) -> Vec<String> {
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Every process that is `pid`, descends from it, or holds one of `pipes` open: how it
/// looks to the kernel. Kills them all afterwards.
pub fn hang_report(pid: i32, pipes: &[String]) -> String {
    let me = std::process::id() as i32;
    let mut procs: Vec<(i32, i32)> = Vec::new(); // (pid, ppid)
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let ppid = proc_stat(&e.path())
            .get(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        procs.push((p, ppid));
    }
    let mut involved = vec![pid];
    // Descendants, to a fixed point.
    loop {
        let before = involved.len();
        for &(p, pp) in &procs {
            if involved.contains(&pp) && !involved.contains(&p) {
                involved.push(p);
            }
        }
        if involved.len() == before {
            break;
        }
    }
    // Holders of our pipes.
    for &(p, _) in &procs {
        if p == me || involved.contains(&p) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| {
                pipes
                    .iter()
                    .any(|p| !p.is_empty() && l.to_string_lossy() == *p)
            })
        });
        if holds {
            involved.push(p);
        }
    }
    let mut report = String::new();
    for &p in &involved {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/{p}/{f}")).unwrap_or_default();
        let cmdline = read("cmdline").replace('\0', " ");
        let status = read("status");
        let state = status
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("");
        report += &format!("  pid {p}: {} [{}]\n", cmdline.trim(), state.trim());
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let tr = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
                report += &format!(
                    "    task {} {} wchan {} stack:\n",
                    t.file_name().to_string_lossy(),
                    tr("comm").trim(),
                    tr("wchan").trim()
                );
                for l in tr("stack").lines() {
                    report += &format!("      {l}\n");
                }
            }
        }
    }
    for &p in &involved {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    report
}

/// The same as a `Command`, to customise.
pub fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(vessel_bin());
    c.arg("--root").arg(root()).args(args);
    let init = Path::new(vessel_bin()).with_file_name("vessel-init");
    c.env("VESSEL_INIT", init);
    c
}

/// stdout as a string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code (panics if killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status
        .code()
        .unwrap_or_else(|| panic!("vessel was killed: {o:?}"))
}

/// Runs and asserts success, returning stdout.
pub fn ok(args: &[&str]) -> String {
    let o = vessel(args);
    assert!(
        o.status.success(),
        "vessel {args:?} failed ({:?}): {}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

/// A unique instance name for a test.
pub fn name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An instance's full id.
pub fn id_of(name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", name])).unwrap();
    v[0]["Id"].as_str().unwrap().to_string()
}

/// `inspect` of one instance.
pub fn inspect(name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", name])).unwrap();
    v[0].clone()
}

/// Asserts that nothing of instance `id` is left on the host: no mount, no cgroup, no
/// process, no runtime state.
pub fn assert_no_leftovers(id: &str) {
    assert_none_left(&[id.to_string()]);
}

/// [`assert_no_leftovers`] for many instances at once, each named by its id or by a
/// prefix of it of at least 12 digits (its short id): every place is read once.
pub fn assert_none_left(ids: &[String]) {
    assert!(ids.iter().all(|i| i.len() >= 12), "{ids:?}");
    let short: Vec<&str> = ids.iter().map(|i| &i[..12]).collect();
    let of = |text: &str| short.iter().find(|s| text.contains(**s)).copied();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    if let Some(id) = of(&mountinfo) {
        panic!("a mount of {id} is left:\n{mountinfo}");
    }
    // Every link named after an instance: its veths (`vv` first network, `vw` the
    // others), its tap (`vt`).
    for link in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
        let n = link.file_name().to_string_lossy().into_owned();
        if let Some(id) = of(&n) {
            panic!("the link {n} of {id} is left");
        }
    }
    let rules = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("run nft");
    let rules = String::from_utf8_lossy(&rules.stdout);
    if let Some(id) = of(&rules) {
        panic!("nft rules of {id} are left:\n{rules}");
    }
    let mut cgroups = Vec::new();
    dirs_below(Path::new("/sys/fs/cgroup"), 8, &mut cgroups);
    if let Some(c) = cgroups.iter().find(|c| {
        c.file_name()
            .is_some_and(|n| of(&n.to_string_lossy()).is_some())
    }) {
        panic!("a cgroup is left: {}", c.display());
    }
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if p.file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            // A zombie is already dead; reaping it is its parent's job (after a monitor is
            // killed, that is the host's PID 1, which may reap lazily).
            if proc_stat(&p.path()).first() == Some(&"Z".to_string()) {
                continue;
            }
            if let Ok(cg) = std::fs::read_to_string(p.path().join("cgroup")) {
                if let Some(id) = of(&cg) {
                    panic!("process {:?} of {id} is left", p.file_name());
                }
            }
        }
    }
    for dir in [
        Path::new("/run/vessel/runtime").to_path_buf(),
        root().join("instances"),
    ] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = of(&n) {
                panic!("{} of {id} is left", e.path().display());
            }
        }
    }
}

/// Every directory below `dir`, down to `depth` levels (symbolic links not followed).
fn dirs_below(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() && !ft.is_symlink() {
            out.push(e.path());
            dirs_below(&e.path(), depth - 1, out);
        }
    }
}

/// `vessel exec` passes a signal it is sent on to the process it runs in `instance`: the
/// process's trap runs and its exit status comes back.
pub fn exec_forwards_signals(instance: &str) {
    use std::io::{BufRead, BufReader};
    let mut c = cmd(&[
        "exec",
        instance,
        "sh",
        "-c",
        "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n", "the exec'd shell did not start");
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "got-term\n", "TERM did not reach the exec'd process");
    let st = c.wait().unwrap();
    assert_eq!(
        st.code(),
        Some(9),
        "vessel exec returns the process's status"
    );
}

/// A host port free right now.
pub fn free_port() -> u16 {
    // The kernel may hand the same port out again once its listener is gone: never give
    // one twice in this test process (two `-p` of one test collided so).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `GET /` on 127.0.0.1:port over plain HTTP/1.0, retried for up to `patience` while the
/// server starts (a VM's, under nested emulation, takes a while).
pub fn http_get(port: u16, patience: std::time::Duration) -> String {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + patience;
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_secs(5),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match attempt {
            Ok(r) if !r.is_empty() => return r,
            r if Instant::now() > deadline => {
                panic!("no HTTP answer on 127.0.0.1:{port}: {r:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A detached `busybox sleep 1000` without a network, named after `prefix`: for tests
/// that work on a running container.
pub fn running(prefix: &str) -> String {
    running_with(prefix, &[], &["sleep", "1000"])
}

/// A detached busybox container without a network, named after `prefix`, made with the
/// `run` flags `flags`, running `command`.
pub fn running_with(prefix: &str, flags: &[&str], command: &[&str]) -> String {
    let n = name(prefix);
    let mut args = vec!["run", "-d", "--name", &n, "--network", "none"];
    args.extend_from_slice(flags);
    args.push("busybox");
    args.extend_from_slice(command);
    ok(&args);
    n
}

/// `vessel args...` started with `stdin`, its stdout and stderr piped.
pub fn spawn_piped(args: &[&str], stdin: Stdio) -> Child {
    cmd(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vessel")
}

/// util-linux's `script` running shell command `line` on a terminal of its own, as a
/// user's shell would give one; its stdin is a pipe (`output` closes it at once).
pub fn on_a_terminal(line: &str) -> Command {
    let mut c = Command::new("script");
    c.args(["-qec", line, "/dev/null"]).stdin(Stdio::piped());
    c
}
