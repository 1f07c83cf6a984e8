//! A reader that follows a tar stream's framing on its way to the `tar` crate and stops
//! hostile sizes before the crate acts on them.
//!
//! The `tar` crate reads a GNU long name (`L`), long link (`K`) or PAX header (`x`) into
//! memory whole, whatever size its 512-byte header claims: one header claiming 3 GiB is
//! an out-of-memory kill. It cannot be told a limit, so this reader tracks where each
//! header block falls (mirroring the crate's own rules: PAX `size` overrides, GNU sparse
//! extension blocks, end-of-archive) and fails the read that completes a header whose
//! extension data is over [`MAX_TAR_HEADER`], before the crate has buffered any of it.
//!
//! It also bounds the whole stream: at most `budget` bytes of tar (the disk budget: a
//! tar bigger than the disk it is unpacked to cannot be unpacked, and the data of
//! entries that are skipped, not written, must not be an endless CPU sink either), and
//! at most [`MAX_TAR_TRAILER`] bytes after the end-of-archive blocks.

use std::io::{self, Read};

use tar::{EntryType, GnuExtSparseHeader, Header, PaxExtensions};

use crate::error::Error;
use crate::limits::{MAX_TAR_HEADER, MAX_TAR_TRAILER};

const BLOCK: usize = 512;

/// Where in the tar stream the next byte falls.
#[derive(Clone, Copy, Debug)]
enum State {
    /// Inside a 512-byte header block.
    Header,
    /// Inside a GNU sparse extension block; `data` bytes (padded) follow the last one.
    SparseExt { data: u64 },
    /// Inside a PAX extension header's data (collected, at most `MAX_TAR_HEADER`), then
    /// `pad` bytes of padding.
    Pax { left: u64, pad: u64 },
    /// Inside entry data or padding the crate reads on its own.
    Skip(u64),
    /// After the end-of-archive block: `n` bytes seen so far.
    Trailer(u64),
}

/// Passes a tar stream through unchanged, failing on a hostile size (see the module doc).
pub(crate) struct TarGuard<R> {
    inner: R,
    /// What the tar is, for errors ("layer tar", "archive").
    what: String,
    state: State,
    block: [u8; BLOCK],
    filled: usize,
    pax: Vec<u8>,
    /// The `size` of the PAX header that applies to the next real entry.
    pending_pax_size: Option<u64>,
    total: u64,
    budget: u64,
    budget_name: &'static str,
    failure: Option<Error>,
}

impl<R: Read> TarGuard<R> {
    /// Guards `inner`, a plain (decompressed) tar, allowing at most `budget` bytes of it.
    pub(crate) fn new(
        inner: R,
        what: impl Into<String>,
        budget: u64,
        budget_name: &'static str,
    ) -> Self {
        TarGuard {
            inner,
            what: what.into(),
            state: State::Header,
            block: [0; BLOCK],
            filled: 0,
            pax: Vec::new(),
            pending_pax_size: None,
            total: 0,
            budget,
            budget_name,
            failure: None,
        }
    }

    /// The error that stopped the stream, if the guard stopped it. The `tar` crate only
    /// passes on an `io::Error`'s text; this is the typed original.
    pub(crate) fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    /// Reads (and checks) whatever follows the point where the consumer stopped.
    pub(crate) fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }

    fn observe(&mut self, mut data: &[u8]) -> Result<(), Error> {
        self.total = self.total.saturating_add(data.len() as u64);
        if self.total > self.budget {
            return Err(Error::TooLarge {
                what: format!("{} (uncompressed)", self.what),
                size: self.total,
                limit: self.budget,
                limit_name: self.budget_name,
            });
        }
        while !data.is_empty() {
            match self.state {
                State::Skip(left) => {
                    let k = left.min(data.len() as u64);
                    data = &data[k as usize..];
                    self.state = skip(left - k);
                }
                State::Header | State::SparseExt { .. } => {
                    let k = (BLOCK - self.filled).min(data.len());
                    self.block[self.filled..self.filled + k].copy_from_slice(&data[..k]);
                    self.filled += k;
                    data = &data[k..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        match self.state {
                            State::SparseExt { data } => self.sparse_block_done(data),
                            _ => self.header_done()?,
                        }
                    }
                }
                State::Pax { left, pad } => {
                    let k = left.min(data.len() as u64);
                    self.pax.extend_from_slice(&data[..k as usize]);
                    data = &data[k as usize..];
                    self.state = State::Pax {
                        left: left - k,
                        pad,
                    };
                    if left == k {
                        self.pax_done(pad);
                    }
                }
                State::Trailer(n) => {
                    let n = n.saturating_add(data.len() as u64);
                    if n > MAX_TAR_TRAILER {
                        return Err(Error::TooLarge {
                            what: format!("{}: data after the end-of-archive blocks", self.what),
                            size: n,
                            limit: MAX_TAR_TRAILER,
                            limit_name: "limit",
                        });
                    }
                    self.state = State::Trailer(n);
                    data = &[];
                }
            }
        }
        Ok(())
    }

    /// A header block is complete: decide what follows it, as the `tar` crate will.
    fn header_done(&mut self) -> Result<(), Error> {
        if self.block.iter().all(|&b| b == 0) {
            // The crate stops at the first zero block; the rest is padding.
            self.state = State::Trailer(0);
            return Ok(());
        }
        let mut header = Header::new_old();
        header.as_mut_bytes().copy_from_slice(&self.block);
        let malformed = |reason: String| Error::malformed(self.what.clone(), reason);
        // The crate checks the sum before trusting any field; so do we.
        let sum = self.block[..148]
            .iter()
            .chain(&self.block[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        let cksum = header
            .cksum()
            .map_err(|e| malformed(format!("tar header checksum: {e}")))?;
        if sum != cksum {
            return Err(malformed("tar header checksum mismatch".into()));
        }
        let kind = header.entry_type();
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        let mut size = header
            .entry_size()
            .map_err(|e| malformed(format!("tar header size: {e}")))?;
        if !extension {
            if let Some(pax) = self.pending_pax_size {
                size = pax;
            }
        }
        if extension && size > MAX_TAR_HEADER {
            let name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
            return Err(Error::TooLarge {
                what: format!(
                    "{}: tar {} header {name:?}",
                    self.what,
                    extension_name(kind)
                ),
                size,
                limit: MAX_TAR_HEADER,
                limit_name: "limit",
            });
        }
        let padded = size
            .checked_add(BLOCK as u64 - 1)
            .ok_or_else(|| malformed("tar entry size overflows".into()))?
            & !(BLOCK as u64 - 1);
        // The crate folds L, K and x headers into the next entry only when they are GNU
        // or ustar headers; otherwise they are entries of their own.
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        if recognized && kind.is_pax_local_extensions() {
            self.pax.clear();
            self.state = State::Pax {
                left: size,
                pad: padded - size,
            };
            if size == 0 {
                self.pax_done(padded - size);
            }
        } else if recognized && (kind.is_gnu_longname() || kind.is_gnu_longlink()) {
            self.state = skip(padded);
        } else {
            // A real entry: the PAX header (if any) was used up by it.
            self.pending_pax_size = None;
            let extended =
                kind == EntryType::GNUSparse && header.as_gnu().is_some_and(|g| g.is_extended());
            self.state = if extended {
                State::SparseExt { data: padded }
            } else {
                skip(padded)
            };
        }
        Ok(())
    }

    fn sparse_block_done(&mut self, data: u64) {
        let mut ext = GnuExtSparseHeader::new();
        ext.as_mut_bytes().copy_from_slice(&self.block);
        self.state = if ext.is_extended() {
            State::SparseExt { data }
        } else {
            skip(data)
        };
    }

    fn pax_done(&mut self, pad: u64) {
        self.pending_pax_size = pax_size(&self.pax);
        self.pax = Vec::new();
        self.state = skip(pad);
    }
}

fn skip(n: u64) -> State {
    if n == 0 {
        State::Header
    } else {
        State::Skip(n)
    }
}

fn extension_name(kind: EntryType) -> &'static str {
    if kind.is_gnu_longname() {
        "GNU long name"
    } else if kind.is_gnu_longlink() {
        "GNU long link"
    } else if kind.is_pax_global_extensions() {
        "PAX global"
    } else {
        "PAX"
    }
}

/// The `size` record of a PAX header, read exactly as the `tar` crate reads it (a bad
/// record before it, or a value that is not a number, means none).
fn pax_size(data: &[u8]) -> Option<u64> {
    for ext in PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failure {
            return Err(io::Error::other(f.to_string()));
        }
        let n = self.inner.read(buf)?;
        if let Err(e) = self.observe(&buf[..n]) {
            let msg = e.to_string();
            self.failure = Some(e);
            return Err(io::Error::other(msg));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EntryType, name: &str, size: u64) -> [u8; BLOCK] {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        *h.as_bytes()
    }

    fn guard_all(data: &[u8], budget: u64) -> Result<u64, Error> {
        let mut g = TarGuard::new(data, "test tar", budget, "budget");
        match g.drain() {
            Ok(n) => Ok(n),
            Err(_) => Err(g.take_failure().unwrap()),
        }
    }

    #[test]
    fn follows_pax_size_overrides_and_catches_the_header_after() {
        // A PAX header says the next entry is 1024 bytes though its header says 0: the
        // long-name header hidden in those 1024 bytes must not be taken for a header,
        // and the one after them must be.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"1024"[..])]).unwrap();
        let mut tar = b.into_inner().unwrap();
        tar.truncate(tar.len() - 1024); // the builder's end-of-archive blocks
        tar.extend_from_slice(&header(EntryType::Regular, "f", 0));
        tar.extend_from_slice(&header(EntryType::GNULongName, "hidden", 5 << 30));
        tar.extend_from_slice(&[0u8; 512]);
        assert!(guard_all(&tar, u64::MAX).is_ok());
        tar.extend_from_slice(&header(EntryType::GNULongName, "././@LongLink", 5 << 30));
        let err = guard_all(&tar, u64::MAX).unwrap_err();
        assert!(
            err.to_string()
                .contains("tar GNU long name header \"././@LongLink\" is 5 GiB"),
            "{err}"
        );
    }

    #[test]
    fn stream_over_budget_is_stopped() {
        let tar = header(EntryType::Directory, "d", 1 << 20);
        let stream = tar.chain(io::repeat(0).take(1 << 20));
        let mut g = TarGuard::new(stream, "test tar", 4096, "budget");
        assert!(g.drain().is_err());
        assert!(matches!(
            g.take_failure(),
            Some(Error::TooLarge { limit: 4096, .. })
        ));
    }

    #[test]
    fn trailer_is_bounded() {
        let mut tar = header(EntryType::Regular, "f", 0).to_vec();
        tar.extend_from_slice(&[0u8; 1024]);
        assert!(guard_all(&tar, u64::MAX).is_ok());
        let stream = (&tar[..]).chain(io::repeat(0).take(MAX_TAR_TRAILER + 1));
        let mut g = TarGuard::new(stream, "test tar", u64::MAX, "budget");
        assert!(g.drain().is_err());
        assert!(g
            .take_failure()
            .unwrap()
            .to_string()
            .contains("after the end-of-archive"));
    }
}
