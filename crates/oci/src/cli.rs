//! The command line: runc's grammar from `liboci-cli`, plus the few global flags runc
//! has and `liboci-cli` does not.

use clap::{Args, Parser, Subcommand};
use liboci_cli::{CommonCmd, GlobalOpts, StandardCmd};

/// Default state directory (runc's is /run/runc).
pub const DEFAULT_ROOT: &str = "/run/vessel/oci";

/// `vessel-runc [GLOBAL FLAGS] COMMAND [FLAGS] ARGS`, as runc.
#[derive(Parser, Debug)]
#[command(
    name = "vessel-runc",
    version,
    about = "vessel as an OCI runtime with runc's command line",
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(flatten)]
    pub extra: ExtraGlobal,
    #[command(subcommand)]
    pub command: Command,
}

/// runc global flags that `liboci-cli` lacks.
#[derive(Args, Debug)]
pub struct ExtraGlobal {
    /// Log level: debug, info, warning, error (runc's names; --debug means debug)
    #[arg(long)]
    pub log_level: Option<String>,
    /// Rootless mode: only "false" (and "auto", which is "false" for root) is supported
    #[arg(long)]
    pub rootless: Option<String>,
}

/// Every runc command.
#[derive(Subcommand, Debug)]
pub enum Command {
    #[command(flatten)]
    Standard(StandardCmd),
    #[command(flatten)]
    Common(Box<CommonCmd>),
}

/// The `--log FILE` given in `args`, found without parsing them (for reporting an
/// error in parsing them).
pub fn log_file_in(args: &[std::ffi::OsString]) -> Option<std::path::PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--log" || s == "-l" {
            return it.next().map(Into::into);
        }
        if let Some(v) = s.strip_prefix("--log=") {
            return Some(v.into());
        }
        if ["--root", "-r", "--log-format", "--log-level", "--rootless"].contains(&&*s) {
            it.next();
        } else if !s.starts_with('-') {
            // The command: global flags end here.
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vessel-runc").chain(args.iter().copied()))
    }

    #[test]
    fn parses_what_the_containerd_shim_sends() {
        let c = parse(&[
            "--root",
            "/r",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--console-socket",
            "/s",
            "id1",
        ])
        .unwrap();
        assert_eq!(c.global.root.as_deref(), Some(std::path::Path::new("/r")));
        assert_eq!(c.global.log_format.as_deref(), Some("json"));
        match c.command {
            Command::Standard(StandardCmd::Create(cr)) => {
                assert_eq!(cr.container_id, "id1");
                assert_eq!(
                    cr.console_socket.as_deref(),
                    Some(std::path::Path::new("/s"))
                );
            }
            other => panic!("{other:?}"),
        }
        let c = parse(&[
            "exec",
            "--process",
            "/p.json",
            "--detach",
            "--pid-file",
            "/p",
            "id1",
        ])
        .unwrap();
        assert!(
            matches!(c.command, Command::Common(b) if matches!(&*b, CommonCmd::Exec(e) if e.detach && e.command.is_empty()))
        );
        let c = parse(&["kill", "--all", "id1", "9"]).unwrap();
        assert!(
            matches!(c.command, Command::Standard(StandardCmd::Kill(k)) if k.all && k.signal == "9")
        );
        let c = parse(&["exec", "id1", "sh", "-c", "echo hi"]).unwrap();
        assert!(
            matches!(c.command, Command::Common(b) if matches!(&*b, CommonCmd::Exec(e) if e.command == ["sh", "-c", "echo hi"]))
        );
    }

    #[test]
    fn unknown_flags_are_errors() {
        let e = parse(&["create", "--bogus", "id1"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(parse(&["--frobnicate", "state", "x"]).is_err());
    }

    #[test]
    fn finds_the_log_file_before_the_command() {
        let a = |v: &[&str]| {
            v.iter()
                .map(Into::into)
                .collect::<Vec<std::ffi::OsString>>()
        };
        assert_eq!(
            log_file_in(&a(&["--root", "/r", "--log", "/l", "create"])),
            Some("/l".into())
        );
        assert_eq!(log_file_in(&a(&["--log=/l", "x"])), Some("/l".into()));
        assert_eq!(log_file_in(&a(&["create", "--log", "/l"])), None);
    }
}
