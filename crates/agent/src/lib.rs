//! The host side of vessel's guest agent: what a microVM monitor needs to talk to the
//! `vessel-agent` binary running as the VM's PID 1.
//!
//! - [`protocol`]: the frames exchanged over the virtio-console stream, and
//!   [`protocol::GuestConfig`], what the guest should run.
//! - [`initramfs`]: builds the initramfs that carries the static agent as `/init` and the
//!   kernel modules it loads, resolved from the kernel's `modules.dep`.
//!
//! The agent binary itself (same crate, `src/main.rs`) is also the containers' `--init`.

pub mod initramfs;
pub mod protocol;

/// `vessel-init probe facts` reports one `/proc/kallsyms` entry in this many (chosen by
/// a hash of its name and module, so every kernel reports the same names): enough to
/// tell what share of the host's symbols an instance can read, without shipping 150k
/// names through a VM's console.
pub const KALLSYMS_SAMPLE: u64 = 32;
