//! Compile an OCI `linux.seccomp` profile into BPF with seccompiler, and load it.
//!
//! seccompiler builds filters with a single "match" action. An OCI profile has a default
//! action plus per-syscall actions, so it becomes a small stack of filters:
//! - the main filter returns ALLOW for every syscall the profile names with a
//!   non-default action (with the same argument conditions) and the default action for
//!   everything else;
//! - one filter per other action `A` (e.g. `ERRNO(ENOSYS)` for `clone3`) returns `A` for
//!   its syscalls and ALLOW otherwise.
//!
//! The kernel runs every filter and keeps the most restrictive verdict, so a syscall gets
//! its own action when it matches one and the default action when it matches nothing.

mod syscalls;

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{Error, Result};

/// The width the kernel reads argument `idx` of syscall `name` with. An `int` argument
/// compared on 64 bits lets a caller set the high bits to slip past a rule (`socket`
/// with domain `AF_VSOCK | 1 << 32` is not `!= AF_VSOCK` on 64 bits, and is AF_VSOCK
/// to the kernel): the 32-bit arguments of the syscalls profiles filter on are compared
/// on their low 32 bits, as libseccomp does for them.
fn arg_len(name: &str, idx: u8) -> SeccompCmpArgLen {
    let dword = match name {
        // int domain, int type, int protocol
        "socket" | "socketpair" => idx <= 2,
        // unsigned int persona
        "personality" => idx == 0,
        // int fd / int cmd / unsigned int flags ...
        "ioctl" | "fcntl" | "setns" | "unshare" | "prctl" | "kill" | "tgkill" | "tkill" => {
            matches!(
                (name, idx),
                ("ioctl", 0)
                    | ("fcntl", 0 | 1)
                    | ("setns", 0 | 1)
                    | ("unshare", 0)
                    | ("prctl", 0)
                    | ("kill", 0 | 1)
                    | ("tgkill", 0..=2)
                    | ("tkill", 0 | 1)
            )
        }
        _ => false,
    };
    if dword {
        SeccompCmpArgLen::Dword
    } else {
        SeccompCmpArgLen::Qword
    }
}

/// A compiled profile, ready to load in the container process.
#[derive(Debug, Clone, Default)]
pub struct CompiledSeccomp {
    /// The BPF programs, loaded in order.
    pub programs: Vec<BpfProgram>,
    /// `seccomp(2)` flags.
    pub flags: libc::c_ulong,
}

/// Syscall number on this architecture, if the kernel headers know the name.
pub fn syscall_number(name: &str) -> Option<i64> {
    syscalls::SYSCALLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, nr)| *nr)
}

fn target_arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| Error::Seccomp(format!("unsupported architecture: {e}")))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(
                "SCMP_ACT_NOTIFY is not supported (no seccomp agent)".into(),
            ))
        }
    })
}

/// Stable key to group rules by action (SeccompAction is not Ord).
fn action_key(a: &SeccompAction) -> u32 {
    u32::from(a.clone())
}

/// Compile `profile` into BPF. Syscall names unknown on this architecture are skipped
/// (as libseccomp does), so one profile serves several architectures.
pub fn compile(profile: &LinuxSeccomp) -> Result<CompiledSeccomp> {
    let arch = target_arch()?;
    let default = action(profile.default_action(), profile.default_errno_ret())?;

    // action key -> (action, syscall -> rules)
    type Rules = BTreeMap<i64, Vec<SeccompRule>>;
    let mut main: Rules = BTreeMap::new();
    let mut by_action: BTreeMap<u32, (SeccompAction, Rules)> = BTreeMap::new();

    for sc in profile.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret())?;
        if act == default {
            continue;
        }
        let conditions = |name: &str| -> Result<Vec<SeccompCondition>> {
            sc.args()
                .iter()
                .flatten()
                .map(|a| {
                    let idx = u8::try_from(a.index()).map_err(|_| {
                        Error::Seccomp(format!("argument index {} out of range", a.index()))
                    })?;
                    let (op, value) = match a.op() {
                        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
                        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
                        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
                        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
                        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
                        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
                        // libseccomp: (arg & value) == valueTwo
                        LinuxSeccompOperator::ScmpCmpMaskedEq => (
                            SeccompCmpOp::MaskedEq(a.value()),
                            a.value_two().unwrap_or(0),
                        ),
                    };
                    SeccompCondition::new(idx, arg_len(name, idx), op, value)
                        .map_err(|e| Error::Seccomp(format!("argument {idx}: {e}")))
                })
                .collect::<Result<Vec<_>>>()
        };
        let rule_for = |name: &str| -> Result<Option<SeccompRule>> {
            let conditions = conditions(name)?;
            if conditions.is_empty() {
                return Ok(None);
            }
            SeccompRule::new(conditions)
                .map(Some)
                .map_err(|e| Error::Seccomp(format!("rule for {name}: {e}")))
        };
        for name in sc.names() {
            let Some(nr) = syscall_number(name) else {
                tracing::trace!(syscall = %name, "unknown on this architecture, skipped");
                continue;
            };
            let rule = rule_for(name)?;
            add_rule(&mut main, nr, rule.clone());
            if act != SeccompAction::Allow {
                let entry = by_action
                    .entry(action_key(&act))
                    .or_insert_with(|| (act.clone(), BTreeMap::new()));
                add_rule(&mut entry.1, nr, rule);
            }
        }
    }

    let mut programs = Vec::new();
    if default != SeccompAction::Allow {
        programs.push(build(main, default.clone(), SeccompAction::Allow, arch)?);
    }
    for (_, (act, rules)) in by_action {
        programs.push(build(rules, SeccompAction::Allow, act, arch)?);
    }

    let mut flags: libc::c_ulong = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Single-threaded at load time: TSYNC is meaningless.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 0,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    Ok(CompiledSeccomp { programs, flags })
}

/// Unconditional rules (empty chain) match always; keep that when merging.
fn add_rule(map: &mut BTreeMap<i64, Vec<SeccompRule>>, nr: i64, rule: Option<SeccompRule>) {
    match (map.get_mut(&nr), rule) {
        // Already unconditional: stays so.
        (Some(v), _) if v.is_empty() => {}
        (Some(v), Some(r)) => v.push(r),
        (Some(v), None) => v.clear(),
        (None, r) => {
            map.insert(nr, r.into_iter().collect());
        }
    }
}

fn build(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram> {
    let filter = SeccompFilter::new(rules, mismatch, matched, arch)
        .map_err(|e| Error::Seccomp(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| Error::Seccomp(e.to_string()))
}

/// Load the compiled filters into the calling thread. Does not set no_new_privs: the
/// caller does that when the spec asks for it (otherwise CAP_SYS_ADMIN is required).
pub fn load(compiled: &CompiledSeccomp) -> Result<()> {
    for prog in &compiled.programs {
        let fprog = libc::sock_fprog {
            len: u16::try_from(prog.len()).map_err(|_| {
                Error::Seccomp(format!("filter too long: {} instructions", prog.len()))
            })?,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies the
        // program and does not keep the pointer. seccompiler's sock_filter has the same
        // layout as the kernel's (u16, u8, u8, u32).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                compiled.flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(Error::syscall(
                "seccomp(SET_MODE_FILTER)",
                nix::Error::last(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads Docker's default profile in a child and attacks it: a socket domain whose
    /// high bits are set must not pass as another family, io_uring is denied.
    #[test]
    fn docker_profile_compares_32_bit_arguments_on_32_bits_and_denies_io_uring() {
        let caps = crate::spec::docker_default_capabilities();
        let profile = crate::spec::docker_seccomp_profile(&caps);
        let compiled = compile(&profile).unwrap();
        // SAFETY: the child only makes syscalls and _exits.
        match unsafe { libc::fork() } {
            0 => {
                let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                // SAFETY: plain syscalls with integer arguments in the child.
                let code = unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    if load(&compiled).is_err() {
                        libc::_exit(100);
                    }
                    let mut bad = 0;
                    let vsock_high: libc::c_long = 40 | (1 << 32);
                    if libc::syscall(libc::SYS_socket, vsock_high, libc::SOCK_STREAM, 0) >= 0
                        || errno() != libc::EPERM
                    {
                        bad |= 1;
                    }
                    if libc::syscall(libc::SYS_socket, 40, libc::SOCK_STREAM, 0) >= 0 {
                        bad |= 2;
                    }
                    if libc::syscall(libc::SYS_io_uring_setup, 1, std::ptr::null_mut::<u8>()) >= 0
                        || errno() != libc::EPERM
                    {
                        bad |= 4;
                    }
                    if libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) < 0 {
                        bad |= 8;
                    }
                    bad
                };
                // SAFETY: ends the child.
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut st = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                assert!(libc::WIFEXITED(st), "child status {st}");
                assert_eq!(
                    libc::WEXITSTATUS(st),
                    0,
                    "bits: 1 vsock with high bits passed, 2 vsock passed, 4 io_uring passed, 8 unix socket refused, 100 load failed"
                );
            }
        }
    }

    #[test]
    fn resolves_names() {
        assert!(syscall_number("read").is_some());
        assert!(syscall_number("unshare").is_some());
        assert_eq!(syscall_number("no_such_syscall"), None);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(syscall_number("read"), Some(0));
            assert_eq!(syscall_number("clone3"), Some(435));
        }
    }

    #[test]
    fn docker_profile_compiles() {
        let caps = crate::spec::docker_default_capabilities();
        let profile = crate::spec::docker_seccomp_profile(&caps);
        let c = compile(&profile).unwrap();
        // main allowlist + ERRNO(ENOSYS) for clone3
        assert_eq!(c.programs.len(), 2);
        assert!(c.programs[0].len() > 300, "allowlist of ~350 syscalls");
        assert!(c.programs.iter().all(|p| p.len() < 4096));
    }

    #[test]
    fn notify_is_refused() {
        let p: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap();
        assert!(matches!(compile(&p), Err(Error::Seccomp(_))));
    }

    #[test]
    fn denylist_profile_has_no_main_filter() {
        let p: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        )
        .unwrap();
        let c = compile(&p).unwrap();
        assert_eq!(c.programs.len(), 1);
    }
}
