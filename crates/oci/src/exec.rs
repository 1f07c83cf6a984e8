//! `exec`: a new process in a running container, from `--process FILE` or the command
//! line.

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{Capability, LinuxCapabilities, Process, User};
use vessel_container::Stdio;

use crate::error::{Error, Result};
use crate::wait::{wait_forwarding, write_pid_file, PtyRelay};
use crate::Ctx;

/// `exec`.
pub fn exec(ctx: &Ctx, a: liboci_cli::Exec) -> Result<u8> {
    refuse_unsupported(&a)?;
    let id = a.container_id.as_str();
    let process = match &a.process {
        Some(path) => {
            if !a.command.is_empty() {
                return Err(Error::Usage(format!(
                    "both --process {} and a command {:?} were given: use one",
                    path.display(),
                    a.command
                )));
            }
            load_process(path)?
        }
        None => inline_process(ctx, &a)?,
    };
    if process.args().as_ref().is_none_or(|v| v.is_empty()) {
        return Err(Error::Usage("process args must not be empty".into()));
    }
    let terminal = process.terminal().unwrap_or(false);
    match (terminal, &a.console_socket, a.detach) {
        (true, None, true) => {
            return Err(Error::Usage(
                "cannot allocate tty if runc will detach without setting console socket".into(),
            ))
        }
        (false, Some(_), _) => {
            return Err(Error::Usage(
                "cannot use console socket if runc will not allocate tty".into(),
            ))
        }
        _ => {}
    }
    let stdio = if terminal { Stdio::Pty } else { Stdio::Inherit };
    let spawned = ctx.runtime.exec_process(id, &process, stdio)?;
    let mut relay = None;
    if let Some(master) = spawned.pty_master {
        match &a.console_socket {
            Some(sock) => vessel_container::send_console(sock, &master)?,
            None => relay = Some(PtyRelay::start(master)?),
        }
    }
    if let Some(pf) = &a.pid_file {
        write_pid_file(pf, spawned.pid)?;
    }
    if a.detach {
        return Ok(0);
    }
    let code = wait_forwarding(spawned.pid);
    if let Some(r) = relay {
        r.finish();
    }
    code
}

fn refuse_unsupported(a: &liboci_cli::Exec) -> Result<()> {
    if a.preserve_fds != 0 {
        return Err(Error::Unsupported(format!(
            "--preserve-fds {}",
            a.preserve_fds
        )));
    }
    if let Some(l) = &a.process_label {
        return Err(Error::Unsupported(format!(
            "--process-label {l:?} (SELinux)"
        )));
    }
    if let Some(p) = &a.apparmor {
        return Err(Error::Unsupported(format!("--apparmor {p:?}")));
    }
    if let Some(c) = &a.cgroup {
        return Err(Error::Unsupported(format!(
            "--cgroup {c:?} (exec into a sub-cgroup)"
        )));
    }
    if a.ignore_paused {
        tracing::debug!("--ignore-paused: exec into a paused container is refused anyway");
    }
    Ok(())
}

fn load_process(path: &Path) -> Result<Process> {
    let text = std::fs::read(path).map_err(|e| Error::Io {
        op: "read the process file",
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_slice(&text).map_err(|e| Error::BadJson {
        what: "process file",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The process of `exec ID CMD...`: the container's own process with the command, and
/// what the flags change (as runc builds it).
fn inline_process(ctx: &Ctx, a: &liboci_cli::Exec) -> Result<Process> {
    let spec = ctx.runtime.spec(&a.container_id)?;
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    p.set_console_size(None);
    if !a.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for (k, v) in &a.env {
            let prefix = format!("{k}=");
            env.retain(|e| !e.starts_with(&prefix));
            env.push(format!("{k}={v}"));
        }
        p.set_env(Some(env));
    }
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if a.user.is_some() || !a.additional_gids.is_empty() {
        let mut user: User = p.user().clone();
        if let Some((uid, gid)) = a.user {
            user.set_uid(uid);
            if let Some(g) = gid {
                user.set_gid(g);
            }
        }
        if !a.additional_gids.is_empty() {
            user.set_additional_gids(Some(a.additional_gids.clone()));
        }
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_else(empty_caps);
        for name in &a.cap {
            let cap = parse_cap(name)?;
            let add = |s: &Option<HashSet<Capability>>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, pm) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
            );
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(pm);
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

fn empty_caps() -> LinuxCapabilities {
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(HashSet::new()));
    c.set_effective(Some(HashSet::new()));
    c.set_permitted(Some(HashSet::new()));
    c.set_inheritable(Some(HashSet::new()));
    c.set_ambient(Some(HashSet::new()));
    c
}

/// `CAP_SYS_ADMIN` (or `SYS_ADMIN`) as a capability.
fn parse_cap(name: &str) -> Result<Capability> {
    let up = name.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    serde_json::from_value(serde_json::Value::String(full)).map_err(|_| {
        Error::Usage(format!(
            "invalid capability {name:?}: use a name such as CAP_NET_ADMIN"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_by_name() {
        assert_eq!(parse_cap("CAP_NET_ADMIN").unwrap(), Capability::NetAdmin);
        assert_eq!(parse_cap("sys_admin").unwrap(), Capability::SysAdmin);
        let e = parse_cap("CAP_FLY").unwrap_err().to_string();
        assert!(e.contains("\"CAP_FLY\""), "{e}");
    }
}
