//! The README's flag table ("Flags in containers and microVMs") is the contract that no
//! flag is accepted and ignored in either isolation. This test keeps it true: every flag
//! of `vessel run`, `exec`, `logs`, `stop`, `kill`, `rm` and `inspect` (from their `--help`) has a
//! row, every row names a real flag, and every "refused" cell is tried: the run fails
//! with exit 125 and one line naming the flag, and creates nothing. Refusals come before
//! any host check, so this runs on any host (no KVM needed).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;

/// Flags every command has (clap's and vessel's globals); not in the table.
const GLOBAL: &[&str] = &["--root", "--log-level", "--debug", "--help", "--version"];

/// A table row: the flag's names (`-d`, `--detach`) and its two cells.
struct Row {
    names: Vec<String>,
    container: String,
    vm: String,
}

/// The table between the README's markers, by command, then long flag name.
fn table() -> BTreeMap<String, BTreeMap<String, Row>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let begin = readme
        .find("<!-- flag-table:begin -->")
        .expect("README.md has no flag-table:begin marker");
    let end = readme
        .find("<!-- flag-table:end -->")
        .expect("README.md has no flag-table:end marker");
    let mut out: BTreeMap<String, BTreeMap<String, Row>> = BTreeMap::new();
    for line in readme[begin..end].lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "README flag table row: {line}");
        if cells[0] == "command" || cells[0].starts_with("---") {
            continue;
        }
        let names: Vec<String> = cells[1]
            .split(',')
            .map(|n| n.trim().trim_matches('`').to_string())
            .collect();
        let long = names
            .iter()
            .find(|n| n.starts_with("--"))
            .unwrap_or_else(|| panic!("row without a long flag: {line}"))
            .clone();
        let row = Row {
            names,
            container: cells[2].to_string(),
            vm: cells[3].to_string(),
        };
        for cell in [&row.container, &row.vm] {
            assert!(
                cell.starts_with("yes") || cell.starts_with("refused"),
                "a cell says yes or refused, nothing else: {line}"
            );
        }
        let dup = out
            .entry(cells[0].to_string())
            .or_default()
            .insert(long, row);
        assert!(dup.is_none(), "row twice: {line}");
    }
    out
}

/// The flags `vessel COMMAND --help` lists, long name -> all names.
fn help_flags(command: &str) -> BTreeMap<String, BTreeSet<String>> {
    let help = ok(&[command, "--help"]);
    let mut out = BTreeMap::new();
    for line in help.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') || line.len() - t.len() > 6 {
            continue; // not a flag line (or a wrapped description)
        }
        let names: BTreeSet<String> = t
            .split_whitespace()
            .take_while(|w| w.starts_with('-'))
            .map(|w| w.trim_end_matches(',').to_string())
            .collect();
        if let Some(long) = names.iter().find(|n| n.starts_with("--")) {
            out.insert(long.clone(), names);
        }
    }
    assert!(
        !out.is_empty(),
        "no flags parsed from `vessel {command} --help`:\n{help}"
    );
    out
}

#[test]
fn every_flag_has_a_row_and_every_row_is_a_flag() {
    let table = table();
    for command in [
        "run", "exec", "logs", "stop", "kill", "rm", "create", "inspect", "wait",
    ] {
        let help = help_flags(command);
        // `create` takes run's flags; the README says so instead of repeating them.
        let rows = table.get(if command == "create" { "run" } else { command });
        for (long, names) in &help {
            if GLOBAL.contains(&long.as_str()) {
                continue;
            }
            let row = rows.and_then(|r| r.get(long)).unwrap_or_else(|| {
                panic!("`vessel {command} {long}` has no row in README's flag table")
            });
            let listed: BTreeSet<String> = row.names.iter().cloned().collect();
            assert_eq!(
                &listed, names,
                "`vessel {command} {long}`: the row names other flags"
            );
        }
        if command == "create" {
            continue;
        }
        for long in rows
            .map(|r| r.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            assert!(
                help.contains_key(long),
                "README's flag table has `{command} {long}`, which `vessel {command} --help` does not list"
            );
        }
    }
    for command in table.keys() {
        assert!(
            ["run", "exec", "logs", "stop", "kill", "rm", "inspect"].contains(&command.as_str()),
            "README's flag table has a command this test does not check: {command}"
        );
    }
}

/// What each flag that some isolation refuses is tried with.
fn example(long: &str) -> Vec<&'static str> {
    match long {
        "--volume" => vec!["-v", "/tmp:/data"],
        "--userns" => vec!["--userns"],
        "--kernel" => vec!["--kernel", "/dev/null"],
        "--console" => vec!["--console"],
        "--cap-add" => vec!["--cap-add", "NET_ADMIN"],
        "--cap-drop" => vec!["--cap-drop", "CHOWN"],
        "--ulimit" => vec!["--ulimit", "nofile=100:100"],
        "--tmpfs" => vec!["--tmpfs", "/scratch"],
        "--mount" => vec!["--mount", "type=tmpfs,target=/scratch"],
        "--privileged" => vec!["--privileged"],
        "--device" => vec!["--device", "/dev/null:/dev/n:r"],
        "--security-opt" => vec!["--security-opt", "no-new-privileges"],
        "--sysctl" => vec!["--sysctl", "net.ipv4.ip_forward=1"],
        "--pid" => vec!["--pid", "host"],
        "--ipc" => vec!["--ipc", "none"],
        "--shm-size" => vec!["--shm-size", "8m"],
        "--group-add" => vec!["--group-add", "10"],
        "--cpu-shares" => vec!["--cpu-shares", "512"],
        "--cpuset-cpus" => vec!["--cpuset-cpus", "0"],
        "--memory-swap" => vec!["-m", "64m", "--memory-swap", "-1"],
        other => {
            panic!("{other} is refused in some isolation: give it an example in flag_table.rs")
        }
    }
}

#[test]
fn every_refused_flag_is_refused_with_125_and_one_line() {
    let table = table();
    let mut tried = 0;
    for (long, row) in &table["run"] {
        for (isolation, cell) in [("container", &row.container), ("vm", &row.vm)] {
            if !cell.starts_with("refused") {
                continue;
            }
            let n = name("flagtable");
            let mut args = vec!["run", "--name", &n, "--isolation", isolation];
            args.extend(example(long));
            args.extend(["busybox", "true"]);
            let out = vessel(&args);
            let err = stderr(&out);
            assert_eq!(code(&out), 125, "{args:?} must be refused with 125: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
            assert!(
                err.contains(long.as_str()),
                "{args:?}: the error names {long}: {err}"
            );
            assert!(
                !vessel(&["inspect", &n]).status.success(),
                "{args:?}: an instance was created"
            );
            tried += 1;
        }
    }
    assert!(
        tried >= 20,
        "only {tried} refusals tried: has the table lost its refused cells?"
    );
}
