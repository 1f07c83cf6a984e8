//! `vessel-runc`: vessel with runc's command line, for containerd (`BinaryName`,
//! `ctr run --runc-binary`), podman (`--runtime`) and other runc callers.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly on a closed pipe, as other Unix tools do.
    // SAFETY: setting a signal disposition to SIG_DFL before any thread exists is sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    ExitCode::from(vessel_oci::main(std::env::args_os().skip(1)))
}
