//! Root filesystem setup, run by the container init inside its new mount namespace:
//! propagation, overlay, spec mounts, /dev, pivot_root, masked and read-only paths.
//!
//! Runs in the forked child: no logging (a lock held by another thread of the parent at
//! fork time would deadlock us); errors carry the path and errno back to the parent.

pub(crate) mod idmap;
pub(crate) mod paths;

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, pivot_root};

use crate::cgroups::Cgroup;
use crate::config::{ContainerConfig, DeviceNode, MountPlan, OverlayMount};
use crate::error::{Error, Result};
use paths::{fd_path, Root};

const NONE: Option<&str> = None;

/// Devices every container gets, bind-mounted from the host (works in user namespaces).
/// The devices every container's fresh /dev gets: name, major, minor (character devices,
/// mode 0666, owned by root), as in runc's default set.
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Make the mount tree private (or as the spec says) so nothing propagates to the host,
/// then mount the overlay (or bind the rootfs on itself) so it is a mount point. In a new
/// user namespace the overlay is already there: see [`idmap`].
pub(crate) fn prepare_root(cfg: &ContainerConfig) -> Result<()> {
    mount(NONE, "/", NONE, cfg.propagation, NONE)
        .map_err(|e| Error::sys("make mount propagation private on", "/", e))?;
    match &cfg.overlay {
        Some(ov) if !premounted(cfg) => mount_overlay(cfg, ov),
        // A premounted overlay came from a more privileged mount namespace, so it is
        // locked here and pivot_root refuses it: bind it on itself, as a plain rootfs.
        _ => mount(
            Some(&cfg.rootfs),
            &cfg.rootfs,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )
        .map_err(|e| Error::sys("bind-mount rootfs on itself", &cfg.rootfs, e)),
    }
}

/// Whether the intermediate mounts the overlay before entering the container's new user
/// namespace ([`idmap::premount_overlay`]) instead of the init mounting it.
pub(crate) fn premounted(cfg: &ContainerConfig) -> bool {
    cfg.overlay.is_some() && cfg.new_ns(nix::sched::CloneFlags::CLONE_NEWUSER)
}

/// Mount the overlay `ov` on the rootfs.
fn mount_overlay(cfg: &ContainerConfig, ov: &OverlayMount) -> Result<()> {
    if let Some(dir) = &ov.chdir {
        chdir(dir).map_err(|e| Error::sys("chdir to layer parent", dir, e))?;
    }
    let over = |data: &str| {
        mount(
            Some("overlay"),
            &cfg.rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
    };
    match over(&ov.data) {
        // `volatile` is Linux 5.10's: without it the upper directory is synced.
        Err(nix::errno::Errno::EINVAL) if ov.volatile => {
            over(ov.data.trim_end_matches(",volatile"))
        }
        r => r,
    }
    .map_err(|e| {
        Error::InitFailed(format!(
            "mount overlay on {} (options {}): {e}",
            cfg.rootfs.display(),
            ov.data
        ))
    })
}

/// Perform the spec's mounts under the rootfs, in order. `before_cgroup` runs before the
/// first cgroup filesystem is mounted (it must leave the process in its cgroup and
/// cgroup namespace). Every target is resolved inside the root and mounted on through
/// its descriptor (see [`paths`]).
pub(crate) fn mount_all(
    cfg: &ContainerConfig,
    cgroup: &Cgroup,
    before_cgroup: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let root = Root::open(&cfg.rootfs)?;
    for m in &cfg.mounts {
        let dest = m.destination.as_path();
        if m.typ == "cgroup" || m.typ == "cgroup2" {
            before_cgroup()?;
            mount_cgroup(cfg, cgroup, m, &root)?;
        } else if m.bind {
            mount_bind(m, &root)?;
        } else {
            let target = root.mkdir_all(dest)?;
            let r = mount(
                m.source.as_deref().or(Some(Path::new(&m.typ))),
                &fd_path(&target),
                Some(m.typ.as_str()),
                m.flags,
                Some(m.data.as_str()).filter(|d| !d.is_empty()),
            );
            match r {
                // Without its own network namespace a container may not mount sysfs:
                // give it the host's, read-only like Docker does.
                Err(Errno::EPERM) if m.typ == "sysfs" => {
                    mount(
                        Some("/sys"),
                        &fd_path(&target),
                        NONE,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        NONE,
                    )
                    .map_err(|e| Error::sys("bind-mount /sys on", dest, e))?;
                    remount_bind(&fd_path(&root.resolve(dest)?), m.flags | MsFlags::MS_RDONLY)?;
                }
                Err(e) => {
                    return Err(Error::InitFailed(format!(
                        "mount {} ({}) on {}: {e}",
                        m.source.as_deref().unwrap_or(Path::new("")).display(),
                        m.typ,
                        dest.display()
                    )))
                }
                Ok(()) => {}
            }
        }
        if !m.propagation.is_empty() {
            let target = root.resolve(dest)?;
            for p in &m.propagation {
                mount(NONE, &fd_path(&target), NONE, *p, NONE)
                    .map_err(|e| Error::sys("set mount propagation of", dest, e))?;
            }
        }
    }
    Ok(())
}

fn mount_bind(m: &MountPlan, root: &Root) -> Result<()> {
    let source = m.source.as_deref().unwrap_or(Path::new(""));
    let dest = m.destination.as_path();
    let meta = fs::metadata(source).map_err(|e| Error::io("stat bind source", source, e))?;
    let target = if meta.is_dir() {
        root.mkdir_all(dest)?
    } else {
        root.create_file(dest)?
    };
    let rec = m.flags & MsFlags::MS_REC;
    mount(
        Some(source),
        &fd_path(&target),
        NONE,
        MsFlags::MS_BIND | rec,
        NONE,
    )
    .map_err(|e| {
        Error::InitFailed(format!(
            "bind-mount {} on {}: {e}",
            source.display(),
            dest.display()
        ))
    })?;
    // Flags other than BIND/REC only take effect on a remount, of what is now mounted.
    let extra = m.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        let mounted = root.resolve(dest)?;
        if rec.is_empty() {
            remount_bind(&fd_path(&mounted), extra)?;
        } else {
            remount_recursive(&mounted, dest, extra)?;
        }
    }
    Ok(())
}

/// Applies `flags`' read-only, nosuid, nodev, noexec to every mount of the tree at
/// `target` (`:ro` volumes are read-only recursively, as Docker makes them), with
/// `mount_setattr(AT_RECURSIVE)`; kernels before 5.12 get the top mount only.
fn remount_recursive(target: &OwnedFd, shown: &Path, flags: MsFlags) -> Result<()> {
    let mut set = 0;
    for (ms, attr) in [
        (MsFlags::MS_RDONLY, libc::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, libc::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, libc::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
    ] {
        if flags.contains(ms) {
            set |= attr;
        }
    }
    let other =
        flags & !(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    if !other.is_empty() || set == 0 {
        return remount_bind(&fd_path(target), flags);
    }
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    match mount_setattr(target, libc::AT_RECURSIVE, &attr) {
        Ok(()) => Ok(()),
        Err(Errno::ENOSYS) => remount_bind(&fd_path(target), flags),
        Err(e) => Err(Error::sys("mount_setattr(AT_RECURSIVE)", shown, e)),
    }
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | at_flags, attr)`. Neither rustix nor nix wraps
/// mount_setattr (Linux 5.12); libc has its number and `struct mount_attr`.
pub(crate) fn mount_setattr(
    fd: &impl AsRawFd,
    at_flags: libc::c_int,
    attr: &libc::mount_attr,
) -> std::result::Result<(), nix::Error> {
    // SAFETY: a valid fd, an empty NUL-terminated path, and `attr` with its exact size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | at_flags,
            attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}

/// Remount a bind mount with `flags`, keeping the flags the kernel locked (nosuid, nodev,
/// noexec... a remount may not clear those in a user namespace).
fn remount_bind(target: &Path, flags: MsFlags) -> Result<()> {
    let locked = statvfs(target)
        .map(|s| {
            let f = s.flags();
            let mut m = MsFlags::empty();
            for (fs_flag, ms) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if f.contains(fs_flag) {
                    m |= ms;
                }
            }
            m
        })
        .unwrap_or(MsFlags::empty());
    mount(
        NONE,
        target,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked,
        NONE,
    )
    .map_err(|e| Error::sys("remount", target, e))
}

/// Mount /sys/fs/cgroup. With a cgroup namespace the container gets fresh cgroup
/// filesystems rooted at its own cgroup; without, its cgroup directories are bind-mounted.
fn mount_cgroup(cfg: &ContainerConfig, cgroup: &Cgroup, m: &MountPlan, root: &Root) -> Result<()> {
    let dest = m.destination.as_path();
    let target_fd = root.mkdir_all(dest)?;
    let target = fd_path(&target_fd);
    let target = target.as_path();
    let ro = m.flags.contains(MsFlags::MS_RDONLY);
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let ro_flag = if ro {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let cgns = cfg.has_ns(nix::sched::CloneFlags::CLONE_NEWCGROUP);
    if cgroup.unified {
        if cgns {
            mount(
                Some("cgroup2"),
                target,
                Some("cgroup2"),
                base | ro_flag,
                NONE,
            )
            .map_err(|e| Error::sys("mount cgroup2 on", target, e))?;
        } else if let Some(d) = cgroup.dirs.iter().find(|d| d.v2) {
            mount(Some(&d.path), target, NONE, MsFlags::MS_BIND, NONE)
                .map_err(|e| Error::sys("bind-mount cgroup on", target, e))?;
            remount_bind(&fd_path(&root.resolve(dest)?), base | ro_flag)?;
        }
        return Ok(());
    }
    mount(Some("tmpfs"), target, Some("tmpfs"), base, Some("mode=755"))
        .map_err(|e| Error::sys("mount tmpfs on", dest, e))?;
    // From here on, the tmpfs just mounted (ours: nothing of the image is in it).
    let tmpfs = root.resolve(dest)?;
    let target = fd_path(&tmpfs);
    let target = target.as_path();
    for d in &cgroup.dirs {
        let name = d
            .mountpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unified".into());
        let sub = target.join(&name);
        mkdir_all(&sub)?;
        let r = if cgns {
            if d.v2 {
                mount(Some("cgroup2"), &sub, Some("cgroup2"), base | ro_flag, NONE)
            } else {
                mount(
                    Some("cgroup"),
                    &sub,
                    Some("cgroup"),
                    base | ro_flag,
                    Some(d.controllers.join(",").as_str()),
                )
            }
        } else {
            mount(Some(&d.path), &sub, NONE, MsFlags::MS_BIND, NONE).and_then(|()| {
                mount(
                    NONE,
                    &sub,
                    NONE,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | base | ro_flag,
                    NONE,
                )
            })
        };
        r.map_err(|e| Error::sys("mount cgroup hierarchy on", &sub, e))?;
    }
    if ro {
        mount(
            NONE,
            target,
            NONE,
            MsFlags::MS_REMOUNT | base | MsFlags::MS_RDONLY,
            Some("mode=755"),
        )
        .map_err(|e| Error::sys("remount read-only", target, e))?;
    }
    Ok(())
}

/// Populate /dev when the spec mounted a fresh one: default devices, spec devices,
/// the standard symlinks and /dev/ptmx. Every node and link is made with a `*at` call
/// in a directory resolved inside the root, so an image whose `/dev` (or a device's
/// parent) is a symlink gets them inside its root, never on the host.
pub(crate) fn setup_dev(cfg: &ContainerConfig) -> Result<()> {
    let root = Root::open(&cfg.rootfs)?;
    let fresh_dev = cfg
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev") && !m.bind);
    if fresh_dev {
        let dev = root.resolve(Path::new("/dev"))?;
        // Made like runc: a node of our own where we may (a mknod in the tmpfs, which
        // the container's exit need not unmount), else a bind mount of the host's.
        for &(name, major, minor) in DEFAULT_DEVICES {
            let host = Path::new("/dev").join(name);
            if cfg.devices.iter().any(|d| d.path == host) {
                continue;
            }
            let node = DeviceNode {
                path: host,
                kind: libc::S_IFCHR,
                major,
                minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            };
            create_device(&node, &dev, OsStr::new(name), &root)?;
        }
        let links: &[(&str, &str)] = &[
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ];
        for (src, name) in links {
            make_symlink(src, &dev, name)?;
        }
        if Path::new("/proc/kcore").exists() {
            make_symlink("/proc/kcore", &dev, "core")?;
        }
    }
    for d in &cfg.devices {
        let (dir, name) = root.parent_of(&d.path)?;
        create_device(d, &dir, name, &root)?;
    }
    // /dev/ptmx must be the container's devpts instance.
    if cfg
        .mounts
        .iter()
        .any(|m| m.typ == "devpts" && m.destination == Path::new("/dev/pts"))
    {
        let dev = root.resolve(Path::new("/dev"))?;
        let _ = rustix::fs::unlinkat(&dev, "ptmx", rustix::fs::AtFlags::empty());
        make_symlink("pts/ptmx", &dev, "ptmx")?;
    }
    Ok(())
}

fn make_symlink(src: &str, dir: &OwnedFd, name: &str) -> Result<()> {
    match rustix::fs::symlinkat(src, dir, name) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(Error::sys(
            "symlink",
            Path::new("/dev").join(name),
            nix::Error::from_raw(e.raw_os_error()),
        )),
    }
}

/// Makes device `d` as `name` in `dir` (inside the root): a node, or in a user namespace
/// (where mknod is refused) a bind mount of the host's node.
fn create_device(d: &DeviceNode, dir: &OwnedFd, name: &OsStr, root: &Root) -> Result<()> {
    use rustix::fs::AtFlags;
    let nixe = |e: rustix::io::Errno| nix::Error::from_raw(e.raw_os_error());
    let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
    let kind = rustix::fs::FileType::from_raw_mode(d.kind);
    let mode = rustix::fs::Mode::from_raw_mode(d.mode & 0o7777);
    let dev = rustix::fs::makedev(d.major as u32, d.minor as u32);
    match rustix::fs::mknodat(dir, name, kind, mode, dev) {
        Ok(()) => {
            rustix::fs::chownat(
                dir,
                name,
                Some(rustix::fs::Uid::from_raw(d.uid)),
                Some(rustix::fs::Gid::from_raw(d.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::sys("chown device", &d.path, nixe(e)))?;
            // The mode asked for, whatever our umask took from mknod's. The node was
            // just made by us in a directory no container process can reach yet.
            rustix::fs::chmodat(dir, name, mode, AtFlags::empty())
                .map_err(|e| Error::sys("chmod device", &d.path, nixe(e)))
        }
        // In a user namespace mknod is refused: bind the host's node instead.
        Err(rustix::io::Errno::PERM) => {
            let target = root.create_file(&d.path)?;
            mount(
                Some(&d.path),
                &fd_path(&target),
                NONE,
                MsFlags::MS_BIND,
                NONE,
            )
            .map_err(|e| Error::sys("bind-mount device on", &d.path, e))
        }
        Err(e) => Err(Error::sys("mknod", &d.path, nixe(e))),
    }
}

/// Make the rootfs the process's `/`, detaching the old root.
pub(crate) fn pivot(rootfs: &Path) -> Result<()> {
    chdir(rootfs).map_err(|e| Error::sys("chdir", rootfs, e))?;
    // pivot_root(".", ".") stacks the old root under the new one; unmounting "." then
    // removes it without needing a directory for it (the runc trick).
    pivot_root(".", ".").map_err(|e| Error::sys("pivot_root", rootfs, e))?;
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
        .map_err(|e| Error::sys("make old root rslave", "/", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::sys("unmount old root", "/", e))?;
    chdir("/").map_err(|e| Error::sys("chdir", "/", e))?;
    Ok(())
}

/// Hide paths: /dev/null over files, an empty read-only tmpfs over directories.
pub(crate) fn mask_paths(paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        let meta = match fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(_) => continue, // absent: nothing to hide
        };
        let r = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0k"),
            )
        } else {
            mount(Some("/dev/null"), p, NONE, MsFlags::MS_BIND, NONE)
        };
        r.map_err(|e| Error::sys("mask", p, e))?;
    }
    Ok(())
}

/// Make paths read-only with a bind mount on themselves.
pub(crate) fn readonly_paths(paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        match mount(Some(p), p, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE) {
            Ok(()) => {}
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(Error::sys("bind-mount read-only path", p, e)),
        }
        remount_bind(
            p,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    Ok(())
}

/// Remount `/` read-only (after pivot_root).
pub(crate) fn readonly_root() -> Result<()> {
    remount_bind(Path::new("/"), MsFlags::MS_RDONLY)
}

fn mkdir_all(p: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)
        .map_err(|e| Error::io("mkdir", p, e))
}
