//! End-to-end test of `container prune`, `image prune`, `system df` and `system prune`.
//! One test in a binary of its own: pruning acts on every instance of the data root.

mod common;

use common::*;

#[test]
fn prune_takes_only_what_nothing_uses() {
    let running = name("up");
    let stopped = name("down");
    ok(&[
        "run",
        "-d",
        "--name",
        &running,
        "--network",
        "none",
        "busybox",
        "sleep",
        "1000",
    ]);
    ok(&[
        "run",
        "--name",
        &stopped,
        "--network",
        "none",
        "busybox",
        "true",
    ]);
    let stopped_id = id_of(&stopped);

    // Two images of the same tag: the first becomes untagged (dangling).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), "1").unwrap();
    let first = ok(&["import", dir.path().to_str().unwrap(), "prunable:1"]);
    std::fs::write(dir.path().join("a"), "2").unwrap();
    ok(&["import", dir.path().to_str().unwrap(), "prunable:1"]);
    ok(&["import", dir.path().to_str().unwrap(), "tagged-unused:1"]);

    let df = ok(&["system", "df"]);
    for row in [
        "TYPE",
        "Images",
        "Containers",
        "Local Volumes",
        "Build Cache",
    ] {
        assert!(df.contains(row), "{df}");
    }

    let out = ok(&["container", "prune", "-f"]);
    assert!(out.contains(&stopped_id), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert!(
        vessel(&["inspect", &stopped]).status.code() != Some(0),
        "the stopped instance is still there"
    );
    assert_eq!(
        inspect(&running)["State"]["Running"],
        true,
        "prune touched a running instance"
    );

    let out = ok(&["image", "prune", "-f"]);
    let first_id = first.trim().trim_start_matches("sha256:");
    assert!(
        out.contains("deleted: sha256:") && out.contains(&first_id[..12]),
        "{out}"
    );
    ok(&["image", "inspect", "prunable:1"]);
    ok(&["image", "inspect", "tagged-unused:1"]);

    // --all: every image no instance uses; busybox stays (the running instance uses it).
    let out = ok(&["image", "prune", "-a", "-f"]);
    assert!(
        out.contains("untagged: ") && out.contains("tagged-unused"),
        "{out}"
    );
    assert!(
        vessel(&["image", "inspect", "tagged-unused:1"])
            .status
            .code()
            != Some(0)
    );
    ok(&["image", "inspect", "busybox:latest"]);

    // system prune --volumes: unused volumes go, the running instance and its image stay.
    let vol = name("vol");
    ok(&["volume", "create", &vol]);
    let out = ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.contains(&vol), "{out}");
    assert_eq!(inspect(&running)["State"]["Running"], true);
    ok(&["image", "inspect", "busybox:latest"]);
    ok(&["rm", "-f", &running]);
}
