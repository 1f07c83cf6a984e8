//! VM mode: the agent as the microVM's PID 1.
//!
//! One straight sequence of named steps — kernel file systems, modules, free page
//! reporting, the control channel (`/dev/hvc0`), `Ready`, `Config`, `eth0`, the root from
//! the disks, the command — each failing with a [`Failure`] that names it. Whatever
//! happens, the VM ends powered off: after `Exit`, after an `Error` frame, and from a panic
//! hook.
//!
//! The serial console stays silent unless something fatal happens; the host learns
//! everything through frames.

mod changes;
mod command;
mod exec;
mod memory;
mod net;
mod rootfs;
mod sys;
mod user;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use vessel_agent::protocol::{self, ErrorReport, GuestConfig, Kind};

/// The control channel: virtio-console port 0.
const CONSOLE: &str = "/dev/hvc0";
/// How long `virtio_console` may take to create [`CONSOLE`].
const CONSOLE_WAIT: Duration = Duration::from_secs(10);

/// The console's descriptor, for the panic hook (-1 until it is open).
static CONSOLE_FD: AtomicI32 = AtomicI32::new(-1);

/// Why the command did not run: an exit code for the host and a message naming the step.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// An agent/setup failure (125).
    fn engine(message: String) -> Failure {
        Failure { code: 125, message }
    }

    /// Maps an I/O error of `step` to a 125 failure naming the step.
    fn setup(step: &'static str) -> impl FnOnce(io::Error) -> Failure {
        move |e| Failure::engine(format!("{step}: {e}"))
    }
}

/// Runs the guest agent; never returns (the VM powers off).
pub fn run() -> ! {
    std::panic::set_hook(Box::new(|info| {
        report(&Failure::engine(format!("vessel-agent panicked: {info}")));
        sys::power_off();
    }));
    block_sigchld();
    let console = match boot() {
        Ok(console) => console,
        Err(failure) => {
            report(&failure);
            sys::power_off();
        }
    };
    let cfg = match receive_config(&console) {
        Ok(Some(cfg)) => cfg,
        // The host hung up before configuring us: nothing to run.
        Ok(None) => sys::power_off(),
        Err(failure) => {
            report(&failure);
            sys::power_off();
        }
    };
    let network = match &cfg.network {
        Some(n) => net::configure(n).map_err(Failure::setup("configure the network")),
        None => Ok(()),
    };
    match network
        .and_then(|()| {
            rootfs::enter_root(&cfg).map_err(Failure::setup("set up the root file system"))
        })
        .and_then(|upper| Ok((command::run(&cfg, &console)?, upper)))
        .and_then(|(status, upper)| match upper {
            Some(upper) if status == 0 => changes::send(&console, &upper)
                .map(|()| status)
                .map_err(Failure::setup("send the step's changes")),
            _ => Ok(status),
        }) {
        Ok(status) => {
            let _ = command::send(&console, Kind::Exit, &protocol::encode_i32(status));
        }
        Err(failure) => report(&failure),
    }
    sys::power_off();
}

/// Early boot up to an open, raw control channel.
fn boot() -> Result<File, Failure> {
    rootfs::mount_early().map_err(Failure::setup("mount /proc, /sys and /dev"))?;
    rootfs::load_modules().map_err(Failure::setup("load kernel modules"))?;
    // After the modules: the balloon registers for page reporting when its driver loads.
    memory::report_small_blocks();
    rootfs::loopback_up();
    sys::wait_for(CONSOLE, CONSOLE_WAIT).map_err(Failure::setup(
        "find the virtio-console control channel (is virtio_console loaded and a console configured?)",
    ))?;
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(CONSOLE)
        .map_err(Failure::setup("open /dev/hvc0"))?;
    make_raw(&console).map_err(Failure::setup("put /dev/hvc0 in raw mode"))?;
    CONSOLE_FD.store(console.as_raw_fd(), Ordering::SeqCst);
    Ok(console)
}

/// Settings must be made on the open descriptor: the port forgets them when closed.
fn make_raw(console: &File) -> io::Result<()> {
    let fd = console.as_raw_fd();
    // SAFETY: termios is plain data filled in by tcgetattr before use; fd is open.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        sys::check(libc::tcgetattr(fd, &mut t), || "tcgetattr".into())?;
        libc::cfmakeraw(&mut t);
        sys::check(libc::tcsetattr(fd, libc::TCSANOW, &t), || {
            "tcsetattr".into()
        })?;
    }
    Ok(())
}

/// Sends `Ready` and waits for `Config`. `Ok(None)` if the host closed the channel.
fn receive_config(console: &File) -> Result<Option<GuestConfig>, Failure> {
    let mut out = console;
    protocol::write_frame(&mut out, Kind::Ready, &[])
        .map_err(Failure::setup("send Ready to the host"))?;
    let mut input = console;
    loop {
        match protocol::read_frame(&mut input).map_err(Failure::setup("read Config"))? {
            None => return Ok(None),
            Some((Kind::Config, payload)) => {
                let cfg: GuestConfig = serde_json::from_slice(&payload)
                    .map_err(|e| Failure::engine(format!("parse Config: {e}")))?;
                if let Some(v) = cfg.volumes.first() {
                    return Err(Failure::engine(format!(
                        "volumes are not supported by this agent yet (asked for {} on {})",
                        v.device, v.target
                    )));
                }
                return Ok(Some(cfg));
            }
            // Stdin or signals sent before the command exists have nowhere to go.
            Some(_) => {}
        }
    }
}

/// Tells the host (if the channel is open) why we stop; agent failures (125) also go to
/// the serial console, the only trace when the channel itself is what failed.
fn report(failure: &Failure) {
    if failure.code == 125 {
        eprintln!("vessel-agent: {}", failure.message);
    }
    let fd = CONSOLE_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let report = ErrorReport {
        code: failure.code,
        message: failure.message.clone(),
    };
    let payload = serde_json::to_vec(&report).unwrap_or_else(|_| failure.message.clone().into());
    // SAFETY: fd is the console, open for the agent's whole life; ManuallyDrop keeps this
    // temporary File from closing it.
    let console = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let mut out: &File = &console;
    let _ = protocol::write_frame(&mut out, Kind::Error, &payload);
}

/// SIGCHLD is taken through a signalfd: block it before any thread exists, so that every
/// thread inherits the mask.
fn block_sigchld() {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; sigprocmask on it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
