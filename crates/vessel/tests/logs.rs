//! End-to-end tests of bounded logs: `--log-opt max-size/max-file` rotation as Docker's
//! json-file driver does it, the default bound, `--log-driver none`, refusals of bad
//! options, and `logs -f` across a rotation. Each attacks the bound with a container that
//! prints more than it allows.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// The instance's log files: `log.json` and its rotated `log.json.N`, with their sizes.
fn log_files(id: &str) -> Vec<(String, u64)> {
    let dir = root().join("instances").join(id);
    let mut v: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("log.json"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

fn total(files: &[(String, u64)]) -> u64 {
    files.iter().map(|(_, n)| n).sum()
}

fn instance_dir(id: &str) -> PathBuf {
    root().join("instances").join(id)
}

/// The numbers printed one per line by the loops below, in order.
fn numbers(out: &str) -> Vec<u64> {
    out.lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a number line: {l:?}"))
        })
        .collect()
}

#[test]
fn a_container_printing_forever_is_rotated_within_max_size_and_max_file() {
    let n = name("logrot");
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--log-opt",
        "max-size=100k",
        "--log-opt",
        "max-file=2",
        "busybox",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo $i; done",
    ]);
    let id = id_of(&n);
    // A JSON line here is ~80 bytes; Docker's bound: max-file files of max-size, each
    // exceeded by at most one line.
    let bound = 2 * (100_000 + 200);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut biggest = 0;
    while Instant::now() < deadline {
        let files = log_files(&id);
        biggest = biggest.max(total(&files));
        assert!(
            total(&files) <= bound,
            "the log outgrew max-size x max-file: {files:?}"
        );
        assert!(files.len() <= 2, "more files than max-file=2: {files:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&["kill", &n]);
    ok(&["wait", &n]);
    let files = log_files(&id);
    assert!(total(&files) <= bound, "{files:?}");
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        ["log.json", "log.json.1"],
        "rotated once at least, one old file kept"
    );
    // `vessel logs`: the most recent lines, oldest first, with none missing in between.
    let got = numbers(&ok(&["logs", &n]));
    assert!(got.len() > 1000, "only {} lines", got.len());
    let last = *got.last().unwrap();
    assert!(
        got[0] > 1,
        "the oldest lines should have been dropped (printed {last})"
    );
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "the lines read back are not contiguous"
    );
    let tail = numbers(&ok(&["logs", "--tail", "3", &n]));
    assert_eq!(tail, [last - 2, last - 1, last]);
    let cfg = &inspect(&n)["HostConfig"]["LogConfig"];
    assert_eq!(cfg["Type"], "json-file");
    assert_eq!(cfg["Config"]["max-size"], "100k");
    assert_eq!(cfg["Config"]["max-file"], "2");
    // `rm` takes the rotated files with the instance.
    ok(&["rm", &n]);
    assert!(
        !instance_dir(&id).exists(),
        "the instance directory (and its logs) is left"
    );
    eprintln!("largest total seen: {biggest} bytes");
}

#[test]
fn the_default_bound_applies_without_options() {
    let n = name("logdef");
    // 110 MB in 1000-byte lines: past the default's 5 files of 20 MB.
    let t = Instant::now();
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "busybox",
        "sh",
        "-c",
        "head -c 110000000 /dev/zero | tr '\\0' x | fold -w 999",
    ]);
    let id = id_of(&n);
    let code = ok(&["wait", &n]);
    assert_eq!(code.trim(), "0");
    let files = log_files(&id);
    eprintln!("printed and logged 110 MB in {:?}: {files:?}", t.elapsed());
    let line = 1100;
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "log.json",
            "log.json.1",
            "log.json.2",
            "log.json.3",
            "log.json.4"
        ],
        "the default keeps 5 files"
    );
    for (f, size) in &files {
        assert!(
            *size <= 20_000_000 + line,
            "{f} is {size} bytes, past the default max-size of 20m"
        );
    }
    assert!(total(&files) <= 5 * (20_000_000 + line));
    let cfg = &inspect(&n)["HostConfig"]["LogConfig"];
    assert_eq!(cfg["Type"], "json-file");
    assert_eq!(cfg["Config"]["max-size"], "20m");
    assert_eq!(cfg["Config"]["max-file"], "5");
    ok(&["rm", &n]);
}

#[test]
fn bad_log_options_are_refused_with_125_naming_the_value() {
    for (args, needle) in [
        (&["--log-opt", "max-size=bogus"][..], "bogus"),
        (&["--log-opt", "foo=bar"][..], "foo"),
        (&["--log-driver", "syslog"][..], "syslog"),
        (
            &["--log-opt", "max-file=0", "--log-opt", "max-size=1m"][..],
            "max-file=0",
        ),
        (&["--log-opt", "max-file=3"][..], "max-size"),
        (
            &["--log-driver", "none", "--log-opt", "max-size=1m"][..],
            "max-size",
        ),
    ] {
        let n = name("logbad");
        let mut a = vec!["run", "--name", &n];
        a.extend_from_slice(args);
        a.extend_from_slice(&["busybox", "true"]);
        let o = vessel(&a);
        assert_eq!(code(&o), 125, "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        // Nothing was left behind.
        assert!(!ok(&["ps", "-a"]).contains(&n), "{args:?} left an instance");
    }
}

#[test]
fn log_driver_none_keeps_nothing_and_logs_says_so() {
    let n = name("lognone");
    let o = vessel(&[
        "run",
        "--name",
        &n,
        "--log-driver",
        "none",
        "busybox",
        "echo",
        "shown",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "shown\n",
        "an attached run still shows the output"
    );
    let id = id_of(&n);
    assert!(log_files(&id).is_empty(), "{:?}", log_files(&id));
    let o = vessel(&["logs", &n]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("configured logging driver does not support reading"),
        "{}",
        stderr(&o)
    );
    assert_eq!(inspect(&n)["HostConfig"]["LogConfig"]["Type"], "none");
    ok(&["rm", &n]);
}

#[test]
fn logs_follow_keeps_following_across_rotations() {
    let n = name("logfollow");
    // Batches of ~7.5 KB, each past max-size=5k, a pause between them longer than the
    // follower's poll: every batch rotates the file while `logs -f` is reading.
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--log-opt",
        "max-size=5k",
        "--log-opt",
        "max-file=3",
        "busybox",
        "sh",
        "-c",
        "echo 0; sleep 1; i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo $i; if [ $((i % 100)) = 0 ]; then sleep 0.5; fi; done; sleep 0.5",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(&["logs", &n]).starts_with("0\n") {
        assert!(Instant::now() < deadline, "the container printed nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = vessel(&["logs", "-f", &n]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got = numbers(&stdout(&o));
    let want: Vec<u64> = (0..=400).collect();
    assert_eq!(got, want, "logs -f lost or repeated lines across rotations");
    let id = id_of(&n);
    assert!(
        log_files(&id).iter().any(|(f, _)| f == "log.json.2"),
        "the log did not rotate: {:?}",
        log_files(&id)
    );
    ok(&["rm", &n]);
}
