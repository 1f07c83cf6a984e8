//! End-to-end: the static agent as PID 1 of a vessel-vmm microVM booting Debian's cloud
//! kernel, with a busybox image as `/dev/vda` and a scratch disk as `/dev/vdb`, driven over
//! virtio-console with `vessel_agent::protocol` frames — what the engine does.
//!
//! They need hardware KVM (the development machines have PVM), so they are `#[ignore]`d
//! and run inside the nested testbed:
//!
//! ```text
//! crates/agent/testbed-e2e.sh
//! ```
//!
//! which builds the static agent and this test binary on the host, then runs it with
//! `--ignored` through `testbed/run` (which sets `VESSEL_TEST_KERNEL`,
//! `VESSEL_TEST_MODULES`, `VESSEL_TEST_KERNEL_VERSION`).

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vessel_agent::protocol::{self, ErrorReport, GuestConfig, Kind};
use vessel_vmm::{detect_kvm, DiskConfig, ExitReason, SerialOut, Vm, VmConfig};

/// Whole-VM limit: the testbed is TCG-emulated, so generous, but never unbounded.
const VM_TIMEOUT: Duration = Duration::from_secs(240);
/// What the engine loads (dependencies come from modules.dep).
const MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "overlay",
    "virtio_net",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) => PathBuf::from(v),
        None => panic!("{name} is not set: run through crates/agent/testbed-e2e.sh"),
    }
}

fn agent_binary() -> PathBuf {
    let path = std::env::var_os("VESSEL_AGENT_BIN").map_or_else(
        || workspace().join("target/static/x86_64-unknown-linux-gnu/release/vessel-agent"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the static agent {} is missing: build it first with\n  \
         RUSTFLAGS=\"-C target-feature=+crt-static\" CARGO_TARGET_DIR=target/static \
         cargo build --release -p vessel-agent --target x86_64-unknown-linux-gnu\n\
         (crates/agent/testbed-e2e.sh does)",
        path.display()
    );
    path
}

/// Built once per test binary: the initramfs and the read-only busybox image.
struct Shared {
    _dir: tempfile::TempDir,
    initrd: PathBuf,
    rootfs: PathBuf,
}

fn mkfs(dir: Option<&Path>, img: &Path, size: &str) {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F"]);
    if let Some(dir) = dir {
        cmd.arg("-d").arg(dir);
    }
    let out = cmd
        .arg(img)
        .arg(size)
        .output()
        .expect("mkfs.ext4 (e2fsprogs) must be installed");
    assert!(
        out.status.success(),
        "mkfs.ext4 {}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let kind = detect_kvm();
        assert!(
            kind.runs_stock_kernels(),
            "this end-to-end test needs hardware KVM, but this host has: {kind}.\n\
             Run it inside the nested testbed: crates/agent/testbed-e2e.sh"
        );
        let agent = agent_binary();
        let dir = tempfile::tempdir().unwrap();
        let modules =
            vessel_agent::initramfs::module_load_order(&env_path("VESSEL_TEST_MODULES"), MODULES)
                .unwrap();
        let initrd = dir.path().join("initramfs.cpio");
        vessel_agent::initramfs::build(&initrd, &agent, &modules).unwrap();

        let tree = dir.path().join("tree");
        let out = Command::new(workspace().join("scripts/busybox-rootfs"))
            .arg(&tree)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "busybox-rootfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(tree.join("etc/hostname"), "image\n").unwrap();
        fs::write(tree.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        let rootfs = dir.path().join("rootfs.ext4");
        mkfs(Some(&tree), &rootfs, "64M");
        Shared {
            _dir: dir,
            initrd,
            rootfs,
        }
    })
}

/// What the host saw of one VM run.
#[derive(Default, Debug)]
struct Run {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<i32>,
    error: Option<ErrorReport>,
    /// Frame kinds in arrival order (output kinds once per run of chunks).
    kinds: Vec<Kind>,
    to_ready: Option<Duration>,
    to_started: Option<Duration>,
    total: Duration,
    reason: Option<ExitReason>,
    console: String,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Boots a VM for `cfg`, answers `Ready` with it, sends `stdin` (then `StdinEof`) after
/// `Started`, and collects everything until the VM is off.
fn run_vm(cfg: GuestConfig, stdin: Option<&[u8]>) -> Run {
    let actions = stdin
        .map(|data| {
            vec![
                Action::new("", Kind::Stdin, data),
                Action::new("", Kind::StdinEof, &[]),
            ]
        })
        .unwrap_or_default();
    run_vm_with(cfg, actions)
}

/// A frame the host sends once the command started and its stdout contains `after`.
struct Action {
    after: String,
    kind: Kind,
    payload: Vec<u8>,
}

impl Action {
    fn new(after: &str, kind: Kind, payload: &[u8]) -> Action {
        Action {
            after: after.into(),
            kind,
            payload: payload.to_vec(),
        }
    }
}

fn run_vm_with(cfg: GuestConfig, actions: Vec<Action>) -> Run {
    let shared = shared();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch.ext4");
    mkfs(None, &scratch, "64M");
    let console_path = dir.path().join("console.txt");
    let (host, vmm_end) = UnixStream::pair().unwrap();
    let vm = Vm::new(VmConfig {
        kernel: env_path("VESSEL_TEST_KERNEL"),
        initrd: Some(shared.initrd.clone()),
        cmdline: format!("{} loglevel=3", VmConfig::default_cmdline()),
        vcpus: 1,
        memory_mib: 256,
        disks: vec![
            DiskConfig {
                path: shared.rootfs.clone(),
                read_only: true,
            },
            DiskConfig {
                path: scratch,
                read_only: false,
            },
        ],
        serial: SerialOut::File(console_path.clone()),
        virtio_console: Some(vmm_end.into()),
        vsock_cid: None,
        free_page_reporting: false,
        net: vec![],
    })
    .expect("building the VM");
    let stop = vm.stop_handle();
    let start = Instant::now();
    let runner = std::thread::spawn(move || vm.run());

    let host_side = std::thread::spawn(move || {
        let mut actions = actions.into_iter().peekable();
        let mut run = Run::default();
        let mut writer = host.try_clone().unwrap();
        let mut reader = host;
        loop {
            let (kind, payload) = match protocol::read_frame(&mut reader) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => panic!("guest channel: {e}"),
            };
            if run.kinds.last() != Some(&kind) {
                run.kinds.push(kind);
            }
            match kind {
                Kind::Ready => {
                    run.to_ready = Some(start.elapsed());
                    let json = serde_json::to_vec(&cfg).unwrap();
                    protocol::write_frame(&mut writer, Kind::Config, &json).unwrap();
                }
                Kind::Started => run.to_started = Some(start.elapsed()),
                Kind::Stdout => run.stdout.extend_from_slice(&payload),
                Kind::Stderr => run.stderr.extend_from_slice(&payload),
                Kind::Exit => run.exit = Some(protocol::decode_i32(&payload).unwrap()),
                Kind::Error => run.error = Some(serde_json::from_slice(&payload).unwrap()),
                other => panic!("unexpected guest frame {other:?}"),
            }
            if run.to_started.is_some() {
                while let Some(a) = actions.next_if(|a| run.stdout().contains(&a.after)) {
                    protocol::write_frame(&mut writer, a.kind, &a.payload).unwrap();
                }
            }
            // The guest powers off after its last frame; the VMM then drops the stream.
            if matches!(kind, Kind::Exit | Kind::Error) {
                break;
            }
        }
        run
    });

    while !runner.is_finished() {
        if start.elapsed() > VM_TIMEOUT {
            stop.stop();
            // Bounded too: a VM that does not stop must fail this test, not hang the suite.
            let asked = Instant::now();
            while !runner.is_finished() && asked.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let stopped = if runner.is_finished() {
                "stopped"
            } else {
                "did not even stop within 30 s of a stop request"
            };
            let console = fs::read_to_string(&console_path).unwrap_or_default();
            panic!("the VM did not finish within {VM_TIMEOUT:?} ({stopped}); console:\n{console}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let total = start.elapsed();
    let reason = runner.join().unwrap().expect("running the VM");
    let mut run = host_side.join().expect("host side of the channel");
    run.total = total;
    run.reason = Some(reason);
    run.console = fs::read_to_string(&console_path).unwrap_or_default();
    eprintln!(
        "[frames {:?}] VM start → Ready {:?}, → Started {:?}, → off {:?}; exit {:?}, error {:?}",
        run.kinds,
        run.to_ready,
        run.to_started,
        run.total,
        run.exit,
        run.error.as_ref().map(|e| e.code),
    );
    if std::env::var_os("VESSEL_E2E_CONSOLE").is_some() {
        eprintln!("----- console -----\n{}\n-------------------", run.console);
    }
    let _ = std::io::stderr().flush();
    run
}

fn config(args: &[&str]) -> GuestConfig {
    GuestConfig {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
        hostname: "vessel-test".into(),
        ..Default::default()
    }
}

#[test]
#[ignore = "needs hardware KVM: run through testbed/run (crates/agent/testbed-e2e.sh)"]
fn runs_a_command_relays_output_and_exit_code_then_powers_off() {
    let run = run_vm(
        config(&["sh", "-c", "uname -r; echo err >&2; exit 3"]),
        None,
    );
    let version = std::env::var("VESSEL_TEST_KERNEL_VERSION").unwrap_or_default();
    assert!(
        run.stdout().contains(&version) && !version.is_empty(),
        "stdout {:?} lacks kernel version {version:?}; console:\n{}",
        run.stdout(),
        run.console
    );
    assert_eq!(run.stderr(), "err\n");
    assert_eq!(run.exit, Some(3), "{run:?}");
    assert_eq!(run.error, None);
    assert_eq!(run.kinds.first(), Some(&Kind::Ready));
    assert_eq!(run.kinds.get(1), Some(&Kind::Started));
    assert_eq!(run.reason, Some(ExitReason::Shutdown), "{}", run.console);
    // Quiet: the agent printed nothing on the serial console.
    assert!(
        !run.console.contains("vessel-agent"),
        "console:\n{}",
        run.console
    );
}

#[test]
#[ignore = "needs hardware KVM: run through testbed/run (crates/agent/testbed-e2e.sh)"]
fn missing_command_is_error_127() {
    let run = run_vm(config(&["no-such-command"]), None);
    let error = run.error.as_ref().expect("an Error frame");
    assert_eq!(error.code, 127, "{error:?}");
    assert!(error.message.contains("no-such-command"), "{error:?}");
    assert!(!run.kinds.contains(&Kind::Started), "{:?}", run.kinds);
    assert_eq!(run.exit, None);
    assert_eq!(run.reason, Some(ExitReason::Shutdown), "{}", run.console);
}

#[test]
#[ignore = "needs hardware KVM: run through testbed/run (crates/agent/testbed-e2e.sh)"]
fn tty_mode_runs_on_a_pseudo_terminal() {
    let mut cfg = config(&["sh", "-c", "tty; echo cols=$(stty size)"]);
    cfg.tty = true;
    let run = run_vm(cfg, None);
    assert!(
        run.stdout().contains("/dev/pts/0"),
        "stdout {:?}; console:\n{}",
        run.stdout(),
        run.console
    );
    assert!(run.stderr.is_empty());
    assert_eq!(run.exit, Some(0));
    assert_eq!(run.reason, Some(ExitReason::Shutdown));
}

#[test]
#[ignore = "needs hardware KVM: run through testbed/run (crates/agent/testbed-e2e.sh)"]
fn interactive_stdin_user_hostname_and_writable_root() {
    let mut cfg = config(&[
        "sh",
        "-c",
        "read line; echo \"got $line as $(id -u):$(id -g) on $(hostname)/$(cat /etc/hostname) in $PWD\"; \
         cat; echo; grep -c vessel-test /etc/hosts; \
         echo scratch > /tmp/x && cat /tmp/x; \
         mount | grep -c ' / type overlay'",
    ]);
    cfg.interactive = true;
    cfg.user = "nobody".into();
    cfg.workdir = "/home/work".into();
    let run = run_vm(cfg, Some(b"hello\nrest of stdin"));
    assert_eq!(
        run.stdout(),
        "got hello as 65534:65534 on vessel-test/vessel-test in /home/work\n\
         rest of stdin\n1\nscratch\n1\n",
        "stderr {:?}; console:\n{}",
        run.stderr(),
        run.console
    );
    assert_eq!(run.exit, Some(0), "stderr {:?}", run.stderr());
}

#[test]
#[ignore = "needs hardware KVM: run through testbed/run (crates/agent/testbed-e2e.sh)"]
fn signals_and_resizes_reach_the_command() {
    let mut cfg = config(&[
        "sh",
        "-c",
        "trap 'echo size=$(stty size); exit 7' TERM; echo ready; \
         i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
    ]);
    cfg.tty = true;
    let run = run_vm_with(
        cfg,
        vec![
            Action::new("ready", Kind::Resize, &protocol::encode_resize(33, 111)),
            Action::new("ready", Kind::Signal, &protocol::encode_i32(libc_sigterm())),
        ],
    );
    assert!(
        run.stdout().contains("size=33 111"),
        "stdout {:?}; console:\n{}",
        run.stdout(),
        run.console
    );
    assert_eq!(run.exit, Some(7));
    assert_eq!(run.reason, Some(ExitReason::Shutdown));
}

/// SIGTERM's number on Linux (the test needs no libc dependency for one constant).
fn libc_sigterm() -> i32 {
    15
}

#[test]
#[ignore = "needs hardware KVM: run through testbed/run (crates/agent/testbed-e2e.sh)"]
fn read_only_root_and_not_executable_is_126() {
    let mut cfg = config(&["/etc/passwd"]);
    cfg.read_only = true;
    let run = run_vm(cfg, None);
    let error = run.error.as_ref().expect("an Error frame");
    assert_eq!(error.code, 126, "{error:?}");

    let mut cfg = config(&[
        "sh",
        "-c",
        "cat /etc/hostname; touch /x 2>/dev/null && echo writable || echo read-only",
    ]);
    cfg.read_only = true;
    let run = run_vm(cfg, None);
    assert_eq!(run.stdout(), "vessel-test\nread-only\n", "{}", run.console);
    assert_eq!(run.exit, Some(0));
}
