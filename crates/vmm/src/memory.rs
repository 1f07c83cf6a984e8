//! Guest RAM: anonymous `MAP_NORESERVE` mappings, so the host commits a page only when
//! the guest first touches it, registered with KVM one slot per range.
//!
//! Transparent huge pages are turned off for guest RAM (`MADV_NOHUGEPAGE`): with THP
//! `always` (Debian's default) every 4 KiB the guest touches commits 2 MiB of host
//! memory, so a booted, idle 512 MiB guest held 122 MiB of huge pages instead of the few
//! tens of MiB it actually used (Firecracker does not use THP for guest memory either).

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::ram_ranges;
use crate::error::{Error, Result};

/// Maps `mem_bytes` of guest RAM laid out around the MMIO hole.
pub(crate) fn create(mem_bytes: u64) -> Result<GuestMemoryMmap> {
    let ranges = ram_ranges(mem_bytes)
        .into_iter()
        .map(|(start, size)| {
            usize::try_from(size)
                .map(|size| (GuestAddress(start), size))
                .map_err(|_| Error::boot(format!("memory range of {size} bytes exceeds usize")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| Error::GuestMemory {
        what: format!("mapping {} MiB of guest RAM", mem_bytes >> 20),
        reason: e.to_string(),
    })?;
    for region in mem.iter() {
        no_huge_pages(region.as_ptr(), region.len() as usize);
    }
    Ok(mem)
}

/// Asks the kernel to back `[ptr, ptr + len)` with 4 KiB pages only. Best effort: a
/// kernel without THP refuses the advice, and then there are no huge pages anyway.
fn no_huge_pages(ptr: *mut u8, len: usize) {
    // SAFETY: madvise only changes how the kernel backs this range, which is one whole
    // mapping owned by the caller's `GuestMemoryMmap`; no memory is read or written.
    let rc = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_NOHUGEPAGE) };
    if rc != 0 {
        tracing::debug!(
            "madvise(MADV_NOHUGEPAGE) on guest RAM: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Tells KVM where each range of guest RAM lives in this process.
pub(crate) fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let region_desc = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the mapping described is owned by `mem`, which the caller keeps alive
        // (inside the `Vm`) for as long as the VM fd exists, and slots do not overlap
        // because `ram_ranges` returns disjoint ranges.
        unsafe { vm.set_user_memory_region(region_desc) }
            .map_err(|e| Error::kvm(format!("KVM_SET_USER_MEMORY_REGION slot {slot}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The advice is visible in /proc/self/smaps as the `nh` VmFlag of the mapping.
    #[test]
    fn guest_ram_is_not_backed_by_huge_pages() {
        let m = create(64 << 20).unwrap();
        let start = format!("{:x}-", m.iter().next().unwrap().as_ptr() as usize);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        // VmFlags is the last line of each mapping's entry.
        let flags = smaps
            .lines()
            .skip_while(|l| !l.starts_with(&start))
            .find(|l| l.starts_with("VmFlags:"))
            .expect("the guest mapping in /proc/self/smaps");
        assert!(flags.split_whitespace().any(|f| f == "nh"), "{flags}");
    }

    #[test]
    fn creates_regions_around_the_hole() {
        let m = create(64 << 20).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert_eq!(m.last_addr(), GuestAddress((64 << 20) - 1));
    }
}
