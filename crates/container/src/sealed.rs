//! Running from a sealed view of our own binary (the CVE-2019-5736 class).
//!
//! Every container process is forked from a vessel process, so until its final `execve`
//! its `/proc/<pid>/exe` is vessel's binary; and an image whose entrypoint is
//! `/proc/self/exe` (or a `#!/proc/self/exe` script, or a symlink to it) makes the
//! container's pid 1 *execute* that binary, after which any process of the container can
//! open `/proc/1/exe` and, once it exits, write through it. If that were the host's
//! binary file, a hostile image would own the host's next `vessel` run.
//!
//! So the processes that fork containers run from a *sealed* view of the binary: the
//! file as seen through a detached, read-only overlayfs mount with no upper layer (made
//! with `fsopen`/`fsmount`, attached nowhere, so no mount namespace can reach it or make
//! it writable). Nothing is copied: the overlay shares the host file's page cache, so a
//! start costs one mount and one `execve`, not a copy of the binary. `/proc/self/exe`
//! then names a file that refuses every write with `EROFS`. Where overlayfs cannot be
//! used, a sealed `memfd` copy (write, grow, shrink and seal sealed) does the same at
//! the cost of a copy.
//!
//! A sealed process learns the host binary's real path from its `argv[0]`, which
//! [`exec_sealed`] sets: see [`host_exe`].

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
    MountAttrFlags,
};

use crate::error::{Error, Result};

/// `statfs.f_type` of overlayfs.
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// Whether the running executable is a sealed view (a read-only overlay without an upper
/// layer, or a write-sealed memfd), so that nothing can write through `/proc/self/exe`.
pub fn running_sealed() -> bool {
    let Ok(exe) = File::open("/proc/self/exe") else {
        return false;
    };
    is_sealed(&exe)
}

fn is_sealed(f: &File) -> bool {
    // SAFETY: F_GET_SEALS on an fd we own; it fails with EINVAL for non-memfd files.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 {
        return seals & libc::F_SEAL_WRITE != 0 && seals & libc::F_SEAL_SEAL != 0;
    }
    match rustix::fs::fstatfs(f) {
        Ok(s) => {
            s.f_type == OVERLAYFS_MAGIC
                && rustix::fs::fstatvfs(f)
                    .map(|v| v.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
                    .unwrap_or(false)
        }
        Err(_) => false,
    }
}

/// The host path of the running vessel binary, also when running sealed (where
/// `/proc/self/exe` names the file inside a detached mount): the sealed exec put it in
/// `argv[0]`. Used to find the binaries installed beside it.
pub fn host_exe() -> Result<PathBuf> {
    if running_sealed() {
        if let Some(a0) = std::env::args_os().next().map(PathBuf::from) {
            if a0.is_absolute() {
                return Ok(a0);
            }
        }
    }
    std::env::current_exe().map_err(|e| Error::io("locate the running binary", "/proc/self/exe", e))
}

/// `KEY=VALUE` as an `execve` environment entry; `None` if either holds a NUL byte.
pub fn env_entry(key: &std::ffi::OsStr, value: &std::ffi::OsStr) -> Option<CString> {
    let mut kv = key.as_bytes().to_vec();
    kv.push(b'=');
    kv.extend_from_slice(value.as_bytes());
    CString::new(kv).ok()
}

/// A sealed view of the executable `exe`: an fd open for reading and executing on a
/// detached read-only overlay, or a sealed memfd copy where overlayfs is unavailable.
pub fn seal(exe: &Path) -> Result<OwnedFd> {
    match overlay_view(exe) {
        Ok(fd) => Ok(fd),
        Err(overlay_err) => memfd_copy(exe).map_err(|e| {
            Error::InitFailed(format!(
                "seal {} for container processes: overlayfs: {overlay_err}; memfd copy: {e}",
                exe.display()
            ))
        }),
    }
}

/// `exe` seen through an overlayfs whose lower layers are its directory and an empty
/// tmpfs, mounted nowhere. Both layers are passed as `/proc/self/fd` paths, so the
/// binary's directory may contain any character.
fn overlay_view(exe: &Path) -> std::result::Result<OwnedFd, String> {
    let (dir, name) = match (exe.parent(), exe.file_name()) {
        (Some(d), Some(n)) => (d, n),
        _ => return Err(format!("{} is not a file path", exe.display())),
    };
    let err = |what: &str| {
        let what = what.to_string();
        move |e: rustix::io::Errno| format!("{what}: {e}")
    };
    let dir_fd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open the binary's directory"))?;
    // overlayfs needs two lower layers without an upper one: the second is empty.
    let tmp = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(err("fsopen(tmpfs)"))?;
    fsconfig_set_string(&tmp, "size", "4k").map_err(err("fsconfig(tmpfs size)"))?;
    fsconfig_create(&tmp).map_err(err("create the empty tmpfs"))?;
    let empty = fsmount(
        &tmp,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )
    .map_err(err("fsmount(tmpfs)"))?;
    let ov = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(err("fsopen(overlay)"))?;
    let lower = format!(
        "/proc/self/fd/{}:/proc/self/fd/{}",
        dir_fd.as_raw_fd(),
        empty.as_raw_fd()
    );
    fsconfig_set_string(&ov, "lowerdir", lower.as_str()).map_err(err("fsconfig(lowerdir)"))?;
    fsconfig_create(&ov).map_err(err("create the overlay"))?;
    let mnt = fsmount(
        &ov,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .map_err(err("fsmount(overlay)"))?;
    let fd = rustix::fs::openat(&mnt, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(err("open the binary in the overlay"))?;
    // The open file keeps the detached mount alive; the mount fd is not needed.
    Ok(fd)
}

/// A copy of `exe` in a memfd, sealed against every change.
fn memfd_copy(exe: &Path) -> std::result::Result<OwnedFd, String> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let mut src = File::open(exe).map_err(|e| format!("open {}: {e}", exe.display()))?;
    let fd = rustix::fs::memfd_create(
        "vessel-sealed",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| format!("memfd_create: {e}"))?;
    let mut dst = File::from(fd);
    std::io::copy(&mut src, &mut dst).map_err(|e| format!("copy into the memfd: {e}"))?;
    rustix::fs::fcntl_add_seals(
        &dst,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )
    .map_err(|e| format!("seal the memfd: {e}"))?;
    Ok(dst.into())
}

/// Replaces this process with `args` run by the sealed view of the host binary. `args`
/// are the arguments after `argv[0]`, which becomes the host binary's path (see
/// [`host_exe`]); the environment and every descriptor without close-on-exec are kept.
/// Returns only on failure.
pub fn exec_sealed(args: &[OsString]) -> Result<Infallible> {
    let exe = host_exe()?;
    let fd = seal(&exe)?;
    let cstr = |s: &std::ffi::OsStr| {
        CString::new(s.as_bytes())
            .map_err(|_| Error::InvalidSpec(format!("argument {s:?} contains a NUL byte")))
    };
    let mut argv = vec![cstr(exe.as_os_str())?];
    for a in args {
        argv.push(cstr(a)?);
    }
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| env_entry(&k, &v))
        .collect();
    let e = nix::unistd::execveat(
        fd.as_fd(),
        c"",
        &argv,
        &env,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .unwrap_err();
    Err(Error::syscall(
        format!("execveat(sealed {})", exe.display()),
        e,
    ))
}

/// Makes sure this process runs sealed: if it does not, runs itself again from the
/// sealed binary with the same arguments. Returns once running sealed.
pub fn ensure_sealed() -> Result<()> {
    if running_sealed() {
        return Ok(());
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    exec_sealed(&args).map(|never| match never {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_binary_is_not_sealed() {
        let f = File::open("/bin/sh").unwrap();
        assert!(!is_sealed(&f));
    }

    #[test]
    fn a_sealed_memfd_refuses_writes() {
        let fd = memfd_copy(Path::new("/bin/sh")).unwrap();
        let f = File::from(fd);
        assert!(is_sealed(&f));
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        // The open may succeed; no write does.
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let e = std::io::Write::write(&mut w, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    }

    /// Root only (overlayfs mounts): the view is read-only through every path.
    #[test]
    fn the_overlay_view_refuses_writes() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test mounts an overlay: run it as root");
        }
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::copy("/bin/true", &bin).unwrap();
        let fd = overlay_view(&bin).unwrap();
        let f = File::from(fd);
        assert!(is_sealed(&f));
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        let e = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        // The same bytes as the file it shows.
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&bin).unwrap());
    }
}
