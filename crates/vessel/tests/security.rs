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
        for name in ["vessel", "vessel-shim", "vessel-init", "vessel-entry"] {
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
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        image_with("busybox-glibc", |rootfs| {
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
        })
    })
}

/// CVE-2019-5736: a container's process that is a host binary (its command is
/// `/proc/self/exe`, which the kernel resolves at the `execve` in the context of the
/// process that vessel forked) lets every other process of the container open that
/// binary through `/proc/<pid>/exe` and, once the process is gone, write to it. vessel
/// makes every container process's last `execve` from vessel-entry, opened from a sealed
/// view that refuses writes. The victim here chains through `/proc/self/exe` 20,000
/// times (each time with one argument fewer) before it becomes `sleep`, which keeps a
/// process whose exe is that program in view long enough for the attacker.
#[test]
fn host_binary_cannot_be_overwritten_through_proc_exe() {
    let image = glibc_image();
    let entry = own_vessel().with_file_name("vessel-entry");
    let before = std::fs::read(own_vessel()).unwrap();
    let entry_before = std::fs::read(&entry).unwrap();
    let n = name("exe");
    own_ok(&["run", "-d", "--name", &n, image, "sleep", "1000"]);
    // The attacker, a detached process of the container: find a process that runs
    // anything but busybox, keep a read-only descriptor of its exe, kill it, then write
    // through the descriptor once nothing runs the file any more (until then the kernel
    // says ETXTBSY: a patient attacker waits).
    let attack = r#"
        for i in $(seq 400); do
          for p in /proc/[0-9]*; do
            t=$(readlink $p/exe 2>/dev/null)
            case "$t" in */busybox|"") ;; *) pid=${p#/proc/}; break 2;; esac
          done
        done
        [ -n "$pid" ] || { echo "no process of another binary found" > /r; exit 2; }
        exec 3< /proc/$pid/exe || { echo "cannot open /proc/$pid/exe" > /r; exit 3; }
        kill -9 $pid
        for i in $(seq 60); do
          err=$( (printf PWNED >> /proc/self/fd/3) 2>&1 ) && { echo "WROTE THE BINARY" > /r; exit 0; }
          case "$err" in *busy*) sleep 0.1;; *) echo "write refused: $err" > /r; exit 0;; esac
        done
        echo "still busy" > /r
    "#;
    own_ok(&["exec", "-d", &n, "sh", "-c", attack]);
    let mut victim: Vec<&str> = vec!["exec", &n];
    victim.extend(std::iter::repeat_n("/proc/self/exe", 20_000));
    victim.extend(["/bin/sleep", "sleep", "30"]);
    let victim = own(&victim)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    for _ in 0..80 {
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
    let _ = output_within(victim, "the exec'd /proc/self/exe chain");
    assert_eq!(
        std::fs::read(own_vessel()).unwrap(),
        before,
        "the host's vessel binary was modified from inside a container: {out}"
    );
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        entry_before,
        "the host's vessel-entry was modified from inside a container: {out}"
    );
    assert!(
        out.contains("write refused") && out.contains("Read-only"),
        "the attack did not run as planned: {out}"
    );
}

/// What a container runs as `/proc/self/exe` — as its command, through `exec`, as the
/// interpreter of a `#!/proc/self/exe` script, or through a link to it — is never the
/// host's vessel: only vessel-entry, which does nothing but exec its arguments.
#[test]
fn container_cannot_execute_the_host_vessel_binary() {
    let image = image_with("selfexe", |rootfs| {
        use std::os::unix::fs::PermissionsExt;
        let script = rootfs.join("selfexe.sh");
        std::fs::write(&script, "#!/proc/self/exe --version\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/proc/self/exe", rootfs.join("selflink")).unwrap();
    });
    let n = name("selfexe");
    own_ok(&["run", "-d", "--name", &n, &image, "sleep", "1000"]);
    let tries: [&[&str]; 5] = [
        &["run", "--rm", &image, "/proc/self/exe", "--version"],
        &[
            "run",
            "--rm",
            "--entrypoint",
            "/selflink",
            &image,
            "version",
        ],
        &["run", "--rm", &image, "/selfexe.sh"],
        &["exec", &n, "/proc/self/exe", "--version"],
        &["exec", &n, "/selflink", "--version"],
    ];
    for args in tries {
        let o = own(args).output().unwrap();
        let all = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
        assert!(
            !all.contains("vessel 0.") && !all.to_lowercase().contains("usage: vessel"),
            "`vessel {}` ran vessel's binary in the container: {all}",
            args.join(" ")
        );
        assert_eq!(
            o.status.code(),
            Some(127),
            "`vessel {}`: {all}",
            args.join(" ")
        );
    }
    own_ok(&["rm", "-f", &n]);
}

/// Imports a busybox rootfs changed by `edit` as image `name`.
fn image_with(name: &str, edit: impl FnOnce(&Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs");
    assert!(Command::new(&script)
        .arg(&rootfs)
        .status()
        .unwrap()
        .success());
    edit(&rootfs);
    let tag = format!("{name}:latest");
    ok(&[
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        rootfs.to_str().unwrap(),
        &tag,
    ]);
    tag
}

/// An image whose `/dev` is a symlink to a host directory: the runtime's device nodes
/// and links must land in the container's own /dev, never in the host's directory.
#[test]
fn image_dev_symlink_cannot_make_device_nodes_on_the_host() {
    let host_dir = std::env::temp_dir().join(format!("vessel-devattack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&host_dir);
    std::fs::create_dir_all(&host_dir).unwrap();
    let target = host_dir.clone();
    let image = image_with("devlink", move |rootfs| {
        let _ = std::fs::remove_dir_all(rootfs.join("dev"));
        std::os::unix::fs::symlink(&target, rootfs.join("dev")).unwrap();
    });
    for userns in [false, true] {
        let mut args = vec!["run", "--rm"];
        if userns {
            args.push("--userns");
        }
        args.extend([
            image.as_str(),
            "sh",
            "-c",
            "echo ok > /dev/null && ls /dev/",
        ]);
        let o = vessel(&args);
        let left: Vec<_> = std::fs::read_dir(&host_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "vessel made {left:?} in the host's {} (userns {userns})",
            host_dir.display()
        );
        assert_eq!(code(&o), 0, "userns {userns}: {}", stderr(&o));
        assert!(stdout(&o).contains("null"), "{}", stdout(&o));
    }
    std::fs::remove_dir_all(&host_dir).unwrap();
}

/// `exec -u NAME` reads the container's /etc/passwd inside the container, as it is
/// there now: not the upper directory's copy on the host (where a deleted file is a
/// whiteout and a file reached through a symlink in the container is missed), and not a
/// file of any size.
#[test]
fn exec_user_is_resolved_inside_the_container() {
    let n = name("execu");
    ok(&["run", "-d", "--name", &n, "busybox", "sleep", "1000"]);
    // /etc/passwd is a symlink in the container to a file with the user: the host's
    // view of the upper dir does not follow it; the container does.
    let setup = "mkdir -p /alt && cp /etc/passwd /etc/group /alt/ && echo 'app:x:4242:4343::/home/app:/bin/sh' >> /alt/passwd && echo 'app:x:4343:' >> /alt/group && ln -sf /alt/passwd /etc/passwd && ln -sf /alt/group /etc/group";
    ok(&["exec", &n, "sh", "-c", setup]);
    let o = vessel(&["exec", "-u", "app", &n, "id"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("uid=4242") && stdout(&o).contains("gid=4343"),
        "{}",
        stdout(&o)
    );
    // A passwd that never ends is refused, not read into the host's memory.
    ok(&["exec", &n, "sh", "-c", "rm /etc/passwd /etc/group && mkfifo /etc/group && head -c 5000000 /dev/zero | tr '\\0' x > /etc/passwd"]);
    let o = vessel(&["exec", "-u", "app", &n, "id"]);
    assert_ne!(code(&o), 0, "{}", stdout(&o));
    assert!(stderr(&o).contains("larger than"), "{}", stderr(&o));
    ok(&["rm", "-f", &n]);
}

/// Runs `sh -c script` as the unprivileged user nobody.
fn as_nobody(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv (util-linux)")
}

/// A local unprivileged user can read nothing of vessel's state (a container's config
/// and its environment, its logs, the databases) and cannot run a setuid binary of an
/// image layer or of a container's upper directory.
#[test]
fn data_root_is_closed_to_unprivileged_users() {
    let image = image_with("suid", |rootfs| {
        use std::os::unix::fs::PermissionsExt;
        let suid = rootfs.join("bin/suid-id");
        std::fs::copy(rootfs.join("bin/busybox"), &suid).unwrap();
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    });
    let n = name("private");
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "-e",
        "SECRET=hunter2",
        &image,
        "sh",
        "-c",
        "cp -a /bin/suid-id /bin/suid-up; echo logged; sleep 1000",
    ]);
    let id = id_of(&n);
    let r = root().display().to_string();
    let inst = format!("{r}/instances/{id}");
    // Every path a user would try, named in full (the layer's name is a public digest).
    let layers: Vec<String> = std::fs::read_dir(root().join("images/layers"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut targets = vec![
        format!("{inst}/config.json"),
        format!("{inst}/log.json"),
        format!("{r}/instances.db"),
        format!("{r}/images/images.db"),
    ];
    for t in &targets {
        assert!(
            Path::new(t).exists(),
            "{t} should exist for this test to mean anything"
        );
        let o = as_nobody(&format!("cat {t} > /dev/null"));
        assert!(!o.status.success(), "nobody could read {t}");
    }
    targets.clear();
    for l in &layers {
        targets.push(format!("{l}/bin/suid-id"));
    }
    targets.push(format!("{inst}/upper/bin/suid-up"));
    for t in &targets {
        let o = as_nobody(&format!("{t} id -u"));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.trim() != "0", "nobody ran {t} as root");
        assert!(!o.status.success(), "nobody could run {t}: {out}");
    }
    let o = as_nobody(&format!("ls {r}/images {r}/instances"));
    assert!(
        !o.status.success(),
        "nobody could list the data root: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    ok(&["rm", "-f", &n]);
}

/// `exec` without `-t` gives the process pipes, never the caller's descriptors: a
/// container process handed the user's terminal could push input into it (TIOCSTI) or
/// read what is typed there.
#[test]
fn exec_without_tty_gets_pipes_not_the_callers_terminal() {
    let n = name("pipes");
    ok(&["run", "-d", "--name", &n, "busybox", "sleep", "1000"]);
    // The caller's stdio are a terminal (script(1) gives it one); what the exec'd
    // process has is printed by it.
    let cmd = format!(
        "{} --root {} exec -i {n} sh -c 'ls -l /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2; [ -t 0 ] && echo STDIN-IS-A-TTY; [ -t 1 ] && echo STDOUT-IS-A-TTY; true'",
        vessel_bin(),
        root().display()
    );
    let o = on_a_terminal(&cmd)
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils)");
    let out = stdout(&o);
    ok(&["rm", "-f", &n]);
    assert!(out.contains("pipe:"), "{out}");
    assert!(
        !out.contains("IS-A-TTY") && !out.contains("/dev/pts"),
        "the exec'd process got the caller's terminal: {out}"
    );
}
