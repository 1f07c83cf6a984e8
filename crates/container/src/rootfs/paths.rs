//! Resolve container paths under the rootfs without letting symlinks escape it.
//!
//! Before `pivot_root`, every path the runtime touches inside the container's root is
//! resolved by the kernel with `openat2(RESOLVE_IN_ROOT)` into an `O_PATH` descriptor,
//! directories that do not exist yet are made with `mkdirat` on the descriptor of their
//! parent, and mounts are made onto `/proc/self/fd/N`: a symlink in the image (or one
//! swapped in by another container sharing a volume, CVE-2021-30465) can never make the
//! runtime mount, create or write anything outside the root.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// The container's root directory, held open: paths inside it are resolved relative to it.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// How the kernel resolves a path inside the root: symlinks and `..` stay inside it, and
/// no magic link (`/proc/self/...`) is followed.
const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// The path through which a syscall that takes a path reaches what `fd` refers to.
pub(crate) fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl Root {
    /// Opens the root directory `path` (a trusted host path: the bundle's rootfs).
    pub fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("open the root filesystem", path, nixe(e)))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    fn shown(&self, p: &Path) -> PathBuf {
        self.path.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// An `O_PATH` descriptor of `p` (a path inside the container), resolved inside the
    /// root. Resolve again after mounting on it: the descriptor keeps naming what was
    /// there before the mount.
    pub fn resolve(&self, p: &Path) -> Result<OwnedFd> {
        self.resolve_raw(p).map_err(|e| {
            Error::sys(
                "resolve inside the container's root",
                self.shown(p),
                nixe(e),
            )
        })
    }

    fn resolve_raw(&self, p: &Path) -> std::result::Result<OwnedFd, Errno> {
        let rel = p.strip_prefix("/").unwrap_or(p);
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rustix::fs::openat2(
            &self.fd,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            IN_ROOT,
        )
    }

    /// Makes the directory `p` and its missing parents inside the root, and returns an
    /// `O_PATH` descriptor of it. A dangling symlink on the way is followed, inside the
    /// root, and its target made (as runc's SecureJoin + MkdirAll end up doing).
    pub fn mkdir_all(&self, p: &Path) -> Result<OwnedFd> {
        self.mkdir_all_depth(p, 0)
    }

    fn mkdir_all_depth(&self, p: &Path, depth: u32) -> Result<OwnedFd> {
        if depth > 40 {
            return Err(Error::InvalidSpec(format!(
                "too many symlinks making {} inside the container's root",
                self.shown(p).display()
            )));
        }
        let mut done = PathBuf::from("/");
        let mut cur = self.resolve(&done)?;
        for c in p.components() {
            let name = match c {
                Component::Normal(n) => n,
                Component::ParentDir => std::ffi::OsStr::new(".."),
                _ => continue,
            };
            let parent = done.clone();
            done.push(name);
            cur = match self.resolve_raw(&done) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) => self.resolve(&done)?,
                        Err(Errno::EXIST) => {
                            // A dangling symlink: make what it points to, inside the root.
                            let target = rustix::fs::readlinkat(&cur, name, Vec::new())
                                .map_err(|e| Error::sys("readlink", self.shown(&done), nixe(e)))?;
                            let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
                            self.mkdir_all_depth(&parent.join(target), depth + 1)?;
                            self.resolve(&done)?
                        }
                        Err(e) => return Err(Error::sys("mkdir", self.shown(&done), nixe(e))),
                    }
                }
                Err(e) => {
                    return Err(Error::sys(
                        "resolve inside the container's root",
                        self.shown(&done),
                        nixe(e),
                    ))
                }
            };
        }
        let st = rustix::fs::fstat(&cur).map_err(|e| Error::sys("stat", self.shown(p), nixe(e)))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
            return Err(Error::InvalidSpec(format!(
                "{} inside the container's root is not a directory",
                self.shown(p).display()
            )));
        }
        Ok(cur)
    }

    /// Makes `p` an (empty) file if nothing is there, its parents as [`Root::mkdir_all`],
    /// and returns an `O_PATH` descriptor of what is there: the target of a file mount.
    pub(crate) fn create_file(&self, p: &Path) -> Result<OwnedFd> {
        let (parent, name) = split(p)?;
        let dir = self.mkdir_all(parent)?;
        if let Err(e) = rustix::fs::openat(
            &dir,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            if e != Errno::EXIST {
                return Err(Error::sys("create", self.shown(p), nixe(e)));
            }
        }
        self.resolve(p)
    }

    /// The directory that holds `p` (made if missing) and `p`'s last component, to
    /// create `p` itself with a `*at` call that does not follow a symlink there.
    pub fn parent_of<'a>(&self, p: &'a Path) -> Result<(OwnedFd, &'a std::ffi::OsStr)> {
        let (parent, name) = split(p)?;
        Ok((self.mkdir_all(parent)?, name))
    }
}

fn nixe(e: Errno) -> nix::Error {
    nix::Error::from_raw(e.raw_os_error())
}

fn split(p: &Path) -> Result<(&Path, &std::ffi::OsStr)> {
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(Error::InvalidSpec(format!(
            "{} does not name a file inside the container",
            p.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn real(fd: &OwnedFd) -> PathBuf {
        fs::read_link(fd_path(fd)).unwrap()
    }

    #[test]
    fn symlinks_cannot_escape() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let rootp = base.join("root");
        let outside = base.join("outside");
        fs::create_dir_all(rootp.join("etc")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        symlink("/etc", rootp.join("abs")).unwrap();
        symlink("../../../../etc", rootp.join("rel")).unwrap();
        symlink(&outside, rootp.join("host")).unwrap();
        symlink("loop", rootp.join("loop")).unwrap();
        let root = Root::open(&rootp).unwrap();

        assert_eq!(
            real(&root.mkdir_all(Path::new("/abs/x")).unwrap()),
            rootp.join("etc/x")
        );
        assert_eq!(
            real(&root.mkdir_all(Path::new("/rel/y")).unwrap()),
            rootp.join("etc/y")
        );
        assert_eq!(
            real(&root.mkdir_all(Path::new("/../../z")).unwrap()),
            rootp.join("z")
        );
        // A link to a host path is that path inside the root.
        let d = root.mkdir_all(Path::new("/host/dev")).unwrap();
        assert!(real(&d).starts_with(&rootp), "{}", real(&d).display());
        assert!(
            fs::read_dir(&outside).unwrap().next().is_none(),
            "wrote outside the root"
        );
        let f = root.create_file(Path::new("/host/file")).unwrap();
        assert!(real(&f).starts_with(&rootp));
        assert!(root.mkdir_all(Path::new("/loop/x")).is_err());
        // A file is not a directory to mount a directory on.
        assert!(root.mkdir_all(Path::new("/host/file")).is_err());
    }
}
