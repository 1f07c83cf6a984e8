//! User-facing VM configuration, validated once before anything is created.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::boot::kernel::{self, KernelInfo};
use crate::error::{Error, Result};
use crate::files::{Access, OpenFiles};

/// Largest number of vCPUs a VM may have (IOAPIC/MADT ids stay below the IOAPIC's id).
pub const MAX_VCPUS: u8 = 32;
/// Smallest guest memory accepted, in MiB. A stock distribution kernel needs about this
/// much to decompress itself and reach its init.
pub const MIN_MEMORY_MIB: u32 = 64;
/// Largest guest memory accepted, in MiB (1 TiB). Guest RAM is committed lazily, so this
/// only bounds the address space reserved.
pub const MAX_MEMORY_MIB: u32 = 1024 * 1024;
/// Most virtio block devices one VM may have (one IOAPIC pin and MMIO window each; more
/// are kept for the console and the balloon).
pub const MAX_DISKS: usize = 16;
/// Most network interfaces one VM may have.
pub const MAX_NICS: usize = 1;
/// Most virtio-mmio devices of any kind: disks, the console, the NICs, the balloon.
pub(crate) const MAX_VIRTIO_DEVICES: usize = MAX_DISKS + 1 + MAX_NICS + 1;
/// Room the guest needs beyond the kernel's own decompression footprint and the initramfs
/// (page tables, early allocations), checked before boot so a too-small `--memory` fails
/// with a clear error instead of a guest panic.
const BOOT_SLACK_MIB: u64 = 24;

/// A microVM's configuration. Build it, call [`VmConfig::validate`] (or let
/// [`crate::Vm::new`] do it), then boot it.
#[derive(Debug)]
pub struct VmConfig {
    /// Guest kernel: an x86_64 bzImage (e.g. Debian's `/boot/vmlinuz-*`) or ELF vmlinux.
    pub kernel: PathBuf,
    /// Optional initramfs (any format the kernel accepts: cpio, compressed cpio).
    pub initrd: Option<PathBuf>,
    /// Kernel command line. Include `console=ttyS0` to see the kernel's console on the
    /// serial output. See [`VmConfig::default_cmdline`].
    pub cmdline: String,
    /// Number of vCPUs, 1..=[`MAX_VCPUS`].
    pub vcpus: u8,
    /// Guest RAM in MiB, [`MIN_MEMORY_MIB`]..=[`MAX_MEMORY_MIB`].
    pub memory_mib: u32,
    /// virtio-blk disks, in order: the first is `/dev/vda` in the guest.
    pub disks: Vec<DiskConfig>,
    /// Where the guest's COM1 output goes.
    pub serial: SerialOut,
    /// A connected stream (e.g. one end of `UnixStream::pair()`) bridged to the guest's
    /// `/dev/hvc0` (virtio-console; the guest needs the `virtio_console` module). Raw bytes
    /// both ways: the guest agent's control channel. The guest should put hvc0 in raw mode
    /// (it is a tty, echo on by default).
    pub virtio_console: Option<OwnedFd>,
    /// A virtio-balloon device that takes back the guest's free pages: the guest kernel
    /// reports free page blocks (it needs the `virtio_balloon` module and
    /// `CONFIG_PAGE_REPORTING`) and the VMM drops them from guest RAM, so an idle guest
    /// holds little host memory beyond what it uses.
    pub free_page_reporting: bool,
    /// Guest vsock context id (not implemented yet: must be `None`).
    pub vsock_cid: Option<u32>,
    /// Network interfaces (virtio-net over a tap), at most [`MAX_NICS`]; the first is
    /// `eth0` in the guest (which needs the `virtio_net` module).
    pub net: Vec<NetConfig>,
}

/// One virtio-blk disk backed by a raw image file or block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Raw disk image (regular file or block device). Its size is truncated down to a
    /// multiple of 512 bytes.
    pub path: PathBuf,
    /// Expose the disk read-only (`VIRTIO_BLK_F_RO`); guest writes fail with an I/O error
    /// and the file is opened read-only, so one image can back many VMs.
    pub read_only: bool,
}

/// A virtio-net interface backed by a tap device.
#[derive(Debug)]
pub struct NetConfig {
    /// A queue descriptor of a tap opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (the
    /// VMM sets its vnet header size). Whoever creates the tap non-persistent makes it
    /// vanish with the VMM process, however that ends.
    pub tap: OwnedFd,
    /// The guest interface's MAC address (unicast, e.g. locally administered `02:...`).
    pub mac: [u8; 6],
    /// The link's MTU (the tap's), told to the guest driver (`VIRTIO_NET_F_MTU`); at
    /// least 68, as IPv4 needs.
    pub mtu: u16,
}

/// Destination of the guest's serial console (COM1) output.
#[derive(Debug)]
pub enum SerialOut {
    /// Append to this file (created if missing), capped at 1 MiB: past that it starts
    /// over with a marker line and the last 64 KiB of output.
    File(PathBuf),
    /// The VMM process's standard output.
    Stdout,
    /// An already open file descriptor (pipe, pty, file).
    Fd(OwnedFd),
    /// Drop all output.
    Discard,
}

impl SerialOut {
    /// The log file's path, if the output goes to one.
    fn file(&self) -> Option<&Path> {
        match self {
            SerialOut::File(p) => Some(p),
            _ => None,
        }
    }
}

/// What validation learned about the inputs, kept so [`crate::Vm::new`] does not look
/// twice.
#[derive(Debug, Clone)]
pub(crate) struct Validated {
    pub kernel: KernelInfo,
}

impl VmConfig {
    /// A command line suitable for the stock Debian cloud kernel on this machine:
    /// console on COM1, no PCI scan, panic reboots at once (which ends [`crate::Vm::run`]
    /// with [`crate::ExitReason::Reboot`]), quiet.
    ///
    /// The rest keeps the host memory an idle guest commits low (each measured with
    /// `bench/vm-memory`, a 512 MiB guest of Linux 6.1):
    /// - `init_on_alloc=0`: Debian builds with `INIT_ON_ALLOC_DEFAULT_ON`, which zeroes
    ///   every page the guest allocates and so commits host memory for pages that were
    ///   only allocated (guest RAM starts zeroed anyway; a microVM runs one workload).
    /// - `initcall_blacklist=tracer_init_tracefs`: no tracefs tree. Linux before 6.6
    ///   creates an inode and a dentry for every file of every trace event at boot,
    ///   about 10,000 of them: 8.7 MiB of slab, held for the guest's life. The kernel's
    ///   tracing itself is untouched; only its files are not there.
    /// - `cgroup.memory=nokmem`: no kernel-memory accounting by memory cgroups, which
    ///   nothing in the guest uses (the VM's size is its limit). With it on, the first
    ///   per-CPU chunk allocated at run time carries a 4 MiB, zeroed, array of owners.
    /// - `dhash_entries=8192 ihash_entries=8192`: dentry and inode hash tables sized for
    ///   one workload's files rather than for the RAM (Linux gives a 512 MiB guest 64Ki
    ///   and 32Ki buckets, 768 KiB allocated at boot); a workload with very many files
    ///   pays with longer hash chains.
    pub fn default_cmdline() -> String {
        concat!(
            "console=ttyS0 reboot=acpi panic=-1 pci=off nomodeset quiet init_on_alloc=0",
            " initcall_blacklist=tracer_init_tracefs cgroup.memory=nokmem",
            " dhash_entries=8192 ihash_entries=8192"
        )
        .to_string()
    }

    /// Checks the whole configuration without side effects: the kernel exists and is an
    /// x86_64 bzImage or ELF, the initramfs and disks can be opened, memory and vCPU counts
    /// are in range and memory can hold kernel plus initramfs, the command line fits.
    pub fn validate(&self) -> Result<()> {
        self.inspect(&OpenFiles::host()).map(|_| ())
    }

    /// [`VmConfig::validate`] with the files in `files`.
    pub(crate) fn inspect(&self, files: &OpenFiles) -> Result<Validated> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(Error::VcpuCount {
                vcpus: self.vcpus,
                max: MAX_VCPUS,
            });
        }
        if self.memory_mib < MIN_MEMORY_MIB || self.memory_mib > MAX_MEMORY_MIB {
            return Err(Error::Memory {
                memory_mib: self.memory_mib,
                reason: format!("must be between {MIN_MEMORY_MIB} MiB and {MAX_MEMORY_MIB} MiB"),
            });
        }

        let kernel = kernel::inspect(&self.kernel, files)?;

        if self.cmdline.as_bytes().contains(&0) {
            return Err(Error::Cmdline {
                reason: "contains a NUL byte".into(),
            });
        }
        // The kernel copies at most cmdline_size bytes; a longer line would be cut silently.
        if self.cmdline.len() > kernel.cmdline_max as usize {
            return Err(Error::Cmdline {
                reason: format!(
                    "{} bytes long, the kernel accepts at most {}",
                    self.cmdline.len(),
                    kernel.cmdline_max
                ),
            });
        }

        let initrd_size = match &self.initrd {
            None => 0,
            Some(path) => {
                let meta = files
                    .open(path, Access::Read)
                    .and_then(|f| f.metadata())
                    .map_err(|source| Error::InitrdRead {
                        path: path.clone(),
                        source,
                    })?;
                if !meta.is_file() {
                    return Err(Error::InitrdRead {
                        path: path.clone(),
                        source: std::io::Error::other("not a regular file"),
                    });
                }
                meta.len()
            }
        };

        let mem_bytes = u64::from(self.memory_mib) << 20;
        let needed =
            kernel::KERNEL_LOAD_ADDR + kernel.footprint + initrd_size + (BOOT_SLACK_MIB << 20);
        if needed > mem_bytes {
            return Err(Error::Memory {
                memory_mib: self.memory_mib,
                reason: format!(
                    "too small for this kernel ({} MiB to decompress) and initramfs ({} MiB): \
                     give at least {} MiB",
                    kernel.footprint >> 20,
                    initrd_size >> 20,
                    needed.div_ceil(1 << 20).max(u64::from(MIN_MEMORY_MIB))
                ),
            });
        }

        if self.disks.len() > MAX_DISKS {
            return Err(Error::Unsupported {
                what: format!("{} disks (at most {MAX_DISKS})", self.disks.len()),
            });
        }
        for disk in &self.disks {
            check_disk(disk, files)?;
        }

        if let Some(path) = self.serial.file().filter(|_| !files.only_handed_over()) {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(parent) = parent {
                if !parent.is_dir() {
                    return Err(Error::SerialOutput {
                        path: path.to_path_buf(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("directory {} does not exist", parent.display()),
                        ),
                    });
                }
            }
        }
        if let Some(cid) = self.vsock_cid {
            return Err(Error::Unsupported {
                what: format!("vsock (guest CID {cid})"),
            });
        }
        if self.net.len() > MAX_NICS {
            return Err(Error::Unsupported {
                what: format!("{} network interfaces (at most {MAX_NICS})", self.net.len()),
            });
        }
        for net in &self.net {
            if net.mac[0] & 1 != 0 || net.mac == [0; 6] {
                return Err(Error::Unsupported {
                    what: format!(
                        "MAC address {} (not a unicast address)",
                        net.mac.map(|b| format!("{b:02x}")).join(":")
                    ),
                });
            }
            if net.mtu < 68 {
                return Err(Error::Unsupported {
                    what: format!("network MTU {} (IPv4 needs at least 68)", net.mtu),
                });
            }
        }
        Ok(Validated { kernel })
    }
}

/// Opens the disk the way the device will and returns its usable size in bytes.
fn check_disk(disk: &DiskConfig, files: &OpenFiles) -> Result<u64> {
    let err = |reason: String| Error::Disk {
        path: disk.path.clone(),
        reason,
    };
    let file = open_disk(disk, files)
        .map_err(|e| err(format!("cannot open it {}: {e}", mode(disk.read_only))))?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot stat it: {e}")))?;
    let ft = meta.file_type();
    let size = if ft.is_file() {
        meta.len()
    } else if ft.is_block_device() {
        use std::io::Seek;
        let mut f = &file;
        f.seek(std::io::SeekFrom::End(0))
            .map_err(|e| err(format!("cannot get block device size: {e}")))?
    } else {
        return Err(err("not a regular file or block device".into()));
    };
    if size < 512 {
        return Err(err(format!(
            "{size} bytes is smaller than one 512-byte sector"
        )));
    }
    Ok(size)
}

fn mode(read_only: bool) -> &'static str {
    if read_only {
        "read-only"
    } else {
        "read-write"
    }
}

/// The disk's file, opened as the device uses it.
pub(crate) fn open_disk(disk: &DiskConfig, files: &OpenFiles) -> std::io::Result<File> {
    let access = if disk.read_only {
        Access::Read
    } else {
        Access::ReadWrite
    };
    files.open(&disk.path, access)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::kernel::tests::fake_bzimage;
    use std::fs;

    fn base(dir: &tempfile::TempDir) -> VmConfig {
        let kernel = dir.path().join("vmlinuz");
        fs::write(&kernel, fake_bzimage(16 << 20)).unwrap();
        VmConfig {
            kernel,
            initrd: None,
            cmdline: VmConfig::default_cmdline(),
            vcpus: 1,
            memory_mib: 128,
            disks: vec![],
            serial: SerialOut::Discard,
            virtio_console: None,
            vsock_cid: None,
            free_page_reporting: false,
            net: vec![],
        }
    }

    #[test]
    fn accepts_a_sane_config() {
        let dir = tempfile::tempdir().unwrap();
        base(&dir).validate().unwrap();
    }

    #[test]
    fn rejects_missing_kernel_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = base(&dir);
        cfg.kernel = dir.path().join("nope");
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn rejects_corrupt_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = base(&dir);
        fs::write(&cfg.kernel, vec![0x55u8; 8192]).unwrap();
        let err = cfg.validate().unwrap_err();
        assert!(matches!(err, Error::KernelFormat { .. }), "{err}");
        cfg.kernel = dir.path().join("short");
        fs::write(&cfg.kernel, b"MZ").unwrap();
        assert!(matches!(
            cfg.validate().unwrap_err(),
            Error::KernelFormat { .. }
        ));
    }

    #[test]
    fn rejects_bad_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = base(&dir);
        cfg.vcpus = 0;
        assert!(matches!(
            cfg.validate(),
            Err(Error::VcpuCount { vcpus: 0, .. })
        ));
        cfg.vcpus = MAX_VCPUS + 1;
        assert!(matches!(cfg.validate(), Err(Error::VcpuCount { .. })));
        cfg.vcpus = 1;
        cfg.memory_mib = 8;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("8 MiB"), "{err}");
    }

    #[test]
    fn rejects_memory_too_small_for_kernel_and_initrd() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = base(&dir);
        let initrd = dir.path().join("initrd");
        let f = File::create(&initrd).unwrap();
        f.set_len(100 << 20).unwrap();
        cfg.initrd = Some(initrd);
        cfg.memory_mib = 128;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("give at least"), "{err}");
        cfg.memory_mib = 256;
        cfg.validate().unwrap();
    }

    #[test]
    fn rejects_bad_cmdline_and_disks() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = base(&dir);
        cfg.cmdline = "a".repeat(5000);
        assert!(matches!(cfg.validate(), Err(Error::Cmdline { .. })));
        cfg.cmdline = "a\0b".into();
        assert!(matches!(cfg.validate(), Err(Error::Cmdline { .. })));
        cfg.cmdline = String::new();
        let disk = dir.path().join("disk.img");
        fs::write(&disk, [0u8; 100]).unwrap();
        cfg.disks = vec![DiskConfig {
            path: disk.clone(),
            read_only: true,
        }];
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("disk.img") && err.contains("512"), "{err}");
        fs::write(&disk, [0u8; 4096]).unwrap();
        cfg.validate().unwrap();
        cfg.disks[0].path = dir.path().to_path_buf();
        assert!(matches!(cfg.validate(), Err(Error::Disk { .. })));
    }

    #[test]
    fn rejects_unimplemented_options() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = base(&dir);
        cfg.vsock_cid = Some(3);
        assert!(matches!(cfg.validate(), Err(Error::Unsupported { .. })));
        cfg.vsock_cid = None;
        let fd = || OwnedFd::from(File::open("/dev/null").unwrap());
        cfg.net = vec![NetConfig {
            tap: fd(),
            mac: [0x03, 0, 0, 0, 0, 1],
            mtu: 1500,
        }];
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("03:00:00:00:00:01"), "{err}");
        cfg.net[0].mac = [0x02, 0, 0, 0, 0, 1];
        cfg.validate().unwrap();
        cfg.net[0].mtu = 67;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("MTU 67"), "{err}");
        cfg.net[0].mtu = 65535;
        cfg.validate().unwrap();
        cfg.net.push(NetConfig {
            tap: fd(),
            mac: [0x02, 0, 0, 0, 0, 2],
            mtu: 1500,
        });
        assert!(matches!(cfg.validate(), Err(Error::Unsupported { .. })));
    }
}
