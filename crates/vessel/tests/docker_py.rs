//! docker-py (PyPI `docker` 7.x) against `vessel serve`: a venv under `target/` (made once,
//! kept across runs) runs `tests/py/test_docker_py.py` against a server this test starts.
//! No venv, no pip, no PyPI: the test fails and says why (`./x` installs python3-venv).

mod common;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The venv with docker-py, made if missing.
fn venv() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let venv = target.join("docker-py-venv");
    let python = venv.join("bin/python");
    let has_docker = || {
        Command::new(&python)
            .args([
                "-c",
                "import docker, sys; sys.exit(0 if docker.__version__.startswith('7.') else 1)",
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_docker() {
        return python;
    }
    let o = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 is needed for the docker-py test (apt-get install python3 python3-venv)");
    assert!(
        o.status.success(),
        "python3 -m venv {} failed (is python3-venv installed? ./x installs it): {}",
        venv.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "docker>=7,<8"])
        .output()
        .expect("run pip");
    assert!(
        o.status.success(),
        "pip install docker>=7,<8 failed (PyPI must be reachable): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        has_docker(),
        "docker-py 7 is not importable after pip install"
    );
    python
}

#[test]
fn docker_py_drives_containers_exec_images_volumes_networks() {
    let python = venv();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("d.sock");
    let mut server = cmd(&["serve", "-H", &format!("unix://{}", sock.display())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vessel serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "vessel serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/test_docker_py.py");
    let child = Command::new(&python)
        .arg(&script)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("VESSEL_TEST_PREFIX", name("dpy"))
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the docker-py script");
    let o = output_within_limit(child, "test_docker_py.py", Duration::from_secs(300));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = server.wait();
    assert!(
        o.status.success() && stdout(&o).contains("docker-py: all passed"),
        "docker-py failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
}
