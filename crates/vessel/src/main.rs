//! The `vessel` command line: parses flags, calls the engine, prints results.

mod argv;
mod cli;
mod commands;
mod compare;
mod progress;
mod template;

use std::process::ExitCode;

use clap::FromArgMatches;

use crate::cli::Cli;

/// Docker's exit status for errors of the engine itself (bad flags, image not found...).
pub const EXIT_ENGINE: u8 = 125;

/// An error with the exit status it should produce.
#[derive(Debug)]
pub struct Failure {
    /// The process exit status.
    pub code: u8,
    /// The one-line message, without the `vessel: ` prefix.
    pub message: String,
}

impl Failure {
    /// A failure with a given exit status.
    pub fn new(code: u8, message: impl std::fmt::Display) -> Failure {
        Failure {
            code,
            message: message.to_string(),
        }
    }
}

impl From<vessel_image::Error> for Failure {
    fn from(e: vessel_image::Error) -> Failure {
        Failure::new(1, e)
    }
}

/// Result of a command: `Ok(status)` to exit with that status.
pub type CmdResult = Result<u8, Failure>;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`vessel images | head`), as other Unix tools do.
    // SAFETY: setting a signal disposition to SIG_DFL before any thread exists is sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // `vessel oci ...` is runc's command line, whose global flags (--root, --log...)
    // are not vessel's: hand it over whole, before vessel's parser sees it.
    if let Some(oci_args) = oci_command_line(std::env::args_os().skip(1).collect()) {
        return ExitCode::from(vessel_oci::main(oci_args));
    }
    let mut command = argv::command();
    let args = argv::protect_command(&command, std::env::args_os().collect());
    let parsed = command
        .try_get_matches_from_mut(args)
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => EXIT_ENGINE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.global.debug, cli.global.log_level.as_deref());
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("vessel: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The arguments after `oci` when that is the command (after vessel's global flags).
fn oci_command_line(args: Vec<std::ffi::OsString>) -> Option<Vec<std::ffi::OsString>> {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.to_str() {
            Some("--root" | "--log-level") => i += 2,
            Some(f) if f.starts_with('-') => i += 1,
            Some("oci") => return Some(args[i + 1..].to_vec()),
            _ => return None,
        }
    }
    None
}

fn init_tracing(debug: bool, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match (debug, level) {
        (_, Some(l)) => EnvFilter::new(l),
        (true, None) => EnvFilter::new("debug"),
        (false, None) => {
            EnvFilter::try_from_env("VESSEL_LOG").unwrap_or_else(|_| EnvFilter::new("warn"))
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
