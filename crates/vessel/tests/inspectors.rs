//! End-to-end tests of `port`, `diff`, `export` and `history`.

mod common;

use common::*;

#[test]
fn port_lists_what_is_published() {
    let n = name("port");
    let p = free_port();
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "-p",
        &format!("{p}:80"),
        "busybox",
        "sleep",
        "1000",
    ]);
    assert_eq!(ok(&["port", &n]), format!("80/tcp -> 0.0.0.0:{p}\n"));
    assert_eq!(ok(&["port", &n, "80/tcp"]), format!("0.0.0.0:{p}\n"));
    let o = vessel(&["port", &n, "81"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no public port '81'"), "{}", stderr(&o));
    ok(&["rm", "-f", &n]);
}

#[test]
fn diff_shows_added_changed_and_deleted_paths() {
    let n = running("diff");
    ok(&[
        "exec",
        &n,
        "sh",
        "-c",
        "touch /newfile && mkdir -p /newdir/sub && rm /bin/true",
    ]);
    let out = ok(&["diff", &n]);
    for line in [
        "A /newfile",
        "A /newdir",
        "A /newdir/sub",
        "C /bin",
        "D /bin/true",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
    ok(&["rm", "-f", &n]);
}

#[test]
fn export_writes_the_running_filesystem() {
    let n = running("export");
    ok(&["exec", &n, "sh", "-c", "echo made > /made-here"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fs.tar");
    ok(&["export", "-o", file.to_str().unwrap(), &n]);
    let mut names = Vec::new();
    for e in tar::Archive::new(std::fs::File::open(&file).unwrap())
        .entries()
        .unwrap()
    {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    for want in ["bin/busybox", "made-here"] {
        assert!(
            names.iter().any(|p| p.trim_start_matches("./") == want),
            "{want} missing: {names:?}"
        );
    }
    // A container never started exports its image's files, as Docker's does.
    let stopped = name("exported");
    ok(&["create", "--name", &stopped, "busybox", "true"]);
    let o = cmd(&["export", &stopped]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut a = tar::Archive::new(o.stdout.as_slice());
    let found = a
        .entries()
        .unwrap()
        .any(|e| e.unwrap().path().unwrap().to_str() == Some("bin/busybox"));
    assert!(found, "the export of a created container lacks bin/busybox");
    ok(&["rm", "-f", &n, &stopped]);
}

#[test]
fn history_lists_the_images_steps() {
    let out = ok(&["history", "busybox"]);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("IMAGE"), "{out}");
    assert!(lines.next().is_some(), "no step: {out}");
    let ids = ok(&["history", "-q", "busybox"]);
    let id = ok(&["image", "inspect", "busybox"]);
    let first = ids.lines().next().unwrap();
    assert!(id.contains(first), "{first} is not busybox's id");
    let o = vessel(&["history", "no-such-image"]);
    assert_eq!(code(&o), 1);
}

#[test]
fn commit_makes_an_image_of_a_containers_changes_config_and_changes() {
    let n = name("commit");
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        "-e",
        "FOO=bar",
        "-w",
        "/srv/app",
        "-l",
        "team=core",
        "busybox",
        "sh",
        "-c",
        "echo made > /srv/app/file; rm /bin/vi; sleep 1000",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !vessel(&["exec", &n, "test", "-e", "/srv/app/file"])
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never wrote its file"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let image = format!("{}:v1", name("committed")).to_lowercase();
    let id = ok(&[
        "commit",
        "-m",
        "a message",
        "-a",
        "Jane <jane@example.com>",
        "-c",
        "ENV X=1",
        "-c",
        r#"CMD ["cat", "file"]"#,
        &n,
        &image,
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    // The container still runs (it was paused only while committing).
    assert_eq!(inspect(&n)["State"]["Status"], "running");
    // The changes, the config and the --change instructions are in the image.
    assert_eq!(ok(&["run", "--rm", "--network", "none", &image]), "made\n");
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "echo $FOO $X; pwd; test -e /bin/vi && echo vi || echo no-vi; cat /etc/hostname",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], &["bar 1", "/srv/app", "no-vi"], "{out}");
    // The runtime's /etc/hostname is the new container's, not the committed one's.
    let inspect_img: serde_json::Value =
        serde_json::from_str(&ok(&["image", "inspect", &image])).unwrap();
    assert_eq!(inspect_img[0]["Config"]["Labels"]["team"], "core");
    let history = ok(&["history", "--no-trunc", &image]);
    assert!(
        history.lines().nth(1).unwrap().contains("a message"),
        "{history}"
    );
    // No such instance: a one-line failure.
    let missing = vessel(&["commit", "no-such-instance-here"]);
    assert_ne!(code(&missing), 0);
    assert_eq!(stderr(&missing).trim().lines().count(), 1);
    let cid = id_of(&n);
    ok(&["rm", "-f", &n]);
    assert_no_leftovers(&cid);
    ok(&["rmi", &image]);
}
