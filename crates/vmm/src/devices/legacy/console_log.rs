//! The serial console's log file, capped: a guest that writes to its console forever
//! (`cat /dev/zero > /dev/ttyS0`) cannot fill the host's disk.
//!
//! Past the cap the file starts over (`ftruncate` to 0: the only call this needs beyond
//! `write`, which the vCPU threads' seccomp filter allows on this one descriptor) with a
//! marker line and the last [`KEEP`] bytes written, so that its tail, which the engine
//! shows when a guest fails, still holds the latest output and says that some was
//! dropped.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, RawFd};

/// At most this many bytes are in the file (a debug log: boot messages and a panic fit).
pub(crate) const CAP: u64 = 1 << 20;

/// How much of the latest output a restarted file begins with.
pub(crate) const KEEP: usize = 64 << 10;

/// An append-only file of at most `cap` bytes.
pub(crate) struct CappedLog {
    file: File,
    size: u64,
    cap: u64,
    keep: usize,
    /// The last `keep` bytes written.
    tail: VecDeque<u8>,
    /// How many bytes were dropped in all so far (for the marker).
    dropped: u64,
}

impl CappedLog {
    /// Opens (creating) `path` for appending, capped at [`CAP`].
    #[cfg(test)]
    pub(crate) fn open(path: &std::path::Path) -> std::io::Result<CappedLog> {
        Self::open_with(path, CAP, KEEP)
    }

    /// Opens `path` with its own bounds (tests). `keep` must be well under `cap`; it is
    /// clamped to a quarter of it.
    #[cfg(test)]
    pub(crate) fn open_with(
        path: &std::path::Path,
        cap: u64,
        keep: usize,
    ) -> std::io::Result<CappedLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        Self::with_file(file, cap, keep)
    }

    /// Takes over `file`, open for reading and appending, capped at [`CAP`].
    pub(crate) fn from_file(file: File) -> std::io::Result<CappedLog> {
        Self::with_file(file, CAP, KEEP)
    }

    fn with_file(mut file: File, cap: u64, keep: usize) -> std::io::Result<CappedLog> {
        let size = file.metadata()?.len();
        let keep = keep.min(usize::try_from(cap / 4).unwrap_or(usize::MAX));
        // What an earlier run left is the tail to keep if this one overflows at once.
        let mut seed = Vec::new();
        file.seek(SeekFrom::Start(size.saturating_sub(keep as u64)))?;
        (&mut file).take(keep as u64).read_to_end(&mut seed)?;
        Ok(CappedLog {
            file,
            size,
            cap,
            keep,
            tail: seed.into(),
            dropped: 0,
        })
    }

    /// The descriptor that may be truncated (for the seccomp rule).
    pub(crate) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Starts the file over with the marker and the kept tail.
    fn restart(&mut self) -> std::io::Result<()> {
        self.dropped += self.size.saturating_sub(self.tail.len() as u64);
        self.file.set_len(0)?;
        let (a, b) = self.tail.as_slices();
        let marker = format!(
            "\n[vessel: the console log reached its cap of {} bytes; {} bytes of older output were dropped, the last {} follow]\n",
            self.cap,
            self.dropped,
            a.len() + b.len()
        );
        let mut start = Vec::with_capacity(marker.len() + a.len() + b.len());
        start.extend_from_slice(marker.as_bytes());
        start.extend_from_slice(a);
        start.extend_from_slice(b);
        self.size = 0;
        self.file.write_all(&start)?;
        self.size = start.len() as u64;
        Ok(())
    }

    fn remember(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.keep)..];
        let over = (self.tail.len() + data.len()).saturating_sub(self.keep);
        self.tail.drain(..over);
        self.tail.extend(data);
    }
}

impl Write for CappedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One huge write keeps only what fits beside the kept tail and the marker.
        let room = usize::try_from(self.cap / 2).unwrap_or(usize::MAX);
        let data = &buf[buf.len().saturating_sub(room)..];
        if self.size + data.len() as u64 > self.cap {
            self.restart()?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        self.dropped += (buf.len() - data.len()) as u64;
        self.remember(data);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_stays_under_the_cap_and_the_latest_output_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut log = CappedLog::open_with(&p, 4096, 512).unwrap();
        // Byte by byte, as the UART writes: 100 times the cap.
        for i in 0..4096 * 100u32 {
            log.write_all(&[b'a' + (i % 26) as u8]).unwrap();
            if i % 1000 == 0 {
                assert!(std::fs::metadata(&p).unwrap().len() <= 4096);
            }
        }
        log.write_all(b"\nKernel panic - not syncing: the end\n")
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.len() <= 4096, "{} bytes", text.len());
        assert!(text.ends_with("Kernel panic - not syncing: the end\n"));
        assert!(text.contains("[vessel: the console log reached its cap of 4096 bytes"));
        // What follows the marker is contiguous output: the kept tail, then the rest.
        let after = text.rsplit("follow]\n").next().unwrap();
        assert!(after.len() >= 512, "{after:?}");
    }

    #[test]
    fn one_huge_write_and_a_large_earlier_file_are_bounded_too() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        std::fs::write(&p, vec![b'o'; 10_000]).unwrap();
        let mut log = CappedLog::open_with(&p, 4096, 512).unwrap();
        log.write_all(&[b'z'; 100_000]).unwrap();
        log.write_all(b"end\n").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.len() <= 4096, "{} bytes", text.len());
        assert!(text.ends_with("zzzend\n"));
    }

    #[test]
    fn below_the_cap_it_is_a_plain_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        std::fs::write(&p, b"before\n").unwrap();
        let mut log = CappedLog::open(&p).unwrap();
        log.write_all(b"hello\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "before\nhello\n");
    }
}
