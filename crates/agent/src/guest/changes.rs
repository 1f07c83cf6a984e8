//! A build step's changes: after its command exited 0, the overlay's upper directory as an
//! OCI layer (a tar whose deletions are `.wh.NAME` entries and whose opaque directories
//! hold `.wh..wh..opq`), streamed to the host in [`Kind::Changes`] frames.
//!
//! The host trusts none of it: it reads the stream as it reads a pulled layer.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use vessel_agent::protocol::Kind;

use super::command;

/// Bytes per `Changes` frame.
const CHUNK: usize = 256 * 1024;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// What the agent itself wrote into the root before the command (see
/// `rootfs::write_identity_files`): the step's host name and addresses are not its
/// changes, as a container's bind-mounted ones are not.
const AGENT_FILES: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// Buffers writes into `Changes` frames.
struct Frames<'a> {
    console: &'a File,
    buf: Vec<u8>,
}

impl Write for Frames<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            command::send(self.console, Kind::Changes, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Ends every process the step left behind, then sends the upper directory `upper`.
pub fn send(console: &File, upper: &File) -> io::Result<()> {
    // SAFETY: kill(-1) signals every process but this one (PID 1); nothing else of the
    // step may write into the upper directory while it is read.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // The upper directory through this process's descriptor: the root was switched.
    let root = PathBuf::from(format!("/proc/self/fd/{}", upper.as_raw_fd()));
    let mut b = tar::Builder::new(Frames {
        console,
        buf: Vec::with_capacity(CHUNK),
    });
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    append_tree(&mut b, &root)?;
    let mut frames = b.into_inner()?;
    frames.flush()
}

/// Appends what `root` holds, depth first in name order, as OCI layer entries.
fn append_tree<W: Write>(b: &mut tar::Builder<W>, root: &Path) -> io::Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        if !rel.as_os_str().is_empty() && is_opaque(&full) {
            append_empty(b, &rel.join(OPAQUE_MARKER))?;
        }
        let mut names: Vec<_> = fs::read_dir(&full)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel_path = rel.join(&name);
            if AGENT_FILES.iter().any(|f| Path::new(f) == rel_path) {
                continue;
            }
            let path = root.join(&rel_path);
            let meta = fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                // overlayfs's whiteout: the lower layers' entry is deleted.
                let mut hidden = std::ffi::OsString::from(WHITEOUT_PREFIX);
                hidden.push(&name);
                append_empty(b, &rel.join(hidden))?;
                continue;
            }
            if ft.is_socket() {
                continue; // tar cannot carry sockets
            }
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            h.set_mode(meta.mode() & 0o7777);
            if ft.is_dir() {
                h.set_size(0);
                b.append_data(&mut h, &rel_path, io::empty())?;
                subdirs.push(rel_path);
            } else if ft.is_symlink() {
                h.set_size(0);
                b.append_link(&mut h, &rel_path, fs::read_link(&path)?)?;
            } else if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, &rel_path, first)?;
            } else {
                if meta.nlink() > 1 {
                    links.insert((meta.dev(), meta.ino()), rel_path.clone());
                }
                if ft.is_char_device() || ft.is_block_device() {
                    h.set_device_major(libc::major(meta.rdev()))?;
                    h.set_device_minor(libc::minor(meta.rdev()))?;
                    h.set_size(0);
                    b.append_data(&mut h, &rel_path, io::empty())?;
                } else if ft.is_fifo() {
                    h.set_size(0);
                    b.append_data(&mut h, &rel_path, io::empty())?;
                } else {
                    b.append_data(&mut h, &rel_path, File::open(&path)?)?;
                }
            }
        }
        // Depth-first, in name order: pushed reversed so that the first name pops first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// An empty regular file entry (a whiteout or an opaque marker).
fn append_empty<W: Write>(b: &mut tar::Builder<W>, path: &Path) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(0);
    b.append_data(&mut h, path, io::empty())
}

/// Whether overlayfs marked directory `dir` opaque (it hides the lower layers' one).
fn is_opaque(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut value = [0u8; 2];
    // SAFETY: NUL-terminated path and name; the buffer and its length describe `value`.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}
