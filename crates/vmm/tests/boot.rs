//! End-to-end: boot Debian's stock cloud kernel in a vessel-vmm microVM with a busybox
//! initramfs that loads the virtio modules, reads a virtio-blk ext4 disk and powers off.
//!
//! These need hardware KVM, which the development machines do not have (their KVM is PVM),
//! so they are `#[ignore]`d and run inside the nested testbed:
//!
//! ```text
//! crates/vmm/testbed-e2e.sh
//! ```
//!
//! which builds this test binary on the host and runs it with `--ignored` through
//! `testbed/run`. Run by hand elsewhere (with hardware KVM), they need
//! `VESSEL_TEST_KERNEL` (a bzImage), `VESSEL_TEST_VMLINUX` (its ELF vmlinux) and
//! `VESSEL_TEST_MODULES` (its `/lib/modules/<version>`), which the testbed provides.
//! On a host without hardware KVM they fail, saying so, rather than skip.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vessel_vmm::{detect_kvm, DiskConfig, ExitReason, SerialOut, Vm, VmConfig};

/// Whole-VM limit: the testbed is TCG-emulated, so generous, but never unbounded.
const VM_TIMEOUT: Duration = Duration::from_secs(240);

fn require_hardware_kvm() {
    let kind = detect_kvm();
    assert!(
        kind.runs_stock_kernels(),
        "this end-to-end test needs hardware KVM, but this host has: {kind}.\n\
         Run it inside the nested testbed: crates/vmm/testbed-e2e.sh"
    );
}

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) => PathBuf::from(v),
        None => {
            panic!("{name} is not set: run through crates/vmm/testbed-e2e.sh (testbed/run sets it)")
        }
    }
}

/// Minimal newc cpio writer.
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Self {
        Cpio {
            buf: Vec::new(),
            ino: 1,
        }
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

const MODULES: [&str; 5] = [
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_mmio.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/char/virtio_console.ko",
];

/// An initramfs with busybox, the virtio modules and `/init` running `script`.
fn initramfs(dir: &Path, modules: &Path, script: &str) -> PathBuf {
    let mut c = Cpio::new();
    for d in ["bin", "dev", "proc", "sys", "mnt", "lib", "lib/modules"] {
        c.dir(d);
    }
    c.entry("dev/console", 0o020600, (5, 1), &[]);
    let busybox =
        fs::read("/bin/busybox").expect("busybox-static must be installed (/bin/busybox)");
    c.file("bin/busybox", 0o755, &busybox);
    for m in MODULES {
        let data = fs::read(modules.join(m)).unwrap_or_else(|e| panic!("module {m}: {e}"));
        let name = Path::new(m)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        c.file(&format!("lib/modules/{name}"), 0o644, &data);
    }
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         echo \"VESSEL-INIT uptime=$(cut -d' ' -f1 /proc/uptime)\"\n\
         for m in virtio_ring virtio virtio_mmio virtio_blk virtio_console; do insmod /lib/modules/$m.ko || echo \"VESSEL-FAIL insmod $m\"; done\n\
         i=0; while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n\
         echo \"VESSEL-UNAME $(uname -r)\"\n\
         echo \"VESSEL-NPROC $(nproc)\"\n\
         {script}\n\
         echo \"VESSEL-DONE uptime=$(cut -d' ' -f1 /proc/uptime)\"\n\
         poweroff -f\n"
    );
    c.file("init", 0o755, init.as_bytes());
    let path = dir.join("initramfs.cpio");
    fs::write(&path, c.finish()).unwrap();
    path
}

/// An ext4 image holding `hello.txt`.
fn ext4_disk(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("hello.txt"), "hello from the virtio disk\n").unwrap();
    let img = dir.join("disk.ext4");
    fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&img)
        .output()
        .expect("mkfs.ext4 (e2fsprogs) must be installed");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

struct Boot {
    reason: ExitReason,
    console: String,
    /// Host time from `Vm::run` to the init's first line on the console.
    to_init: Option<Duration>,
    total: Duration,
}

fn boot(
    kernel: PathBuf,
    vcpus: u8,
    script: &str,
    disk_read_only: bool,
) -> (Boot, tempfile::TempDir) {
    boot_with(kernel, vcpus, script, disk_read_only, None)
}

fn boot_with(
    kernel: PathBuf,
    vcpus: u8,
    script: &str,
    disk_read_only: bool,
    virtio_console: Option<std::os::fd::OwnedFd>,
) -> (Boot, tempfile::TempDir) {
    require_hardware_kvm();
    let modules = env_path("VESSEL_TEST_MODULES");
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path(), &modules, script);
    let disk = ext4_disk(dir.path());
    let console_path = dir.path().join("console.txt");
    let cfg = VmConfig {
        kernel,
        initrd: Some(initrd),
        cmdline: "console=ttyS0 reboot=acpi panic=-1 pci=off quiet rdinit=/init".into(),
        vcpus,
        memory_mib: 256,
        disks: vec![DiskConfig {
            path: disk,
            read_only: disk_read_only,
        }],
        serial: SerialOut::File(console_path.clone()),
        virtio_console,
        vsock_cid: None,
        free_page_reporting: false,
        net: vec![],
    };
    let vm = Vm::new(cfg).expect("building the VM");
    let stop = vm.stop_handle();
    let start = Instant::now();
    let runner = std::thread::spawn(move || vm.run());
    let mut to_init = None;
    while !runner.is_finished() {
        if to_init.is_none()
            && fs::read_to_string(&console_path).is_ok_and(|c| c.contains("VESSEL-INIT"))
        {
            to_init = Some(start.elapsed());
        }
        if start.elapsed() > VM_TIMEOUT {
            stop.stop();
            let _ = runner.join();
            let console = fs::read_to_string(&console_path).unwrap_or_default();
            panic!("the VM did not finish within {VM_TIMEOUT:?}; console:\n{console}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let total = start.elapsed();
    let reason = runner.join().unwrap().expect("running the VM");
    let console = fs::read_to_string(&console_path).unwrap_or_default();
    (
        Boot {
            reason,
            console,
            to_init,
            total,
        },
        dir,
    )
}

fn report(what: &str, b: &Boot) {
    let uptime = |marker: &str| {
        b.console
            .lines()
            .find_map(|l| l.split_once(marker).map(|(_, r)| r.trim().to_string()))
            .unwrap_or_default()
    };
    eprintln!(
        "[{what}] exit {:?}; host time to init {:?}, total {:?}; guest uptime at init {}, at poweroff {}",
        b.reason,
        b.to_init,
        b.total,
        uptime("VESSEL-INIT uptime="),
        uptime("VESSEL-DONE uptime="),
    );
    // Peak RSS of this process: test harness + VMM + the guest RAM the guest touched
    // (256 MiB configured).
    let hwm = fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    eprintln!("[{what}] peak RSS of the test process so far: {hwm}");
    if std::env::var_os("VESSEL_E2E_CONSOLE").is_some() {
        eprintln!("----- console -----\n{}\n-------------------", b.console);
    }
    let _ = std::io::stderr().flush();
}

fn assert_booted(b: &Boot) {
    let version = std::env::var("VESSEL_TEST_KERNEL_VERSION").unwrap_or_default();
    let c = &b.console;
    assert!(c.contains("VESSEL-INIT"), "init never ran; console:\n{c}");
    assert!(
        !c.contains("VESSEL-FAIL"),
        "a module failed to load; console:\n{c}"
    );
    assert!(
        c.contains(&format!("VESSEL-UNAME {version}")),
        "uname -r not {version}; console:\n{c}"
    );
}

#[test]
#[ignore = "needs hardware KVM: run via testbed (crates/vmm/testbed-e2e.sh)"]
fn bzimage_boots_reads_virtio_blk_and_powers_off() {
    let (b, _dir) = boot(
        env_path("VESSEL_TEST_KERNEL"),
        1,
        "mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/hello.txt",
        true,
    );
    report("bzImage, 1 vCPU", &b);
    assert_booted(&b);
    assert!(
        b.console.contains("hello from the virtio disk"),
        "disk not read; console:\n{}",
        b.console
    );
    assert!(b.console.contains("VESSEL-NPROC 1"));
    assert_eq!(b.reason, ExitReason::Shutdown, "console:\n{}", b.console);
}

#[test]
#[ignore = "needs hardware KVM: run via testbed (crates/vmm/testbed-e2e.sh)"]
fn elf_vmlinux_boots_two_vcpus_writes_the_disk_and_reboots() {
    let (b, dir) = boot(
        env_path("VESSEL_TEST_VMLINUX"),
        2,
        "mount -t ext4 /dev/vda /mnt && echo written-by-guest > /mnt/out.txt && umount /mnt && sync\n\
         reboot -f",
        false,
    );
    report("ELF vmlinux, 2 vCPUs", &b);
    assert_booted(&b);
    assert!(
        b.console.contains("VESSEL-NPROC 2"),
        "console:\n{}",
        b.console
    );
    assert_eq!(b.reason, ExitReason::Reboot, "console:\n{}", b.console);
    let out = Command::new("debugfs")
        .args(["-R", "cat /out.txt"])
        .arg(dir.path().join("disk.ext4"))
        .output()
        .expect("debugfs (e2fsprogs)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "written-by-guest"
    );
}

#[test]
#[ignore = "needs hardware KVM: run via testbed (crates/vmm/testbed-e2e.sh)"]
fn too_little_memory_is_a_clear_error_before_boot() {
    require_hardware_kvm();
    let dir = tempfile::tempdir().unwrap();
    let cfg = VmConfig {
        kernel: env_path("VESSEL_TEST_KERNEL"),
        initrd: None,
        cmdline: VmConfig::default_cmdline(),
        vcpus: 1,
        memory_mib: 16,
        disks: vec![],
        serial: SerialOut::File(dir.path().join("c.txt")),
        virtio_console: None,
        vsock_cid: None,
        free_page_reporting: false,
        net: vec![],
    };
    let err = Vm::new(cfg).unwrap_err().to_string();
    assert!(err.contains("16 MiB"), "{err}");
}

#[test]
#[ignore = "needs hardware KVM: run via testbed (crates/vmm/testbed-e2e.sh)"]
fn virtio_console_carries_bytes_both_ways() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let (host, vmm) = UnixStream::pair().unwrap();
    host.set_read_timeout(Some(VM_TIMEOUT)).unwrap();
    // The agent's pattern: the guest announces itself, the host sends a request, the
    // guest answers.
    let host_side = std::thread::spawn(move || -> std::io::Result<(String, String)> {
        let mut writer = host.try_clone()?;
        let mut reader = BufReader::new(host);
        let mut hello = String::new();
        reader.read_line(&mut hello)?;
        writer.write_all(b"ping\n")?;
        let mut answer = String::new();
        reader.read_line(&mut answer)?;
        Ok((hello, answer))
    });
    let (b, _dir) = boot_with(
        env_path("VESSEL_TEST_KERNEL"),
        1,
        "i=0; while [ ! -c /dev/hvc0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n\
         exec 3<>/dev/hvc0\n\
         stty raw -echo <&3\n\
         echo ready >&3\n\
         read -t 60 -r line <&3\n\
         echo \"pong $line\" >&3\n\
         echo \"VESSEL-GOT $line\"",
        true,
        Some(vmm.into()),
    );
    report("virtio-console", &b);
    assert_booted(&b);
    assert!(
        b.console.contains("VESSEL-GOT ping"),
        "console:\n{}",
        b.console
    );
    let (hello, answer) = host_side.join().unwrap().unwrap();
    assert_eq!(
        (hello.as_str(), answer.as_str()),
        ("ready\n", "pong ping\n")
    );
    assert_eq!(b.reason, ExitReason::Shutdown);
}
