//! `--format` templates and `ps --filter`, as Docker's listing commands take them.

mod common;

use common::*;

#[test]
fn ps_filters_and_templates() {
    let web = name("fmt-web");
    let failed = name("fmt-failed");
    ok(&[
        "run",
        "-d",
        "--name",
        &web,
        "-l",
        "tier=web",
        "--network",
        "none",
        "busybox",
        "sleep",
        "100",
    ]);
    let o = vessel(&[
        "run",
        "--name",
        &failed,
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "exit 4",
    ]);
    assert_eq!(code(&o), 4);

    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["ps"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--format", "{{.Names}}"]);
        ok(&a).lines().map(String::from).collect()
    };
    let mine = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .filter(|n| n == &web || n == &failed)
            .collect()
    };
    assert_eq!(
        mine(names(&["--filter", "label=tier=web"])),
        vec![web.clone()]
    );
    assert_eq!(mine(names(&["--filter", "label=tier"])), vec![web.clone()]);
    // A status filter shows stopped instances without -a.
    assert_eq!(
        mine(names(&["--filter", "status=exited"])),
        vec![failed.clone()]
    );
    assert_eq!(mine(names(&["--filter", "exited=4"])), vec![failed.clone()]);
    assert!(mine(names(&["--filter", "exited=5"])).is_empty());
    // The same key twice: either; two keys: both.
    let mut both = mine(names(&[
        "-a",
        "--filter",
        &format!("name={web}"),
        "--filter",
        &format!("name={failed}"),
    ]));
    both.sort();
    let mut want = vec![web.clone(), failed.clone()];
    want.sort();
    assert_eq!(both, want);
    assert!(mine(names(&[
        "-a",
        "--filter",
        &format!("name={web}"),
        "--filter",
        "status=exited"
    ]))
    .is_empty());
    assert_eq!(
        mine(names(&[
            "--filter",
            "isolation=container",
            "--filter",
            &format!("name={web}")
        ])),
        vec![web.clone()]
    );
    assert_eq!(
        mine(names(&[
            "-a",
            "--filter",
            "ancestor=busybox",
            "--filter",
            &format!("id={}", &id_of(&web)[..8])
        ])),
        vec![web.clone()]
    );

    let line = ok(&[
        "ps",
        "--filter",
        &format!("name={web}"),
        "--format",
        "{{.Names}} {{.State}} {{.Label \"tier\"}} {{upper .Isolation}}",
    ]);
    assert_eq!(line, format!("{web} running web CONTAINER\n"));
    let json = ok(&[
        "ps",
        "--filter",
        &format!("name={web}"),
        "--format",
        "{{json .}}",
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["Names"], web.as_str());
    assert_eq!(v["Labels"]["tier"], "web");
    assert_eq!(v["ID"], &id_of(&web)[..12]);
    let table = ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={failed}"),
        "--format",
        "table {{.ID}}\\t{{.Names}}\\t{{.Status}}",
    ]);
    let mut lines = table.lines();
    let head = lines.next().unwrap();
    assert!(head.starts_with("CONTAINER ID   NAMES"), "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.contains(&failed) && row.contains("Exited (4)"),
        "{table}"
    );
    // The columns line up under their titles.
    assert_eq!(head.find("NAMES"), row.find(&failed), "{table}");

    for (args, needle) in [
        (
            vec!["ps", "--format", "{{.Nope}}"],
            "can't evaluate field Nope",
        ),
        (
            vec!["ps", "--format", "{{range .}}x{{end}}"],
            "not supported",
        ),
        (vec!["ps", "--filter", "colour=red"], "invalid filter"),
        (vec!["ps", "--filter", "status=sleepy"], "invalid filter"),
        (vec!["ps", "--filter", "novalue"], "name=value"),
    ] {
        let o = vessel(&args);
        assert_ne!(code(&o), 0, "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        // (clap's usage hint follows a template refused while parsing the flags.)
        assert!(
            stderr(&o)
                .lines()
                .next()
                .unwrap_or_default()
                .contains(needle),
            "{args:?}: the first line says it: {}",
            stderr(&o)
        );
    }
    ok(&["rm", "-f", &web, &failed]);
}

#[test]
fn images_and_networks_take_templates() {
    let out = ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(out.lines().any(|l| l == "busybox:latest"), "{out}");
    let t = ok(&["images", "--format", "table {{.Repository}}\\t{{.Size}}"]);
    assert!(t.starts_with("REPOSITORY"), "{t}");
    let n = ok(&["network", "ls", "--format", "{{.Name}}/{{.Driver}}"]);
    assert!(n.lines().any(|l| l == "bridge/bridge"), "{n}");
}

#[test]
fn events_with_a_template_that_fails_exit_1_naming_it() {
    let n = name("evfmt");
    ok(&[
        "create",
        "--name",
        &n,
        "--network",
        "none",
        "busybox",
        "true",
    ]);
    let filter = format!("container={n}");
    let o = vessel(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        &filter,
        "--format",
        "{{.Nope}}",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("Nope"), "{}", stderr(&o));
    let o = vessel(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        &filter,
        "--format",
        "{{.Action}}",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "create\n");
    ok(&["rm", &n]);
}

/// `inspect -f` as Docker's: a template per document, whose fields may name inner ones,
/// for instances, images, networks and volumes; a field that is not there fails (1).
#[test]
fn inspect_takes_a_template_with_inner_fields() {
    let n = name("fmt-inspect");
    ok(&["create", "--name", &n, "busybox", "echo", "x"]);
    assert_eq!(
        ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{json .Config.Cmd}}",
            &n
        ]),
        "created [\"echo\",\"x\"]\n"
    );
    assert!(ok(&["inspect", "--format", "{{.Id}}", "busybox"]).starts_with("sha256:"));
    assert_eq!(
        ok(&["image", "inspect", "-f", "{{.Os}}", "busybox"]),
        "linux\n"
    );
    assert_eq!(
        ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Name}} {{.Driver}}",
            "bridge"
        ]),
        "bridge bridge\n"
    );
    let vol = name("fmt-vol");
    ok(&["volume", "create", &vol]);
    assert_eq!(
        ok(&["volume", "inspect", "-f", "{{.Name}} {{.Driver}}", &vol]),
        format!("{vol} local\n")
    );
    // Two documents, a line each; JSON as before.
    assert_eq!(
        ok(&["inspect", "-f", "{{.Name}}", &n, &n]).lines().count(),
        2
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", "-f", "json", &n])).unwrap();
    assert_eq!(json[0]["State"]["Status"], "created");
    let o = vessel(&["inspect", "-f", "{{.State.Nope}}", &n]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("State.Nope"), "{}", stderr(&o));
    ok(&["rm", &n]);
    ok(&["volume", "rm", &vol]);
}
