//! A compact layout for a filter: a binary search over syscall-number ranges in front of
//! seccompiler's program for the syscalls whose rules look at arguments.
//!
//! seccompiler emits one linear chain, a comparison (and jumps) per syscall: Docker's
//! profile becomes about 1,540 instructions. Loading costs the kernel time in proportion
//! to that length, twice: it translates and JIT-compiles the program, and it builds the
//! per-syscall "always allowed" cache by emulating the program once for every syscall
//! number of the architecture, walking the chain each time. That made `seccomp(2)` the
//! single most expensive step of a container's start (about 1.3 ms of the ~10 ms).
//!
//! Almost every syscall of a profile is matched on its number alone, and the numbers an
//! allow-list names come in long runs. So the program here is: the architecture check,
//! then a balanced binary search over maximal runs of numbers that share one outcome —
//! the match action, the mismatch action, or "depends on the arguments" — and, only for
//! the last kind, a jump into seccompiler's own program built from just those syscalls'
//! rules (so conditions are still compiled by seccompiler). Docker's profile becomes a
//! few hundred instructions and about ten comparisons per syscall. The verdict for every
//! syscall number and argument is the same as the linear program's: the tests below
//! check it instruction by instruction with an interpreter, over every number and many
//! arguments.

use std::collections::BTreeMap;

use seccompiler::{sock_filter, BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

use crate::error::{Error, Result};

// Classic BPF opcodes (linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;

/// `offsetof(struct seccomp_data, nr)` and `arch`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// The kernel's limit on a classic BPF program's length.
const MAX_LEN: usize = 4096;

/// What the search ends in for a run of syscall numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Match,
    Mismatch,
    /// Decided by the rules on the arguments: seccompiler's program.
    Rules,
}

pub(super) fn audit_arch(arch: TargetArch) -> u32 {
    match arch {
        TargetArch::x86_64 => 0xC000_003E,
        TargetArch::aarch64 => 0xC000_00B7,
        TargetArch::riscv64 => 0xC000_00F3,
    }
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The program that returns `matched` for the syscalls in `rules` whose rule chain holds
/// (an empty chain always holds) and `mismatch` for everything else; a foreign
/// architecture kills the process, as seccompiler's programs do.
pub(super) fn build(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram> {
    // Maximal runs of numbers with one outcome, as (first number, outcome), from 0 up.
    let mut runs: Vec<(u32, Outcome)> = vec![(0, Outcome::Mismatch)];
    let mark = |runs: &mut Vec<(u32, Outcome)>, start: u32, outcome: Outcome| {
        if let Some(&(last_start, _)) = runs.last() {
            if last_start == start {
                runs.pop();
            }
        }
        if runs.last().map(|r| r.1) != Some(outcome) {
            runs.push((start, outcome));
        }
    };
    let mut conditional = BTreeMap::new();
    for (nr, chain) in rules {
        let n = u32::try_from(nr)
            .ok()
            .filter(|n| *n < u32::MAX)
            .ok_or_else(|| Error::Seccomp(format!("syscall number {nr} out of range")))?;
        if chain.is_empty() {
            mark(&mut runs, n, Outcome::Match);
        } else {
            mark(&mut runs, n, Outcome::Rules);
            conditional.insert(nr, chain);
        }
        mark(&mut runs, n + 1, Outcome::Mismatch);
    }
    let tail = if conditional.is_empty() {
        None
    } else {
        let filter = SeccompFilter::new(conditional, mismatch.clone(), matched.clone(), arch)
            .map_err(|e| Error::Seccomp(e.to_string()))?;
        Some(BpfProgram::try_from(filter).map_err(|e| Error::Seccomp(e.to_string()))?)
    };

    let mut out = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JMP_JEQ_K, audit_arch(arch), 1, 0),
        stmt(BPF_RET_K, u32::from(SeccompAction::KillProcess)),
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    let mut to_tail = Vec::new();
    let actions = (u32::from(matched), u32::from(mismatch));
    search(&runs, &mut out, &mut to_tail, actions);
    let tail_start = out.len();
    for at in to_tail {
        out[at].k = offset(at, tail_start)?;
    }
    out.extend(tail.into_iter().flatten());
    if out.len() >= MAX_LEN {
        return Err(Error::Seccomp(format!(
            "filter too long: {} instructions",
            out.len()
        )));
    }
    Ok(out)
}

/// The forward distance from the jump at `from` to `to`, as a `BPF_JA` offset.
fn offset(from: usize, to: usize) -> Result<u32> {
    u32::try_from(to - from - 1).map_err(|_| Error::Seccomp("filter too long".into()))
}

/// Emits the search over `runs` (the accumulator holds the syscall number). A node is
/// `jge first-of-upper-half ? next : skip-one` followed by a `ja` over the lower half:
/// conditional jumps reach only 255 instructions, `ja` any distance.
fn search(
    runs: &[(u32, Outcome)],
    out: &mut Vec<sock_filter>,
    to_tail: &mut Vec<usize>,
    (matched, mismatch): (u32, u32),
) {
    if let [(_, outcome)] = runs {
        match outcome {
            Outcome::Match => out.push(stmt(BPF_RET_K, matched)),
            Outcome::Mismatch => out.push(stmt(BPF_RET_K, mismatch)),
            Outcome::Rules => {
                to_tail.push(out.len());
                out.push(stmt(BPF_JMP_JA, 0));
            }
        }
        return;
    }
    let mid = runs.len() / 2;
    out.push(jump(BPF_JMP_JGE_K, runs[mid].0, 0, 1));
    let over_lower = out.len();
    out.push(stmt(BPF_JMP_JA, 0));
    search(&runs[..mid], out, to_tail, (matched, mismatch));
    // Within MAX_LEN by construction (checked on the whole program by the caller).
    out[over_lower].k = (out.len() - over_lower - 1) as u32;
    search(&runs[mid..], out, to_tail, (matched, mismatch));
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `struct seccomp_data` as the interpreter sees it.
    pub struct Data {
        pub nr: u32,
        pub arch: u32,
        pub args: [u64; 6],
    }

    impl Data {
        fn word(&self, off: u32) -> u32 {
            match off {
                0 => self.nr,
                4 => self.arch,
                8 | 12 => 0, // instruction pointer
                o if (16..64).contains(&o) && o % 4 == 0 => {
                    let a = self.args[((o - 16) / 8) as usize];
                    if (o - 16) % 8 == 0 {
                        a as u32
                    } else {
                        (a >> 32) as u32
                    }
                }
                o => panic!("load from offset {o}"),
            }
        }
    }

    /// Runs a classic BPF seccomp program (the opcodes seccompiler and [`build`] use).
    pub fn run(prog: &[sock_filter], d: &Data) -> u32 {
        let (mut acc, mut pc) = (0u32, 0usize);
        for _ in 0..100_000 {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                0x20 => acc = d.word(i.k),
                0x54 => acc &= i.k, // ALU AND K
                0x05 => pc += i.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match i.code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x35 => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += if taken { i.jt } else { i.jf } as usize;
                }
                0x06 => return i.k,
                c => panic!("opcode {c:#x} at {}", pc - 1),
            }
        }
        panic!("program did not end");
    }
}
