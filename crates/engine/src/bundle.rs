//! Instances from OCI bundles that a caller lays out itself (containerd, through
//! `containerd-shim-vessel-v2`): no image, no catalogue, no monitor of ours. The caller
//! owns the bundle, the rootfs mounts and the process lifecycle (it is the parent of
//! every process started here and waits for them through [`Bundles::wait`]); the engine
//! runs the bundle with the isolation asked for: a container, or a one-container microVM
//! booted from the bundle's rootfs (the VM runs in the caller's process, its VMM in a
//! jailed child).
//!
//! State lives where the caller says (`state_root`), so that whoever cleans up after a
//! crash (containerd's `shim delete`, run in the bundle) finds it without a data root.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci_spec::runtime::{LinuxResources, Process, Spec};
use vessel_container::{CreateOptions, Runtime, Stats, Stdio};

use super::backend::{self, Backend, ExecRequest, Started};
use super::catalogue::{Instance, Status};
use super::request::{Isolation, RunRequest};
use super::vm::VmBackend;
use super::{EngineConfig, EngineError, Result};

/// A process started from a bundle: a direct child of the caller.
#[derive(Debug)]
pub struct BundleProcess {
    /// Host pid (for a microVM: the caller's own, whose threads run the VM).
    pub pid: i32,
    /// The terminal master, when the process has a terminal.
    pub pty_master: Option<OwnedFd>,
}

/// A microVM's kernel and size; `None`s take the engine's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmSpec {
    /// Guest kernel image.
    pub kernel: Option<PathBuf>,
    /// vCPUs.
    pub cpus: Option<u8>,
    /// Memory in MiB.
    pub memory_mib: Option<u32>,
}

/// A microVM task of this process.
struct VmTask {
    inst: Instance,
    dir: PathBuf,
    backend: VmBackend,
    /// Handed to the VM at start.
    stdio: Mutex<Option<backend::Stdio>>,
    started: Mutex<Option<Started>>,
}

/// Marks a task directory as a microVM's (for a `delete` in another process).
const VM_MARK: &str = "microvm";

/// Runs OCI bundles under one state directory.
pub struct Bundles {
    config: EngineConfig,
    runtime: Runtime,
    state_root: PathBuf,
    vms: Mutex<HashMap<String, Arc<VmTask>>>,
}

fn err(e: vessel_container::Error) -> EngineError {
    match e {
        vessel_container::Error::NotFound(id) => EngineError::NoSuchInstance(id),
        e @ (vessel_container::Error::InvalidStatus { .. }
        | vessel_container::Error::AlreadyExists(_)) => EngineError::Conflict(e.to_string()),
        e => super::container::rt_err(e),
    }
}

fn backend_stdio(stdio: Stdio) -> Result<backend::Stdio> {
    match stdio {
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => Ok(backend::Stdio::Fds {
            stdin,
            stdout,
            stderr,
        }),
        Stdio::Pty => Ok(backend::Stdio::Pty),
        Stdio::Inherit => Err(EngineError::Internal(
            "a microVM's process needs its own descriptors".into(),
        )),
    }
}

fn user_of(p: &Process) -> String {
    format!("{}:{}", p.user().uid(), p.user().gid())
}

/// The run request of a microVM from the bundle's spec. What a VM cannot honour (bind
/// mounts from the host) is refused by name.
fn vm_request(id: &str, spec: &Spec, vm: &VmSpec) -> Result<RunRequest> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| EngineError::InvalidFlag("the bundle's spec has no process".into()))?;
    for m in spec.mounts().iter().flatten() {
        let bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if bind {
            return Err(EngineError::InvalidFlag(format!(
                "bind mount of {} on {} into a microVM: vessel does not share host paths \
                 into a VM from a bundle",
                m.source()
                    .as_ref()
                    .map(|s| s.display().to_string())
                    .unwrap_or_default(),
                m.destination().display()
            )));
        }
    }
    Ok(RunRequest {
        env: process.env().clone().unwrap_or_default(),
        workdir: process.cwd().display().to_string(),
        user: user_of(process),
        hostname: spec.hostname().clone().unwrap_or_else(|| id.to_string()),
        tty: process.terminal().unwrap_or(false),
        interactive: true,
        read_only: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        memory: vm.memory_mib.map(|m| u64::from(m) << 20),
        cpus: vm.cpus.map(f64::from),
        kernel: vm.kernel.clone(),
        ..RunRequest::plain(Isolation::Vm, process.args().clone().unwrap_or_default())
    })
}

impl Bundles {
    /// Bundles whose runtime state lives under `state_root`, every container process
    /// exec'd through the engine's entry program (`config.entry`), microVMs booted with
    /// the engine's kernel and agent.
    pub fn new(config: &EngineConfig, state_root: impl Into<PathBuf>) -> Bundles {
        let state_root = state_root.into();
        Bundles {
            config: config.clone(),
            runtime: Runtime::new(state_root.clone()).with_entry(config.entry.clone()),
            state_root,
            vms: Mutex::new(HashMap::new()),
        }
    }

    /// Whether task `id` is a microVM of this process (its first process is waited for
    /// only once started).
    pub fn is_vm(&self, id: &str) -> bool {
        self.vm(id).is_some()
    }

    fn vm(&self, id: &str) -> Option<Arc<VmTask>> {
        self.vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn vm_only(what: &str) -> EngineError {
        EngineError::InvalidFlag(format!(
            "{what} of a microVM task: not supported by vessel yet"
        ))
    }

    /// The engine's settings for a bundle's microVM: its disk is made under the state
    /// root (inside the bundle, so it goes with the bundle even if no cleanup of ours
    /// ever runs), its initramfs shared with every VM of the engine's data root.
    fn vm_config(&self) -> Result<EngineConfig> {
        let shared = self.config.root.join("vm/initramfs");
        std::fs::create_dir_all(&shared).map_err(|e| EngineError::io("create", &shared, e))?;
        let vm_dir = self.state_root.join("vm");
        std::fs::create_dir_all(&vm_dir).map_err(|e| EngineError::io("create", &vm_dir, e))?;
        let link = vm_dir.join("initramfs");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(&shared, &link)
                .map_err(|e| EngineError::io("link", &link, e))?;
        }
        Ok(EngineConfig {
            root: self.state_root.clone(),
            ..self.config.clone()
        })
    }

    /// Creates instance `id` from `bundle` (its `config.json` and root). A container's
    /// process is left blocked before its program until [`Bundles::start`]; a microVM's
    /// disks are made, and it boots at start.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        isolation: Isolation,
        vm: &VmSpec,
        stdio: Stdio,
    ) -> Result<BundleProcess> {
        if isolation == Isolation::Vm {
            return self.create_vm(id, bundle, vm, stdio);
        }
        if *vm != VmSpec::default() {
            return Err(EngineError::InvalidFlag(
                "a kernel, vCPUs or memory size a microVM: not a container".into(),
            ));
        }
        let st = self
            .runtime
            .create(
                id,
                bundle,
                CreateOptions {
                    stdio,
                    pid_file: None,
                    console_socket: None,
                },
            )
            .map_err(err)?;
        let pid = st
            .pid
            .ok_or_else(|| EngineError::Internal(format!("{id}: created without an init")))?;
        Ok(BundleProcess {
            pid,
            pty_master: st.pty_master,
        })
    }

    fn create_vm(
        &self,
        id: &str,
        bundle: &Path,
        vm: &VmSpec,
        stdio: Stdio,
    ) -> Result<BundleProcess> {
        validate_id(id)?;
        let path = bundle.join("config.json");
        let spec = Spec::load(&path)
            .map_err(|e| EngineError::InvalidFlag(format!("{}: {e}", path.display())))?;
        let request = vm_request(id, &spec, vm)?;
        let rootfs = spec
            .root()
            .as_ref()
            .map(|r| bundle.join(r.path()))
            .unwrap_or_else(|| bundle.join("rootfs"));
        let inst = Instance {
            id: id.to_string(),
            name: id.to_string(),
            image: format!("bundle {}", bundle.display()),
            image_id: vm_disk_id(bundle),
            status: Status::Created,
            pid: None,
            monitor: None,
            exit_code: None,
            oom_killed: false,
            created: chrono::Utc::now().to_rfc3339(),
            started_at: None,
            finished_at: None,
            error: None,
            request,
        };
        let dir = self.state_root.join(id);
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create", &dir, e))?;
        std::fs::write(dir.join(VM_MARK), &inst.image_id)
            .map_err(|e| EngineError::io("write", dir.join(VM_MARK), e))?;
        let backend = VmBackend::new(
            &self.vm_config()?,
            vessel_network::Networks::new(self.config.network_dir.clone()),
        );
        if let Err(e) = backend.prepare(&inst, &dir, &[rootfs]) {
            super::vm::remove_image_disk(&self.state_root, &inst.image_id);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let task = VmTask {
            inst,
            dir,
            backend,
            stdio: Mutex::new(Some(backend_stdio(stdio)?)),
            started: Mutex::new(None),
        };
        self.vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), Arc::new(task));
        Ok(BundleProcess {
            pid: std::process::id() as i32,
            pty_master: None,
        })
    }

    /// Lets the created instance run its program (boots a microVM, until its program
    /// runs). Returns the terminal master a microVM makes only now.
    pub fn start(&self, id: &str) -> Result<Option<OwnedFd>> {
        let Some(vm) = self.vm(id) else {
            self.runtime.start(id).map_err(err)?;
            return Ok(None);
        };
        let stdio = vm
            .stdio
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| EngineError::Conflict(format!("{id} was already started")))?;
        let mut started = vm.backend.start(&vm.inst, &vm.dir, stdio)?;
        let master = started.pty_master.take();
        *vm.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
        Ok(master)
    }

    /// Waits for the instance's first process (`pid`, as create returned it) to end:
    /// its exit status, or 128 + the signal that ended it.
    pub fn wait(&self, id: &str, pid: i32) -> Result<i32> {
        if let Some(vm) = self.vm(id) {
            let started = vm
                .started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .ok_or_else(|| EngineError::Conflict(format!("{id} has not started")))?;
            return Ok(vm.backend.wait(&vm.inst, &started)?.code);
        }
        wait_pid(pid)
    }

    /// Sends `signal` to the instance's first process, or with `all` to all of them.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        if let Some(vm) = self.vm(id) {
            // The guest's processes are the workload's: `all` reaches them through it.
            return vm.backend.kill(&vm.inst, signal);
        }
        self.runtime.kill(id, signal, all).map_err(err)
    }

    /// Runs `process` inside the running instance (a child of the caller).
    pub fn exec(&self, id: &str, process: &Process, stdio: Stdio) -> Result<BundleProcess> {
        if let Some(vm) = self.vm(id) {
            let req = ExecRequest {
                args: process.args().clone().unwrap_or_default(),
                env: process.env().clone().unwrap_or_default(),
                workdir: Some(process.cwd().display().to_string()),
                user: Some(user_of(process)),
                tty: process.terminal().unwrap_or(false),
            };
            let e = vm
                .backend
                .exec(&vm.inst, &vm.dir, &req, backend_stdio(stdio)?)?;
            return Ok(BundleProcess {
                pid: e.pid,
                pty_master: e.pty_master,
            });
        }
        let p = self.runtime.exec_process(id, process, stdio).map_err(err)?;
        Ok(BundleProcess {
            pid: p.pid.as_raw(),
            pty_master: p.pty_master,
        })
    }

    /// Every process of the instance (host pids; a microVM's is the process running it).
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        if self.vm(id).is_some() {
            return Ok(vec![std::process::id() as i32]);
        }
        Ok(self
            .runtime
            .pids(id)
            .map_err(err)?
            .into_iter()
            .map(|p| p.as_raw())
            .collect())
    }

    /// Resource usage from the instance's cgroup.
    pub fn stats(&self, id: &str) -> Result<Stats> {
        if self.vm(id).is_some() {
            return Err(Bundles::vm_only("statistics"));
        }
        self.runtime.stats(id).map_err(err)
    }

    /// Whether the OOM killer killed a process of the instance.
    pub fn oom_killed(&self, id: &str) -> Result<bool> {
        if self.vm(id).is_some() {
            return Ok(false);
        }
        self.runtime.oom_killed(id).map_err(err)
    }

    /// Applies new resource limits.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        if self.vm(id).is_some() {
            return Err(Bundles::vm_only("a resource update"));
        }
        self.runtime.update(id, resources).map_err(err)
    }

    /// Freezes every process of the instance.
    pub fn pause(&self, id: &str) -> Result<()> {
        if self.vm(id).is_some() {
            return Err(Bundles::vm_only("pause"));
        }
        self.runtime.pause(id).map_err(err)
    }

    /// Thaws the paused instance.
    pub fn resume(&self, id: &str) -> Result<()> {
        if self.vm(id).is_some() {
            return Err(Bundles::vm_only("resume"));
        }
        self.runtime.resume(id).map_err(err)
    }

    /// Removes every trace of the instance: its processes (a microVM's VMM), cgroups,
    /// disks and state. Idempotent, and works whatever became of the process that
    /// created it.
    pub fn delete(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let dir = self.state_root.join(id);
        let vm = self
            .vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(vm) = vm {
            vm.backend.cleanup(&vm.inst, &vm.dir)?;
        } else if dir.join(VM_MARK).exists() {
            // A microVM of a process that died: its VMM (if it outlived it) goes.
            super::vm_jail::kill_leftover(&dir);
        }
        if let Some(bundle) = self.state_root.parent() {
            super::vm::remove_image_disk(&self.state_root, &vm_disk_id(bundle));
        }
        if dir.join(VM_MARK).exists() {
            return std::fs::remove_dir_all(&dir).map_err(|e| EngineError::io("remove", &dir, e));
        }
        self.runtime.delete(id, true).map_err(err)
    }
}

/// Waits for child `pid`: its exit status, or 128 + the signal that killed it.
fn wait_pid(pid: i32) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(EngineError::Backend(format!("wait for pid {pid}: {e}"))),
        }
    }
}

/// The name of a bundle's microVM disk: from the bundle's path (FNV-1a), so that a
/// cleanup in another process finds it without our records.
fn vm_disk_id(bundle: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bundle.as_os_str().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("bundle-{h:016x}")
}

/// A task id as a directory name: letters, digits, `_`, `-`, `.`; not `.` or `..`.
fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidFlag(format!(
            "task id {id:?}: use letters, digits, '_', '-' and '.' (at most 128)"
        )))
    }
}
