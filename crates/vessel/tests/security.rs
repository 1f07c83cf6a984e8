//! End-to-end attacks on the container half's defences, one test per class of the
//! threat model in SECURITY.md. Each test attacks as a hostile image or a hostile
//! container root would, and asserts the host is untouched.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// A copy of the built binaries in a directory of their own: the attacks below write to
/// "the host's vessel", and if a defence failed they must not break the binary the other
/// tests run.
fn own_vessel() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vessel-sec-bin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let built = Path::new(vessel_bin());
        for name in ["vessel", "vessel-shim", "vessel-init"] {
            let src = built.with_file_name(name);
            if src.exists() {
                std::fs::copy(&src, dir.join(name)).unwrap();
            }
        }
        dir.join("vessel")
    })
}

fn own(args: &[&str]) -> Command {
    let mut c = Command::new(own_vessel());
    c.arg("--root").arg(root()).args(args);
    c.env("VESSEL_INIT", own_vessel().with_file_name("vessel-init"));
    c
}

fn own_ok(args: &[&str]) -> String {
    let child = own(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = output_within(child, &format!("vessel {args:?}"));
    assert!(o.status.success(), "vessel {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// busybox plus the host's dynamic loader and the libraries vessel links: an image in
/// which the (dynamically linked) vessel binary can run, as it can in any glibc image.
fn glibc_image() -> &'static str {
    static IMAGE: OnceLock<()> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs");
        assert!(Command::new(&script)
            .arg(&rootfs)
            .status()
            .unwrap()
            .success());
        let ldd = Command::new("ldd").arg(vessel_bin()).output().unwrap();
        assert!(ldd.status.success(), "ldd {}", vessel_bin());
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let dest = rootfs.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dest).unwrap();
        }
        ok(&[
            "import",
            "-c",
            r#"CMD ["sh"]"#,
            rootfs.to_str().unwrap(),
            "busybox-glibc:latest",
        ]);
    });
    "busybox-glibc:latest"
}

/// CVE-2019-5736: a container's process that is the host's vessel binary (its exec'd
/// command is `/proc/self/exe`) lets every other
/// process of the container open that binary through `/proc/<pid>/exe` and, once the
/// process is gone, write to it. Every process vessel forks into a container must run
/// from a sealed view of the binary, which refuses writes.
#[test]
fn host_binary_cannot_be_overwritten_through_proc_exe() {
    let image = glibc_image();
    let before = std::fs::read(own_vessel()).unwrap();
    let n = name("exe");
    // The exec'd command is /proc/self/exe: the process that forked it becomes the
    // container's process; `load` makes it wait on its stdin.
    own_ok(&["run", "-d", "--name", &n, image, "sleep", "1000"]);
    let mut victim = own(&["exec", "-i", &n, "/proc/self/exe", "load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The attacker, a detached process of the container: find the process that runs a
    // vessel binary, keep a read-only descriptor of its exe, kill it, then write through
    // the descriptor once no host process runs the file any more (until then the kernel
    // says ETXTBSY: a patient attacker waits).
    let attack = r#"
        for i in $(seq 100); do
          for p in /proc/[0-9]*; do
            t=$(readlink $p/exe 2>/dev/null)
            case "$t" in */busybox|"") ;; *) pid=${p#/proc/}; break 2;; esac
          done
          sleep 0.05
        done
        [ -n "$pid" ] || { echo "no vessel process found" > /r; exit 2; }
        exec 3< /proc/$pid/exe || { echo "cannot open /proc/$pid/exe" > /r; exit 3; }
        kill -9 $pid
        for i in $(seq 60); do
          err=$( (printf PWNED >> /proc/self/fd/3) 2>&1 ) && { echo "WROTE THE BINARY" > /r; exit 0; }
          case "$err" in *busy*) sleep 0.1;; *) echo "write refused: $err" > /r; exit 0;; esac
        done
        echo "still busy" > /r
    "#;
    own_ok(&["exec", "-d", &n, "sh", "-c", attack]);
    std::thread::sleep(Duration::from_secs(2));
    let _ = victim.stdin.take();
    let _ = output_within(victim, "the exec'd /proc/self/exe");
    let mut out = String::new();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        out = own(&["exec", &n, "cat", "/r"])
            .output()
            .map(|o| stdout(&o))
            .unwrap_or_default();
        if !out.is_empty() {
            break;
        }
    }
    own_ok(&["rm", "-f", &n]);
    assert_eq!(
        std::fs::read(own_vessel()).unwrap(),
        before,
        "the host's vessel binary was modified from inside a container: {out}"
    );
    assert!(
        out.contains("write refused") && out.contains("Read-only"),
        "the attack did not run as planned: {out}"
    );
}
