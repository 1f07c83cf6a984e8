//! End-to-end tests of everyday `run` flags Docker users type: `--env-file`, `-l`,
//! `--add-host`, `--dns`, `--cidfile`, `--cap-add`/`--cap-drop`, `--ulimit`, `--tmpfs`.
//! Each checks the effect from inside the container (not only that the flag parses),
//! what `inspect` reports, that bad values are refused with one line and exit 125, and
//! that the container-only flags are refused for microVMs rather than ignored.

mod common;

use common::*;

/// Runs `--rm busybox sh -c SCRIPT` with `flags`; returns stdout (asserting success).
fn run_sh(flags: &[&str], script: &str) -> String {
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "sh", "-c", script]);
    ok(&args)
}

/// A refused run: exit 125, one line naming `needle`, nothing created.
fn refused(flags: &[&str], needle: &str) {
    let n = name("refused");
    let mut args = vec!["run", "--name", &n];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "true"]);
    let out = vessel(&args);
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{flags:?}: {err}");
    assert!(err.contains(needle), "{flags:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{flags:?}: one line: {err}");
    assert!(
        !vessel(&["inspect", &n]).status.success(),
        "{flags:?}: an instance was created"
    );
}

#[test]
fn env_file_labels_hosts_dns_and_cidfile_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("env");
    std::fs::write(
        &env,
        "# a comment\n\nA=from-file\n  B=two words=x\nC=file\n",
    )
    .unwrap();
    let cid = dir.path().join("cid");
    let n = name("flags");
    let out = ok(&[
        "run",
        "--name",
        &n,
        "--network",
        "none",
        "--env-file",
        env.to_str().unwrap(),
        "-e",
        "C=flag",
        "-l",
        "tier=web",
        "--label",
        "empty",
        "--add-host",
        "db.local:10.1.2.3",
        "--add-host",
        "v6:[2001:db8::7]",
        "--dns",
        "192.0.2.53",
        "--cidfile",
        cid.to_str().unwrap(),
        "busybox",
        "sh",
        "-c",
        "echo \"A=$A B=$B C=$C\"; cat /etc/hosts /etc/resolv.conf",
    ]);
    assert!(out.contains("A=from-file B=two words=x C=flag"), "{out}");
    assert!(out.contains("10.1.2.3\tdb.local"), "{out}");
    assert!(out.contains("2001:db8::7\tv6"), "{out}");
    assert!(out.contains("nameserver 192.0.2.53"), "{out}");
    assert_eq!(
        out.matches("nameserver").count(),
        1,
        "--dns replaces the host's nameservers: {out}"
    );
    let id = std::fs::read_to_string(&cid).unwrap();
    assert_eq!(id, id_of(&n), "the cidfile holds the id");
    let v = inspect(&n);
    assert_eq!(v["Config"]["Labels"]["tier"], "web", "{v}");
    assert_eq!(v["Config"]["Labels"]["empty"], "", "{v}");
    assert_eq!(v["HostConfig"]["Dns"][0], "192.0.2.53", "{v}");
    assert_eq!(v["HostConfig"]["ExtraHosts"][0], "db.local:10.1.2.3", "{v}");
    // Docker refuses to overwrite a cidfile: another container may own it.
    let out = vessel(&[
        "run",
        "--rm",
        "--cidfile",
        cid.to_str().unwrap(),
        "busybox",
        "true",
    ]);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("container ID file found"),
        "{}",
        stderr(&out)
    );
    ok(&["rm", &n]);
}

/// `CapEff` of the container's shell, as a number.
fn cap_eff(flags: &[&str]) -> u64 {
    let out = run_sh(flags, "grep CapEff /proc/self/status");
    let hex = out
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn cap_add_and_cap_drop_change_the_capabilities_and_what_they_allow() {
    const NET_RAW: u64 = 1 << 13;
    const SYS_ADMIN: u64 = 1 << 21;
    const CHOWN: u64 = 1 << 0;
    let default = cap_eff(&[]);
    assert!(default & NET_RAW != 0 && default & SYS_ADMIN == 0);
    let c = cap_eff(&["--cap-add", "SYS_ADMIN", "--cap-drop", "cap_net_raw"]);
    assert_eq!(c, (default | SYS_ADMIN) & !NET_RAW);
    assert_eq!(cap_eff(&["--cap-drop", "ALL"]), 0);
    assert_eq!(cap_eff(&["--cap-drop", "ALL", "--cap-add", "CHOWN"]), CHOWN);
    // What a capability allows: chown as root without CAP_CHOWN fails.
    let out = run_sh(
        &["--cap-drop", "CHOWN"],
        "touch /f; chown 1:1 /f 2>&1 && echo chowned || echo refused",
    );
    assert!(out.contains("refused"), "{out}");
    // CAP_SYS_ADMIN also opens the seccomp profile's mount-related syscalls, as Docker's.
    let out = run_sh(
        &["--cap-add", "SYS_ADMIN"],
        "mkdir /m && mount -t tmpfs t /m && echo mounted",
    );
    assert!(out.contains("mounted"), "{out}");
    refused(&["--cap-add", "CAP_BOGUS"], "unknown capability");
}

#[test]
fn ulimit_sets_the_limits_the_process_sees() {
    let out = run_sh(
        &["--ulimit", "nofile=512:1024", "--ulimit", "nproc=77"],
        "ulimit -n; ulimit -Hn; ulimit -u",
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["512", "1024", "77"],
        "{out}"
    );
    refused(&["--ulimit", "bogus=1"], "unknown limit");
    refused(&["--ulimit", "nofile=9:1"], "soft limit");
}

#[test]
fn tmpfs_mounts_a_bounded_tmpfs() {
    let out = run_sh(
        &["--tmpfs", "/scratch:size=1m,mode=1700"],
        "grep ' /scratch ' /proc/mounts; stat -c %a /scratch; \
         dd if=/dev/zero of=/scratch/f bs=64k count=40 2>&1; ls -l /scratch/f",
    );
    let line = out.lines().next().unwrap_or_default();
    assert!(line.starts_with("tmpfs /scratch tmpfs"), "{out}");
    for o in ["nosuid", "nodev", "noexec", "size=1024k"] {
        assert!(line.contains(o), "{o}: {out}");
    }
    assert!(out.contains("1700"), "{out}");
    assert!(
        out.contains("No space left on device"),
        "the 1m bound holds: {out}"
    );
    refused(&["--tmpfs", "relative"], "absolute");
    refused(&["--tmpfs", "/x:bogus=1"], "unknown tmpfs option");
}

#[test]
fn bad_values_are_refused_with_one_line() {
    refused(&["--add-host", "nocolon"], "NAME:IP");
    refused(&["--add-host", "h:999.1.1.1"], "invalid IP");
    refused(&["--dns", "nope"], "not an IP address");
    refused(&["--env-file", "/nonexistent/env"], "No such file");
    refused(&["-l", "=v"], "invalid label");
    // host-gateway needs a bridge to have a gateway.
    let out = vessel(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--add-host",
        "gw:host-gateway",
        "busybox",
        "true",
    ]);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs a bridge network"),
        "{}",
        stderr(&out)
    );
}

/// A microVM is not configured through capabilities, rlimits or host tmpfs mounts (yet):
/// these flags are refused for VMs, never accepted and ignored. Checked before any VM
/// starts, so it holds on any host.
#[test]
fn container_only_flags_are_refused_for_vms() {
    for flags in [
        &["--cap-add", "SYS_ADMIN"][..],
        &["--cap-drop", "ALL"],
        &["--ulimit", "nofile=10"],
        &["--tmpfs", "/x"],
    ] {
        let mut f = vec!["--isolation", "vm"];
        f.extend_from_slice(flags);
        refused(&f, "containers only");
    }
}

/// As with Docker, everything after the image (or `exec`'s instance) is the command's,
/// even words that are vessel's own flags (`-e`, `-v`, `--help`, `--`).
#[test]
fn words_after_the_image_are_the_commands_even_when_they_look_like_flags() {
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "echo",
        "busybox",
        "-e",
        "a\\tb",
    ]);
    assert_eq!(out, "a\tb\n");
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "echo",
        "--help",
        "-v",
        "--",
    ]);
    assert_eq!(out, "--help -v --\n");
    let n = name("argv");
    ok(&["run", "-d", "--name", &n, "busybox", "sleep", "100"]);
    let out = ok(&["exec", &n, "echo", "-u", "0", "--version"]);
    assert_eq!(out, "-u 0 --version\n");
    ok(&["rm", "-f", &n]);
}

#[test]
fn a_missing_working_directory_is_made_as_docker_makes_it() {
    assert_eq!(
        run_sh(&["-w", "/made/by/vessel"], "pwd; ls -ld . | cut -c1-10"),
        "/made/by/vessel\ndrwxr-xr-x\n"
    );
}
