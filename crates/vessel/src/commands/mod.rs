//! One function per command: call the engine or the image store, print the result.

mod attach;
mod build;
mod compare;
mod containers;
mod cp;
mod images;
mod inspectors;
mod login;
mod network;
mod running;
mod system;
mod transfer;
mod volume;

use vessel_image::Store;

use vessel_engine::{Engine, EngineConfig};

use crate::cli::{Cli, Command, ImageCommand};
use crate::{CmdResult, Failure};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> CmdResult {
    // No command here runs sealed: the engine's runtime execs every container process
    // through the sealed vessel-entry (Runtime::with_entry), so `run`, `exec`, `build`
    // and the monitors need no exec of their own; `vessel oci` (vessel_oci::main) seals
    // itself where it forks container processes.
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
                vessel_engine::monitor::fork_early(&config, !a.detach, a.interactive, a.tty)
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
        Command::Attach(a) => attach::attach(&engine()?, &a),
        Command::Cp { src, dest } => cp::cp(&engine()?, &src, &dest),
        Command::Port { instance, port } => {
            inspectors::port(&engine()?, &instance, port.as_deref())
        }
        Command::Diff { instance } => inspectors::diff(&engine()?, &instance),
        Command::Commit {
            author,
            changes,
            message,
            pause,
            instance,
            reference,
        } => {
            let img = engine()?
                .commit(
                    &instance,
                    &vessel_engine::commit::CommitOptions {
                        reference,
                        changes,
                        message,
                        author,
                        pause,
                    },
                )
                .map_err(|e| Failure::new(1, e))?;
            println!("{}", img.id);
            Ok(0)
        }
        Command::Export { output, instance } => {
            inspectors::export(&engine()?, &instance, output.as_deref())
        }
        Command::History {
            no_trunc,
            quiet,
            image,
        } => inspectors::history(&store()?, &image, no_trunc, quiet),
        Command::CpServe {
            pid,
            view,
            copy_up,
            into,
            shift,
            stat,
            out,
            dest,
            contents,
        } => {
            use vessel_engine::copy::{At, Direction};
            let at = match (pid, view) {
                (Some(pid), _) => At::Pid(pid),
                (None, view) => At::View(
                    serde_json::from_str(view.as_deref().unwrap_or_default())
                        .map_err(|e| crate::Failure::new(125, format!("--view: {e}")))?,
                ),
            };
            let dir = match (copy_up, out, dest) {
                _ if stat.is_some() => Direction::Stat {
                    path: stat.unwrap_or_default(),
                },
                (Some(path), _, _) => Direction::CopyUp {
                    path,
                    into: into.unwrap_or_default(),
                    shift,
                },
                (None, Some(path), _) => Direction::Out { path },
                (None, None, dest) => Direction::In {
                    dest: dest.unwrap_or_default(),
                    contents,
                },
            };
            Ok(vessel_engine::copy::serve(at, dir))
        }
        Command::Stop { time, instances } => containers::stop(&engine()?, time, &instances),
        Command::Kill { signal, instances } => containers::kill(&engine()?, &signal, &instances),
        Command::Wait { instances } => containers::wait(&engine()?, &instances),
        Command::Restart { time, instances } => containers::restart(&engine()?, time, &instances),
        Command::Pause { instances } => running::pause(&engine()?, &instances),
        Command::Unpause { instances } => running::unpause(&engine()?, &instances),
        Command::Rename { instance, new_name } => running::rename(&engine()?, &instance, &new_name),
        Command::Top { instance, ps_args } => running::top(&engine()?, &instance, &ps_args),
        Command::Stats(a) => running::stats(&engine()?, &a),
        Command::Update(a) => running::update(&engine()?, &a),
        Command::Rm {
            force,
            volumes,
            instances,
        } => containers::rm(&engine()?, force, volumes, &instances),
        Command::Inspect { names, format } => {
            containers::inspect(&engine()?, &names, format.as_ref())
        }
        Command::Compare(a) => compare::compare(&config()?, &a),
        Command::Serve { host, group } => serve(config()?, &host, group.as_deref()),
        // Reached only after vessel's own global flags (main hands `vessel oci ...` over
        // before parsing): they do not apply to runc's command line.
        Command::Oci(a) => Ok(vessel_oci::main(a.args)),
        Command::Network(c) => network::run(&engine()?, &c),
        Command::Events {
            since,
            until,
            filters,
            format,
        } => system::events(
            &engine()?,
            since.as_deref(),
            until.as_deref(),
            &filters,
            format,
        ),
        Command::Volume(c) => volume::run(&engine()?, &c),
        Command::Container(crate::cli::ContainerCommand::Prune { force: _ }) => {
            system::container_prune(&engine()?)
        }
        Command::Image(ImageCommand::Prune { all, force: _ }) => {
            system::image_prune(&engine()?, all)
        }
        Command::System(c) => system::run(&engine()?, &c),
        Command::Info { format } => system::info(&engine()?, format.as_ref()),
        Command::Monitor {
            id,
            standby,
            attached,
            attach_fds,
        } => {
            use vessel_engine::monitor;
            // What our parent placed for us, before the engine's files take numbers.
            let (sync, clients) = monitor::inherited(&attach_fds);
            match (id, standby) {
                (Some(id), false) => Ok(monitor::run(&engine()?, &id, attached, sync, clients)),
                _ => {
                    let control = monitor::inherited_channel(monitor::STANDBY_FD).ok_or_else(|| {
                        Failure::new(
                            crate::EXIT_ENGINE,
                            "__monitor --standby is internal to vessel serve: it needs its control socket on descriptor 4",
                        )
                    })?;
                    Ok(monitor::standby(&engine()?, control, sync))
                }
            }
        }
        // The VMM opens nothing, the engine least of all: its monitor handed it the VM.
        Command::Vmm => Ok(vessel_engine::vm_jail::run()),
        Command::ExecHelper { id, spec } => {
            // Its control socket, before the engine's files take numbers.
            let control = vessel_engine::monitor::inherited_channel(vessel_engine::exec::CONTROL_FD)
                .ok_or_else(|| {
                    Failure::new(
                        125,
                        "__exec is internal to vessel serve: it needs its control socket on descriptor 3",
                    )
                })?;
            Ok(vessel_engine::exec::helper_main(
                &engine()?,
                &id,
                &spec,
                control,
            ))
        }
        Command::Health { id } => Ok(vessel_engine::health::checker_main(&engine()?, &id)),
        Command::MonitorFinish { id, code } => {
            Ok(vessel_engine::monitor::finish(&engine()?, &id, code))
        }
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::list(&store()?, &a),
        Command::Image(ImageCommand::Inspect {
            images: names,
            format,
        }) => images::inspect(&store()?, &names, format.as_ref()),
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::remove(&engine()?, &a),
        Command::Tag { source, target } => images::tag(&store()?, &source, &target),
        Command::Build(a) => build::build(&engine()?, &a),
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            images::import(&store()?, &a)
        }
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => transfer::pull(&store()?, &a),
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => transfer::push(&store()?, &a),
        Command::Login(a) => login::login(&a),
        Command::Logout { server } => login::logout(server.as_deref()),
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

/// `vessel serve`: the Docker Engine API on `host` (`unix:///PATH`), the socket's group
/// `group` if given.
fn serve(config: EngineConfig, host: &str, group: Option<&str>) -> CmdResult {
    let fail = |e: vessel_api::ApiError| Failure::new(crate::EXIT_ENGINE, e);
    let listen = vessel_api::parse_host(host).map_err(fail)?;
    if group.is_some() && listen == vessel_api::Listen::Systemd {
        return Err(Failure::new(
            crate::EXIT_ENGINE,
            "--group with -H fd://: the socket unit's SocketGroup= decides who may connect",
        ));
    }
    let group = match group {
        None => None,
        Some(g) => match nix::unistd::Group::from_name(g) {
            Ok(Some(gr)) => Some(gr.gid.as_raw()),
            Ok(None) => {
                return Err(Failure::new(
                    crate::EXIT_ENGINE,
                    format!("--group {g}: no such group"),
                ))
            }
            Err(e) => {
                return Err(Failure::new(
                    crate::EXIT_ENGINE,
                    format!("--group {g}: {e}"),
                ))
            }
        },
    };
    vessel_api::serve(config, &vessel_api::ServeOptions { listen, group }).map_err(fail)?;
    Ok(0)
}
