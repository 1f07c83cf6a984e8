//! create, start, run, state, kill, delete, list.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sys::signal::Signal;
use serde::Serialize;
use vessel_container::{CreateOptions, State, Status, Stdio};

use crate::error::{Error, Result};
use crate::wait::{wait_forwarding, PtyRelay};
use crate::Ctx;

/// `--preserve-fds N` with N > 0 is not implemented: refuse it rather than start a
/// container without the descriptors its caller passed.
fn no_preserved_fds(n: i32) -> Result<()> {
    if n != 0 {
        return Err(Error::Unsupported(format!("--preserve-fds {n}")));
    }
    Ok(())
}

/// Whether the bundle's process asks for a terminal (decides stdio before `create`).
fn wants_terminal(bundle: &Path) -> Result<bool> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| Error::Io {
        op: "read",
        path: path.clone(),
        source: e,
    })?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::BadJson {
        what: "OCI spec",
        path,
        reason: e.to_string(),
    })?;
    Ok(v["process"]["terminal"].as_bool().unwrap_or(false))
}

const DETACHED_TTY: &str = "cannot allocate tty if runc will detach without setting console socket";
const SOCKET_WITHOUT_TTY: &str = "cannot use console socket if runc will not allocate tty";

/// `create`: the init is left blocked before its program until `start`; it stays a
/// child of the caller (of its subreaper once this process exits).
pub fn create(ctx: &Ctx, a: liboci_cli::Create) -> Result<u8> {
    ctx.no_systemd()?;
    no_preserved_fds(a.preserve_fds)?;
    let terminal = wants_terminal(&a.bundle)?;
    match (terminal, &a.console_socket) {
        (true, None) => return Err(Error::Usage(DETACHED_TTY.into())),
        (false, Some(_)) => return Err(Error::Usage(SOCKET_WITHOUT_TTY.into())),
        _ => {}
    }
    if a.no_pivot {
        tracing::debug!("--no-pivot: vessel always uses pivot_root");
    }
    ctx.runtime.create(
        &a.container_id,
        &a.bundle,
        CreateOptions {
            stdio: Stdio::Inherit,
            pid_file: a.pid_file,
            console_socket: a.console_socket,
        },
    )?;
    Ok(0)
}

/// `start`.
pub fn start(ctx: &Ctx, id: &str) -> Result<u8> {
    ctx.runtime.start(id)?;
    Ok(0)
}

/// `run`: create and start; without `--detach`, relay the terminal, wait for the init,
/// delete the container (unless `--keep`) and exit with the init's status.
pub fn run(ctx: &Ctx, a: liboci_cli::Run) -> Result<u8> {
    ctx.no_systemd()?;
    no_preserved_fds(a.preserve_fds)?;
    let terminal = wants_terminal(&a.bundle)?;
    match (terminal, &a.console_socket, a.detach) {
        (true, None, true) => return Err(Error::Usage(DETACHED_TTY.into())),
        (false, Some(_), _) => return Err(Error::Usage(SOCKET_WITHOUT_TTY.into())),
        _ => {}
    }
    let stdio = if terminal && a.console_socket.is_none() {
        Stdio::Pty
    } else {
        Stdio::Inherit
    };
    let id = a.container_id.as_str();
    let st = ctx.runtime.create(
        id,
        &a.bundle,
        CreateOptions {
            stdio,
            pid_file: a.pid_file,
            console_socket: a.console_socket,
        },
    )?;
    let pid = st.pid.map(nix::unistd::Pid::from_raw);
    let relay = st.pty_master.map(PtyRelay::start).transpose();
    let started = relay.and_then(|r| {
        ctx.runtime.start(id)?;
        Ok(r)
    });
    let relay = match started {
        Ok(r) => r,
        Err(e) => {
            let _ = ctx.runtime.delete(id, true);
            return Err(e);
        }
    };
    if a.detach {
        return Ok(0);
    }
    let code = match pid {
        Some(pid) => wait_forwarding(pid),
        None => Err(Error::Usage(format!(
            "container {id:?} has no init process"
        ))),
    };
    if !a.keep {
        ctx.runtime.delete(id, true)?;
    }
    if let Some(r) = relay {
        r.finish();
    }
    code
}

/// runc's state JSON (`runc state`, `runc list --format json`).
#[derive(Debug, Serialize)]
pub struct RuncState {
    #[serde(rename = "ociVersion")]
    oci_version: String,
    id: String,
    pid: i32,
    status: String,
    bundle: PathBuf,
    rootfs: PathBuf,
    created: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    annotations: HashMap<String, String>,
    owner: String,
}

fn runc_state(ctx: &Ctx, st: State) -> RuncState {
    let rootfs = ctx
        .runtime
        .spec(&st.id)
        .ok()
        .and_then(|s| s.root().as_ref().map(|r| r.path().clone()))
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                st.bundle.join(p)
            }
        })
        .unwrap_or_default();
    let created = chrono::DateTime::from_timestamp(st.created as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let owner = std::fs::metadata(ctx.runtime.state_dir(&st.id))
        .ok()
        .and_then(|m| nix::unistd::User::from_uid(m.uid().into()).ok().flatten())
        .map(|u| u.name)
        .unwrap_or_default();
    RuncState {
        oci_version: st.oci_version,
        id: st.id,
        pid: st.pid.unwrap_or(0),
        status: st.status.to_string(),
        bundle: st.bundle,
        rootfs,
        created,
        annotations: st.annotations,
        owner,
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::Usage(format!("encode JSON: {e}")))
}

/// `state`.
pub fn state(ctx: &Ctx, id: &str) -> Result<u8> {
    let st = ctx.runtime.state(id)?;
    println!("{}", to_json(&runc_state(ctx, st))?);
    Ok(0)
}

/// A signal as runc takes it: a number, or a name with or without `SIG`, any case.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || {
        Error::Usage(format!(
            "invalid signal {s:?}: use a number or a name such as TERM or SIGKILL"
        ))
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

/// `kill [--all] ID SIGNAL`.
pub fn kill(ctx: &Ctx, a: liboci_cli::Kill) -> Result<u8> {
    let sig = parse_signal(&a.signal)?;
    ctx.runtime.kill(&a.container_id, sig as i32, a.all)?;
    Ok(0)
}

/// `delete [--force]`: like runc, an unknown container is an error unless forced.
pub fn delete(ctx: &Ctx, id: &str, force: bool) -> Result<u8> {
    if !force {
        // NotFound, or a status that forbids it, is reported before anything is done.
        let st = ctx.runtime.state(id)?;
        if matches!(st.status, Status::Running | Status::Paused) {
            return Err(Error::Usage(format!(
                "cannot delete container {id:?} that is not stopped: {}",
                st.status
            )));
        }
    }
    ctx.runtime.delete(id, force)?;
    Ok(0)
}

/// `list [--format table|json] [-q]`.
pub fn list(ctx: &Ctx, a: liboci_cli::List) -> Result<u8> {
    let states: Vec<RuncState> = ctx
        .runtime
        .list()?
        .into_iter()
        .map(|s| runc_state(ctx, s))
        .collect();
    if a.quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    match a.format.as_str() {
        "json" => println!(
            "{}",
            serde_json::to_string(&states).map_err(|e| Error::Usage(e.to_string()))?
        ),
        "table" => {
            let rows: Vec<[String; 6]> = std::iter::once(
                ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from),
            )
            .chain(states.iter().map(|s| {
                [
                    s.id.clone(),
                    s.pid.to_string(),
                    s.status.clone(),
                    s.bundle.display().to_string(),
                    s.created.clone(),
                    s.owner.clone(),
                ]
            }))
            .collect();
            let widths: Vec<usize> = (0..6)
                .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
                .collect();
            for r in &rows {
                let line: Vec<String> = r
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                println!("{}", line.join("   ").trim_end());
            }
        }
        other => {
            return Err(Error::Usage(format!(
                "invalid --format {other:?}: use table or json"
            )))
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_and_name() {
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("SIGHUP").unwrap(), Signal::SIGHUP);
        for bad in ["0x9", "NOPE", "", "999"] {
            let e = parse_signal(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
