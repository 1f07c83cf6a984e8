//! `vessel login` / `logout` against a local `docker-registry` that requires basic auth:
//! credentials are checked, kept in Docker's `config.json` (or a credential helper), used
//! by `push` and `pull`, and forgotten by `logout`.

mod common;
#[path = "../../image/tests/common/mod.rs"]
mod registry;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{cmd, code, ok, stderr, stdout};

/// `vessel ARGS` with `DOCKER_CONFIG=config` (and `PATH` led by `path`), `input` on stdin.
fn run(config: &Path, path: Option<&Path>, args: &[&str], input: &str) -> Output {
    let mut c = cmd(args);
    c.env("DOCKER_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = path {
        let old = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{old}", p.display()));
    }
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn login_keeps_credentials_that_push_and_pull_use_and_logout_forgets_them() {
    let reg = registry::Registry::start(Some(("alice", "s3cret")));
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let target = format!("{}/login-test/busybox:v1", reg.host);
    ok(&["tag", "busybox", &target]);

    // Anonymous: the registry says no.
    let o = run(c, None, &["push", &target], "");
    assert_ne!(code(&o), 0, "an anonymous push was taken");
    // A wrong password: Docker's status 1 and message; nothing kept.
    let o = run(
        c,
        None,
        &["login", &reg.host, "-u", "alice", "--password-stdin"],
        "wrong\n",
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("incorrect username or password"),
        "{}",
        stderr(&o)
    );
    assert!(!c.join("config.json").exists());
    // No terminal and no password: refused, not hung.
    let o = run(c, None, &["login", &reg.host, "-u", "alice"], "");
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("non TTY"), "{}", stderr(&o));

    // The right one: kept as Docker keeps it, readable by its owner only.
    let o = run(
        c,
        None,
        &["login", &reg.host, "-u", "alice", "--password-stdin"],
        "s3cret\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "Login Succeeded\n");
    let v = config_json(c);
    // base64("alice:s3cret")
    assert_eq!(v["auths"][&reg.host]["auth"], "YWxpY2U6czNjcmV0", "{v}");
    let mode = std::fs::metadata(c.join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // push and pull use it.
    let o = run(c, None, &["push", &target], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    ok(&["rmi", &target]);
    let o = run(c, None, &["pull", "--platform", "arm64", &target], "");
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    let o = run(c, None, &["pull", "--platform", "linux/amd64", &target], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // --password works, with Docker's warning.
    let o = run(
        c,
        None,
        &["login", &reg.host, "-u", "alice", "-p", "s3cret"],
        "",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("WARNING! Using --password"),
        "{}",
        stderr(&o)
    );

    // logout forgets; a pull is anonymous again.
    let o = run(c, None, &["logout", &format!("http://{}/", reg.host)], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("Removing login credentials for {}\n", reg.host)
    );
    assert!(config_json(c)["auths"].get(&reg.host).is_none());
    ok(&["rmi", &target]);
    let o = run(c, None, &["pull", &target], "");
    assert_ne!(code(&o), 0, "an anonymous pull was taken");
    let o = run(c, None, &["logout", &reg.host], "");
    assert_eq!(stdout(&o), format!("Not logged in to {}\n", reg.host));
}

#[test]
fn a_credential_helper_keeps_the_secret_out_of_config_json() {
    let reg = registry::Registry::start(Some(("bob", "hunter2")));
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let bin = tempfile::tempdir().unwrap();
    let store = bin.path().join("store.json");
    let calls = bin.path().join("calls");
    // A helper in the protocol of docker-credential-helpers: one file of JSON.
    let helper = bin.path().join("docker-credential-vesseltest");
    std::fs::write(
        &helper,
        format!(
            r#"#!/bin/sh
echo "$1" >> {calls}
case "$1" in
  store) cat > {store} ;;
  get) if [ -s {store} ]; then cat {store}; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) if [ -s {store} ]; then rm {store}; else echo "credentials not found in native keychain"; exit 1; fi ;;
  *) exit 1 ;;
esac
"#,
            calls = calls.display(),
            store = store.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        c.join("config.json"),
        r#"{"credsStore": "vesseltest", "other": 1}"#,
    )
    .unwrap();
    let target = format!("{}/helper-test/busybox:v1", reg.host);
    ok(&["tag", "busybox", &target]);

    let p = Some(bin.path());
    let o = run(
        c,
        p,
        &["login", &reg.host, "-u", "bob", "--password-stdin"],
        "hunter2",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = std::fs::read_to_string(c.join("config.json")).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("aHVudGVy"),
        "{text}"
    );
    let v = config_json(c);
    assert_eq!(v["other"], 1, "other settings are kept: {v}");
    assert_eq!(v["auths"][&reg.host], serde_json::json!({}));
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    assert_eq!(kept["Username"], "bob");
    assert_eq!(kept["Secret"], "hunter2");

    let o = run(c, p, &["push", &target], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(c, p, &["logout", &reg.host], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!store.exists());
    let called = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        called.lines().collect::<Vec<_>>(),
        ["store", "get", "erase"]
    );
    ok(&["rmi", &target]);
}

#[test]
fn run_pulls_a_missing_image_with_the_login_and_pull_never_does_not() {
    let reg = registry::Registry::start(Some(("dave", "letmein")));
    let cfg = tempfile::tempdir().unwrap();
    let c = cfg.path();
    let target = format!("{}/run-pull/busybox:v1", reg.host);
    ok(&["tag", "busybox", &target]);
    let o = run(
        c,
        None,
        &["login", &reg.host, "-u", "dave", "--password-stdin"],
        "letmein",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(c, None, &["push", "-q", &target], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    ok(&["rmi", &target]);

    // --pull never: the store has no such image.
    let o = run(
        c,
        None,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--pull",
            "never",
            &target,
            "true",
        ],
        "",
    );
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("image not found"), "{}", stderr(&o));
    // --platform other than linux/amd64: refused before anything is fetched.
    let o = run(
        c,
        None,
        &["run", "--rm", "--platform", "linux/arm64", &target, "true"],
        "",
    );
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("linux/amd64"), "{}", stderr(&o));
    // The default (missing): pulled with the login's credentials, said on stderr; the
    // command's output alone on stdout.
    let o = run(
        c,
        None,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--platform",
            "linux/amd64",
            &target,
            "echo",
            "ran",
        ],
        "",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "ran\n");
    assert!(
        stderr(&o).contains(&format!("Unable to find image '{target}' locally")),
        "{}",
        stderr(&o)
    );
    // Present now: no pull, nothing said.
    let o = run(
        c,
        None,
        &["run", "--rm", "--network", "none", &target, "true"],
        "",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stderr(&o).contains("Unable to find"), "{}", stderr(&o));
    // --pull always fetches even so; without the login the registry refuses it.
    let o = run(c, None, &["logout", &reg.host], "");
    assert_eq!(code(&o), 0);
    let o = run(
        c,
        None,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--pull",
            "always",
            &target,
            "true",
        ],
        "",
    );
    assert_eq!(code(&o), 125, "an anonymous --pull always was taken");
    ok(&["rmi", &target]);
}
