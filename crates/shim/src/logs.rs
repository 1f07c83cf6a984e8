//! Instance logs: JSON lines with timestamps, as Docker's `json-file` driver writes them.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

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

/// Appends entries to a log file, splitting output into lines.
pub struct Writer {
    file: File,
    partial: [Vec<u8>; 2],
}

/// Lines longer than this are split, as Docker does at 16 KiB.
const MAX_LINE: usize = 16 * 1024;

impl Writer {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Writer {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Records output read from `stream`.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
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
            encode(&mut out, stream, &line);
        }
        if !out.is_empty() {
            self.file.write_all(&out)?;
        }
        Ok(())
    }

    /// Writes whatever partial lines remain (at the end of the run).
    pub fn flush(&mut self) -> std::io::Result<()> {
        let mut out = Vec::new();
        for (idx, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let rest = std::mem::take(&mut self.partial[idx]);
            if !rest.is_empty() {
                encode(&mut out, stream, &rest);
            }
        }
        self.file.write_all(&out)
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

/// Reads entries from `offset` on; returns them and the offset after the last whole line.
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<Entry>, u64)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(f);
    let mut entries = Vec::new();
    let mut pos = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break; // a line still being written: read it next time
        }
        pos += n as u64;
        if let Ok(e) = serde_json::from_str::<Entry>(&line) {
            entries.push(e);
        }
    }
    Ok((entries, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_keeps_streams() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut w = Writer::open(&p).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"lo\nworld").unwrap();
        w.flush().unwrap();
        let (entries, end) = read_from(&p, 0).unwrap();
        let got: Vec<_> = entries.iter().map(|e| (e.stream, e.log.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Stream::Stderr, "oops\n"),
                (Stream::Stdout, "hello\n"),
                (Stream::Stdout, "world")
            ]
        );
        assert_eq!(end, std::fs::metadata(&p).unwrap().len());
        let (more, _) = read_from(&p, end).unwrap();
        assert!(more.is_empty());
    }
}
