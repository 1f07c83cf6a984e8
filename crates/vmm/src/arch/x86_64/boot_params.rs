//! The Linux zero page (`struct boot_params`) and its E820 memory map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};

use super::layout::{
    ram_ranges, ACPI_END, ACPI_START, CMDLINE_START, EBDA_START, HIMEM_START, MMIO_GAP_START,
};
use crate::boot::InitrdPlacement;

/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;
/// `type_of_loader` value for a boot loader without an assigned id.
const LOADER_UNDEFINED: u8 = 0xff;

/// One E820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The memory map the guest sees: RAM below the EBDA, the firmware area (where the ACPI
/// tables are) reserved, RAM from 1 MiB up to the MMIO hole and, for large guests, above
/// 4 GiB.
pub fn e820_map(mem_bytes: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: ACPI_START,
            size: ACPI_END - ACPI_START,
            kind: E820_RESERVED,
        },
    ];
    for (start, size) in ram_ranges(mem_bytes) {
        let (start, end) = (start.max(HIMEM_START), start + size);
        if end > start {
            map.push(E820Entry {
                addr: start,
                size: end - start,
                kind: E820_RAM,
            });
        }
    }
    map
}

/// Top of RAM below the MMIO hole.
pub fn lowmem_top(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_GAP_START)
}

/// Fills the zero page from the kernel's setup header and the machine's layout.
pub fn build(
    header: setup_header,
    mem_bytes: u64,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    rsdp_addr: u64,
) -> boot_params {
    let mut params = boot_params {
        hdr: header,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32 + 1;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
        params.ext_ramdisk_image = (initrd.addr >> 32) as u32;
        params.ext_ramdisk_size = (initrd.size >> 32) as u32;
    }
    params.acpi_rsdp_addr = rsdp_addr;
    let map = e820_map(mem_bytes);
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::MMIO_GAP_END;

    #[test]
    fn e820_small_guest() {
        let map = e820_map(256 << 20);
        assert_eq!(
            map,
            vec![
                E820Entry {
                    addr: 0,
                    size: EBDA_START,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: ACPI_START,
                    size: 0x20000,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: HIMEM_START,
                    size: (256 << 20) - HIMEM_START,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn e820_large_guest_has_ram_above_4g_and_none_in_the_hole() {
        let map = e820_map(8 << 30);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // Everything but the 640K..1M window is RAM.
        assert_eq!(ram, (8 << 30) - (HIMEM_START - EBDA_START));
        assert!(map
            .iter()
            .all(|e| e.addr + e.size <= MMIO_GAP_START || e.addr >= MMIO_GAP_END));
        assert_eq!(map.last().unwrap().addr, MMIO_GAP_END);
    }

    #[test]
    fn zero_page_fields() {
        let hdr = setup_header {
            header: 0x5372_6448,
            version: 0x020f,
            code32_start: 0x10_0000,
            ..Default::default()
        };
        let p = build(
            hdr,
            512 << 20,
            20,
            Some(InitrdPlacement {
                addr: 0x1f00_0000,
                size: 12345,
            }),
            0xe0000,
        );
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 21);
        assert_eq!({ p.hdr.ramdisk_image }, 0x1f00_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 12345);
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.e820_table[2].size }, (512 << 20) - HIMEM_START);
    }
}
