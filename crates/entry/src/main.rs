//! `vessel-entry PATH ARGV0 ARGS...`: `execve(PATH, [ARGV0, ARGS...], environ)`, nothing else.
//!
//! vessel's container processes are forked from vessel, so until their final `execve`
//! their `/proc/self/exe` is vessel's binary, and a hostile image whose command is
//! `/proc/self/exe` (or a `#!/proc/self/exe` script, or a link to it) would have the
//! kernel run *that* as the container's process — CVE-2019-5736. So vessel makes its
//! last `execve` into this program, opened from a sealed view (a read-only overlay mount
//! attached nowhere, see `vessel_container::sealed`), and this program makes the real
//! one. When the kernel resolves `/proc/self/exe` for that `execve`, it names this
//! sealed file, which refuses every write; and running it from a container does nothing
//! but exec its arguments.
//!
//! It has no C runtime and no standard library: three system calls (`execve`, and on
//! failure `write` and `exit_group`), so that it runs in images of any libc, or none,
//! under any seccomp profile that lets the container's own process start.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

#[cfg(not(target_arch = "x86_64"))]
compile_error!("vessel-entry is written for x86_64 Linux");

const SYS_WRITE: usize = 1;
const SYS_EXECVE: usize = 59;
const SYS_EXIT_GROUP: usize = 231;

/// Exit status when the program does not exist (the shell's).
const NOT_FOUND: i32 = 127;
/// Exit status when it exists but cannot be run (the shell's).
const CANNOT_RUN: i32 = 126;

// The kernel starts us with the stack holding argc, then argv, a NULL, envp, a NULL.
// SAFETY: `_start` is entered by the kernel with a valid stack; it only passes that
// stack's address to `entry`, aligned as the ABI wants for a call.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

/// # Safety
/// `sp` is the initial stack pointer the kernel gave the process.
unsafe extern "C" fn entry(sp: *const usize) -> ! {
    // SAFETY: the kernel's initial stack layout: argc, argv[0..argc], NULL, envp..., NULL.
    let (argc, argv) = unsafe { (*sp, sp.add(1) as *const *const u8) };
    if argc < 2 {
        fail(
            b"vessel-entry: nothing to run (this program only starts container processes)",
            None,
            NOT_FOUND,
        );
    }
    // SAFETY: argv has argc entries and a NULL after them; envp follows that NULL.
    let (path, args, envp) = unsafe { (*argv, argv.add(1), argv.add(argc + 1)) };
    // SAFETY: path, args and envp are the kernel's NUL-terminated strings and
    // NULL-terminated arrays.
    let err = unsafe { syscall3(SYS_EXECVE, path as usize, args as usize, envp as usize) };
    let errno = -(err as isize) as usize;
    // SAFETY: path is a NUL-terminated string from the kernel.
    let name = unsafe { cstr(path) };
    let code = if errno == 2 { NOT_FOUND } else { CANNOT_RUN };
    fail(name, Some(errno), code)
}

/// Writes `vessel: exec NAME: REASON` (or just `what` when there is no errno) to stderr
/// and exits with `code`.
fn fail(what: &[u8], errno: Option<usize>, code: i32) -> ! {
    match errno {
        Some(e) => {
            write_err(b"vessel: exec ");
            write_err(what);
            write_err(b": ");
            write_err(describe(e));
        }
        None => write_err(what),
    }
    write_err(b"\n");
    // SAFETY: exit_group takes one integer and does not return.
    unsafe {
        syscall3(SYS_EXIT_GROUP, code as usize, 0, 0);
    }
    // exit_group does not return; should it, fault rather than run on.
    // SAFETY: ud2 raises SIGILL, ending the process.
    unsafe { asm!("ud2", options(noreturn)) }
}

/// The message for the errors an `execve` of a program that was checked to exist can
/// still meet.
fn describe(errno: usize) -> &'static [u8] {
    match errno {
        1 => b"operation not permitted",
        2 => b"no such file or directory",
        7 => b"argument list too long",
        8 => b"exec format error",
        12 => b"cannot allocate memory",
        13 => b"permission denied",
        20 => b"not a directory",
        26 => b"text file busy",
        36 => b"file name too long",
        40 => b"too many levels of symbolic links",
        _ => b"cannot execute",
    }
}

fn write_err(mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: writes from a live slice to fd 2.
        let n = unsafe { syscall3(SYS_WRITE, 2, b.as_ptr() as usize, b.len()) } as isize;
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

/// The bytes of the NUL-terminated string at `p`, without the NUL.
///
/// # Safety
/// `p` points to a NUL-terminated string that outlives the result.
unsafe fn cstr(p: *const u8) -> &'static [u8] {
    let mut n = 0;
    // SAFETY: the caller guarantees a NUL before the end of the string's memory. A
    // volatile read, so that the loop is not turned into a call to libc's strlen.
    while unsafe { core::ptr::read_volatile(p.add(n)) } != 0 {
        n += 1;
    }
    // SAFETY: the n bytes before the NUL are initialised and live as long as the process.
    unsafe { core::slice::from_raw_parts(p, n) }
}

/// A raw system call with up to three arguments; returns the kernel's result
/// (negative errno on failure).
///
/// # Safety
/// The arguments must be valid for system call `nr`.
unsafe fn syscall3(nr: usize, a: usize, b: usize, c: usize) -> usize {
    let ret: usize;
    // SAFETY: the x86_64 Linux system call convention; rcx and r11 are clobbered.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    fail(b"vessel-entry: internal error", None, CANNOT_RUN)
}
