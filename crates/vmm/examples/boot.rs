//! Boot a kernel by hand:
//!
//! ```text
//! cargo run -p vessel-vmm --example boot -- --kernel /boot/vmlinuz --initrd initrd.cpio \
//!     --cmdline "console=ttyS0 panic=-1 pci=off" --mem 256 --vcpus 1 \
//!     --disk disk.img --disk-ro base.img --serial out.txt
//! ```
//!
//! Without `--serial` the console goes to stdout. Exits 0 when the guest powers off, 1 on
//! reboot, 2 on a crash, 125 if the VM could not be built.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use vessel_vmm::{detect_kvm, DiskConfig, ExitReason, SerialOut, Vm, VmConfig};

#[derive(Parser)]
#[command(about = "Boot a Linux kernel in a vessel-vmm microVM")]
struct Args {
    /// Kernel image (bzImage or ELF vmlinux).
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line (default: vessel's).
    #[arg(long)]
    cmdline: Option<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    mem: u32,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Read-write raw disk image (repeatable; first is /dev/vda).
    #[arg(long)]
    disk: Vec<PathBuf>,
    /// Read-only raw disk image (repeatable; after the --disk ones).
    #[arg(long = "disk-ro")]
    disk_ro: Vec<PathBuf>,
    /// Write the serial console to this file instead of stdout.
    #[arg(long)]
    serial: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let kind = detect_kvm();
    if !kind.runs_stock_kernels() {
        eprintln!("warning: {kind}");
    }
    let disks = args
        .disk
        .into_iter()
        .map(|path| DiskConfig {
            path,
            read_only: false,
        })
        .chain(args.disk_ro.into_iter().map(|path| DiskConfig {
            path,
            read_only: true,
        }))
        .collect();
    let cfg = VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline.unwrap_or_else(VmConfig::default_cmdline),
        vcpus: args.vcpus,
        memory_mib: args.mem,
        disks,
        serial: args.serial.map_or(SerialOut::Stdout, SerialOut::File),
        virtio_console: None,
        vsock_cid: None,
        free_page_reporting: false,
        net: vec![],
    };
    let start = Instant::now();
    let vm = match Vm::new(cfg) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("boot: {e}");
            return ExitCode::from(125);
        }
    };
    let built = start.elapsed();
    let reason = match vm.run() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("boot: {e}");
            return ExitCode::from(125);
        }
    };
    eprintln!(
        "boot: guest exited: {reason:?} (VM built in {built:?}, ran {:?})",
        start.elapsed() - built
    );
    ExitCode::from(match reason {
        ExitReason::Shutdown | ExitReason::Stopped => 0,
        ExitReason::Reboot => 1,
        ExitReason::Crashed(_) => 2,
    })
}
