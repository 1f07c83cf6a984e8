//! The size limits hostile image input is held to, in one place.
//!
//! Everything an image brings (layer tars, archives, manifests, configs) comes from
//! someone else. These bounds make sure a lie about a size, a decompression bomb or a
//! multi-GiB document ends in a one-line error instead of an out-of-memory kill or a
//! full disk:
//!
//! - a tar's GNU long name/link and PAX headers are at most [`MAX_TAR_HEADER`], checked
//!   from the 512-byte header before any of their data is buffered (see `tar_guard`);
//! - manifests, indexes and an archive's `manifest.json`/`index.json` are at most
//!   [`MAX_MANIFEST`], configs at most [`MAX_CONFIG`], refused without being read whole;
//! - what one layer (or one archive being loaded) puts on disk is counted as it is
//!   written against a [`DiskLimits`] budget: the free space of the store's filesystem
//!   less a reserve, so a pull or load can never fill the disk.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The largest GNU long name (`L`), long link (`K`) or PAX (`x`, `g`) header accepted.
///
/// Linux paths are at most `PATH_MAX` (4 KiB); the largest legitimate PAX header carries a
/// file's xattrs, whose values Linux caps at 64 KiB each (`XATTR_SIZE_MAX`) and whose
/// names fit in 64 KiB together (`XATTR_LIST_MAX`). 1 MiB leaves room for several
/// maximal xattrs while keeping what the tar crate buffers per entry small.
pub const MAX_TAR_HEADER: u64 = 1 << 20;

/// The largest image manifest, index, or archive `manifest.json`/`index.json` accepted:
/// 4 MiB, as containerd and the distribution registry cap manifests.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// The largest image config accepted. Configs carry history and labels, so they are
/// allowed more than manifests; anything bigger is not a config.
pub const MAX_CONFIG: u64 = 64 << 20;

/// The most data accepted after a tar's end-of-archive blocks. Writers pad to their
/// record size (10 KiB for GNU tar's default, at most a few hundred KiB in practice);
/// the digest covers the padding, so it must be read, but not without end.
pub const MAX_TAR_TRAILER: u64 = 4 << 20;

/// What every tar entry is charged against the disk budget besides its data: its inode,
/// directory entry and metadata (one tar block's worth), so that millions of empty files
/// cannot exhaust the filesystem for free.
pub const ENTRY_OVERHEAD: u64 = 512;

/// The default free-space reserve: 5% of the filesystem...
const DEFAULT_RESERVE_PERCENT: u64 = 5;
/// ...but never more than 1 GiB, so that large disks are not held back needlessly.
const DEFAULT_RESERVE_MAX: u64 = 1 << 30;

/// How much of the store's filesystem one layer (or one archive load) may fill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskLimits {
    /// Free bytes to leave on the filesystem. `None`: 5% of its size, at most 1 GiB.
    pub reserve: Option<u64>,
    /// A fixed cap on the bytes one layer may write, applied on top of the free-space
    /// check. `None`: only free space bounds it.
    pub max_layer: Option<u64>,
}

impl DiskLimits {
    /// The number of bytes that may be written on the filesystem holding `path` now: its
    /// free space less the reserve, and at most `max_layer`.
    pub fn budget(&self, path: &Path) -> Result<u64> {
        let st = rustix::fs::statvfs(path).map_err(Error::errno("check free space of", path))?;
        let avail = st.f_bavail.saturating_mul(st.f_frsize);
        let total = st.f_blocks.saturating_mul(st.f_frsize);
        let reserve = self
            .reserve
            .unwrap_or_else(|| (total / 100 * DEFAULT_RESERVE_PERCENT).min(DEFAULT_RESERVE_MAX));
        let free = avail.saturating_sub(reserve);
        Ok(self.max_layer.map_or(free, |m| m.min(free)))
    }
}

/// The name the disk budget goes by in errors.
pub(crate) const DISK_BUDGET: &str = "disk budget (free space of the image store less its reserve)";

/// Reads a whole file of at most `limit` bytes, refusing a bigger one before reading it.
pub fn read_file_capped(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(Error::io("open", path))?;
    let len = file.metadata().map_err(Error::io("stat", path))?.len();
    check_len(len, limit, what)?;
    read_capped(file, limit, what).map_err(|e| match e {
        Error::Io { op, source, .. } => Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Reads a stream of at most `limit` bytes, never holding more than `limit + 1` of it.
pub fn read_capped(reader: impl Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(Error::io("read", what))?;
    check_len(out.len() as u64, limit, what)?;
    Ok(out)
}

/// Refuses a document of `len` bytes over `limit`.
pub fn check_len(len: u64, limit: u64, what: &str) -> Result<()> {
    if len > limit {
        return Err(Error::TooLarge {
            what: what.to_string(),
            size: len,
            limit,
            limit_name: "limit",
        });
    }
    Ok(())
}

/// A byte count for people: `512 bytes`, `1 MiB`, `3.2 GiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut unit = 0;
    let mut scale = 1024u64;
    while unit + 1 < UNITS.len() && n / scale >= 1024 {
        unit += 1;
        scale *= 1024;
    }
    if n % scale == 0 {
        format!("{} {}", n / scale, UNITS[unit])
    } else {
        format!("{:.1} {}", n as f64 / scale as f64, UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 bytes");
        assert_eq!(human(1 << 20), "1 MiB");
        assert_eq!(human(3 << 30), "3 GiB");
        assert_eq!(human((1 << 30) + (1 << 29)), "1.5 GiB");
        assert_eq!(human(1 << 40), "1 TiB");
        assert_eq!(human(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn read_capped_refuses_without_reading_everything() {
        // An endless stream: only limit + 1 bytes are ever taken from it.
        let err = read_capped(std::io::repeat(b'{'), 1024, "manifest").unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    size: 1025,
                    limit: 1024,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(read_capped(&b"{}"[..], 1024, "m").unwrap(), b"{}");
    }

    #[test]
    fn budget_honours_reserve_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let free = DiskLimits {
            reserve: Some(0),
            max_layer: None,
        }
        .budget(dir.path())
        .unwrap();
        assert!(free > 0);
        let capped = DiskLimits {
            reserve: Some(0),
            max_layer: Some(1000),
        };
        assert_eq!(capped.budget(dir.path()).unwrap(), 1000.min(free));
        let all_reserved = DiskLimits {
            reserve: Some(u64::MAX),
            max_layer: None,
        };
        assert_eq!(all_reserved.budget(dir.path()).unwrap(), 0);
    }
}
