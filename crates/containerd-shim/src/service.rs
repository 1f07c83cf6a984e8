//! The task service containerd drives (task API v2 over ttrpc), over the engine's
//! [`Bundles`]. One shim serves every task of its group (a pod's containers share the
//! sandbox's shim); each task is a bundle run by the engine, and each of its processes
//! is a child of this shim, waited for by a thread of its own (not by a reaper of any
//! child, which would take the exits the engine waits for itself: its helpers, mkfs).
//!
//! Event order: a process's exit is handled under the same lock its start was, so
//! containerd always sees TaskStart (or TaskExecStarted) before that process's TaskExit.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use containerd_shim::api;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{EnumOrUnknown, MessageDyn, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::context;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use oci_spec::runtime::{LinuxResources, Process};
use vessel_engine::bundle::Bundles;
use vessel_engine::EngineConfig;

use crate::error::{Error, Result};
use crate::metrics;
use crate::options::TaskOptions;
use crate::rootfs;
use crate::stdio::{self, StdioPaths};

/// How a process ended.
#[derive(Debug, Clone, Copy)]
struct Exited {
    code: u32,
    at: SystemTime,
}

/// One process of a task: its init or an exec.
struct Proc {
    /// 0 until started (execs).
    pid: i32,
    io: StdioPaths,
    pty: Option<Arc<OwnedFd>>,
    exit: Option<Exited>,
    /// An exec's process spec, until it starts.
    spec: Option<Process>,
}

impl Proc {
    fn status(&self, paused: bool) -> api::Status {
        match (self.exit, self.pid, paused) {
            (Some(_), _, _) => api::Status::STOPPED,
            (None, 0, _) => api::Status::CREATED,
            (None, _, true) => api::Status::PAUSED,
            (None, _, false) => api::Status::RUNNING,
        }
    }
}

/// A task: a bundle the engine runs.
struct Container {
    bundle: PathBuf,
    bundles: Arc<Bundles>,
    /// Whether this shim mounted the rootfs (and must unmount it).
    mounted: bool,
    init: Proc,
    /// Whether the init was started (it exists, blocked, from create on).
    started: bool,
    paused: bool,
    execs: HashMap<String, Proc>,
}

impl Container {
    fn proc(&self, exec_id: &str) -> Result<&Proc> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| Error::NotFound(format!("no exec process {exec_id:?}")))
    }
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Container>,
}

/// Stack of the threads that wait for a process.
const WAITER_STACK: usize = 256 * 1024;

type Event = (&'static str, Box<dyn MessageDyn>);

struct Inner {
    config: EngineConfig,
    exit: Arc<ExitSignal>,
    state: Mutex<State>,
    exited: Condvar,
    events: Mutex<Sender<Event>>,
}

/// The ttrpc task service.
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

/// Where the engine keeps the runtime state of a bundle's task: inside the bundle, so
/// that `shim delete` (run in the bundle after a crash) finds it.
pub fn state_root(bundle: &Path) -> PathBuf {
    bundle.join("vessel")
}

fn timestamp(t: SystemTime) -> MessageField<Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    MessageField::some(Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    })
}

fn exec_key(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        id.to_string()
    } else {
        exec_id.to_string()
    }
}

impl TaskService {
    /// The service for the tasks of `namespace`, publishing events through `publisher`.
    /// Starts the threads that receive exits and forward events.
    pub fn new(
        namespace: &str,
        config: EngineConfig,
        exit: Arc<ExitSignal>,
        publisher: RemotePublisher,
    ) -> Result<TaskService> {
        let (tx, rx) = channel::<Event>();
        let inner = Arc::new(Inner {
            config,
            exit,
            state: Mutex::new(State::default()),
            exited: Condvar::new(),
            events: Mutex::new(tx),
        });
        let ns = namespace.to_string();
        std::thread::Builder::new()
            .name("events".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                for (topic, event) in rx {
                    if let Err(e) = publisher.publish(context::with_timeout(0), topic, &ns, event) {
                        log::warn!("publish {topic} to containerd: {e}");
                    }
                }
            })
            .map_err(|e| Error::io("spawn", "the event thread", e))?;
        Ok(TaskService { inner })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        let tx = self.events.lock().unwrap_or_else(|e| e.into_inner());
        // Fails only once the event thread is gone, as the shim exits.
        let _ = tx.send((topic, event));
    }

    /// A child of the shim ended (`code`: its status, or 128 + signal).
    fn on_exit(&self, pid: i32, code: i32) {
        let exited = Exited {
            code: u32::try_from(code).unwrap_or(255),
            at: SystemTime::now(),
        };
        let mut st = self.lock();
        let mut found = None;
        let st = &mut *st;
        for (id, c) in st.containers.iter_mut() {
            if c.init.pid == pid && c.init.exit.is_none() {
                c.init.exit = Some(exited);
                found = Some((
                    id.clone(),
                    String::new(),
                    c.bundles.oom_killed(id).unwrap_or(false),
                ));
                break;
            }
            if let Some((eid, p)) = c
                .execs
                .iter_mut()
                .find(|(_, p)| p.pid == pid && p.exit.is_none())
            {
                p.exit = Some(exited);
                found = Some((id.clone(), eid.clone(), false));
                break;
            }
        }
        match found {
            Some((id, exec_id, oom)) => {
                if oom {
                    self.publish(
                        topics::TASK_OOM_EVENT_TOPIC,
                        Box::new(TaskOOM {
                            container_id: id.clone(),
                            ..Default::default()
                        }),
                    );
                }
                self.publish_exit(&id, &exec_id, pid, exited);
                self.exited.notify_all();
            }
            None => log::warn!("exit of unknown pid {pid} ({code})"),
        }
    }

    /// Waits for child `pid` in a thread of its own and reports its exit. Called with
    /// the state locked, after `pid` is recorded: its exit is handled after that.
    fn watch(self: &Arc<Self>, pid: i32) -> Result<()> {
        self.spawn_waiter(pid, move || wait_exit(pid))
    }

    /// [`Inner::watch`] for a task's first process, which the engine waits for (a
    /// microVM's is no child process).
    fn watch_init(self: &Arc<Self>, bundles: &Arc<Bundles>, id: &str, pid: i32) -> Result<()> {
        let (bundles, id) = (bundles.clone(), id.to_string());
        self.spawn_waiter(pid, move || {
            bundles.wait(&id, pid).unwrap_or_else(|e| {
                log::warn!("wait for task {id}: {e}");
                255
            })
        })
    }

    fn spawn_waiter(
        self: &Arc<Self>,
        pid: i32,
        wait: impl FnOnce() -> i32 + Send + 'static,
    ) -> Result<()> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name(format!("wait-{pid}"))
            .stack_size(WAITER_STACK)
            .spawn(move || {
                let code = wait();
                if let Some(inner) = weak.upgrade() {
                    inner.on_exit(pid, code);
                }
            })
            .map(|_| ())
            .map_err(|e| Error::io("spawn a waiter thread for", format!("pid {pid}"), e))
    }

    fn publish_exit(&self, id: &str, exec_id: &str, pid: i32, e: Exited) {
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id: id.to_string(),
                id: exec_key(id, exec_id),
                pid: pid as u32,
                exit_status: e.code,
                exited_at: timestamp(e.at),
                ..Default::default()
            }),
        );
    }

    fn create(self: &Arc<Self>, req: &api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(Error::Unsupported(
                "restoring a task from a checkpoint".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let annotations = rootfs::annotations(&bundle)?;
        let opts = TaskOptions::parse(&annotations, req.options.as_ref())?;
        let mut st = self.lock();
        if st.containers.contains_key(&req.id) {
            return Err(Error::Conflict(format!("task {:?} already exists", req.id)));
        }
        let mounted = rootfs::mount(&bundle, &req.rootfs)?;
        let io = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let bundles = Arc::new(Bundles::new(&self.config, state_root(&bundle)));
        let created = io.prepare().and_then(|mut prepared| {
            let p = bundles.create(&req.id, &bundle, opts.isolation, &opts.vm, prepared.take())?;
            let pty = prepared.attach_pty(p.pty_master)?;
            Ok((p.pid, pty))
        });
        let (pid, pty) = match created {
            Ok(v) => v,
            Err(e) => {
                let _ = bundles.delete(&req.id);
                if mounted {
                    rootfs::unmount(&bundle);
                }
                return Err(e);
            }
        };
        // A microVM boots at start, and is waited for from then on.
        let watched = if bundles.is_vm(&req.id) {
            Ok(())
        } else {
            self.watch_init(&bundles, &req.id, pid)
        };
        if let Err(e) = watched {
            let _ = bundles.delete(&req.id);
            if mounted {
                rootfs::unmount(&bundle);
            }
            return Err(e);
        }
        st.containers.insert(
            req.id.clone(),
            Container {
                bundle: bundle.clone(),
                bundles,
                mounted,
                init: Proc {
                    pid,
                    io: io.clone(),
                    pty,
                    exit: None,
                    spec: None,
                },
                started: false,
                paused: false,
                execs: HashMap::new(),
            },
        );
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: io.stdin,
                    stdout: io.stdout,
                    stderr: io.stderr,
                    terminal: io.terminal,
                    ..Default::default()
                }),
                pid: pid as u32,
                ..Default::default()
            }),
        );
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn start(self: &Arc<Self>, req: &api::StartRequest) -> Result<api::StartResponse> {
        let mut st = self.lock();
        let st = &mut *st;
        let c = st
            .containers
            .get_mut(&req.id)
            .ok_or_else(|| Error::NotFound(format!("no task {:?}", req.id)))?;
        if req.exec_id.is_empty() {
            if c.started {
                return Err(Error::Conflict(format!(
                    "task {:?} already started",
                    req.id
                )));
            }
            let master = match c.bundles.start(&req.id) {
                Ok(m) => m,
                Err(e) => {
                    // Its process did not start (a program the image lacks, a microVM
                    // that crashed while booting): the task is over, as runc's would be.
                    // Left CREATED with a pid, containerd could never delete it, and its
                    // shim would stay for good.
                    let exited = Exited {
                        code: u32::from(e.exit_code()),
                        at: SystemTime::now(),
                    };
                    c.init.exit = Some(exited);
                    self.publish_exit(&req.id, "", c.init.pid, exited);
                    self.exited.notify_all();
                    return Err(e.into());
                }
            };
            c.started = true;
            let pid = c.init.pid;
            if master.is_some() {
                c.init.pty = c.init.io.attach_pty(master)?;
            }
            if c.bundles.is_vm(&req.id) {
                self.watch_init(&c.bundles, &req.id, pid)?;
            }
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(containerd_shim::protos::events::task::TaskStart {
                    container_id: req.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                }),
            );
            return Ok(api::StartResponse {
                pid: pid as u32,
                ..Default::default()
            });
        }
        let p = c
            .execs
            .get_mut(&req.exec_id)
            .ok_or_else(|| Error::NotFound(format!("no exec process {:?}", req.exec_id)))?;
        let spec = p
            .spec
            .take()
            .ok_or_else(|| Error::Conflict(format!("exec {:?} already started", req.exec_id)))?;
        let mut prepared = p.io.prepare()?;
        let started = c.bundles.exec(&req.id, &spec, prepared.take())?;
        let pid = started.pid;
        p.pty = prepared.attach_pty(started.pty_master)?;
        p.pid = pid;
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Box::new(TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: pid as u32,
                ..Default::default()
            }),
        );
        if let Err(e) = self.watch(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(e);
        }
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn state(&self, req: &api::StateRequest) -> Result<api::StateResponse> {
        let st = self.lock();
        let c = st
            .containers
            .get(&req.id)
            .ok_or_else(|| Error::NotFound(format!("no task {:?}", req.id)))?;
        let p = c.proc(&req.exec_id)?;
        let status = if req.exec_id.is_empty() && !c.started && p.exit.is_none() {
            api::Status::CREATED
        } else {
            p.status(c.paused)
        };
        Ok(api::StateResponse {
            id: exec_key(&req.id, &req.exec_id),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid as u32,
            status: EnumOrUnknown::new(status),
            stdin: p.io.stdin.clone(),
            stdout: p.io.stdout.clone(),
            stderr: p.io.stderr.clone(),
            terminal: p.io.terminal,
            exit_status: p.exit.map(|e| e.code).unwrap_or(0),
            exited_at: p.exit.map(|e| timestamp(e.at)).unwrap_or_default(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn kill(&self, req: &api::KillRequest) -> Result<()> {
        let signal = i32::try_from(req.signal)
            .map_err(|_| Error::Invalid(format!("signal {}: not a signal number", req.signal)))?;
        let st = self.lock();
        let c = st
            .containers
            .get(&req.id)
            .ok_or_else(|| Error::NotFound(format!("no task {:?}", req.id)))?;
        if req.exec_id.is_empty() {
            if req.all {
                return Ok(c.bundles.kill(&req.id, signal, true)?);
            }
            if c.init.exit.is_some() {
                return Err(Error::NotFound("process already finished".into()));
            }
            return Ok(c.bundles.kill(&req.id, signal, false)?);
        }
        let p = c.proc(&req.exec_id)?;
        if p.pid == 0 || p.exit.is_some() {
            return Err(Error::NotFound("process already finished".into()));
        }
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| Error::Invalid(format!("signal {signal}: not a signal number")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), sig)
            .map_err(|e| Error::io("kill", format!("pid {}", p.pid), e.into()))
    }

    fn delete(&self, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        let mut st = self.lock();
        let c = st
            .containers
            .get_mut(&req.id)
            .ok_or_else(|| Error::NotFound(format!("no task {:?}", req.id)))?;
        if !req.exec_id.is_empty() {
            let p = c.proc(&req.exec_id)?;
            if p.pid != 0 && p.exit.is_none() {
                return Err(Error::Conflict(format!(
                    "exec process {:?} is running: kill it first",
                    req.exec_id
                )));
            }
            let (pid, exit) = (p.pid, p.exit);
            c.execs.remove(&req.exec_id);
            // A Wait for a process that never ran would wait for good: it ends now.
            self.exited.notify_all();
            return Ok(delete_response(pid, exit));
        }
        if c.started && c.init.exit.is_none() {
            return Err(Error::Conflict(format!(
                "task {:?} is running: kill it first",
                req.id
            )));
        }
        c.bundles.delete(&req.id)?;
        if c.mounted {
            rootfs::unmount(&c.bundle);
        }
        let (pid, exit) = (c.init.pid, c.init.exit);
        st.containers.remove(&req.id);
        // A Wait for a task that never ran (its start failed) would wait for good, and
        // hold the shim's exit with it: it ends now, with "no task".
        self.exited.notify_all();
        let resp = delete_response(pid, exit);
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                pid: resp.pid,
                exit_status: resp.exit_status,
                exited_at: resp.exited_at.clone(),
                id: req.id.clone(),
                ..Default::default()
            }),
        );
        Ok(resp)
    }

    fn exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        let spec: Process = serde_json::from_slice(&req.spec.value)
            .map_err(|e| Error::Invalid(format!("exec {:?}: process spec: {e}", req.exec_id)))?;
        let mut spec = spec;
        spec.set_terminal(Some(req.terminal));
        let mut st = self.lock();
        let c = st
            .containers
            .get_mut(&req.id)
            .ok_or_else(|| Error::NotFound(format!("no task {:?}", req.id)))?;
        if c.init.exit.is_some() {
            return Err(Error::Conflict(format!("task {:?} has exited", req.id)));
        }
        if c.execs.contains_key(&req.exec_id) || req.exec_id.is_empty() {
            return Err(Error::Conflict(format!(
                "exec id {:?} already in use (or empty)",
                req.exec_id
            )));
        }
        c.execs.insert(
            req.exec_id.clone(),
            Proc {
                pid: 0,
                io: StdioPaths {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
                pty: None,
                exit: None,
                spec: Some(spec),
            },
        );
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(())
    }

    fn wait(&self, req: &api::WaitRequest) -> Result<api::WaitResponse> {
        let mut st = self.lock();
        loop {
            let c = st
                .containers
                .get(&req.id)
                .ok_or_else(|| Error::NotFound(format!("no task {:?}", req.id)))?;
            if let Some(e) = c.proc(&req.exec_id)?.exit {
                return Ok(api::WaitResponse {
                    exit_status: e.code,
                    exited_at: timestamp(e.at),
                    ..Default::default()
                });
            }
            st = self.exited.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Container) -> Result<T>) -> Result<T> {
        let mut st = self.lock();
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("no task {id:?}")))?;
        f(c)
    }
}

/// Waits for child `pid` to end: its exit status, or 128 + the signal that killed it.
fn wait_exit(pid: i32) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("wait for pid {pid}: {e}");
                return 255;
            }
        }
    }
}

fn delete_response(pid: i32, exit: Option<Exited>) -> api::DeleteResponse {
    let exit = exit.unwrap_or(Exited {
        code: 137,
        at: SystemTime::now(),
    });
    api::DeleteResponse {
        pid: pid as u32,
        exit_status: exit.code,
        exited_at: timestamp(exit.at),
        ..Default::default()
    }
}

fn ok<T>(r: Result<T>) -> TtrpcResult<T> {
    r.map_err(|e| {
        log::warn!("{e}");
        e.into()
    })
}

impl Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        ok(self.inner.create(&req))
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        ok(self.inner.start(&req))
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        ok(self.inner.state(&req))
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        ok(self.inner.kill(&req).map(|()| api::Empty::new()))
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        ok(self.inner.delete(&req))
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        ok(self.inner.exec(&req).map(|()| api::Empty::new()))
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        ok(self.inner.wait(&req))
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        ok(self.inner.with(&req.id, |c| {
            let pids = c.bundles.pids(&req.id)?;
            Ok(api::PidsResponse {
                processes: pids
                    .into_iter()
                    .map(|pid| containerd_shim::protos::types::task::ProcessInfo {
                        pid: pid as u32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }))
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        ok(self.inner.with(&req.id, |c| {
            let stats = c.bundles.stats(&req.id)?;
            Ok(api::StatsResponse {
                stats: MessageField::some(metrics::to_any(&stats)?),
                ..Default::default()
            })
        }))
    }

    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        ok(self.inner.with(&req.id, |c| {
            if !req.annotations.is_empty() {
                return Err(Error::Invalid(
                    "update of annotations: vessel changes a running task's resources only".into(),
                ));
            }
            let resources: LinuxResources = serde_json::from_slice(&req.resources.value)
                .map_err(|e| Error::Invalid(format!("update resources: {e}")))?;
            c.bundles.update(&req.id, &resources)?;
            Ok(api::Empty::new())
        }))
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        let r = self.inner.with(&req.id, |c| {
            c.bundles.pause(&req.id)?;
            c.paused = true;
            Ok(())
        });
        if r.is_ok() {
            self.inner.publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id: req.id.clone(),
                    ..Default::default()
                }),
            );
        }
        ok(r.map(|()| api::Empty::new()))
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        let r = self.inner.with(&req.id, |c| {
            c.bundles.resume(&req.id)?;
            c.paused = false;
            Ok(())
        });
        if r.is_ok() {
            self.inner.publish(
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed {
                    container_id: req.id.clone(),
                    ..Default::default()
                }),
            );
        }
        ok(r.map(|()| api::Empty::new()))
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        ok(self.inner.with(&req.id, |c| {
            let p = c.proc(&req.exec_id)?;
            let pty = p.pty.as_ref().ok_or_else(|| {
                Error::Invalid(format!(
                    "resize of {:?}: the process has no terminal",
                    exec_key(&req.id, &req.exec_id)
                ))
            })?;
            stdio::resize(pty, req.width, req.height)?;
            Ok(api::Empty::new())
        }))
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        ok(self.inner.with(&req.id, |c| {
            let p = c.proc(&req.exec_id)?;
            if req.stdin {
                stdio::close_stdin(&p.io.stdin);
            }
            Ok(api::Empty::new())
        }))
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let st = self.inner.lock();
        let task_pid = st.containers.get(&req.id).map(|c| c.init.pid).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // One shim serves a group of tasks: it stays while any is left.
        if self.inner.lock().containers.is_empty() {
            self.inner.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
