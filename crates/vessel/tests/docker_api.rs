//! `vessel serve` driven by the real docker CLI (`DOCKER_CLI`, else `docker` on PATH)
//! and by raw requests: each test starts its own server on a temporary socket over the
//! shared test data root, and stops it after.

mod common;
#[path = "../../image/tests/common/mod.rs"]
mod registry;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Written by the test that prunes containers; read by every other test's server for
/// its life: a prune takes every instance not running in the shared data root, one that
/// another test has just created (even mid-create) or that just exited included.
static CONTAINER_PRUNE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A `vessel serve` on a socket of its own, stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    /// Keeps the container prune test out while this server's test runs.
    _no_prune: Option<std::sync::RwLockReadGuard<'static, ()>>,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server with extra environment variables.
    fn start_with(env: &[(&str, &Path)]) -> Server {
        let guard = CONTAINER_PRUNE.read().unwrap_or_else(|e| e.into_inner());
        Server::spawn(env, Some(guard))
    }

    /// A server for the test that prunes containers, which holds [`CONTAINER_PRUNE`]
    /// for writing.
    fn start_pruning() -> Server {
        Server::spawn(&[], None)
    }

    fn spawn(
        env: &[(&str, &Path)],
        no_prune: Option<std::sync::RwLockReadGuard<'static, ()>>,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let mut c = cmd(&["serve", "-H", &format!("unix://{}", sock.display())]);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vessel serve");
        let s = Server {
            child,
            dir,
            _no_prune: no_prune,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(s.socket()).is_err() {
            assert!(
                Instant::now() < deadline,
                "vessel serve did not listen on {}",
                s.socket().display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    /// The docker CLI against this server.
    fn docker(&self, args: &[&str]) -> Output {
        self.docker_in(args, None)
    }

    /// The docker CLI against this server, fed `input` on its stdin (else /dev/null).
    fn docker_in(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut c = self.docker_cmd();
        c.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("run docker");
        if let Some(data) = input {
            let mut w = child.stdin.take().unwrap();
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        output_within_limit(child, &format!("docker {args:?}"), Duration::from_secs(120))
    }

    /// A docker CLI command against this server (see [`docker_cli`]).
    fn docker_cmd(&self) -> Command {
        let mut c = Command::new(docker_cli());
        c.env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT");
        c
    }

    /// One raw HTTP/1.1 request; returns (status, body).
    fn raw(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        self.raw_with(method, path, &[], body)
    }

    /// [`Server::raw`] with extra headers.
    fn raw_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        // A body the server refuses early may not be read whole: that is its right.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The docker CLI: `DOCKER_CLI`, else `docker` on PATH; without one these tests fail
/// (`./x deps` installs Debian's docker.io client).
fn docker_cli() -> PathBuf {
    if let Some(p) = std::env::var_os("DOCKER_CLI") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "DOCKER_CLI={} does not exist", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("the docker CLI is needed for these tests: no docker on PATH (set DOCKER_CLI, or install Debian's docker.io client: ./x deps)")
        })
}

/// The JSON `{"message": ...}` of an error body.
fn message(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {body}"))
        .to_string()
}

#[test]
fn docker_version_and_info_see_vessel_and_both_runtimes() {
    let s = Server::start();
    let o = s.docker(&[
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.MinAPIVersion}}",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "1.47 1.12");
    let o = s.docker(&["info", "--format", "{{json .Runtimes}}"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for r in ["runc", "vessel", "vessel-vm"] {
        assert!(
            stdout(&o).contains(&format!("\"{r}\"")),
            "{r} missing: {}",
            stdout(&o)
        );
    }
    // Version negotiation: a HEAD /_ping answers with the version in its headers.
    let mut c = UnixStream::connect(s.socket()).unwrap();
    c.write_all(b"HEAD /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("api-version: 1.47"),
        "{out}"
    );
}

#[test]
fn docker_run_rm_prints_the_output_and_returns_the_exit_status() {
    let s = Server::start();
    let n = name("api-run");
    let o = s.docker(&["run", "--rm", "--name", &n, "busybox", "echo", "hi"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "hi\n");
    // The streams stay apart (multiplexed frames without a terminal).
    let o = s.docker(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err"), "{}", stderr(&o));
    let o = s.docker(&["run", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    // --rm removed it.
    let o = s.docker(&["ps", "-a", "-q", "--filter", &format!("name={n}")]);
    assert_eq!(stdout(&o).trim(), "", "{n} is left behind");
}

#[test]
fn docker_run_detached_ps_logs_inspect_stop_rm() {
    let s = Server::start();
    let n = name("api-d");
    let o = s.docker(&[
        "run",
        "-d",
        "--name",
        &n,
        "busybox",
        "sh",
        "-c",
        "echo started; exec sleep 1000",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let o = s.docker(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.starts_with(&format!("{n} Up"))),
        "{}",
        stdout(&o)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = s.docker(&["logs", &n]);
        if stdout(&o) == "started\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs: {:?} {:?}",
            stdout(&o),
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = s.docker(&["inspect", "--format", "{{.State.Running}} {{.Id}}", &n]);
    assert_eq!(stdout(&o).trim(), format!("true {id}"));
    let o = s.docker(&["stop", "-t", "1", &n]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Names}}",
    ]);
    assert!(stdout(&o).lines().any(|l| l == n), "{}", stdout(&o));
    // `ps -n`/`-l` (the API's limit) count stopped containers too.
    let filter = format!("name={n}");
    let o = s.docker(&["ps", "-l", "--filter", &filter, "--format", "{{.Names}}"]);
    assert_eq!(stdout(&o), format!("{n}\n"), "{}", stderr(&o));
    let o = s.docker(&["rm", "-f", &n]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&["inspect", &n]);
    assert_ne!(code(&o), 0);
    assert_no_leftovers(&id);
}

#[test]
fn docker_errors_are_dockers_messages_and_codes() {
    let s = Server::start();
    let o = s.docker(&["run", "--rm", "vessel-no-such-image:v1", "true"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Unable to find image 'vessel-no-such-image:v1' locally"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("Error response from daemon"),
        "{}",
        stderr(&o)
    );
    let n = name("api-dup");
    assert_eq!(
        code(&s.docker(&["create", "--name", &n, "busybox", "true"])),
        0
    );
    let o = s.docker(&["run", "--name", &n, "busybox", "true"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("is already in use"), "{}", stderr(&o));
    // An option vessel does not honour is refused by name, not ignored.
    let o = s.docker(&["run", "--rm", "--oom-kill-disable", "busybox", "true"]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).contains("HostConfig.OomKillDisable"),
        "{}",
        stderr(&o)
    );
    let o = s.docker(&["run", "--rm", "--runtime", "kata", "busybox", "true"]);
    assert!(
        stderr(&o).contains("unknown runtime \"kata\""),
        "{}",
        stderr(&o)
    );
    assert_eq!(code(&s.docker(&["rm", "-f", &n])), 0);
}

#[test]
fn bad_requests_get_json_errors_and_the_server_lives_on() {
    let s = Server::start();
    // Malformed JSON and wrong types: 400, naming what is wrong.
    let (st, body) = s.raw(
        "POST",
        "/v1.47/containers/create",
        b"{\"Image\": \"busybox\",",
    );
    assert_eq!(st, 400, "{body}");
    assert!(message(&body).contains("invalid JSON"), "{body}");
    let (st, body) = s.raw(
        "POST",
        "/v1.47/containers/create",
        br#"{"Image":"busybox","HostConfig":{"Memory":"lots"}}"#,
    );
    assert_eq!(st, 400, "{body}");
    assert!(message(&body).starts_with("HostConfig.Memory"), "{body}");
    let (st, body) = s.raw(
        "POST",
        "/v1.47/containers/create",
        br#"{"Image":"busybox","Cmd":[1]}"#,
    );
    assert_eq!(st, 400, "{body}");
    let (st, body) = s.raw("POST", "/containers/create", b"[1,2]");
    assert_eq!(st, 400, "{body}");
    // A body over the cap is refused, not buffered.
    let huge = vec![b' '; 8 << 20];
    let (st, body) = s.raw("POST", "/v1.47/containers/create", &huge);
    assert_eq!(st, 413, "{body}");
    message(&body);
    // Unknown and unimplemented endpoints; a version too new.
    let (st, body) = s.raw("GET", "/v1.47/no/such/thing", b"");
    assert_eq!(st, 404, "{body}");
    message(&body);
    let (st, body) = s.raw("GET", "/v1.47/swarm", b"");
    assert_eq!(st, 501, "{body}");
    assert!(message(&body).contains("not implemented"), "{body}");
    let (st, body) = s.raw("GET", "/v9.99/info", b"");
    assert_eq!(st, 400, "{body}");
    assert!(message(&body).contains("too new"), "{body}");
    let (st, body) = s.raw("GET", "/v1.47/containers/no-such-container/json", b"");
    assert_eq!(st, 404, "{body}");
    assert!(message(&body).contains("No such container"), "{body}");
    let (st, body) = s.raw("GET", "/containers/json?filters=%7Bbad", b"");
    assert_eq!(st, 400, "{body}");
    // Still serving.
    let (st, body) = s.raw("GET", "/_ping", b"");
    assert_eq!((st, body.as_str()), (200, "OK"));
}

#[test]
fn serve_refuses_tcp() {
    let o = vessel(&["serve", "-H", "tcp://0.0.0.0:2375"]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).contains("tcp://0.0.0.0:2375") && stderr(&o).contains("Unix socket"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_client_leaving_mid_attach_leaves_the_instance_running() {
    let s = Server::start();
    let n = name("api-att");
    let o = s.docker(&[
        "run",
        "-d",
        "--name",
        &n,
        "busybox",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.1; done",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    // Attach, read a little of the stream, and vanish.
    for _ in 0..3 {
        let mut c = UnixStream::connect(s.socket()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(
            format!("POST /v1.47/containers/{id}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("tick") {
            let n = c.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "the attach stream ended: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let o = s.docker(&["inspect", "--format", "{{.State.Running}}", &n]);
    assert_eq!(stdout(&o).trim(), "true", "{}", stderr(&o));
    assert_eq!(code(&s.docker(&["rm", "-f", &n])), 0);
    assert_no_leftovers(&id);
}

/// Many clients at once (issue 15): 20 shells each start `docker run --rm` once a
/// second for a minute (`VESSEL_LOAD_SECONDS` to change). Every run prints its own
/// hostname (its short id) and exits 0, and nothing of any run is left.
#[test]
fn twenty_shells_each_run_once_a_second_for_a_minute() {
    // (Its server keeps the container prune test out: see CONTAINER_PRUNE.)
    const SHELLS: u32 = 20;
    let seconds: u32 = std::env::var("VESSEL_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let s = Server::start();
    let fds = || {
        let dir = format!("/proc/{}/fd", s.child.id());
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let target = std::fs::read_link(e.path()).unwrap_or_default();
                format!("{}->{}", e.file_name().to_string_lossy(), target.display())
            })
            .collect();
        v.sort();
        v
    };
    let fds_before = fds();
    let start = Instant::now();
    let runs: Vec<(String, Result<String, String>, Duration)> = std::thread::scope(|sc| {
        let shells: Vec<_> = (0..SHELLS)
            .map(|shell| {
                let s = &s;
                sc.spawn(move || {
                    let mut done = Vec::new();
                    for tick in 0..seconds {
                        // On the second, or at once when the last run took longer.
                        let at = start
                            + Duration::from_secs(u64::from(tick))
                            + Duration::from_millis(u64::from(shell) * 1000 / u64::from(SHELLS));
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        if start.elapsed() > Duration::from_secs(u64::from(seconds) + 30) {
                            break;
                        }
                        let t = Instant::now();
                        let o = s.docker(&["run", "--rm", "busybox", "hostname"]);
                        let what = format!("shell {shell} run {tick}");
                        let r = if code(&o) == 0 {
                            Ok(stdout(&o).trim().to_string())
                        } else {
                            Err(format!("exit {}: {}", code(&o), stderr(&o)))
                        };
                        done.push((what, r, t.elapsed()));
                    }
                    done
                })
            })
            .collect();
        shells.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed();
    let failed: Vec<_> = runs.iter().filter(|(_, r, _)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} runs failed: {failed:#?}",
        failed.len(),
        runs.len()
    );
    let ids: Vec<String> = runs.iter().map(|(_, r, _)| r.clone().unwrap()).collect();
    for id in &ids {
        assert!(
            id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "a run printed {id:?}, not its short id"
        );
    }
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "two runs had one id");
    let mut times: Vec<Duration> = runs.iter().map(|(_, _, t)| *t).collect();
    times.sort();
    let pct = |p: usize| times[(times.len() - 1) * p / 100];
    eprintln!(
        "{} runs from {SHELLS} shells in {:.1} s: median {:?}, p95 {:?}, max {:?}",
        runs.len(),
        wall.as_secs_f64(),
        pct(50),
        pct(95),
        pct(100)
    );
    // Every shell kept up (a run a second, give or take the machine's load).
    assert_eq!(
        runs.len() as u32,
        SHELLS * seconds,
        "some shells fell behind"
    );
    assert!(
        wall < Duration::from_secs(u64::from(seconds) + 30),
        "the runs took {wall:?}"
    );
    assert_none_left(&ids);
    let o = s.docker(&["ps", "-aq", "--filter", "ancestor=busybox"]);
    for id in &ids {
        assert!(!stdout(&o).contains(id.as_str()), "{id} is still listed");
    }
    // The server holds no more descriptors than before, once its last connections
    // closed, but for its pool of at most 4 open engines (each with its two
    // databases, their logs and shared memory).
    let deadline = Instant::now() + Duration::from_secs(10);
    let is_db = |f: &String| [".db", ".db-wal", ".db-shm"].iter().any(|x| f.ends_with(x));
    loop {
        // SQLite keeps the descriptor of a connection closed while another one held a
        // lock on the file, and closes it at its process's next unlock of that file:
        // one more request that reads the catalogue and the store makes that happen.
        let _ = s.raw("GET", "/v1.41/images/json", b"");
        let _ = s.raw("GET", "/v1.41/containers/json?all=1", b"");
        let fds_after = fds();
        let other = |v: &[String]| v.iter().filter(|f| !is_db(f) && !f.ends_with("->")).count();
        let dbs = fds_after.iter().filter(|f| is_db(f)).count();
        if other(&fds_after) <= other(&fds_before) && dbs <= 4 * 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server holds {fds_after:#?}, before {fds_before:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The server restarting does not stop the instances it started: their monitors keep
/// them, and the next server finds them, attaches, stops and removes them.
#[test]
fn running_instances_outlive_the_server() {
    let s = Server::start();
    let n = name("api-outlive");
    let o = s.docker(&[
        "run",
        "-d",
        "--name",
        &n,
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 3' TERM; while :; do sleep 0.1; done",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    drop(s);
    let s = Server::start();
    let o = s.docker(&["inspect", "--format", "{{.State.Running}}", &n]);
    assert_eq!(stdout(&o).trim(), "true", "{}", stderr(&o));
    let o = s.docker(&["stop", &n]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&s.docker(&["wait", &n])), "3\n");
    assert_eq!(stdout(&s.docker(&["logs", &n])), "bye\n");
    assert_eq!(code(&s.docker(&["rm", &n])), 0);
    assert_no_leftovers(&id);
}

/// The server's standby monitor (`__monitor --standby`), if one runs: its pid.
fn standby_of(server: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        let mut f = after.split(' ');
        let state = f.next()?;
        let ppid: u32 = f.next()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (ppid == server && state != "Z" && String::from_utf8_lossy(&cmdline).contains("--standby"))
            .then_some(pid)
    })
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server keeps one monitor ready for the next start: killed, it is replaced and
/// the start does not fail; the server killed, it goes too.
#[test]
fn the_standby_monitor_is_replaced_when_killed_and_goes_with_the_server() {
    let mut s = Server::start();
    let server = s.child.id();
    let first = wait_for("a standby monitor", || standby_of(server));
    let kill = |pid: u32| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap()
    };
    kill(first);
    let o = s.docker(&["run", "--rm", "busybox", "echo", "after the standby died"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "after the standby died\n");
    // Used: the next one is another process.
    let o = s.docker(&["run", "--rm", "busybox", "true"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let next = wait_for("a new standby monitor", || {
        standby_of(server).filter(|p| *p != first)
    });
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    wait_for("the standby's exit after the server's", || {
        let stat = std::fs::read_to_string(format!("/proc/{next}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
}

/// `docker volume` through the API, and a named volume in `docker run -v`: the data
/// outlives the container, a volume in use is kept (409), unsupported drivers are
/// refused.
#[test]
fn docker_volumes_create_ls_use_rm() {
    let s = Server::start();
    let vol = name("api-vol");
    let o = s.docker(&["volume", "create", "--label", "k=v", &vol]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), vol);
    let o = s.docker(&["volume", "ls", "-q"]);
    assert!(stdout(&o).lines().any(|l| l == vol), "{}", stdout(&o));
    let o = s.docker(&[
        "volume",
        "inspect",
        "--format",
        "{{.Driver}} {{.Labels.k}}",
        &vol,
    ]);
    assert_eq!(stdout(&o).trim(), "local v", "{}", stderr(&o));
    let mount = format!("{vol}:/data");
    let o = s.docker(&[
        "run",
        "--rm",
        "-v",
        &mount,
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&["run", "--rm", "-v", &mount, "busybox", "cat", "/data/f"]);
    assert_eq!(stdout(&o), "kept\n", "{}", stderr(&o));
    let user = name("api-voluser");
    let o = s.docker(&["create", "--name", &user, "-v", &mount, "busybox", "true"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&["volume", "rm", &vol]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    assert_eq!(code(&s.docker(&["rm", &user])), 0);
    let o = s.docker(&["volume", "rm", &vol]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&["volume", "inspect", &vol]);
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).to_lowercase().contains("no such volume"),
        "{}",
        stderr(&o)
    );
    let o = s.docker(&["volume", "create", "-d", "nfs", "x1"]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("not supported"), "{}", stderr(&o));
    // `docker run -v /path` (Config.Volumes): an anonymous volume, which `docker rm -v`
    // takes.
    let n = name("api-anon");
    let o = s.docker(&[
        "run",
        "-d",
        "--name",
        &n,
        "-v",
        "/anon",
        "busybox",
        "sh",
        "-c",
        "echo kept > /anon/f; sleep 60",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}}{{end}}",
        &n,
    ]);
    let line = stdout(&o);
    let mut f = line.split_whitespace();
    assert_eq!(f.next(), Some("volume"), "{line}");
    let vol = f.next().unwrap_or_default().to_string();
    assert_eq!(f.next(), Some("/anon"), "{line}");
    let listed = stdout(&s.docker(&["volume", "ls", "-q"]));
    assert!(listed.lines().any(|l| l == vol), "{vol} not in {listed}");
    let o = s.docker(&["rm", "-f", "-v", &n]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&["volume", "inspect", &vol]);
    assert_ne!(code(&o), 0, "rm -v left {vol}");
}

/// A detached busybox that stays up, by name.
fn sleeper(s: &Server, prefix: &str) -> String {
    let n = name(prefix);
    let o = s.docker(&["run", "-d", "--name", &n, "busybox", "sleep", "300"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    n
}

#[test]
fn docker_exec_runs_in_the_container_with_its_streams_and_exit_code() {
    let s = Server::start();
    let n = sleeper(&s, "api-exec");
    // Output on both streams, kept apart (the multiplexed framing), and the exit code.
    let o = s.docker(&[
        "exec",
        &n,
        "sh",
        "-c",
        "echo out; echo err >&2; hostname; exit 7",
    ]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    let host = s.docker(&["inspect", "--format", "{{.Config.Hostname}}", &n]);
    assert_eq!(stdout(&o), format!("out\n{}", stdout(&host)));
    assert_eq!(stderr(&o), "err\n");
    // -i: the input reaches the process, and its end is the process's end of input.
    let o = s.docker_in(
        &["exec", "-i", &n, "sh", "-c", "tr a-z A-Z; echo done"],
        Some(b"hello\nworld\n"),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "HELLO\nWORLD\ndone\n");
    // -e, -w, -u.
    let o = s.docker(&[
        "exec",
        "-e",
        "V=1",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        &n,
        "sh",
        "-c",
        "echo $V $(pwd) $(id -un)",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "1 /tmp nobody\n");
    // -t: a terminal, its size set by the client.
    let o = s.docker(&[
        "exec",
        "-t",
        &n,
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo tty; exit 3",
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "tty");
    // A missing program: Docker's 127 and a message.
    let o = s.docker(&["exec", &n, "/no/such/program"]);
    assert_eq!(code(&o), 127, "{} {}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("/no/such/program"), "{}", stderr(&o));
    // -d: detached; the process runs on.
    let o = s.docker(&["exec", "-d", &n, "sh", "-c", "echo bg > /tmp/bg"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = s.docker(&["exec", &n, "cat", "/tmp/bg"]);
        if stdout(&o) == "bg\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "detached exec did not run: {}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(code(&s.docker(&["rm", "-f", &n])), 0);
    // Not running: Docker's 409 message.
    let c = name("api-exec-created");
    assert_eq!(
        code(&s.docker(&["create", "--name", &c, "busybox", "true"])),
        0
    );
    let o = s.docker(&["exec", &c, "true"]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    assert_eq!(code(&s.docker(&["rm", "-f", &c])), 0);
}

#[test]
fn docker_exec_it_under_a_terminal() {
    let s = Server::start();
    let n = sleeper(&s, "api-exec-it");
    // `script` gives the docker CLI a terminal of its own, as a user's shell would.
    let line = format!(
        "{} exec -it {n} sh -c 'stty size; read x; echo got=$x'",
        docker_cli().display()
    );
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"])
        .env("DOCKER_HOST", format!("unix://{}", s.socket().display()))
        .env("DOCKER_CONFIG", s.dir.path().join("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("script is needed (bsdutils)");
    let mut w = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let _ = w.write_all(b"abc\r");
        std::thread::sleep(Duration::from_secs(30));
    });
    let o = output_within_limit(child, "script docker exec -it", Duration::from_secs(60));
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{out} {}", stderr(&o));
    assert!(out.contains("got=abc"), "{out}");
    // The client's terminal size reached the exec's terminal (script's default is
    // not 0 0).
    assert!(!out.contains("0 0"), "{out}");
    assert_eq!(code(&s.docker(&["rm", "-f", &n])), 0);
}

#[test]
fn exec_endpoints_inspect_resize_and_refuse_bad_input() {
    let s = Server::start();
    let n = sleeper(&s, "api-exec-raw");
    let (st, body) = s.raw(
        "POST",
        &format!("/v1.41/containers/{n}/exec"),
        br#"{"Cmd":["sh","-c","exit 5"],"AttachStdout":true}"#,
    );
    assert_eq!(st, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(body.trim()).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, body) = s.raw("GET", &format!("/v1.41/exec/{id}/json"), b"");
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["Running"], false);
    assert_eq!(v["ExitCode"], serde_json::Value::Null);
    assert_eq!(v["ProcessConfig"]["entrypoint"], "sh");
    assert_eq!(v["ContainerID"].as_str().unwrap().len(), 64);
    // Without an upgrade, the output is the body; the exit code is known once it ends.
    let (st, _) = s.raw(
        "POST",
        &format!("/v1.41/exec/{id}/start"),
        br#"{"Detach":false}"#,
    );
    assert_eq!(st, 200);
    let (_, body) = s.raw("GET", &format!("/v1.41/exec/{id}/json"), b"");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["ExitCode"], 5, "{body}");
    assert!(v["Pid"].as_i64().unwrap() > 0, "{body}");
    // Started twice: 409.
    let (st, body) = s.raw("POST", &format!("/v1.41/exec/{id}/start"), b"{}");
    assert_eq!(st, 409, "{body}");
    assert!(message(&body).contains("already"), "{body}");
    // A resize of an exec without a terminal, bad sizes, unknown ids, bad bodies.
    let (st, body) = s.raw("POST", &format!("/v1.41/exec/{id}/resize?h=10&w=20"), b"");
    assert_eq!(st, 409, "{body}");
    let (st, body) = s.raw("POST", &format!("/v1.41/exec/{id}/resize?h=x&w=20"), b"");
    assert_eq!(st, 400, "{body}");
    assert!(message(&body).contains("\"x\""), "{body}");
    let (st, body) = s.raw("GET", "/v1.41/exec/nope/json", b"");
    assert_eq!(st, 404, "{body}");
    assert!(message(&body).contains("nope"), "{body}");
    for (bad, field) in [
        (&br#"{"Cmd":[]}"#[..], "No exec command"),
        (br#"{"Cmd":["true"],"Privileged":true}"#, "Privileged"),
        (br#"{"Cmd":["true"],"DetachKeys":"ctrl-x"}"#, "DetachKeys"),
        (br#"{"Cmd":"true","Tty":"yes"}"#, "Tty"),
        (br#"{"Cmd":["true"],"Bogus":1}"#, "Bogus"),
        (br#"[1"#, "invalid JSON"),
    ] {
        let (st, body) = s.raw("POST", &format!("/v1.41/containers/{n}/exec"), bad);
        assert_eq!(st, 400, "{}: {body}", String::from_utf8_lossy(bad));
        assert!(message(&body).contains(field), "{body}");
    }
    let (st, body) = s.raw(
        "POST",
        "/v1.41/containers/vessel-nope/exec",
        br#"{"Cmd":["true"]}"#,
    );
    assert_eq!(st, 404, "{body}");
    // A terminal exec, started detached, is resized while it runs.
    let (_, body) = s.raw(
        "POST",
        &format!("/v1.41/containers/{n}/exec"),
        br#"{"Cmd":["sh","-c","sleep 2; stty size > /tmp/size"],"Tty":true}"#,
    );
    let id = serde_json::from_str::<serde_json::Value>(body.trim()).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, body) = s.raw(
        "POST",
        &format!("/v1.41/exec/{id}/start"),
        br#"{"Detach":true,"Tty":true}"#,
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = s.raw("POST", &format!("/v1.41/exec/{id}/resize?h=33&w=111"), b"");
    assert_eq!(st, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = s.raw("GET", &format!("/v1.41/exec/{id}/json"), b"");
        let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
        if v["Running"] == false {
            assert_eq!(v["ExitCode"], 0, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = s.docker(&["exec", &n, "cat", "/tmp/size"]);
    assert_eq!(stdout(&o), "33 111\n");
    assert_eq!(code(&s.docker(&["rm", "-f", &n])), 0);
}

#[test]
fn docker_networks_create_inspect_run_by_name_rm_prune() {
    // A network database of its own: the prune below must not touch other tests' networks.
    let netdir = tempfile::tempdir().unwrap();
    let s = Server::start_with(&[("VESSEL_NETWORK_DIR", netdir.path())]);
    let net = name("apinet");
    let label = format!("k={net}");
    let o = s.docker(&["network", "create", "--label", &label, &net]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // vessel's network ids are 32 hex digits (Docker's 64).
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 32, "{id}");
    let o = s.docker(&["network", "create", &net]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    // Listed (with Docker's predefined ones), filtered by label, inspected by name or id.
    let o = s.docker(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    for want in [
        format!("{net} bridge"),
        "bridge bridge".into(),
        "host host".into(),
        "none null".into(),
    ] {
        assert!(
            stdout(&o).lines().any(|l| l == want),
            "{want}: {}",
            stdout(&o)
        );
    }
    let o = s.docker(&[
        "network",
        "ls",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={label}"),
    ]);
    assert_eq!(stdout(&o).trim(), id, "{}", stderr(&o));
    let o = s.docker(&[
        "network",
        "inspect",
        "--format",
        "{{.Id}} {{.Labels.k}} {{(index .IPAM.Config 0).Subnet}}",
        &id[..12],
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("{id} {net} ")),
        "{}",
        stdout(&o)
    );
    // Two containers on it: one reaches the other by name.
    let a = name("apinet-a");
    let o = s.docker(&[
        "run",
        "-d",
        "--name",
        &a,
        "--network",
        &net,
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // A container on `net` pings `target` by name.
    let pings = |net: &str, target: &str| {
        let o = s.docker(&[
            "run",
            "--rm",
            "--network",
            net,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "5",
            target,
        ]);
        assert_eq!(code(&o), 0, "{} {}", stdout(&o), stderr(&o));
    };
    pings(&net, &a);
    let o = s.docker(&[
        "network",
        "inspect",
        "--format",
        "{{range .Containers}}{{.Name}}{{end}}",
        &net,
    ]);
    assert_eq!(stdout(&o).trim(), a);
    // In use: Docker's 403, and the network stays.
    let o = s.docker(&["network", "rm", &net]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    // A second network, joined while running and left again.
    let net2 = name("apinet2");
    assert_eq!(code(&s.docker(&["network", "create", &net2])), 0);
    let alias = name("apinet-alias");
    let o = s.docker(&["network", "connect", "--alias", &alias, &net2, &a]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let nets = |c: &str| {
        let o = s.docker(&[
            "inspect",
            "--format",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            c,
        ]);
        let mut v: Vec<String> = stdout(&o).split_whitespace().map(str::to_string).collect();
        v.sort();
        v
    };
    let mut both = vec![net.clone(), net2.clone()];
    both.sort();
    assert_eq!(nets(&a), both);
    pings(&net2, &alias);
    // An address of the client's choosing (`--ip`: EndpointsConfig's IPAMConfig).
    let o = s.docker(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Subnet}}",
        &net2,
    ]);
    let base: std::net::Ipv4Addr = stdout(&o)
        .trim()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let [b0, b1, b2, _] = base.octets();
    let want = format!("{b0}.{b1}.{b2}.66");
    let o = s.docker(&[
        "run",
        "--rm",
        "--network",
        &net2,
        "--ip",
        &want,
        "busybox",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(
        stdout(&o).contains(&format!("inet {want}/")),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
    let o = s.docker(&["network", "connect", &net2, &a]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    // Fields vessel does not do are refused, and host/unknown names answered as Docker.
    for (path, body, status, what) in [
        (
            format!("/v1.41/networks/{net2}/connect"),
            format!(
                r#"{{"Container":"{a}","EndpointConfig":{{"IPAMConfig":{{"IPv6Address":"fd00::9"}}}}}}"#
            ),
            400,
            "IPv6Address",
        ),
        (
            "/v1.41/networks/host/connect".to_string(),
            format!(r#"{{"Container":"{a}"}}"#),
            400,
            "host network",
        ),
        (
            format!("/v1.41/networks/{net2}/connect"),
            r#"{"Container":"vessel-no-such-container"}"#.to_string(),
            404,
            "No such container",
        ),
        (
            "/v1.41/networks/vessel-no-such-net/connect".to_string(),
            format!(r#"{{"Container":"{a}"}}"#),
            404,
            "not found",
        ),
        (
            format!("/v1.41/networks/{net2}/connect"),
            "{}".to_string(),
            400,
            "Container",
        ),
    ] {
        let (st, answer) = s.raw("POST", &path, body.as_bytes());
        assert_eq!(st, status, "{path} {body}: {answer}");
        assert!(message(&answer).contains(what), "{path} {body}: {answer}");
    }
    let o = s.docker(&["network", "disconnect", &net2, &a]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(nets(&a), std::slice::from_ref(&net));
    let o = s.docker(&["network", "disconnect", &net2, &a]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("is not connected"), "{}", stderr(&o));
    // Both networks at create (the client sends them together since API 1.44).
    let o = s.docker(&[
        "run",
        "--rm",
        "--network",
        &net,
        "--network",
        &net2,
        "busybox",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o).split_whitespace().collect::<Vec<_>>(),
        ["eth0", "eth1", "lo"]
    );
    assert_eq!(code(&s.docker(&["rm", "-f", &a])), 0);
    assert_eq!(code(&s.docker(&["network", "rm", &net2])), 0);
    let o = s.docker(&["network", "rm", &net]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&["network", "inspect", &net]);
    assert_ne!(code(&o), 0);
    // Predefined networks cannot be removed; unknown ones are 404; bad bodies 400.
    let o = s.docker(&["network", "rm", "host"]);
    assert!(stderr(&o).contains("pre-defined"), "{}", stderr(&o));
    let (st, body) = s.raw("GET", "/v1.41/networks/vessel-no-such-net", b"");
    assert_eq!(st, 404, "{body}");
    for (bad, field) in [
        (&br#"{"Name":"x1","Driver":"overlay"}"#[..], "Driver"),
        (br#"{"Name":"x1","Internal":true}"#, "Internal"),
        (br#"{"Name":"x1","Options":{"foo":"1"}}"#, "foo"),
        (
            br#"{"Name":"x1","IPAM":{"Config":[{"Subnet":"10.77.0.0/24","Gateway":"10.77.0.9"}]}}"#,
            "Gateway",
        ),
        (br#"{"Name":"bad name"}"#, "bad name"),
        (br#"{}"#, "Name"),
    ] {
        let (st, body) = s.raw("POST", "/v1.41/networks/create", bad);
        assert_eq!(st, 400, "{}: {body}", String::from_utf8_lossy(bad));
        assert!(message(&body).contains(field), "{body}");
    }
    // Prune removes unused user networks only.
    let spare = name("apinet-spare");
    assert_eq!(code(&s.docker(&["network", "create", &spare])), 0);
    let o = s.docker(&["network", "prune", "-f"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&spare), "{}", stdout(&o));
    assert_ne!(code(&s.docker(&["network", "inspect", &spare])), 0);
}

#[test]
fn docker_attach_to_a_running_container_gets_its_output_and_exit_code() {
    let s = Server::start();
    let n = name("api-attach");
    let o = s.docker(&[
        "run",
        "-d",
        "--name",
        &n,
        "busybox",
        "sh",
        "-c",
        "sleep 2; echo late; exit 4",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&["attach", &n]);
    assert_eq!(stdout(&o), "late\n", "{}", stderr(&o));
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert_eq!(code(&s.docker(&["rm", "-f", &n])), 0);

    // `logs=1`: what it wrote so far comes first, framed (stream 1 stdout, 2 stderr),
    // then with `stream=1` what follows; a stopped container gives its logs alone.
    let frame = |stream: u8, text: &str| {
        let mut f = format!("{}\0\0\0", stream as char);
        f.extend((text.len() as u32).to_be_bytes().map(char::from));
        f + text
    };
    let upgrade = [("Upgrade", "tcp")];
    let n = name("api-attach-logs");
    let o = s.docker(&[
        "run",
        "--name",
        &n,
        "busybox",
        "sh",
        "-c",
        "echo one; echo two >&2",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let attach = |q: &str| {
        s.raw_with(
            "POST",
            &format!("/v1.41/containers/{n}/attach?{q}"),
            &upgrade,
            b"",
        )
    };
    let (st, body) = attach("logs=1&stdout=1&stderr=1");
    assert_eq!(st, 101, "{body}");
    assert_eq!(body, frame(1, "one\n") + &frame(2, "two\n"));
    let (st, body) = attach("logs=1&stream=1&stdout=1");
    assert_eq!((st, body), (101, frame(1, "one\n")));
    let (st, body) = attach("stream=1&stdout=1");
    assert_eq!(st, 409, "{body}");
    assert_eq!(code(&s.docker(&["rm", &n])), 0);
    let o = s.docker(&[
        "run",
        "-d",
        "--name",
        &n,
        "busybox",
        "sh",
        "-c",
        "echo early; sleep 2; echo late",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stdout(&s.docker(&["logs", &n])).contains("early") {
        assert!(Instant::now() < deadline, "no early output");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (st, body) = attach("logs=1&stream=1&stdout=1&stderr=1");
    assert_eq!(st, 101, "{body}");
    assert_eq!(body, frame(1, "early\n") + &frame(1, "late\n"));
    assert_eq!(code(&s.docker(&["rm", "-f", &n])), 0);
}

#[test]
fn container_terminals_take_the_console_size_and_resizes() {
    let s = Server::start();
    // `docker run -it` sends its terminal's size as ConsoleSize, then resizes.
    let line = format!(
        "stty rows 31 cols 97; {} run -it --rm busybox sh -c 'sleep 1; stty size'",
        docker_cli().display()
    );
    let o = on_a_terminal(&line)
        .env("DOCKER_HOST", format!("unix://{}", s.socket().display()))
        .env("DOCKER_CONFIG", s.dir.path().join("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .output()
        .expect("script is needed (bsdutils)");
    assert!(
        stdout(&o).contains("31 97"),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
    // Through the API: a first size, then resizes while it runs.
    let n = name("api-resize");
    let (st, body) = s.raw(
        "POST",
        &format!("/v1.41/containers/create?name={n}"),
        br#"{"Image":"busybox","Tty":true,"HostConfig":{"ConsoleSize":[40,120]},
            "Cmd":["sh","-c","while :; do s=$(stty size); [ \"$s\" = \"$l\" ] || echo size=$s; l=$s; sleep 0.1; done"]}"#,
    );
    assert_eq!(st, 201, "{body}");
    let (st, body) = s.raw("POST", &format!("/v1.41/containers/{n}/start"), b"");
    assert_eq!(st, 204, "{body}");
    let logs_show = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = stdout(&s.docker(&["logs", &n]));
            if out.contains(want) {
                return;
            }
            assert!(Instant::now() < deadline, "no {want:?} in {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    logs_show("size=40 120");
    let (st, body) = s.raw(
        "POST",
        &format!("/v1.41/containers/{n}/resize?h=33&w=111"),
        b"",
    );
    assert_eq!(st, 200, "{body}");
    logs_show("size=33 111");
    // Bad sizes and unknown containers.
    let (st, body) = s.raw(
        "POST",
        &format!("/v1.41/containers/{n}/resize?h=0&w=10"),
        b"",
    );
    assert_eq!(st, 200, "a size with a 0 is no size, as in Docker: {body}");
    for q in ["h=10", "h=x&w=1", "h=70000&w=1"] {
        let (st, body) = s.raw("POST", &format!("/v1.41/containers/{n}/resize?{q}"), b"");
        assert_eq!(st, 400, "{q}: {body}");
    }
    let (st, body) = s.raw("POST", "/v1.41/containers/vessel-nope/resize?h=1&w=1", b"");
    assert_eq!(st, 404, "{body}");
    // A console size without a terminal is moot: the docker CLI sends its terminal's
    // size with or without -t, and Docker takes it.
    let (st, body) = s.raw(
        "POST",
        "/v1.41/containers/create",
        br#"{"Image":"busybox","HostConfig":{"ConsoleSize":[40,120]}}"#,
    );
    assert_eq!(st, 201, "{body}");
    let made = serde_json::from_str::<serde_json::Value>(body.trim()).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(code(&s.docker(&["rm", &made])), 0);
    // A stopped container cannot be resized (409); one without a terminal takes it as
    // Docker does (a no-op).
    assert_eq!(code(&s.docker(&["kill", &n])), 0);
    assert_eq!(stdout(&s.docker(&["wait", &n])), "137\n");
    let (st, body) = s.raw(
        "POST",
        &format!("/v1.41/containers/{n}/resize?h=5&w=5"),
        b"",
    );
    assert_eq!(st, 409, "{body}");
    assert!(message(&body).contains("not running"), "{body}");
    assert_eq!(code(&s.docker(&["rm", "-f", &n])), 0);
    let m = sleeper(&s, "api-resize-notty");
    let (st, body) = s.raw(
        "POST",
        &format!("/v1.41/containers/{m}/resize?h=5&w=5"),
        b"",
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(code(&s.docker(&["rm", "-f", &m])), 0);
}

#[test]
fn docker_events_show_cli_and_api_lifecycles_past_and_live() {
    let s = Server::start();
    let t0 = chrono::Utc::now().timestamp() - 1;
    // An instance made by the CLI, one through the API.
    let cli = name("ev-cli");
    let o = vessel(&[
        "run", "--rm", "--name", &cli, "busybox", "sh", "-c", "exit 2",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let api = name("ev-api");
    let o = s.docker(&["run", "--name", &api, "busybox", "true"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(code(&s.docker(&["rm", &api])), 0);
    let until = (chrono::Utc::now().timestamp() + 1).to_string();
    let since = t0.to_string();
    let fmt =
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{index .Actor.Attributes \"exitCode\"}}";
    let o = s.docker(&[
        "events", "--since", &since, "--until", &until, "--format", fmt,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        format!("container create {cli} "),
        format!("container start {cli} "),
        format!("container die {cli} 2"),
        format!("container destroy {cli} "),
        format!("container create {api} "),
        format!("container die {api} 0"),
        format!("container destroy {api} "),
    ] {
        assert!(
            out.lines().any(|l| l.trim_end() == want.trim_end()),
            "{want:?} missing:\n{out}"
        );
    }
    // Filters, and the CLI's own `vessel events` over the same log.
    let o = s.docker(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        &format!("container={api}"),
        "--filter",
        "event=die",
        "--format",
        fmt,
    ]);
    assert_eq!(stdout(&o).trim(), format!("container die {api} 0"));
    let o = vessel(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        &format!("container={cli}"),
        "--format",
        "json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let actions: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["Action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        actions,
        ["create", "start", "die", "destroy"],
        "{}",
        stdout(&o)
    );
    // Live: a follower sees a volume made after it started, and nothing from before.
    let mut follow = s.docker_cmd();
    follow
        .args([
            "events",
            "--filter",
            "type=volume",
            "--format",
            "{{.Action}} {{.Actor.ID}}",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = follow.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let vol = name("ev-vol");
    assert_eq!(code(&vessel(&["volume", "create", &vol])), 0);
    assert_eq!(code(&s.docker(&["volume", "rm", &vol])), 0);
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut got = String::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
            // The whole line: a read may end inside it.
            if got.contains("destroy") && got.ends_with('\n') {
                break;
            }
        }
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, format!("create {vol}\ndestroy {vol}\n"));
    // Bad times and filters: 400 naming them.
    let (st, body) = s.raw("GET", "/v1.41/events?since=yesterday", b"");
    assert_eq!(st, 400, "{body}");
    assert!(message(&body).contains("yesterday"), "{body}");
    let (st, body) = s.raw(
        "GET",
        "/v1.41/events?until=1&filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
        b"",
    );
    assert_eq!(st, 400, "{body}");
    assert!(message(&body).contains("bogus"), "{body}");
}

#[test]
fn docker_login_checks_credentials_and_pulls_send_them() {
    let s = Server::start();
    let reg = registry::Registry::start(Some(("carol", "pa55")));
    let target = format!("{}/api-login/busybox:v1", reg.host);
    ok(&["tag", "busybox", &target]);
    ok(&[
        "push",
        "-q",
        "--username",
        "carol",
        "--password",
        "pa55",
        &target,
    ]);
    ok(&["rmi", &target]);
    // docker login asks the server (POST /auth): a wrong password is refused.
    let o = s.docker_in(
        &["login", &reg.host, "-u", "carol", "--password-stdin"],
        Some(b"nope\n"),
    );
    assert_ne!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("incorrect username or password"),
        "{}",
        stderr(&o)
    );
    // Anonymous: the registry refuses the pull.
    assert_ne!(code(&s.docker(&["pull", &target])), 0);
    let o = s.docker_in(
        &["login", &reg.host, "-u", "carol", "--password-stdin"],
        Some(b"pa55\n"),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("Login Succeeded"), "{}", stdout(&o));
    // The CLI sends its login with the pull (X-Registry-Auth).
    let o = s.docker(&["pull", &target]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    ok(&["rmi", &target]);
    // A header that is not base64 JSON: 400.
    let (st, body) = s.raw_with(
        "POST",
        &format!(
            "/v1.41/images/create?fromImage={}/api-login/busybox&tag=v1",
            reg.host
        ),
        &[("X-Registry-Auth", "%%%")],
        b"",
    );
    assert_eq!(st, 400, "{body}");
    // A platform vessel does not run: 400, not ignored.
    let (st, body) = s.raw(
        "POST",
        &format!(
            "/v1.41/images/create?fromImage={}/api-login/busybox&tag=v1&platform=linux/arm64",
            reg.host
        ),
        b"",
    );
    assert_eq!(st, 400, "{body}");
    assert!(message(&body).contains("linux/amd64"), "{body}");
}

/// Debian's docker-compose (1.29, on docker-py); without it this test fails and says why.
fn compose_cli() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("docker-compose"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("docker-compose is needed for the Compose test: apt-get install docker-compose (./x setup installs it)")
        })
}

/// Compose brings up a two-service project through the API: a web server with a
/// published port and a bind-mounted page, and a client that fetches the page by the
/// service's name (a network alias); `ps` and `logs` show them; `down` leaves nothing.
#[test]
fn compose_up_ps_logs_down_a_two_service_project() {
    let s = Server::start();
    let project = name("cmp").replace('-', "");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    std::fs::write(dir.path().join("site/index.html"), "hello from compose\n").unwrap();
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        format!(
            r#"version: "3.8"
services:
  web:
    image: busybox
    command: httpd -f -p 8080 -h /www
    volumes:
      - ./site:/www:ro
    ports:
      - "{port}:8080"
  client:
    image: busybox
    command: sh -c 'for i in $$(seq 1 30); do wget -qO- http://web:8080/ && exit 0; sleep 1; done; exit 1'
    depends_on:
      - web
"#
        ),
    )
    .unwrap();
    let compose = |args: &[&str]| -> Output {
        let mut c = Command::new(compose_cli());
        c.current_dir(dir.path())
            .args(["-p", &project])
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", s.socket().display()))
            .env("DOCKER_CONFIG", s.dir.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("COMPOSE_PROJECT_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().expect("run docker-compose");
        output_within_limit(
            child,
            &format!("docker-compose {args:?}"),
            Duration::from_secs(180),
        )
    };
    let o = compose(&["up", "-d"]);
    assert_eq!(code(&o), 0, "up: {}", stderr(&o));
    let (web, client) = (format!("{project}_web_1"), format!("{project}_client_1"));
    // The client found the web server by its service name.
    let o = s.docker(&["wait", &client]);
    assert_eq!(stdout(&o).trim(), "0", "the client's exit: {}", stderr(&o));
    let o = compose(&["logs", "--no-color", "client"]);
    assert!(
        stdout(&o).contains("hello from compose"),
        "logs: {}",
        stdout(&o)
    );
    // The published port and the bind-mounted page.
    let page = http_get(port, Duration::from_secs(20));
    assert!(page.contains("hello from compose"), "{page}");
    // ps: each service once, the server up.
    let o = compose(&["ps"]);
    let text = stdout(&o);
    assert_eq!(text.matches(&web).count(), 1, "ps: {text}");
    assert_eq!(text.matches(&client).count(), 1, "ps: {text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&web) && l.contains(" Up ")),
        "ps: {text}"
    );
    let ids: Vec<String> = [&web, &client]
        .iter()
        .map(|n| {
            stdout(&s.docker(&["inspect", "--format", "{{.Id}}", n]))
                .trim()
                .to_string()
        })
        .collect();
    let o = compose(&["down"]);
    assert_eq!(code(&o), 0, "down: {}", stderr(&o));
    let label = format!("label=com.docker.compose.project={project}");
    let o = s.docker(&["ps", "-aq", "--filter", &label]);
    assert_eq!(stdout(&o).trim(), "", "containers left");
    let o = s.docker(&["network", "ls", "-q", "--filter", &label]);
    assert_eq!(stdout(&o).trim(), "", "networks left");
    for id in &ids {
        assert_no_leftovers(id);
    }
}

/// `deploy/vessel.service`'s command under socket activation as systemd runs it (the
/// listening socket as descriptor 3, `LISTEN_PID`, `LISTEN_FDS`): the docker CLI is
/// served on that socket, which stays when the server stops (its unit owns it). Without
/// a socket passed, `-H fd://` is refused, and so is a second socket.
#[test]
fn serve_takes_the_socket_systemd_passes() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let unit = std::fs::read_to_string(deploy.join("vessel.service")).unwrap();
    let exec: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= in deploy/vessel.service")
        .split_whitespace()
        .collect();
    assert_eq!(exec[1..], ["serve", "-H", "fd://"], "{unit}");
    let socket_unit = std::fs::read_to_string(deploy.join("vessel.socket")).unwrap();
    assert!(
        socket_unit.contains("\nListenStream=/run/vessel.sock\n"),
        "{socket_unit}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // `vessel --root R serve -H fd://` with descriptor 3 the listener, LISTEN_PID its own
    // pid (the shell's, which execs it), as systemd starts a socket-activated service.
    let spawn = |fds: &str| {
        let fd = listener.as_raw_fd();
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("LISTEN_PID=$$ LISTEN_FDS={fds} exec \"$@\""))
            .arg("sh")
            .arg(vessel_bin())
            .arg("--root")
            .arg(root())
            .args(&exec[1..])
            .env(
                "VESSEL_INIT",
                Path::new(vessel_bin()).with_file_name("vessel-init"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: dup2 and fcntl are async-signal-safe; the child only moves the listener
        // to descriptor 3, without close-on-exec, before it execs.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c.spawn().expect("start vessel serve -H fd://")
    };
    let mut server = spawn("1");
    let docker = |args: &[&str]| -> Output {
        let child = Command::new(docker_cli())
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", path.display()))
            .env("DOCKER_CONFIG", dir.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        output_within_limit(child, &format!("docker {args:?}"), Duration::from_secs(60))
    };
    let o = docker(&["run", "--rm", "busybox", "echo", "activated"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "activated\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = server.wait().unwrap();
    assert!(st.success(), "vessel serve -H fd:// on SIGTERM: {st:?}");
    assert!(path.exists(), "the unit's socket was removed by the server");

    // A second socket, or none at all (LISTEN_PID not this process's), is refused.
    let o = output_within_limit(
        spawn("2"),
        "serve with two sockets",
        Duration::from_secs(20),
    );
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("exactly one socket"), "{}", stderr(&o));
    let o = vessel(&["serve", "-H", "fd://"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("no socket"), "{}", stderr(&o));
    let o = vessel(&["serve", "-H", "fd://", "--group", "root"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("SocketGroup"), "{}", stderr(&o));
}

/// Images through the docker CLI: `history`, `save | load` (a tar streamed both ways),
/// `push` to the local registry with the login the CLI sends, `image prune` and
/// `container prune`.
#[test]
fn docker_save_load_history_push_and_prune() {
    let _prune = CONTAINER_PRUNE.write().unwrap_or_else(|e| e.into_inner());
    let s = Server::start_pruning();
    // history: the image's own step first.
    let o = s.docker(&["history", "--no-trunc", "-q", "busybox"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = stdout(&s.docker(&["image", "inspect", "--format", "{{.Id}}", "busybox"]));
    assert_eq!(stdout(&o).lines().next(), Some(id.trim()), "{}", stdout(&o));

    // save to a file, remove, load it back.
    let tag = format!("{}:v1", name("apisave"));
    assert_eq!(code(&s.docker(&["tag", "busybox", &tag])), 0);
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("saved.tar");
    let o = s.docker(&["save", "-o", tar.to_str().unwrap(), &tag]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("manifest.json"),
        "not a docker-archive: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert_eq!(code(&s.docker(&["rmi", &tag])), 0);
    let o = s.docker(&["load", "-i", tar.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("Loaded image: {tag}")),
        "{}",
        stdout(&o)
    );
    assert_eq!(code(&s.docker(&["image", "inspect", &tag])), 0);
    // A body that is not an archive: an error naming it, and nothing loaded.
    let o = s.docker_in(&["load"], Some(b"not a tar at all"));
    assert_ne!(code(&o), 0, "{}", stdout(&o));
    // An unknown image: 404 before any byte.
    let (st, _) = s.raw("GET", "/v1.41/images/get?names=vessel-no-such:image", b"");
    assert_eq!(st, 404);

    // push to a registry that wants a login: refused without, done with it.
    let reg = registry::Registry::start(Some(("dave", "s3cret")));
    let target = format!("{}/api-push/busybox:v2", reg.host);
    assert_eq!(code(&s.docker(&["tag", "busybox", &target])), 0);
    let o = s.docker(&["push", &target]);
    assert_ne!(code(&o), 0, "a push without a login: {}", stdout(&o));
    let o = s.docker_in(
        &["login", &reg.host, "-u", "dave", "--password-stdin"],
        Some(b"s3cret\n"),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&["push", &target]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("digest: sha256:"), "{}", stdout(&o));
    assert_eq!(code(&s.docker(&["rmi", &target])), 0);
    let o = s.docker(&["pull", &target]);
    assert_eq!(code(&o), 0, "pull back what was pushed: {}", stderr(&o));
    assert_eq!(code(&s.docker(&["rmi", &target, &tag])), 0);

    // container prune: a stopped instance goes, a running one stays.
    let done = name("apiprune");
    assert_eq!(
        code(&s.docker(&["run", "--name", &done, "busybox", "true"])),
        0
    );
    let up = sleeper(&s, "apiprune-up");
    let o = s.docker(&["container", "prune", "-f"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_ne!(
        code(&s.docker(&["inspect", &done])),
        0,
        "a stopped instance stayed"
    );
    assert_eq!(
        code(&s.docker(&["inspect", &up])),
        0,
        "a running instance went"
    );
    assert_eq!(code(&s.docker(&["rm", "-f", &up])), 0);
    // image prune: dangling only by default; a filter it does not know is refused.
    let o = s.docker(&["image", "prune", "-f"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(code(&s.docker(&["image", "inspect", "busybox"])), 0);
    let (st, body) = s.raw(
        "POST",
        "/v1.41/containers/prune?filters=%7B%22until%22%3A%5B%2210m%22%5D%7D",
        b"",
    );
    assert_eq!(st, 400, "{body}");
}

/// `docker stats --no-stream` (one sample a second after another, so CPU % is real) and
/// the stream's JSON; `docker update` of limits and restart policy while it runs, shown by
/// inspect and enforced in its cgroup; fields vessel lacks are refused by name.
#[test]
fn docker_stats_and_update_a_running_container() {
    let s = Server::start();
    let n = name("apistats");
    let o = s.docker(&[
        "run",
        "-d",
        "--name",
        &n,
        "busybox",
        "sh",
        "-c",
        "while true; do :; done",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}",
        &n,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let row = stdout(&o);
    let f: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(f[0], n, "{row}");
    let cpu: f64 = f[1].trim_end_matches('%').parse().unwrap();
    assert!(cpu > 20.0, "a busy loop uses a CPU: {row}");
    assert!(f[2].ends_with("B") && f.last() == Some(&"1"), "{row}");
    // The raw answer of one-shot: Docker's StatsJSON.
    let id = stdout(&s.docker(&["inspect", "--format", "{{.Id}}", &n]));
    let (st, body) = s.raw(
        "GET",
        &format!(
            "/v1.41/containers/{}/stats?stream=false&one-shot=true",
            id.trim()
        ),
        b"",
    );
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["cpu_stats"]["cpu_usage"]["total_usage"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["memory_stats"]["usage"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["name"], format!("/{n}"));

    let o = s.docker(&[
        "update",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "--restart",
        "on-failure:2",
        &n,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
        &n,
    ]);
    assert_eq!(
        stdout(&o).trim(),
        "67108864 50 on-failure:2",
        "{}",
        stderr(&o)
    );
    let o = s.docker(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &n]);
    assert!(
        stdout(&o).contains("/ 64MiB"),
        "the new limit: {}",
        stdout(&o)
    );
    // ps shows a paused instance as paused, and filters by it.
    assert_eq!(code(&s.docker(&["pause", &n])), 0);
    let o = s.docker(&[
        "ps",
        "--filter",
        "status=paused",
        "--format",
        "{{.Names}} {{.State}} {{.Status}}",
    ]);
    let line = stdout(&o);
    assert!(
        line.starts_with(&format!("{n} paused Up ")) && line.trim_end().ends_with("(Paused)"),
        "{line}"
    );
    let o = s.docker(&["ps", "--filter", "status=running", "--format", "{{.Names}}"]);
    assert!(
        !stdout(&o).contains(&n),
        "a paused instance listed as running"
    );
    assert_eq!(code(&s.docker(&["unpause", &n])), 0);
    // A field vessel does not have: refused by name.
    let o = s.docker(&["update", "--blkio-weight", "300", &n]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("BlkioWeight"), "{}", stderr(&o));
    assert_eq!(code(&s.docker(&["rm", "-f", &n])), 0);
    // A removed instance has no stats: 404.
    let (st, _) = s.raw(
        "GET",
        &format!("/v1.41/containers/{n}/stats?stream=false"),
        b"",
    );
    assert_eq!(st, 404, "a removed instance");
}

/// The README's table of endpoints is true: every endpoint it lists is routed (answered
/// by its handler, which here refuses a bad body, a filter it does not know, or an object
/// that does not exist), neither "page not found" nor 501. Requests are made so that
/// none changes anything.
#[test]
fn every_endpoint_in_the_readme_table_is_served() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("Supported endpoints")
        .expect("the README's endpoint table");
    let table: Vec<&str> = readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(table.len() > 10, "the table: {table:?}");
    let mut endpoints: Vec<(String, String)> = Vec::new();
    for row in table {
        let cell = row.split('|').nth(1).unwrap();
        // Query parameters are in parentheses: not endpoints.
        let mut plain = String::new();
        let mut depth = 0;
        for ch in cell.chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                c if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        let mut last: Option<(String, String)> = None;
        for token in plain.split('`').skip(1).step_by(2) {
            if let Some((methods, path)) = token.split_once(' ') {
                for m in methods.split('/') {
                    endpoints.push((m.to_string(), path.to_string()));
                }
                last = Some((
                    methods.split('/').next().unwrap().to_string(),
                    path.to_string(),
                ));
            } else if let Some((m, path)) = &last {
                // `stop` after `POST /containers/{id}/start`: the same with the last part.
                let base = path.rsplit_once('/').unwrap().0;
                endpoints.push((m.clone(), format!("{base}/{token}")));
            }
        }
    }
    assert!(endpoints.len() > 40, "{endpoints:?}");
    let s = Server::start();
    for (method, path) in &endpoints {
        let path = path
            .replace("{id}", "vessel-no-such-object")
            .replace("{name}", "vessel-no-such-object");
        // A filter no endpoint knows, and a body no endpoint takes: refused before any
        // change (prunes, creates, loads).
        let url = format!("/v1.41{path}?filters=%7B%22vessel-bogus%22%3A%5B%22x%22%5D%7D");
        let (st, body) = s.raw(method, &url, b"[]");
        assert_ne!(st, 501, "{method} {path}: {body}");
        assert!(
            !(st == 404 && message(&body).starts_with("page not found")),
            "{method} {path} is in the README's table but not routed: {body}"
        );
        assert!(st < 500, "{method} {path}: {st} {body}");
    }
}

#[test]
fn docker_run_publish_all_and_health_checks_through_the_api() {
    let s = Server::start();
    let n = name("api-health");
    let o = s.docker(&[
        "run",
        "-d",
        "--name",
        &n,
        "-P",
        "--expose",
        "80",
        "-p",
        "81",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "300ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Random host ports for -P's exposed port and -p without a host port.
    let o = s.docker(&["port", &n]);
    let ports = stdout(&o);
    assert!(ports.contains("80/tcp -> 0.0.0.0:"), "{ports}");
    assert!(ports.contains("81/tcp -> 0.0.0.0:"), "{ports}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = |s: &Server| {
        stdout(&s.docker(&["inspect", "-f", "{{.State.Health.Status}}", &n]))
            .trim()
            .to_string()
    };
    while status(&s) != "unhealthy" {
        assert!(std::time::Instant::now() < deadline, "never unhealthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(code(&s.docker(&["exec", &n, "touch", "/tmp/ok"])), 0);
    while status(&s) != "healthy" {
        assert!(std::time::Instant::now() < deadline, "never healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = s.docker(&[
        "ps",
        "-s",
        "--filter",
        &format!("name={n}"),
        "--format",
        "{{.Size}}",
    ]);
    assert!(stdout(&o).contains("(virtual "), "{}", stdout(&o));
    let o = s.docker(&[
        "ps",
        "--filter",
        "health=healthy",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    let ps = stdout(&o);
    assert!(ps.contains(&n) && ps.contains("(healthy)"), "{ps}");
    let o = s.docker(&[
        "inspect",
        "-f",
        "{{json .Config.Healthcheck}} {{.HostConfig.PublishAllPorts}}",
        &n,
    ]);
    let doc = stdout(&o);
    assert!(
        doc.contains(r#""Test":["CMD-SHELL","test -f /tmp/ok"]"#) && doc.contains("true"),
        "{doc}"
    );
    // docker commit: the container's change and a --change, in a runnable image.
    let image = format!("{}:c1", n.to_lowercase());
    let o = s.docker(&[
        "commit",
        "-m",
        "via the API",
        "-c",
        r#"CMD ["cat", "/tmp/ok.txt"]"#,
        &n,
        &image,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        code(&s.docker(&["exec", &n, "sh", "-c", "echo committed > /tmp/ok.txt"])),
        0
    );
    let o = s.docker(&["run", "--rm", "--network", "none", &image]);
    assert_ne!(
        code(&o),
        0,
        "the file was written after the commit: {}",
        stdout(&o)
    );
    let o = s.docker(&["commit", &n, &image]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "cat",
        "/tmp/ok.txt",
    ]);
    assert_eq!(stdout(&o), "committed\n", "{}", stderr(&o));
    let id = id_of(&n);
    assert_eq!(code(&s.docker(&["rm", "-f", &n])), 0);
    assert_no_leftovers(&id);
    assert_eq!(code(&s.docker(&["rmi", &image])), 0);
}

#[test]
fn docker_cp_and_export_through_the_api_running_or_stopped() {
    let s = Server::start();
    let n = sleeper(&s, "api-cp");
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    std::fs::create_dir(h.join("site")).unwrap();
    std::fs::write(h.join("site/index.html"), "hello\n").unwrap();
    // Into a running container, a directory; back out, a file and a tar stream.
    assert_eq!(code(&s.docker(&["exec", &n, "mkdir", "-p", "/srv"])), 0);
    let o = s.docker(&["cp", h.join("site").to_str().unwrap(), &format!("{n}:/srv")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&["exec", &n, "cat", "/srv/site/index.html"]);
    assert_eq!(stdout(&o), "hello\n", "{}", stderr(&o));
    let back = h.join("back.html");
    let o = s.docker(&[
        "cp",
        &format!("{n}:/srv/site/index.html"),
        back.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "hello\n");
    // A stopped one: copies both ways, and export holds what it made.
    assert_eq!(code(&s.docker(&["stop", "-t", "1", &n])), 0);
    let o = s.docker(&[
        "cp",
        h.join("back.html").to_str().unwrap(),
        &format!("{n}:/srv/again.html"),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = s.docker(&["cp", &format!("{n}:/srv/again.html"), "-"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut a = tar::Archive::new(o.stdout.as_slice());
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["again.html"]);
    let tarball = h.join("fs.tar");
    let o = s.docker(&["export", "-o", tarball.to_str().unwrap(), &n]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut a = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
    let found = a
        .entries()
        .unwrap()
        .any(|e| e.unwrap().path().unwrap().to_str() == Some("srv/site/index.html"));
    assert!(found, "export lacks srv/site/index.html");
    // Docker's errors: a missing path, a missing container, -a refused.
    let o = s.docker(&["cp", &format!("{n}:/no/such"), h.to_str().unwrap()]);
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).contains("Could not find the file /no/such"),
        "{}",
        stderr(&o)
    );
    let o = s.docker(&["cp", "vessel-no-such:/etc", h.to_str().unwrap()]);
    assert!(stderr(&o).contains("No such container"), "{}", stderr(&o));
    let o = s.docker(&["cp", "-a", back.to_str().unwrap(), &format!("{n}:/srv/")]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("copyUIDGID"), "{}", stderr(&o));
    assert_eq!(code(&s.docker(&["rm", &n])), 0);
}
