//! `containerd-shim-vessel-v2`: containerd's runtime `io.containerd.vessel.v2`, a shim v2
//! speaking task API v2 over ttrpc (containerd 1.6 and 1.7), over vessel's engine.
//!
//! containerd runs this binary three ways: `start` (spawn the long-lived shim for a
//! group of tasks, print its socket), the shim itself (serve the task service until
//! `Shutdown`), and `delete` (clean up after a shim that died, run in the bundle).

mod error;
mod metrics;
mod options;
mod rootfs;
mod service;
mod stdio;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{api, Config, ExitSignal, Flags, StartOpts};
use vessel_engine::bundle::Bundles;
use vessel_engine::EngineConfig;

use service::TaskService;

/// The runtime name containerd knows this shim by.
const RUNTIME: &str = "io.containerd.vessel.v2";

/// The annotation CRI sets on every container of a pod: the pod's tasks share a shim.
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// The shim process's side of the containerd-shim library.
struct Shim {
    exit: Arc<ExitSignal>,
    namespace: String,
    id: String,
    bundle: PathBuf,
    /// containerd's address, which names the shim's socket.
    address: String,
    /// The socket this shim serves (`unix://PATH`), when it is the serving shim.
    socket: String,
    config: EngineConfig,
}

/// Removes a shim socket (`unix://PATH`): containerd may remove the bundle, where the
/// library looks for the address, before the shim is done.
fn remove_socket(address: &str) {
    if let Some(path) = address.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
    }
}

/// The group of the bundle's task: its pod's sandbox, or itself.
fn grouping(bundle: &Path, id: &str) -> String {
    rootfs::annotations(bundle)
        .ok()
        .and_then(|a| a.get(SANDBOX_ID).cloned())
        .unwrap_or_else(|| id.to_string())
}

/// The engine's settings, built once here from this binary's location and environment.
fn engine_config() -> EngineConfig {
    let exe = std::env::current_exe()
        .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/containerd-shim-vessel-v2"));
    EngineConfig::from_vars(Path::new("/var/lib/vessel"), &exe, |k| std::env::var_os(k))
}

impl containerd_shim::Shim for Shim {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        Shim {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle,
            address: args.address.clone(),
            socket: args.socket.clone(),
            config: engine_config(),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // containerd runs `start` in the bundle: a pod's containers join the shim of
        // their sandbox, found by its socket address.
        let group = grouping(&self.bundle, &opts.id);
        let (_pid, address) = containerd_shim::spawn(opts, &group, Vec::new())?;
        containerd_shim::synchronous::util::write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<api::DeleteResponse> {
        // The shim of this task died: remove what it left (processes, cgroups, state,
        // the rootfs mount). The task's exit status is that of a killed process.
        let bundles = Bundles::new(&self.config, service::state_root(&self.bundle));
        if let Err(e) = bundles.delete(&self.id) {
            return Err(containerd_shim::Error::Other(format!(
                "delete {} in namespace {}: {e}",
                self.id, self.namespace
            )));
        }
        rootfs::unmount(&self.bundle);
        // The dead shim's socket (it served this task's group).
        remove_socket(&containerd_shim::socket_address(
            &self.address,
            &self.namespace,
            &grouping(&self.bundle, &self.id),
        ));
        let now = containerd_shim::util::timestamp()?;
        Ok(api::DeleteResponse {
            exit_status: 137,
            exited_at: Some(now).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
        remove_socket(&self.socket);
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        match TaskService::new(
            &self.namespace,
            self.config.clone(),
            self.exit.clone(),
            publisher,
        ) {
            Ok(t) => t,
            Err(e) => {
                // Nothing can be served without the exit and event threads.
                log::error!("start the task service: {e}");
                eprintln!("{RUNTIME}: start the task service: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn main() {
    // A microVM's VMM is this binary again, re-executed jailed by the engine
    // (`EngineConfig::exe`).
    if std::env::args_os().nth(1).is_some_and(|a| a == "__vmm") {
        std::process::exit(i32::from(vessel_engine::vm_jail::run()));
    }
    // Each process the shim starts is waited for by its own thread: no reaper of every
    // child, which would take the exits the engine's own helpers wait for.
    let config = Config {
        no_reaper: true,
        ..Config::default()
    };
    containerd_shim::run::<Shim>(RUNTIME, Some(config));
}
