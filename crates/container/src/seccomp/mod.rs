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
mod tree;

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule,
    TargetArch,
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
    let (filters, flags) = plan(profile)?;
    let programs = filters
        .into_iter()
        .map(|f| build(f.rules, f.mismatch, f.matched, f.arch))
        .collect::<Result<Vec<_>>>()?;
    Ok(CompiledSeccomp { programs, flags })
}

/// One filter of the stack a profile becomes: `matched` for the syscalls in `rules` whose
/// chain holds, `mismatch` for all others.
struct FilterPlan {
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
}

/// The filters (in load order) and `seccomp(2)` flags for `profile`.
fn plan(profile: &LinuxSeccomp) -> Result<(Vec<FilterPlan>, libc::c_ulong)> {
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

    let mut filters = Vec::new();
    if default != SeccompAction::Allow {
        filters.push(FilterPlan {
            rules: main,
            mismatch: default.clone(),
            matched: SeccompAction::Allow,
            arch,
        });
    }
    for (_, (act, rules)) in by_action {
        filters.push(FilterPlan {
            rules,
            mismatch: SeccompAction::Allow,
            matched: act,
            arch,
        });
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
    Ok((filters, flags))
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

/// One filter of the stack, laid out by [`tree::build`] (seccompiler's own layout is a
/// linear chain that costs the kernel ~1 ms to load for Docker's profile).
fn build(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram> {
    tree::build(rules, mismatch, matched, arch)
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

    /// seccompiler's own (linear) program for a filter: the reference.
    fn linear(f: &FilterPlan) -> BpfProgram {
        let filter = seccompiler::SeccompFilter::new(
            f.rules.clone(),
            f.mismatch.clone(),
            f.matched.clone(),
            f.arch,
        )
        .unwrap();
        BpfProgram::try_from(filter).unwrap()
    }

    /// Argument values worth trying for `plan`: every constant its conditions name, its
    /// neighbours, with high bits set and cleared, plus a few fixed and random ones.
    fn interesting_args(plans: &[FilterPlan], seed: &mut u64) -> Vec<u64> {
        let mut v = vec![0, 1, u64::MAX, 0xffff_ffff, 1 << 32, 0x8000_0000];
        let dbg = plans
            .iter()
            .map(|p| format!("{:?}", p.rules))
            .collect::<String>();
        // The constants are in the rules' Debug output (seccompiler keeps its fields
        // private): `value: N` and `MaskedEq(N)`.
        for marker in ["value: ", "MaskedEq("] {
            for piece in dbg.split(marker).skip(1) {
                let digits: String = piece.chars().take_while(char::is_ascii_digit).collect();
                let k: u64 = digits.parse().unwrap();
                for x in [k, k.wrapping_add(1), k.wrapping_sub(1)] {
                    v.extend([x, x | 0xdead_0000_0000_0000, x & 0xffff_ffff, !x]);
                }
            }
        }
        let conditional = plans
            .iter()
            .any(|p| p.rules.values().any(|c| !c.is_empty()));
        assert!(
            !conditional || v.len() > 6,
            "no condition constants found in {dbg}"
        );
        for _ in 0..16 {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.push(*seed);
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The compact program gives exactly the linear program's verdict, for every syscall
    /// number (and numbers past the table, the x32 bit, the top of the range), a foreign
    /// architecture, and many argument values in every argument position.
    fn assert_same_verdicts(profile: &LinuxSeccomp) {
        let (plans, _) = plan(profile).unwrap();
        let mut seed = 0x5eed_u64;
        let args = interesting_args(&plans, &mut seed);
        let arch = tree::audit_arch(target_arch().unwrap());
        for f in &plans {
            let (reference, compact) = (linear(f), compile_one(f));
            let mut nrs: Vec<u32> = (0..1100).collect();
            nrs.extend([
                0x4000_0000,
                0x4000_0001,
                0x4000_0100,
                u32::MAX - 1,
                u32::MAX,
            ]);
            for nr in nrs {
                let conditional = f.rules.get(&i64::from(nr)).is_some_and(|c| !c.is_empty());
                let arg_sets: Vec<[u64; 6]> = if conditional {
                    let mut sets = Vec::new();
                    for (i, a) in args.iter().enumerate() {
                        for pos in 0..6 {
                            let mut set = [args[(i * 7 + pos) % args.len()]; 6];
                            set[pos] = *a;
                            sets.push(set);
                        }
                    }
                    sets
                } else {
                    vec![[0; 6], [u64::MAX; 6]]
                };
                for a in arg_sets {
                    for arch in [arch, 0x4000_0003] {
                        let d = tree::tests::Data { nr, arch, args: a };
                        assert_eq!(
                            tree::tests::run(&reference, &d),
                            tree::tests::run(&compact, &d),
                            "syscall {nr}, arch {arch:#x}, args {a:x?}"
                        );
                    }
                }
            }
        }
    }

    fn compile_one(f: &FilterPlan) -> BpfProgram {
        build(
            f.rules.clone(),
            f.mismatch.clone(),
            f.matched.clone(),
            f.arch,
        )
        .unwrap()
    }

    #[test]
    fn compact_programs_decide_like_seccompilers_linear_ones() {
        let mut caps = crate::spec::docker_default_capabilities();
        assert_same_verdicts(&crate::spec::docker_seccomp_profile(&caps));
        // With CAP_SYS_ADMIN and friends the profile allows more, with other conditions.
        for c in [
            oci_spec::runtime::Capability::SysAdmin,
            oci_spec::runtime::Capability::SysPtrace,
            oci_spec::runtime::Capability::SysModule,
        ] {
            caps.insert(c);
        }
        assert_same_verdicts(&crate::spec::docker_seccomp_profile(&caps));
    }

    #[test]
    fn compact_programs_decide_like_linear_ones_on_random_profiles() {
        let mut seed = 42_u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let ops = [
            "SCMP_CMP_EQ",
            "SCMP_CMP_NE",
            "SCMP_CMP_GT",
            "SCMP_CMP_GE",
            "SCMP_CMP_LT",
            "SCMP_CMP_LE",
            "SCMP_CMP_MASKED_EQ",
        ];
        let actions = [
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_KILL",
            "SCMP_ACT_TRAP",
            "SCMP_ACT_LOG",
        ];
        for _ in 0..16 {
            let mut syscalls = Vec::new();
            for _ in 0..(1 + next(60)) {
                let names: Vec<String> = (0..(1 + next(8)))
                    .filter_map(|_| {
                        let i = next(syscalls::SYSCALLS.len() as u64) as usize;
                        Some(format!("\"{}\"", syscalls::SYSCALLS.get(i)?.0))
                    })
                    .collect();
                let args: Vec<String> = (0..next(3))
                    .map(|_| {
                        let big = next(2) == 0;
                        let value = if big { next(u64::MAX) << 20 } else { next(16) };
                        format!(
                            r#"{{"index":{},"value":{},"valueTwo":{},"op":"{}"}}"#,
                            next(6),
                            value,
                            next(8),
                            ops[next(ops.len() as u64) as usize]
                        )
                    })
                    .collect();
                syscalls.push(format!(
                    r#"{{"names":[{}],"action":"{}","args":[{}]}}"#,
                    names.join(","),
                    actions[next(actions.len() as u64) as usize],
                    args.join(",")
                ));
            }
            let default =
                ["SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW", "SCMP_ACT_KILL_PROCESS"][next(3) as usize];
            let json = format!(
                r#"{{"defaultAction":"{default}","syscalls":[{}]}}"#,
                syscalls.join(",")
            );
            let profile: LinuxSeccomp = serde_json::from_str(&json).unwrap();
            assert_same_verdicts(&profile);
        }
    }

    #[test]
    fn docker_profile_compiles() {
        let caps = crate::spec::docker_default_capabilities();
        let profile = crate::spec::docker_seccomp_profile(&caps);
        let c = compile(&profile).unwrap();
        // main allowlist + ERRNO(ENOSYS) for clone3
        assert_eq!(c.programs.len(), 2);
        // The linear layout of the ~350-syscall allow-list is ~1,540 instructions; the
        // search tree a fraction of that (what the kernel's load time is proportional to).
        let (plans, _) = plan(&profile).unwrap();
        let reference = linear(&plans[0]).len();
        assert!(reference > 1000, "allowlist of ~350 syscalls: {reference}");
        assert!(
            c.programs[0].len() * 3 < reference,
            "compact {} vs linear {reference}",
            c.programs[0].len()
        );
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
