//! The VMM of a microVM in a jailed process of its own (Firecracker's jailer is the
//! model). The monitor keeps the guest channel, `exec.sock`, the logs and the database;
//! the process that runs guest code holds only what the VM needs:
//!
//! - The monitor opens every file the VM uses (kernel, initramfs, disks with their
//!   modes, the console log, `/dev/kvm`, the tap, the VM end of the guest channel) and
//!   starts `vessel __vmm` with `clone(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET |
//!   CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP)` and an `execveat` of the sealed
//!   binary (the monitor's own sealed view, see `vessel_container::sealed`): pid 1 of its
//!   own pid namespace, in a network namespace with no interface (the tap is a
//!   descriptor), with the files as inherited descriptors and the [`Spec`] as JSON on
//!   fd 3.
//! - Before it parses anything, the VMM jails itself ([`vessel_vmm::jail::Jail`]): an
//!   empty read-only root, no capabilities in any set, uid and gid [`VMM_ID_BASE`] + the
//!   monitor's pid (ids that own nothing on the host, one per live VMM), no new
//!   privileges, not dumpable, SIGKILL when the monitor dies, small rlimits. It builds
//!   the VM from the descriptors, installs the process-wide seccomp filter on every
//!   thread (`TSYNC`; the vCPU and I/O threads add theirs) and only then runs the guest.
//! - It reports on fd 4 ([`Status`] JSON lines): built (or why not), then how the guest
//!   ended. A byte on fd 5, or its end (the monitor died), stops the VM.
//!
//! The VMM's host pid and start time are in `<instance dir>/vmm.pid` while it runs
//! ([`vmm_pid`]; `vessel inspect` shows it as `State.VmmPid`).

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vessel_vmm::{DiskConfig, ExitReason, NetConfig, OpenFiles, SerialOut, Vm, VmConfig};

use super::{EngineError, Result};

/// The VMM's uid and gid are this plus the monitor's pid (below 2^22): a range no
/// distribution gives to users or to subordinate id maps, so the ids own nothing on the
/// host, and no two live VMMs share one.
pub const VMM_ID_BASE: u32 = 0x7000_0000;

/// The uid and gid of the VMM of the monitor `pid`.
fn vmm_id(pid: u32) -> u32 {
    VMM_ID_BASE + (pid & 0x003f_ffff)
}

/// Where the VMM reads its [`Spec`].
const SPEC_FD: RawFd = 3;
/// Where the VMM writes its [`Status`] lines.
const STATUS_FD: RawFd = 4;
/// Where the VMM learns it must stop (a byte, or end of file).
const CONTROL_FD: RawFd = 5;
/// The first of the VM's files.
const FIRST_FILE_FD: RawFd = 6;
/// Most bytes of [`Spec`] JSON the VMM reads.
const MAX_SPEC: u64 = 1 << 20;
/// How long building the VM may take before the monitor gives up on the VMM.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60);

/// A file the VMM gets as a descriptor, with the host path that names it in messages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Handed {
    fd: RawFd,
    path: PathBuf,
}

/// What the monitor tells the VMM process (JSON on [`SPEC_FD`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Spec {
    /// The mount point of the empty root.
    jail_root: PathBuf,
    uid: u32,
    gid: u32,
    kvm: RawFd,
    kernel: Handed,
    initrd: Option<Handed>,
    cmdline: String,
    vcpus: u8,
    memory_mib: u32,
    /// `(file, read-only)`.
    disks: Vec<(Handed, bool)>,
    /// `None`: the serial console goes to our standard output.
    console_log: Option<Handed>,
    guest_channel: RawFd,
    /// `(tap, MAC, MTU)`.
    nics: Vec<(RawFd, [u8; 6], u16)>,
    free_page_reporting: bool,
    /// Descriptors from [`FIRST_FILE_FD`] on.
    files: u32,
    max_file_size: Option<u64>,
}

/// How a guest ended, as the VMM reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "how", rename_all = "lowercase")]
enum Ended {
    Shutdown,
    Reboot,
    Crashed { detail: String },
    Stopped,
}

impl From<ExitReason> for Ended {
    fn from(r: ExitReason) -> Ended {
        match r {
            ExitReason::Shutdown => Ended::Shutdown,
            ExitReason::Reboot => Ended::Reboot,
            ExitReason::Crashed(detail) => Ended::Crashed { detail },
            ExitReason::Stopped => Ended::Stopped,
        }
    }
}

impl From<Ended> for ExitReason {
    fn from(e: Ended) -> ExitReason {
        match e {
            Ended::Shutdown => ExitReason::Shutdown,
            Ended::Reboot => ExitReason::Reboot,
            Ended::Crashed { detail } => ExitReason::Crashed(detail),
            Ended::Stopped => ExitReason::Stopped,
        }
    }
}

/// What the VMM process tells the monitor (JSON lines on [`STATUS_FD`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Status {
    /// Jailed, the VM built and the process filter installed: the guest starts now.
    Built,
    /// The VM could not be jailed or built.
    Failed { message: String },
    /// The guest ended.
    Ended { reason: Ended },
}

/// The resources of one VM, opened by the monitor for its VMM process.
pub struct VmmFiles {
    /// `/dev/kvm`.
    pub kvm: File,
    /// The kernel image, read-only.
    pub kernel: (PathBuf, File),
    /// The initramfs, read-only.
    pub initrd: Option<(PathBuf, File)>,
    /// The disks, open read-only or read-write as the flag says.
    pub disks: Vec<(PathBuf, File, bool)>,
    /// The console log (read, append), or `None` for our standard output.
    pub console_log: Option<(PathBuf, File)>,
    /// The VM's end of the guest channel.
    pub guest_channel: OwnedFd,
    /// Taps with their MAC address and MTU.
    pub nics: Vec<NetConfig>,
}

/// The rest of a VM's configuration.
pub struct VmmSettings {
    /// Kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest RAM, MiB.
    pub memory_mib: u32,
    /// Where the empty root is mounted (in the VMM's namespace only).
    pub jail_root: PathBuf,
    /// The virtio-balloon free page reporting (see [`VmConfig::free_page_reporting`]).
    pub free_page_reporting: bool,
}

/// Opens `path` for the VMM: read-only, or read-write.
pub fn open_for_vmm(path: &Path, write: bool) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| EngineError::io("open for the VMM", path, e))
}

/// Opens (creating, 0600) the console log for the VMM.
pub fn open_console_log(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| EngineError::io("open for the VMM", path, e))
}

/// Stops a running VMM from any thread of the monitor.
#[derive(Clone)]
pub struct VmmStop {
    control: Arc<Mutex<Option<File>>>,
    requested: Arc<std::sync::atomic::AtomicBool>,
}

impl VmmStop {
    /// Asks the VMM to stop the VM at once (as [`vessel_vmm::StopHandle::stop`]).
    pub fn stop(&self) {
        self.requested
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut c = self.control.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = c.as_mut() {
            let _ = f.write_all(b"s");
        }
    }
}

/// A started VMM process, seen from the monitor.
pub struct VmmProcess {
    pid: i32,
    status: BufReader<File>,
    stop: VmmStop,
    pid_file: PathBuf,
}

impl VmmProcess {
    /// The VMM's host pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A handle that stops the VM.
    pub fn stop_handle(&self) -> VmmStop {
        self.stop.clone()
    }

    /// Waits until the VMM ends and tells how the guest ended: what the VMM reported, or
    /// how the process died if it could not report.
    pub fn wait(mut self) -> vessel_vmm::Result<ExitReason> {
        let mut reported = None;
        let mut line = String::new();
        loop {
            line.clear();
            match self.status.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Ok(Status::Ended { reason }) = serde_json::from_str(&line) {
                        reported = Some(reason);
                    }
                }
            }
        }
        let status = reap(self.pid);
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(match reported {
            Some(r) => r.into(),
            None if self
                .stop
                .requested
                .load(std::sync::atomic::Ordering::SeqCst) =>
            {
                ExitReason::Stopped
            }
            None => ExitReason::Crashed(format!("the VMM process {} {status}", self.pid)),
        })
    }
}

/// Waits for `pid` (our child) and says how it ended.
fn reap(pid: i32) -> String {
    loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return format!("exited with {c}"),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => {
                let why = if s == nix::sys::signal::Signal::SIGSYS {
                    " (a system call its seccomp filter forbids)"
                } else {
                    ""
                };
                return format!("was killed by {s}{why}");
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return format!("cannot be waited for: {e}"),
        }
    }
}

/// The host pid of the VMM of the instance whose directory is `dir`, if it runs.
pub fn vmm_pid(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join("vmm.pid")).ok()?;
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    super::catalogue::alive(pid, start).then_some(pid)
}

/// Kills the VMM of the instance in `dir` if one is still running (its monitor was
/// killed before it could stop it) and forgets it.
pub fn kill_leftover(dir: &Path) {
    if let Some(pid) = vmm_pid(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = std::fs::remove_file(dir.join("vmm.pid"));
}

/// Collects descriptors for the child: each moved to at least [`HIGH_FD`] (so that the
/// child's `dup2`s onto low numbers clobber none of them), numbered in the child from
/// [`FIRST_FILE_FD`] on.
struct Handover {
    fds: Vec<OwnedFd>,
}

/// Where [`Handover`] keeps descriptors until the child moves them down.
const HIGH_FD: RawFd = 100;

fn high(fd: &impl AsRawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor; the result is a new one we own.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if r < 0 {
        return Err(EngineError::Backend(format!(
            "hand a descriptor to the VMM: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `r` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

impl Handover {
    fn add(&mut self, fd: impl AsRawFd) -> Result<RawFd> {
        self.fds.push(high(&fd)?);
        Ok(FIRST_FILE_FD + self.fds.len() as RawFd - 1)
    }

    fn handed(&mut self, path: PathBuf, file: File) -> Result<Handed> {
        Ok(Handed {
            fd: self.add(file)?,
            path,
        })
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| EngineError::Backend(format!("pipe for the VMM: {e}")))
}

fn cstring(s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| EngineError::Internal("a VMM argument contains a NUL".into()))
}

/// Starts the jailed VMM process of the instance in `dir` and waits until it has built
/// the VM (an error says why it could not). Its pid goes to `dir/vmm.pid`.
/// `config` names the binary to run sealed and the diagnostics its environment carries.
pub fn spawn(
    config: &crate::EngineConfig,
    dir: &Path,
    files: VmmFiles,
    settings: VmmSettings,
) -> Result<VmmProcess> {
    let serial_to_stdout = files.console_log.is_none();
    let (spec, handover) = hand_over(files, settings)?;
    let spec_r = spec_pipe(&spec)?;
    let (status_r, status_w) = pipe()?;
    let (control_r, control_w) = pipe()?;
    let exec = SealedExec::prepare(config)?;
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| EngineError::io("open", "/dev/null", e))?;
    // Child descriptor <- ours; all of ours are >= HIGH_FD, every target is below.
    let mut keep = vec![
        (SPEC_FD, high(&spec_r)?),
        (STATUS_FD, high(&status_w)?),
        (CONTROL_FD, high(&control_r)?),
        (0, high(&null)?),
    ];
    if !serial_to_stdout {
        keep.push((1, high(&null)?));
    }
    drop((spec_r, status_w, control_r, null));
    keep.extend(
        handover
            .fds
            .into_iter()
            .enumerate()
            .map(|(i, fd)| (FIRST_FILE_FD + i as RawFd, fd)),
    );
    let moves: Vec<(RawFd, RawFd)> = keep.iter().map(|(to, fd)| (*to, fd.as_raw_fd())).collect();
    let pid = clone_into_namespaces(&moves, &exec)?;
    // Only the child holds the VM's files now, the tap above all (it goes with the VMM).
    drop((keep, exec));
    let pid_file = dir.join("vmm.pid");
    if let Some(start) = super::catalogue::process_start_time(pid) {
        let _ = std::fs::write(&pid_file, format!("{pid} {start}\n"));
    }
    let mut vmm = VmmProcess {
        pid,
        status: BufReader::new(File::from(status_r)),
        stop: VmmStop {
            control: Arc::new(Mutex::new(Some(File::from(control_w)))),
            requested: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        },
        pid_file,
    };
    match vmm.first_status() {
        Ok(()) => Ok(vmm),
        Err(message) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let how = reap(pid);
            let _ = std::fs::remove_file(&vmm.pid_file);
            Err(EngineError::Backend(match message {
                Some(m) => format!("create the VM: {m}"),
                None => {
                    format!("create the VM: the VMM process {pid} {how} before the VM was built")
                }
            }))
        }
    }
}

/// The [`Spec`] of a VM, and the descriptors it names.
fn hand_over(files: VmmFiles, settings: VmmSettings) -> Result<(Spec, Handover)> {
    let id = vmm_id(std::process::id());
    let mut h = Handover { fds: Vec::new() };
    // The console to our stdout may be a file of the user's, which must not be cut.
    let max_file_size = files.console_log.is_some().then(|| {
        files
            .disks
            .iter()
            .filter_map(|(_, f, _)| f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len()))
            .max()
            .unwrap_or(0)
            .max(4 << 20)
    });
    let mut spec = Spec {
        jail_root: settings.jail_root,
        uid: id,
        gid: id,
        kvm: h.add(files.kvm)?,
        kernel: h.handed(files.kernel.0, files.kernel.1)?,
        initrd: match files.initrd {
            Some((p, f)) => Some(h.handed(p, f)?),
            None => None,
        },
        cmdline: settings.cmdline,
        vcpus: settings.vcpus,
        memory_mib: settings.memory_mib,
        disks: files
            .disks
            .into_iter()
            .map(|(p, f, ro)| Ok((h.handed(p, f)?, ro)))
            .collect::<Result<_>>()?,
        console_log: match files.console_log {
            Some((p, f)) => Some(h.handed(p, f)?),
            None => None,
        },
        guest_channel: h.add(files.guest_channel)?,
        nics: files
            .nics
            .into_iter()
            .map(|n| Ok((h.add(n.tap)?, n.mac, n.mtu)))
            .collect::<Result<_>>()?,
        free_page_reporting: settings.free_page_reporting,
        files: 0,
        max_file_size,
    };
    spec.files = h.fds.len() as u32;
    Ok((spec, h))
}

/// A pipe holding `spec` as JSON, written and closed: its read end. A spec fits in a
/// pipe's buffer (64 KiB), so it is written before the child exists.
fn spec_pipe(spec: &Spec) -> Result<OwnedFd> {
    let json =
        serde_json::to_vec(spec).map_err(|e| EngineError::Internal(format!("VMM spec: {e}")))?;
    if json.len() >= 60 << 10 {
        return Err(EngineError::Internal(format!(
            "VMM spec of {} bytes does not fit a pipe",
            json.len()
        )));
    }
    let (r, w) = pipe()?;
    File::from(w)
        .write_all(&json)
        .map_err(|e| EngineError::Backend(format!("write the VMM spec: {e}")))?;
    Ok(r)
}

/// Everything `execveat` of `vessel __vmm` needs, made before the clone (the child may
/// not allocate).
struct SealedExec {
    exe: OwnedFd,
    _argv: [CString; 2],
    argv: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    env: Vec<*const libc::c_char>,
}

impl SealedExec {
    /// The sealed binary: our own view of it if we run sealed (the monitor does), else a
    /// fresh sealed view of `config.exe`, the host binary (see `sealed::host_exe`), which
    /// is also `argv[0]`; the environment only what the VMM reads ([`crate::config::VMM_ENV`],
    /// as the front end gave them in `config.vmm_env`).
    fn prepare(config: &crate::EngineConfig) -> Result<SealedExec> {
        use vessel_container::sealed;
        let exe: OwnedFd = if sealed::running_sealed() {
            File::open("/proc/self/exe")
                .map_err(|e| EngineError::io("open", "/proc/self/exe", e))?
                .into()
        } else {
            sealed::seal(&config.exe).map_err(|e| EngineError::Backend(e.to_string()))?
        };
        let argv_owned = [
            cstring(config.exe.as_os_str().as_bytes())?,
            cstring(b"__vmm")?,
        ];
        let env_owned: Vec<CString> = config
            .vmm_env
            .iter()
            .filter_map(|(k, v)| sealed::env_entry(std::ffi::OsStr::new(k), v))
            .collect();
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Ok(SealedExec {
            exe: high(&exe)?,
            argv: ptrs(&argv_owned),
            _argv: argv_owned,
            env: ptrs(&env_owned),
            _env: env_owned,
        })
    }
}

/// `clone` into new mount, pid, network, IPC, UTS and cgroup namespaces; the child moves
/// each descriptor of `moves` (`(target, ours)`) into place and execs `exec`. Returns the
/// child's pid.
fn clone_into_namespaces(moves: &[(RawFd, RawFd)], exec: &SealedExec) -> Result<i32> {
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    // SAFETY: clone(2) without CLONE_VM behaves as fork(2) with new namespaces. The child
    // runs only async-signal-safe system calls on memory prepared before (dup2,
    // sigprocmask, execveat, _exit) and never returns from this block.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: see above; the child's own copies of the prepared buffers.
        unsafe {
            for &(to, from) in moves {
                if libc::dup2(from, to) < 0 {
                    libc::_exit(126);
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::syscall(
                libc::SYS_execveat,
                exec.exe.as_raw_fd(),
                c"".as_ptr(),
                exec.argv.as_ptr(),
                exec.env.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            libc::_exit(127);
        }
    }
    if pid < 0 {
        return Err(EngineError::Backend(format!(
            "start the VMM process (clone with new namespaces): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(pid as i32)
}

impl VmmProcess {
    /// Waits for the VMM's first report: `Err(Some(why))` if it failed, `Err(None)` if it
    /// ended or went silent first.
    fn first_status(&mut self) -> std::result::Result<(), Option<String>> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let deadline = std::time::Instant::now() + BUILD_TIMEOUT;
        let mut line = String::new();
        loop {
            if self.status.buffer().is_empty() {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(Some(format!(
                        "the VMM did not build the VM within {} s",
                        BUILD_TIMEOUT.as_secs()
                    )));
                }
                let fd = self.status.get_ref();
                let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(fd), PollFlags::POLLIN)];
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(e) => return Err(Some(format!("poll the VMM: {e}"))),
                }
            }
            line.clear();
            match self.status.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(None),
                Ok(_) => {}
            }
            match serde_json::from_str::<Status>(&line) {
                Ok(Status::Built) => return Ok(()),
                Ok(Status::Failed { message }) => return Err(Some(message)),
                Ok(Status::Ended { .. }) | Err(_) => return Err(None),
            }
        }
    }
}

/// `vessel __vmm`: the VMM process (see the module documentation). Returns the exit
/// status: 0 once the guest's end is reported, 1 if the VM could not be jailed or built.
pub fn run() -> u8 {
    // SAFETY: fd 4 is the status pipe our parent gave us; we own it from here on.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    let mut report = |s: &Status| {
        let mut line = serde_json::to_vec(s).unwrap_or_default();
        line.push(b'\n');
        let _ = status.write_all(&line);
    };
    match prepare() {
        Ok((vm, control)) => {
            report(&Status::Built);
            let stop = vm.stop_handle();
            // The monitor's byte, or its death (end of file), stops the VM.
            let watcher = std::thread::Builder::new()
                .name("vmm-control".into())
                .spawn(move || {
                    let mut b = [0u8; 1];
                    let mut c = control;
                    let _ = c.read(&mut b);
                    stop.stop();
                });
            let reason = match watcher {
                Ok(_) => vm
                    .run()
                    .unwrap_or_else(|e| ExitReason::Crashed(e.to_string())),
                Err(e) => ExitReason::Crashed(format!("start the control thread: {e}")),
            };
            report(&Status::Ended {
                reason: reason.into(),
            });
            let _ = std::io::stdout().flush();
            // SAFETY: ends the process at once: nothing else needs to run under the
            // filter (exit handlers would only make system calls it may not allow).
            unsafe { libc::_exit(0) }
        }
        Err(message) => {
            report(&Status::Failed { message });
            1
        }
    }
}

/// Reads the spec, jails this process, builds the VM and confines the process: all that
/// happens before guest code runs.
fn prepare() -> std::result::Result<(Vm, File), String> {
    // SAFETY: fds 3 and 5 are the spec and control pipes our parent gave us.
    let (spec_file, control) =
        unsafe { (File::from_raw_fd(SPEC_FD), File::from_raw_fd(CONTROL_FD)) };
    let mut json = Vec::new();
    spec_file
        .take(MAX_SPEC)
        .read_to_end(&mut json)
        .map_err(|e| format!("read the VMM spec: {e}"))?;
    let spec: Spec =
        serde_json::from_slice(&json).map_err(|e| format!("the VMM spec is not valid: {e}"))?;
    // Nothing but what the spec names stays open.
    let last = FIRST_FILE_FD + spec.files as RawFd;
    // SAFETY: close_range(2) over descriptors nobody in this process uses.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            last as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    let take = |fd: RawFd| -> std::result::Result<File, String> {
        if !(FIRST_FILE_FD..last).contains(&fd) {
            return Err(format!("descriptor {fd} was not handed over"));
        }
        // SAFETY: a descriptor in our handed-over range, taken once (each appears once
        // in the spec).
        Ok(unsafe { File::from_raw_fd(fd) })
    };
    let jail = vessel_vmm::jail::Jail {
        root: spec.jail_root.clone(),
        uid: spec.uid,
        gid: spec.gid,
        // Each vCPU, virtio queue and irq has a descriptor; 32 vCPUs and 16 disks fit.
        max_files: 256,
        // The vCPUs, the I/O and control threads, this one.
        max_threads: u64::from(spec.vcpus) + 8,
        max_file_size: spec.max_file_size,
    };
    jail.enter().map_err(|e| e.to_string())?;

    let mut files = OpenFiles::handed_over();
    files.set_kvm(take(spec.kvm)?);
    files.insert(spec.kernel.path.clone(), take(spec.kernel.fd)?);
    if let Some(h) = &spec.initrd {
        files.insert(h.path.clone(), take(h.fd)?);
    }
    let mut disks = Vec::new();
    for (h, read_only) in &spec.disks {
        files.insert(h.path.clone(), take(h.fd)?);
        disks.push(DiskConfig {
            path: h.path.clone(),
            read_only: *read_only,
        });
    }
    let serial = match &spec.console_log {
        Some(h) => {
            files.insert(h.path.clone(), take(h.fd)?);
            SerialOut::File(h.path.clone())
        }
        None => SerialOut::Stdout,
    };
    let net = spec
        .nics
        .iter()
        .map(|&(fd, mac, mtu)| {
            Ok(NetConfig {
                tap: take(fd)?.into(),
                mac,
                mtu,
            })
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let cfg = VmConfig {
        kernel: spec.kernel.path.clone(),
        initrd: spec.initrd.as_ref().map(|h| h.path.clone()),
        cmdline: spec.cmdline.clone(),
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        disks,
        serial,
        virtio_console: Some(take(spec.guest_channel)?.into()),
        free_page_reporting: spec.free_page_reporting,
        vsock_cid: None,
        net,
    };
    let vm = Vm::with_files(cfg, files).map_err(|e| e.to_string())?;
    vm.confine_process().map_err(|e| e.to_string())?;
    Ok((vm, control))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip() {
        for s in [
            Status::Built,
            Status::Failed {
                message: "no".into(),
            },
            Status::Ended {
                reason: ExitReason::Crashed("triple fault".into()).into(),
            },
            Status::Ended {
                reason: Ended::Stopped,
            },
        ] {
            let line = serde_json::to_string(&s).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Status>(&line).unwrap(), s);
        }
    }

    /// Every pid the kernel can give (at most 2^22, `PID_MAX_LIMIT`) maps to its own id,
    /// all in the range, none root's.
    #[test]
    fn each_monitor_pid_has_its_own_vmm_id() {
        assert_eq!(vmm_id(1), 0x7000_0001);
        assert_eq!(vmm_id((1 << 22) - 1), 0x703f_ffff);
        assert_ne!(vmm_id(4242), vmm_id(4243));
        let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(max <= 1 << 22, "pid_max {max}");
    }
}
