//! The files a VM uses, opened by its caller: a jailed VMM process cannot open anything
//! (its root is an empty directory), so whoever starts it opens the kernel, initramfs,
//! disks, console log and `/dev/kvm` and hands the descriptors over (see
//! [`crate::jail`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// How a file is used, which its descriptor must allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read only (kernel, initramfs, read-only disks).
    Read,
    /// Read and write (writable disks).
    ReadWrite,
    /// Read and append, created if missing (the serial console log).
    Log,
}

/// Files already opened for a VM, by the path the configuration names them with (kept
/// for messages), plus `/dev/kvm`.
///
/// [`OpenFiles::host`] (what [`crate::Vm::new`] uses) opens every path itself;
/// [`OpenFiles::handed_over`] starts empty and refuses any path that was not
/// [`OpenFiles::insert`]ed: what a jailed VMM uses.
#[derive(Debug)]
pub struct OpenFiles {
    files: HashMap<PathBuf, File>,
    kvm: Option<File>,
    only_handed_over: bool,
}

impl OpenFiles {
    /// Opens each path on demand (a VMM that runs in the host's filesystem).
    pub fn host() -> OpenFiles {
        OpenFiles {
            files: HashMap::new(),
            kvm: None,
            only_handed_over: false,
        }
    }

    /// Only the files inserted: a path of the configuration without one is an error
    /// naming it.
    pub fn handed_over() -> OpenFiles {
        OpenFiles {
            only_handed_over: true,
            ..OpenFiles::host()
        }
    }

    /// `file` is what the configuration calls `path`. It must be open the way the VM
    /// uses it (read-only for the kernel, initramfs and read-only disks; read-write for
    /// writable disks; append for the console log): checked when it is used.
    pub fn insert(&mut self, path: impl Into<PathBuf>, file: File) {
        self.files.insert(path.into(), file);
    }

    /// `/dev/kvm`, open read-write.
    pub fn set_kvm(&mut self, file: File) {
        self.kvm = Some(file);
    }

    /// The open `/dev/kvm` handed over, if any (taken: the VM owns it from then on).
    pub(crate) fn take_kvm(&mut self) -> Option<File> {
        self.kvm.take()
    }

    /// Whether `/dev/kvm` must come from [`OpenFiles::set_kvm`].
    pub(crate) fn only_handed_over(&self) -> bool {
        self.only_handed_over
    }

    /// A descriptor of `path` for `access`: a duplicate of the handed-over one (rewound,
    /// unless it is the log), or the file opened now.
    pub(crate) fn open(&self, path: &Path, access: Access) -> std::io::Result<File> {
        let Some(file) = self.files.get(path) else {
            if self.only_handed_over {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not handed to the jailed VMM",
                ));
            }
            let mut o = OpenOptions::new();
            match access {
                Access::Read => o.read(true),
                Access::ReadWrite => o.read(true).write(true),
                Access::Log => o.read(true).append(true).create(true),
            };
            return o.open(path);
        };
        // SAFETY: F_GETFL on a descriptor this value owns.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mode = flags & libc::O_ACCMODE;
        let fits = match access {
            Access::Read => mode == libc::O_RDONLY || mode == libc::O_RDWR,
            Access::ReadWrite => mode == libc::O_RDWR,
            Access::Log => mode == libc::O_RDWR && flags & libc::O_APPEND != 0,
        };
        if !fits {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("the descriptor handed over is not open for {access:?} use"),
            ));
        }
        let mut dup = file.try_clone()?;
        if access != Access::Log {
            dup.seek(SeekFrom::Start(0))?;
        }
        Ok(dup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handed_over_files_only_and_in_the_right_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk");
        std::fs::write(&p, b"abc").unwrap();
        let mut files = OpenFiles::handed_over();
        let err = files.open(&p, Access::Read).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        files.insert(&p, File::open(&p).unwrap());
        let mut f = files.open(&p, Access::Read).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "abc");
        // A second use starts at the beginning again.
        let mut s2 = String::new();
        std::io::Read::read_to_string(&mut files.open(&p, Access::Read).unwrap(), &mut s2).unwrap();
        assert_eq!(s2, "abc");
        let err = files.open(&p, Access::ReadWrite).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        let err = files.open(&p, Access::Log).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    }

    #[test]
    fn host_files_are_opened_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let files = OpenFiles::host();
        files.open(&log, Access::Log).unwrap();
        assert!(log.exists());
        assert!(files.open(&dir.path().join("nope"), Access::Read).is_err());
    }
}
