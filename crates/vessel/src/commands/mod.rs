//! One function per command: call the engine or the image store, print the result.

mod build;
mod compare;
mod containers;
mod images;
mod network;
mod oci;
mod transfer;

use vessel_image::Store;

use vessel_engine::{Engine, EngineConfig};

use crate::cli::{Cli, Command, ImageCommand};
use crate::{CmdResult, Failure};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> CmdResult {
    // The processes that fork a container's processes run from a sealed view of this
    // binary, so that nothing in the container can write the host's vessel through
    // /proc/<pid>/exe (see vessel_container::sealed). `run`'s monitor seals itself as it
    // starts (monitor::fork_early), off the path of the command.
    if forks_container_processes(&cli.command) {
        vessel_container::sealed::ensure_sealed()
            .map_err(|e| Failure::new(crate::EXIT_ENGINE, e))?;
    }
    let root = cli.global.root;
    let store = || Store::open(&root).map_err(|e| Failure::new(crate::EXIT_ENGINE, e));
    let config = || engine_config(&root);
    let engine = || Engine::open(&config()?).map_err(|e| Failure::new(crate::EXIT_ENGINE, e));
    match cli.command {
        Command::Run(a) => {
            tracing::debug!("run: parsed");
            // First, while this process has one thread and no database open: the
            // instance's monitor, forked, opens the engine while we create the instance.
            let config = config()?;
            let early =
                vessel_engine::monitor::fork_early(&config, !a.detach, a.interactive, a.tty, a.rm)
                    .map_err(|e| Failure::new(crate::EXIT_ENGINE, e))?;
            // Our caller waits for our exit; the monitor writes after us and checkpoints
            // once the run has returned.
            vessel_db::defer_checkpoints();
            // Before the engine opens: the warm-up overlaps with that too.
            let warm = Engine::warm_up(containers::isolation_of(a.isolation), a.userns);
            tracing::debug!("run: monitor forked");
            match Engine::open_store_first(&config).map_err(|e| Failure::new(crate::EXIT_ENGINE, e))
            {
                Ok(engine) => {
                    tracing::debug!("run: engine open");
                    containers::run(&engine, &a, warm, early)
                }
                Err(f) => {
                    early.abandon();
                    Err(f)
                }
            }
        }
        Command::Create(a) => containers::create(&engine()?, &a),
        Command::Start { attach, instances } => containers::start(&engine()?, attach, &instances),
        Command::Ps(a) => containers::ps(&engine()?, &a),
        Command::Logs(a) => containers::logs(&engine()?, &a),
        Command::Exec(a) => containers::exec(&engine()?, &a),
        Command::Stop { time, instances } => containers::stop(&engine()?, time, &instances),
        Command::Kill { signal, instances } => containers::kill(&engine()?, &signal, &instances),
        Command::Wait { instances } => containers::wait(&engine()?, &instances),
        Command::Rm { force, instances } => containers::rm(&engine()?, force, &instances),
        Command::Inspect { names } => containers::inspect(&engine()?, &names),
        Command::Compare(a) => compare::compare(&config()?, &a),
        Command::Oci(c) => oci::run(c),
        Command::Network(c) => network::run(&engine()?, &c),
        Command::Monitor { id, attached } => {
            Ok(vessel_engine::monitor::run(&engine()?, &id, attached))
        }
        Command::MonitorEarly {
            attached,
            stdin,
            tty,
            remove,
        } => Ok(vessel_engine::monitor::early(
            &config()?,
            (attached, stdin, tty, remove),
        )),
        // The VMM opens nothing, the engine least of all: its monitor handed it the VM.
        Command::Vmm => Ok(vessel_engine::vm_jail::run()),
        Command::MonitorFinish { id, code } => {
            Ok(vessel_engine::monitor::finish(&engine()?, &id, code))
        }
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::list(&store()?, &a),
        Command::Image(ImageCommand::Inspect { images: names }) => {
            images::inspect(&store()?, &names)
        }
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::remove(&store()?, &a),
        Command::Tag { source, target } => images::tag(&store()?, &source, &target),
        Command::Build(a) => build::build(&engine()?, &a),
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            images::import(&store()?, &a)
        }
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => transfer::pull(&store()?, &a),
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => transfer::push(&store()?, &a),
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => transfer::load(&store()?, &a),
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => transfer::save(&store()?, &a),
    }
}

/// The engine's settings, built once here from `--root` and the environment:
/// `VESSEL_RUN_DIR`, `VESSEL_NETWORK_DIR`, `VESSEL_KERNEL_DIR`, `VESSEL_INIT`,
/// `VESSEL_SHIM` (else beside this binary), and the VMM's diagnostics
/// (`VESSEL_VMM_SECCOMP`, `VESSEL_LOG`, `RUST_BACKTRACE`). The engine passes them on to
/// the monitors it starts, which read them back here.
fn engine_config(root: &std::path::Path) -> Result<EngineConfig, Failure> {
    let exe = vessel_container::sealed::host_exe()
        .map_err(|e| Failure::new(crate::EXIT_ENGINE, format!("locate the vessel binary: {e}")))?;
    Ok(EngineConfig::from_vars(root, &exe, |k| std::env::var_os(k)))
}

/// Whether `cmd` forks processes that enter a container (and so must run sealed).
fn forks_container_processes(cmd: &Command) -> bool {
    use crate::cli::OciCommand;
    matches!(
        cmd,
        Command::Exec(_)
            | Command::Build(_)
            | Command::Monitor { .. }
            | Command::MonitorEarly { .. }
            | Command::Oci(OciCommand::Create { .. })
    )
}
