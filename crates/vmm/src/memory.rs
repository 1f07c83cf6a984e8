//! Guest RAM: anonymous `MAP_NORESERVE` mappings, so the host commits a page only when
//! the guest first touches it, registered with KVM one slot per range.

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
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| Error::GuestMemory {
        what: format!("mapping {} MiB of guest RAM", mem_bytes >> 20),
        reason: e.to_string(),
    })
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

    #[test]
    fn creates_regions_around_the_hole() {
        let m = create(64 << 20).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert_eq!(m.last_addr(), GuestAddress((64 << 20) - 1));
    }
}
