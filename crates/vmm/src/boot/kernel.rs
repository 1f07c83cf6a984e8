//! Kernel images: recognising an x86_64 bzImage or ELF vmlinux before boot, and loading
//! it with `linux-loader` for the Linux 64-bit boot protocol.

use std::io::Read;
use std::path::Path;

use linux_loader::loader::bootparam::{setup_header, XLF_KERNEL_64};
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::HIMEM_START;
use crate::error::{Error, Result};
use crate::files::{Access, OpenFiles};

/// Where a bzImage's protected-mode part is loaded (its default `code32_start`).
pub(crate) const KERNEL_LOAD_ADDR: u64 = HIMEM_START;
/// Offset of `startup_64` in a bzImage's protected-mode part (64-bit boot protocol).
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// "HdrS", the setup header magic.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Setup header fields used below, as offsets into the image.
const OFF_SETUP_SECTS: usize = 0x1f1;
const OFF_BOOT_FLAG: usize = 0x1fe;
const OFF_HEADER: usize = 0x202;
const OFF_VERSION: usize = 0x206;
const OFF_LOADFLAGS: usize = 0x211;
const OFF_INITRD_ADDR_MAX: usize = 0x22c;
const OFF_XLOADFLAGS: usize = 0x236;
const OFF_CMDLINE_SIZE: usize = 0x238;
const OFF_INIT_SIZE: usize = 0x260;
const SETUP_HEADER_END: usize = 0x268;
/// Boot protocol 2.12 added `xloadflags`, which says whether the 64-bit entry exists.
const MIN_BOOT_PROTOCOL: u16 = 0x020c;
/// Command line limit for kernels that do not state one.
const DEFAULT_CMDLINE_MAX: u32 = 2047;
/// `initrd_addr_max` for ELF kernels, which carry no setup header.
const ELF_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;

/// Kind of kernel image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KernelFormat {
    /// Compressed bzImage (`/boot/vmlinuz-*`): the kernel decompresses itself.
    BzImage,
    /// Uncompressed ELF `vmlinux`.
    Elf,
}

/// What boot needs to know about a kernel image, read from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelInfo {
    pub format: KernelFormat,
    /// Bytes of memory the kernel occupies from its load address while it decompresses
    /// and starts (bzImage `init_size`, or ELF segment span).
    pub footprint: u64,
    /// Longest command line the kernel copies.
    pub cmdline_max: u32,
    /// Highest address the initramfs may end at.
    pub initrd_addr_max: u64,
}

/// A kernel copied into guest memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadedKernel {
    /// 64-bit entry point (`startup_64`).
    pub entry: GuestAddress,
    /// Setup header to put in the zero page.
    pub header: setup_header,
    /// First address the kernel no longer needs while decompressing and starting.
    pub end: u64,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Parses the start of a kernel image (at least 4 KiB of it, fewer if the file is
/// shorter) plus its total length.
pub(crate) fn parse(head: &[u8], file_len: u64) -> std::result::Result<KernelInfo, String> {
    if head.len() >= 4 && head[..4] == *b"\x7fELF" {
        return parse_elf(head);
    }
    if head.len() < SETUP_HEADER_END {
        return Err(format!(
            "{file_len} bytes is too short to be a kernel (no bzImage setup header, no ELF magic)"
        ));
    }
    if u32_at(head, OFF_HEADER) != HDRS_MAGIC || u16_at(head, OFF_BOOT_FLAG) != 0xaa55 {
        return Err("neither a bzImage (no \"HdrS\" setup header) nor an ELF vmlinux".into());
    }
    let version = u16_at(head, OFF_VERSION);
    if version < MIN_BOOT_PROTOCOL {
        return Err(format!(
            "boot protocol {}.{:02} is too old: 2.12 or newer is needed for 64-bit boot",
            version >> 8,
            version & 0xff
        ));
    }
    if head[OFF_LOADFLAGS] & 1 == 0 {
        return Err("a zImage (not loaded high); a bzImage is needed".into());
    }
    if u16_at(head, OFF_XLOADFLAGS) & XLF_KERNEL_64 == 0 {
        return Err("not a 64-bit kernel (no 64-bit entry point in xloadflags)".into());
    }
    let setup_sects = match head[OFF_SETUP_SECTS] {
        0 => 4,
        n => u64::from(n),
    };
    let setup_size = (setup_sects + 1) * 512;
    if file_len <= setup_size {
        return Err(format!(
            "truncated: {file_len} bytes, but the setup code alone takes {setup_size}"
        ));
    }
    let payload = file_len - setup_size;
    let init_size = u64::from(u32_at(head, OFF_INIT_SIZE));
    let cmdline_max = match u32_at(head, OFF_CMDLINE_SIZE) {
        0 => DEFAULT_CMDLINE_MAX,
        n => n,
    };
    Ok(KernelInfo {
        format: KernelFormat::BzImage,
        footprint: init_size.max(payload),
        cmdline_max,
        initrd_addr_max: u64::from(u32_at(head, OFF_INITRD_ADDR_MAX)),
    })
}

fn parse_elf(head: &[u8]) -> std::result::Result<KernelInfo, String> {
    const EM_X86_64: u16 = 62;
    const PT_LOAD: u32 = 1;
    if head.len() < 64 {
        return Err("ELF header truncated".into());
    }
    if head[4] != 2 || head[5] != 1 {
        return Err("ELF image is not 64-bit little-endian".into());
    }
    let machine = u16_at(head, 0x12);
    if machine != EM_X86_64 {
        return Err(format!(
            "ELF image is for machine {machine}, not x86_64 (62)"
        ));
    }
    let entry = u64_at(head, 0x18);
    if entry < HIMEM_START {
        return Err(format!(
            "ELF entry point {entry:#x} is below 1 MiB: not a Linux vmlinux"
        ));
    }
    let phoff = usize::try_from(u64_at(head, 0x20)).map_err(|_| "bad e_phoff")?;
    let phentsize = usize::from(u16_at(head, 0x36));
    let phnum = usize::from(u16_at(head, 0x38));
    let mut end = 0u64;
    for i in 0..phnum {
        let off = phoff
            .checked_add(i.checked_mul(phentsize).ok_or("bad program headers")?)
            .ok_or("bad program headers")?;
        if phentsize < 56 || off + 56 > head.len() {
            return Err("ELF program headers are not within the first 4 KiB".into());
        }
        if u32_at(head, off) != PT_LOAD {
            continue;
        }
        let paddr = u64_at(head, off + 0x18);
        let memsz = u64_at(head, off + 0x28);
        end = end.max(paddr.checked_add(memsz).ok_or("ELF segment overflows")?);
    }
    if end <= HIMEM_START {
        return Err("ELF image has no loadable segment above 1 MiB".into());
    }
    Ok(KernelInfo {
        format: KernelFormat::Elf,
        footprint: end - KERNEL_LOAD_ADDR,
        cmdline_max: DEFAULT_CMDLINE_MAX,
        initrd_addr_max: ELF_INITRD_ADDR_MAX,
    })
}

/// Reads and checks a kernel image's header.
pub(crate) fn inspect(path: &Path, files: &OpenFiles) -> Result<KernelInfo> {
    let read_err = |source| Error::KernelRead {
        path: path.to_path_buf(),
        source,
    };
    let file = files.open(path, Access::Read).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::other("not a regular file")));
    }
    let mut head = Vec::with_capacity(4096);
    file.take(4096).read_to_end(&mut head).map_err(read_err)?;
    parse(&head, meta.len()).map_err(|reason| Error::KernelFormat {
        path: path.to_path_buf(),
        reason,
    })
}

/// Loads the kernel into guest memory and returns its entry point and setup header.
pub(crate) fn load(
    mem: &GuestMemoryMmap,
    path: &Path,
    info: &KernelInfo,
    files: &OpenFiles,
) -> Result<LoadedKernel> {
    let mut file = files
        .open(path, Access::Read)
        .map_err(|source| Error::KernelRead {
            path: path.to_path_buf(),
            source,
        })?;
    let load_err = |e: linux_loader::loader::Error| Error::KernelLoad {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    match info.format {
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            let header = r.setup_header.ok_or_else(|| Error::KernelLoad {
                path: path.to_path_buf(),
                reason: "loader returned no setup header".into(),
            })?;
            Ok(LoadedKernel {
                entry: GuestAddress(r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
                header,
                end: r.kernel_load.0 + info.footprint,
            })
        }
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            // A vmlinux has no setup header; fill in what the kernel reads from ours.
            let header = setup_header {
                boot_flag: 0xaa55,
                header: HDRS_MAGIC,
                version: 0x020f,
                kernel_alignment: 0x0100_0000,
                cmdline_size: DEFAULT_CMDLINE_MAX,
                initrd_addr_max: ELF_INITRD_ADDR_MAX as u32,
                ..Default::default()
            };
            Ok(LoadedKernel {
                entry: r.kernel_load,
                header,
                end: r.kernel_end,
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal bzImage: a setup header with the given `init_size` and a small payload.
    pub(crate) fn fake_bzimage(init_size: u32) -> Vec<u8> {
        let mut img = vec![0u8; 5 * 512 + 4096];
        img[OFF_SETUP_SECTS] = 4;
        img[OFF_BOOT_FLAG..OFF_BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[OFF_HEADER..OFF_HEADER + 4].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        img[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        img[OFF_LOADFLAGS] = 1;
        img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        img[OFF_INITRD_ADDR_MAX..OFF_INITRD_ADDR_MAX + 4]
            .copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        img[OFF_XLOADFLAGS..OFF_XLOADFLAGS + 2].copy_from_slice(&3u16.to_le_bytes());
        img[OFF_CMDLINE_SIZE..OFF_CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
        img[OFF_INIT_SIZE..OFF_INIT_SIZE + 4].copy_from_slice(&init_size.to_le_bytes());
        img
    }

    #[test]
    fn parses_a_bzimage_header() {
        let img = fake_bzimage(30 << 20);
        let info = parse(&img, img.len() as u64).unwrap();
        assert_eq!(info.format, KernelFormat::BzImage);
        assert_eq!(info.footprint, 30 << 20);
        assert_eq!(info.cmdline_max, 2047);
        assert_eq!(info.initrd_addr_max, 0x7fff_ffff);
    }

    #[test]
    fn rejects_32bit_old_and_truncated_bzimages() {
        let mut img = fake_bzimage(1 << 20);
        img[OFF_XLOADFLAGS] = 0;
        assert!(parse(&img, img.len() as u64)
            .unwrap_err()
            .contains("64-bit"));
        let mut img = fake_bzimage(1 << 20);
        img[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&0x0204u16.to_le_bytes());
        assert!(parse(&img, img.len() as u64).unwrap_err().contains("2.04"));
        let img = fake_bzimage(1 << 20);
        assert!(parse(&img, 5 * 512).unwrap_err().contains("truncated"));
        assert!(parse(b"hello", 5).unwrap_err().contains("too short"));
    }

    fn fake_elf(machine: u16, entry: u64, paddr: u64, memsz: u64) -> Vec<u8> {
        let mut img = vec![0u8; 4096];
        img[..4].copy_from_slice(b"\x7fELF");
        img[4] = 2;
        img[5] = 1;
        img[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        img[0x18..0x20].copy_from_slice(&entry.to_le_bytes());
        img[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        img[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        img[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        img[64..68].copy_from_slice(&1u32.to_le_bytes());
        img[64 + 0x18..64 + 0x20].copy_from_slice(&paddr.to_le_bytes());
        img[64 + 0x28..64 + 0x30].copy_from_slice(&memsz.to_le_bytes());
        img
    }

    #[test]
    fn parses_elf_vmlinux_and_rejects_other_machines() {
        let img = fake_elf(62, 0x100_0000, 0x100_0000, 40 << 20);
        let info = parse(&img, 4096).unwrap();
        assert_eq!(info.format, KernelFormat::Elf);
        assert_eq!(info.footprint, 0x100_0000 + (40 << 20) - KERNEL_LOAD_ADDR);
        let img = fake_elf(183, 0x100_0000, 0x100_0000, 1 << 20);
        assert!(parse(&img, 4096).unwrap_err().contains("183"));
        let img = fake_elf(62, 0x1000, 0x1000, 1 << 20);
        assert!(parse(&img, 4096).unwrap_err().contains("below 1 MiB"));
        let mut img = fake_elf(62, 0x100_0000, 0x100_0000, 1 << 20);
        img[0x38..0x3a].copy_from_slice(&200u16.to_le_bytes());
        assert!(parse(&img, 4096).is_err());
        let mut img = fake_elf(62, 0x100_0000, u64::MAX, 2);
        img[0x38] = 1;
        assert!(parse(&img, 4096).is_err());
    }

    #[test]
    fn real_debian_kernels_if_present() {
        // Exercised when testbed/run has cached Debian kernels (.testbed-cache/kernels).
        let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.testbed-cache/kernels");
        let Ok(pkgs) = std::fs::read_dir(&cache) else {
            return;
        };
        for pkg in pkgs.flatten() {
            let Ok(files) = std::fs::read_dir(pkg.path().join("boot")) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let want = if name.starts_with("vmlinuz-") {
                    KernelFormat::BzImage
                } else if name.starts_with("vmlinux-") {
                    KernelFormat::Elf
                } else {
                    continue;
                };
                let info = inspect(&f.path(), &OpenFiles::host()).unwrap();
                assert_eq!(info.format, want, "{name}");
                assert!(info.footprint > 8 << 20, "{name}: {info:?}");
            }
        }
    }
}
