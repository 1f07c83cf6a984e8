//! `vessel load` of hostile archives, through the real binary: a tar header claiming GiBs
//! fails with exit 1 and one clear line, in bounded memory, leaving nothing behind.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A 512-byte GNU tar header of type `kind` for `name` claiming `size` bytes, written by
/// hand (this crate does not depend on a tar library).
fn header(kind: u8, name: &str, size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8], at: usize, len: usize, v: u64| {
        let s = format!("{v:0width$o}", width = len - 1);
        h[at..at + len - 1].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o644); // mode
    octal(&mut h, 108, 8, 0); // uid
    octal(&mut h, 116, 8, 0); // gid
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 0); // mtime
    h[156] = kind;
    h[257..265].copy_from_slice(b"ustar  \0"); // GNU magic and version
    h[148..156].copy_from_slice(b"        "); // the checksum counts itself as spaces
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn load_of_a_multi_gib_long_name_exits_1_in_bounded_memory() {
    let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("prlimit (util-linux) is needed to bound the loader's address space");
    let root = tempfile::tempdir().unwrap();
    // 1 GiB of address space: the loader needs far less; buffering the 3 GiB name the
    // header claims cannot fit.
    let mut child = Command::new(prlimit)
        .arg("--as=1073741824")
        .arg(env!("CARGO_BIN_EXE_vessel"))
        .arg("--root")
        .arg(root.path())
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vessel load under prlimit");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // The header, then the 3 GiB it claims, made lazily; stops when vessel hangs up.
        let size: u64 = 3 << 30;
        let mut stream =
            io::Cursor::new(header(b'L', "././@LongLink", size)).chain(io::repeat(0).take(size));
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 || stdin.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("vessel load did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    feeder.join().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "status {status:?}, stderr: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("GNU long name header")
            && stderr.contains("is 3 GiB, over the 1 MiB limit"),
        "{stderr}"
    );
    let images = root.path().join("images");
    assert_eq!(
        entries(&images.join("tmp")),
        Vec::<String>::new(),
        "tmp leftovers"
    );
    assert_eq!(
        entries(&images.join("layers")),
        Vec::<String>::new(),
        "layer leftovers"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--root")
        .arg(root.path())
        .args(["images", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "an image was loaded"
    );
}
