//! `vessel cp`: Docker's `cp` between the host and a running container.

use std::os::fd::OwnedFd;

use crate::{CmdResult, Failure};
use vessel_engine::{copy, Engine, EngineError};

fn fail(e: EngineError) -> Failure {
    Failure::new(1, e)
}

/// `CONTAINER:PATH` → (container, path); a host path (absolute, relative with a `/`
/// before any `:`, or `-`) → `None`, as Docker tells them apart.
fn container_path(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (c, p) = arg.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

fn pipe() -> Result<(std::fs::File, std::fs::File), Failure> {
    let (r, w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe().map_err(|e| Failure::new(1, format!("pipe: {e}")))?;
    Ok((r.into(), w.into()))
}

/// Runs `vessel cp SRC DEST`.
pub fn cp(engine: &Engine, src: &str, dest: &str) -> CmdResult {
    // The copy runs through pipes: a side that stops early must make the other fail
    // with EPIPE and say why, not kill this process.
    // SAFETY: setting a signal disposition; `cp` runs no handler of its own.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    match (container_path(src), container_path(dest)) {
        (Some(_), Some(_)) => Err(Failure::new(
            1,
            "copying between containers is not supported: copy through the host",
        )),
        (None, None) => Err(Failure::new(
            1,
            "must specify at least one container source (CONTAINER:PATH)",
        )),
        (Some((c, path)), None) => {
            let inst = engine.get(c).map_err(fail)?;
            let path = if path.is_empty() { "/" } else { path };
            if dest == "-" {
                let mut out = std::io::stdout().lock();
                return engine
                    .copy_out(&inst, path, &mut out)
                    .map(|()| 0)
                    .map_err(fail);
            }
            let (mut r, mut w) = pipe()?;
            std::thread::scope(|s| {
                let reader = s.spawn(move || {
                    let contents = path.ends_with("/.");
                    let placed = copy::place(&mut r, std::path::Path::new(dest), false, contents);
                    // Read to the end, so that the sender finishes and reports its own error.
                    let _ = std::io::copy(&mut r, &mut std::io::sink());
                    placed
                });
                let sent = engine.copy_out(&inst, path, &mut w);
                drop(w);
                let placed = reader.join().unwrap_or_else(|_| {
                    Err(EngineError::Internal("the copy thread panicked".into()))
                });
                sent.and(placed).map(|()| 0).map_err(fail)
            })
        }
        (None, Some((c, path))) => {
            let inst = engine.get(c).map_err(fail)?;
            let path = if path.is_empty() { "/" } else { path };
            if src == "-" {
                let mut input = std::io::stdin().lock();
                return engine
                    .copy_in(&inst, path, false, &mut input)
                    .map(|()| 0)
                    .map_err(fail);
            }
            if std::fs::symlink_metadata(src).is_err() {
                return Err(Failure::new(1, format!("no such file or directory: {src}")));
            }
            let (r, w) = pipe()?;
            std::thread::scope(|s| {
                let writer = s.spawn(move || copy::pack(src, w));
                // The read end goes when the copy is done, so that the packer stops too.
                let sent = {
                    let mut r = r;
                    engine.copy_in(&inst, path, src.ends_with("/."), &mut r)
                };
                let packed = writer.join().unwrap_or_else(|_| {
                    Err(EngineError::Internal("the copy thread panicked".into()))
                });
                sent.and(packed).map(|()| 0).map_err(fail)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::container_path;

    #[test]
    fn container_paths_are_told_from_host_paths() {
        assert_eq!(
            container_path("web:/etc/hosts"),
            Some(("web", "/etc/hosts"))
        );
        assert_eq!(container_path("web:"), Some(("web", "")));
        assert_eq!(container_path("/tmp/a:b"), None);
        assert_eq!(container_path("./a:b"), None);
        assert_eq!(container_path("dir/a:b"), None);
        assert_eq!(container_path("-"), None);
        assert_eq!(container_path("plain"), None);
    }
}
