//! Helpers shared by the end-to-end tests of vessel-runc: bundles over a busybox rootfs,
//! and running a runtime binary with a time limit.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn vessel_runc() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vessel-runc"))
}

/// Debian's runc, the reference. Missing means the test cannot run: it fails, saying so.
pub fn runc() -> PathBuf {
    let p = PathBuf::from("/usr/sbin/runc");
    assert!(
        p.exists(),
        "the conformance tests compare with Debian's runc: apt-get install runc"
    );
    p
}

/// A directory for the whole test binary, removed by nobody (under the temp dir).
pub fn work() -> &'static Path {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests create containers: run them as root"
        );
        let d = std::env::temp_dir().join(format!("vessel-runc-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// A busybox root filesystem shared (read-only) by every bundle of the test binary.
pub fn rootfs() -> &'static Path {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let dir = work().join("rootfs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs");
        let st = Command::new(&script)
            .arg(&dir)
            .status()
            .expect("run scripts/busybox-rootfs");
        assert!(
            st.success(),
            "scripts/busybox-rootfs failed: apt-get install busybox-static"
        );
        dir
    })
}

/// runc's default spec (`runc spec`), with the shared rootfs (read-only) and no terminal.
pub fn base_spec() -> serde_json::Value {
    static S: OnceLock<serde_json::Value> = OnceLock::new();
    S.get_or_init(|| {
        let d = work().join("spec");
        std::fs::create_dir_all(&d).unwrap();
        let _ = std::fs::remove_file(d.join("config.json"));
        let st = Command::new(runc())
            .arg("spec")
            .current_dir(&d)
            .status()
            .unwrap();
        assert!(st.success(), "runc spec failed");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
        v["root"] = serde_json::json!({"path": rootfs(), "readonly": true});
        v["process"]["terminal"] = false.into();
        v
    })
    .clone()
}

/// A unique container id.
pub fn id(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "vrt-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bundle directory holding `spec` as config.json.
pub fn bundle(spec: &serde_json::Value) -> PathBuf {
    let d = work().join(id("bundle"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("config.json"),
        serde_json::to_vec_pretty(spec).unwrap(),
    )
    .unwrap();
    d
}

/// One runtime binary with its own state directory.
pub struct Runtime {
    pub name: &'static str,
    pub bin: PathBuf,
    pub root: PathBuf,
}

impl Runtime {
    /// `bin --root <its root> args...`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    /// Run to completion (stdin closed, output captured), within 60 s.
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(
            self.cmd(args).stdin(Stdio::null()),
            &format!("{} {args:?}", self.name),
        )
    }
}

/// vessel-runc and runc, each with its own state root.
pub fn both() -> [Runtime; 2] {
    [
        Runtime {
            name: "vessel-runc",
            bin: vessel_runc(),
            root: work().join("state-vessel"),
        },
        Runtime {
            name: "runc",
            bin: runc(),
            root: work().join("state-runc"),
        },
    ]
}

/// Run `c` with its output in files (a container it starts inherits them and may keep
/// them open: pipes would never reach EOF); kill it and fail after 60 s.
pub fn output_within(c: &mut Command, what: &str) -> Output {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut child = c
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let start = Instant::now();
    let read = |mut f: &std::fs::File| {
        use std::io::{Read, Seek};
        let mut v = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Output {
                status,
                stdout: read(&out),
                stderr: read(&err),
            };
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish in 60 s; stderr: {}",
                String::from_utf8_lossy(&read(&err))
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// stdout as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Poll `f` until it is true, up to 10 s.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
