//! `vessel-agent`, installed as `vessel-init`: one static binary, two roles.
//!
//! - `vessel-init -- COMMAND [ARGS...]`: PID 1 of a container (`vessel run --init`): runs
//!   the command, forwards signals, reaps zombies, exits with the command's status.
//! - `/init` of a microVM's initramfs (PID 1 without the `--` convention): the guest
//!   agent, which sets up the root filesystem from the VM's disks and runs the command
//!   the host sends over virtio-console (see `vessel_agent::protocol`).
//! - `vessel-init probe ...`: the measurements of `vessel compare` (see `probe.rs`), run
//!   inside instances and on the host alike.

mod container_init;
mod guest;
mod probe;

fn main() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
        container_init::run(args);
    }
    // Before the PID 1 check: a probe may well be a container's PID 1.
    if args.first().is_some_and(|a| a == "probe") {
        probe::run(&args[1..]);
    }
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } == 1 {
        // The kernel passes unknown command-line words to init as arguments: ignore them.
        guest::run();
    }
    container_init::run(args);
}
