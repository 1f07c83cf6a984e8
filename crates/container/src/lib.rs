#![warn(missing_docs)]
//! vessel's container runtime library: runs OCI bundles as Linux containers, the way
//! runc does, on cgroup v1, v2 and hybrid hosts.
//!
//! The entry point is [`Runtime`]: `create` validates the bundle's spec, creates the
//! cgroup and starts the container init (a direct child of the caller), which sets up
//! namespaces, the root filesystem (optionally an overlay, see
//! [`spec::OVERLAY_ANNOTATION`]), capabilities and seccomp, then waits; `start` lets it
//! exec the program. [`spec::docker_default`] builds specs the way Docker does.
//!
//! Getting the exit status: the init is the caller's child; `waitpid` it. Processes
//! started with [`Runtime::exec`] are the caller's children too.

mod cgroups;
mod config;
mod error;
mod process;
mod rootfs;
mod runtime;
pub mod sealed;
mod seccomp;
pub mod spec;
mod state;
pub mod trash;
pub mod user;

pub use cgroups::devices_bpf;
pub use cgroups::warm::{warm as warm_cgroup_attach, Warmer as CgroupWarmer};
pub use cgroups::{swap_limit_supported, CgroupMode, Stats};
pub use error::{Error, Result};
pub use nix::unistd::Pid;
pub use process::Stdio;
/// Paths inside a root directory resolved by the kernel without escaping it (for a
/// builder writing into an image's root, as the runtime does into a container's).
pub use rootfs::paths::Root;
pub use runtime::{send_console, CreateOptions, ExecProcess, Runtime};
pub use state::{State, Status};

/// Compile a seccomp profile the way `create` does, to check it without starting a
/// container. Returns the number of BPF programs (filters) it becomes.
pub fn check_seccomp(profile: &oci_spec::runtime::LinuxSeccomp) -> Result<usize> {
    seccomp::compile(profile).map(|c| c.programs.len())
}

/// How cgroups are mounted on this host.
pub fn cgroup_mode() -> Result<CgroupMode> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::Io {
        op: "read",
        path: "/proc/self/mountinfo".into(),
        source: e,
    })?;
    cgroups::detect::parse_mountinfo(&text)
        .map(|l| l.mode)
        .ok_or_else(|| Error::Cgroup("no cgroup filesystem is mounted".into()))
}
