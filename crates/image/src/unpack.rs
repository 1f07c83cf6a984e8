//! Layer unpacking: a layer tar (gzip, zstd or plain) into its own directory.
//!
//! Each layer gets a directory of its own, shared by every image and instance that uses
//! it. OCI whiteouts are converted on the way in to the form overlayfs understands
//! (`.wh.name` becomes a 0:0 character device `name`; `.wh..wh..opq` becomes the
//! `trusted.overlay.opaque=y` xattr on its directory), so a stack of layer directories is
//! directly a set of overlayfs lower dirs.
//!
//! The unpacker treats the tar as hostile. Every path is resolved with `openat2` and
//! `RESOLVE_IN_ROOT`, so `..`, absolute paths and symlinks (created earlier by the same
//! tar) can never reach outside the layer directory: entries naming `..` are rejected,
//! absolute paths and symlinks are contained (resolved as if the layer dir were `/`, as
//! the container will see them), and an existing entry is unlinked before a new one is
//! created with `O_EXCL | O_NOFOLLOW`, so nothing is ever written through a symlink.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::limits::{DiskLimits, DISK_BUDGET, ENTRY_OVERHEAD};
use crate::tar_guard::TarGuard;

/// The xattr overlayfs reads to mark a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The name prefix of an OCI whiteout entry.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI entry that marks its directory opaque.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`+gzip`, and Docker's `rootfs.diff.tar.gzip`).
    Gzip,
    /// zstd (`+zstd`).
    Zstd,
}

impl Compression {
    /// The compression a layer media type announces; `None` for a type that is not a layer.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// Sniffs the compression from a stream's first bytes (docker-archive layers carry no
    /// media type, and some registries mislabel theirs).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `reader` in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let kind = Compression::sniff(buffered.fill_buf()?);
    Ok(match kind {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    })
}

/// What unpacking a layer produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// The digest of the uncompressed tar: the layer's OCI `diff_id`.
    pub diff_id: Digest,
    /// Bytes of uncompressed tar read.
    pub tar_size: u64,
    /// Number of entries applied (whiteouts included).
    pub entries: u64,
}

/// Unpacks a (possibly compressed) layer tar into `dest`, an existing empty directory,
/// within the default disk budget of the filesystem holding `dest` (see
/// [`DiskLimits::budget`]).
///
/// Returns the diff id computed over the decompressed stream; the caller compares it with
/// the one the image config announces.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path) -> Result<Unpacked> {
    let budget = DiskLimits::default().budget(dest)?;
    unpack_layer_within(reader, dest, budget)
}

/// Unpacks a layer as [`unpack_layer`] does, writing at most `budget` bytes.
///
/// Every file byte written (a GNU sparse file's holes included: they are written as
/// zeros), every xattr and [`ENTRY_OVERHEAD`] per entry count against `budget`, and so
/// does the uncompressed tar itself as it is read: a decompression bomb is stopped by
/// the running count, whatever its headers claim. A GNU long name/link or PAX header over
/// [`MAX_TAR_HEADER`](crate::limits::MAX_TAR_HEADER) is refused before it is buffered.
/// On error, `dest` holds whatever was unpacked so far: the caller removes it.
pub fn unpack_layer_within<R: Read>(reader: R, dest: &Path, budget: u64) -> Result<Unpacked> {
    let stream = decompress(reader).map_err(Error::io("decompress layer into", dest))?;
    let mut hashing = HashingReader::new(stream);
    let mut guard = TarGuard::new(&mut hashing, "layer tar", budget, DISK_BUDGET);
    let applied = (|| {
        let mut archive = tar::Archive::new(&mut guard);
        let mut unpacker = Unpacker::new(dest, budget)?;
        let iter = archive
            .entries()
            .map_err(Error::io("read layer tar for", dest))?;
        let mut count = 0u64;
        for entry in iter {
            let mut entry = entry.map_err(|e| Error::malformed("layer tar", e))?;
            unpacker.apply(&mut entry)?;
            count += 1;
        }
        unpacker.finish()?;
        Ok(count)
    })();
    // The guard's own error says what was too large; the tar crate's copy of it is text.
    let entries = match applied {
        Err(e) => return Err(guard.take_failure().unwrap_or(e)),
        Ok(n) => n,
    };
    // The digest covers the padding after the end-of-archive blocks: read it, bounded.
    if let Err(e) = guard.drain() {
        return Err(guard
            .take_failure()
            .unwrap_or_else(|| Error::malformed("layer tar", e)));
    }
    drop(guard);
    let (diff_id, tar_size) = hashing
        .finish()
        .map_err(|e| Error::malformed("layer tar", e))?;
    Ok(Unpacked {
        diff_id,
        tar_size,
        entries,
    })
}

/// A path inside the layer, validated: no `..`, no empty or `.` components, relative.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct InnerPath(PathBuf);

impl InnerPath {
    /// Validates a tar path. Leading `/` and `./` are dropped (contained, as GNU tar
    /// does); a `..` component anywhere is refused.
    fn parse(raw: &[u8]) -> Result<Option<InnerPath>> {
        let mut out = PathBuf::new();
        for comp in raw.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => continue,
                b".." => {
                    return Err(Error::HostileEntry {
                        entry: String::from_utf8_lossy(raw).into_owned(),
                        reason: "path contains a '..' component".into(),
                    })
                }
                c => out.push(OsStr::from_bytes(c)),
            }
        }
        Ok(if out.as_os_str().is_empty() {
            None
        } else {
            Some(InnerPath(out))
        })
    }

    fn split(&self) -> (&Path, &OsStr) {
        // parse() never yields an empty path, so there is always a file name.
        let name = self.0.file_name().unwrap_or_default();
        (self.0.parent().unwrap_or(Path::new("")), name)
    }
}

/// A directory whose mode and mtime are applied after all entries: a read-only directory
/// must still accept the entries the tar puts in it later.
struct DeferredDir {
    path: PathBuf,
    mode: u32,
    mtime: u64,
}

struct Unpacker {
    root: OwnedFd,
    root_path: PathBuf,
    /// Opened parent directories by inner path: tars list siblings together.
    parents: HashMap<PathBuf, OwnedFd>,
    dirs: Vec<DeferredDir>,
    is_root: bool,
    /// Bytes this layer may still write, and bytes written so far.
    budget: u64,
    written: u64,
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

impl Unpacker {
    fn new(dest: &Path, budget: u64) -> Result<Unpacker> {
        let root = rfs::open(
            dest,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(Error::errno("open layer directory", dest))?;
        Ok(Unpacker {
            root,
            root_path: dest.to_path_buf(),
            parents: HashMap::new(),
            dirs: Vec::new(),
            is_root: rustix::process::geteuid().is_root(),
            budget,
            written: 0,
        })
    }

    fn hostile(entry: &InnerPath, reason: impl Into<String>) -> Error {
        Error::HostileEntry {
            entry: entry.0.display().to_string(),
            reason: reason.into(),
        }
    }

    fn io_err(&self, op: &'static str, path: &Path) -> impl FnOnce(Errno) -> Error {
        Error::errno(op, self.root_path.join(path))
    }

    /// Opens (creating as needed) the directory `dir` inside the root, resolving every
    /// component, symlinks included, as if the root were `/`.
    fn open_dir(&mut self, dir: &Path) -> Result<OwnedFd> {
        if let Some(fd) = self.parents.get(dir) {
            return fd
                .try_clone()
                .map_err(Error::io("dup directory fd", self.root_path.join(dir)));
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = match rfs::openat2(&self.root, dir, flags, Mode::empty(), RESOLVE) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                // Tars may omit directory entries: create the missing ones, one at a time.
                let mut cur = PathBuf::new();
                let mut fd = rfs::openat2(&self.root, ".", flags, Mode::empty(), RESOLVE)
                    .map_err(self.io_err("open", Path::new(".")))?;
                for comp in dir.components() {
                    cur.push(comp);
                    match rfs::openat2(&self.root, &cur, flags, Mode::empty(), RESOLVE) {
                        Ok(next) => fd = next,
                        Err(Errno::NOENT) => {
                            match rfs::mkdirat(&fd, comp.as_os_str(), Mode::from_raw_mode(0o755)) {
                                Ok(()) => {}
                                // A dangling symlink: following it inside the layer leads nowhere.
                                Err(Errno::EXIST) => {
                                    return Err(Error::HostileEntry {
                                        entry: cur.display().to_string(),
                                        reason: "is a symlink that does not lead to a directory inside the layer".into(),
                                    })
                                }
                                Err(e) => return Err(self.io_err("create directory", &cur)(e)),
                            }
                            fd = rfs::openat2(&self.root, &cur, flags, Mode::empty(), RESOLVE)
                                .map_err(self.io_err("open directory", &cur))?;
                        }
                        Err(e) => return Err(self.io_err("open directory", &cur)(e)),
                    }
                }
                fd
            }
            Err(e) => return Err(self.io_err("open directory", dir)(e)),
        };
        let dup = fd
            .try_clone()
            .map_err(Error::io("dup directory fd", self.root_path.join(dir)))?;
        self.parents.insert(dir.to_path_buf(), dup);
        Ok(fd)
    }

    /// Removes whatever `name` is in `parent`, without following it. Keeps a directory
    /// when `keep_dir` (a directory entry over a directory merges, as tar does).
    fn clear(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        path: &InnerPath,
        keep_dir: bool,
    ) -> Result<()> {
        let st = match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.io_err("stat", &path.0)(e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(());
            }
            // A directory replaced by something else: its cached fds are stale.
            self.parents.clear();
            let full = proc_fd_path(parent).join(name);
            std::fs::remove_dir_all(&full)
                .map_err(Error::io("remove directory", self.root_path.join(&path.0)))?;
        } else {
            rfs::unlinkat(parent, name, AtFlags::empty())
                .map_err(self.io_err("remove", &path.0))?;
        }
        Ok(())
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let Some(path) = InnerPath::parse(&raw_path)? else {
            return Ok(()); // "./": the layer root itself
        };
        let header = entry.header().clone();
        let kind = header.entry_type();
        let (dir, name) = path.split();
        let name = name.to_os_string();
        let name_bytes = name.as_bytes();

        self.charge(ENTRY_OVERHEAD)?;
        if name_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            let hidden = &name_bytes[WHITEOUT_PREFIX.len()..];
            // `.wh.`, `.wh..`, `.wh...` would hide "", the directory itself or its parent
            // (at the layer root, the directory *holding* the layer): never a file name.
            if name_bytes != OPAQUE_MARKER.as_bytes() && matches!(hidden, b"" | b"." | b"..") {
                return Err(Self::hostile(
                    &path,
                    format!(
                        "malformed whiteout: hides {:?}, which is not a file name",
                        String::from_utf8_lossy(hidden)
                    ),
                ));
            }
            let parent = self.open_dir(dir)?;
            if name_bytes == OPAQUE_MARKER.as_bytes() {
                rfs::fsetxattr(&parent, OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(self.io_err("mark opaque", dir))?;
            } else {
                let hidden = OsStr::from_bytes(hidden);
                let target = InnerPath(dir.join(hidden));
                self.clear(&parent, hidden, &target, false)?;
                rfs::mknodat(
                    &parent,
                    hidden,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
                .map_err(self.io_err("create whiteout", &target.0))?;
            }
            return Ok(());
        }

        let parent = self.open_dir(dir)?;
        let mode = header
            .mode()
            .map_err(|e| Self::hostile(&path, format!("bad mode: {e}")))?
            & 0o7777;
        let uid = header
            .uid()
            .map_err(|e| Self::hostile(&path, format!("bad uid: {e}")))?;
        let gid = header
            .gid()
            .map_err(|e| Self::hostile(&path, format!("bad gid: {e}")))?;
        let mtime = header.mtime().unwrap_or(0);
        let xattrs = pax_xattrs(entry)?;
        self.charge(xattrs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum())?;

        match kind {
            EntryType::Directory => {
                self.clear(&parent, &name, &path, true)?;
                match rfs::mkdirat(&parent, &name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(self.io_err("create directory", &path.0)(e)),
                }
                let fd = rfs::openat(
                    &parent,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(self.io_err("open directory", &path.0))?;
                self.chown(&fd, uid, gid, &path)?;
                self.set_xattrs(&fd, &xattrs, &path)?;
                self.dirs.push(DeferredDir {
                    path: path.0.clone(),
                    mode,
                    mtime,
                });
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // The size is known up front (for a sparse file, its apparent size, holes
                // included, as they are written as zeros): refuse what cannot fit before
                // creating the file.
                let left = self.budget.saturating_sub(self.written);
                if entry.size() > left {
                    return Err(Error::TooLarge {
                        what: format!("layer tar entry {:?}", path.0.display().to_string()),
                        size: entry.size(),
                        limit: left,
                        limit_name: "left of the disk budget (free space of the image store less its reserve)",
                    });
                }
                self.clear(&parent, &name, &path, false)?;
                let fd = rfs::openat(
                    &parent,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(self.io_err("create file", &path.0))?;
                let mut file = File::from(fd);
                self.copy_data(entry, &mut file, &path)?;
                self.chown(&file, uid, gid, &path)?;
                rfs::fchmod(&file, Mode::from_raw_mode(mode))
                    .map_err(self.io_err("chmod", &path.0))?;
                self.set_xattrs(&file, &xattrs, &path)?;
                rfs::futimens(&file, &times(mtime))
                    .map_err(self.io_err("set times of", &path.0))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Self::hostile(&path, "symlink without a target"))?
                    .into_owned();
                self.clear(&parent, &name, &path, false)?;
                rfs::symlinkat(OsStr::from_bytes(&target), &parent, &name)
                    .map_err(self.io_err("create symlink", &path.0))?;
                self.chownat(&parent, &name, uid, gid, &path)?;
                self.set_xattrs_at(&parent, &name, &xattrs, &path)?;
                rfs::utimensat(&parent, &name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.io_err("set times of", &path.0))?;
                // A symlink may now stand where a cached directory path resolved differently.
                self.parents.clear();
            }
            EntryType::Link => {
                let raw_target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Self::hostile(&path, "hard link without a target"))?
                    .into_owned();
                let target = InnerPath::parse(&raw_target)
                    .map_err(|_| {
                        Self::hostile(
                            &path,
                            format!(
                                "hard link target {:?} leaves the layer",
                                String::from_utf8_lossy(&raw_target)
                            ),
                        )
                    })?
                    .ok_or_else(|| Self::hostile(&path, "hard link to the layer root"))?;
                let (tdir, tname) = target.split();
                let tparent = self.open_dir(tdir).map_err(|_| {
                    Self::hostile(
                        &path,
                        format!(
                            "hard link target {} does not exist in the layer",
                            target.0.display()
                        ),
                    )
                })?;
                let st = rfs::statat(&tparent, tname, AtFlags::SYMLINK_NOFOLLOW).map_err(|_| {
                    Self::hostile(
                        &path,
                        format!(
                            "hard link target {} does not exist in the layer",
                            target.0.display()
                        ),
                    )
                })?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Err(Self::hostile(&path, "hard link to a directory"));
                }
                if target == path {
                    return Ok(());
                }
                self.clear(&parent, &name, &path, false)?;
                rfs::linkat(&tparent, tname, &parent, &name, AtFlags::empty())
                    .map_err(self.io_err("create hard link", &path.0))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ftype = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.clear(&parent, &name, &path, false)?;
                rfs::mknodat(
                    &parent,
                    &name,
                    ftype,
                    Mode::from_raw_mode(mode),
                    rfs::makedev(major, minor),
                )
                .map_err(self.io_err("create device node", &path.0))?;
                self.chownat(&parent, &name, uid, gid, &path)?;
                // mknod honours the umask; set the exact mode.
                rfs::chmodat(&parent, &name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(self.io_err("chmod", &path.0))?;
                self.set_xattrs_at(&parent, &name, &xattrs, &path)?;
            }
            // Metadata-only entries the tar crate already folded into the next entry.
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => {}
            other => {
                return Err(Self::hostile(
                    &path,
                    format!("unsupported tar entry type {other:?}"),
                ))
            }
        }
        Ok(())
    }

    /// Counts `n` more bytes against the layer's disk budget.
    fn charge(&mut self, n: u64) -> Result<()> {
        self.written = self.written.saturating_add(n);
        if self.written > self.budget {
            return Err(Error::TooLarge {
                what: "layer (unpacked)".into(),
                size: self.written,
                limit: self.budget,
                limit_name: DISK_BUDGET,
            });
        }
        Ok(())
    }

    /// Copies an entry's data into `file`, counting every byte against the budget before
    /// it is written.
    fn copy_data(
        &mut self,
        entry: &mut impl Read,
        file: &mut File,
        path: &InnerPath,
    ) -> Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::malformed(
                        "layer tar",
                        format!("{}: {e}", path.0.display()),
                    ))
                }
            };
            self.charge(n as u64)?;
            file.write_all(&buf[..n])
                .map_err(Error::io("write", self.root_path.join(&path.0)))?;
        }
    }

    fn chown(&self, fd: impl AsFd, uid: u64, gid: u64, path: &InnerPath) -> Result<()> {
        let (u, g) = ids(uid, gid, path)?;
        match rfs::fchown(fd, Some(u), Some(g)) {
            Err(Errno::PERM) if !self.is_root => Ok(()),
            r => r.map_err(self.io_err("chown", &path.0)),
        }
    }

    fn chownat(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        uid: u64,
        gid: u64,
        path: &InnerPath,
    ) -> Result<()> {
        let (u, g) = ids(uid, gid, path)?;
        match rfs::chownat(parent, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::PERM) if !self.is_root => Ok(()),
            r => r.map_err(self.io_err("chown", &path.0)),
        }
    }

    fn set_xattrs(
        &self,
        fd: impl AsFd,
        xattrs: &[(String, Vec<u8>)],
        path: &InnerPath,
    ) -> Result<()> {
        for (k, v) in xattrs {
            match rfs::fsetxattr(&fd, k.as_str(), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::PERM | Errno::OPNOTSUPP) if !self.is_root => {}
                Err(e) => return Err(self.io_err("set xattr on", &path.0)(e)),
            }
        }
        Ok(())
    }

    fn set_xattrs_at(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        xattrs: &[(String, Vec<u8>)],
        path: &InnerPath,
    ) -> Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        // lsetxattr does not follow the last component; the directory part is our own fd.
        let p = proc_fd_path(parent).join(name);
        for (k, v) in xattrs {
            match rfs::lsetxattr(&p, k.as_str(), v, XattrFlags::empty()) {
                Ok(()) => {}
                // Linux refuses user.* xattrs on symlinks and devices.
                Err(Errno::PERM | Errno::OPNOTSUPP) => {}
                Err(e) => return Err(self.io_err("set xattr on", &path.0)(e)),
            }
        }
        Ok(())
    }

    /// Applies the deferred directory modes and times, deepest first.
    fn finish(mut self) -> Result<()> {
        self.parents.clear();
        self.dirs
            .sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
        for d in &self.dirs {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let fd = match rfs::openat2(
                &self.root,
                &d.path,
                flags,
                Mode::empty(),
                RESOLVE | ResolveFlags::NO_SYMLINKS,
            ) {
                Ok(fd) => fd,
                // Replaced or whited out later in the same layer.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(self.io_err("open directory", &d.path)(e)),
            };
            rfs::fchmod(&fd, Mode::from_raw_mode(d.mode)).map_err(self.io_err("chmod", &d.path))?;
            rfs::futimens(&fd, &times(d.mtime)).map_err(self.io_err("set times of", &d.path))?;
        }
        Ok(())
    }
}

fn ids(uid: u64, gid: u64, path: &InnerPath) -> Result<(rfs::Uid, rfs::Gid)> {
    let conv = |v: u64| u32::try_from(v).ok().filter(|&v| v != u32::MAX);
    match (conv(uid), conv(gid)) {
        // SAFETY-free: from_raw is safe for any value except -1, excluded above.
        (Some(u), Some(g)) => Ok((rfs::Uid::from_raw(u), rfs::Gid::from_raw(g))),
        _ => Err(Unpacker::hostile(
            path,
            format!("owner {uid}:{gid} out of range"),
        )),
    }
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn proc_fd_path(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The xattrs a PAX header carries (`SCHILY.xattr.<name>`), minus overlayfs's own: a
/// layer must not forge whiteouts or redirects through `trusted.overlay.*`.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| Error::malformed("layer tar PAX header", e))?
    else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(|e| Error::malformed("layer tar PAX header", e))?;
        let Ok(key) = ext.key() else { continue };
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            if !name.starts_with("trusted.overlay.") {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Builds a tar from (path, kind) specs with raw header control, so hostile entries
    /// (which the tar crate's builder refuses to write) can be crafted.
    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    fn craft(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (path, data): (&str, &[u8]) = match e {
                E::Dir(p) => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_mode(0o755);
                    (p, b"")
                }
                E::File(p, d) => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_mode(0o644);
                    (p, d)
                }
                E::Sym(p, t) | E::Hard(p, t) => {
                    h.set_entry_type(if matches!(e, E::Sym(..)) {
                        EntryType::Symlink
                    } else {
                        EntryType::Link
                    });
                    h.set_mode(0o777);
                    // Write the raw name bytes: set_link_name refuses '..'.
                    let gnu = h.as_gnu_mut().unwrap();
                    gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
                    (p, b"")
                }
            };
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            }
            h.set_size(data.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    struct Sandbox {
        _tmp: tempfile::TempDir,
        layer: PathBuf,
        outside: PathBuf,
    }

    fn sandbox() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&layer).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"keep").unwrap();
        Sandbox {
            _tmp: tmp,
            layer,
            outside,
        }
    }

    fn outside_untouched(s: &Sandbox) {
        let names: Vec<_> = std::fs::read_dir(&s.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("secret")],
            "something was written outside the layer"
        );
        assert_eq!(std::fs::read(s.outside.join("secret")).unwrap(), b"keep");
    }

    #[test]
    fn dotdot_entry_is_rejected_by_name() {
        let s = sandbox();
        let tar = craft(&[E::File("../outside/pwned", b"x")]);
        let err = unpack_layer(&tar[..], &s.layer).unwrap_err().to_string();
        assert!(
            err.contains("hostile layer entry") && err.contains("../outside/pwned"),
            "{err}"
        );
        outside_untouched(&s);
    }

    #[test]
    fn absolute_path_is_contained() {
        let s = sandbox();
        let abs = format!("{}/pwned", s.outside.display());
        let tar = craft(&[E::File(&abs, b"x")]);
        unpack_layer(&tar[..], &s.layer).unwrap();
        outside_untouched(&s);
        let inside = s.layer.join(abs.trim_start_matches('/'));
        assert_eq!(std::fs::read(inside).unwrap(), b"x");
    }

    #[test]
    fn write_through_dangling_symlink_is_rejected() {
        let s = sandbox();
        let target = s.outside.display().to_string();
        let tar = craft(&[E::Sym("escape", &target), E::File("escape/pwned", b"x")]);
        let err = unpack_layer(&tar[..], &s.layer).unwrap_err().to_string();
        assert!(err.contains("hostile layer entry \"escape\""), "{err}");
        outside_untouched(&s);
    }

    #[test]
    fn write_through_absolute_symlink_stays_inside() {
        let s = sandbox();
        let target = s.outside.display().to_string();
        // The same directories exist inside the layer, so the symlink resolves there.
        let mut dirs = Vec::new();
        let mut acc = String::new();
        for c in target.trim_start_matches('/').split('/') {
            acc = if acc.is_empty() {
                c.to_string()
            } else {
                format!("{acc}/{c}")
            };
            dirs.push(acc.clone());
        }
        let mut entries: Vec<E> = dirs.iter().map(|d| E::Dir(d)).collect();
        entries.push(E::Sym("escape", &target));
        entries.push(E::File("escape/pwned", b"x"));
        let tar = craft(&entries);
        unpack_layer(&tar[..], &s.layer).unwrap();
        outside_untouched(&s);
        // The symlink itself is kept verbatim (inside the container it points inside).
        assert_eq!(
            std::fs::read_link(s.layer.join("escape")).unwrap(),
            PathBuf::from(&target)
        );
        assert_eq!(
            std::fs::read(s.layer.join(target.trim_start_matches('/')).join("pwned")).unwrap(),
            b"x"
        );
    }

    #[test]
    fn write_through_relative_symlink_stays_inside() {
        let s = sandbox();
        let tar = craft(&[
            E::Sym("up", "../../../../../../../.."),
            E::File("up/outside/pwned", b"x"),
        ]);
        unpack_layer(&tar[..], &s.layer).unwrap();
        outside_untouched(&s);
        assert_eq!(std::fs::read(s.layer.join("outside/pwned")).unwrap(), b"x");
    }

    #[test]
    fn file_over_symlink_replaces_the_link_not_its_target() {
        let s = sandbox();
        let target = s.outside.join("secret").display().to_string();
        let tar = craft(&[E::Sym("f", &target), E::File("f", b"overwritten?")]);
        unpack_layer(&tar[..], &s.layer).unwrap();
        outside_untouched(&s);
        let meta = std::fs::symlink_metadata(s.layer.join("f")).unwrap();
        assert!(meta.is_file());
    }

    #[test]
    fn hard_link_outside_is_rejected_by_name() {
        let s = sandbox();
        let tar = craft(&[E::Hard("h", "../outside/secret")]);
        let err = unpack_layer(&tar[..], &s.layer).unwrap_err().to_string();
        assert!(
            err.contains("hostile layer entry") && err.contains("\"h\""),
            "{err}"
        );
        outside_untouched(&s);
    }

    #[test]
    fn hard_link_through_symlink_stays_inside() {
        let s = sandbox();
        let target = s.outside.display().to_string();
        let tar = craft(&[E::Sym("evil", &target), E::Hard("h", "evil/secret")]);
        // The target resolves inside the layer, where it does not exist.
        let err = unpack_layer(&tar[..], &s.layer).unwrap_err().to_string();
        assert!(err.contains("does not exist in the layer"), "{err}");
        outside_untouched(&s);
        assert!(!s.layer.join("h").exists());
    }

    #[test]
    fn hard_link_absolute_target_is_inside() {
        let s = sandbox();
        let tar = craft(&[E::File("a", b"data"), E::Hard("b", "/a")]);
        unpack_layer(&tar[..], &s.layer).unwrap();
        let (a, b) = (
            std::fs::metadata(s.layer.join("a")).unwrap(),
            std::fs::metadata(s.layer.join("b")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let s = sandbox();
        let tar = craft(&[
            E::Dir("d"),
            E::File("d/.wh..wh..opq", b""),
            E::File(".wh.gone", b""),
        ]);
        unpack_layer(&tar[..], &s.layer).unwrap();
        let wh = std::fs::symlink_metadata(s.layer.join("gone")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        let v = xattr_get(&s.layer.join("d"), OPAQUE_XATTR);
        assert_eq!(v.as_deref(), Some(&b"y"[..]));
        assert!(!s.layer.join("d/.wh..wh..opq").exists());
    }

    #[test]
    fn forged_overlay_xattrs_are_dropped() {
        let s = sandbox();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
            ("SCHILY.xattr.user.k", &b"v"[..]),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", &b""[..]).unwrap();
        let tar = b.into_inner().unwrap();
        unpack_layer(&tar[..], &s.layer).unwrap();
        assert_eq!(
            xattr_get(&s.layer.join("f"), "trusted.overlay.redirect"),
            None
        );
        assert_eq!(
            xattr_get(&s.layer.join("f"), "user.k").as_deref(),
            Some(&b"v"[..])
        );
    }

    #[test]
    fn preserves_modes_owners_and_readonly_dirs() {
        let s = sandbox();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o555);
        h.set_size(0);
        b.append_data(&mut h, "ro", &b""[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o4755);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_size(2);
        b.append_data(&mut h, "ro/suid", &b"hi"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Char);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o666);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_size(0);
        b.append_data(&mut h, "null", &b""[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &tar).unwrap();
            e.finish().unwrap()
        };
        let out = unpack_layer(&gz[..], &s.layer).unwrap();
        assert_eq!(out.diff_id, Digest::of(&tar));
        assert_eq!(out.entries, 3);
        let ro = std::fs::metadata(s.layer.join("ro")).unwrap();
        assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
        let f = std::fs::metadata(s.layer.join("ro/suid")).unwrap();
        assert_eq!(f.permissions().mode() & 0o7777, 0o4755);
        if rustix::process::geteuid().is_root() {
            assert_eq!((f.uid(), f.gid()), (1234, 5678));
            let n = std::fs::metadata(s.layer.join("null")).unwrap();
            assert_eq!(n.rdev(), rfs::makedev(1, 3));
        }
    }

    #[test]
    fn zstd_layers_unpack() {
        let s = sandbox();
        let tar = craft(&[E::File("z", b"zstd!")]);
        let z = zstd::encode_all(&tar[..], 3).unwrap();
        let out = unpack_layer(&z[..], &s.layer).unwrap();
        assert_eq!(out.diff_id, Digest::of(&tar));
        assert_eq!(std::fs::read(s.layer.join("z")).unwrap(), b"zstd!");
    }

    #[test]
    fn truncated_tar_is_an_error() {
        let s = sandbox();
        let tar = craft(&[E::File("big", &[7u8; 4096])]);
        let err = unpack_layer(&tar[..1024], &s.layer);
        assert!(err.is_err());
    }

    #[test]
    fn malformed_whiteouts_are_refused_and_remove_nothing() {
        for bad in [".wh.", ".wh..", ".wh...", "d/.wh.", "d/.wh..", "d/.wh..."] {
            let s = sandbox();
            let tar = craft(&[E::Dir("d"), E::File("d/keep", b"k"), E::File(bad, b"")]);
            let err = unpack_layer(&tar[..], &s.layer).unwrap_err();
            assert!(matches!(err, Error::HostileEntry { .. }), "{bad}: {err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("malformed whiteout") && msg.contains(bad.trim_end_matches('/')),
                "{bad}: {msg}"
            );
            outside_untouched(&s);
            assert_eq!(
                std::fs::read(s.layer.join("d/keep")).unwrap(),
                b"k",
                "{bad}"
            );
        }
    }

    #[test]
    fn well_formed_whiteout_names_with_dots_still_work() {
        let s = sandbox();
        let tar = craft(&[E::File(".wh....", b""), E::File(".wh..hidden", b"")]);
        unpack_layer(&tar[..], &s.layer).unwrap();
        use std::os::unix::fs::FileTypeExt;
        for hidden in ["...", ".hidden"] {
            let m = std::fs::symlink_metadata(s.layer.join(hidden)).unwrap();
            assert!(m.file_type().is_char_device(), "{hidden}");
        }
    }

    /// A tar of one entry whose header claims `size` bytes, followed by those bytes made
    /// lazily (zeros): nothing of that size is ever held in memory by the test.
    fn claimed(kind: EntryType, name: &str, size: u64) -> impl Read {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(size);
        h.set_cksum();
        let pad = (512 - size % 512) % 512;
        io::Cursor::new(h.as_bytes().to_vec())
            .chain(io::repeat(0).take(size + pad))
            .chain(io::Cursor::new(vec![0u8; 1024]))
    }

    #[test]
    fn file_over_the_budget_is_refused_before_it_is_created() {
        let s = sandbox();
        let err = unpack_layer_within(
            claimed(EntryType::Regular, "big", 1 << 30),
            &s.layer,
            1 << 20,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { size, .. } if size == 1 << 30),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"big\" is 1 GiB"), "{err}");
        assert!(!s.layer.join("big").exists());
    }

    #[test]
    fn many_files_are_stopped_by_the_running_count() {
        let s = sandbox();
        let data = vec![1u8; 64 << 10];
        let names: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
        let entries: Vec<E> = names.iter().map(|n| E::File(n, &data)).collect();
        let budget = 1 << 20;
        let err = unpack_layer_within(&craft(&entries)[..], &s.layer, budget).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
        let written: u64 = std::fs::read_dir(&s.layer)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            written <= budget,
            "{written} bytes written over a {budget} budget"
        );
        // The same tar fits a budget big enough for it.
        let s2 = sandbox();
        unpack_layer_within(&craft(&entries)[..], &s2.layer, 4 << 20).unwrap();
    }

    #[test]
    fn sparse_bomb_is_refused_on_its_apparent_size() {
        // A GNU sparse file of 512 stored bytes that claims to be 2 GiB: its holes would
        // be written as zeros.
        let s = sandbox();
        let real: u64 = 2 << 30;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::GNUSparse);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(512);
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..6].copy_from_slice(b"sparse");
            gnu.set_real_size(real);
            gnu.sparse[0].set_offset(real - 512);
            gnu.sparse[0].set_length(512);
        }
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(&[7u8; 512]);
        tar.extend_from_slice(&[0u8; 1024]);
        let err = unpack_layer_within(&tar[..], &s.layer, 64 << 20).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { size, .. } if size == real),
            "{err:?}"
        );
        assert!(!s.layer.join("sparse").exists());
        // Within the budget, the same kind of file unpacks to its full apparent size.
        let s2 = sandbox();
        let small: u64 = 4096;
        let mut h2 = h.clone();
        let gnu = h2.as_gnu_mut().unwrap();
        gnu.set_real_size(small);
        gnu.sparse[0].set_offset(small - 512);
        h2.set_cksum();
        let mut tar = h2.as_bytes().to_vec();
        tar.extend_from_slice(&[7u8; 512]);
        tar.extend_from_slice(&[0u8; 1024]);
        unpack_layer_within(&tar[..], &s2.layer, 64 << 20).unwrap();
        let got = std::fs::read(s2.layer.join("sparse")).unwrap();
        assert_eq!(got.len() as u64, small);
        assert!(got[..3584].iter().all(|&b| b == 0) && got[3584..].iter().all(|&b| b == 7));
    }

    #[test]
    fn decompression_bomb_is_stopped_by_the_stream_count() {
        // A directory entry may carry data the unpacker never writes: a gzip bomb hidden
        // there must still be stopped, by the count of tar bytes read.
        let s = sandbox();
        let tar = claimed(EntryType::Directory, "d", 1 << 30);
        let mut gz = flate2::read::GzEncoder::new(tar, flate2::Compression::fast());
        let mut blob = Vec::new();
        // Compress only what the unpacker will get to read: the point is the count.
        (&mut gz).take(64 << 20).read_to_end(&mut blob).unwrap();
        let err = unpack_layer_within(&blob[..], &s.layer, 1 << 20).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { limit, .. } if limit == 1 << 20),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("layer tar (uncompressed)"),
            "{err}"
        );
    }

    fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        match rfs::lgetxattr(p, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(_) => None,
        }
    }
}
