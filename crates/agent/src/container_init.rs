//! Container mode: a minimal PID 1 for containers (`vessel run --init`), like tini.
//!
//! It runs the command as its child, forwards every catchable signal to it, reaps every
//! zombie that is reparented to it, and exits with the command's status (128 + signal
//! if the command was killed). It is linked statically, so it runs in any image.
//!
//! usage: vessel-init -- COMMAND [ARGS...]

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::exit;

/// Signals PID 1 passes on to the command instead of handling them itself.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGALRM,
    libc::SIGPIPE,
];

fn die(msg: &str, code: i32) -> ! {
    eprintln!("vessel-init: {msg}");
    exit(code)
}

/// Runs `args` (the command line after `--`) as the child of this PID 1 and exits with its
/// status; never returns.
pub fn run(args: Vec<OsString>) -> ! {
    if args.is_empty() {
        die("usage: vessel-init -- COMMAND [ARGS...]", 2);
    }
    let argv: Vec<CString> = match args.iter().map(|a| CString::new(a.as_bytes())).collect() {
        Ok(v) => v,
        Err(_) => die("an argument contains a NUL byte", 2),
    };

    // SAFETY: sigset_t is plain data; all-zero is a valid value.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain libc calls on a sigset owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }

    // SAFETY: fork in a single-threaded process; the child only calls async-signal-safe
    // functions (sigprocmask, setsid-free execvp, _exit) before exec.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die(&format!("fork: {}", std::io::Error::last_os_error()), 125);
    }
    if child == 0 {
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        // SAFETY: ptrs is a NULL-terminated array of valid C strings that outlive the call.
        unsafe {
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::execvp(ptrs[0], ptrs.as_ptr());
        }
        let err = std::io::Error::last_os_error();
        let code = if err.raw_os_error() == Some(libc::ENOENT) {
            127
        } else {
            126
        };
        eprintln!("vessel-init: exec {}: {err}", args[0].to_string_lossy());
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(code) }
    }

    loop {
        // SAFETY: siginfo_t is plain data; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: set and info are valid for the call.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue; // EINTR
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(child, sig) };
            continue;
        }
        // Reap everything that has exited: the command and any orphan reparented to us.
        loop {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    continue;
                };
                exit(code);
            }
        }
    }
}
