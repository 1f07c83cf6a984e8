//! Thin, error-annotating wrappers over the syscalls the guest agent makes.

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// Converts to a C string; a NUL byte inside is an `InvalidInput` error naming the value.
pub fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

/// The calling thread's last OS error, prefixed with what was attempted.
pub fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Turns a libc return value into a `Result`, annotating failures with `what`.
pub fn check(ret: libc::c_int, what: impl FnOnce() -> String) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(last_error(&what()))
    } else {
        Ok(ret)
    }
}

/// `mount(2)`.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let data_ptr = if data.is_empty() {
        std::ptr::null()
    } else {
        d.as_ptr().cast()
    };
    let fstype_ptr = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    // SAFETY: all pointers are NUL-terminated strings (or null where mount(2) allows it)
    // that outlive the call.
    let ret = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), fstype_ptr, flags, data_ptr) };
    check(ret, || {
        format!("mount {source} on {target} ({fstype} {data})")
    })
    .map(|_| ())
}

/// Creates `path` (and its parents) unless it exists.
pub fn ensure_dir(path: &str) -> io::Result<()> {
    std::fs::create_dir_all(path)
        .map_err(|e| io::Error::new(e.kind(), format!("mkdir {path}: {e}")))
}

/// Waits until `path` exists, polling, for at most `limit`.
pub fn wait_for(path: &str, limit: Duration) -> io::Result<()> {
    let start = Instant::now();
    while !Path::new(path).exists() {
        if start.elapsed() > limit {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{path} did not appear within {limit:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Flushes the file systems and powers the VM off (the monitor sees a shutdown). If that
/// fails, exiting PID 1 panics the kernel, which `panic=-1` turns into a reboot: either
/// way the VM ends.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot have no memory-safety preconditions; we are PID 1 and mean
    // to stop the machine.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
        libc::_exit(1)
    }
}

/// Creates a pipe whose ends are closed on exec: `(read, write)`.
pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(r, || "pipe2".into())?;
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Sets or clears `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL take no pointers.
    unsafe {
        let flags = check(libc::fcntl(fd, libc::F_GETFL), || "fcntl F_GETFL".into())?;
        check(
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK),
            || "fcntl F_SETFL".into(),
        )?;
    }
    Ok(())
}
