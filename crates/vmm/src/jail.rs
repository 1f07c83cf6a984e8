//! Confinement of a whole VMM process, after Firecracker's jailer: whoever starts the
//! process gives it its own mount, pid, network, IPC and UTS namespaces (e.g. `clone`
//! with `CLONE_NEW*`) and every file it needs as an open descriptor ([`crate::OpenFiles`]);
//! [`Jail::enter`] then, in the process itself and before any guest code exists:
//!
//! 1. makes its mounts private and its root an empty, read-only tmpfs (`pivot_root`, the
//!    old root detached), so no path reaches a host file;
//! 2. lowers its resource limits (descriptors, threads, file size, no core dumps);
//! 3. empties its capability bounding and ambient sets, then drops to an unprivileged
//!    uid/gid without supplementary groups (which clears the other capability sets);
//! 4. sets `no_new_privs`, makes itself non-dumpable (no ptrace, no core, `/proc` files
//!    root-owned) and asks for SIGKILL when its parent dies.
//!
//! What is left to escalate with is the seccomp filter's allowlist: see
//! [`crate::Vm::confine_process`], the next step.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// How a VMM process confines itself: see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jail {
    /// A directory (created if missing) on which the empty root is mounted, in this
    /// process's own mount namespace: the host never sees that mount.
    pub root: PathBuf,
    /// The uid to run as: one that owns nothing on the host and is used by no other
    /// process (not 0).
    pub uid: u32,
    /// The gid to run as (not 0).
    pub gid: u32,
    /// `RLIMIT_NOFILE`: the descriptors the VM needs (eventfds, vCPUs, disks) and a few
    /// more.
    pub max_files: u64,
    /// `RLIMIT_NPROC`: the threads the VM needs (vCPUs, I/O, the caller's own).
    pub max_threads: u64,
    /// `RLIMIT_FSIZE`, if any: no file the VMM writes may grow beyond this (a write past
    /// it fails with `EFBIG`).
    pub max_file_size: Option<u64>,
}

fn step(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Jail { step: what, source }
}

fn check(what: &'static str, ret: libc::c_int) -> Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(step(what)(io::Error::last_os_error()))
    }
}

fn cstr(what: &'static str, s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| step(what)(io::Error::other("path contains a NUL byte")))
}

impl Jail {
    /// Confines the calling process as the module documentation says. It first moves to
    /// a mount namespace of its own (`unshare(CLONE_NEWNS)`, also when the process was
    /// started in one), so the mounts it changes are never the host's. Call it while the
    /// process has one thread: a thread started before would keep the host's root and its
    /// capabilities.
    pub fn enter(&self) -> Result<()> {
        if self.uid == 0 || self.gid == 0 {
            return Err(step("choose the VMM's ids")(io::Error::other(format!(
                "uid {} / gid {}: the VMM must not run as root",
                self.uid, self.gid
            ))));
        }
        self.empty_root()?;
        self.limits()?;
        self.drop_privileges()?;
        // SAFETY: prctl with integer arguments only.
        unsafe {
            check(
                "set no_new_privs",
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            )?;
            check(
                "make the VMM non-dumpable",
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0),
            )?;
            // After the uid change, which clears it.
            check(
                "ask for SIGKILL at the parent's death",
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0),
            )?;
        }
        Ok(())
    }

    fn empty_root(&self) -> Result<()> {
        let root = cstr("mount the empty root", self.root.as_os_str().as_bytes())?;
        // SAFETY: unshare(2) with a flag only.
        check("enter a mount namespace of our own", unsafe {
            libc::unshare(libc::CLONE_NEWNS)
        })?;
        match std::fs::create_dir(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(step("create the empty root's mount point")(e)),
        }
        // SAFETY: mount(2), chdir(2), pivot_root(2) and umount2(2) on NUL-terminated
        // strings that outlive the calls; they change only this process's own mount
        // namespace (just made) once its mounts are private.
        unsafe {
            check(
                "make the mounts private",
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
            )?;
            check(
                "mount the empty root",
                libc::mount(
                    c"vessel-vmm".as_ptr(),
                    root.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    c"size=4k,nr_inodes=4,mode=0".as_ptr().cast(),
                ),
            )?;
            check("enter the empty root", libc::chdir(root.as_ptr()))?;
            // pivot_root(".", "."): the old root ends up on top of the new one, where it
            // can be detached (pivot_root(2), "NOTES").
            check(
                "pivot_root into the empty root",
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
            )?;
            check(
                "detach the host's root",
                libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
            )?;
            check("enter the empty root", libc::chdir(c"/".as_ptr()))?;
            check(
                "make the root read-only",
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT
                        | libc::MS_BIND
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    std::ptr::null(),
                ),
            )?;
        }
        Ok(())
    }

    fn limits(&self) -> Result<()> {
        let set = |what: &'static str, res, n: u64| {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit with a valid struct.
            check(what, unsafe { libc::setrlimit(res, &lim) })
        };
        set("limit descriptors", libc::RLIMIT_NOFILE, self.max_files)?;
        set("limit threads", libc::RLIMIT_NPROC, self.max_threads)?;
        set("forbid core dumps", libc::RLIMIT_CORE, 0)?;
        if let Some(n) = self.max_file_size {
            // A write past the limit then fails with EFBIG instead of killing the VMM.
            // SAFETY: setting a standard disposition.
            unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
            set("limit file sizes", libc::RLIMIT_FSIZE, n)?;
        }
        Ok(())
    }

    fn drop_privileges(&self) -> Result<()> {
        // SAFETY: prctl, setgroups, setresgid and setresuid with integer arguments (and a
        // null list of zero groups).
        unsafe {
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    let e = io::Error::last_os_error();
                    // Past the kernel's last capability.
                    if e.raw_os_error() == Some(libc::EINVAL) {
                        break;
                    }
                    return Err(step("empty the capability bounding set")(e));
                }
            }
            check(
                "empty the ambient capabilities",
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL,
                    0,
                    0,
                    0,
                ),
            )?;
            check(
                "drop supplementary groups",
                libc::setgroups(0, std::ptr::null()),
            )?;
            check("change gid", libc::setresgid(self.gid, self.gid, self.gid))?;
            // Leaving uid 0 clears the permitted and effective sets.
            check("change uid", libc::setresuid(self.uid, self.uid, self.uid))?;
        }
        for set in [
            caps::CapSet::Effective,
            caps::CapSet::Permitted,
            caps::CapSet::Inheritable,
        ] {
            caps::clear(None, set).map_err(|e| {
                step("clear the capability sets")(io::Error::other(format!("{set:?}: {e}")))
            })?;
        }
        Ok(())
    }
}
