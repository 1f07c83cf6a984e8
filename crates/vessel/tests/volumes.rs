//! End-to-end tests of named volumes (`vessel volume ...`, `-v NAME:/path`) and
//! `--mount`: data outlives instances, `readonly` holds, a volume in use is kept, names
//! cannot reach outside the volumes directory, and unknown mount options are refused.

mod common;

use common::*;

/// Held by the tests that prune volumes and by those that check an unused volume stays:
/// a prune would take it meanwhile.
static PRUNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn volume_dir(name: &str) -> std::path::PathBuf {
    root().join("volumes").join(name).join("_data")
}

#[test]
fn a_named_volume_outlives_its_instances_and_is_kept_while_used() {
    let _prune = PRUNING.lock().unwrap_or_else(|e| e.into_inner());
    let vol = name("data");
    assert_eq!(
        ok(&["volume", "create", "--label", "k=v", &vol]).trim(),
        vol
    );
    // Created again: the same volume, not an error (Docker's behaviour).
    ok(&["volume", "create", &vol]);
    let ls = ok(&["volume", "ls", "-q", "--filter", "label=k=v"]);
    assert!(ls.lines().any(|l| l == vol), "{ls}");
    let doc: serde_json::Value = serde_json::from_str(&ok(&["volume", "inspect", &vol])).unwrap();
    assert_eq!(doc[0]["Name"], vol.as_str());
    assert_eq!(doc[0]["Driver"], "local");
    assert_eq!(doc[0]["Labels"]["k"], "v");
    assert_eq!(doc[0]["Mountpoint"], volume_dir(&vol).to_str().unwrap());

    let mount = format!("{vol}:/data");
    let writer = name("writer");
    ok(&[
        "run",
        "--name",
        &writer,
        "--network",
        "none",
        "-v",
        &mount,
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        std::fs::read_to_string(volume_dir(&vol).join("f")).unwrap(),
        "kept\n"
    );
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &mount,
        "busybox",
        "cat",
        "/data/f",
    ]);
    assert_eq!(out, "kept\n");
    let insp = inspect(&writer);
    let m = insp["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/data")
        .unwrap()
        .clone();
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Name"], vol.as_str());

    // Read-only through --mount: the write fails inside, the data is untouched.
    let ro = format!("type=volume,source={vol},target=/data,readonly");
    let o = vessel(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        &ro,
        "busybox",
        "sh",
        "-c",
        "echo x > /data/f",
    ]);
    assert_ne!(code(&o), 0, "a readonly volume took a write");
    assert!(stderr(&o).contains("Read-only"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(volume_dir(&vol).join("f")).unwrap(),
        "kept\n"
    );

    // In use by the stopped `writer`: kept, with Docker's message and status.
    let o = vessel(&["volume", "rm", &vol]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("volume is in use"), "{}", stderr(&o));
    assert!(volume_dir(&vol).join("f").exists());
    ok(&["rm", &writer]);
    assert_eq!(ok(&["volume", "rm", &vol]).trim(), vol);
    assert!(!root().join("volumes").join(&vol).exists());
    let o = vessel(&["volume", "inspect", &vol]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no such volume"), "{}", stderr(&o));
    // -f: a missing volume is not an error.
    ok(&["volume", "rm", "-f", &vol]);
}

#[test]
fn run_makes_a_missing_volume_and_prune_takes_only_unused_ones() {
    let _prune = PRUNING.lock().unwrap_or_else(|e| e.into_inner());
    let vol = name("auto");
    let mount = format!("{vol}:/v");
    ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &mount,
        "busybox",
        "touch",
        "/v/x",
    ]);
    assert!(
        volume_dir(&vol).join("x").exists(),
        "run -v NAME did not make the volume"
    );
    let kept = name("kept");
    let used = name("used");
    ok(&["volume", "create", &kept]);
    let used_mount = format!("{kept}:/k");
    ok(&[
        "create",
        "--name",
        &used,
        "-v",
        &used_mount,
        "busybox",
        "true",
    ]);
    // Without --all only anonymous volumes go; with it every unused one.
    ok(&["volume", "prune", "-f"]);
    assert!(
        volume_dir(&vol).exists(),
        "prune without --all removed a named volume"
    );
    let out = ok(&["volume", "prune", "-a", "-f"]);
    assert!(out.contains(&vol), "{out}");
    assert!(!volume_dir(&vol).exists());
    assert!(
        volume_dir(&kept).exists(),
        "prune removed a volume an instance uses"
    );
    ok(&["rm", &used]);
    ok(&["volume", "rm", &kept]);
}

#[test]
fn an_anonymous_volume_goes_with_its_rm_instance() {
    let _prune = PRUNING.lock().unwrap_or_else(|e| e.into_inner());
    // The instance names its own volume: the bind's root in its mountinfo is
    // `.../volumes/NAME/_data`. Other tests create and prune volumes meanwhile, so the
    // check is on this one volume, not on the whole list.
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        "type=volume,target=/anon",
        "busybox",
        "sh",
        "-c",
        "echo hi > /anon/f && cat /anon/f && grep ' /anon ' /proc/self/mountinfo | cut -d' ' -f4",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("hi"), "{out}");
    let root = lines.next().unwrap_or_default();
    let vol = root
        .strip_suffix("/_data")
        .and_then(|r| r.rsplit('/').next())
        .unwrap_or_else(|| panic!("no volume in the mount's root: {out}"));
    assert_eq!(
        vol.len(),
        64,
        "an anonymous volume is named by 64 hex digits: {vol}"
    );
    assert!(
        !ok(&["volume", "ls", "-q"]).lines().any(|l| l == vol),
        "--rm left its anonymous volume {vol}"
    );
    assert!(!volume_dir(vol).exists(), "{vol}'s data is left");
}

#[test]
fn mount_binds_and_tmpfs_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("page"), "from the host\n").unwrap();
    let bind = format!(
        "type=bind,source={},target=/srv,readonly",
        dir.path().display()
    );
    let out = ok(&[
        "run", "--rm", "--network", "none", "--mount", &bind,
        "--mount", "type=tmpfs,destination=/scratch,tmpfs-size=1m",
        "busybox", "sh", "-c",
        "cat /srv/page; grep ' /scratch ' /proc/mounts | cut -d' ' -f3; touch /srv/x 2>/dev/null || echo ro",
    ]);
    assert_eq!(out, "from the host\ntmpfs\nro\n");
}

#[test]
fn bad_volume_names_and_mount_options_are_refused() {
    let refused = |args: &[&str], needle: &str, status: i32| {
        let o = vessel(args);
        let err = stderr(&o);
        assert_eq!(code(&o), status, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    };
    // A name that would walk out of the volumes directory is no name.
    refused(&["volume", "create", "../../etc"], "invalid volume name", 1);
    refused(&["volume", "inspect", "../instances"], "no such volume", 1);
    refused(
        &["run", "--rm", "-v", "../../etc:/x", "busybox", "true"],
        "neither an absolute host path nor a volume name",
        125,
    );
    refused(
        &[
            "run",
            "--rm",
            "--mount",
            "type=bind,source=/tmp,target=/x,bind-propagation=shared",
            "busybox",
            "true",
        ],
        "bind-propagation=shared",
        125,
    );
    refused(
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,source=v1,target=/x,volume-driver=nfs",
            "busybox",
            "true",
        ],
        "volume-driver=nfs",
        125,
    );
    refused(
        &[
            "run",
            "--rm",
            "--mount",
            "type=npipe,target=/x",
            "busybox",
            "true",
        ],
        "type=npipe",
        125,
    );
    refused(
        &[
            "run",
            "--rm",
            "--mount",
            "type=bind,source=/nonexistent-dir,target=/x",
            "busybox",
            "true",
        ],
        "does not exist",
        125,
    );
    refused(
        &[
            "run",
            "--rm",
            "-v",
            "/tmp:/x",
            "--mount",
            "type=tmpfs,target=/x",
            "busybox",
            "true",
        ],
        "duplicate mount point",
        125,
    );
    refused(&["volume", "create", "-d", "nfs", "v2"], "not supported", 1);
    refused(
        &["volume", "create", "-o", "type=nfs", "v2"],
        "not supported",
        1,
    );
    refused(
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "--mount",
            "type=tmpfs,target=/x",
            "busybox",
            "true",
        ],
        "--mount is not supported with --isolation vm",
        125,
    );
    assert!(!root().join("etc").exists());
}

/// `-v /path` makes an anonymous volume; `rm` keeps it (Docker's rule), `rm -v` takes it,
/// unless another instance still uses it.
#[test]
fn rm_v_takes_anonymous_volumes_and_plain_rm_keeps_them() {
    let _prune = PRUNING.lock().unwrap_or_else(|e| e.into_inner());
    let volume_of = |n: &str| -> String {
        let doc = inspect(n);
        let mounts = doc["Mounts"].as_array().cloned().unwrap_or_default();
        let m = mounts
            .iter()
            .find(|m| m["Destination"] == "/anon")
            .unwrap_or_else(|| panic!("no /anon in {mounts:?}"));
        assert_eq!(m["Type"], "volume", "{m}");
        m["Name"].as_str().unwrap_or_default().to_string()
    };
    let start = |n: &str, extra: &[&str]| {
        let args = [
            &["run", "-d", "--name", n, "--network", "none"][..],
            extra,
            &["busybox", "sleep", "60"],
        ]
        .concat();
        ok(&args);
    };
    let kept = name("rmv-kept");
    start(&kept, &["-v", "/anon"]);
    let vol = volume_of(&kept);
    assert_eq!(vol.len(), 64, "{vol}");
    ok(&["rm", "-f", &kept]);
    assert!(
        volume_dir(&vol).exists(),
        "plain rm took the anonymous volume {vol}"
    );
    ok(&["volume", "rm", &vol]);

    let taken = name("rmv-taken");
    start(&taken, &["-v", "/anon"]);
    let vol = volume_of(&taken);
    // A second instance on the same volume keeps it through the first's rm -v.
    let other = name("rmv-other");
    start(&other, &["-v", &format!("{vol}:/anon")]);
    ok(&["rm", "-f", "-v", &taken]);
    assert!(volume_dir(&vol).exists(), "rm -v took {vol}, still in use");
    // The second named it: its rm -v leaves it, as Docker's does.
    ok(&["rm", "-f", "--volumes", &other]);
    assert!(
        volume_dir(&vol).exists(),
        "rm -v took {vol}, which it named"
    );
    ok(&["volume", "rm", &vol]);
    // Alone on it, rm -v takes it.
    let alone = name("rmv-alone");
    start(&alone, &["-v", "/anon"]);
    let vol = volume_of(&alone);
    ok(&["rm", "-f", "-v", &alone]);
    assert!(!volume_dir(&vol).exists(), "rm -v left {vol}");
    // A relative path alone is no volume.
    let o = vessel(&["run", "--rm", "-v", "anon", "busybox", "true"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("invalid volume specification"),
        "{}",
        stderr(&o)
    );
}

/// Builds an image from a Dockerfile (busybox base) and returns its tag.
fn image_of(dockerfile: &str) -> String {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let tag = format!("{}:t", name("volimg"));
    ok(&["build", "-q", "-t", &tag, ctx.path().to_str().unwrap()]);
    tag
}

/// The host directory of the volume mounted at `target` in instance `n`.
fn mount_source(n: &str, target: &str) -> std::path::PathBuf {
    let doc = inspect(n);
    let m = doc["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == target)
        .unwrap_or_else(|| panic!("no mount at {target}: {}", doc["Mounts"]));
    std::path::PathBuf::from(m["Source"].as_str().unwrap())
}

#[test]
fn an_images_volumes_are_new_volumes_filled_from_the_image() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let _prune = PRUNING.lock().unwrap_or_else(|e| e.into_inner());
    // /data: owners, modes, a link, a FIFO, a nested file. /cfg: a link that climbs above
    // the root to /etc: resolved in the image, it is the image's /etc, never the host's.
    let image = image_of(
        "FROM busybox\n\
         RUN mkdir -p /data/sub && echo seeded > /data/sub/f && chown -R 1234:5678 /data \
             && chmod 0751 /data && chmod 4755 /data/sub/f && ln -s sub/f /data/link && mkfifo /data/pipe\n\
         RUN echo image > /etc/vessel-image-only && ln -s ../../../../../../etc /cfg\n\
         VOLUME /data /cfg\n",
    );
    assert!(
        std::path::Path::new("/etc/debian_version").exists(),
        "this test expects the host's /etc to hold debian_version"
    );

    // An anonymous volume per VOLUME, filled at create, before anything runs.
    let n = name("imgvol");
    ok(&[
        "create",
        "--name",
        &n,
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "cat /data/link; ls /data; echo more > /data/added",
    ]);
    let data = mount_source(&n, "/data");
    let cfg = mount_source(&n, "/cfg");
    assert!(data.ends_with("_data"), "{}", data.display());
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1234, 5678, 0o751)
    );
    let f = std::fs::metadata(data.join("sub/f")).unwrap();
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1234, 5678, 0o4755));
    assert_eq!(
        std::fs::read_link(data.join("link")).unwrap().to_str(),
        Some("sub/f")
    );
    assert!(std::fs::symlink_metadata(data.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(
        cfg.join("vessel-image-only").exists(),
        "the image's /etc was not copied"
    );
    assert!(
        !cfg.join("debian_version").exists(),
        "the copy-up followed the image's link to the host's /etc"
    );
    let out = ok(&["start", "-a", &n]);
    assert_eq!(out, "seeded\nlink\npipe\nsub\n");
    assert_eq!(
        std::fs::read_to_string(data.join("added")).unwrap(),
        "more\n"
    );
    // Started again: the volume is not empty, so nothing is copied over what it holds.
    std::fs::remove_file(data.join("sub/f")).unwrap();
    ok(&["start", "-a", &n]);
    assert!(
        !data.join("sub/f").exists(),
        "the copy-up ran again over the data"
    );
    ok(&["rm", "-v", &n]);
    assert!(
        !data.exists() && !cfg.exists(),
        "rm -v left the anonymous volumes"
    );

    // A named volume: filled once, from the first image mounted on it; `nocopy` (in -v
    // and in --mount) leaves a new one empty; a path mounted otherwise gets no volume.
    let vol = name("copyup");
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{vol}:/data"),
        &image,
        "sh",
        "-c",
        "rm /data/link; ls /data",
    ]);
    assert_eq!(out, "pipe\nsub\n");
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{vol}:/data"),
        &image,
        "ls",
        "/data",
    ]);
    assert_eq!(
        out, "pipe\nsub\n",
        "a named volume is filled only while it is empty"
    );
    let (empty1, empty2) = (name("nocopy"), name("nocopy"));
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{empty1}:/data:ro,nocopy"),
        "--mount",
        &format!("type=volume,src={empty2},dst=/cfg,volume-nocopy"),
        &image,
        "sh",
        "-c",
        "ls -A /data /cfg; touch /data/x 2>/dev/null || echo ro",
    ]);
    assert_eq!(out, "/cfg:\n\n/data:\nro\n");
    let host = tempfile::tempdir().unwrap();
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{}:/data", host.path().display()),
        &image,
        "sh",
        "-c",
        "ls -A /data; cat /cfg/vessel-image-only",
    ]);
    assert_eq!(
        out, "image\n",
        "the bind mount is empty and /cfg still a volume"
    );
    ok(&["volume", "rm", &vol, &empty1, &empty2]);
    let o = vessel(&["run", "--rm", "-v", "/tmp:/data:nocopy", "busybox", "true"]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).contains("nocopy is for volumes"),
        "{}",
        stderr(&o)
    );

    // With --userns the copy is owned by the ids the container's users map to.
    let out = ok(&[
        "run",
        "--rm",
        "--userns",
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "stat -c '%u:%g %a' /data /data/sub/f && echo w > /data/w && cat /data/w",
    ]);
    assert_eq!(out, "1234:5678 751\n1234:5678 4755\nw\n");
    ok(&["rmi", &image]);
}
