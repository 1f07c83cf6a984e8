//! Hardening of the threads that touch guest-controlled data: the vCPU threads (MMIO and
//! port I/O exits run device code there) and the I/O thread (virtio queues). Each one,
//! once the VM is built and before it runs guest work, drops every capability and installs
//! a seccomp filter that allows only the system calls it is known to make (Firecracker's
//! per-thread filters, compiled with `seccompiler`). Anything else kills the process: a
//! device model bug that a guest turns into, say, `execve` ends the VM instead.
//!
//! These filters are per thread (no `TSYNC`), so [`crate::Vm::run`] may run in a process
//! that does other things. A jailed VMM process ([`crate::jail`]) first installs a
//! process-wide filter on every thread ([`crate::Vm::confine_process`], `TSYNC`), which
//! the vCPU and I/O threads inherit before they add theirs: then no thread of the VMM
//! runs unfiltered.
//!
//! `VESSEL_VMM_SECCOMP=log` makes a non-listed call be allowed and logged by the kernel
//! (`audit: type=1326 ... syscall=N` in `dmesg`) instead: the way to find what a change
//! to a device needs. `VESSEL_VMM_SECCOMP=off` installs no filter (debugging only).

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{Error, Result};

/// `KVM_RUN`: `_IO(KVMIO, 0x80)`, the ioctl a running vCPU makes.
const KVM_RUN: u64 = 0xae80;
/// `TUNSETOFFLOAD`: `_IOW('T', 208, unsigned int)`, which a vCPU makes when the guest's
/// network driver starts or resets the device (the offloads it accepted go to the tap).
const TUNSETOFFLOAD: u64 = 0x4004_54d0;

/// Which of the VMM's threads a filter is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThreadKind {
    /// A vCPU: `KVM_RUN` and the port I/O/MMIO device emulation it triggers.
    Vcpu,
    /// The I/O thread: epoll over ioeventfds, disk and console backends.
    Io,
    /// The whole process of a jailed VMM (installed on every thread with `TSYNC` and
    /// inherited by those started later): what the vCPUs and the I/O thread may do, plus
    /// starting threads that confine themselves further, waiting and exiting.
    Process,
}

/// What happens to a system call that is not on the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Kill the whole process (the default).
    Enforce,
    /// Allow it and have the kernel log it (`VESSEL_VMM_SECCOMP=log`).
    Log,
    /// No filter at all (`VESSEL_VMM_SECCOMP=off`).
    Off,
}

impl Mode {
    /// From `VESSEL_VMM_SECCOMP`; unknown values enforce.
    pub(crate) fn from_env() -> Mode {
        match std::env::var("VESSEL_VMM_SECCOMP").as_deref() {
            Ok("log") => Mode::Log,
            Ok("off") => Mode::Off,
            _ => Mode::Enforce,
        }
    }
}

/// Calls every VMM thread makes: memory allocation, locks, eventfd/file reads and writes
/// (serial output, tracing to stderr), the vCPU kick signal, thread exit.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_getrandom,
    libc::SYS_exit,
    // A panic that aborts still reports itself as SIGABRT, not as a seccomp kill.
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_exit_group,
    // Allowed here only to be refused by the second filter ([`deny_open`]) with ENOENT:
    // glibc opens /proc/sys/vm/overcommit_memory the first time it shrinks a thread's
    // malloc heap (seen at VM teardown), and copes with the file being absent.
    libc::SYS_openat,
];

/// Extra calls of the I/O thread: epoll, disk I/O, the console's socket.
const IO: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fcntl,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
];

/// Extra calls of a jailed VMM process as a whole: starting threads (`clone` only with
/// `CLONE_THREAD`: no new process), which then name themselves, drop their capabilities
/// and install their own filter; sleeping while the vCPUs stop. Nothing here reaches a
/// file, a process or the network.
const PROCESS: &[i64] = &[
    // The I/O thread's epoll and stop eventfd, made as it starts.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_eventfd2,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    // A new thread reads its own attributes (glibc's pthread_getattr_np asks the
    // affinity) to place its stack guard; handlers of the kick signal.
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigaction,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    // Allowed here only to be refused by [`deny_clone3`] with ENOSYS, on which glibc
    // falls back to clone (whose flags a filter can see).
    libc::SYS_clone3,
];

/// The allowlist of `kind`, as seccompiler rules (an empty rule list allows the call
/// with any arguments). `console_log` is the capped serial console log's descriptor,
/// which a vCPU (the UART's writer) may truncate to 0 when it reaches its cap: only that
/// descriptor, only to length 0.
pub(crate) fn rules(
    kind: ThreadKind,
    console_log: Option<RawFd>,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON.iter().map(|&nr| (nr, Vec::new())).collect();
    match kind {
        ThreadKind::Vcpu => {
            let request = |nr| {
                SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, nr)
                    .and_then(|c| SeccompRule::new(vec![c]))
                    .map_err(filter_error)
            };
            map.insert(
                libc::SYS_ioctl,
                vec![request(KVM_RUN)?, request(TUNSETOFFLOAD)?],
            );
            if let Some(fd) = console_log.and_then(|fd| u64::try_from(fd).ok()) {
                let truncate_log = [
                    SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, fd),
                    SeccompCondition::new(1, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 0),
                ]
                .into_iter()
                .collect::<std::result::Result<Vec<_>, _>>()
                .and_then(SeccompRule::new)
                .map_err(filter_error)?;
                map.insert(libc::SYS_ftruncate, vec![truncate_log]);
            }
        }
        ThreadKind::Io => map.extend(IO.iter().map(|&nr| (nr, Vec::new()))),
        ThreadKind::Process => {
            // Every thread inherits this filter, so it holds what each of them needs.
            map = rules(ThreadKind::Vcpu, console_log)?;
            map.extend(IO.iter().chain(PROCESS).map(|&nr| (nr, Vec::new())));
            let arg = |index, op, value| {
                SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
                    .and_then(|c| SeccompRule::new(vec![c]))
                    .map_err(filter_error)
            };
            let thread = libc::CLONE_THREAD as u64;
            map.insert(
                libc::SYS_clone,
                vec![arg(0, SeccompCmpOp::MaskedEq(thread), thread)?],
            );
            map.insert(
                libc::SYS_prctl,
                [libc::PR_SET_NAME, libc::PR_SET_NO_NEW_PRIVS]
                    .into_iter()
                    .map(|op| arg(0, SeccompCmpOp::Eq, op as u64))
                    .collect::<Result<Vec<_>>>()?,
            );
            map.insert(
                libc::SYS_seccomp,
                vec![arg(
                    0,
                    SeccompCmpOp::Eq,
                    u64::from(libc::SECCOMP_SET_MODE_FILTER),
                )?],
            );
        }
    }
    Ok(map)
}

fn filter_error(e: seccompiler::BackendError) -> Error {
    Error::Seccomp(e.to_string())
}

/// The filters a thread installs, in order.
pub(crate) type Filters = Vec<BpfProgram>;

/// Compiles the filters of `kind`: [`deny_open`], then its allowlist (installing a
/// filter needs `prctl` and `seccomp`, which the allowlist does not allow); `None` in
/// [`Mode::Off`]. `console_log` as for [`rules`].
pub(crate) fn compile(
    kind: ThreadKind,
    mode: Mode,
    console_log: Option<RawFd>,
) -> Result<Option<Filters>> {
    let mismatch = match mode {
        Mode::Off => return Ok(None),
        Mode::Enforce => SeccompAction::KillProcess,
        Mode::Log => SeccompAction::Log,
    };
    let mut filters = vec![deny_open()?];
    if kind == ThreadKind::Process {
        filters.push(deny_clone3()?);
    }
    filters.push(compile_with(kind, mismatch, console_log)?);
    Ok(Some(filters))
}

/// A filter under which `clone3` fails with ENOSYS (its flags are behind a pointer, out
/// of a filter's sight); the allowlist then judges glibc's fallback to `clone`.
fn deny_clone3() -> Result<BpfProgram> {
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .map_err(filter_error)?;
    filter.try_into().map_err(filter_error)
}

/// A second filter: `openat` fails with ENOENT, everything else is left to the
/// allowlist (stacked filters apply the strictest answer: ERRNO beats the allowlist's
/// ALLOW, and its KILL beats this filter's ALLOW).
fn deny_open() -> Result<BpfProgram> {
    let rules = BTreeMap::from([(libc::SYS_openat, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOENT as u32),
        TargetArch::x86_64,
    )
    .map_err(filter_error)?;
    filter.try_into().map_err(filter_error)
}

fn compile_with(
    kind: ThreadKind,
    mismatch: SeccompAction,
    console_log: Option<RawFd>,
) -> Result<BpfProgram> {
    let filter = SeccompFilter::new(
        rules(kind, console_log)?,
        mismatch,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(filter_error)?;
    filter.try_into().map_err(filter_error)
}

/// Confines the calling thread: drops all its capabilities, then installs `filters`
/// (which also sets `no_new_privs` for it). Other threads are unaffected.
pub(crate) fn confine_current_thread(filters: Option<&Filters>) -> Result<()> {
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Inheritable,
    ] {
        caps::clear(None, set)
            .map_err(|e| Error::Seccomp(format!("dropping capabilities ({set:?}): {e}")))?;
    }
    for filter in filters.into_iter().flatten() {
        seccompiler::apply_filter(filter)
            .map_err(|e| Error::Seccomp(format!("installing the filter: {e}")))?;
    }
    Ok(())
}

/// Installs `filters` on every thread of the process at once (`TSYNC`); threads started
/// later inherit them.
pub(crate) fn confine_process(filters: Option<&Filters>) -> Result<()> {
    for filter in filters.into_iter().flatten() {
        seccompiler::apply_filter_all_threads(filter)
            .map_err(|e| Error::Seccomp(format!("installing the process filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filters_compile_in_every_mode() {
        for kind in [ThreadKind::Vcpu, ThreadKind::Io, ThreadKind::Process] {
            for mode in [Mode::Enforce, Mode::Log] {
                let progs = compile(kind, mode, Some(7)).unwrap().unwrap();
                assert_eq!(progs.len(), 2 + usize::from(kind == ThreadKind::Process));
                for prog in progs {
                    assert!(
                        !prog.is_empty() && prog.len() < 4096,
                        "{kind:?}: {}",
                        prog.len()
                    );
                }
            }
            assert!(compile(kind, Mode::Off, None).unwrap().is_none());
        }
    }

    #[test]
    fn the_allowed_tap_ioctl_is_the_one_the_network_device_makes() {
        assert_eq!(
            TUNSETOFFLOAD,
            crate::devices::virtio::net::device::TUNSETOFFLOAD() as u64
        );
    }

    #[test]
    fn vcpus_may_only_run_and_io_has_no_ioctl() {
        let vcpu = rules(ThreadKind::Vcpu, None).unwrap();
        assert!(!vcpu.contains_key(&libc::SYS_ftruncate));
        let with_log = rules(ThreadKind::Vcpu, Some(7)).unwrap();
        assert_eq!(
            with_log[&libc::SYS_ftruncate].len(),
            1,
            "ftruncate only with a condition"
        );
        assert_eq!(
            vcpu[&libc::SYS_ioctl].len(),
            2,
            "ioctl only with a condition: KVM_RUN and TUNSETOFFLOAD"
        );
        assert!(!vcpu.contains_key(&libc::SYS_pwrite64));
        let io = rules(ThreadKind::Io, Some(7)).unwrap();
        assert!(!io.contains_key(&libc::SYS_ftruncate));
        assert!(!io.contains_key(&libc::SYS_ioctl));
        for nr in [
            libc::SYS_execve,
            libc::SYS_open,
            libc::SYS_socket,
            libc::SYS_clone,
            libc::SYS_ptrace,
        ] {
            assert!(!vcpu.contains_key(&nr) && !io.contains_key(&nr), "{nr}");
        }
    }

    /// The filter really binds the thread it is installed on, and only that thread
    /// (denials return EPERM here so that the test process survives).
    #[test]
    fn installed_filter_denies_unlisted_calls_on_its_thread_only() {
        let progs = [
            deny_open().unwrap(),
            compile_with(
                ThreadKind::Io,
                SeccompAction::Errno(libc::EPERM as u32),
                None,
            )
            .unwrap(),
        ];
        let t = std::thread::spawn(move || {
            seccompiler::apply_filter(&progs[0]).unwrap();
            seccompiler::apply_filter(&progs[1]).unwrap();
            // SAFETY: plain syscalls with valid arguments.
            let sock = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            let err = std::io::Error::last_os_error().raw_os_error();
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            let open =
                std::fs::read_to_string("/proc/thread-self/status").map_err(|e| e.raw_os_error());
            (sock, err, pid, open)
        });
        let (sock, err, pid, open) = t.join().unwrap();
        assert_eq!((sock, err), (-1, Some(libc::EPERM)), "socket() is denied");
        assert_eq!(pid, std::process::id() as i32, "getpid() is allowed");
        assert_eq!(open, Err(Some(libc::ENOENT)), "openat() fails with ENOENT");
        // This thread has no filter.
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(status.contains("Seccomp:\t0"), "{status}");
    }

    /// A vCPU may truncate the console log, to length 0 only, and no other file.
    #[test]
    fn a_vcpu_may_only_empty_the_console_log() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("console.log")).unwrap();
        let other = std::fs::File::create(dir.path().join("other")).unwrap();
        let (log_fd, other_fd) = (log.as_raw_fd(), other.as_raw_fd());
        let prog = compile_with(
            ThreadKind::Vcpu,
            SeccompAction::Errno(libc::EPERM as u32),
            Some(log_fd),
        )
        .unwrap();
        let t = std::thread::spawn(move || {
            seccompiler::apply_filter(&prog).unwrap();
            let truncate = |fd, len| {
                // SAFETY: ftruncate on descriptors the test holds open.
                let r = unsafe { libc::ftruncate(fd, len) };
                (r, std::io::Error::last_os_error().raw_os_error())
            };
            (
                truncate(log_fd, 0).0,
                truncate(log_fd, 4096),
                truncate(other_fd, 0),
            )
        });
        let (empty, grow, elsewhere) = t.join().unwrap();
        assert_eq!(empty, 0, "the console log may be emptied");
        assert_eq!(grow, (-1, Some(libc::EPERM)), "but not resized otherwise");
        assert_eq!(elsewhere, (-1, Some(libc::EPERM)), "nor may another file");
        drop((log, other));
    }
}
