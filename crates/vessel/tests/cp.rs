//! End-to-end tests of `vessel cp`: both directions, tar streams, Docker's placement
//! rule, and the attacks of a hostile container (links to host paths, set-user-ID files).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::*;

#[test]
fn files_and_directories_copy_both_ways() {
    let n = running("cp");
    ok(&[
        "exec",
        &n,
        "sh",
        "-c",
        "mkdir -p /d/sub && echo one > /d/a && echo two > /d/sub/b",
    ]);
    let host = tempfile::tempdir().unwrap();
    let h = host.path();

    // A file to a new name, a directory into an existing directory, contents with /.
    ok(&[
        "cp",
        &format!("{n}:/d/a"),
        h.join("renamed").to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(h.join("renamed")).unwrap(), "one\n");
    ok(&["cp", &format!("{n}:/d"), h.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(h.join("d/sub/b")).unwrap(), "two\n");
    ok(&[
        "cp",
        &format!("{n}:/d/."),
        h.join("contents").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(h.join("contents/sub/b")).unwrap(),
        "two\n"
    );
    // Contents of a directory with a single entry: still a directory of that name.
    ok(&[
        "exec",
        &n,
        "sh",
        "-c",
        "mkdir /one && echo only > /one/only",
    ]);
    ok(&[
        "cp",
        &format!("{n}:/one/."),
        h.join("onecopy").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(h.join("onecopy/only")).unwrap(),
        "only\n"
    );
    ok(&[
        "cp",
        &format!("{}/.", h.join("onecopy").display()),
        &format!("{n}:/onein"),
    ]);
    assert_eq!(ok(&["exec", &n, "cat", "/onein/only"]), "only\n");

    // A tar stream on stdout.
    let o = cmd(&["cp", &format!("{n}:/d"), "-"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = tar::Archive::new(&o.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["d", "d/a", "d/sub", "d/sub/b"]);

    // Host to container: into a directory, to a new name, and a tar on stdin.
    std::fs::write(h.join("up"), "three\n").unwrap();
    ok(&["cp", h.join("up").to_str().unwrap(), &format!("{n}:/d")]);
    ok(&[
        "cp",
        h.join("up").to_str().unwrap(),
        &format!("{n}:/d/newname"),
    ]);
    ok(&["cp", h.join("d").to_str().unwrap(), &format!("{n}:/copied")]);
    let mut tarball = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o644);
    header.set_cksum();
    tarball
        .append_data(&mut header, "fromtar", &b"four\n"[..])
        .unwrap();
    let bytes = tarball.into_inner().unwrap();
    let mut child = cmd(&["cp", "-", &format!("{n}:/d")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &bytes).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let out = ok(&[
        "exec",
        &n,
        "cat",
        "/d/up",
        "/d/newname",
        "/copied/sub/b",
        "/d/fromtar",
    ]);
    assert_eq!(out, "three\nthree\ntwo\nfour\n");
    ok(&["rm", "-f", &n]);
}

#[test]
fn a_hostile_containers_links_and_modes_do_not_reach_the_host() {
    let n = running("cphost");
    // Links that point at the host's paths if resolved outside the container, and a
    // set-user-ID file of root's.
    ok(&["exec", &n, "sh", "-c",
        "ln -s /etc/shadow /leak && mkdir /x && ln -s /etc /x/etc && cp /bin/busybox /suid && chmod 4755 /suid"]);
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    // The link itself is copied, never the host file it would name.
    ok(&[
        "cp",
        &format!("{n}:/leak"),
        h.join("leak").to_str().unwrap(),
    ]);
    let meta = std::fs::symlink_metadata(h.join("leak")).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "cp followed the container's link on the host"
    );
    // A path through the container's link is resolved in the container: its /etc/hostname.
    ok(&[
        "cp",
        &format!("{n}:/x/etc/hostname"),
        h.join("hn").to_str().unwrap(),
    ]);
    let container_hn = ok(&["exec", &n, "cat", "/etc/hostname"]);
    assert_eq!(std::fs::read_to_string(h.join("hn")).unwrap(), container_hn);
    // Into the container through its link: lands in the container's /etc, not the host's.
    let marker = format!("vessel-cp-{}", std::process::id());
    std::fs::write(h.join(&marker), "x").unwrap();
    ok(&[
        "cp",
        h.join(&marker).to_str().unwrap(),
        &format!("{n}:/x/etc/"),
    ]);
    assert!(
        !std::path::Path::new("/etc").join(&marker).exists(),
        "cp wrote into the host's /etc"
    );
    ok(&["exec", &n, "test", "-f", &format!("/etc/{marker}")]);
    // No set-user-ID file of root's on the host.
    ok(&[
        "cp",
        &format!("{n}:/suid"),
        h.join("suid").to_str().unwrap(),
    ]);
    let mode = std::fs::metadata(h.join("suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7000,
        0,
        "the set-user-ID bit reached the host: {mode:o}"
    );
    ok(&["rm", "-f", &n]);
}

#[test]
fn cp_and_export_reach_stopped_containers_and_their_volumes() {
    let n = name("cpstop");
    let vol = name("cpvol");
    ok(&[
        "create",
        "--name",
        &n,
        "--network",
        "none",
        "-v",
        &format!("{vol}:/vol"),
        "busybox",
        "sh",
        "-c",
        "cat /in/f /vol/g; ln -s /etc /x; ln -s /etc/shadow /leak; echo out > /made",
    ]);
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    std::fs::create_dir(h.join("in")).unwrap();
    std::fs::write(h.join("in/f"), "into the layer\n").unwrap();
    std::fs::write(h.join("g"), "into the volume\n").unwrap();
    // Before it ever ran: into its writable layer and into its volume.
    ok(&["cp", h.join("in").to_str().unwrap(), &format!("{n}:/")]);
    ok(&["cp", h.join("g").to_str().unwrap(), &format!("{n}:/vol/g")]);
    assert_eq!(
        ok(&["start", "-a", &n]),
        "into the layer\ninto the volume\n"
    );
    // After it exited: what it made, read back; the volume's file is the volume's.
    ok(&[
        "cp",
        &format!("{n}:/made"),
        h.join("made").to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(h.join("made")).unwrap(), "out\n");
    let vol_data = root().join("volumes").join(&vol).join("_data/g");
    assert_eq!(
        std::fs::read_to_string(vol_data).unwrap(),
        "into the volume\n"
    );
    // Its links are resolved in the container, not on the host.
    ok(&[
        "cp",
        &format!("{n}:/leak"),
        h.join("leak").to_str().unwrap(),
    ]);
    assert!(std::fs::symlink_metadata(h.join("leak"))
        .unwrap()
        .file_type()
        .is_symlink());
    let marker = format!("vessel-cp-stopped-{}", std::process::id());
    std::fs::write(h.join(&marker), "x").unwrap();
    ok(&["cp", h.join(&marker).to_str().unwrap(), &format!("{n}:/x/")]);
    assert!(
        !std::path::Path::new("/etc").join(&marker).exists(),
        "cp into a stopped container wrote into the host's /etc"
    );
    // export of a stopped container: its whole file system, its changes included.
    let tar = cmd(&["export", &n]).output().unwrap();
    assert!(tar.status.success(), "{}", stderr(&tar));
    let list = std::process::Command::new("tar")
        .arg("t")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&tar.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    let names = String::from_utf8_lossy(&list.stdout);
    for want in ["made", "in/f", "bin/busybox", &format!("etc/{marker}")] {
        assert!(names.lines().any(|l| l == want), "export lacks {want}");
    }
    // Nothing of the copies' mounts is left on the host.
    let id = id_of(&n);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&id[..12]), "{mountinfo}");
    ok(&["rm", &n]);
    ok(&["volume", "rm", &vol]);
}

#[test]
fn cp_says_what_it_cannot_do() {
    let o = vessel(&["cp", "/etc/hostname", "/tmp/y"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("container source"), "{}", stderr(&o));
    let r = running("cpmiss");
    let o = vessel(&["cp", &format!("{r}:/nonexistent"), "/tmp/z"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
    let o = vessel(&["cp", "/etc/hostname", &format!("{r}:/no/such/dir/f")]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no such directory"), "{}", stderr(&o));
    ok(&["rm", "-f", &r]);
}
