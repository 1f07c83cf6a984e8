//! Device access control on cgroup v2: the OCI `linux.resources.devices` rules, followed
//! by Docker's default allow-list, compiled into a `BPF_PROG_TYPE_CGROUP_DEVICE` program
//! and attached to the container's cgroup2 directory.
//!
//! cgroup2 has no devices controller; the kernel asks every eBPF program attached to a
//! task's cgroup (and its ancestors) whether a `mknod`, or an open for read or write, of a
//! device node may proceed. The program sees `struct bpf_cgroup_dev_ctx { u32 access_type;
//! u32 major; u32 minor; }` with `access_type = (access << 16) | type`, and returns 1 to
//! allow or 0 to deny.
//!
//! Semantics are those of the v1 controller's rule list: rules are read in order and the
//! last one that matches a request decides; nothing matching is a denial. An allow rule
//! matches when it covers every access bit requested (the request `rw` is not allowed by
//! `r` alone); a deny rule matches when it covers any of them (denying `w` denies `rw`).
//! [`decide`] states this as plain code; [`compile`] emits the same decision as eBPF
//! (rules in reverse order, the first match returning) and the unit tests run the emitted
//! program through a small interpreter against [`decide`].
//!
//! The program is loaded and attached with raw `bpf(2)` calls: about ten instructions
//! per rule, no helpers, no maps, nothing a BPF library would add value to, and no C
//! toolchain or libelf at build time.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// The kind of device a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKind {
    /// Both block and character devices (`a`).
    All,
    /// Block devices (`b`), `BPF_DEVCG_DEV_BLOCK`.
    Block,
    /// Character devices (`c`, `u`), `BPF_DEVCG_DEV_CHAR`.
    Char,
}

impl DevKind {
    /// The `BPF_DEVCG_DEV_*` value, for a concrete kind.
    fn bpf_type(self) -> Option<i32> {
        match self {
            DevKind::All => None,
            DevKind::Block => Some(1),
            DevKind::Char => Some(2),
        }
    }
}

/// `BPF_DEVCG_ACC_MKNOD`.
pub const ACC_MKNOD: u8 = 1;
/// `BPF_DEVCG_ACC_READ`.
pub const ACC_READ: u8 = 2;
/// `BPF_DEVCG_ACC_WRITE`.
pub const ACC_WRITE: u8 = 4;
/// Every access bit (`rwm`).
pub const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One validated device-cgroup rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (true) or deny (false) what it matches.
    pub allow: bool,
    /// Which kind of device.
    pub kind: DevKind,
    /// Major number; `None` is any.
    pub major: Option<u32>,
    /// Minor number; `None` is any.
    pub minor: Option<u32>,
    /// `ACC_*` bits, never empty.
    pub access: u8,
}

const fn allow(kind: DevKind, major: Option<u32>, minor: Option<u32>, access: u8) -> DeviceRule {
    DeviceRule {
        allow: true,
        kind,
        major,
        minor,
        access,
    }
}

/// The devices every container may use whatever its spec says, appended after the spec's
/// own rules, exactly as Docker does: moby's default spec (`oci/defaults.go`) holds only
/// "deny all", and runc appends its built-in `AllowedDevices`
/// (`libcontainer/specconv/spec_linux.go`, runc 1.2.4 and later, which re-added tun/tap
/// in opencontainers/runc#4555 after 1.2.0 had dropped it). `/dev/console` (5:1) is not
/// in that list: a container's console is a bind-mounted pty (136:*).
pub const DOCKER_DEFAULT_RULES: &[DeviceRule] = &[
    // mknod of any device, but not its use.
    allow(DevKind::Char, None, None, ACC_MKNOD),
    allow(DevKind::Block, None, None, ACC_MKNOD),
    allow(DevKind::Char, Some(1), Some(3), ACC_ALL), // /dev/null
    allow(DevKind::Char, Some(1), Some(8), ACC_ALL), // /dev/random
    allow(DevKind::Char, Some(1), Some(7), ACC_ALL), // /dev/full
    allow(DevKind::Char, Some(5), Some(0), ACC_ALL), // /dev/tty
    allow(DevKind::Char, Some(1), Some(5), ACC_ALL), // /dev/zero
    allow(DevKind::Char, Some(1), Some(9), ACC_ALL), // /dev/urandom
    allow(DevKind::Char, Some(136), None, ACC_ALL),  // /dev/pts/*
    allow(DevKind::Char, Some(5), Some(2), ACC_ALL), // /dev/ptmx
    allow(DevKind::Char, Some(10), Some(200), ACC_ALL), // /dev/net/tun
];

impl DeviceRule {
    /// Validate an OCI rule. `None` for a FIFO rule (`p`), which the device cgroup never
    /// sees. A missing or empty access is `rwm`, as the v1 controller reads it.
    pub fn from_oci(rule: &LinuxDeviceCgroup) -> Result<Option<DeviceRule>> {
        let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DevKind::All,
            LinuxDeviceType::B => DevKind::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => DevKind::Char,
            LinuxDeviceType::P => return Ok(None),
        };
        let num = |what: &str, n: Option<i64>| -> Result<Option<u32>> {
            match n {
                None => Ok(None),
                Some(n) if n < 0 => Ok(None),
                Some(n) => u32::try_from(n).map(Some).map_err(|_| {
                    Error::InvalidSpec(format!(
                        "device cgroup rule {what} number {n} is out of range (0-{})",
                        u32::MAX
                    ))
                }),
            }
        };
        let text = rule.access().as_deref().unwrap_or("");
        let access = if text.is_empty() {
            ACC_ALL
        } else {
            parse_access(text)?
        };
        Ok(Some(DeviceRule {
            allow: rule.allow(),
            kind,
            major: num("major", rule.major())?,
            minor: num("minor", rule.minor())?,
            access,
        }))
    }

    /// Whether the rule matches a request of `access` bits on device `kind` `major:minor`.
    #[cfg(test)]
    fn matches(&self, kind: DevKind, major: u32, minor: u32, access: u8) -> bool {
        let kind_ok = self.kind == DevKind::All || self.kind == kind;
        let access_ok = if self.allow {
            access & !self.access == 0
        } else {
            access & self.access != 0
        };
        kind_ok
            && access_ok
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }
}

/// The v1 `devices.allow`/`devices.deny` line (`c 1:3 rwm`, `a`).
impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DevKind::All => 'a',
            DevKind::Block => 'b',
            DevKind::Char => 'c',
        };
        if self.kind == DevKind::All && self.major.is_none() && self.minor.is_none() {
            return write!(f, "a");
        }
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        let mut access = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(c);
            }
        }
        write!(f, "{kind} {}:{} {access}", num(self.major), num(self.minor))
    }
}

fn parse_access(text: &str) -> Result<u8> {
    let mut bits = 0;
    for c in text.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "device cgroup rule access {text:?} is invalid: use letters from \"rwm\""
                )))
            }
        };
    }
    Ok(bits)
}

/// The rule list a container's device access is decided by: deny everything, then the
/// spec's rules in order, then [`DOCKER_DEFAULT_RULES`].
pub fn effective_rules(spec: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
    let mut rules = vec![DeviceRule {
        allow: false,
        kind: DevKind::All,
        major: None,
        minor: None,
        access: ACC_ALL,
    }];
    for r in spec {
        if let Some(rule) = DeviceRule::from_oci(r)? {
            // Docker's spec starts with the same "deny all": once is enough.
            if rules.last() != Some(&rule) {
                rules.push(rule);
            }
        }
    }
    rules.extend_from_slice(DOCKER_DEFAULT_RULES);
    Ok(rules)
}

/// Reference semantics: may a process do `access` on device `kind` `major:minor` under
/// `rules`? The last matching rule decides; no match denies. The program [`compile`]
/// emits is tested against it.
#[cfg(test)]
pub fn decide(rules: &[DeviceRule], kind: DevKind, major: u32, minor: u32, access: u8) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| r.matches(kind, major, minor, access))
        .is_some_and(|r| r.allow)
}

/// One eBPF instruction, as `struct bpf_insn` in `linux/bpf.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register in the low nibble, source register in the high one.
    pub regs: u8,
    /// Signed jump offset (in instructions, from the next one) or memory offset.
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

// The opcodes the compiler emits (class | operation | source).
/// `BPF_LDX | BPF_MEM | BPF_W`: 32-bit load from `[src + off]`.
const LDX_W: u8 = 0x61;
/// `BPF_ALU | BPF_MOV | BPF_K`.
const MOV32_IMM: u8 = 0xb4;
/// `BPF_ALU | BPF_MOV | BPF_X`.
const MOV32_REG: u8 = 0xbc;
/// `BPF_ALU | BPF_AND | BPF_K`.
const AND32_IMM: u8 = 0x54;
/// `BPF_ALU | BPF_RSH | BPF_K`.
const RSH32_IMM: u8 = 0x74;
/// `BPF_JMP32 | BPF_JNE | BPF_K`: compares the low 32 bits, so an unsigned 32-bit major
/// or minor is compared exactly whatever its sign as an immediate.
const JNE32_IMM: u8 = 0x56;
/// `BPF_JMP32 | BPF_JEQ | BPF_K`.
const JEQ32_IMM: u8 = 0x16;
/// `BPF_JMP | BPF_EXIT`.
const EXIT: u8 = 0x95;

// Registers: r1 holds the context on entry and the requested access after the prologue;
// r2 the device type, r3 the major, r4 the minor; r0 is scratch and the return value.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// Compile `rules` (in evaluation order) into a `BPF_PROG_TYPE_CGROUP_DEVICE` program
/// that returns what [`decide`] would.
pub fn compile(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_W, R2, R1, 0, 0), // access_type
        insn(LDX_W, R3, R1, 4, 0), // major
        insn(LDX_W, R4, R1, 8, 0), // minor
        insn(MOV32_REG, R1, R2, 0, 0),
        insn(RSH32_IMM, R1, 0, 0, 16),     // access
        insn(AND32_IMM, R2, 0, 0, 0xffff), // type
    ];
    // Last match wins: test the rules from the last, the first match returning.
    for rule in rules.iter().rev() {
        // Each test is a jump past the rule's block when it does not match; the offsets
        // are filled in once the block's length is known.
        let mut block: Vec<Insn> = Vec::new();
        if let Some(t) = rule.kind.bpf_type() {
            block.push(insn(JNE32_IMM, R2, 0, 0, t));
        }
        if rule.allow && rule.access != ACC_ALL {
            // Every requested bit must be in the rule: skip if any outside it is set.
            block.push(insn(MOV32_REG, R0, R1, 0, 0));
            block.push(insn(AND32_IMM, R0, 0, 0, i32::from(!rule.access & ACC_ALL)));
            block.push(insn(JNE32_IMM, R0, 0, 0, 0));
        } else if !rule.allow && rule.access != ACC_ALL {
            // Any requested bit in the rule: skip if none is.
            block.push(insn(MOV32_REG, R0, R1, 0, 0));
            block.push(insn(AND32_IMM, R0, 0, 0, i32::from(rule.access)));
            block.push(insn(JEQ32_IMM, R0, 0, 0, 0));
        }
        if let Some(m) = rule.major {
            block.push(insn(JNE32_IMM, R3, 0, 0, m as i32));
        }
        if let Some(m) = rule.minor {
            block.push(insn(JNE32_IMM, R4, 0, 0, m as i32));
        }
        let unconditional = block.is_empty();
        block.push(insn(MOV32_IMM, R0, 0, 0, i32::from(rule.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE32_IMM || ins.code == JEQ32_IMM {
                // A block is at most 9 instructions long.
                ins.off = (len - i - 1) as i16;
            }
        }
        prog.extend(block);
        if unconditional {
            // Nothing after it can be reached, and the verifier refuses dead code.
            return prog;
        }
    }
    prog.push(insn(MOV32_IMM, R0, 0, 0, 0));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    prog
}

// bpf(2) commands, program and attach types, flags.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` member of `union bpf_attr`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::result::Result<libc::c_long, Errno> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of `union bpf_attr`
    // for `cmd`, and the size passed is its own; any pointers inside it point to buffers
    // the caller keeps alive across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// Load `prog` as a cgroup device program. On a refusal, loads it again with the
/// verifier's log and puts the log's end into the error.
fn load(prog: &[Insn], cgroup: &Path) -> Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..14].copy_from_slice(b"vessel_devices");
    let mut log = vec![0u8; 0];
    let attempt = |log: &mut Vec<u8>| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: BPF_CGROUP_DEVICE,
        };
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let fd = match attempt(&mut log) {
        Ok(fd) => fd,
        Err(first) => {
            log = vec![0u8; 64 * 1024];
            let _ = attempt(&mut log);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let log = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
            return Err(Error::DeviceFilter {
                step: "load the eBPF program (BPF_PROG_LOAD)",
                path: cgroup.to_path_buf(),
                source: first,
                log: if log.is_empty() {
                    String::new()
                } else {
                    format!("; verifier: {log}")
                },
            });
        }
    };
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Compile `rules`, load the program and attach it to the cgroup2 directory `dir` with
/// `BPF_F_ALLOW_MULTI`, so that programs of its ancestors (systemd's, an outer
/// runtime's) keep applying. Nothing stays open: the attachment holds the program, and
/// it goes with the cgroup.
pub fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let prog = compile(rules);
    let prog_fd = load(&prog, dir)?;
    let cg = open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::DeviceFilter {
        step: "open the cgroup directory",
        path: dir.to_path_buf(),
        source: e,
        log: String::new(),
    })?;
    let mut attr = ProgAttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| Error::DeviceFilter {
        step: "attach the eBPF program (BPF_PROG_ATTACH)",
        path: dir.to_path_buf(),
        source: e,
        log: String::new(),
    })?;
    tracing::debug!(cgroup = %dir.display(), insns = prog.len(), "device eBPF program attached");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    /// Runs a program of the subset [`compile`] emits on one request, as the kernel would.
    fn run(prog: &[Insn], kind: DevKind, major: u32, minor: u32, access: u8) -> u64 {
        let ty = kind.bpf_type().expect("a concrete kind") as u32;
        let ctx = [(u32::from(access) << 16) | ty, major, minor];
        let mut r = [0u64; 11];
        let mut r1_is_ctx = true;
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "no exit");
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            if dst == 1 {
                r1_is_ctx = false;
            }
            match i.code {
                LDX_W => {
                    assert!(src == 1 && r1_is_ctx, "loads only from the context");
                    assert!(i.off % 4 == 0 && (0..12).contains(&i.off));
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                MOV32_IMM => r[dst] = u64::from(i.imm as u32),
                MOV32_REG => r[dst] = r[src] & 0xffff_ffff,
                AND32_IMM => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_IMM => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                JNE32_IMM | JEQ32_IMM => {
                    let eq = r[dst] as u32 == i.imm as u32;
                    if eq == (i.code == JEQ32_IMM) {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                EXIT => return r[0],
                c => panic!("opcode {c:#x} outside the emitted subset"),
            }
        }
    }

    fn oci(allow: bool, t: LinuxDeviceType, maj: i64, min: i64, acc: &str) -> LinuxDeviceCgroup {
        LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(t)
            .major(maj)
            .minor(min)
            .access(acc)
            .build()
            .unwrap()
    }

    /// Both the reference and the compiled program, which must agree.
    fn check(rules: &[DeviceRule], kind: DevKind, maj: u32, min: u32, acc: u8) -> bool {
        let want = decide(rules, kind, maj, min, acc);
        let got = run(&compile(rules), kind, maj, min, acc);
        assert_eq!(got, u64::from(want), "{kind:?} {maj}:{min} access {acc}");
        want
    }

    #[test]
    fn docker_defaults() {
        let rules = effective_rules(&[]).unwrap();
        use DevKind::*;
        // Allowed devices, for every access.
        for (maj, min) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (136, 4),
            (10, 200),
        ] {
            for acc in 1..=ACC_ALL {
                assert!(check(&rules, Char, maj, min, acc), "c {maj}:{min} {acc}");
            }
        }
        assert!(check(&rules, Char, 1, 3, ACC_READ | ACC_WRITE));
        // Block devices: mknod yes, use no.
        assert!(check(&rules, Block, 8, 0, ACC_MKNOD));
        assert!(!check(&rules, Block, 8, 0, ACC_READ));
        assert!(!check(&rules, Block, 8, 0, ACC_WRITE));
        assert!(!check(&rules, Block, 259, 1, ACC_READ | ACC_WRITE));
        // Host char devices it was not given.
        for (maj, min) in [(10, 232), (1, 1), (1, 11), (5, 1), (4, 1), (10, 229)] {
            assert!(
                check(&rules, Char, maj, min, ACC_MKNOD),
                "mknod c {maj}:{min}"
            );
            assert!(
                !check(&rules, Char, maj, min, ACC_READ),
                "read c {maj}:{min}"
            );
            assert!(
                !check(&rules, Char, maj, min, ACC_WRITE),
                "write c {maj}:{min}"
            );
            assert!(!check(&rules, Char, maj, min, ACC_READ | ACC_MKNOD));
        }
        // The same list, as v1 lines.
        let lines: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(lines[0], "a");
        assert_eq!(lines[1], "c *:* m");
        assert_eq!(lines[2], "b *:* m");
        assert!(lines.contains(&"c 136:* rwm".to_string()));
        assert!(lines.contains(&"c 10:200 rwm".to_string()));
        assert!(!lines.contains(&"c 5:1 rwm".to_string()));
    }

    #[test]
    fn last_match_wins_and_access_is_a_subset() {
        use DevKind::*;
        use LinuxDeviceType as T;
        // Allow a whole major, then take one minor back, then give its read back.
        let spec = [
            oci(true, T::C, 4, -1, "rw"),
            oci(false, T::C, 4, 7, "rwm"),
            oci(true, T::C, 4, 7, "r"),
        ];
        let rules = effective_rules(&spec).unwrap();
        assert!(check(&rules, Char, 4, 1, ACC_READ | ACC_WRITE));
        assert!(check(&rules, Char, 4, 7, ACC_READ));
        assert!(!check(&rules, Char, 4, 7, ACC_WRITE));
        assert!(
            !check(&rules, Char, 4, 7, ACC_READ | ACC_WRITE),
            "r alone does not allow rw"
        );
        assert!(
            check(&rules, Char, 4, 7, ACC_MKNOD),
            "the default c *:* m comes last"
        );
        // A later deny of one bit denies every request that asks for it.
        let rules = effective_rules(&[oci(false, T::C, 1, 3, "w")]).unwrap();
        assert!(
            check(&rules, Char, 1, 3, ACC_WRITE),
            "defaults come after the spec's rules"
        );
        let mut rules = rules;
        rules.push(
            DeviceRule::from_oci(&oci(false, T::C, 1, 3, "w"))
                .unwrap()
                .unwrap(),
        );
        assert!(!check(&rules, Char, 1, 3, ACC_WRITE));
        assert!(!check(&rules, Char, 1, 3, ACC_READ | ACC_WRITE));
        assert!(check(&rules, Char, 1, 3, ACC_READ));
    }

    #[test]
    fn wildcards() {
        use DevKind::*;
        use LinuxDeviceType as T;
        let any = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap();
        let rules = effective_rules(&[any]).unwrap();
        assert!(check(&rules, Block, 8, 0, ACC_READ | ACC_WRITE));
        assert!(check(&rules, Char, 10, 232, ACC_READ));
        // A whole-device-allow ends the program: the verifier refuses unreachable code.
        let prog = compile(&rules);
        assert_eq!(prog.last().unwrap().code, EXIT);
        assert_eq!(
            prog.iter().filter(|i| i.code == EXIT).count(),
            DOCKER_DEFAULT_RULES.len() + 1
        );
        let rules =
            effective_rules(&[oci(true, T::B, -1, 0, "r"), oci(true, T::A, 4, -1, "w")]).unwrap();
        assert!(check(&rules, Block, 8, 0, ACC_READ));
        assert!(check(&rules, Block, 259, 0, ACC_READ));
        assert!(!check(&rules, Block, 8, 1, ACC_READ));
        assert!(check(&rules, Block, 4, 9, ACC_WRITE));
        assert!(check(&rules, Char, 4, 9, ACC_WRITE));
        assert!(!check(&rules, Char, 4, 9, ACC_READ));
        // Majors and minors beyond i32 are compared as the unsigned numbers they are.
        let big = DeviceRule {
            allow: true,
            kind: Char,
            major: Some(u32::MAX),
            minor: None,
            access: ACC_ALL,
        };
        let rules = [big];
        assert!(check(&rules, Char, u32::MAX, 3, ACC_READ));
        assert!(!check(&rules, Char, u32::MAX - 1, 3, ACC_READ));
    }

    #[test]
    fn agrees_with_the_reference_on_many_rule_lists() {
        // A small deterministic generator: every combination would be too many.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let kinds = [DevKind::All, DevKind::Block, DevKind::Char];
        for _ in 0..300 {
            let rules: Vec<DeviceRule> = (0..next(8))
                .map(|_| DeviceRule {
                    allow: next(2) == 0,
                    kind: kinds[next(3) as usize],
                    major: (next(3) != 0).then(|| next(3) as u32),
                    minor: (next(3) != 0).then(|| next(3) as u32),
                    access: 1 + next(7) as u8,
                })
                .collect();
            for kind in [DevKind::Block, DevKind::Char] {
                for maj in 0..3 {
                    for min in 0..3 {
                        for acc in 1..=ACC_ALL {
                            check(&rules, kind, maj, min, acc);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bad_rules_are_refused_with_the_value() {
        use LinuxDeviceType as T;
        let e = effective_rules(&[oci(true, T::C, 1, 3, "rx")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"rx\""), "{e}");
        let e = effective_rules(&[oci(true, T::C, 1 << 40, 3, "r")])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&(1i64 << 40).to_string()), "{e}");
        // FIFOs are not device-cgroup business.
        assert_eq!(
            DeviceRule::from_oci(&oci(true, T::P, 1, 3, "r")).unwrap(),
            None
        );
    }
}
