//! Helpers for the root-only end-to-end tests: busybox bundles, pipes, a guard that
//! force-deletes the container (and reaps its init) even when a test fails.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use vessel_container::spec::{docker_default, SpecOptions};
use vessel_container::{CreateOptions, Runtime, State, Stdio};

/// Fail loudly (never skip) when not root: these tests need namespaces and cgroups.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "vessel-container integration tests must run as root (they create namespaces, \
         cgroups and mounts); run `cargo test -p vessel-container` as root"
    );
    assert!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox is required (apt-get install busybox-static)"
    );
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique container id for this test process.
pub fn unique_id(name: &str) -> String {
    format!(
        "t-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A scratch directory removed on drop (unmounting nothing: the runtime leaks no mount).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique_id(name));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Populate `root` with busybox and a symlink per applet, plus the usual empty dirs.
pub fn busybox_rootfs(root: &Path) {
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(out.stdout).unwrap().lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", root.join("bin").join(applet));
        }
    }
}

/// A bundle dir: `rootfs/` with busybox and `config.json` from `opts`.
pub struct Bundle {
    pub dir: TempDir,
    pub spec: Spec,
}

impl Bundle {
    pub fn new(name: &str, args: &[&str], tweak: impl FnOnce(&mut SpecOptions)) -> Bundle {
        let dir = TempDir::new(name);
        busybox_rootfs(&dir.path().join("rootfs"));
        let mut opts = SpecOptions {
            args: args.iter().map(|s| s.to_string()).collect(),
            hostname: Some("vessel-test".into()),
            ..Default::default()
        };
        tweak(&mut opts);
        let spec = docker_default(&opts);
        spec.save(dir.path().join("config.json")).unwrap();
        Bundle { dir, spec }
    }

    /// Rewrite config.json after editing `spec`.
    pub fn save(&self) {
        self.spec.save(self.dir.path().join("config.json")).unwrap();
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
}

/// Deletes the container with force and reaps its init when dropped.
pub struct Guard {
    pub rt: Runtime,
    pub id: String,
    pub pid: Option<Pid>,
    _state_root: TempDir,
}

impl Guard {
    pub fn new(name: &str) -> Guard {
        let state_root = TempDir::new(&format!("{name}-state"));
        Guard {
            rt: Runtime::new(state_root.path().join("runtime")),
            id: unique_id(name),
            pid: None,
            _state_root: state_root,
        }
    }

    pub fn create(&mut self, bundle: &Bundle, stdio: Stdio) -> vessel_container::Result<State> {
        let st = self.rt.create(
            &self.id,
            bundle.dir.path(),
            CreateOptions {
                stdio,
                ..Default::default()
            },
        )?;
        self.pid = st.pid.map(Pid::from_raw);
        Ok(st)
    }

    /// Wait for the init to exit; returns the shell-style exit code (128+signal).
    pub fn wait(&mut self) -> i32 {
        let pid = self.pid.take().expect("no init to wait for");
        wait_code(pid)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.rt.delete(&self.id, true) {
            eprintln!("guard: delete {} failed: {e}", self.id);
        }
        if let Some(pid) = self.pid.take() {
            let _ = waitpid(pid, None);
        }
    }
}

/// waitpid and convert to an exit code like a shell does.
pub fn wait_code(pid: Pid) -> i32 {
    match waitpid(pid, None).unwrap() {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        other => panic!("unexpected wait status {other:?}"),
    }
}

/// Pipes for the three stdio streams; the read ends stay with the test.
pub struct Pipes {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

pub fn pipes() -> (Stdio, Pipes) {
    let (in_r, in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    drop(in_w); // stdin at EOF
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (
        Stdio::Fds {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        },
        Pipes {
            stdout: out_r,
            stderr: err_r,
        },
    )
}

pub fn read_all(fd: OwnedFd) -> String {
    let mut f = fs::File::from(fd);
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

/// Result of running a container to completion.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// create + start + wait, collecting output.
pub fn run(g: &mut Guard, bundle: &Bundle) -> Output {
    let (stdio, p) = pipes();
    g.create(bundle, stdio).unwrap();
    g.rt.start(&g.id).unwrap();
    // Read both pipes to EOF on threads so a full pipe cannot block the container.
    let out = std::thread::spawn(move || read_all(p.stdout));
    let err = std::thread::spawn(move || read_all(p.stderr));
    let code = g.wait();
    Output {
        code,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Host directories of the cgroups `pid` belongs to, from /proc/<pid>/cgroup, for every
/// v1 controller hierarchy and the v2 one.
pub fn cgroup_dirs_of(pid: Pid) -> Vec<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut mountpoints: HashMap<String, PathBuf> = HashMap::new();
    for line in mounts.lines() {
        let (pre, post) = line.split_once(" - ").unwrap();
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        match post[0] {
            "cgroup2" => {
                mountpoints.insert(String::new(), PathBuf::from(pre[4]));
            }
            "cgroup" => {
                let ctrls: Vec<&str> = post[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("name="))
                    .collect();
                if !ctrls.is_empty() {
                    mountpoints.insert(ctrls.join(","), PathBuf::from(pre[4]));
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        if let Some(mp) = mountpoints.get(ctrls) {
            out.push(mp.join(path.trim_start_matches('/')));
        }
    }
    out
}
