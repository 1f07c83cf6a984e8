//! Steps run in forked children (container init and exec'd processes). Nothing here logs:
//! see the note in `rootfs`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{Gid, Uid};

use crate::config::{CapSets, ProcessConfig};
use crate::error::{Error, Result};
use crate::seccomp;

/// Leave the child like a fresh process: default signal dispositions, nothing blocked
/// (ignored signals would otherwise stay ignored across execve).
pub(crate) fn reset_signals() {
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL cannot violate any handler invariant.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
    let _ = SigSet::all().thread_unblock();
}

/// Close every descriptor >= 3 except `keep`.
pub(crate) fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|f| *f >= 3).collect();
    keep.sort_unstable();
    let mut from: libc::c_uint = 3;
    for k in keep {
        let k = k as libc::c_uint;
        if k > from {
            close_range(from, k - 1);
        }
        from = k + 1;
    }
    close_range(from, libc::c_uint::MAX);
}

fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: closing descriptors this (single-threaded, forked) process owns; nothing
    // else in it refers to them any more.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc != 0 {
        // Old kernel: close one by one up to a sane bound.
        for fd in first..last.min(65_536) {
            // SAFETY: as above.
            unsafe { libc::close(fd as RawFd) };
        }
    }
}

/// Install the three descriptors as stdin/stdout/stderr.
pub(crate) fn install_stdio(fds: [RawFd; 3]) -> Result<()> {
    // Move them out of the way first so that e.g. stdout == 0 is not clobbered.
    let mut high = [0; 3];
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we hold returns a new descriptor.
        let n = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10) };
        if n < 0 {
            return Err(Error::syscall(format!("dup stdio fd {fd}"), Errno::last()));
        }
        high[i] = n;
    }
    for (i, fd) in high.iter().enumerate() {
        // SAFETY: dup2 onto 0/1/2, which we intend to replace.
        if unsafe { libc::dup2(*fd, i as RawFd) } < 0 {
            return Err(Error::syscall(format!("dup2 onto fd {i}"), Errno::last()));
        }
        // SAFETY: `fd` is our temporary duplicate.
        unsafe { libc::close(*fd) };
    }
    Ok(())
}

/// Allocate a pty from the container's devpts (`/dev/ptmx` after pivot_root or setns),
/// make its slave our controlling terminal and stdio, and return the master.
pub(crate) fn open_pty(size: Option<(u16, u16)>) -> Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("open", "/dev/ptmx", e))?;
    nix::pty::unlockpt(&master).map_err(|e| Error::sys("unlockpt", "/dev/ptmx", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| Error::sys("ptsname", "/dev/ptmx", e))?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which is valid.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let slave = nix::fcntl::open(
        Path::new(&name),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open pty slave", &name, e))?;
    // SAFETY: TIOCSCTTY on a terminal fd we own; we are a session leader.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(Error::sys("TIOCSCTTY", &name, Errno::last()));
    }
    let s = slave.as_raw_fd();
    install_stdio([s, s, s])?;
    let master: OwnedFd = master.into();
    Ok(master)
}

/// rlimits, oom_score_adj and umask. Returns warnings for the runtime to log.
///
/// Raising a hard limit needs CAP_SYS_RESOURCE, which some hosts (sandboxes, nested
/// containers) withhold even from root: then the limit is capped at the current hard
/// limit and a warning says so, rather than refusing to run every Docker-style spec.
pub(crate) fn set_process_limits(p: &ProcessConfig) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (res, soft, hard) in &p.rlimits {
        match nix::sys::resource::setrlimit(*res, *soft, *hard) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                let (_, cur_hard) = nix::sys::resource::getrlimit(*res)
                    .map_err(|e| Error::syscall(format!("getrlimit({res:?})"), e))?;
                let h = (*hard).min(cur_hard);
                let s = (*soft).min(h);
                nix::sys::resource::setrlimit(*res, s, h)
                    .map_err(|e| Error::syscall(format!("setrlimit({res:?}, {s}, {h})"), e))?;
                warnings.push(format!(
                    "{res:?} {soft}/{hard} needs CAP_SYS_RESOURCE, which this host withholds; capped at {s}/{h}"
                ));
            }
            Err(e) => {
                return Err(Error::syscall(
                    format!("setrlimit({res:?}, {soft}, {hard})"),
                    e,
                ))
            }
        }
    }
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| Error::io("write", "/proc/self/oom_score_adj", e))?;
    }
    if let Some(mask) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(warnings)
}

/// Drop from the bounding set every capability not in `bounding` (needs CAP_SETPCAP, so
/// it happens before changing user).
fn drop_bounding(bounding: u64) -> Result<()> {
    for cap in 0..64u64 {
        if bounding & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let e = Errno::last();
            if e == Errno::EINVAL {
                break; // past the kernel's last capability
            }
            return Err(Error::syscall(format!("PR_CAPBSET_DROP({cap})"), e));
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and a two-element data array of the v3 layout, both valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(Error::syscall(
            format!("capset(effective={effective:#x}, permitted={permitted:#x}, inheritable={inheritable:#x})"),
            Errno::last(),
        ));
    }
    Ok(())
}

fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong, what: &str) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc != 0 {
        return Err(Error::syscall(what.to_string(), Errno::last()));
    }
    Ok(())
}

/// Switch to the process's user and groups, and set its capabilities: bounding set first
/// (needs privilege), keep permitted caps across setuid, then the exact sets.
pub(crate) fn set_user_and_caps(p: &ProcessConfig, setgroups_allowed: bool) -> Result<()> {
    if let Some(c) = &p.caps {
        drop_bounding(c.bounding)?;
    }
    prctl(libc::PR_SET_KEEPCAPS, 1, 0, "PR_SET_KEEPCAPS")?;
    if setgroups_allowed {
        let gids: Vec<Gid> = p
            .additional_gids
            .iter()
            .map(|g| Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&gids)
            .map_err(|e| Error::syscall(format!("setgroups({:?})", p.additional_gids), e))?;
    }
    let gid = Gid::from_raw(p.gid);
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| Error::syscall(format!("setresgid({})", p.gid), e))?;
    let uid = Uid::from_raw(p.uid);
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| Error::syscall(format!("setresuid({})", p.uid), e))?;
    prctl(libc::PR_SET_KEEPCAPS, 0, 0, "PR_SET_KEEPCAPS")?;
    if let Some(CapSets {
        effective,
        permitted,
        inheritable,
        ambient,
        ..
    }) = p.caps.clone()
    {
        capset(effective, permitted, inheritable)?;
        prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            "PR_CAP_AMBIENT_CLEAR_ALL",
        )?;
        for cap in 0..64u64 {
            if ambient & (1 << cap) != 0 {
                prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    "PR_CAP_AMBIENT_RAISE",
                )?;
            }
        }
    }
    Ok(())
}

/// Join a new anonymous session keyring, so that the process does not possess the keys
/// of the session it was started from (the runtime's caller's, or, when that has none,
/// the user session keyring every process of the uid falls back to). runc does the same.
/// A kernel without key support has nothing to share.
pub(crate) fn join_session_keyring() -> Result<()> {
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) reads no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 && Errno::last() != Errno::ENOSYS {
        return Err(Error::syscall(
            "join a new session keyring (keyctl)",
            Errno::last(),
        ));
    }
    Ok(())
}

/// Set no_new_privs when asked.
pub(crate) fn set_no_new_privs(p: &ProcessConfig) -> Result<()> {
    if p.no_new_privs {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, "PR_SET_NO_NEW_PRIVS")?;
    }
    Ok(())
}

/// Find the program like execvp would, in the container, as the container user, so a
/// missing or non-executable program fails setup with a precise error instead of an
/// anonymous exit status.
pub(crate) fn resolve_executable(p: &ProcessConfig) -> Result<CString> {
    let arg0 = p.arg0.as_str();
    if arg0.contains('/') {
        return check_executable(Path::new(arg0)).map(|()| cpath(Path::new(arg0)));
    }
    let mut denied: Option<Error> = None;
    for dir in p.path_env.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = PathBuf::from(dir).join(arg0);
        match check_executable(&cand) {
            Ok(()) => return Ok(cpath(&cand)),
            Err(e @ Error::NotExecutable { .. }) => {
                denied.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or_else(|| Error::ExecutableNotFound(arg0.to_string())))
}

fn cpath(p: &Path) -> CString {
    // Paths built from NUL-free config strings cannot contain NUL.
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn check_executable(path: &Path) -> Result<()> {
    let shown = path.to_string_lossy().into_owned();
    match std::fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            return Err(Error::NotExecutable {
                path: shown,
                reason: "permission denied".into(),
            })
        }
        Err(_) => return Err(Error::ExecutableNotFound(shown)),
        Ok(m) if m.is_dir() => {
            return Err(Error::NotExecutable {
                path: shown,
                reason: "is a directory".into(),
            })
        }
        Ok(_) => {}
    }
    let c = cpath(path);
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    if rc != 0 {
        return Err(Error::NotExecutable {
            path: shown,
            reason: Errno::last().desc().to_string(),
        });
    }
    Ok(())
}

/// Load seccomp if it was deferred to the last moment, then execve. Only returns on
/// failure.
pub(crate) fn exec(p: &ProcessConfig, path: &CStr) -> Error {
    if p.no_new_privs {
        if let Some(s) = &p.seccomp {
            if let Err(e) = seccomp::load(s) {
                return e;
            }
        }
    }
    // Like runc: a process without HOME gets its user's home from the container's
    // /etc/passwd, else "/".
    let with_home;
    let env = if p.env.iter().any(|e| e.to_bytes().starts_with(b"HOME=")) {
        &p.env
    } else {
        let home = crate::user::read_db("/etc/passwd")
            .ok()
            .and_then(|t| crate::user::home_of(&t, p.uid))
            .unwrap_or_else(|| "/".into());
        with_home = p
            .env
            .iter()
            .cloned()
            .chain(CString::new(format!("HOME={home}")).ok())
            .collect::<Vec<_>>();
        &with_home
    };
    let r = match p.entry {
        Some(entry) => exec_through(entry, path, &p.args, env),
        None => nix::unistd::execve(path, &p.args, env).map(|never| match never {}),
    };
    match r {
        Ok(never) => match never {},
        Err(Errno::ENOENT) => Error::ExecutableNotFound(path.to_string_lossy().into_owned()),
        Err(e) => Error::NotExecutable {
            path: path.to_string_lossy().into_owned(),
            reason: e.desc().to_string(),
        },
    }
}

/// `execve` of the sealed entry program `entry` (vessel-entry), which execs `path` with
/// the process's arguments: the container's process is never exec'd from our own binary.
/// `execveat` on the descriptor; where a seccomp profile refuses `execveat` (but must
/// allow `execve`, which the container's process needs), the descriptor's `/proc` path.
fn exec_through(
    entry: RawFd,
    path: &CStr,
    args: &[CString],
    env: &[CString],
) -> std::result::Result<std::convert::Infallible, Errno> {
    let mut argv: Vec<&CStr> = Vec::with_capacity(args.len() + 1);
    argv.push(path);
    argv.extend(args.iter().map(|a| a.as_c_str()));
    // SAFETY: `entry` is the runtime's open descriptor of the sealed program, kept
    // open in this process for exactly this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(entry) };
    match nix::unistd::execveat(fd, c"", &argv, env, nix::fcntl::AtFlags::AT_EMPTY_PATH) {
        Err(Errno::EPERM | Errno::ENOSYS | Errno::EACCES) => {
            let proc_path = CString::new(format!("/proc/self/fd/{entry}")).unwrap_or_default();
            nix::unistd::execve(&proc_path, &argv, env)
        }
        r => r,
    }
}

/// Report a failure on stderr (nobody listens on the sync socket any more) and exit with
/// the shell's code for it.
pub(crate) fn die_after_start(e: &Error) -> ! {
    let msg = format!("vessel: {e}\n");
    // SAFETY: write(2) to fd 2 from a buffer we own.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    exit(e.exit_code().unwrap_or(1))
}

/// Leave the forked child immediately (no atexit handlers, no stdio flush: those belong
/// to the parent).
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Bring the loopback interface of the (new) network namespace up.
pub(crate) fn loopback_up() -> Result<()> {
    // SAFETY: plain socket(2) call; the fd is wrapped immediately.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::syscall(
            "socket(AF_INET) for loopback",
            Errno::last(),
        ));
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the ifreq we pass, which is valid and named "lo".
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Error::syscall("SIOCGIFFLAGS(lo)", Errno::last()));
    }
    // SAFETY: reading/writing the flags member of the union SIOCGIFFLAGS just filled.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Error::syscall("SIOCSIFFLAGS(lo up)", Errno::last()));
    }
    Ok(())
}

/// [`clone_parent`] with the child created in the cgroup2 directory `v2_dir`
/// (`clone3` with `CLONE_INTO_CGROUP`, see `cgroups::SelfJoin`). On error nothing was
/// created; `ENOSYS`, `E2BIG` and `EINVAL` are what kernels before 5.7 answer.
pub(crate) fn clone_parent_into(v2_dir: RawFd) -> std::result::Result<libc::pid_t, Errno> {
    /// From the kernel's UAPI; libc's constant has too narrow a type.
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    // SAFETY: clone_args is plain data; all-zero is its "nothing asked" value.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = libc::CLONE_PARENT as u64 | CLONE_INTO_CGROUP;
    // With CLONE_PARENT the child's exit signal is its parent's (clone3 refuses any other).
    args.exit_signal = 0;
    args.cgroup = v2_dir as u64;
    // SAFETY: as in clone_parent: no CLONE_VM and no stack, so the child is a fork of a
    // single-threaded process and resumes here on its own copy of the stack.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(rc as libc::pid_t)
}

/// fork(2)-like clone with CLONE_PARENT: the new process becomes a child of our parent
/// (the runtime's caller), so the caller can waitpid it although we created it after
/// entering its namespaces. Returns 0 in the child.
pub(crate) fn clone_parent() -> Result<libc::pid_t> {
    // SAFETY: raw clone without CLONE_VM and with a NULL stack behaves like fork: the
    // child gets a copy-on-write copy of our memory and resumes here on its own copy of
    // the stack. We are a single-threaded forked process, so no lock can be held by a
    // thread that does not exist in the child.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc < 0 {
        return Err(Error::syscall("clone(CLONE_PARENT)", Errno::last()));
    }
    Ok(rc as libc::pid_t)
}
