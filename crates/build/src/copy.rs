//! Writes COPY and ADD sources into the image's root. Every destination is resolved by
//! the kernel inside the root (vessel_container::Root: `openat2(RESOLVE_IN_ROOT)`), and the
//! last component is created with `*at` calls that never follow a symlink: a symlink in the
//! image cannot redirect a write onto the host.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};
use vessel_container::Root;

use crate::source::{Entry, Matched};

/// Who owns what is copied and with which mode.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attrs {
    /// `--chown` (uid, gid); `None`: root for context files, the source's owner otherwise.
    pub chown: Option<(u32, u32)>,
    /// Keep the source's owner when there is no `--chown` (another stage, an image, a tar).
    pub keep_owner: bool,
    /// `--chmod`.
    pub chmod: Option<u32>,
}

impl Attrs {
    fn owner(&self, meta: &std::fs::Metadata) -> (u32, u32) {
        match self.chown {
            Some(o) => o,
            None if self.keep_owner => (meta.uid(), meta.gid()),
            None => (0, 0),
        }
    }
}

type R<T> = Result<T, String>;

fn err<'a>(op: &str, p: &'a Path) -> impl Fn(rustix::io::Errno) -> String + 'a {
    let op = op.to_string();
    move |e| format!("{op} {}: {e}", p.display())
}

/// Whether `dest` (absolute, inside the root) is an existing directory, following
/// symlinks inside the root.
pub fn is_dir(root: &Root, dest: &Path) -> bool {
    root.resolve(dest)
        .ok()
        .and_then(|fd| rustix::fs::fstat(&fd).ok())
        .is_some_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())
}

/// Copies one matched source to `dest`: a directory's contents into `dest`, a file to
/// `dest` (or into it when `into_dir`).
pub fn copy(root: &Root, m: &Matched, dest: &Path, into_dir: bool, attrs: Attrs) -> R<()> {
    let Some((top, rest)) = m.entries.split_first() else {
        return Ok(());
    };
    if m.is_dir {
        let existed = is_dir(root, dest);
        let fd = root.mkdir_all(dest).map_err(|e| e.to_string())?;
        if !existed {
            set_attrs_fd(&fd, dest, &top.meta, attrs)?;
        }
        for e in rest {
            put(root, &dest.join(&e.rel), e, attrs)?;
        }
        return Ok(());
    }
    let target = if into_dir {
        let name = Path::new(&m.name)
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_default();
        dest.join(name)
    } else {
        dest.to_path_buf()
    };
    put(root, &target, top, attrs)
}

/// Creates `dest` as a copy of entry `e` (not following a symlink at `dest`).
fn put(root: &Root, dest: &Path, e: &Entry, attrs: Attrs) -> R<()> {
    let ft = e.meta.file_type();
    if ft.is_dir() {
        // A directory inside a copied one takes its metadata, existing or not.
        let fd = root.mkdir_all(dest).map_err(|x| x.to_string())?;
        return set_attrs_fd(&fd, dest, &e.meta, attrs);
    }
    let (parent, name) = root.parent_of(dest).map_err(|x| x.to_string())?;
    replace(&parent, name, dest)?;
    let (uid, gid) = attrs.owner(&e.meta);
    let mode = attrs.chmod.unwrap_or(e.meta.mode() & 0o7777);
    if ft.is_symlink() {
        let target =
            std::fs::read_link(&e.host).map_err(|x| format!("{}: {x}", e.host.display()))?;
        rustix::fs::symlinkat(&target, &parent, name).map_err(err("symlink", dest))?;
        rustix::fs::chownat(
            &parent,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(err("chown", dest))?;
        return Ok(());
    }
    if ft.is_file() {
        let mut src =
            std::fs::File::open(&e.host).map_err(|x| format!("{}: {x}", e.host.display()))?;
        let mut out = create_new(&parent, name, dest)?;
        std::io::copy(&mut (&mut src).take(u64::MAX), &mut out)
            .map_err(|x| format!("write {}: {x}", dest.display()))?;
        finish_fd(out.as_fd(), dest, &e.meta, uid, gid, mode)?;
        return Ok(());
    }
    // Devices, fifos (from a tar or another image).
    let kind = if ft.is_char_device() {
        rustix::fs::FileType::CharacterDevice
    } else if ft.is_block_device() {
        rustix::fs::FileType::BlockDevice
    } else if ft.is_fifo() {
        rustix::fs::FileType::Fifo
    } else {
        return Ok(()); // sockets are not copied
    };
    rustix::fs::mknodat(
        &parent,
        name,
        kind,
        Mode::from_raw_mode(mode),
        e.meta.rdev(),
    )
    .map_err(err("mknod", dest))?;
    rustix::fs::chownat(
        &parent,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(err("chown", dest))
}

/// Removes what is at `name` in `parent` unless it is a directory (a file, a link: COPY
/// replaces it; the link itself, never what it points to).
/// Creates `name` in `parent` (a directory inside the image root): a new file, never
/// through a symlink, mode 0600 until its attributes are set.
fn create_new(parent: &OwnedFd, name: &OsStr, dest: &Path) -> R<std::fs::File> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(err("create", dest))?;
    Ok(std::fs::File::from(fd))
}

fn replace(parent: &OwnedFd, name: &OsStr, dest: &Path) -> R<()> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(format!("stat {}: {e}", dest.display())),
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() => Err(format!(
            "cannot copy a file onto the directory {}",
            dest.display()
        )),
        Ok(_) => rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(err("replace", dest)),
    }
}

/// Owner, mode and modification time of a directory reached by an `O_PATH` descriptor.
fn set_attrs_fd(fd: &OwnedFd, dest: &Path, meta: &std::fs::Metadata, attrs: Attrs) -> R<()> {
    let dir = rustix::fs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open", dest))?;
    let (uid, gid) = attrs.owner(meta);
    let mode = attrs.chmod.unwrap_or(meta.mode() & 0o7777);
    finish_fd(dir.as_fd(), dest, meta, uid, gid, mode)
}

fn finish_fd(
    fd: std::os::fd::BorrowedFd<'_>,
    dest: &Path,
    meta: &std::fs::Metadata,
    uid: u32,
    gid: u32,
    mode: u32,
) -> R<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(err("chown", dest))?;
    // After chown, which clears set-id bits.
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(err("chmod", dest))?;
    let t = rustix::fs::Timespec {
        tv_sec: meta.mtime(),
        tv_nsec: meta.mtime_nsec(),
    };
    rustix::fs::futimens(
        fd,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
    )
    .map_err(err("set times of", dest))
}

/// Writes a here-document (`COPY <<EOF /dest`) as a root-owned 0644 file.
pub fn write_text(root: &Root, dest: &Path, text: &str, attrs: Attrs) -> R<()> {
    let (parent, name) = root.parent_of(dest).map_err(|x| x.to_string())?;
    replace(&parent, name, dest)?;
    let mut out = create_new(&parent, name, dest)?;
    std::io::Write::write_all(&mut out, text.as_bytes())
        .map_err(|x| format!("write {}: {x}", dest.display()))?;
    let (uid, gid) = attrs.chown.unwrap_or((0, 0));
    rustix::fs::fchown(
        &out,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(err("chown", dest))?;
    rustix::fs::fchmod(&out, Mode::from_raw_mode(attrs.chmod.unwrap_or(0o644)))
        .map_err(err("chmod", dest))
}
