//! `vessel oci`: runc's command line over vessel's runtime, so that other engines can use
//! vessel as their OCI runtime.

use std::path::Path;

use vessel_container::{CreateOptions, Runtime, Stdio};

use crate::cli::OciCommand;
use crate::{CmdResult, Failure};
use vessel_engine::request::parse_signal;

fn err(e: vessel_container::Error) -> Failure {
    Failure::new(e.exit_code().map(|c| c as u8).unwrap_or(1), e)
}

/// Runs one `vessel oci` command.
pub fn run(cmd: OciCommand) -> CmdResult {
    match cmd {
        OciCommand::Create {
            bundle,
            console_socket,
            pid_file,
            state_root,
            id,
        } => {
            let bundle = std::fs::canonicalize(&bundle)
                .map_err(|e| Failure::new(1, format!("bundle {}: {e}", bundle.display())))?;
            let rt = Runtime::new(state_root);
            rt.create(
                &id,
                &bundle,
                CreateOptions {
                    stdio: Stdio::Inherit,
                    pid_file,
                    console_socket,
                },
            )
            .map_err(err)?;
            Ok(0)
        }
        OciCommand::Start { state_root, id } => {
            runtime(&state_root).start(&id).map(|()| 0).map_err(err)
        }
        OciCommand::State { state_root, id } => {
            let st = runtime(&state_root).state(&id).map_err(err)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&st).map_err(|e| Failure::new(1, e))?
            );
            Ok(0)
        }
        OciCommand::Kill {
            all,
            state_root,
            id,
            signal,
        } => {
            let sig = parse_signal(&signal).map_err(|e| Failure::new(1, e))?;
            runtime(&state_root)
                .kill(&id, sig, all)
                .map(|()| 0)
                .map_err(err)
        }
        OciCommand::Delete {
            force,
            state_root,
            id,
        } => runtime(&state_root)
            .delete(&id, force)
            .map(|()| 0)
            .map_err(err),
    }
}

fn runtime(state_root: &Path) -> Runtime {
    Runtime::new(state_root)
}
