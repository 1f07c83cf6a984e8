//! containerd 1.6 (Debian's) driving vessel-runc through its stock
//! `io.containerd.runc.v2` shim: `ctr run --runc-binary` sets the runc option
//! `BinaryName`, the same one a `[...runtimes.vessel.options] BinaryName = ...` entry
//! of containerd's config sets. The daemon runs with its own root, state, socket and
//! config under a temporary directory; the image is a docker archive the test builds
//! from a busybox rootfs (no network). Whatever ran must leave nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A containerd daemon of this test, killed (by its pid) when dropped.
struct Containerd {
    dir: PathBuf,
    child: Child,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const NS: &str = "vessel-test";

impl Containerd {
    fn start() -> Containerd {
        for bin in [
            "/usr/bin/containerd",
            "/usr/bin/ctr",
            "/usr/bin/containerd-shim-runc-v2",
        ] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: apt-get install containerd (./x setup installs it)"
            );
        }
        let dir = work().join("containerd");
        std::fs::create_dir_all(&dir).unwrap();
        // Hybrid hosts: containerd 1.6 treats them as cgroup v1, which vessel-runc
        // handles (the v1 controllers, plus the cgroup2 `unified` mount).
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
"#,
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { dir, child };
        eventually("containerd to serve", || {
            c.ctr(&["version"]).status.success()
        });
        c
    }

    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("/usr/bin/ctr");
        cmd.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", NS])
            .args(args);
        cmd
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        output_within(
            self.ctr_cmd(args).stdin(Stdio::null()),
            &format!("ctr {args:?}"),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A docker archive of the busybox rootfs, tagged `docker.io/library/vessel-busybox:test`.
fn image_archive() -> PathBuf {
    let d = work().join("image");
    std::fs::create_dir_all(&d).unwrap();
    let layer = d.join("layer.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(rootfs())
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer))]}
    });
    let cfg_tmp = d.join("config.tmp");
    std::fs::write(&cfg_tmp, config.to_string()).unwrap();
    let cfg_name = format!("{}.json", sha256(&cfg_tmp));
    std::fs::rename(&cfg_tmp, d.join(&cfg_name)).unwrap();
    let manifest = serde_json::json!([{
        "Config": cfg_name,
        "RepoTags": ["docker.io/library/vessel-busybox:test"],
        "Layers": ["layer.tar"]
    }]);
    std::fs::write(d.join("manifest.json"), manifest.to_string()).unwrap();
    let archive = work().join("image.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&d)
        .arg("-cf")
        .arg(&archive)
        .args(["manifest.json", &cfg_name, "layer.tar"])
        .status()
        .unwrap();
    assert!(st.success());
    archive
}

const IMAGE: &str = "docker.io/library/vessel-busybox:test";

/// Processes whose command line mentions `needle` (besides this test).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            v.push(format!("{pid}: {cmd}"));
        }
    }
    v
}

#[test]
fn containerd_runs_containers_with_vessel_runc() {
    let c = Containerd::start();
    let o = c.ctr(&["images", "import", image_archive().to_str().unwrap()]);
    assert!(
        o.status.success(),
        "import: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let runc_root = c.dir.join("vessel-runc-state");
    let fifos = c.dir.join("fifo");
    let fifo_dir = fifos.to_str().unwrap();
    let bin = vessel_runc();
    let runtime = [
        "--fifo-dir",
        fifo_dir,
        "--runtime",
        "io.containerd.runc.v2",
        "--runc-binary",
        bin.to_str().unwrap(),
        "--runc-root",
        runc_root.to_str().unwrap(),
    ];

    // run --rm: output and exit code.
    let mut args = vec!["run", "--rm"];
    args.extend(runtime);
    args.extend([
        IMAGE,
        "vt-once",
        "sh",
        "-c",
        "echo hello-from-vessel; cat /proc/self/cgroup | grep -c memory; exit 5",
    ]);
    let o = c.ctr(&args);
    assert_eq!(
        o.status.code(),
        Some(5),
        "ctr run: {}\ncontainerd log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        c.log()
    );
    assert_eq!(out(&o), "hello-from-vessel\n1\n");

    // A detached task: exec, ps, metrics, kill.
    let mut args = vec!["run", "-d"];
    args.extend(runtime);
    args.extend([IMAGE, "vt-long", "sleep", "1000"]);
    let o = c.ctr(&args);
    assert!(
        o.status.success(),
        "ctr run -d: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        c.log()
    );
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(runc_root.join(NS).join("vt-long").join("state.json"))
            .expect("vessel-runc keeps its state under --runc-root: containerd used it"),
    )
    .unwrap();
    let init_pid = state["pid"].as_i64().unwrap();
    // The init's parent is the shim (a subreaper), not a vessel process.
    let stat = std::fs::read_to_string(format!("/proc/{init_pid}/stat")).unwrap();
    let ppid = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let parent = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&parent).starts_with("/usr/bin/containerd-shim-runc-v2"),
        "the init's parent is {:?}",
        String::from_utf8_lossy(&parent)
    );

    let o = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "vt-long",
        "sh",
        "-c",
        "echo exec-out; exit 3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "exec: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(out(&o), "exec-out\n");
    let o = c.ctr(&["task", "ps", "vt-long"]);
    assert!(
        out(&o).contains(&init_pid.to_string()),
        "task ps: {}",
        out(&o)
    );
    let o = c.ctr(&["task", "metrics", "vt-long"]);
    assert!(
        o.status.success() && out(&o).contains("memory"),
        "metrics: {}{}",
        out(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = c.ctr(&["task", "pause", "vt-long"]);
    assert!(
        o.status.success(),
        "pause: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out(&c.ctr(&["task", "ls"])).contains("PAUSED"));
    assert!(c.ctr(&["task", "resume", "vt-long"]).status.success());
    let o = c.ctr(&["task", "kill", "--signal", "SIGKILL", "vt-long"]);
    assert!(
        o.status.success(),
        "kill: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eventually("the task to stop", || {
        out(&c.ctr(&["task", "ls"])).contains("STOPPED")
    });
    assert!(c.ctr(&["task", "rm", "vt-long"]).status.success());
    assert!(c.ctr(&["containers", "rm", "vt-long"]).status.success());

    // Errors of the runtime reach ctr through the --log file.
    let mut args = vec!["run", "--rm"];
    args.extend(runtime);
    args.extend([IMAGE, "vt-bad", "/no/such/program"]);
    let o = c.ctr(&args);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/no/such/program"), "ctr says: {err}");
    let _ = c.ctr(&["containers", "rm", "vt-bad"]);

    // Nothing left behind: processes, mounts, cgroups, runtime state.
    std::thread::sleep(Duration::from_millis(200));
    for id in ["vt-once", "vt-long", "vt-bad"] {
        let procs = processes_mentioning(id);
        assert!(procs.is_empty(), "left running: {procs:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(id), "mounts left: {mounts}");
        for ctrl in ["memory", "pids", "cpu", "freezer", "devices", "unified"] {
            let cg = Path::new("/sys/fs/cgroup").join(ctrl).join(NS).join(id);
            assert!(!cg.exists(), "cgroup left: {}", cg.display());
        }
        assert!(!runc_root.join(NS).join(id).exists(), "state of {id} left");
    }
    assert!(processes_mentioning("containerd-shim-runc-v2 -namespace vessel-test").is_empty());
    let dir = c.dir.clone();
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
    for ctrl in [
        "memory",
        "pids",
        "cpu",
        "freezer",
        "devices",
        "blkio",
        "cpuset",
        "cpuacct",
        "unified",
        "hugetlb",
        "net_cls",
        "perf_event",
        "systemd",
    ] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(ctrl).join(NS));
    }
}
