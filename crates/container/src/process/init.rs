//! Code that runs in the forked children: the intermediate, the container init and exec'd
//! processes. Each step's error goes back to the runtime over the sync socket.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{Gid, Uid};

use super::channel::{Channel, Msg};
use super::setup::{self, exit};
use crate::cgroups::{Cgroup, SelfJoin};
use crate::config::{ContainerConfig, ProcessConfig};
use crate::error::{Error, Result};
use crate::{rootfs, seccomp};

fn fail(chan: &Channel, e: Error) -> ! {
    let _ = chan.send(&Msg::Error(e.into()));
    exit(1)
}

/// Waits until the runtime has moved us into the container's cgroup, then makes the
/// container's cgroup namespace (if it has one of its own), rooted there.
fn join_cgroup(cfg: &ContainerConfig, chan: &Channel) -> Result<()> {
    loop {
        match chan.recv()? {
            Some((Msg::Joined, _)) => break,
            // The intermediate's Go, or our own messages, are not for us.
            Some(_) => continue,
            None => {
                return Err(Error::InitFailed(
                    "the runtime went away during setup".into(),
                ))
            }
        }
    }
    if cfg.new_ns(CloneFlags::CLONE_NEWCGROUP) {
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| Error::syscall("unshare(CLONE_NEWCGROUP)", e))?;
    }
    Ok(())
}

fn wait_go(chan: &Channel) -> Result<()> {
    match chan.recv()? {
        Some((Msg::Go, _)) => Ok(()),
        _ => Err(Error::InitFailed(
            "the runtime went away during setup".into(),
        )),
    }
}

/// The intermediate process of `create`: enter/create namespaces, clone init.
pub(super) fn intermediate(
    cfg: &ContainerConfig,
    cgroup: &Cgroup,
    chan: Channel,
    stdio: Option<[RawFd; 3]>,
    fifo: &OwnedFd,
    join: Option<&SelfJoin>,
) -> ! {
    setup::reset_signals();
    if let Some(fds) = stdio {
        if let Err(e) = setup::install_stdio(fds) {
            fail(&chan, e)
        }
    }
    let mut keep = vec![chan.raw(), fifo.as_raw_fd()];
    keep.extend(join.map(SelfJoin::raw_fds).unwrap_or_default());
    keep.extend(cfg.process.entry);
    setup::close_fds_except(&keep);
    match intermediate_steps(cfg, &chan, join) {
        Ok(0) => init_main(cfg, cgroup, chan, fifo),
        Ok(pid) => {
            let _ = chan.send(&Msg::Pid(pid));
            exit(0)
        }
        Err(e) => fail(&chan, e),
    }
}

fn intermediate_steps(
    cfg: &ContainerConfig,
    chan: &Channel,
    join: Option<&SelfJoin>,
) -> Result<libc::pid_t> {
    // Into the container's cgroup first (we are single-threaded), so that the namespaces
    // made next are charged to it.
    if let Some(j) = join {
        j.join_v1()?;
    }
    // Joining by path: the user namespace first, it decides what we may do next.
    let mut joined = Vec::new();
    for ns in cfg.namespaces.iter().filter(|n| n.path.is_some()) {
        let path = ns.path.as_deref().unwrap_or(Path::new(""));
        let f = File::open(path).map_err(|e| Error::io("open namespace", path, e))?;
        joined.push((f, ns.flag, path.to_path_buf()));
    }
    joined.sort_by_key(|(_, flag, _)| *flag != CloneFlags::CLONE_NEWUSER);
    for (f, flag, path) in &joined {
        setns(f, *flag).map_err(|e| Error::sys("setns", path, e))?;
    }
    if cfg.new_ns(CloneFlags::CLONE_NEWUSER) {
        // Still host root: the overlay over the shared layers is mounted now.
        if let Some(ov) = cfg.overlay.as_ref().filter(|_| rootfs::premounted(cfg)) {
            rootfs::idmap::premount_overlay(cfg, ov)?;
        }
        unshare(CloneFlags::CLONE_NEWUSER)
            .map_err(|e| Error::syscall("unshare(CLONE_NEWUSER)", e))?;
        chan.send(&Msg::UserNsReady)?;
    }
    wait_go(chan)?;
    let mut flags = CloneFlags::empty();
    for ns in cfg.namespaces.iter().filter(|n| n.path.is_none()) {
        // A new cgroup namespace is rooted at the cgroup of whoever makes it: the init
        // makes it, once the runtime has moved it into the container's cgroup (Joined).
        if ns.flag != CloneFlags::CLONE_NEWUSER && ns.flag != CloneFlags::CLONE_NEWCGROUP {
            flags |= ns.flag;
        }
    }
    unshare(flags).map_err(|e| Error::syscall(format!("unshare({flags:?})"), e))?;
    let Some(SelfJoin {
        v2_dir: Some(dir),
        v2_procs,
        ..
    }) = join
    else {
        return setup::clone_parent();
    };
    match setup::clone_parent_into(dir.as_raw_fd()) {
        Ok(pid) => Ok(pid),
        Err(e @ (Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL)) => {
            // A kernel without CLONE_INTO_CGROUP: the slow way in, then a plain clone.
            chan.send(&Msg::Warning(format!(
                "clone3 with CLONE_INTO_CGROUP: {e}; joining the cgroup2 cgroup through cgroup.procs"
            )))?;
            if let Some(procs) = v2_procs {
                nix::unistd::write(procs, b"0")
                    .map_err(|e| Error::syscall("join the container's cgroup2 cgroup", e))?;
            }
            setup::clone_parent()
        }
        Err(e) => Err(Error::syscall(
            "clone3(CLONE_PARENT | CLONE_INTO_CGROUP)",
            e,
        )),
    }
}

/// The container's init: set everything up, report Ready, wait for start, exec.
fn init_main(cfg: &ContainerConfig, cgroup: &Cgroup, chan: Channel, fifo_fd: &OwnedFd) -> ! {
    let exe = match init_steps(cfg, cgroup, &chan, fifo_fd) {
        Ok(v) => v,
        Err(e) => fail(&chan, e),
    };
    if let Err(e) = chan.send(&Msg::Ready) {
        fail(&chan, e)
    }
    drop(chan);
    // Block until `start` writes to the exec fifo.
    let mut pfd = [PollFd::new(
        std::os::fd::AsFd::as_fd(fifo_fd),
        PollFlags::POLLIN,
    )];
    loop {
        match poll(&mut pfd, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => setup::die_after_start(&Error::syscall("poll exec fifo", e)),
        }
    }
    let mut b = [0u8; 1];
    match nix::unistd::read(fifo_fd, &mut b) {
        Ok(1) => {}
        // Opened and closed without a byte: not a start request.
        _ => exit(1),
    }
    let e = setup::exec(&cfg.process, &exe);
    setup::die_after_start(&e)
}

fn init_steps(
    cfg: &ContainerConfig,
    cgroup: &Cgroup,
    chan: &Channel,
    fifo_fd: &OwnedFd,
) -> Result<CString> {
    let p = &cfg.process;
    nix::unistd::setsid().map_err(|e| Error::syscall("setsid", e))?;
    if cfg.has_ns(CloneFlags::CLONE_NEWUSER) {
        // Become the namespace's root so what we create is owned by it.
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| Error::syscall("setresgid(0) in user namespace", e))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| Error::syscall("setresuid(0) in user namespace", e))?;
    }
    rootfs::prepare_root(cfg)?;
    // Everything up to the first cgroup mount runs while the runtime creates and joins
    // our cgroup; the rest waits for it.
    let mut joined = false;
    let mut join = || -> Result<()> {
        if !joined {
            join_cgroup(cfg, chan)?;
            joined = true;
        }
        Ok(())
    };
    rootfs::mount_all(cfg, cgroup, &mut join)?;
    join()?;
    rootfs::setup_dev(cfg)?;
    rootfs::pivot(&cfg.rootfs)?;
    if p.terminal {
        let master = setup::open_pty(p.console_size)?;
        chan.send_with(&Msg::PtyMaster, Some(master.as_raw_fd()))?;
    }
    for (k, v) in &cfg.sysctl {
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&path, v).map_err(|e| Error::io("write sysctl", &path, e))?;
    }
    rootfs::mask_paths(&cfg.masked_paths)?;
    rootfs::readonly_paths(&cfg.readonly_paths)?;
    if cfg.readonly_root {
        rootfs::readonly_root()?;
    }
    if let Some(h) = &cfg.hostname {
        nix::unistd::sethostname(h)
            .map_err(|e| Error::syscall(format!("sethostname({h:?})"), e))?;
    }
    if let Some(d) = &cfg.domainname {
        // SAFETY: pointer and length describe `d`'s bytes.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(Error::syscall(
                format!("setdomainname({d:?})"),
                nix::Error::last(),
            ));
        }
    }
    if cfg.new_ns(CloneFlags::CLONE_NEWNET) {
        setup::loopback_up()?;
    }
    let userns = cfg.new_ns(CloneFlags::CLONE_NEWUSER);
    // A working directory the image lacks is made, as root, inside the container's root
    // (we are past pivot_root: the path cannot leave it), as runc and Docker make it. A
    // read-only root leaves it missing: the chdir below says so.
    if !std::path::Path::new(&p.cwd).exists() {
        let _ = std::fs::create_dir_all(&p.cwd);
    }
    let exe = prepare_process(p, !userns || setgroups_allowed(), chan)?;
    let mut keep = vec![chan.raw(), fifo_fd.as_raw_fd()];
    keep.extend(p.entry);
    setup::close_fds_except(&keep);
    Ok(exe)
}

fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true)
}

/// The process-level steps shared by init and exec: a session keyring of its own, limits, seccomp (early when it must
/// be loaded while we still have CAP_SYS_ADMIN), user and capabilities, cwd, program
/// lookup, no_new_privs.
fn prepare_process(p: &ProcessConfig, setgroups_ok: bool, chan: &Channel) -> Result<CString> {
    setup::join_session_keyring()?;
    for w in setup::set_process_limits(p)? {
        chan.send(&Msg::Warning(w))?;
    }
    if !p.no_new_privs {
        if let Some(s) = &p.seccomp {
            seccomp::load(s)?;
        }
    }
    setup::set_user_and_caps(p, setgroups_ok)?;
    nix::unistd::chdir(&p.cwd).map_err(|e| Error::sys("chdir to process.cwd", &p.cwd, e))?;
    let exe = setup::resolve_executable(p)?;
    setup::set_no_new_privs(p)?;
    Ok(exe)
}

/// The intermediate of `exec`: join the container's namespaces, clone the process.
pub(super) fn exec_intermediate(
    namespaces: &[(File, CloneFlags)],
    p: &ProcessConfig,
    chan: Channel,
    stdio: Option<[RawFd; 3]>,
    userns: bool,
) -> ! {
    setup::reset_signals();
    if let Some(fds) = stdio {
        if let Err(e) = setup::install_stdio(fds) {
            fail(&chan, e)
        }
    }
    let mut keep: Vec<RawFd> = namespaces.iter().map(|(f, _)| f.as_raw_fd()).collect();
    keep.push(chan.raw());
    keep.extend(p.entry);
    setup::close_fds_except(&keep);
    let r = (|| -> Result<libc::pid_t> {
        wait_go(&chan)?;
        for (f, flag) in namespaces {
            setns(f, *flag).map_err(|e| Error::syscall(format!("setns({flag:?})"), e))?;
        }
        setup::clone_parent()
    })();
    match r {
        Ok(0) => exec_child(p, chan, userns),
        Ok(pid) => {
            let _ = chan.send(&Msg::Pid(pid));
            exit(0)
        }
        Err(e) => fail(&chan, e),
    }
}

fn exec_child(p: &ProcessConfig, chan: Channel, userns: bool) -> ! {
    let r = (|| -> Result<CString> {
        let mut keep = vec![chan.raw()];
        keep.extend(p.entry);
        setup::close_fds_except(&keep);
        nix::unistd::setsid().map_err(|e| Error::syscall("setsid", e))?;
        if p.terminal {
            let master = setup::open_pty(p.console_size)?;
            chan.send_with(&Msg::PtyMaster, Some(master.as_raw_fd()))?;
        }
        let resolved;
        let p = match &p.user_spec {
            // Inside the container's mount namespace: its own /etc, as the
            // container sees it now.
            Some(spec) => {
                let u = crate::user::resolve_in(
                    spec,
                    &crate::user::read_db("/etc/passwd")?,
                    &crate::user::read_db("/etc/group")?,
                )?;
                resolved = ProcessConfig {
                    uid: u.uid,
                    gid: u.gid,
                    additional_gids: u.additional_gids,
                    ..p.clone()
                };
                &resolved
            }
            None => p,
        };
        prepare_process(p, !userns || setgroups_allowed(), &chan)
    })();
    let exe = match r {
        Ok(exe) => exe,
        Err(e) => fail(&chan, e),
    };
    // On success the close-on-exec socket closes: that is the runtime's signal.
    let e = setup::exec(p, &exe);
    fail(&chan, e)
}
