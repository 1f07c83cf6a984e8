//! End-to-end tests of `vessel compare` on this host: the container side measured for
//! real, the VM side reported as unavailable with its reason. The `#[ignore]`d test at the
//! end measures both sides in the nested testbed (scripts/vm-suite runs it).

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
///
/// One comparison at a time: two at once would time each other's fsyncs and CPU (the
/// figures are ratios of runs under one load, not of two comparisons racing).
fn compare(args: &[&str]) -> (std::process::Output, tempfile::TempDir, u32) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
                "measured" | "extrapolated" => {
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
    let fit = &metric(&r, "instances_in_budget")["container"];
    assert_eq!(fit["status"], "extrapolated", "{fit}");
    assert_eq!(fit["samples"], 2, "{fit}");
    assert_eq!(
        fit["value"].as_f64().unwrap(),
        ((1u64 << 30) as f64 / mem).floor()
    );
    let first_disk = measured(&metric(&r, "first_instance_disk")["container"], "B", 1);
    assert!(first_disk < 64e6, "first instance wrote {first_disk} B");
    let shared = measured(&metric(&r, "shared_disk")["container"], "B", 1);
    assert!(shared > 1e5, "shared layers {shared} B");
    assert!(text(&metric(&r, "own_kernel")["container"]).starts_with("no"));
    assert!(text(&metric(&r, "host_processes_visible")["container"]).starts_with("no"));
    container_rows_agree_with_the_shared_kernel(&r);
    file_row_is_synced(&r, "container");
    // Only successful runs are counted: 2 idle + 3 + 3 timed + facts + perf.
    assert_eq!(
        text(&metric(&r, "same_image")["container"]),
        "yes: 10 runs, all succeeded"
    );
    // An extrapolation says it is one, in the table's text too.
    assert!(text(&metric(&r, "use_case")["container"]).contains("extrapolated"));
    // The memory figure names both of its parts.
    let mem_detail = metric(&r, "idle_memory")["container"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        mem_detail.contains("cgroup") && mem_detail.contains("monitor PSS"),
        "{mem_detail}"
    );
    // This host is a VM under a hypervisor, not an emulator: nothing is flagged.
    assert!(r["emulated"].is_null(), "{}", r["emulated"]);
    assert!(text(&metric(&r, "seccomp")["container"]).starts_with("2 "));
    assert_eq!(
        metric(&r, "kernel_panic_scope")["container"]["status"],
        "stated"
    );
    for k in ["cpu", "syscall", "file"] {
        let x = measured(&metric(&r, k)["container"], "x host", 3);
        assert!((0.05..20.0).contains(&x), "{k}: {x}x host");
    }
    // Measured with fsync on both sides: a container cannot beat the host at a
    // durability test by skipping it (a volatile overlay made it 0.2-0.4x host).
    let file = measured(&metric(&r, "file")["container"], "x host", 3);
    assert!((0.5..4.0).contains(&file), "file loop {file}x host");

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

/// The isolation rows of a container agree with the kernel rows: the host's kernel, so
/// the host's symbols and modules (all of what the host held throughout the reading).
fn container_rows_agree_with_the_shared_kernel(r: &Value) {
    let c = |k: &str| text(&metric(r, k)["container"]).to_string();
    assert!(
        c("own_kernel").starts_with("no (shared"),
        "{}",
        c("own_kernel")
    );
    assert!(c("syscalls_handled_by").starts_with("the host's"));
    let syms = c("host_kallsyms_visible");
    assert!(
        syms.starts_with("yes (100% of the host's") || syms.starts_with("no (symbols unreadable"),
        "{syms}"
    );
    let mods = c("host_modules_visible");
    assert!(
        mods.starts_with("yes (100% of the host's")
            || mods.starts_with("no (none to see")
            || mods.starts_with("no (modules unreadable"),
        "{mods}"
    );
    for t in [&syms, &mods] {
        assert!(
            !t.contains("its own kernel"),
            "contradicts the kernel row: {t}"
        );
    }
}

/// The file loop of `side` ran with fsync on both sides, and the report says where.
fn file_row_is_synced(r: &Value, side: &str) {
    let m = metric(r, "file");
    let method = m["method"].as_str().unwrap();
    assert!(
        method.contains("not volatile") && method.contains("fsync"),
        "{method}"
    );
    let detail = m[side]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("fsync included on both"), "{m}");
    if side == "container" {
        assert!(detail.contains("overlay, not volatile"), "{m}");
    } else {
        assert!(detail.contains("fdatasyncs"), "{m}");
    }
}

/// What the file loop's check rests on: the probe tells a volatile overlay (`run --rm`)
/// from a synced one, so a figure taken on the former is refused, not printed.
#[test]
fn the_probe_tells_a_volatile_overlay_from_a_synced_one() {
    let init = std::path::Path::new(vessel_bin()).with_file_name("vessel-init");
    let bind = format!("{}:/probe:ro", init.display());
    let fs = |extra: &[&str]| {
        let mut args = vec!["run", "--network", "none", "-v", &bind];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "/probe", "probe", "perf", "1", "/"]);
        let v: Value = serde_json::from_str(&ok(&args)).unwrap();
        v["file_fs"].clone()
    };
    let volatile = fs(&["--rm"]);
    assert_eq!(volatile["fstype"], "overlay", "{volatile}");
    assert_eq!(volatile["volatile"], true, "--rm: {volatile}");
    let n = name("cmp-fs");
    let kept = fs(&["--name", &n]);
    ok(&["rm", "-f", &n]);
    assert_eq!(kept["fstype"], "overlay", "{kept}");
    assert_eq!(kept["volatile"], false, "kept: {kept}");
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
    let run = |extra: &[&str]| in_chromium(browser, &html, out.path(), extra);
    let shot = out.path().join("shot.png");
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
    assert!(
        !dom.contains("id=\"emulated\""),
        "this host is not emulated"
    );
    run(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() > 20_000, "screenshot of {} bytes", png.len());
}

/// Opens `html` in headless Chromium, in a network namespace of its own (the page cannot
/// fetch anything), with `extra` arguments (`--dump-dom`, `--screenshot=...`).
fn in_chromium(
    browser: &str,
    html: &std::path::Path,
    dir: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let url = format!("file://{}", html.display());
    let profile = dir.join("profile");
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
}

/// Modules of the testbed's kernel that nothing here uses: loaded one after another
/// while the comparison runs, so the host's module list keeps changing under it.
const SPARE_MODULES: &[&str] = &[
    "dummy",
    "ifb",
    "nlmon",
    "vcan",
    "crc7",
    "crc8",
    "crc_itu_t",
    "ts_kmp",
    "ts_bm",
    "ts_fsm",
    "xor",
    "garp",
    "stp",
    "llc",
    "mrp",
    "8021q",
    "macvlan",
    "ipvlan",
    "vxlan",
    "cordic",
    "lru_cache",
    "raid6_pq",
    "zstd",
    "lz4",
    "842_compress",
    "async_tx",
];

fn loaded_modules() -> Vec<String> {
    std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
#[ignore = "needs hardware KVM: run through scripts/vm-suite (./x test does)"]
fn compare_measures_both_isolations_side_by_side_and_says_when_it_is_emulated() {
    assert!(
        std::env::var_os("VESSEL_KERNEL_DIR").is_some(),
        "VESSEL_KERNEL_DIR is not set: run these tests through scripts/vm-suite"
    );
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("report.json");
    let html = out.path().join("report.html");
    let before = loaded_modules();
    // The host loads modules while the comparison runs (the VM side loads some too): the
    // first 1.5 s in, before any instance has read its lists, then every second.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let done = done.clone();
        let before = before.clone();
        std::thread::spawn(move || {
            let mut loaded = Vec::new();
            std::thread::sleep(std::time::Duration::from_millis(1500));
            for m in SPARE_MODULES
                .iter()
                .filter(|m| !before.iter().any(|b| b == *m))
            {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let ok = std::process::Command::new("modprobe")
                    .arg(m)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    loaded.push((*m).to_string());
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
            loaded
        })
    };
    // One run per figure: a VM start under nested emulation takes seconds to a minute,
    // and the whole VM suite shares one testbed time limit.
    let o = vessel_within(
        &[
            "compare",
            "--runs",
            "1",
            "--json",
            json.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
            "busybox",
        ],
        limit() * 3,
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let loaded = loader.join().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        !loaded.is_empty(),
        "no spare module could be loaded during the run: the test proves nothing ({SPARE_MODULES:?})"
    );
    eprintln!("modules loaded during the comparison: {loaded:?}");
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(r["vm_unavailable"].is_null(), "{}", r["vm_unavailable"]);
    // Every cell of both sides was measured (or observed); none failed.
    for row in r["rows"].as_array().unwrap() {
        for m in row["metrics"].as_array().unwrap() {
            for side in ["container", "vm"] {
                let s = m[side]["status"].as_str().unwrap();
                assert!(
                    ["measured", "observed", "stated", "extrapolated"].contains(&s),
                    "{side} {}: {}",
                    m["key"],
                    m[side]
                );
            }
        }
    }
    // The "host" here is the testbed's own kernel; the guest runs the cloud kernel.
    let host = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    assert_eq!(text(&metric(&r, "kernel")["container"]), host);
    let guest = std::env::var("VESSEL_TEST_KERNEL_VERSION").unwrap_or_default();
    assert_eq!(text(&metric(&r, "kernel")["vm"]), guest);
    assert_ne!(guest, host);

    // The isolation rows agree with the kernel rows on both sides, though the host's
    // module list changed during the run.
    container_rows_agree_with_the_shared_kernel(&r);
    let c = |k: &str| text(&metric(&r, k)["container"]).to_string();
    assert!(
        c("host_kallsyms_visible").starts_with("yes"),
        "{}",
        c("host_kallsyms_visible")
    );
    assert!(
        c("host_modules_visible").starts_with("yes"),
        "{}",
        c("host_modules_visible")
    );
    let v = |k: &str| text(&metric(&r, k)["vm"]).to_string();
    assert!(v("own_kernel").starts_with("yes"), "{}", v("own_kernel"));
    for k in [
        "host_kallsyms_visible",
        "host_modules_visible",
        "host_processes_visible",
    ] {
        assert!(v(k).starts_with("no"), "{k}: {}", v(k));
    }
    assert!(v("host_kallsyms_visible").contains("its own kernel"));

    // A VM boots a kernel; a container starts a process.
    let start = metric(&r, "start_median");
    let (cs, vs) = (
        start["container"]["value"].as_f64().unwrap(),
        start["vm"]["value"].as_f64().unwrap(),
    );
    assert!(vs > cs, "VM start {vs} ms <= container start {cs} ms");
    assert!(start["ratio"].as_f64().unwrap() > 1.0);
    // The VM's memory is the process holding the KVM VM; each VM adds its own disk.
    let mem = metric(&r, "idle_memory");
    assert!(mem["vm"]["value"].as_f64().unwrap() > mem["container"]["value"].as_f64().unwrap());
    assert!(
        mem["vm"]["detail"]
            .as_str()
            .unwrap()
            .contains("holds the KVM VM"),
        "{mem}"
    );
    assert!(
        metric(&r, "additional_instance_disk")["vm"]["value"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // Durability timed on both sides.
    file_row_is_synced(&r, "container");
    file_row_is_synced(&r, "vm");
    assert_eq!(
        metric(&r, "instances_in_budget")["vm"]["status"],
        "extrapolated"
    );

    // Emulation: the testbed is QEMU TCG, and every output says so.
    let table = stdout(&o);
    assert!(table.contains("MICROVM"), "{table}");
    if std::env::var_os("TESTBED").is_some() {
        let e = &r["emulated"];
        assert_eq!(e["signature"], "TCGTCGTCGTCG", "{r:#}");
        assert_eq!(e["note"], "emulated: compare ratios only");
        let kvm = r["host"]["kvm"].as_str().unwrap();
        assert!(kvm.contains("emulated, not hardware"), "{kvm}");
        // Every absolute time carries the caveat, in the JSON and in the table.
        for k in ["start_median", "start_p95", "first_output_median"] {
            for side in ["container", "vm"] {
                assert_eq!(
                    metric(&r, k)[side]["caveat"],
                    "emulated: compare ratios only",
                    "{k} {side}"
                );
            }
        }
        let banner = table.lines().nth(1).unwrap_or_default();
        assert!(
            banner.starts_with("EMULATED HOST") && banner.contains("TCGTCGTCGTCG"),
            "{table}"
        );
        assert!(table.contains("emulated*)"), "{table}");
        assert!(!table.contains("hardware KVM (Amd)"), "{table}");
        // And the HTML, as Chromium renders it.
        let dom = stdout(&in_chromium(chromium(), &html, out.path(), &["--dump-dom"]));
        assert!(dom.contains("id=\"emulated\""), "no banner:\n{dom}");
        assert!(dom.contains("Emulated host:"), "{dom}");
        assert!(dom.contains("QEMU TCG"), "{dom}");
        assert!(
            dom.matches("emulated: compare ratios only").count() >= 7,
            "absolute times not marked:\n{dom}"
        );
        assert!(dom.contains("emulated, not hardware"), "{dom}");
    } else {
        // Directly on hardware KVM: nothing to flag.
        assert!(r["emulated"].is_null(), "{}", r["emulated"]);
        assert!(!table.contains("EMULATED"), "{table}");
    }
}
