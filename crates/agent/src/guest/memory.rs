//! Free guest memory handed back to the host through the balloon's free page reporting.
//!
//! Linux 6.1 reports only free blocks of at least `pageblock_order` (2 MiB): its
//! `virtio_balloon` registers with order 0, which `page_reporting_register` replaces with
//! `pageblock_order`, overriding the `page_reporting_order` boot parameter. The kernel
//! image's init sections, freed after boot, lie between code, rodata and data in runs of
//! a few hundred KiB, and boot-time allocations leave holes of the same kind: at 2 MiB none
//! of it is reported and all of it stays resident on the host. Once the balloon has
//! registered, the parameter can be lowered at run time; this module does that and then
//! makes the kernel run a reporting pass.

use std::fs;
use std::io;
use std::ptr;

/// The run-time knob of the kernel's `mm/page_reporting.c` (built in; only present with
/// `CONFIG_PAGE_REPORTING`).
const REPORTING_ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";

/// Report free blocks of 2^3 pages (32 KiB) and up: small enough for the freed init
/// sections, large enough that the host's `madvise` per report stays cheap.
const ORDER: u32 = 3;

/// How much anonymous memory [`request_pass`] faults in and releases: more than the
/// per-CPU free lists of a small guest hold (a few MiB), so that the release reaches the
/// buddy allocator.
const KICK_BYTES: usize = 8 << 20;

/// Lowers the reporting order to [`ORDER`] and starts a reporting pass. Best effort: a
/// kernel without page reporting, or a VM without a balloon, keeps what it has.
pub fn report_small_blocks() {
    if fs::write(REPORTING_ORDER, ORDER.to_string()).is_err() {
        return;
    }
    let _ = request_pass();
}

/// The kernel starts a reporting pass (about 2 s later) only when a free merges into a
/// block of at least the reporting order in the buddy allocator; writing the parameter
/// does not. Small frees stop in the per-CPU lists, so fault in and release a region larger
/// than those hold. The region's pages are themselves reported again afterwards.
fn request_pass() -> io::Result<()> {
    // SAFETY: a fresh private anonymous mapping, unmapped below before anything else can
    // refer to it; no existing memory is affected.
    unsafe {
        let addr = libc::mmap(
            ptr::null_mut(),
            KICK_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        );
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        libc::munmap(addr, KICK_BYTES);
    }
    Ok(())
}
