//! The crate's one error type. Each variant names the offending value and, where it
//! helps, what to do about it.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while validating, building or running a microVM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The VMM threads' seccomp filter or capability drop could not be built or applied.
    #[error("cannot confine the VMM threads (seccomp/capabilities): {0}")]
    Seccomp(String),
    /// A step of confining the VMM process ([`crate::jail::Jail::enter`]) failed.
    #[error("cannot jail the VMM process: {step}: {source}")]
    Jail {
        /// The step, e.g. "pivot_root into the empty root".
        step: &'static str,
        /// Underlying error.
        source: io::Error,
    },
    /// The kernel image could not be opened or read.
    #[error("cannot read kernel image {path}: {source}")]
    KernelRead {
        /// Path given as the kernel.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// The kernel image is neither an x86_64 bzImage nor an x86_64 ELF vmlinux.
    #[error("kernel image {path} is not usable: {reason}")]
    KernelFormat {
        /// Path given as the kernel.
        path: PathBuf,
        /// Why the image was rejected.
        reason: String,
    },
    /// The kernel loader rejected the image.
    #[error("cannot load kernel image {path} into guest memory: {reason}")]
    KernelLoad {
        /// Path given as the kernel.
        path: PathBuf,
        /// Loader's explanation.
        reason: String,
    },
    /// The initramfs could not be opened or read.
    #[error("cannot read initramfs {path}: {source}")]
    InitrdRead {
        /// Path given as the initramfs.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// A disk image could not be opened or is unusable.
    #[error("disk {path}: {reason}")]
    Disk {
        /// Path of the disk image.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Guest memory size is out of range or too small for what must be loaded.
    #[error("guest memory of {memory_mib} MiB is not usable: {reason}")]
    Memory {
        /// Requested memory in MiB.
        memory_mib: u32,
        /// Why it is not usable.
        reason: String,
    },
    /// The vCPU count is out of range.
    #[error("vCPU count {vcpus} is out of range: must be 1..={max}")]
    VcpuCount {
        /// Requested count.
        vcpus: u8,
        /// Largest supported count.
        max: u8,
    },
    /// The kernel command line is unusable.
    #[error("kernel command line is not usable: {reason}")]
    Cmdline {
        /// Why it was rejected.
        reason: String,
    },
    /// The serial console output could not be opened.
    #[error("cannot open serial console output {path}: {source}")]
    SerialOutput {
        /// Path of the output file.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// A configuration option this build does not implement yet.
    #[error("{what} is not supported by this VMM yet")]
    Unsupported {
        /// The option.
        what: String,
    },
    /// `/dev/kvm` is missing, inaccessible or of a kind that cannot run the guest.
    #[error("KVM is not usable: {reason}")]
    KvmUnavailable {
        /// Why, and what to do.
        reason: String,
    },
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        /// The operation, e.g. "KVM_CREATE_VM".
        op: String,
        /// errno from the kernel.
        source: vmm_sys_util::errno::Error,
    },
    /// Guest memory could not be created or written.
    #[error("guest memory: {what}: {reason}")]
    GuestMemory {
        /// What was being done.
        what: String,
        /// Underlying error.
        reason: String,
    },
    /// Building the ACPI tables or boot structures failed.
    #[error("cannot set up guest boot structures: {reason}")]
    BootSetup {
        /// Why.
        reason: String,
    },
    /// A device model could not be created.
    #[error("device {device}: {source}")]
    Device {
        /// Which device.
        device: String,
        /// The device's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An OS resource (thread, eventfd, epoll, signal) could not be set up.
    #[error("{what}: {source}")]
    Os {
        /// What was being set up.
        what: String,
        /// Underlying I/O error.
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn kvm(op: impl Into<String>, source: vmm_sys_util::errno::Error) -> Self {
        Error::Kvm {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn os(what: impl Into<String>, source: io::Error) -> Self {
        Error::Os {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn boot(reason: impl Into<String>) -> Self {
        Error::BootSetup {
            reason: reason.into(),
        }
    }
}
