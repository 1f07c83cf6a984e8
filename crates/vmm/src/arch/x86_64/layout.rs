//! Guest physical memory map. Low memory mirrors what a PC firmware leaves behind, so
//! the kernel's early code finds things where it looks for them.

/// GDT used for the 64-bit entry.
pub const BOOT_GDT_START: u64 = 0x500;
/// Empty IDT used until the kernel installs its own.
pub const BOOT_IDT_START: u64 = 0x520;
/// Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, one PDPT, then four page directories mapping 0..4 GiB
/// with 2 MiB pages.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of the four page directories.
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Start of the extended BIOS data area: RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables live in the BIOS read-only area, where the kernel also scans for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
/// End (exclusive) of the area reserved for ACPI tables.
pub const ACPI_END: u64 = 0x10_0000;
/// Start of high memory; the kernel is loaded here.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole (devices, IOAPIC, LAPIC). RAM above this goes above 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End (exclusive) of the 32-bit MMIO hole.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device window.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of each virtio-mmio device window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC registers.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC registers.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Address KVM needs for the VMX real-mode TSS (three pages), just below the IOAPIC.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// Address KVM needs for the VMX identity map page.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// COM1 I/O ports and interrupt line.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1 interrupt (ISA IRQ 4, identity mapped to IOAPIC pin 4).
pub const COM1_IRQ: u32 = 4;
/// i8042 controller ports (data, command/status); only the reset command is honoured.
pub const I8042_PORT: u16 = 0x60;
/// Hardware-reduced ACPI sleep control / status / reset register (one byte).
pub const ACPI_POWER_PORT: u16 = 0x3c0;
/// First interrupt line handed to virtio devices; each takes the next one.
pub const VIRTIO_IRQ_START: u32 = 5;

/// Guest RAM as (start, size) ranges for a machine with `mem_bytes` of memory: below the
/// MMIO hole first, the rest above 4 GiB.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(u64, u64)> {
    if mem_bytes <= MMIO_GAP_START {
        vec![(0, mem_bytes)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_bytes - MMIO_GAP_START),
        ]
    }
}

/// Guest window of the `index`th virtio-mmio device.
pub fn virtio_mmio_addr(index: usize) -> u64 {
    VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SIZE
}

// The boot structures must not overlap, and every device must get an MMIO window below
// the IOAPIC and one of KVM's 24 IOAPIC pins. Checked at compile time.
const _: () = {
    assert!(BOOT_IDT_START + 8 <= ZERO_PAGE_START);
    assert!(ZERO_PAGE_START + 0x1000 <= BOOT_STACK_POINTER);
    assert!(PDE_START + 4 * 0x1000 <= CMDLINE_START);
    assert!(CMDLINE_START + 0x1_0000 <= EBDA_START);
    assert!(
        VIRTIO_MMIO_START + crate::config::MAX_VIRTIO_DEVICES as u64 * VIRTIO_MMIO_SIZE
            <= IOAPIC_ADDR as u64
    );
    assert!(VIRTIO_IRQ_START + crate::config::MAX_VIRTIO_DEVICES as u32 <= 24);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
        assert_eq!(ram_ranges(MMIO_GAP_START), vec![(0, MMIO_GAP_START)]);
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r, vec![(0, MMIO_GAP_START), (MMIO_GAP_END, 1 << 30)]);
        assert_eq!(r.iter().map(|x| x.1).sum::<u64>(), 4 << 30);
    }
}
