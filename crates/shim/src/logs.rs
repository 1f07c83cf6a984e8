//! Instance logs: JSON lines with timestamps, as Docker's `json-file` driver writes them,
//! rotated as that driver does (`max-size`, `max-file`): the current file is `log.json`,
//! older ones `log.json.1` (the newest) to `log.json.N-1` (the oldest).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which output stream a log entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output (and a terminal's combined output).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One log line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The text, including its newline if it had one.
    pub log: String,
    /// Its stream.
    pub stream: Stream,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

/// How large a log may grow: Docker's json-file `max-size` and `max-file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The current file is rotated before a line would take it past this many bytes;
    /// `None`: never (`max-size=-1`).
    pub max_size: Option<u64>,
    /// How many files are kept, the current one included (at least 1; with 1 the
    /// current file is simply started afresh).
    pub max_files: u32,
}

impl Rotation {
    /// Used when no `--log-opt` says otherwise. Docker's json-file default is no limit,
    /// which lets one container that prints forever fill the host's disk. These are the
    /// defaults of Docker's own `local` driver (20 MB, 5 files: at most ~100 MB per
    /// container), the same order as the kubelet's for CRI runtimes (10 MiB, 5 files):
    /// enough history to debug a service, bounded whatever it prints.
    pub const DEFAULT: Rotation = Rotation {
        max_size: Some(20_000_000),
        max_files: 5,
    };

    /// No limit at all (`max-size=-1`).
    pub const UNLIMITED: Rotation = Rotation {
        max_size: None,
        max_files: 1,
    };
}

/// The path of rotated file `n` (1 is the newest) of the log at `path`: `log.json.N`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Appends entries to a log file, splitting output into lines and rotating the file.
pub struct Writer {
    sink: Option<Sink>,
    partial: [Vec<u8>; 2],
}

/// The file a [`Writer`] writes to, and how much it already holds.
struct Sink {
    path: PathBuf,
    /// `None` after a rotation that could not create the new file: output is dropped
    /// (the bound matters more than the output) until a later write manages to.
    file: Option<File>,
    size: u64,
    rotation: Rotation,
}

/// Lines longer than this are split, as Docker does at 16 KiB.
const MAX_LINE: usize = 16 * 1024;

impl Writer {
    /// Opens (creating) the log at `path` for appending, to be rotated as `rotation` says.
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            sink: Some(Sink {
                path: path.to_path_buf(),
                file: Some(file),
                size,
                rotation,
            }),
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// A writer that keeps nothing (the `none` logging driver).
    pub fn discard() -> Writer {
        Writer {
            sink: None,
            partial: [Vec::new(), Vec::new()],
        }
    }

    /// Records output read from `stream`.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let Some(sink) = &mut self.sink else {
            return Ok(());
        };
        let idx = stream as usize;
        self.partial[idx].extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            let buf = &mut self.partial[idx];
            let cut = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if buf.len() >= MAX_LINE => MAX_LINE,
                None => break,
            };
            let line: Vec<u8> = buf.drain(..cut).collect();
            let start = out.len();
            encode(&mut out, stream, &line);
            sink.before_line(&mut out, start)?;
        }
        sink.append(&out)
    }

    /// Writes whatever partial lines remain (at the end of the run).
    pub fn flush(&mut self) -> std::io::Result<()> {
        let Some(sink) = &mut self.sink else {
            return Ok(());
        };
        let mut out = Vec::new();
        for (idx, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let rest = std::mem::take(&mut self.partial[idx]);
            if !rest.is_empty() {
                let start = out.len();
                encode(&mut out, stream, &rest);
                sink.before_line(&mut out, start)?;
            }
        }
        sink.append(&out)
    }
}

impl Sink {
    /// Called with `out[start..]` the line about to be added to the pending `out[..start]`:
    /// if the line would take the file past `max_size`, writes out what is pending and
    /// rotates, so that the line starts the new file. A line larger than `max_size` on
    /// its own still goes whole into a file of its own (a file exceeds the limit by at
    /// most one line, as Docker's do).
    fn before_line(&mut self, out: &mut Vec<u8>, start: usize) -> std::io::Result<()> {
        let Some(max) = self.rotation.max_size else {
            return Ok(());
        };
        let pending = self.size + start as u64;
        if pending == 0 || pending + (out.len() - start) as u64 <= max {
            return Ok(());
        }
        let line = out.split_off(start);
        let r = self.append(out);
        out.clear();
        out.extend_from_slice(&line);
        r?;
        self.rotate()
    }

    fn append(&mut self, out: &[u8]) -> std::io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(self.create()?);
            self.size = 0;
        }
        if let Some(f) = &mut self.file {
            f.write_all(out)?;
            self.size += out.len() as u64;
        }
        Ok(())
    }

    /// Shifts `log.json.K` to `log.json.K+1` (dropping the oldest), the current file to
    /// `log.json.1` (or away, with one file), and starts a new current file. Readers
    /// following the log notice the new file by its inode.
    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.rotation.max_files.max(1);
        let shifted = (|| {
            // Only the files there are: max-file may be huge, the loop must not be.
            let existing = (1..keep.saturating_sub(1))
                .take_while(|&k| rotated_path(&self.path, k).exists())
                .last()
                .unwrap_or(0);
            for k in (1..=existing).rev() {
                match std::fs::rename(rotated_path(&self.path, k), rotated_path(&self.path, k + 1))
                {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            if keep >= 2 {
                std::fs::rename(&self.path, rotated_path(&self.path, 1))
            } else {
                std::fs::remove_file(&self.path)
            }
        })();
        if let Err(e) = shifted {
            // The history is lost, but the bound holds: start the current file over in
            // place (readers see it shrink).
            return match &self.file {
                Some(f) => {
                    f.set_len(0)?;
                    self.size = 0;
                    Ok(())
                }
                None => Err(e),
            };
        }
        self.file = None;
        self.size = 0;
        self.file = Some(self.create()?);
        Ok(())
    }

    /// The new current file (the old one was just renamed or removed).
    fn create(&self) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
    }
}

fn encode(out: &mut Vec<u8>, stream: Stream, line: &[u8]) {
    let entry = Entry {
        log: String::from_utf8_lossy(line).into_owned(),
        stream,
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    };
    if serde_json::to_writer(&mut *out, &entry).is_ok() {
        out.push(b'\n');
    }
}

/// Reads a rotated log from the start, oldest file first, and then follows it: each
/// [`Reader::read`] passes on the entries written since the previous one, across
/// rotations (a new current file is told by its inode).
pub struct Reader {
    path: PathBuf,
    current: Option<Current>,
    started: bool,
}

/// The current file as the reader holds it open: written files stay readable after a
/// rotation renames or removes them.
struct Current {
    file: File,
    ino: u64,
    offset: u64,
}

impl Reader {
    /// A reader of the log at `path` (which need not exist yet).
    pub fn new(path: &Path) -> Reader {
        Reader {
            path: path.to_path_buf(),
            current: None,
            started: false,
        }
    }

    /// Passes the entries written since the last call (all of them, rotated files first,
    /// on the first call) to `each`, which returns false to stop; returns false if it
    /// did.
    pub fn read(&mut self, each: &mut dyn FnMut(Entry) -> bool) -> std::io::Result<bool> {
        if !self.started {
            self.started = true;
            // The current file first, so that a rotation while the older files are read
            // repeats lines rather than losing them.
            self.current = open_current(&self.path)?;
            let rotated = self.rotated_files(None)?;
            for f in rotated.into_iter().rev() {
                if !read_lines(&f, 0, each)?.1 {
                    return Ok(false);
                }
            }
            return self.read_current(each);
        }
        let Some(cur) = &self.current else {
            self.current = open_current(&self.path)?;
            return self.read_current(each);
        };
        // Looked at before the last read of our file: if the path names another file
        // by then, ours was renamed away before, and what that read finds in it is all
        // it will ever hold.
        let now = match std::fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let old_ino = cur.ino;
        if now
            .as_ref()
            .is_some_and(|m| m.ino() == old_ino && m.len() < cur.offset)
        {
            // Started over in place (a failed rotation's fallback).
            if let Some(c) = &mut self.current {
                c.offset = 0;
            }
        }
        if !self.read_current(each)? {
            return Ok(false);
        }
        let Some(now) = now else {
            return Ok(true); // between a rotation's rename and its new file: next time
        };
        if now.ino() == old_ino {
            return Ok(true);
        }
        // Rotated: the files newer than ours, then the new current one.
        let newer = self.rotated_files(Some(old_ino))?;
        self.current = open_current(&self.path)?;
        for f in newer.into_iter().rev() {
            if !read_lines(&f, 0, each)?.1 {
                return Ok(false);
            }
        }
        self.read_current(each)
    }

    /// The rotated files, newest (`.1`) first, opened; with `until`, only those newer
    /// than the file with that inode (all of them if it is gone).
    fn rotated_files(&self, until: Option<u64>) -> std::io::Result<Vec<File>> {
        let mut files = Vec::new();
        for k in 1.. {
            let f = match File::open(rotated_path(&self.path, k)) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            if until.is_some_and(|ino| f.metadata().is_ok_and(|m| m.ino() == ino)) {
                break;
            }
            files.push(f);
        }
        Ok(files)
    }

    fn read_current(&mut self, each: &mut dyn FnMut(Entry) -> bool) -> std::io::Result<bool> {
        let Some(cur) = &mut self.current else {
            return Ok(true);
        };
        let (offset, go_on) = read_lines(&cur.file, cur.offset, each)?;
        cur.offset = offset;
        Ok(go_on)
    }
}

fn open_current(path: &Path) -> std::io::Result<Option<Current>> {
    match File::open(path) {
        Ok(file) => {
            let ino = file.metadata()?.ino();
            Ok(Some(Current {
                file,
                ino,
                offset: 0,
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the whole lines of `file` from `offset` on into `each`; returns the offset after
/// the last whole line read, and false if `each` asked to stop.
fn read_lines(
    file: &File,
    offset: u64,
    each: &mut dyn FnMut(Entry) -> bool,
) -> std::io::Result<(u64, bool)> {
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(f);
    let mut pos = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            return Ok((pos, true)); // a line still being written: read it next time
        }
        pos += n as u64;
        if let Ok(e) = serde_json::from_str::<Entry>(&line) {
            if !each(e) {
                return Ok((pos, false));
            }
        }
    }
}

/// Every entry of the log at `path` now, oldest first (rotated files included).
pub fn read_all(path: &Path) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    Reader::new(path).read(&mut |e| {
        entries.push(e);
        true
    })?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs_of(r: &mut Reader) -> Vec<String> {
        let mut v = Vec::new();
        r.read(&mut |e| {
            v.push(e.log);
            true
        })
        .unwrap();
        v
    }

    fn total_size(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn splits_lines_and_keeps_streams() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut w = Writer::open(&p, Rotation::UNLIMITED).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"lo\nworld").unwrap();
        w.flush().unwrap();
        let mut r = Reader::new(&p);
        let mut entries = Vec::new();
        r.read(&mut |e| {
            entries.push(e);
            true
        })
        .unwrap();
        let got: Vec<_> = entries.iter().map(|e| (e.stream, e.log.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Stream::Stderr, "oops\n"),
                (Stream::Stdout, "hello\n"),
                (Stream::Stdout, "world")
            ]
        );
        assert!(logs_of(&mut r).is_empty());
    }

    #[test]
    fn rotates_at_max_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let rot = Rotation {
            max_size: Some(1000),
            max_files: 3,
        };
        let mut w = Writer::open(&p, rot).unwrap();
        let mut line_len = 0;
        for i in 0..500 {
            w.write(Stream::Stdout, format!("line {i:04}\n").as_bytes())
                .unwrap();
            if i == 0 {
                line_len = std::fs::metadata(&p).unwrap().len();
            }
        }
        // Every file within the limit; the oldest dropped.
        for f in [p.clone(), rotated_path(&p, 1), rotated_path(&p, 2)] {
            let len = std::fs::metadata(&f).unwrap().len();
            assert!(len <= 1000, "{} holds {len} bytes", f.display());
        }
        assert!(!rotated_path(&p, 3).exists());
        assert!(total_size(dir.path()) <= 3000);
        // Read back oldest first, contiguous, ending with the last line.
        let got = logs_of(&mut Reader::new(&p));
        assert!(got.len() as u64 >= 2 * (1000 / line_len));
        let first: usize = got[0][5..9].parse().unwrap();
        let want: Vec<String> = (first..500).map(|i| format!("line {i:04}\n")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_single_file_starts_over_and_a_huge_line_still_goes_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let rot = Rotation {
            max_size: Some(200),
            max_files: 1,
        };
        let mut w = Writer::open(&p, rot).unwrap();
        for i in 0..50 {
            w.write(Stream::Stdout, format!("{i}\n").as_bytes())
                .unwrap();
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= 200);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let big = "x".repeat(1000) + "\n";
        w.write(Stream::Stdout, big.as_bytes()).unwrap();
        w.write(Stream::Stdout, b"after\n").unwrap();
        assert_eq!(logs_of(&mut Reader::new(&p)), vec!["after\n".to_string()]);
    }

    #[test]
    fn a_follower_keeps_up_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let rot = Rotation {
            max_size: Some(500),
            max_files: 10,
        };
        let mut w = Writer::open(&p, rot).unwrap();
        let mut r = Reader::new(&p);
        let mut got = logs_of(&mut r);
        let mut n = 0;
        // Batches smaller and larger than a file: one rotation or several between reads.
        for batch in [3, 10, 25, 1, 40] {
            for _ in 0..batch {
                w.write(Stream::Stdout, format!("line {n:04}\n").as_bytes())
                    .unwrap();
                n += 1;
            }
            got.extend(logs_of(&mut r));
        }
        let want: Vec<String> = (0..n).map(|i| format!("line {i:04}\n")).collect();
        assert_eq!(got, want);
        // More than the kept files hold between two reads: the dropped lines are gone,
        // the follower goes on with what is kept, in order.
        for _ in 0..200 {
            w.write(Stream::Stdout, format!("line {n:04}\n").as_bytes())
                .unwrap();
            n += 1;
        }
        let more: Vec<usize> = logs_of(&mut r)
            .iter()
            .map(|l| l[5..9].parse().unwrap())
            .collect();
        assert!(more.len() < 200, "nothing was dropped?");
        assert!(more.windows(2).all(|w| w[0] < w[1]), "{more:?}");
        let kept = &more[more.len() - 50..];
        assert_eq!(kept, (n - 50..n).collect::<Vec<_>>());
    }

    #[test]
    fn a_reopened_writer_continues_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let rot = Rotation {
            max_size: Some(300),
            max_files: 2,
        };
        for i in 0..20 {
            let mut w = Writer::open(&p, rot).unwrap();
            w.write(Stream::Stdout, format!("line {i:04}\n").as_bytes())
                .unwrap();
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= 300);
        assert!(rotated_path(&p, 1).exists());
    }

    #[test]
    fn a_huge_max_file_rotates_as_fast_as_a_small_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let rot = Rotation {
            max_size: Some(100),
            max_files: u32::MAX,
        };
        let mut w = Writer::open(&p, rot).unwrap();
        let t = std::time::Instant::now();
        for i in 0..20 {
            w.write(Stream::Stdout, format!("line {i:04}\n").as_bytes())
                .unwrap();
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert!(rotated_path(&p, 18).exists());
        let got = logs_of(&mut Reader::new(&p));
        assert_eq!(got.len(), 20);
    }

    #[test]
    fn discard_writes_nothing() {
        let mut w = Writer::discard();
        w.write(Stream::Stdout, b"x\n").unwrap();
        w.flush().unwrap();
    }
}
