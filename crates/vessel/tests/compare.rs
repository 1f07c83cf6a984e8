//! End-to-end tests of `vessel compare` on this host: the container side measured for
//! real, the VM side reported as unavailable with its reason (the VM side is tested in
//! the testbed, in tests/vm.rs).

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;

const ROWS: &[&str] = &[
    "virtualization",
    "start",
    "resources",
    "storage",
    "isolation",
    "performance",
    "portability",
];

fn metric<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["metrics"].as_array().unwrap())
        .find(|m| m["key"] == key)
        .unwrap_or_else(|| panic!("no metric {key} in {report:#}"))
}

fn measured(cell: &Value, unit: &str, samples: u64) -> f64 {
    assert_eq!(cell["status"], "measured", "{cell}");
    assert_eq!(cell["unit"], unit, "{cell}");
    assert_eq!(cell["samples"], samples, "{cell}");
    cell["value"].as_f64().unwrap()
}

fn text(cell: &Value) -> &str {
    cell["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {cell}"))
}

/// Runs `vessel compare` with a guest kernel directory that holds nothing, so the VM side
/// cannot run on any host, whatever its KVM. Also returns the pid of the `vessel compare`
/// process, which names its probe image.
fn compare(args: &[&str]) -> (std::process::Output, tempfile::TempDir, u32) {
    let dir = tempfile::tempdir().unwrap();
    let child = cmd(&[&["compare"], args].concat())
        .env("VESSEL_KERNEL_DIR", dir.path().join("no-kernel"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap(), dir, pid)
}

#[test]
fn compare_measures_the_container_side_and_says_why_the_vm_side_cannot_run() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("report.json");
    let (o, _k, pid) = compare(&[
        "--runs",
        "3",
        "--isolation",
        "both",
        "--json",
        json.to_str().unwrap(),
        "busybox",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let keys: Vec<&str> = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ROWS);
    assert_eq!(r["runs"], 3);
    let host_kernel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    assert_eq!(r["host"]["kernel"], host_kernel.as_str());

    // Every container cell is a figure with unit and samples, or a fact; none failed.
    // Every VM cell is unavailable, with the one reason the report gives.
    let why = r["vm_unavailable"].as_str().expect("vm_unavailable");
    assert!(why.contains("--isolation vm"), "{why}");
    for row in r["rows"].as_array().unwrap() {
        for m in row["metrics"].as_array().unwrap() {
            let c = &m["container"];
            match c["status"].as_str().unwrap() {
                "measured" => {
                    assert!(!c["unit"].as_str().unwrap().is_empty(), "{m}");
                    assert!(c["samples"].as_u64().unwrap() >= 1, "{m}");
                    assert!(c["value"].as_f64().unwrap().is_finite(), "{m}");
                }
                "observed" | "stated" => assert!(!text(c).is_empty(), "{m}"),
                s => panic!("container cell {s}: {m}"),
            }
            assert_eq!(m["vm"]["status"], "unavailable", "{m}");
            assert_eq!(m["vm"]["reason"], why, "{m}");
            assert!(!m["method"].as_str().unwrap().is_empty(), "{m}");
            assert!(m["ratio"].is_null(), "{m}");
        }
    }

    // Sane figures.
    assert_eq!(text(&metric(&r, "kernel")["container"]), host_kernel);
    let start = measured(&metric(&r, "start_median")["container"], "ms", 3);
    let p95 = measured(&metric(&r, "start_p95")["container"], "ms", 3);
    assert!(start > 0.0 && start < 10_000.0, "start {start} ms");
    assert!(p95 >= start, "p95 {p95} < median {start}");
    let first = measured(&metric(&r, "first_output_median")["container"], "ms", 3);
    assert!(first > 0.0 && first < 10_000.0, "first output {first} ms");
    let mem = measured(&metric(&r, "idle_memory")["container"], "B", 2);
    assert!((64e3..512e6).contains(&mem), "idle memory {mem} B");
    let fit = measured(
        &metric(&r, "instances_in_budget")["container"],
        "instances",
        2,
    );
    assert_eq!(fit, ((1u64 << 30) as f64 / mem).floor());
    let first_disk = measured(&metric(&r, "first_instance_disk")["container"], "B", 1);
    assert!(first_disk < 64e6, "first instance wrote {first_disk} B");
    let shared = measured(&metric(&r, "shared_disk")["container"], "B", 1);
    assert!(shared > 1e5, "shared layers {shared} B");
    assert!(text(&metric(&r, "own_kernel")["container"]).starts_with("no"));
    assert!(text(&metric(&r, "host_processes_visible")["container"]).starts_with("no"));
    assert!(text(&metric(&r, "seccomp")["container"]).starts_with("2 "));
    assert_eq!(
        metric(&r, "kernel_panic_scope")["container"]["status"],
        "stated"
    );
    for k in ["cpu", "syscall", "file"] {
        let x = measured(&metric(&r, k)["container"], "x host", 3);
        assert!((0.05..20.0).contains(&x), "{k}: {x}x host");
    }

    // The table shows every aspect and the reason once.
    let table = stdout(&o);
    for title in [
        "Virtualization level",
        "Boot/start time",
        "Resource overhead",
        "Storage efficiency",
        "Isolation",
        "Performance",
        "Portability",
    ] {
        assert!(table.contains(title), "{title} missing:\n{table}");
    }
    assert!(table.contains(&format!("[1] {why}")), "{table}");
    assert!(!table.contains('\x1b'), "colour on a pipe");

    // Nothing left: no instance, no probe image (tagged `<base>-<pid>`; other tests'
    // runs of compare share this data root and may hold theirs right now).
    let ps: Value = serde_json::from_str(&ok(&["ps", "-a", "--format", "json"])).unwrap();
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .all(|i| !i["Config"]["Cmd"].to_string().contains("100000")),
        "an idle instance is left: {ps}"
    );
    let images = ok(&["images"]);
    assert!(
        !images
            .lines()
            .any(|l| l.contains("vessel-compare-probe") && l.contains(&format!("-{pid}"))),
        "the probe image is left:\n{images}"
    );
}

#[test]
fn compare_bad_input_is_a_clear_125() {
    let (o, _k, _) = compare(&["--runs", "0", "busybox"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("--runs"), "{}", stderr(&o));
    let (o, _k, _) = compare(&["--budget", "lots", "busybox"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("--budget"), "{}", stderr(&o));
    let (o, _k, _) = compare(&["no-such-image:1"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("no-such-image"), "{}", stderr(&o));
}

/// Headless Chromium from Debian (`./x setup` installs it).
fn chromium() -> &'static str {
    let found = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "chromium is not installed: apt-get install chromium (./x setup does)"
    );
    "chromium"
}

#[test]
fn the_html_report_renders_offline_with_every_row() {
    let browser = chromium();
    let out = tempfile::tempdir().unwrap();
    let html = out.path().join("report.html");
    let (o, _k, _) = compare(&[
        "--runs",
        "1",
        "--isolation",
        "container",
        "--html",
        html.to_str().unwrap(),
        "busybox",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg"), "no chart");
    // Chromium in a network namespace of its own: the page cannot fetch anything.
    let url = format!("file://{}", html.display());
    let profile = out.path().join("profile");
    let shot = out.path().join("shot.png");
    let run = |extra: &[&str]| {
        let o = std::process::Command::new("unshare")
            .args([
                "--net",
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--window-size=1400,2400", "--hide-scrollbars"])
            .args(extra)
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "chromium {extra:?}: {}", stderr(&o));
        o
    };
    let dom = stdout(&run(&["--dump-dom"]));
    for title in [
        "Virtualization level",
        "Boot/start time",
        "Resource overhead",
        "Storage efficiency",
        "Isolation",
        "Performance",
        "Portability and use cases",
    ] {
        assert!(dom.contains(title), "{title} not rendered:\n{dom}");
    }
    assert!(dom.contains("<svg"), "no chart in the rendered page");
    run(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() > 20_000, "screenshot of {} bytes", png.len());
}
