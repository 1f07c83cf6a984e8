//! A container's file system seen without the container: the image's layers (and the
//! instance's upper directory) stacked by overlayfs in a private mount namespace of a
//! `vessel __cp` process, which chroots into it. Through it `cp` and `export` reach
//! stopped containers, and a new volume gets Docker's copy-up: the image's content at
//! the volume's path, copied into the volume when it is first mounted.
//!
//! Nothing is mounted on the host: the mount namespace is the helper's own and ends with
//! it, also when it is killed. Inside, every path is resolved in the chroot, so no link
//! the image holds can lead the copy out of it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::catalogue::Instance;
use crate::request::Isolation;
use crate::{Engine, EngineError, Result};

/// What a `vessel __cp --view` process mounts for itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct View {
    /// The image's layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// The instance's upper and work directories; `None`: the image alone, read-only.
    pub upper: Option<(PathBuf, PathBuf)>,
    /// An empty directory to mount the overlay on (in the private namespace only).
    pub mountpoint: PathBuf,
    /// Host directories or files mounted at their targets, as the container has them.
    pub volumes: Vec<ViewVolume>,
}

/// A volume or bind mount of a [`View`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ViewVolume {
    /// Host path.
    pub source: PathBuf,
    /// Absolute path inside the view.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Longest mount data the kernel accepts (one page, NUL included).
const MAX_MOUNT_DATA: usize = 4095;

/// Deepest directory nesting a copy-up follows: a hostile image cannot exhaust the
/// helper's stack or descriptors.
const MAX_DEPTH: usize = 256;

fn sys<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> EngineError + 'a {
    move |e| EngineError::io(what, path, e.into())
}

/// Enters `view` (this process only: a mount namespace of its own, then chroot). Run
/// in `vessel __cp` before anything else.
pub fn enter(view: &View) -> Result<()> {
    use rustix::mount::{self as m, MountPropagationFlags as P};
    // SAFETY: prctl(PR_SET_DUMPABLE) on ourselves: nothing may ptrace this process or
    // open its /proc files while it works in the view.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // SAFETY: unshare of this single-threaded helper's own mount namespace.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .map_err(|e| EngineError::Backend(format!("unshare the mount namespace: {e}")))?;
    m::mount_change("/", P::PRIVATE | P::REC)
        .map_err(|e| EngineError::Backend(format!("make / private: {e}")))?;
    // The volumes' trees, taken while host paths still mean the host's.
    let mut trees = Vec::new();
    for v in &view.volumes {
        let tree = m::open_tree(
            rfs::CWD,
            &v.source,
            m::OpenTreeFlags::OPEN_TREE_CLONE
                | m::OpenTreeFlags::OPEN_TREE_CLOEXEC
                | m::OpenTreeFlags::AT_RECURSIVE,
        )
        .map_err(sys("open the mount tree of", &v.source))?;
        let is_dir = std::fs::metadata(&v.source).is_ok_and(|md| md.is_dir());
        trees.push((tree, is_dir));
    }
    let root = match (view.layers.as_slice(), &view.upper) {
        ([], None) => return Err(EngineError::Internal("a view of no layers at all".into())),
        // One layer and nothing to write: the layer directory itself, as it is.
        ([one], None) => one.clone(),
        _ => {
            mount_overlay(view)?;
            view.mountpoint.clone()
        }
    };
    std::env::set_current_dir(&root).map_err(|e| EngineError::io("enter", &root, e))?;
    rustix::process::chroot(".").map_err(sys("chroot into", &root))?;
    std::env::set_current_dir("/").map_err(|e| EngineError::io("enter", "/", e))?;
    for (v, (tree, is_dir)) in view.volumes.iter().zip(trees) {
        let target = Path::new(&v.target);
        // Made as the container's start makes it, inside the chroot.
        if !target.exists() {
            if is_dir {
                std::fs::create_dir_all(target)
                    .map_err(|e| EngineError::io("create", target, e))?;
            } else {
                if let Some(p) = target.parent() {
                    std::fs::create_dir_all(p).map_err(|e| EngineError::io("create", p, e))?;
                }
                std::fs::File::create(target).map_err(|e| EngineError::io("create", target, e))?;
            }
        }
        m::move_mount(
            tree.as_fd(),
            "",
            rfs::CWD,
            target,
            m::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | m::MoveMountFlags::MOVE_MOUNT_T_SYMLINKS,
        )
        .map_err(sys("mount a volume on", target))?;
        if v.read_only {
            m::mount_remount(target, m::MountFlags::BIND | m::MountFlags::RDONLY, "")
                .map_err(sys("make read-only", target))?;
        }
    }
    Ok(())
}

/// Mounts the view's overlay on its mountpoint, with paths relative to the common parent
/// (the working directory then) when absolute ones do not fit in a page.
fn mount_overlay(view: &View) -> Result<()> {
    let mut all: Vec<&Path> = view.layers.iter().rev().map(PathBuf::as_path).collect();
    if let Some((u, w)) = &view.upper {
        all.push(u);
        all.push(w);
    }
    for p in &all {
        let s = p.to_string_lossy();
        if !p.is_absolute() || s.contains(',') || s.contains(':') {
            return Err(EngineError::Internal(format!(
                "layer path {s:?} must be absolute and contain no ',' or ':'"
            )));
        }
    }
    let render = |f: &dyn Fn(&Path) -> String| {
        let n = view.layers.len();
        let lower = all[..n].iter().map(|p| f(p)).collect::<Vec<_>>().join(":");
        match &view.upper {
            Some((u, w)) => format!("lowerdir={lower},upperdir={},workdir={}", f(u), f(w)),
            None => format!("lowerdir={lower}"),
        }
    };
    let mut data = render(&|p| p.to_string_lossy().into_owned());
    if data.len() > MAX_MOUNT_DATA {
        let mut common = all[0].to_path_buf();
        while !all.iter().all(|p| p.starts_with(&common)) && common.pop() {}
        data = render(&|p| {
            p.strip_prefix(&common)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        });
        std::env::set_current_dir(&common).map_err(|e| EngineError::io("enter", &common, e))?;
    }
    let flags = if view.upper.is_some() {
        rustix::mount::MountFlags::empty()
    } else {
        rustix::mount::MountFlags::RDONLY
    };
    let data = std::ffi::CString::new(data)
        .map_err(|_| EngineError::Internal("a layer path with NUL".into()))?;
    rustix::mount::mount(
        "overlay",
        &view.mountpoint,
        "overlay",
        flags,
        data.as_c_str(),
    )
    .map_err(|e| {
        EngineError::Backend(format!(
            "mount the container's file system (overlay on {}): {e}",
            view.mountpoint.display()
        ))
    })
}

/// Docker's copy-up, inside an entered view: the directory at `path` (links followed
/// inside the view), its owner, mode and everything under it, copied into the empty
/// host directory `into` (opened before the view was entered), owners shifted by
/// `shift` (a `--userns` container's ids on the host). A missing path or one that is
/// not a directory copies nothing, as Docker. Regular files, directories, symbolic
/// links and FIFOs are copied with their owners, modes and times; device nodes and
/// sockets are not.
pub fn copy_up(path: &str, into: &OwnedFd, shift: u32) -> Result<()> {
    let src = match rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(EngineError::io("open", path, e.into())),
    };
    let err = |e: io::Error| EngineError::io("copy the image's content of", path, e);
    copy_dir(&src, into, shift, 0).map_err(err)?;
    let st = rfs::fstat(&src).map_err(|e| err(e.into()))?;
    set_meta(into, None, &st, shift).map_err(err)
}

fn copy_dir(src: &OwnedFd, dst: &OwnedFd, shift: u32, depth: usize) -> io::Result<()> {
    if depth >= MAX_DEPTH {
        return Err(io::Error::other(format!(
            "directories nest deeper than {MAX_DEPTH} levels"
        )));
    }
    let dir = rfs::Dir::read_from(src)?;
    for entry in dir {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let st = rfs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let nofollow = OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::FileType::from_raw_mode(st.st_mode) {
            rfs::FileType::Directory => {
                rfs::mkdirat(dst, name, Mode::from_raw_mode(0o700))?;
                let s = rfs::openat(
                    src,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | nofollow,
                    Mode::empty(),
                )?;
                let d = rfs::openat(
                    dst,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | nofollow,
                    Mode::empty(),
                )?;
                copy_dir(&s, &d, shift, depth + 1)?;
                set_meta(&d, None, &st, shift)?;
            }
            rfs::FileType::RegularFile => {
                let s = rfs::openat(src, name, OFlags::RDONLY | nofollow, Mode::empty())?;
                let d = rfs::openat(
                    dst,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | nofollow,
                    Mode::from_raw_mode(0o600),
                )?;
                let (mut from, mut to) = (std::fs::File::from(s), std::fs::File::from(d));
                io::copy(&mut from, &mut to)?;
                set_meta(&OwnedFd::from(to), None, &st, shift)?;
            }
            rfs::FileType::Symlink => {
                let target = rfs::readlinkat(src, name, Vec::new())?;
                rfs::symlinkat(&target, dst, name)?;
                set_meta(dst, Some(name), &st, shift)?;
            }
            rfs::FileType::Fifo => {
                rfs::mknodat(
                    dst,
                    name,
                    rfs::FileType::Fifo,
                    Mode::from_raw_mode(0o600),
                    0,
                )?;
                set_meta(dst, Some(name), &st, shift)?;
            }
            other => {
                tracing::debug!("copy-up: {name:?} is a {other:?}: not copied");
            }
        }
    }
    Ok(())
}

/// Gives `fd` (or, with `name`, the entry `name` of directory `fd`, not followed) the
/// owner (shifted), mode and times of `st`. The owner first: chown clears set-id bits.
fn set_meta(
    fd: &OwnedFd,
    name: Option<&std::ffi::CStr>,
    st: &rfs::Stat,
    shift: u32,
) -> io::Result<()> {
    let uid = rfs::Uid::from_raw(st.st_uid.saturating_add(shift));
    let gid = rfs::Gid::from_raw(st.st_gid.saturating_add(shift));
    let times = rfs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    match name {
        None => {
            rfs::fchown(fd, Some(uid), Some(gid))?;
            rfs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777))?;
            rfs::futimens(fd, &times)?;
        }
        Some(name) => {
            rfs::chownat(fd, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
            if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::Symlink {
                rfs::chmodat(
                    fd,
                    name,
                    Mode::from_raw_mode(st.st_mode & 0o7777),
                    AtFlags::empty(),
                )?;
            }
            rfs::utimensat(fd, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
        }
    }
    Ok(())
}

impl Engine {
    /// The image `inst` was made from.
    pub(crate) fn instance_image(&self, inst: &Instance) -> Result<vessel_image::ImageRecord> {
        let id = inst
            .image_id
            .parse()
            .map_err(|e| EngineError::Internal(format!("the instance's image id: {e}")))?;
        Ok(self.store()?.get(&id)?)
    }

    /// The layer directories of `inst`'s image, bottom first.
    pub(crate) fn instance_layers(&self, inst: &Instance) -> Result<Vec<PathBuf>> {
        let image = self.instance_image(inst)?;
        Ok(self.store()?.layer_dirs(&image)?)
    }

    /// The file system of `inst` (a container that is not running) with its volumes, for
    /// `vessel __cp --view`.
    pub(crate) fn stopped_view(&self, inst: &Instance) -> Result<View> {
        let dir = self.instance_dir(&inst.id);
        Ok(View {
            layers: self.instance_layers(inst)?,
            upper: Some((dir.join("upper"), dir.join("work"))),
            mountpoint: dir.join("rootfs"),
            volumes: inst
                .request
                .volumes
                .iter()
                .map(|v| ViewVolume {
                    source: v.source.clone().into(),
                    target: v.target.clone(),
                    read_only: v.read_only,
                })
                .collect(),
        })
    }

    /// Readies a new container's volumes. Docker's copy-up: each named or anonymous
    /// volume (not `nocopy`) that is still empty gets the image's content at its path,
    /// with owners and modes, before the container first mounts it. With `--userns`, the
    /// container's root must reach the volume (its directory `0710`, of the group root
    /// maps to) and owns a new empty one, as under Docker's user namespace remapping.
    pub(crate) fn populate_volumes(&self, inst: &Instance, layers: &[PathBuf]) -> Result<()> {
        let req = &inst.request;
        if req.isolation != Isolation::Container {
            return Ok(());
        }
        let shift = if req.userns {
            crate::container::USERNS_HOST_ID
        } else {
            0
        };
        for v in req.volumes.iter().filter(|v| v.name.is_some()) {
            let data = Path::new(&v.source);
            // The volume's directory holds `_data`: held while it is checked and filled,
            // so that two new containers of one new volume copy once.
            let Some(vol_dir) = data.parent() else {
                continue;
            };
            let lock =
                std::fs::File::open(vol_dir).map_err(|e| EngineError::io("open", vol_dir, e))?;
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
                .map_err(sys("lock", vol_dir))?;
            let empty = std::fs::read_dir(data)
                .map_err(|e| EngineError::io("read", data, e))?
                .next()
                .is_none();
            if req.userns {
                let io = |e| EngineError::io("give the user namespace", vol_dir, e);
                std::os::unix::fs::chown(vol_dir, None, Some(shift)).map_err(io)?;
                vessel_db::restrict(vol_dir, 0o710).map_err(io)?;
                let owner = std::fs::metadata(data).map_err(io)?;
                if empty && std::os::unix::fs::MetadataExt::uid(&owner) == 0 {
                    std::os::unix::fs::chown(data, Some(shift), Some(shift)).map_err(io)?;
                }
            }
            if !empty || v.nocopy || layers.is_empty() {
                continue;
            }
            let view = View {
                layers: layers.to_vec(),
                upper: None,
                mountpoint: self.instance_dir(&inst.id).join("rootfs"),
                volumes: Vec::new(),
            };
            let json = serde_json::to_string(&view)
                .map_err(|e| EngineError::Internal(format!("the view: {e}")))?;
            let mut cmd = std::process::Command::new(&self.config().exe);
            cmd.arg("__cp")
                .arg("--view")
                .arg(json)
                .arg("--copy-up")
                .arg(&v.target)
                .arg("--into")
                .arg(data)
                .arg("--shift")
                .arg(shift.to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            self.config().apply_child_env(&mut cmd);
            let copied = cmd
                .spawn()
                .map_err(|e| EngineError::io("run", &self.config().exe, e))
                .and_then(|child| crate::copy::finish(child, Ok(())));
            if let Err(e) = copied {
                // Empty again, not half-filled: the next start's copy finds it empty.
                for entry in std::fs::read_dir(data).into_iter().flatten().flatten() {
                    let p = entry.path();
                    let _ = match entry.file_type() {
                        Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                        _ => std::fs::remove_file(&p),
                    };
                }
                return Err(EngineError::Backend(format!(
                    "copy the image's {} into volume {}: {e}",
                    v.target,
                    v.name.as_deref().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}
