//! The microVM backend: the same image, booted as a KVM guest with its own kernel.
//!
//! Storage follows the seed's "storage efficiency" row as closely as a VM allows: the
//! image's layers become one read-only ext4 image, built once per image and shared by
//! every VM of that image (`<root>/vm/images/<id>.ext4`, guest `/dev/vda`); each VM adds
//! only a small sparse writable disk (`/dev/vdb`) that the guest agent overlays on it.
//! The guest's PID 1 is `vessel-agent` in an initramfs built once per kernel; it talks
//! to the monitor over virtio-console with `vessel_agent::protocol` frames, which this
//! backend bridges to the same stdio pipes the container backend uses, so the monitor's
//! logging, attach and signal handling are shared.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vessel_agent::protocol::{self, GuestConfig, GuestNetwork, Kind};
use vessel_vmm::{ExitReason, KvmKind, NetConfig, VmConfig};

use super::backend::{Backend, Exec, ExecRequest, Exit, Started, Stdio};
use super::catalogue::{self, Instance};
use super::vm_exec::{self, Sessions};
use super::vm_jail::{self, VmmFiles, VmmSettings, VmmStop};
use super::{EngineError, Result};

/// Modules the guest agent loads, by name (dependencies are added from `modules.dep`).
const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "virtio_balloon",
    "overlay",
    // eth0 (pulls in net_failover and failover).
    "virtio_net",
];

/// How long a guest may take to report that its workload started. Generous: under nested
/// emulation a boot takes seconds; a guest that never reports is killed.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Guest RAM of a VM without `--memory`, MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 256;

/// Size of each VM's sparse writable disk.
const SCRATCH_BYTES: u64 = 1 << 30;

/// The guest kernel vessel boots: `vmlinuz` (and `vmlinux`, the same kernel as an ELF
/// image, when it could be extracted), `modules/` (with `modules.dep`) and `version`, as
/// `scripts/fetch-kernel` lays them out.
pub struct KernelDir(pub PathBuf);

impl KernelDir {
    /// The image to boot: the ELF `vmlinux` if there is one (PVH entry: no decompression
    /// in the guest, so a faster start and ~34 MiB less guest memory touched: the
    /// bzImage's compressed copy and decompression buffers), else the `vmlinuz` bzImage.
    fn vmlinuz(&self) -> PathBuf {
        let elf = self.0.join("vmlinux");
        if elf.is_file() {
            elf
        } else {
            self.0.join("vmlinuz")
        }
    }

    fn version(&self) -> Result<String> {
        let p = self.0.join("version");
        std::fs::read_to_string(&p).map(|v| v.trim().to_string()).map_err(|_| {
            EngineError::InvalidFlag(format!(
                "no guest kernel in {}: run scripts/fetch-kernel {} (./x setup does), or pass --kernel",
                self.0.display(),
                self.0.display()
            ))
        })
    }
}

/// The shared read-only root disk built for an image under data root `root`.
pub fn image_disk_path(root: &Path, image_id: &str) -> PathBuf {
    let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    root.join("vm/images").join(format!("{hex}.ext4"))
}

/// Removes an image's shared root disk (for an image that is gone). Best effort: a disk
/// that is not there is already removed.
pub fn remove_image_disk(root: &Path, image_id: &str) {
    let _ = std::fs::remove_file(image_disk_path(root, image_id));
}

/// Runs instances as microVMs.
pub struct VmBackend {
    root: PathBuf,
    /// The settings: kernel directory, agent binary, the VMM's binary and environment.
    config: crate::EngineConfig,
    networks: vessel_network::Networks,
    /// The running VM of this process (the monitor), for `kill` from signal forwarding.
    running: Mutex<Option<Running>>,
    /// Its threads, which `wait` joins (apart from `running`, which `kill` keeps using).
    threads: Mutex<Option<Threads>>,
}

/// Asks a VM's monitor, from another process, to stop the VM (the monitor turns it into
/// a hard stop, as SIGKILL would a container, and records exit 137). A real-time signal,
/// so it cannot be confused with one meant for the workload.
pub fn stop_signal() -> i32 {
    libc::SIGRTMIN() + 2
}

#[derive(Clone)]
struct Running {
    id: String,
    control: mpsc::Sender<Control>,
    stop: VmmStop,
}

struct Threads {
    vm: Option<JoinHandle<vessel_vmm::Result<ExitReason>>>,
    bridge: Option<JoinHandle<Outcome>>,
}

enum Control {
    Signal(i32),
}

/// What the guest reported.
#[derive(Debug, Default)]
struct Outcome {
    exit: Option<i32>,
    error: Option<(u8, String)>,
}

fn io<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |e| EngineError::io(op, p, e)
}

impl VmBackend {
    /// A backend with the settings of `config` (on its data root), wiring VMs to
    /// `networks`.
    pub fn new(config: &crate::EngineConfig, networks: vessel_network::Networks) -> VmBackend {
        VmBackend {
            root: config.root.clone(),
            config: config.clone(),
            networks,
            running: Mutex::new(None),
            threads: Mutex::new(None),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kernel directory whose modules go into the initramfs (`--kernel` replaces only
    /// the kernel image that boots).
    fn kernel(&self, _inst: &Instance) -> KernelDir {
        KernelDir(self.config.kernel_dir.clone())
    }

    /// The shared read-only root disk of an image, built on first use.
    fn image_disk(&self, image_id: &str, layers: &[PathBuf]) -> Result<PathBuf> {
        let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
        let dir = self.root.join("vm/images");
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let disk = dir.join(format!("{hex}.ext4"));
        if disk.exists() {
            return Ok(disk);
        }
        let tmp = dir.join(format!(".{hex}.{}.tmp", std::process::id()));
        let size: u64 = layers
            .iter()
            .map(|l| vessel_image::store::dir_size(l))
            .sum();
        // ext4 metadata, inode tables and slack: a quarter more, and at least 64 MiB.
        let mib = ((size + size / 4) >> 20).max(32) + 32;
        let mnt = dir.join(format!(".{hex}.{}.mnt", std::process::id()));
        std::fs::create_dir_all(&mnt).map_err(io("create", &mnt))?;
        let source = match layers {
            [one] => one.clone(),
            _ => mnt.clone(),
        };
        let mut cmd = Command::new("mkfs.ext4");
        cmd.args([
            "-q",
            "-F",
            "-L",
            "vessel-root",
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(&source)
        .arg(&tmp)
        .arg(format!("{mib}M"));
        if layers.len() > 1 {
            // Stack the layers (whiteouts applied by the kernel) in a private mount
            // namespace of the mkfs process, so nothing is ever mounted on the host.
            let lower = layers
                .iter()
                .rev()
                .map(|l| l.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            let data = std::ffi::CString::new(format!("lowerdir={lower}"))
                .map_err(|_| EngineError::Internal("layer path with NUL".into()))?;
            let target = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes())
                .map_err(|_| EngineError::Internal("path with NUL".into()))?;
            // SAFETY: only async-signal-safe syscalls between fork and exec, on
            // CStrings that outlive the spawn.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::unshare(libc::CLONE_NEWNS) != 0
                        || libc::mount(
                            c"none".as_ptr(),
                            c"/".as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null(),
                        ) != 0
                        || libc::mount(
                            c"overlay".as_ptr(),
                            target.as_ptr(),
                            c"overlay".as_ptr(),
                            libc::MS_RDONLY,
                            data.as_ptr().cast(),
                        ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let out = cmd.output().map_err(|e| {
            EngineError::Backend(format!("run mkfs.ext4 (apt-get install e2fsprogs): {e}"))
        });
        let _ = std::fs::remove_dir(&mnt);
        let out = out?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(EngineError::Backend(format!(
                "build the VM root disk of {image_id}: mkfs.ext4: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::rename(&tmp, &disk).map_err(io("rename into", &disk))?;
        Ok(disk)
    }

    /// The initramfs for a kernel version and module list, built once (rebuilt if the
    /// agent or the kernel's modules changed).
    fn initramfs(&self, kernel: &KernelDir) -> Result<PathBuf> {
        let version = kernel.version()?;
        let agent = super::init::binary(&self.config.init)?;
        let dir = self.root.join("vm/initramfs");
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let out = dir.join(format!("{version}+{}.cpio", GUEST_MODULES.join("+")));
        let newer = |a: &Path, b: &Path| match (
            std::fs::metadata(a).and_then(|m| m.modified()),
            std::fs::metadata(b).and_then(|m| m.modified()),
        ) {
            (Ok(x), Ok(y)) => x > y,
            _ => true,
        };
        let modules_dep = kernel.0.join("modules/modules.dep");
        if out.exists() && !newer(&agent, &out) && !newer(&modules_dep, &out) {
            return Ok(out);
        }
        let modules =
            vessel_agent::initramfs::module_load_order(&kernel.0.join("modules"), GUEST_MODULES)
                .map_err(|e| {
                    EngineError::Backend(format!(
                        "guest kernel modules in {}: {e}",
                        kernel.0.display()
                    ))
                })?;
        let tmp = dir.join(format!(".{version}.{}.tmp", std::process::id()));
        vessel_agent::initramfs::build(&tmp, &agent, &modules)
            .map_err(|e| EngineError::Backend(format!("build the initramfs: {e}")))?;
        std::fs::rename(&tmp, &out).map_err(io("rename into", &out))?;
        Ok(out)
    }
}

fn guest_config(inst: &Instance, network: Option<GuestNetwork>) -> GuestConfig {
    let r = &inst.request;
    GuestConfig {
        network,
        args: r.args.clone(),
        env: r.env.clone(),
        workdir: r.workdir.clone(),
        user: r.user.clone(),
        hostname: r.hostname.clone(),
        tty: r.tty,
        interactive: r.interactive,
        read_only: r.read_only,
        export_changes: r.export_changes,
        pids_limit: r.pids_limit,
        ..Default::default()
    }
}

/// Most bytes of changes a build step's guest may send: a tar of everything its scratch
/// disk can hold, with room for the entries' headers.
const MAX_CHANGES: u64 = 2 * SCRATCH_BYTES;

/// Where a build step's changes go (`changes.tar` in the instance's directory), and how
/// far they got.
struct ChangesFile {
    file: std::fs::File,
    written: u64,
    failed: Option<String>,
}

impl ChangesFile {
    fn take(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.written += data.len() as u64;
        if self.written > MAX_CHANGES {
            self.failed = Some(format!(
                "the step's changes exceed {} MiB",
                MAX_CHANGES >> 20
            ));
            let _ = self.file.set_len(0);
        } else if let Err(e) = self.file.write_all(data) {
            self.failed = Some(format!("write the step's changes: {e}"));
        }
    }
}

/// Reads the guest's frames until it exits, copying output to the monitor's pipes and
/// feeding it stdin and signals. Tells `ready` once the workload started (or failed).
#[allow(clippy::too_many_arguments)]
fn bridge(
    mut conn: UnixStream,
    writer: std::sync::Arc<Mutex<UnixStream>>,
    sessions: Sessions,
    config: GuestConfig,
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    control: mpsc::Receiver<Control>,
    ready: mpsc::Sender<std::result::Result<(), (u8, String)>>,
    mut terminal: Option<OwnedFd>,
    mut changes: Option<ChangesFile>,
) -> Outcome {
    /// Tells the size follower to end when the bridge does, however it returns.
    struct Done(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let sizes_done = Done(std::sync::Arc::default());
    let mut out = std::fs::File::from(stdout);
    let mut err = std::fs::File::from(stderr);
    let mut outcome = Outcome::default();
    let send = |w: &Mutex<UnixStream>, kind: Kind, data: &[u8]| {
        protocol::write_frame(
            &mut *w.lock().unwrap_or_else(|p| p.into_inner()),
            kind,
            data,
        )
    };
    // Host → guest: stdin and signals, on threads of their own that end with the process
    // (a monitor's stdin may never reach EOF; the bridge must not wait for it).
    if let Some(stdin) = stdin {
        let w = writer.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(stdin);
            let mut buf = [0u8; 16 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = send(&w, Kind::StdinEof, &[]);
                        return;
                    }
                    Ok(n) => {
                        if send(&w, Kind::Stdin, &buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    {
        let w = writer.clone();
        std::thread::spawn(move || {
            while let Ok(Control::Signal(sig)) = control.recv() {
                let _ = send(&w, Kind::Signal, &sig.to_le_bytes());
            }
        });
    }
    {
        let mut told = false;
        loop {
            let frame = match protocol::read_frame(&mut conn) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("guest channel: {e}");
                    break;
                }
            };
            match frame {
                (Kind::Ready, _) => {
                    let json = serde_json::to_vec(&config).unwrap_or_default();
                    let _ = send(&writer, Kind::Config, &json);
                }
                (Kind::Started, _) => {
                    told = true;
                    let _ = ready.send(Ok(()));
                    if let Some(master) = terminal.take() {
                        // The host pty's size (its first, then what an attached caller
                        // or a resize sets) is the guest's: the agent takes sizes once
                        // its command exists.
                        vm_exec::follow_size(
                            master,
                            writer.clone(),
                            Kind::Resize,
                            sizes_done.0.clone(),
                        );
                    }
                }
                (Kind::Stdout, data) => {
                    let _ = out.write_all(&data);
                }
                (Kind::Stderr, data) => {
                    let _ = err.write_all(&data);
                }
                (Kind::Changes, data) => match &mut changes {
                    Some(c) => c.take(&data),
                    None => tracing::warn!("the guest sent changes nobody asked for"),
                },
                (Kind::Exit, data) => {
                    outcome.exit = data
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .map(i32::from_le_bytes);
                    if let Some(why) = changes.as_mut().and_then(|c| c.failed.take()) {
                        outcome.exit = None;
                        outcome.error = Some((125, why));
                    } else if let Some(c) = changes.as_mut() {
                        if let Err(e) = c.file.flush() {
                            outcome.exit = None;
                            outcome.error = Some((125, format!("write the step's changes: {e}")));
                        }
                    }
                }
                (Kind::Error, data) => {
                    #[derive(serde::Deserialize)]
                    struct E {
                        code: u8,
                        message: String,
                    }
                    let e = serde_json::from_slice::<E>(&data)
                        .map(|e| (e.code, e.message))
                        .unwrap_or_else(|_| (125, String::from_utf8_lossy(&data).into_owned()));
                    if !told {
                        told = true;
                        let _ = ready.send(Err(e.clone()));
                    }
                    outcome.error = Some(e);
                }
                (
                    kind @ (Kind::ExecStarted
                    | Kind::ExecStdout
                    | Kind::ExecStderr
                    | Kind::ExecExit
                    | Kind::ExecError),
                    data,
                ) => sessions.deliver(kind, &data),
                _ => {}
            }
        }
        sessions.close_all();
        if !told {
            let _ = ready.send(Err((
                125,
                "the guest closed its channel before starting the workload".into(),
            )));
        }
        let _ = conn.shutdown(std::net::Shutdown::Both);
    }
    outcome
}

/// Why the VM ended, when it ended by itself (not because the engine stopped it): a
/// guest that closed its channel early most often crashed or reset.
fn ended(reason: Option<ExitReason>) -> String {
    match reason {
        None | Some(ExitReason::Stopped) => String::new(),
        Some(ExitReason::Shutdown) => " (the guest powered off)".into(),
        Some(ExitReason::Reboot) => " (the guest reset: a panic or a reboot)".into(),
        Some(ExitReason::Crashed(how)) => format!(" (the VM crashed: {how})"),
    }
}

/// A host pty in raw mode: the guest has the real terminal, so the host side only carries
/// its bytes (no echo, no line editing, no signals from control characters). `size`
/// (rows, columns) is its first size, which the guest's terminal follows.
fn raw_pty(size: Option<(u16, u16)>) -> Result<nix::pty::OpenptyResult> {
    let ws = size.map(|(rows, cols)| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let pty = nix::pty::openpty(ws.as_ref(), None)
        .map_err(|e| EngineError::Backend(format!("openpty: {e}")))?;
    let mut raw = nix::sys::termios::tcgetattr(&pty.slave)
        .map_err(|e| EngineError::Backend(format!("tcgetattr: {e}")))?;
    nix::sys::termios::cfmakeraw(&mut raw);
    let _ = nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &raw);
    Ok(pty)
}

fn serial_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() {
        "(the guest console printed nothing)".into()
    } else {
        format!("last console lines:\n{tail}")
    }
}

impl Backend for VmBackend {
    fn prepare(&self, inst: &Instance, dir: &Path, layers: &[PathBuf]) -> Result<()> {
        // Host check first: say clearly why a VM cannot run here.
        let kvm = vessel_vmm::detect_kvm();
        match (&kvm, &inst.request.kernel) {
            (KvmKind::Hardware { .. }, _) | (KvmKind::Pvm, Some(_)) => {}
            _ => return Err(EngineError::InvalidFlag(format!("--isolation vm: {kvm}"))),
        }
        let kernel = self.kernel(inst);
        let vmlinuz = inst
            .request
            .kernel
            .clone()
            .unwrap_or_else(|| kernel.vmlinuz());
        if !vmlinuz.is_file() {
            return Err(EngineError::InvalidFlag(format!(
                "--isolation vm: guest kernel {} not found: run scripts/fetch-kernel {} (./x setup does), or pass --kernel",
                vmlinuz.display(),
                kernel.0.display()
            )));
        }
        if inst
            .request
            .memory
            .is_some_and(|m| m < (vessel_vmm::MIN_MEMORY_MIB as u64) << 20)
        {
            return Err(EngineError::InvalidFlag(format!(
                "--memory: a VM needs at least {}m",
                vessel_vmm::MIN_MEMORY_MIB
            )));
        }
        self.initramfs(&kernel)?;
        let shared = self.image_disk(&inst.image_id, layers)?;
        std::os::unix::fs::symlink(&shared, dir.join("root.ext4"))
            .map_err(io("link", &dir.join("root.ext4")))?;
        // The per-VM disk: sparse, so it costs only what the guest writes.
        let scratch = dir.join("scratch.ext4");
        let f = std::fs::File::create(&scratch).map_err(io("create", &scratch))?;
        f.set_len(SCRATCH_BYTES).map_err(io("size", &scratch))?;
        let out = Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                "vessel-rw",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                "-O",
                "^has_journal",
            ])
            .arg(&scratch)
            .output()
            .map_err(|e| {
                EngineError::Backend(format!("run mkfs.ext4 (apt-get install e2fsprogs): {e}"))
            })?;
        if !out.status.success() {
            return Err(EngineError::Backend(format!(
                "mkfs.ext4 {}: {}",
                scratch.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    fn start(&self, inst: &Instance, dir: &Path, stdio: Stdio) -> Result<Started> {
        // The VMM process inherits this. With transparent huge pages on, a thread stack
        // (2 MiB) that happens to be 2 MiB-aligned is backed by one huge page at its
        // first touch: 2 MiB committed for a few KiB used, seen as 1.1 vs 3.1 MiB of VMM
        // memory between runs. Guest RAM opts out on its own (MADV_NOHUGEPAGE).
        if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
            tracing::debug!("PR_SET_THP_DISABLE: {e}");
        }
        let r = &inst.request;
        let kernel = self.kernel(inst);
        let (stdin, stdout, stderr, pty_master) = match stdio {
            Stdio::Fds {
                stdin,
                stdout,
                stderr,
            } => (r.interactive.then_some(stdin), stdout, stderr, None),
            Stdio::Pty => {
                // (The bridge follows the size on a descriptor of the master: see below.)
                // The guest has the real terminal; a host pty carries its bytes to the
                // monitor, which treats it like a container's.
                let pty = raw_pty(r.console_size)?;
                let dup = |fd: &OwnedFd| {
                    fd.try_clone()
                        .map_err(|e| EngineError::Backend(format!("dup: {e}")))
                };
                let slave_in = dup(&pty.slave)?;
                let slave_err = dup(&pty.slave)?;
                (
                    r.interactive.then_some(slave_in),
                    pty.slave,
                    slave_err,
                    Some(pty.master),
                )
            }
        };
        let terminal = match &pty_master {
            Some(m) => Some(
                m.try_clone()
                    .map_err(|e| EngineError::Backend(format!("dup: {e}")))?,
            ),
            None => None,
        };
        let serial_log = dir.join("console.log");
        let (host_end, vm_end) =
            UnixStream::pair().map_err(|e| EngineError::Backend(format!("socketpair: {e}")))?;
        let mut cmdline = VmConfig::default_cmdline();
        if r.console {
            // --console shows the guest's boot: the kernel's messages too.
            cmdline = cmdline.replace(" quiet", "");
        } else if !cmdline.contains("loglevel") {
            cmdline.push_str(" loglevel=3");
        }
        let memory_mib = r
            .memory
            .map(|m| (m >> 20) as u32)
            .unwrap_or(DEFAULT_MEMORY_MIB);
        let vcpus = r.cpus.map(|c| c.ceil() as u8).unwrap_or(1).max(1);
        // The NIC: a tap on the network's bridge, held only by this (the VMM) process.
        let (net, network) = match &r.attachment {
            Some(att) => {
                let tap = self.networks.connect_tap(&inst.id, att)?;
                let guest = GuestNetwork {
                    address: att.ip,
                    prefix: att.prefix,
                    gateway: att.gateway,
                    mtu: att.mtu,
                    hosts: super::container::hosts(&self.networks, inst)?,
                    resolv_conf: super::container::resolv_conf(r),
                };
                let nic = NetConfig {
                    tap,
                    mac: vessel_network::mac_for(att.ip),
                    mtu: u16::try_from(att.mtu).map_err(|_| {
                        EngineError::Backend(format!(
                            "network {}: MTU {} is above 65535",
                            att.network, att.mtu
                        ))
                    })?,
                };
                (vec![nic], Some(guest))
            }
            None => (Vec::new(), None),
        };
        // The VMM runs in a jailed process of its own that cannot open anything: it gets
        // every file open (see vm_jail). The guest channel's other end stays here.
        let kernel_path = r.kernel.clone().unwrap_or_else(|| kernel.vmlinuz());
        let initrd_path = self.initramfs(&kernel)?;
        let root_disk = dir.join("root.ext4");
        let scratch = dir.join("scratch.ext4");
        let files = VmmFiles {
            kvm: vm_jail::open_for_vmm(Path::new("/dev/kvm"), true)?,
            kernel: (
                kernel_path.clone(),
                vm_jail::open_for_vmm(&kernel_path, false)?,
            ),
            initrd: Some((
                initrd_path.clone(),
                vm_jail::open_for_vmm(&initrd_path, false)?,
            )),
            disks: vec![
                (
                    root_disk.clone(),
                    vm_jail::open_for_vmm(&root_disk, false)?,
                    true,
                ),
                (
                    scratch.clone(),
                    vm_jail::open_for_vmm(&scratch, true)?,
                    false,
                ),
            ],
            console_log: if r.console {
                None
            } else {
                Some((serial_log.clone(), vm_jail::open_console_log(&serial_log)?))
            },
            guest_channel: OwnedFd::from(vm_end),
            nics: net,
        };
        let settings = VmmSettings {
            cmdline,
            vcpus,
            memory_mib,
            jail_root: dir.join("vmm-root"),
            free_page_reporting: true,
        };
        let vmm = vm_jail::spawn(&self.config, dir, files, settings)?;
        let vmm_pid = vmm.pid();
        let stop = vmm.stop_handle();
        let vm_thread = std::thread::Builder::new()
            .name("vm".into())
            .spawn(move || vmm.wait())
            .map_err(|e| EngineError::Backend(format!("start the VM thread: {e}")))?;
        tracing::debug!(vmm_pid, "VMM process started");
        let (ready_tx, ready_rx) = mpsc::channel();
        let (control_tx, control_rx) = mpsc::channel();
        let config = guest_config(inst, network);
        let writer = std::sync::Arc::new(Mutex::new(
            host_end
                .try_clone()
                .map_err(|e| EngineError::Backend(format!("virtio-console: {e}")))?,
        ));
        let sessions = Sessions::default();
        let changes = if r.export_changes {
            let p = dir.join("changes.tar");
            Some(ChangesFile {
                file: std::fs::File::create(&p).map_err(io("create", &p))?,
                written: 0,
                failed: None,
            })
        } else {
            None
        };
        let (bridge_writer, bridge_sessions) = (writer.clone(), sessions.clone());
        let bridge_thread = std::thread::Builder::new()
            .name("guest-channel".into())
            .spawn(move || {
                bridge(
                    host_end,
                    bridge_writer,
                    bridge_sessions,
                    config,
                    stdin,
                    stdout,
                    stderr,
                    control_rx,
                    ready_tx,
                    terminal,
                    changes,
                )
            })
            .map_err(|e| EngineError::Backend(format!("start the guest channel: {e}")))?;
        let running = Running {
            id: inst.id.clone(),
            control: control_tx,
            stop,
        };
        let mut threads = Threads {
            vm: Some(vm_thread),
            bridge: Some(bridge_thread),
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err((code, message))) => {
                running.stop.stop();
                let (reason, _) = finish(&mut threads);
                return Err(match code {
                    127 => EngineError::CommandNotFound(message),
                    126 => EngineError::NotExecutable(message),
                    _ => EngineError::Backend(format!(
                        "{message}{}; {}",
                        ended(reason),
                        serial_tail(&serial_log)
                    )),
                });
            }
            Err(_) => {
                running.stop.stop();
                finish(&mut threads);
                return Err(EngineError::Backend(format!(
                    "the guest did not start the workload within {} s; {}",
                    READY_TIMEOUT.as_secs(),
                    serial_tail(&serial_log)
                )));
            }
        }
        // `vessel exec` reaches the guest through us; a VM without it still runs.
        if let Err(e) = vm_exec::serve(dir, writer, sessions) {
            tracing::warn!("exec into {} will not work: {e}", inst.name);
        }
        *self.running() = Some(running);
        *self.threads.lock().unwrap_or_else(|p| p.into_inner()) = Some(threads);
        Ok(Started {
            pid: std::process::id() as i32,
            pty_master,
            teardown: None,
        })
    }

    fn wait(&self, inst: &Instance, _started: &Started) -> Result<Exit> {
        let taken = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut threads) =
            taken.filter(|_| self.running().as_ref().is_some_and(|r| r.id == inst.id))
        else {
            return Err(EngineError::Internal("no VM runs in this process".into()));
        };
        let (reason, outcome) = finish(&mut threads);
        *self.running() = None;
        let log = self
            .root
            .join("instances")
            .join(&inst.id)
            .join("console.log");
        match (outcome.exit, outcome.error, reason) {
            (Some(code), _, _) => Ok(Exit {
                code,
                oom_killed: false,
            }),
            (None, Some((code, message)), _) => Err(match code {
                127 => EngineError::CommandNotFound(message),
                126 => EngineError::NotExecutable(message),
                _ => EngineError::Backend(message),
            }),
            // Stopped by SIGKILL from `vessel kill`/`stop`: as a container killed with 9.
            (None, None, Some(ExitReason::Stopped)) => Ok(Exit {
                code: 128 + libc::SIGKILL,
                oom_killed: false,
            }),
            (None, None, reason) => Err(EngineError::Backend(format!(
                "the VM ended ({reason:?}) without reporting an exit status; {}",
                serial_tail(&log)
            ))),
        }
    }

    fn kill(&self, inst: &Instance, signal: i32) -> Result<()> {
        // In the monitor (signal forwarding): deliver to the workload in the guest; KILL
        // stops the VM itself.
        if let Some(r) = self.running().as_ref().filter(|r| r.id == inst.id) {
            if signal == libc::SIGKILL {
                r.stop.stop();
            } else {
                let _ = r.control.send(Control::Signal(signal));
            }
            return Ok(());
        }
        // From another process: the monitor is the VMM; it forwards what it catches, and
        // SIGKILL to it ends the VM (as killing a Firecracker process does).
        let (pid, start) = inst.monitor.ok_or_else(|| {
            EngineError::Conflict(format!("instance {} has no VMM process", inst.name))
        })?;
        if !catalogue::alive(pid, start) {
            return Err(EngineError::Conflict(format!(
                "instance {} is not running",
                inst.name
            )));
        }
        // The monitor forwards the signals it catches to the workload; a hard kill is
        // asked for with our own signal so that the monitor records it.
        let sig = if signal == libc::SIGKILL {
            stop_signal()
        } else {
            signal
        };
        // SAFETY: kill(2) on a pid we verified is our live monitor.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(EngineError::Backend(format!(
                "signal the VMM {pid}: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    fn alive(&self, inst: &Instance) -> bool {
        inst.monitor
            .is_some_and(|(pid, start)| catalogue::alive(pid, start))
    }

    fn exec(&self, inst: &Instance, dir: &Path, req: &ExecRequest, stdio: Stdio) -> Result<Exec> {
        let r = &inst.request;
        let mut env = r.env.clone();
        for kv in &req.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        let config = GuestConfig {
            args: req.args.clone(),
            env,
            workdir: req.workdir.clone().unwrap_or_else(|| r.workdir.clone()),
            user: req.user.clone().unwrap_or_else(|| r.user.clone()),
            hostname: r.hostname.clone(),
            tty: req.tty,
            // Our stdin always goes over (/dev/null without -i: EOF at once).
            interactive: true,
            ..Default::default()
        };
        let conn = vm_exec::start(dir, &inst.name, &config)?;
        let (stdin, stdout, stderr, pty_master) = match stdio {
            Stdio::Fds {
                stdin,
                stdout,
                stderr,
            } => (stdin, stdout, Some(stderr), None),
            Stdio::Pty => {
                let pty = raw_pty(None)?;
                let slave_in = pty
                    .slave
                    .try_clone()
                    .map_err(|e| EngineError::Backend(format!("dup: {e}")))?;
                (slave_in, pty.slave, None, Some(pty.master))
            }
        };
        // The caller waits for a process: a child of ours relays the session and exits
        // with the guest process's status.
        // SAFETY: `vessel exec` is single-threaded here; the child runs only the relay
        // (which starts its own threads) and leaves with _exit, never returning.
        match unsafe { libc::fork() } {
            -1 => Err(EngineError::Backend(format!(
                "fork: {}",
                std::io::Error::last_os_error()
            ))),
            0 => {
                drop(pty_master);
                let code = vm_exec::relay(conn, stdin, stdout, stderr, req.tty);
                // SAFETY: ends the relay process without running the parent's destructors.
                unsafe { libc::_exit(code.clamp(0, 255)) }
            }
            pid => Ok(Exec { pid, pty_master }),
        }
    }

    fn usage(&self, inst: &Instance) -> Result<super::backend::Usage> {
        // The VMM process holds the VM: its CPU time is the vCPUs' and its own, its
        // resident memory what the guest has touched, its storage I/O the virtio disk's.
        // The guest's own processes and its NIC's counters are not read from here.
        let dir = self.config.root.join("instances").join(&inst.id);
        let pid = super::vm_jail::vmm_pid(&dir).ok_or_else(|| {
            EngineError::Conflict(format!("the VMM of {} is not running", inst.name))
        })?;
        let read =
            |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
        let stat = read("stat");
        let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
        let f: Vec<u64> = after
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // utime and stime, in USER_HZ (100) ticks.
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        let kib = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        let status = read("status");
        let io = read("io");
        let bytes = |key: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let memory_mib = inst
            .request
            .memory
            .map(|m| m >> 20)
            .unwrap_or(DEFAULT_MEMORY_MIB as u64);
        Ok(super::backend::Usage {
            cpu_ns: ticks * 10_000_000,
            memory: kib(&status, "VmRSS:").unwrap_or(0) * 1024,
            memory_limit: Some(memory_mib << 20),
            pids: None,
            net: None,
            block: Some((bytes("read_bytes:"), bytes("write_bytes:"))),
        })
    }

    fn cleanup(&self, inst: &Instance, dir: &Path) -> Result<()> {
        let _ = std::fs::remove_file(dir.join("exec.sock"));
        // A VMM outlives its monitor by moments at most (it is killed with it); if one is
        // still there, it goes now, and the tap with it.
        vm_jail::kill_leftover(dir);
        // The tap went with the VMM's descriptor; its published ports stop now.
        if let Some(att) = &inst.request.attachment {
            self.networks.unpublish(&inst.id, att)?;
        }
        // The VM lives and dies with its VMM process; one that outlived its record goes.
        if let Some((pid, start)) = inst.monitor {
            if pid != std::process::id() as i32 && catalogue::alive(pid, start) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        Ok(())
    }
}

/// Joins the VM and bridge threads.
fn finish(r: &mut Threads) -> (Option<ExitReason>, Outcome) {
    let reason =
        r.vm.take()
            .and_then(|h| h.join().ok())
            .map(|res| match res {
                Ok(reason) => reason,
                Err(e) => ExitReason::Crashed(e.to_string()),
            });
    let outcome = r
        .bridge
        .take()
        .and_then(|h| h.join().ok())
        .unwrap_or_default();
    (reason, outcome)
}
