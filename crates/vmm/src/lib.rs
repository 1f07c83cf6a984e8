//! vessel's microVM monitor: boots a Linux kernel in a KVM virtual machine.
//!
//! The shape follows Firecracker and Cloud Hypervisor: configuration is a plain
//! [`VmConfig`] validated before any side effect ([`VmConfig::validate`]); [`Vm::new`]
//! wires the machine together (guest memory, kernel, ACPI tables, vCPUs, devices) and
//! [`Vm::run`] blocks until the guest powers off, reboots or crashes.
//!
//! The machine is deliberately small: x86_64 only, KVM in-kernel LAPIC/IOAPIC and PIT,
//! one 8250 UART (COM1), a hardware-reduced ACPI power device (so `poweroff` and
//! `reboot` inside the guest end [`Vm::run`]), an i8042 reset line, and virtio-mmio
//! devices described in the ACPI DSDT (the stock Debian kernel has no
//! `virtio_mmio.device=` command line support): virtio-blk disks, one virtio-console
//! port bridged to a host stream for the guest agent, and a virtio-net interface over a
//! tap device.
//!
//! Guest RAM is anonymous memory mapped with `MAP_NORESERVE`: pages are committed
//! only when the guest touches them.
#![deny(missing_docs)]
#![cfg(target_arch = "x86_64")]

mod arch;
mod boot;
mod bus;
mod config;
mod devices;
mod error;
mod exit;
mod files;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod io_thread;
pub mod jail;
mod kvm_detect;
mod memory;
mod seccomp;
mod vcpu;
mod vm;

pub use config::{
    DiskConfig, NetConfig, SerialOut, VmConfig, MAX_DISKS, MAX_MEMORY_MIB, MAX_NICS, MAX_VCPUS,
    MIN_MEMORY_MIB,
};
pub use error::{Error, Result};
pub use files::OpenFiles;
pub use kvm_detect::{detect_hypervisor, detect_kvm, CpuVendor, Hypervisor, KvmKind};
pub use vm::{ExitReason, StopHandle, Vm};
