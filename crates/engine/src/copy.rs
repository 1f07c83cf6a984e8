//! `vessel cp`: tar streams in and out of a container's filesystem.
//!
//! The container side runs in a process of its own (`vessel __cp`, which
//! [`Engine::copy_out`] and [`Engine::copy_in`] start) that joins the container's mount
//! namespace and chroots into its root (a running container), or mounts the container's
//! layers and volumes in a namespace of its own and chroots into them (a stopped one, see
//! [`crate::view`]), so every path and every symlink of the image is resolved as the
//! container sees it: nothing the container made can point the copy at the host's files. Only regular files, directories and symbolic links cross (no device
//! nodes, FIFOs or sockets), and ownership is not taken from the archive.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use crate::catalogue::{Instance, Status};
use crate::request::Isolation;
use crate::{Engine, EngineError, Result};

/// Whose file system `vessel __cp` enters.
#[derive(Clone, Debug)]
pub enum At {
    /// A running container's, through its init's mount namespace and root.
    Pid(i32),
    /// A stopped container's or an image's, mounted by the helper for itself.
    View(crate::view::View),
}

/// What `vessel __cp` does inside the container.
#[derive(Clone, Debug)]
pub enum Direction {
    /// Writes the JSON of the Engine API's path stat of `path` to stdout (see [`stat`]).
    Stat {
        /// Path in the container.
        path: String,
    },
    /// Copies the directory at `path` into host directory `into` (see
    /// [`crate::view::copy_up`]).
    CopyUp {
        /// Path in the view.
        path: String,
        /// The volume's host directory.
        into: PathBuf,
        /// Added to every owner.
        shift: u32,
    },
    /// Writes a tar of `path` to stdout: its entries are named after the path's last
    /// component, or are its contents when it ends in `/.`.
    Out {
        /// Path in the container.
        path: String,
    },
    /// Reads a tar from stdin and places it at `dest` (see [`place`]).
    In {
        /// Path in the container.
        dest: String,
        /// The archive holds a directory's contents (`SRC/.`), not one top entry.
        contents: bool,
    },
}

/// Whether a tar entry of this type may cross: regular files, directories, symlinks
/// and hard links.
fn allowed(t: tar::EntryType) -> bool {
    t.is_file() || t.is_dir() || t.is_symlink() || t.is_hard_link()
}

/// `path` (relative, from an archive) without `..`, root or prefix components, with its
/// first component replaced by `rename`; `None` if it has any of those.
fn clean(path: &Path, rename: Option<&str>) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut first = true;
    for c in path.components() {
        match c {
            Component::Normal(n) => {
                match (first, rename) {
                    (true, Some(r)) => out.push(r),
                    _ => out.push(n),
                }
                first = false;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Unpacks the regular files, directories and links of `archive` under `dir`, the tar
/// crate keeping every entry, and anything it links through, inside `dir`. With
/// `rename`, the archive (one top-level entry, or `.` and its contents) is unpacked into
/// a fresh directory beside and its top moved to `dir/rename`. Ownership is the
/// caller's; modes are kept.
/// With `special`, set-user-ID, set-group-ID and sticky bits are kept (inside a
/// container, as Docker does); without it (on the host) they are dropped, so that a
/// container cannot hand the host a set-user-ID file of root's.
/// With `contents`, the archive is a directory's contents, which become `rename`.
pub fn unpack(
    archive: impl Read,
    dir: &Path,
    rename: Option<&str>,
    special: bool,
    contents: bool,
) -> Result<()> {
    let Some(name) = rename else {
        return unpack_into(archive, dir, special);
    };
    if clean(Path::new(name), None).is_none_or(|c| c.components().count() != 1) {
        return Err(EngineError::InvalidFlag(format!("invalid name {name:?}")));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".vessel-cp-")
        .tempdir_in(dir)
        .map_err(|e| EngineError::io("create a directory in", dir, e))?;
    unpack_into(archive, tmp.path(), special)?;
    let tops: Vec<_> = std::fs::read_dir(tmp.path())
        .map_err(|e| EngineError::io("read", tmp.path(), e))?
        .filter_map(|e| e.ok())
        .collect();
    let dest = dir.join(name);
    match tops.as_slice() {
        [one] if !contents => std::fs::rename(one.path(), &dest),
        // `.` and its contents: the directory itself becomes `name`.
        _ => std::fs::rename(tmp.path(), &dest),
    }
    .map_err(|e| EngineError::io("move into place", &dest, e))
}

fn unpack_into(archive: impl Read, dir: &Path, special: bool) -> Result<()> {
    let mut a = tar::Archive::new(archive);
    a.set_preserve_permissions(special);
    a.set_overwrite(true);
    a.set_unpack_xattrs(false);
    let entries = a
        .entries()
        .map_err(|e| EngineError::io("read the archive", dir, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| EngineError::io("read the archive", dir, e))?;
        if !allowed(entry.header().entry_type()) {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| EngineError::io("read the archive", dir, e))?
            .into_owned();
        if clean(&path, None).is_none() {
            return Err(EngineError::InvalidFlag(format!(
                "the archive's entry {} leaves its directory",
                path.display()
            )));
        }
        // unpack_in refuses a path that leaves `dir`, also through a link.
        let inside = entry
            .unpack_in(dir)
            .map_err(|e| EngineError::io("unpack", dir.join(&path), e))?;
        if !inside {
            return Err(EngineError::InvalidFlag(format!(
                "the archive's entry {} leaves its directory",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Docker's rule for where a copy lands: into `dest` if it is a directory, else as `dest`
/// (the archive's top entry renamed to its last component) in its parent, which must
/// exist. `special` as for [`unpack`].
pub fn place(archive: impl Read, dest: &Path, special: bool, contents: bool) -> Result<()> {
    if std::fs::metadata(dest).is_ok_and(|m| m.is_dir()) {
        return unpack(archive, dest, None, special, contents);
    }
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(EngineError::InvalidFlag(format!(
            "{} cannot be the destination of a copy",
            dest.display()
        )));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    if !std::fs::metadata(parent).is_ok_and(|m| m.is_dir()) {
        return Err(EngineError::InvalidFlag(format!(
            "no such directory: {}",
            parent.display()
        )));
    }
    unpack(
        archive,
        parent,
        Some(&name.to_string_lossy()),
        special,
        contents,
    )
}

/// Runs inside `vessel __cp`: enters the container's file system (see [`At`]) and
/// copies. Returns the exit status.
pub fn serve(at: At, dir: Direction) -> u8 {
    let run = || -> Result<()> {
        // A copy-up's destination is a host directory: opened before the chroot.
        let into = match &dir {
            Direction::CopyUp { into, .. } => Some(
                rustix::fs::open(
                    into,
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(|e| EngineError::io("open", into, e.into()))?,
            ),
            _ => None,
        };
        match &at {
            At::Pid(pid) => enter(*pid)?,
            At::View(v) => crate::view::enter(v)?,
        }
        match dir {
            Direction::Stat { path } => {
                let doc = stat(&path)?;
                println!("{doc}");
                Ok(())
            }
            Direction::Out { path } => pack(&path, std::io::stdout().lock()),
            Direction::In { dest, contents } => {
                place(std::io::stdin().lock(), Path::new(&dest), true, contents)
            }
            Direction::CopyUp { path, shift, .. } => match into {
                Some(fd) => crate::view::copy_up(&path, &fd, shift),
                None => Err(EngineError::Internal(
                    "copy-up without its directory".into(),
                )),
            },
        }
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vessel: {e}");
            1
        }
    }
}

fn enter(pid: i32) -> Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE) on ourselves: nothing of the container may ptrace
    // this process or open its /proc files while it works in the container's view.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let root_path = format!("/proc/{pid}/root");
    let root =
        std::fs::File::open(&root_path).map_err(|e| EngineError::io("open", &root_path, e))?;
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let ns = std::fs::File::open(&ns_path).map_err(|e| EngineError::io("open", &ns_path, e))?;
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| EngineError::Backend(format!("join the container's mount namespace: {e}")))?;
    nix::unistd::fchdir(root.as_fd())
        .map_err(|e| EngineError::Backend(format!("enter the container's root: {e}")))?;
    nix::unistd::chroot(".")
        .map_err(|e| EngineError::Backend(format!("chroot into the container: {e}")))?;
    nix::unistd::chdir("/").map_err(|e| EngineError::Backend(format!("chdir /: {e}")))?;
    Ok(())
}

/// The Engine API's stat of `path` (the `X-Docker-Container-Path-Stat` header): name,
/// size, mode as Go's `os.FileMode` bits, mtime, and for a link the absolute path it
/// leads to (resolved where the caller runs: inside the container).
pub fn stat(path: &str) -> Result<serde_json::Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let p = Path::new(path);
    let meta = std::fs::symlink_metadata(p).map_err(|_| {
        EngineError::InvalidFlag(format!(
            "no such file or directory in the container: {path}"
        ))
    })?;
    let ft = meta.file_type();
    // Go's os.FileMode: permissions, then one bit per kind and special bit.
    let mut mode = meta.mode() & 0o777;
    for (on, bit) in [
        (ft.is_dir(), 1u32 << 31),
        (ft.is_symlink(), 1 << 27),
        (ft.is_block_device() || ft.is_char_device(), 1 << 26),
        (ft.is_fifo(), 1 << 25),
        (ft.is_socket(), 1 << 24),
        (meta.mode() & 0o4000 != 0, 1 << 23),
        (meta.mode() & 0o2000 != 0, 1 << 22),
        (ft.is_char_device(), 1 << 21),
        (meta.mode() & 0o1000 != 0, 1 << 20),
    ] {
        if on {
            mode |= bit;
        }
    }
    let link = if ft.is_symlink() {
        std::fs::canonicalize(p)
            .map(|t| t.display().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mtime = chrono::DateTime::from_timestamp(meta.mtime(), meta.mtime_nsec() as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    Ok(serde_json::json!({
        "name": p.file_name().map_or_else(|| "/".into(), |n| n.to_string_lossy().into_owned()),
        "size": meta.size(),
        "mode": mode,
        "mtime": mtime,
        "linkTarget": link,
    }))
}

/// Writes a tar of `path` to `out`: entries named after its last component, or its
/// contents when it ends in `/.`. Used inside the container and, for `cp` into one, on the
/// host.
pub fn pack(path: &str, out: impl Write) -> Result<()> {
    let p = Path::new(path);
    let meta = std::fs::symlink_metadata(p).map_err(|_| {
        EngineError::InvalidFlag(format!(
            "no such file or directory in the container: {path}"
        ))
    })?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let contents = path.ends_with("/.") || path == ".";
    let err = |e| EngineError::io("archive", p, e);
    let dev = std::os::unix::fs::MetadataExt::dev(&meta);
    if meta.is_dir() {
        if contents {
            append_children(&mut b, p, Path::new(""), dev).map_err(err)?;
        } else {
            let name = PathBuf::from(p.file_name().unwrap_or(std::ffi::OsStr::new("root")));
            append_tree(&mut b, p, &name, dev).map_err(err)?;
        }
    } else if meta.file_type().is_file() || meta.file_type().is_symlink() {
        let name = PathBuf::from(p.file_name().unwrap_or(std::ffi::OsStr::new("file")));
        b.append_path_with_name(p, &name).map_err(err)?;
    } else {
        return Err(EngineError::InvalidFlag(format!(
            "{path} is not a regular file, directory or link"
        )));
    }
    b.into_inner().map_err(err)?.flush().map_err(err)?;
    Ok(())
}

/// Appends directory `dir` as `name`, then what it holds (see [`append_children`]).
fn append_tree<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
    dev: u64,
) -> std::io::Result<()> {
    b.append_path_with_name(dir, name)?;
    append_children(b, dir, name, dev)
}

/// Appends what directory `dir` holds under `name`: regular files, directories and
/// links, without following links, and nothing on another filesystem than `dev` (as
/// `tar --one-file-system`: a copy of `/` takes the container's files, not its /proc,
/// /sys or /dev).
fn append_children<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
    dev: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        let (src, dst) = (e.path(), name.join(e.file_name()));
        let ft = meta.file_type();
        if ft.is_dir() {
            append_tree(b, &src, &dst, dev)?;
        } else if ft.is_file() || ft.is_symlink() {
            b.append_path_with_name(&src, &dst)?;
        }
    }
    Ok(())
}

impl Engine {
    fn copy_process(&self, inst: &Instance, args: &[String]) -> Result<Command> {
        if inst.request.isolation == Isolation::Vm {
            return Err(EngineError::Conflict(format!(
                "cp is not supported for microVMs yet ({} runs with --isolation vm): use exec with a tar stream",
                inst.name
            )));
        }
        let inst = self.refresh(inst.clone());
        let mut cmd = Command::new(&self.config().exe);
        cmd.arg("__cp");
        match (inst.status, inst.pid) {
            (Status::Running, Some(pid)) => {
                cmd.arg("--pid").arg(pid.to_string());
            }
            (Status::Running | Status::Dead, _) => {
                return Err(EngineError::Conflict(format!(
                    "{} is {}: its file system cannot be reached now",
                    inst.name,
                    inst.status.as_str()
                )))
            }
            (Status::Created | Status::Exited, _) => {
                let view = serde_json::to_string(&self.stopped_view(&inst)?)
                    .map_err(|e| EngineError::Internal(format!("the view: {e}")))?;
                cmd.arg("--view").arg(view);
            }
        }
        cmd.args(args);
        self.config().apply_child_env(&mut cmd);
        Ok(cmd)
    }

    /// The Engine API's stat of `path` in container `inst` (see [`stat`]).
    pub fn stat_path(&self, inst: &Instance, path: &str) -> Result<serde_json::Value> {
        let mut cmd = self.copy_process(inst, &["--stat".into(), path.into()])?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EngineError::io("run", &self.config().exe, e))?;
        let mut child = child;
        let mut out = Vec::new();
        let read = child
            .stdout
            .take()
            .map(|mut s| s.read_to_end(&mut out).map(|_| ()))
            .transpose();
        finish(child, read.map(|_| ()))?;
        serde_json::from_slice(&out)
            .map_err(|e| EngineError::Internal(format!("the path's stat: {e}")))
    }

    /// Writes a tar of `path` in container `inst` to `out` (see [`Direction::Out`]).
    pub fn copy_out(&self, inst: &Instance, path: &str, out: &mut dyn Write) -> Result<()> {
        let mut cmd = self.copy_process(inst, &["--out".into(), path.into()])?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EngineError::io("run", &self.config().exe, e))?;
        let copied = child
            .stdout
            .take()
            .map(|mut s| std::io::copy(&mut s, out))
            .transpose();
        finish(child, copied.map(|_| ()))
    }

    /// Places tar stream `input` at `dest` in running container `inst` (see [`place`];
    /// `contents` when the archive holds a directory's contents).
    pub fn copy_in(
        &self,
        inst: &Instance,
        dest: &str,
        contents: bool,
        input: &mut dyn Read,
    ) -> Result<()> {
        let mut args = vec!["--in".to_string(), dest.to_string()];
        if contents {
            args.push("--contents".into());
        }
        let mut cmd = self.copy_process(inst, &args)?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EngineError::io("run", &self.config().exe, e))?;
        let copied = child
            .stdin
            .take()
            .map(|mut s| std::io::copy(input, &mut s))
            .transpose();
        finish(child, copied.map(|_| ()))
    }
}

/// Waits for `vessel __cp`; its own message when it failed, else the copy's error.
pub(crate) fn finish(mut child: std::process::Child, copied: std::io::Result<()>) -> Result<()> {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child
        .wait()
        .map_err(|e| EngineError::Internal(format!("wait for the copy: {e}")))?;
    if !status.success() {
        let msg = err.trim().trim_start_matches("vessel: ").to_string();
        return Err(EngineError::InvalidFlag(if msg.is_empty() {
            format!("the copy failed ({status})")
        } else {
            msg
        }));
    }
    copied.map_err(|e| EngineError::Internal(format!("copy the archive: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_stay_inside() {
        assert_eq!(clean(Path::new("a/b"), None), Some(PathBuf::from("a/b")));
        assert_eq!(
            clean(Path::new("./a/b"), Some("x")),
            Some(PathBuf::from("x/b"))
        );
        assert_eq!(clean(Path::new("a/../../etc"), None), None);
        assert_eq!(clean(Path::new("/etc/passwd"), None), None);
    }
}
