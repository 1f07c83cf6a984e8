#![warn(missing_docs)]
//! vessel as a drop-in runc: runc's command line (the grammar of the `liboci-cli` crate)
//! over [`vessel_container::Runtime`], for containerd's `io.containerd.runc.v2` shim,
//! podman/conmon and anything else that drives runc.
//!
//! What callers rely on and this keeps:
//! - the container's init is a child of the process that ran `create` until that
//!   process exits, then of the nearest subreaper (the shim, conmon): no vessel process
//!   stays between them, so they reap it and read its exit status themselves;
//! - `exec --detach` leaves the exec'd process the same way;
//! - errors go to `--log` as runc's JSON (or text) lines, and to stderr;
//! - `state` and `list --format json` print runc's JSON;
//! - flags vessel does not implement are refused by name, never ignored.
//!
//! The entry point is [`main`]; the `vessel-runc` binary and `vessel oci` both call it.

mod cli;
mod error;
mod exec;
mod info;
mod lifecycle;
mod log;
mod wait;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use liboci_cli::{CommonCmd, StandardCmd};
use vessel_container::Runtime;

pub use error::{Error, Result};

use cli::{Cli, Command};

/// What every command needs: the runtime over `--root`, and the global flags.
pub(crate) struct Ctx {
    pub runtime: Runtime,
    pub systemd_cgroup: bool,
}

impl Ctx {
    /// Refuse `--systemd-cgroup` for a command that would place a container in a cgroup.
    pub fn no_systemd(&self) -> Result<()> {
        if self.systemd_cgroup {
            return Err(Error::Unsupported(
                "--systemd-cgroup (the systemd cgroup manager; vessel manages cgroupfs \
                 directly: set SystemdCgroup = false in containerd's runc options)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Run one runc command line (`args` without the program name) and return the exit
/// status: the container's or process's for `run` and `exec`, else 0 or 1 as runc.
pub fn main(args: impl IntoIterator<Item = OsString>) -> u8 {
    let args: Vec<OsString> = args.into_iter().collect();
    let argv = std::iter::once(OsString::from("vessel-runc")).chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            // Say it in the log too, where containerd looks.
            let file = cli::log_file_in(&args);
            if let Ok(log) = log::Log::open(file.as_deref(), Some("json")) {
                if log.to_file() {
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or("invalid arguments");
                    log.write("error", first.trim_start_matches("error: "), &[]);
                }
            }
            let _ = e.print();
            return 1;
        }
    };
    let log = match log::Log::open(cli.global.log.as_deref(), cli.global.log_format.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vessel-runc: {e}");
            return 1;
        }
    };
    match run(cli, &log) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e.to_string());
            1
        }
    }
}

fn run(cli: Cli, log: &log::Log) -> Result<u8> {
    log.install(log::level(
        cli.global.debug,
        cli.extra.log_level.as_deref(),
    )?);
    match cli.extra.rootless.as_deref() {
        None | Some("false" | "auto") => {}
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "--rootless {other:?} (vessel-runc runs as root)"
            )))
        }
    }
    let root = cli
        .global
        .root
        .unwrap_or_else(|| PathBuf::from(cli::DEFAULT_ROOT));
    let ctx = Ctx {
        runtime: Runtime::new(root),
        systemd_cgroup: cli.global.systemd_cgroup,
    };
    // The processes that fork a container's processes run from a sealed view of the
    // binary (CVE-2019-5736 class: see vessel_container::sealed).
    let forks = match &cli.command {
        Command::Standard(c) => matches!(c, StandardCmd::Create(_)),
        Command::Common(c) => matches!(**c, CommonCmd::Run(_) | CommonCmd::Exec(_)),
    };
    if forks {
        vessel_container::sealed::ensure_sealed()?;
    }
    match cli.command {
        Command::Standard(c) => match c {
            StandardCmd::Create(a) => lifecycle::create(&ctx, a),
            StandardCmd::Start(a) => lifecycle::start(&ctx, &a.container_id),
            StandardCmd::State(a) => lifecycle::state(&ctx, &a.container_id),
            StandardCmd::Kill(a) => lifecycle::kill(&ctx, a),
            StandardCmd::Delete(a) => lifecycle::delete(&ctx, &a.container_id, a.force),
        },
        Command::Common(c) => match *c {
            CommonCmd::Run(a) => lifecycle::run(&ctx, a),
            CommonCmd::Exec(a) => exec::exec(&ctx, a),
            CommonCmd::List(a) => lifecycle::list(&ctx, a),
            CommonCmd::Ps(a) => info::ps(&ctx, a),
            CommonCmd::Pause(a) => ctx
                .runtime
                .pause(&a.container_id)
                .map(|()| 0)
                .map_err(Into::into),
            CommonCmd::Resume(a) => ctx
                .runtime
                .resume(&a.container_id)
                .map(|()| 0)
                .map_err(Into::into),
            CommonCmd::Update(a) => info::update(&ctx, a),
            CommonCmd::Events(a) => info::events(&ctx, a),
            CommonCmd::Features(_) => info::features(),
            CommonCmd::Checkpointt(_) => Err(Error::Unsupported("checkpoint (CRIU)".into())),
            CommonCmd::Spec(_) => Err(Error::Unsupported(
                "spec (write config.json yourself, or take one from `runc spec`)".into(),
            )),
        },
    }
}
