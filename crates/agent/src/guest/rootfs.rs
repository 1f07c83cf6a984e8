//! Early boot and the container's root: kernel file systems, modules, the root built from
//! the VM's disks, and the switch into it.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use vessel_agent::initramfs::{MODULES_DIR, MODULES_ORDER};
use vessel_agent::protocol::GuestConfig;

use super::sys::{self, check, ensure_dir, mount};

/// The image's root file system (ext4), attached read-only by the host.
const IMAGE_DISK: &str = "/dev/vda";
/// The VM's writable scratch disk (ext4): the overlay's upper and work directories.
const SCRATCH_DISK: &str = "/dev/vdb";
/// How long a virtio disk may take to appear after its driver loaded.
const DEVICE_WAIT: Duration = Duration::from_secs(10);

/// `finit_module` flag: the file is compressed; the kernel decompresses it (5.17+).
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// Mounts `/proc`, `/sys` and `/dev` (devtmpfs, where the drivers' nodes appear) in the
/// initramfs.
pub fn mount_early() -> io::Result<()> {
    mount("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, "")?;
    mount("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, "")?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")
}

/// Loads the initramfs's modules in the order of `/modules.order`, then deletes the files
/// (the initramfs stays in RAM for the VM's life).
pub fn load_modules() -> io::Result<()> {
    let order = fs::read_to_string(format!("/{MODULES_ORDER}"))
        .map_err(|e| io::Error::new(e.kind(), format!("read /{MODULES_ORDER}: {e}")))?;
    for name in order.lines().filter(|l| !l.is_empty()) {
        let path = format!("/{MODULES_DIR}/{name}");
        let file =
            File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("open {path}: {e}")))?;
        let flags = if name.ends_with(".ko") {
            0
        } else {
            MODULE_INIT_COMPRESSED_FILE
        };
        // SAFETY: finit_module reads the open file and an empty, NUL-terminated parameter
        // string; no memory of ours is written.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                file.as_raw_fd(),
                c"".as_ptr(),
                flags,
            )
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            // Built into this kernel, or loaded already: fine.
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::new(e.kind(), format!("load module {name}: {e}")));
            }
        }
        drop(file);
        let _ = fs::remove_file(&path);
    }
    Ok(())
}

/// Builds the container's root at `/newroot` from the disks, with its kernel file systems
/// and `/etc/hostname` + `/etc/hosts`, then makes it `/`. With `export_changes`, returns
/// the overlay's upper directory, open (it is out of reach once the root is switched).
pub fn enter_root(cfg: &GuestConfig) -> io::Result<Option<File>> {
    sys::wait_for(IMAGE_DISK, DEVICE_WAIT)?;
    let mut upper = None;
    if cfg.read_only {
        if cfg.export_changes {
            return Err(io::Error::other(
                "a read-only root has no changes to export",
            ));
        }
        mount(IMAGE_DISK, "/newroot", "ext4", libc::MS_RDONLY, "")?;
    } else {
        sys::wait_for(SCRATCH_DISK, DEVICE_WAIT)?;
        mount(IMAGE_DISK, "/mnt/lower", "ext4", libc::MS_RDONLY, "")?;
        mount(SCRATCH_DISK, "/mnt/rw", "ext4", 0, "")?;
        ensure_dir("/mnt/rw/upper")?;
        ensure_dir("/mnt/rw/work")?;
        mount(
            "overlay",
            "/newroot",
            "overlay",
            0,
            "lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work",
        )?;
        if cfg.export_changes {
            upper = Some(File::open("/mnt/rw/upper")?);
        }
    }

    // Mount points the image lacks are created when the root is writable; a read-only
    // root without them fails here, naming the directory.
    let point = |p: &str| -> io::Result<String> {
        let full = format!("/newroot{p}");
        if cfg.read_only && !std::path::Path::new(&full).is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the read-only image has no {p} directory to mount on"),
            ));
        }
        ensure_dir(&full)?;
        Ok(full)
    };
    mount("proc", &point("/proc")?, "proc", NOSUID_NODEV_NOEXEC, "")?;
    mount("sysfs", &point("/sys")?, "sysfs", NOSUID_NODEV_NOEXEC, "")?;
    if let Some(limit) = cfg.pids_limit {
        limit_pids(limit)?;
    }
    mount("/dev", &point("/dev")?, "", libc::MS_MOVE, "")?;
    ensure_dir("/newroot/dev/pts")?;
    mount(
        "devpts",
        "/newroot/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )?;
    ensure_dir("/newroot/dev/shm")?;
    mount(
        "shm",
        "/newroot/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    )?;
    // devpts' own ptmx, so that ptys opened via /dev/ptmx live in the new instance.
    let _ = fs::remove_file("/newroot/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/newroot/dev/ptmx");
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, format!("/newroot/dev/{link}"));
    }
    if cfg.read_only {
        // Nothing in the image can be written: give programs the usual scratch space.
        for p in ["/run", "/tmp"] {
            if std::path::Path::new(&format!("/newroot{p}")).is_dir() {
                mount(
                    "tmpfs",
                    &format!("/newroot{p}"),
                    "tmpfs",
                    libc::MS_NOSUID | libc::MS_NODEV,
                    "mode=1777",
                )?;
            }
        }
    }
    write_identity_files(cfg)?;
    switch_root()?;
    Ok(upper)
}

/// The workload's cgroup: `cgroup.procs` of `/sys/fs/cgroup/vessel`, open for the forked
/// children to join (`command::child`) before they exec; -1 without `--pids-limit`.
static WORKLOAD_CGROUP: AtomicI32 = AtomicI32::new(-1);

/// The open `cgroup.procs` of the workload's cgroup, if there is one.
pub fn workload_cgroup() -> Option<libc::c_int> {
    let fd = WORKLOAD_CGROUP.load(Ordering::SeqCst);
    (fd >= 0).then_some(fd)
}

/// `--pids-limit`: cgroup2 on the root's `/sys/fs/cgroup` (where a container finds it
/// too), the pids controller enabled for the root's children, and the workload's cgroup
/// `vessel` with `pids.max`. The agent itself stays in the root cgroup: its own threads
/// do not count against the command's limit.
fn limit_pids(limit: i64) -> io::Result<()> {
    const CG: &str = "/newroot/sys/fs/cgroup";
    mount("cgroup2", CG, "cgroup2", NOSUID_NODEV_NOEXEC, "")?;
    let write = |path: String, value: String| {
        fs::write(&path, &value)
            .map_err(|e| io::Error::new(e.kind(), format!("write {value} to {path}: {e}")))
    };
    write(format!("{CG}/cgroup.subtree_control"), "+pids".into())?;
    ensure_dir(&format!("{CG}/vessel"))?;
    write(format!("{CG}/vessel/pids.max"), limit.to_string())?;
    let procs = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("{CG}/vessel/cgroup.procs"))?;
    WORKLOAD_CGROUP.store(std::os::fd::IntoRawFd::into_raw_fd(procs), Ordering::SeqCst);
    Ok(())
}

/// `/etc/hostname` and `/etc/hosts` for the configured hostname, and with a network the
/// host's `/etc/hosts` (peers by name) and `/etc/resolv.conf`. In a writable root they
/// are written (into the overlay's upper layer); in a read-only root, files the image has
/// are covered by bind mounts of generated copies.
fn write_identity_files(cfg: &GuestConfig) -> io::Result<()> {
    let mut files = Vec::new();
    if !cfg.hostname.is_empty() {
        let name = &cfg.hostname;
        // SAFETY: the pointer and length describe name's bytes, valid for the call.
        let r = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
        check(r, || format!("sethostname {name:?}"))?;
        files.push(("hostname", format!("{name}\n")));
        files.push((
            "hosts",
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{name}\n"
            ),
        ));
    }
    if let Some(net) = &cfg.network {
        files.retain(|(f, _)| *f != "hosts");
        files.push(("hosts", net.hosts.clone()));
        files.push(("resolv.conf", net.resolv_conf.clone()));
    }
    if cfg.read_only {
        ensure_dir("/run/vessel")?;
        for (file, content) in files {
            let target = format!("/newroot/etc/{file}");
            if !std::path::Path::new(&target).is_file() {
                continue;
            }
            let source = format!("/run/vessel/{file}");
            write(&source, &content)?;
            mount(&source, &target, "", libc::MS_BIND, "")?;
        }
    } else {
        ensure_dir("/newroot/etc")?;
        for (file, content) in files {
            let path = format!("/newroot/etc/{file}");
            // A symlink (e.g. to /proc/...) would be followed out of the root: replace it.
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = fs::remove_file(&path);
            }
            write(&path, &content)?;
        }
    }
    Ok(())
}

fn write(path: &str, content: &str) -> io::Result<()> {
    fs::write(path, content).map_err(|e| io::Error::new(e.kind(), format!("write {path}: {e}")))
}

/// Makes `/newroot` the root: move its mount over `/`, then chroot into it (the
/// initramfs, being rootfs, cannot be pivoted away from). Open descriptors stay valid.
fn switch_root() -> io::Result<()> {
    std::env::set_current_dir("/newroot")
        .map_err(|e| io::Error::new(e.kind(), format!("chdir /newroot: {e}")))?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    let dot = sys::cstr(".")?;
    // SAFETY: chroot with a NUL-terminated path valid for the call.
    check(unsafe { libc::chroot(dot.as_ptr()) }, || "chroot".into())?;
    std::env::set_current_dir("/").map_err(|e| io::Error::new(e.kind(), format!("chdir /: {e}")))
}

/// Brings the loopback interface up, so that `localhost` works in the guest. Best effort:
/// a kernel without networking is not an error.
pub fn loopback_up() {
    // SAFETY: a socket we own and close; ifreq is plain data, zero-initialised, with a
    // NUL-terminated name that fits IFNAMSIZ; both ioctls read/write only that struct.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(sock);
    }
}
