//! The root filesystem of a container with a user namespace of its own.
//!
//! Its root is an unprivileged host uid (100000 for `vessel run --userns`), but the image's
//! layers are owned by host root and shared with every other container: they must not be
//! chowned or copied. Two things make them usable:
//! - each lower layer is seen through an *idmapped mount* (Linux 5.12) carrying the
//!   container's id mapping, so a file owned by uid 0 on disk belongs to the container's
//!   root; overlayfs accepts idmapped layers since Linux 5.19;
//! - the overlay is mounted by host root, from the intermediate before it enters the user
//!   namespace, in a staging mount namespace of its own. The container's mount namespace
//!   is then copied from it, so nothing of this is ever mounted on the host.
//!
//! The per-container upper directory is empty and the container's alone: its root is
//! simply chowned to the container's root, so that the container owns `/`.
//!
//! Runs in the forked intermediate: no logging; errors carry the path and errno.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{chown, fork, ForkResult, Gid, Uid};
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use crate::config::{ContainerConfig, OverlayMount};
use crate::error::{Error, Result};

/// Mount `ov` on the rootfs as host root, its layers idmapped into the container's user
/// namespace, in a new (staging) mount namespace. The caller must not have entered the
/// user namespace yet.
pub(crate) fn premount_overlay(cfg: &ContainerConfig, ov: &OverlayMount) -> Result<()> {
    let userns = mapping_userns(cfg)?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| Error::syscall("unshare(CLONE_NEWNS)", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make mount propagation private on", "/", e))?;
    for layer in &ov.lower {
        idmap_in_place(layer, &userns)?;
    }
    let root_uid = host_id(&cfg.uid_mappings, "uid")?;
    let root_gid = host_id(&cfg.gid_mappings, "gid")?;
    chown(
        &ov.upper,
        Some(Uid::from_raw(root_uid)),
        Some(Gid::from_raw(root_gid)),
    )
    .map_err(|e| {
        Error::sys(
            "chown the upper directory to the container's root",
            &ov.upper,
            e,
        )
    })?;
    super::mount_overlay(cfg, ov)
}

/// The host id that the container's id 0 maps to.
fn host_id(maps: &[oci_spec::runtime::LinuxIdMapping], what: &str) -> Result<u32> {
    maps.iter()
        .find(|m| m.container_id() == 0)
        .map(|m| m.host_id())
        .ok_or_else(|| {
            Error::InitFailed(format!(
                "the user namespace's {what} mappings do not map the container's root (0)"
            ))
        })
}

/// Over-mount `dir` with itself seen through the id mapping of `userns`.
fn idmap_in_place(dir: &Path, userns: &File) -> Result<()> {
    let tree = open_tree(
        rustix::fs::CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| {
        Error::sys(
            "open_tree(OPEN_TREE_CLONE)",
            dir,
            nix::Error::from_raw(e.raw_os_error()),
        )
    })?;
    set_idmap(&tree, userns).map_err(|e| {
        Error::InitFailed(format!(
            "--userns needs idmapped mounts of the image layers (Linux 5.12, and 5.19 for overlayfs over them, on a filesystem that allows them): mount_setattr(MOUNT_ATTR_IDMAP) on {}: {e}",
            dir.display()
        ))
    })?;
    move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        dir,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| {
        Error::sys(
            "move_mount the idmapped layer onto",
            dir,
            nix::Error::from_raw(e.raw_os_error()),
        )
    })
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH, {MOUNT_ATTR_IDMAP, userns})`.
fn set_idmap(tree: &OwnedFd, userns: &File) -> std::result::Result<(), nix::Error> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    super::mount_setattr(tree, 0, &attr)
}

/// A user namespace with the container's id mappings, for idmapped mounts: a child
/// unshares it and waits; we write its maps, open it, and let the child go. The mounts
/// keep the namespace alive after the child is gone.
fn mapping_userns(cfg: &ContainerConfig) -> Result<File> {
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| Error::syscall("pipe", e))?;
    let (go_r, go_w) = nix::unistd::pipe().map_err(|e| Error::syscall("pipe", e))?;
    // SAFETY: we are the single-threaded intermediate; the child makes only raw syscalls
    // and leaves with _exit.
    match unsafe { fork() }.map_err(|e| Error::syscall("fork", e))? {
        ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            let code = match unshare(CloneFlags::CLONE_NEWUSER) {
                Ok(()) => {
                    let _ = nix::unistd::write(&ready_w, b"1");
                    let mut b = [0u8; 1];
                    // EOF: the parent has what it needs.
                    let _ = nix::unistd::read(&go_r, &mut b);
                    0
                }
                Err(_) => 1,
            };
            crate::process::setup::exit(code)
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let mut b = [0u8; 1];
            let ready = nix::unistd::read(&ready_r, &mut b).map_err(|e| Error::syscall("read", e));
            let ns = ready.and_then(|n| {
                if n != 1 {
                    // The child exits without a word when its unshare fails.
                    return Err(Error::InitFailed(
                        "a helper could not unshare the user namespace that idmaps the image layers".into(),
                    ));
                }
                crate::process::write_id_maps(child, cfg)?;
                let path = format!("/proc/{child}/ns/user");
                File::open(&path).map_err(|e| Error::io("open", &path, e))
            });
            drop(go_w);
            let _ = waitpid(child, None);
            ns
        }
    }
}
