//! vessel-runc forks container processes from a sealed view of its binary (the
//! CVE-2019-5736 class, see vessel_container::sealed): until the container's program
//! replaces it, `/proc/<init>/exe` must be a read-only overlay, not the host's file that a
//! process of the container could later write through.

mod common;

use std::os::fd::AsFd;

use common::*;
use serde_json::json;

/// overlayfs' `statfs` magic.
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

#[test]
fn created_init_runs_from_a_sealed_read_only_view() {
    let [v, _] = both();
    let mut s = base_spec();
    s["process"]["args"] = json!(["sleep", "1000"]);
    let b = bundle(&s);
    let id = id("sealed");
    let pidf = b.join("pid");
    let o = v.run(&[
        "create",
        "--bundle",
        b.to_str().unwrap(),
        "--pid-file",
        pidf.to_str().unwrap(),
        &id,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pid = std::fs::read_to_string(&pidf).unwrap();
    // The init waits for `start` inside vessel-runc's code: its exe is vessel-runc's.
    let exe = std::fs::File::open(format!("/proc/{}/exe", pid.trim())).unwrap();
    let st = nix::sys::statfs::fstatfs(exe.as_fd()).unwrap();
    let host = std::fs::metadata(vessel_runc()).unwrap();
    let seen = exe.metadata().unwrap();
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{}/exe", pid.trim()));
    let _ = v.run(&["delete", "--force", &id]);
    assert_eq!(seen.len(), host.len(), "the init runs vessel-runc");
    assert_eq!(
        st.filesystem_type().0 as i64,
        OVERLAYFS_MAGIC,
        "the init's exe is the host's file, not a sealed view"
    );
    let e = write.expect_err("the init's exe must not be writable");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
}
