//! `vessel build`, end to end: real builds on the busybox image of the test data root,
//! the results run with `vessel run` and read with `vessel image inspect`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{code, ok, root, stderr, stdout, vessel};

/// A fresh context directory holding `files` (path, content).
fn context(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(common::name("vessel-build-ctx"));
    let _ = std::fs::remove_dir_all(&dir);
    for (p, c) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn build(ctx: &Path, args: &[&str]) -> Output {
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    let c = ctx.to_str().unwrap().to_string();
    a.push(&c);
    vessel(&a)
}

fn build_ok(ctx: &Path, args: &[&str]) -> String {
    let o = build(ctx, args);
    assert!(
        o.status.success(),
        "build failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// `vessel run --rm IMAGE sh -c SCRIPT`'s stdout.
fn run_in(image: &str, script: &str) -> String {
    ok(&["run", "--rm", image, "sh", "-c", script])
}

fn image_inspect(image: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ok(&["image", "inspect", image])).unwrap();
    v[0].clone()
}

/// The raw config document of an image (fields `image inspect` does not show).
fn config_doc(image: &str) -> serde_json::Value {
    let id = image_inspect(image)["Id"].as_str().unwrap().to_string();
    let hex = id.trim_start_matches("sha256:");
    let p = root().join("images/blobs/sha256").join(hex);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn tag(prefix: &str) -> String {
    format!("{}:t", common::name(prefix))
}

#[test]
fn every_instruction_builds_an_image_that_runs() {
    let ctx = context(&[
        ("hello.txt", "hello from the context\n"),
        ("dir/a", "A\n"),
        ("dir/sub/b", "B\n"),
        ("tarsrc/t1", "in the tar\n"),
        (
            "Dockerfile",
            r#"# syntax=docker/dockerfile:1
ARG BASE=busybox:latest
FROM ${BASE} AS base
ARG GREETING=hi
ENV APP_HOME=/srv/app \
    MSG="two words"
LABEL org.example.name="vessel test" version=1
WORKDIR $APP_HOME
COPY hello.txt ./
COPY --chown=1:1 --chmod=640 hello.txt /owned.txt
COPY dir /copied/
ADD files.tar.gz /extracted/
COPY <<EOF /heredoc.txt
greeting=${GREETING}
EOF
RUN echo "run: $GREETING $MSG" > /run.txt && \
    mkdir -p /gone /opaque && echo old > /opaque/old && echo x > /gone/f
RUN ["/bin/sh", "-c", "rm -rf /gone && rm -rf /opaque && mkdir /opaque && echo new > /opaque/new"]
SHELL ["/bin/sh", "-ec"]
RUN echo shell-form-under-SHELL > /shell.txt
USER daemon
RUN id -u > /tmp/uid.txt
USER root
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=5s --retries=2 CMD true
ONBUILD RUN echo triggered
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /run.txt"]
"#,
        ),
    ]);
    let st = std::process::Command::new("tar")
        .args(["-czf", "files.tar.gz", "-C", "tarsrc", "."])
        .current_dir(&ctx)
        .status()
        .unwrap();
    assert!(st.success());
    let image = tag("every");
    let out = build_ok(&ctx, &["-t", &image]);
    assert!(out.contains("STEP 1/"), "plain progress: {out}");
    assert!(out.contains("syntax directive"), "{out}");
    assert!(
        out.contains(&format!("Successfully tagged {image}"))
            || out.contains("Successfully tagged")
    );

    // The default command (ENTRYPOINT + CMD) runs.
    assert_eq!(ok(&["run", "--rm", &image]), "run: hi two words\n");
    let files = ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "",
        &image,
        "sh",
        "-c",
        "pwd; cat hello.txt /srv/app/hello.txt /copied/a /copied/sub/b /extracted/t1 /heredoc.txt /shell.txt /tmp/uid.txt; \
         stat -c '%u:%g %a' /owned.txt; ls /opaque; test -e /gone && echo GONE-EXISTS; ls /opaque/old 2>&1 | grep -c 'No such'",
    ]);
    assert_eq!(
        files,
        "/srv/app\nhello from the context\nhello from the context\nA\nB\nin the tar\ngreeting=hi\nshell-form-under-SHELL\n1\n1:1 640\nnew\n1\n"
    );
    let i = image_inspect(&image);
    let c = &i["Config"];
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "root");
    assert_eq!(c["StopSignal"], "SIGQUIT");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["cat /run.txt"]));
    assert_eq!(c["Labels"]["org.example.name"], "vessel test");
    assert_eq!(c["Labels"]["version"], "1");
    let env: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap();
    assert!(env.contains(&"APP_HOME=/srv/app".to_string()), "{env:?}");
    assert!(env.contains(&"MSG=two words".to_string()), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("GREETING=")),
        "ARGs are not kept: {env:?}"
    );
    let doc = config_doc(&image);
    let dc = &doc["config"];
    assert!(
        dc["ExposedPorts"].get("8080/tcp").is_some() && dc["ExposedPorts"].get("53/udp").is_some(),
        "{dc}"
    );
    assert!(dc["Volumes"].get("/data").is_some(), "{dc}");
    assert_eq!(
        dc["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(dc["Healthcheck"]["Interval"], 5_000_000_000i64);
    assert_eq!(dc["Healthcheck"]["Retries"], 2);
    assert_eq!(dc["OnBuild"], serde_json::json!(["RUN echo triggered"]));
    assert_eq!(dc["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    // History: one entry per instruction after the base's, layers only for file steps.
    let history = doc["history"].as_array().unwrap();
    let layers = doc["rootfs"]["diff_ids"].as_array().unwrap().len();
    let non_empty = history
        .iter()
        .filter(|h| h["empty_layer"] != serde_json::json!(true))
        .count();
    assert_eq!(
        non_empty, layers,
        "history entries with a layer match the layers: {history:?}"
    );
    assert!(history.iter().any(|h| h["created_by"]
        .as_str()
        .unwrap()
        .starts_with("ENV APP_HOME=/srv/app")
        && h["empty_layer"] == serde_json::json!(true)));
}

#[test]
fn multi_stage_copies_from_a_stage_and_keeps_only_the_target() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS builder\nRUN mkdir /out && echo built > /out/artifact && echo junk > /builder-only\n\
         FROM busybox AS unused\nRUN exit 7\n\
         FROM busybox\nCOPY --from=builder /out/artifact /app/artifact\nCOPY --from=0 /out /out2/\n",
    )]);
    let image = tag("multi");
    let out = build_ok(&ctx, &["-t", &image]);
    assert!(
        !out.contains("exit 7"),
        "an unneeded stage is not built: {out}"
    );
    assert_eq!(
        run_in(
            &image,
            "cat /app/artifact /out2/artifact; test -e /builder-only || echo absent"
        ),
        "built\nbuilt\nabsent\n"
    );
    // --target picks a stage.
    let first = tag("multi-target");
    build_ok(&ctx, &["-t", &first, "--target", "builder"]);
    assert_eq!(run_in(&first, "cat /builder-only"), "junk\n");
    let o = build(&ctx, &["-t", &first, "--target", "nope"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("target stage \"nope\" could not be found"));
}

#[test]
fn an_unchanged_rebuild_runs_no_run_and_a_changed_file_does() {
    let ctx = context(&[
        ("app.txt", "version 1\n"),
        (
            "Dockerfile",
            "FROM busybox\nRUN echo RAN-FIRST-RUN | tr A-Z a-z && cat /proc/sys/kernel/random/uuid > /stamp1\nCOPY app.txt /app.txt\n\
             RUN echo RAN-SECOND-RUN | tr A-Z a-z && cat /proc/sys/kernel/random/uuid > /stamp2\n",
        ),
    ]);
    let image = tag("cache");
    // RUN output is lower case: the step lines (upper case) do not count as a run.
    let first = build_ok(&ctx, &["-t", &image]);
    assert!(
        first.contains("ran-first-run") && first.contains("ran-second-run"),
        "{first}"
    );
    let stamps = run_in(&image, "cat /stamp1 /stamp2");

    // Nothing changed: every step from the cache, no RUN ran, the layers are the same.
    let again = build_ok(&ctx, &["-t", &image]);
    assert!(
        !again.contains("ran-first-run") && !again.contains("ran-second-run"),
        "{again}"
    );
    assert_eq!(again.matches("--> Using cache").count(), 3, "{again}");
    assert_eq!(run_in(&image, "cat /stamp1 /stamp2"), stamps);

    // The copied file changed: the COPY and the RUN after it run again, the first RUN not.
    std::fs::write(ctx.join("app.txt"), "version 2\n").unwrap();
    let changed = build_ok(&ctx, &["-t", &image]);
    assert!(!changed.contains("ran-first-run"), "{changed}");
    assert!(changed.contains("ran-second-run"), "{changed}");
    let now = run_in(&image, "cat /app.txt /stamp1 /stamp2");
    let lines: Vec<&str> = now.lines().collect();
    let old: Vec<&str> = stamps.lines().collect();
    assert_eq!(lines[0], "version 2");
    assert_eq!(lines[1], old[0], "the first RUN's layer is reused");
    assert_ne!(lines[2], old[1], "the second RUN ran again");

    // A build argument in scope is part of a RUN's key.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nARG V=1\nRUN echo RAN-WITH-$V\n",
    )
    .unwrap();
    assert!(build_ok(&ctx, &["-t", &image]).contains("RAN-WITH-1"));
    assert!(!build_ok(&ctx, &["-t", &image]).contains("RAN-WITH-1"));
    assert!(build_ok(&ctx, &["-t", &image, "--build-arg", "V=2"]).contains("RAN-WITH-2"));

    // --no-cache runs everything.
    assert!(build_ok(&ctx, &["-t", &image, "--no-cache"]).contains("RAN-WITH-1"));
    // -q prints the image id only.
    let quiet = build_ok(&ctx, &["-t", &image, "-q"]);
    assert!(
        quiet.starts_with("sha256:") && quiet.lines().count() == 1,
        "{quiet:?}"
    );
}

#[test]
fn dockerignore_is_honoured() {
    let ctx = context(&[
        ("keep.txt", "k\n"),
        ("secret.key", "s\n"),
        ("logs/a.log", "l\n"),
        ("logs/important.log", "i\n"),
        ("deep/x/tmp/t", "t\n"),
        (
            ".dockerignore",
            "*.key\nlogs\n!logs/important.log\n**/tmp\nDockerfile\n",
        ),
        ("Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
    ]);
    let image = tag("ignore");
    build_ok(&ctx, &["-t", &image]);
    let listing = run_in(&image, "cd /ctx && find . -type f | sort");
    assert_eq!(
        listing,
        "./.dockerignore\n./keep.txt\n./logs/important.log\n"
    );
    // An excluded file named directly is not found.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY secret.key /\n").unwrap();
    let o = build(&ctx, &["-t", &image]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Dockerfile:2:") && stderr(&o).contains("excluded by .dockerignore"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_failing_run_names_its_line_exit_code_and_output() {
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\n# a comment\nRUN echo about to fail && echo on-stderr >&2 && exit 3\nRUN echo never\n",
    )]);
    let o = build(&ctx, &["-t", &tag("fail")]);
    assert_eq!(code(&o), 1, "docker build exits 1 on a failed step");
    let e = stderr(&o);
    assert!(e.contains("Dockerfile:4: RUN exited with 3"), "{e}");
    assert!(
        e.contains("about to fail") && e.contains("on-stderr"),
        "{e}"
    );
    assert!(!stdout(&o).contains("never"));
}

#[test]
fn bad_dockerfiles_are_named_by_line() {
    let cases: &[(&str, &str)] = &[
        ("FROM busybox\nFOO bar\n", "Dockerfile:2:"),
        (
            "FROM busybox\nCOPY missing.txt /\n",
            "Dockerfile:2: COPY missing.txt: not found",
        ),
        (
            "FROM busybox\nCOPY --from=later /x /x\nFROM busybox AS later\n",
            "Dockerfile:2: COPY --from=later: stage later is this one or a later one: a cycle",
        ),
        ("FROM busybox AS a\nCOPY --from=a /x /x\n", "a cycle"),
        (
            "FROM busybox\nADD https://example.com/x /x\n",
            "Dockerfile:2: ADD https://example.com/x: remote URLs are not supported",
        ),
        ("FROM busybox\nCOPY a b /notadir\n", "must be a directory"),
        (
            "FROM busybox\nRUN --mount=type=cache,target=/x true\n",
            "RUN --mount: not supported",
        ),
    ];
    for (text, want) in cases {
        let ctx = context(&[("Dockerfile", text), ("a", "a"), ("b", "b")]);
        let o = build(&ctx, &["-t", &tag("bad")]);
        assert_eq!(code(&o), 1, "{text}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(want),
            "{text}: want {want:?} in {}",
            stderr(&o)
        );
    }
    // --isolation vm boots a microVM per RUN only (vm.rs tests those, where KVM is): a
    // Dockerfile without one builds anywhere.
    let ctx = context(&[("Dockerfile", "FROM busybox\nLABEL isolated=vm\n")]);
    let t = tag("vm");
    build_ok(&ctx, &["--isolation", "vm", "-t", &t]);
    assert_eq!(image_inspect(&t)["Config"]["Labels"]["isolated"], "vm");
    let o = build(&ctx, &["--isolation", "kvm", "-t", &t]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
}

/// Attack: sources that lead out of the context (`..`, a relative or absolute symlink, a
/// symlinked directory on the way) must fail, never read the host's files.
#[test]
fn copy_cannot_read_outside_the_context() {
    let outside = std::env::temp_dir().join(common::name("vessel-build-outside"));
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "HOST SECRET\n").unwrap();
    let ctx = context(&[("Dockerfile", "FROM busybox\n")]);
    std::os::unix::fs::symlink(outside.join("secret"), ctx.join("abs-link")).unwrap();
    std::os::unix::fs::symlink(
        "../".repeat(12) + outside.strip_prefix("/").unwrap().to_str().unwrap(),
        ctx.join("rel-dir"),
    )
    .unwrap();
    let sub = ctx.file_name().unwrap().to_str().unwrap().to_string();
    for src in [
        "../".to_string() + outside.file_name().unwrap().to_str().unwrap() + "/secret",
        format!(
            "../{sub}/../{}/secret",
            outside.file_name().unwrap().to_str().unwrap()
        ),
        "abs-link".to_string(),
        "rel-dir/secret".to_string(),
        "rel-dir".to_string(),
    ] {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM busybox\nCOPY {src} /stolen\n"),
        )
        .unwrap();
        let o = build(&ctx, &["-t", &tag("escape")]);
        assert_eq!(
            code(&o),
            1,
            "COPY {src} must fail: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let e = stderr(&o);
        assert!(
            e.contains("Dockerfile:2:") && (e.contains("outside the build context")),
            "COPY {src}: {e}"
        );
    }
}

/// Attack: a symlink in the image (made by a RUN) must not redirect a COPY onto the host:
/// the destination resolves inside the image's root, as in a container.
#[test]
fn copy_cannot_write_through_an_image_symlink_to_the_host() {
    let host = std::env::temp_dir().join(common::name("vessel-build-host-target"));
    std::fs::create_dir_all(&host).unwrap();
    let ctx = context(&[
        ("payload", "PWNED\n"),
        (
            "Dockerfile",
            &format!(
                "FROM busybox\nRUN ln -s {h} /evil-abs && ln -s ../../../../../../../..{h} /evil-rel\n\
                 COPY payload /evil-abs/p1\nCOPY payload /evil-rel/p2\nCOPY payload /evil-abs/new/dir/p3\n",
                h = host.display()
            ),
        ),
    ]);
    let image = tag("symlink");
    build_ok(&ctx, &["-t", &image]);
    let left = entries(&host);
    assert!(
        left.is_empty(),
        "the COPY wrote onto the host: {left:?} in {}",
        host.display()
    );
    // Inside the image, the writes followed the links within its root.
    let inside = run_in(
        &image,
        &format!("cat {h}/p1 {h}/p2 {h}/new/dir/p3", h = host.display()),
    );
    assert_eq!(inside, "PWNED\nPWNED\nPWNED\n");
}

/// Every path under `dir` (but `skip`), each as [`describe`] tells it.
fn tree(dir: &Path, skip: &[&str]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(dir.join(&rel)).unwrap() {
            let r = rel.join(e.unwrap().file_name());
            let key = format!("/{}", r.display());
            if skip.contains(&key.as_str()) {
                continue;
            }
            if std::fs::symlink_metadata(dir.join(&r)).unwrap().is_dir() {
                stack.push(r);
            }
            out.insert(key.clone(), describe(dir, &key).unwrap());
        }
    }
    out
}

/// The path `path` of the tree at `dir` (not following a last symlink): type, mode,
/// owner, and content (size and hash past 1 KiB) or link target. None if it is absent.
fn describe(dir: &Path, path: &str) -> Option<String> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let p = dir.join(path.trim_start_matches('/'));
    let m = std::fs::symlink_metadata(&p).ok()?;
    let what = if m.file_type().is_symlink() {
        format!("link {}", std::fs::read_link(&p).unwrap().display())
    } else if m.is_dir() {
        "dir".to_string()
    } else if m.is_file() {
        let data = std::fs::read(&p).unwrap();
        if data.len() <= 1024 {
            format!("file {:?}", String::from_utf8_lossy(&data))
        } else {
            // SipHash with fixed keys: the same bytes hash the same in both trees.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            data.hash(&mut h);
            format!("file {} bytes hash {:016x}", data.len(), h.finish())
        }
    } else {
        format!("special {:x}", m.rdev())
    };
    let mode = if m.file_type().is_symlink() {
        0
    } else {
        m.mode() & 0o7777
    };
    Some(format!("{what} {mode:o} {}:{}", m.uid(), m.gid()))
}

/// `sh -c SCRIPT` in `dir`: its stdout, trimmed; a failure fails the test with its stderr.
fn sh(dir: &Path, script: &str) -> String {
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The buildah command line the comparisons use: Debian's buildah with a store of its own
/// under `work` (vfs storage), so that nothing of the host's buildah is read or left.
fn buildah(work: &Path) -> String {
    assert!(
        std::process::Command::new("buildah")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test compares with buildah: apt-get install buildah"
    );
    format!(
        "buildah --root {w}/root --runroot {w}/run --storage-driver vfs",
        w = work.display()
    )
}

/// The tree of `image` as vessel stores it: its layers under a throwaway overlay mounted at
/// `at/m` (returned; unmount it when done).
fn mount_layers(image: &str, at: &Path) -> PathBuf {
    let i = image_inspect(image);
    let lower: Vec<String> = i["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|l| {
            root()
                .join("images/layers")
                .join(l.as_str().unwrap().trim_start_matches("sha256:"))
                .display()
                .to_string()
        })
        .collect();
    sh(
        Path::new("/"),
        &format!(
            "mkdir -p {o}/u {o}/w {o}/m && mount -t overlay overlay -o lowerdir={l},upperdir={o}/u,workdir={o}/w {o}/m",
            o = at.display(),
            l = lower.join(":")
        ),
    );
    at.join("m")
}

/// The config fields a build sets, of vessel's image and of buildah's, as pairs; buildah's
/// own version label left out.
fn configs_of_both(
    image: &str,
    buildah: &str,
    theirs: &str,
    ctx: &Path,
) -> Vec<(String, serde_json::Value, serde_json::Value)> {
    let theirs_cfg: serde_json::Value = serde_json::from_str(&sh(
        ctx,
        &format!("{buildah} inspect --type image {theirs}"),
    ))
    .unwrap();
    let tc = &theirs_cfg["OCIv1"]["config"];
    let oc = &config_doc(image)["config"];
    let mut out: Vec<_> = [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "ExposedPorts",
    ]
    .iter()
    .map(|f| (f.to_string(), oc[f].clone(), tc[f].clone()))
    .collect();
    let mut labels = tc["Labels"].clone();
    if let Some(l) = labels.as_object_mut() {
        l.remove("io.buildah.version");
    }
    out.push(("Labels".to_string(), oc["Labels"].clone(), labels));
    out
}

/// The same Dockerfile built by `buildah bud` (Debian's buildah, chroot isolation, vfs
/// storage): the same files (paths, types, modes, owners, contents) and the same config.
#[test]
fn matches_buildah_bud() {
    let rootfs = root().parent().unwrap().join("busybox-rootfs");
    let ctx = context(&[
        ("one.txt", "one\n"),
        ("files/f1", "f1\n"),
        ("files/remove-me", "rm\n"),
        ("tarsrc/sub/d", "d\n"),
        (
            "Dockerfile",
            "FROM scratch\nADD rootfs.tar /\nENV PATH=/usr/sbin:/usr/bin:/sbin:/bin APP=/app\nARG VER=1\n\
             LABEL a=b version=$VER\nWORKDIR /app\nCOPY --chown=1:1 files/ ./files/\n\
             COPY --chmod=600 one.txt /etc/one.txt\nADD data.tar.gz /data/\n\
             RUN echo built $VER > /app/built && mkdir -p /var/x && chmod 750 /var/x && chown 1:1 /var/x && rm -f /etc/group\n\
             RUN ln -s /app/built /app/link && rm /app/files/remove-me\nUSER daemon\nEXPOSE 8080\n\
             ENTRYPOINT [\"/bin/sh\"]\nCMD [\"-c\", \"cat /app/built\"]\n",
        ),
    ]);
    let sh = |script: &str| sh(&ctx, script);
    sh(&format!(
        "chmod 755 files/f1 && tar -C {} -cf rootfs.tar . && tar -C tarsrc -czf data.tar.gz . && rm -r tarsrc",
        rootfs.display()
    ));
    let image = tag("vs-buildah");
    build_ok(&ctx, &["-t", &image]);

    let work = ctx.with_extension("buildah");
    let b = buildah(&work);
    sh(&format!(
        "{b} bud --isolation chroot -q -t cmp:1 -f Dockerfile . >/dev/null"
    ));
    let cid = sh(&format!("{b} from cmp:1"));
    let theirs_dir = PathBuf::from(sh(&format!("{b} mount {cid}")));

    // Ours: the image's layers under a throwaway overlay.
    let ov = work.join("ours");
    let ours_dir = mount_layers(&image, &ov);
    // Mount points each builder's RUN leaves in its own way (Docker's too).
    let skip = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/run"];
    let ours = tree(&ours_dir, &skip);
    let theirs = tree(&theirs_dir, &skip);
    sh(&format!(
        "umount {o}/m; {b} rm {cid} >/dev/null",
        o = ov.display()
    ));
    let differ: Vec<String> = ours
        .keys()
        .chain(theirs.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| ours.get(*k) != theirs.get(*k))
        .map(|k| format!("{k}: vessel {:?} buildah {:?}", ours.get(k), theirs.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "the trees differ:\n{}",
        differ.join("\n")
    );
    assert!(
        ours.len() > 250,
        "a whole busybox tree was compared ({} paths)",
        ours.len()
    );

    for (f, ours, theirs) in configs_of_both(&image, &b, "cmp:1", &ctx) {
        assert_eq!(
            ours, theirs,
            "config {f} (buildah's own version label aside)"
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Debian's archive, the mirror this machine's apt sources name.
const DEBIAN_HOST: &str = "deb.debian.org";
/// debootstrap's rootfs of bookworm (minbase) as a tar: made once per machine, since
/// debootstrap takes minutes, and kept for the next runs (and for `bench/build`).
const DEBIAN_TAR: &str = "/var/cache/vessel-tests/debootstrap-bookworm-minbase.tar";

/// Fails the test, saying so, unless Debian's archive answers: the realistic build needs
/// it (for debootstrap and for the Dockerfile's `apt-get`), and is never skipped.
fn assert_debian_archive_reachable() {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let why = (|| -> Result<(), String> {
        let addr = (DEBIAN_HOST, 80)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {DEBIAN_HOST}: {e}"))?
            .next()
            .ok_or(format!("{DEBIAN_HOST} has no address"))?;
        let timeout = std::time::Duration::from_secs(15);
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        s.set_read_timeout(Some(timeout)).unwrap();
        write!(
            s,
            "HEAD /debian/dists/bookworm/InRelease HTTP/1.1\r\nHost: {DEBIAN_HOST}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let status = answer.lines().next().unwrap_or("no answer");
        if status.contains(" 200 ") {
            Ok(())
        } else {
            Err(format!("HEAD /debian/dists/bookworm/InRelease: {status}"))
        }
    })();
    if let Err(e) = why {
        panic!(
            "Debian's archive (http://{DEBIAN_HOST}/debian) is unreachable: {e}. This test \
             debootstraps bookworm and apt-get installs from it; give the machine access \
             to the archive (it is not skipped)"
        );
    }
}

/// `vessel-debian:bookworm` in the test data root: [`DEBIAN_TAR`] (made by debootstrap
/// if missing) imported as Docker's own Debian images are configured.
fn debian_image() -> &'static str {
    static IMAGE: std::sync::OnceLock<&str> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let image = "vessel-debian:bookworm";
        if !Path::new(DEBIAN_TAR).exists() {
            assert!(
                Path::new("/usr/sbin/debootstrap").exists(),
                "this test builds on a Debian rootfs made by debootstrap: apt-get install debootstrap"
            );
            // Under a lock (test binaries may run side by side); a failed run leaves no
            // tar and no mounts behind. /dev is left empty, as in Docker's Debian images:
            // the runtime fills it.
            let script = format!(
                r#"set -e
tar={DEBIAN_TAR}
cache=$(dirname "$tar")
mkdir -p "$cache"
exec 9>"$cache/debootstrap.lock"
flock 9
[ -s "$tar" ] && exit 0
dir=$(mktemp -d "$cache/debootstrap.XXXXXX")
cleanup() {{
  awk -v d="$dir/" 'index($2, d) == 1 {{ print $2 }}' /proc/self/mounts | sort -r | xargs -r umount -l
  rm -rf --one-file-system "$dir"
}}
trap cleanup EXIT
if ! timeout 1200 debootstrap --variant=minbase bookworm "$dir/rootfs" http://{DEBIAN_HOST}/debian >"$dir/log" 2>&1; then
  echo "debootstrap --variant=minbase bookworm from http://{DEBIAN_HOST}/debian failed; its last lines:" >&2
  tail -n 25 "$dir/log" >&2
  exit 1
fi
tar --numeric-owner -C "$dir/rootfs" --exclude='./dev/*' -cf "$dir/rootfs.tar" .
mv "$dir/rootfs.tar" "$tar"
"#
            );
            sh(Path::new("/"), &script);
        }
        let o = common::vessel_within(
            &[
                "import",
                "-c",
                r#"CMD ["bash"]"#,
                "-c",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                DEBIAN_TAR,
                image,
            ],
            std::time::Duration::from_secs(600),
        );
        assert!(o.status.success(), "import {DEBIAN_TAR}: {}", stderr(&o));
        image
    })
}

/// The Debian packages installed in the tree at `dir` (dpkg's status file): name, version
/// and state of each.
fn dpkg_installed(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let status = std::fs::read_to_string(dir.join("var/lib/dpkg/status")).unwrap();
    let field = |para: &str, f: &str| {
        para.lines()
            .find_map(|l| l.strip_prefix(f))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    status
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let version = format!("{} ({})", field(p, "Version:"), field(p, "Status:"));
            (field(p, "Package:"), version)
        })
        .collect()
}

/// A realistic build: a Dockerfile that `apt-get install`s a package (jq, with its
/// libraries) on a debootstrapped Debian and copies in an app using it. The image runs,
/// the rebuild is all cache, and `buildah bud` of the same Dockerfile on the same base
/// gives the same config, the same installed packages and the same added files.
#[test]
fn debian_apt_get_install_and_an_app_match_buildah_bud() {
    assert_debian_archive_reachable();
    let base = debian_image();
    let ctx = context(&[
        (
            "greet.sh",
            "#!/bin/sh\nset -eu\nprintf '{\"greeting\": \"%s\", \"from\": [\"vessel\", \"jq\"]}' \"$GREETING\" |\n  \
             jq -r '\"\\(.greeting) from \\(.from | join(\" and \"))\"'\n",
        ),
        (
            "Dockerfile",
            &format!(
                "FROM {base}\nENV DEBIAN_FRONTEND=noninteractive GREETING=hello\n\
                 RUN apt-get update && apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*\n\
                 WORKDIR /app\nCOPY --chmod=755 greet.sh ./\nLABEL org.opencontainers.image.title=greet\n\
                 CMD [\"/app/greet.sh\"]\n"
            ),
        ),
    ]);
    let image = tag("debian-jq");
    let long = std::time::Duration::from_secs(900);
    let build = |what: &str| {
        let c = ctx.to_str().unwrap();
        let o = common::vessel_within(&["build", "-t", &image, c], long);
        assert!(
            o.status.success(),
            "{what} build failed:\nstdout:\n{}\nstderr:\n{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    };
    let first = build("the first");
    assert!(first.contains("Setting up jq"), "apt-get ran: {first}");

    // The app (through the package it installed) and the package's own binary run.
    assert_eq!(ok(&["run", "--rm", &image]), "hello from vessel and jq\n");
    let jq = ok(&["run", "--rm", &image, "jq", "--version"]);
    assert!(jq.starts_with("jq-1."), "{jq}");
    assert_eq!(
        run_in(&image, "pwd; dpkg-query -W -f '${Status}\\n' jq"),
        "/app\ninstall ok installed\n"
    );

    // Nothing changed: no apt-get again.
    let again = build("the cached");
    assert!(
        !again.contains("Setting up jq") && again.contains("--> Using cache"),
        "{again}"
    );

    // buildah, on the same base: vessel's image of it, saved and pulled into buildah's store.
    let work = ctx.with_extension("buildah");
    std::fs::create_dir_all(&work).unwrap();
    let b = buildah(&work);
    let saved = work.join("base.tar");
    let o = common::vessel_within(&["save", "-o", saved.to_str().unwrap(), base], long);
    assert!(o.status.success(), "save {base}: {}", stderr(&o));
    sh(
        &ctx,
        &format!("{b} pull -q docker-archive:{}", saved.display()),
    );
    sh(
        &ctx,
        &format!("{b} bud --isolation chroot -q -t cmp:1 -f Dockerfile . >/dev/null"),
    );
    let cid = sh(&ctx, &format!("{b} from cmp:1"));
    let theirs_dir = PathBuf::from(sh(&ctx, &format!("{b} mount {cid}")));
    let ov = work.join("ours");
    let ours_dir = mount_layers(&image, &ov);

    for (f, ours, theirs) in configs_of_both(&image, &b, "cmp:1", &ctx) {
        assert_eq!(
            ours, theirs,
            "config {f} (buildah's own version label aside)"
        );
    }
    // The same packages, at the same versions, installed.
    let packages = dpkg_installed(&ours_dir);
    assert!(
        packages.contains_key("jq") && packages.contains_key("libjq1"),
        "{packages:?}"
    );
    assert_eq!(packages, dpkg_installed(&theirs_dir), "installed packages");
    // The files the Dockerfile added: the app, and every path the jq package installed.
    let jq_list = std::fs::read_to_string(ours_dir.join("var/lib/dpkg/info/jq.list")).unwrap();
    let added: Vec<&str> = ["/app", "/app/greet.sh"]
        .into_iter()
        .chain(jq_list.lines().filter(|l| *l != "/."))
        .collect();
    assert!(added.contains(&"/usr/bin/jq"), "{jq_list}");
    let differ: Vec<String> = added
        .iter()
        .filter_map(|p| {
            let (o, t) = (describe(&ours_dir, p), describe(&theirs_dir, p));
            (o.is_none() || o != t).then(|| format!("{p}: vessel {o:?} buildah {t:?}"))
        })
        .collect();
    sh(
        &ctx,
        &format!("umount {}; {b} rm {cid} >/dev/null", ours_dir.display()),
    );
    assert!(
        differ.is_empty(),
        "the added files differ:\n{}",
        differ.join("\n")
    );
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&ctx);
    ok(&["rmi", &image]);
}

/// Attack: ADD extracts a local archive; entries that climb out (`../`), absolute ones, or
/// go through a symlink the archive itself plants must stay inside the image.
#[test]
fn add_of_a_hostile_tar_stays_in_the_image() {
    let host = std::env::temp_dir().join(common::name("vessel-build-tar-target"));
    std::fs::create_dir_all(&host).unwrap();
    let ctx = context(&[("Dockerfile", "FROM busybox\nADD evil.tar /x/\n")]);
    let h = host.display().to_string();
    let script = format!(
        r#"
import io, tarfile
t = tarfile.open("evil.tar", "w")
def f(name, data=b"PWNED\n"):
    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
f("../../../../../../../..{h}/climb")
f("{h}/absolute")
l = tarfile.TarInfo("link"); l.type = tarfile.SYMTYPE; l.linkname = "{h}"; t.addfile(l)
f("link/through-link")
t.close()
"#
    );
    let st = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .current_dir(&ctx)
        .status()
        .unwrap();
    assert!(st.success());
    let o = build(&ctx, &["-t", &tag("evil-tar")]);
    let left = entries(&host);
    assert!(
        left.is_empty(),
        "ADD wrote onto the host: {left:?} in {h} (build: {}{})",
        stdout(&o),
        stderr(&o)
    );
}

/// The names in directory `dir`.
fn entries(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

#[test]
fn pull_always_goes_to_the_registry_and_platform_is_amd64_only() {
    // An image in the store whose registry (port 1 of loopback) cannot answer.
    let base = "127.0.0.1:1/vessel-local-only:latest";
    ok(&["tag", "busybox", base]);
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN true\n"))]);
    // Without --pull the store's copy is used.
    let image = tag("pull-base");
    build_ok(&ctx, &["-q", "-t", &image, "--platform", "linux/amd64"]);
    // With --pull the registry is asked, and its failure fails the build in one line.
    let o = build(&ctx, &["-q", "--pull"]);
    assert_ne!(code(&o), 0);
    let err = stderr(&o);
    assert!(err.contains("--pull: the pull failed"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Another platform is refused before anything runs.
    let o = build(&ctx, &["--platform", "linux/arm64"]);
    assert_eq!(code(&o), 125);
    assert!(
        stderr(&o).contains("linux/amd64 images only"),
        "{}",
        stderr(&o)
    );
    ok(&["rmi", &image, base]);
    let _ = std::fs::remove_dir_all(&ctx);
}
