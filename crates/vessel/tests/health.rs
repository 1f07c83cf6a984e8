//! Health checks end to end, as Docker users meet them: `--health-*` flags and an image's
//! `HEALTHCHECK` (built with `vessel build`), the status in `ps` and `inspect`
//! (`State.Health`, `Config.Healthcheck`), `ps --filter health=`, the events, a probe
//! that outlives its timeout, `--no-healthcheck`, refusals of bad values, and that the
//! checker goes with the instance.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Waits until `inspect`'s `State.Health.Status` of `n` is `want`; returns the health.
fn wait_health(n: &str, want: &str, patience: Duration) -> serde_json::Value {
    let deadline = Instant::now() + patience;
    loop {
        let h = inspect(n)["State"]["Health"].clone();
        if h["Status"] == want {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "{n}: health never became {want}: {h}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ps`'s STATUS of instance `n`.
fn ps_status(n: &str) -> String {
    ok(&[
        "ps",
        "--filter",
        &format!("name={n}"),
        "--format",
        "{{.Status}}",
    ])
}

/// The `vessel __health` processes of instance `id` (by their command line).
fn checkers(id: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("__health") && c.contains(id)
            })
        })
        .count()
}

#[test]
fn health_flags_go_starting_unhealthy_healthy_in_ps_inspect_and_events() {
    let n = name("health");
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        "--health-cmd",
        "echo probe-says-hi; test -f /tmp/ok",
        "--health-interval",
        "300ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "1000",
    ]);
    let id = id_of(&n);
    let hc = &inspect(&n)["Config"]["Healthcheck"];
    assert_eq!(
        hc["Test"],
        serde_json::json!(["CMD-SHELL", "echo probe-says-hi; test -f /tmp/ok"])
    );
    assert_eq!(hc["Interval"], 300_000_000);
    assert_eq!(hc["Retries"], 2);
    let h = wait_health(&n, "unhealthy", Duration::from_secs(30));
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 1, "{h}");
    assert!(
        last["Output"].as_str().unwrap().contains("probe-says-hi"),
        "{h}"
    );
    let ps = ps_status(&n);
    assert!(ps.contains("(unhealthy)"), "{ps}");
    let unhealthy = ok(&["ps", "-q", "--no-trunc", "--filter", "health=unhealthy"]);
    assert!(unhealthy.contains(&id), "{unhealthy}");

    ok(&["exec", &n, "touch", "/tmp/ok"]);
    let h = wait_health(&n, "healthy", Duration::from_secs(30));
    assert_eq!(h["FailingStreak"], 0, "{h}");
    assert!(h["Log"].as_array().unwrap().len() <= 5, "{h}");
    let ps = ps_status(&n);
    assert!(ps.contains("(healthy)"), "{ps}");
    let healthy = ok(&["ps", "-q", "--no-trunc", "--filter", "health=healthy"]);
    assert!(healthy.contains(&id), "{healthy}");
    assert!(!ok(&["ps", "-q", "--no-trunc", "--filter", "health=none"]).contains(&id));
    let until = (chrono::Utc::now().timestamp() + 1).to_string();
    let events = ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        &format!("container={id}"),
        "--format",
        "{{.Action}}",
    ]);
    assert!(
        events.contains("health_status: unhealthy") && events.contains("health_status: healthy"),
        "{events}"
    );
    assert_eq!(checkers(&id), 1, "one checker runs with the instance");

    // The checker goes with the instance.
    ok(&["rm", "-f", &n]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while checkers(&id) > 0 {
        assert!(Instant::now() < deadline, "the health checker outlived rm");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_no_leftovers(&id);
}

#[test]
fn a_probe_past_its_timeout_is_stopped_and_counted_as_failed() {
    let n = name("health-timeout");
    ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        "--health-cmd",
        "sleep 30",
        "--health-interval",
        "200ms",
        "--health-timeout",
        "300ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ]);
    let started = Instant::now();
    let h = wait_health(&n, "unhealthy", Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the probe was not stopped at its timeout"
    );
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], -1, "{h}");
    assert_eq!(
        last["Output"], "Health check exceeded timeout (300ms)",
        "{h}"
    );
    // No probe is left running inside.
    let procs = ok(&["exec", &n, "ps", "-o", "args"]);
    assert!(
        procs.lines().filter(|l| l.trim() == "sleep 30").count() <= 1,
        "timed-out probes pile up: {procs}"
    );
    let id = id_of(&n);
    ok(&["rm", "-f", &n]);
    assert_no_leftovers(&id);
}

#[test]
fn the_images_healthcheck_applies_and_flags_override_or_disable_it() {
    let ctx = std::env::temp_dir().join(name("health-ctx"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nHEALTHCHECK --interval=300ms --retries=1 CMD [\"test\", \"-e\", \"/etc/passwd\"]\n",
    )
    .unwrap();
    let image = format!("{}:latest", name("health-image"));
    let image = image.to_lowercase();
    ok(&["build", "-q", "-t", &image, ctx.to_str().unwrap()]);

    let from_image = name("health-from-image");
    ok(&[
        "run",
        "-d",
        "--name",
        &from_image,
        "--network",
        "none",
        &image,
        "sleep",
        "1000",
    ]);
    let hc = &inspect(&from_image)["Config"]["Healthcheck"];
    assert_eq!(
        hc["Test"],
        serde_json::json!(["CMD", "test", "-e", "/etc/passwd"])
    );
    wait_health(&from_image, "healthy", Duration::from_secs(30));

    // --health-cmd replaces the test; the image's interval and retries stay.
    let overridden = name("health-override");
    ok(&[
        "run",
        "-d",
        "--name",
        &overridden,
        "--network",
        "none",
        "--health-cmd",
        "false",
        &image,
        "sleep",
        "1000",
    ]);
    let hc = &inspect(&overridden)["Config"]["Healthcheck"];
    assert_eq!(hc["Test"], serde_json::json!(["CMD-SHELL", "false"]));
    assert_eq!(hc["Interval"], 300_000_000);
    wait_health(&overridden, "unhealthy", Duration::from_secs(30));

    // --no-healthcheck: no probe, no health, nothing in ps.
    let disabled = name("health-off");
    ok(&[
        "run",
        "-d",
        "--name",
        &disabled,
        "--network",
        "none",
        "--no-healthcheck",
        &image,
        "sleep",
        "1000",
    ]);
    std::thread::sleep(Duration::from_millis(800));
    let doc = inspect(&disabled);
    assert_eq!(
        doc["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["NONE"])
    );
    assert!(doc["State"]["Health"].is_null(), "{}", doc["State"]);
    let id = id_of(&disabled);
    assert_eq!(checkers(&id), 0);
    let ps = ps_status(&disabled);
    assert!(!ps.contains("health"), "{ps}");
    let ids: Vec<String> = [&from_image, &overridden, &disabled]
        .iter()
        .map(|n| id_of(n))
        .collect();
    ok(&["rm", "-f", &from_image, &overridden, &disabled]);
    assert_none_left(&ids);
    ok(&["rmi", &image]);
    let _ = std::fs::remove_dir_all(&ctx);
}

#[test]
fn bad_health_values_are_refused_before_anything_is_created() {
    for (flags, needle) in [
        (
            &["--no-healthcheck", "--health-cmd", "true"][..],
            "--no-healthcheck conflicts with --health-* options",
        ),
        (
            &["--health-cmd", "true", "--health-interval", "ten"][..],
            "--health-interval",
        ),
        (
            &["--health-cmd", "true", "--health-timeout", "10us"][..],
            "Timeout in Healthcheck cannot be less than 1ms",
        ),
        (
            &["--health-cmd", "true", "--health-retries", "-2"][..],
            "Retries in Healthcheck cannot be negative",
        ),
    ] {
        let n = name("health-bad");
        let mut args = vec!["run", "--name", &n];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "true"]);
        let out = vessel(&args);
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{flags:?}: {err}");
        assert!(!vessel(&["inspect", &n]).status.success(), "{flags:?}");
    }
    let out = vessel(&["ps", "--filter", "health=fine"]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("invalid filter 'health=fine'"));
}
