//! Putting the guest's software into its memory: kernel, initramfs, command line.

pub(crate) mod kernel;

use std::path::Path;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::{CMDLINE_START, EBDA_START};
use crate::error::{Error, Result};
use crate::files::{Access, OpenFiles};

/// Where the initramfs was put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InitrdPlacement {
    pub addr: u64,
    pub size: u64,
}

/// Chooses the initramfs address: page aligned, as high as possible below both the top of
/// low RAM and the kernel's `initrd_addr_max`, and above everything the kernel occupies
/// while decompressing (`kernel_end`).
pub(crate) fn place_initrd(
    size: u64,
    lowmem_top: u64,
    initrd_addr_max: u64,
    kernel_end: u64,
) -> Option<u64> {
    let limit = lowmem_top.min(initrd_addr_max.saturating_add(1));
    let addr = limit.checked_sub(size)? & !0xfff;
    (addr >= kernel_end).then_some(addr)
}

/// Copies the initramfs into guest memory at a place chosen by [`place_initrd`].
pub(crate) fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    files: &OpenFiles,
    lowmem_top: u64,
    initrd_addr_max: u64,
    kernel_end: u64,
) -> Result<InitrdPlacement> {
    let read_err = |source| Error::InitrdRead {
        path: path.to_path_buf(),
        source,
    };
    let mut file = files.open(path, Access::Read).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let addr = place_initrd(size, lowmem_top, initrd_addr_max, kernel_end).ok_or_else(|| {
        Error::Memory {
            memory_mib: u32::try_from(lowmem_top >> 20).unwrap_or(u32::MAX),
            reason: format!(
                "initramfs {} ({} bytes) does not fit above the kernel (which ends at {:#x})",
                path.display(),
                size,
                kernel_end
            ),
        }
    })?;
    let len = usize::try_from(size).map_err(|_| Error::boot("initramfs larger than usize"))?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|e| Error::GuestMemory {
            what: format!("copying initramfs {} to {addr:#x}", path.display()),
            reason: e.to_string(),
        })?;
    Ok(InitrdPlacement { addr, size })
}

/// Writes the NUL-terminated command line at [`CMDLINE_START`].
pub(crate) fn load_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<()> {
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    if CMDLINE_START + bytes.len() as u64 > EBDA_START {
        return Err(Error::Cmdline {
            reason: format!("{} bytes do not fit in the boot area", cmdline.len()),
        });
    }
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|e| Error::GuestMemory {
            what: "writing the kernel command line".into(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_goes_high_and_aligned() {
        let top = 256 << 20;
        let addr = place_initrd(10_000, top, 0x7fff_ffff, 40 << 20).unwrap();
        assert_eq!(addr % 4096, 0);
        assert!(addr + 10_000 <= top);
        assert!(top - addr < 10_000 + 4096);
    }

    #[test]
    fn initrd_respects_addr_max_and_kernel_end() {
        let addr = place_initrd(4096, 3 << 30, (1 << 30) - 1, 0).unwrap();
        assert_eq!(addr, (1 << 30) - 4096);
        assert_eq!(
            place_initrd(200 << 20, 256 << 20, u64::MAX, 100 << 20),
            None
        );
        assert_eq!(place_initrd(u64::MAX, 256 << 20, u64::MAX, 0), None);
    }
}
