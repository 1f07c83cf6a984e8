//! The human table of a [`Report`]: aligned columns, notes for long reasons, colour only
//! when asked (the CLI asks on a terminal).

use super::report::{Cell, Report, EMULATED};

/// Formats a figure with its unit for people.
pub fn figure(value: f64, unit: &str) -> String {
    match unit {
        "ms" if value >= 10_000.0 => format!("{:.1} s", value / 1e3),
        "ms" if value >= 100.0 => format!("{value:.0} ms"),
        "ms" => format!("{value:.1} ms"),
        "B" => bytes(value),
        "x host" => format!("{value:.2}x host"),
        "instances" => format!("{value:.0}"),
        u => format!("{value:.2} {u}"),
    }
}

/// Bytes in binary units.
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// A cell's text, with the sample count; long reasons become numbered notes.
fn cell_text(c: &Cell, notes: &mut Vec<String>) -> (String, bool) {
    let mut note = |reason: &str| {
        let n = match notes.iter().position(|r| r == reason) {
            Some(i) => i + 1,
            None => {
                notes.push(reason.to_string());
                notes.len()
            }
        };
        format!("[{n}]")
    };
    match c {
        Cell::Measured {
            value,
            unit,
            samples,
            caveat,
            ..
        } => (
            match caveat {
                Some(c) if c == EMULATED => {
                    format!("{} (n={samples}, emulated*)", figure(*value, unit))
                }
                Some(c) => format!("{} (n={samples}, {})", figure(*value, unit), note(c)),
                None => format!("{} (n={samples})", figure(*value, unit)),
            },
            false,
        ),
        Cell::Extrapolated {
            value,
            unit,
            samples,
            ..
        } => (
            format!("{} (extrapolated from n={samples})", figure(*value, unit)),
            false,
        ),
        Cell::Observed { text, .. } | Cell::Stated { text } => (text.clone(), false),
        Cell::Failed { reason } => (format!("failed {}", note(reason)), true),
        Cell::Unavailable { reason } => (format!("unavailable {}", note(reason)), true),
    }
}

/// Renders the report as an aligned table.
pub fn render(r: &Report, colour: bool) -> String {
    let paint = |code: &str, s: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut notes = Vec::new();
    // (aspect, metric, container, vm, ratio, method), with failure flags.
    let mut lines: Vec<([String; 6], bool, bool)> = Vec::new();
    for row in &r.rows {
        for (i, m) in row.metrics.iter().enumerate() {
            let (c, cbad) = cell_text(&m.container, &mut notes);
            let (v, vbad) = cell_text(&m.vm, &mut notes);
            let ratio = m.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default();
            let aspect = if i == 0 {
                row.title.clone()
            } else {
                String::new()
            };
            lines.push((
                [aspect, m.label.clone(), c, v, ratio, m.method.clone()],
                cbad,
                vbad,
            ));
        }
    }
    let head = [
        "ASPECT",
        "MEASURE",
        "CONTAINER",
        "MICROVM",
        "VM/CONTAINER",
        "METHOD",
    ];
    let mut width = head.map(|h| h.chars().count());
    for (cols, _, _) in &lines {
        for (w, c) in width.iter_mut().zip(cols.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let mut out = String::new();
    out.push_str(&paint(
        "1",
        &format!(
            "vessel compare {}: container vs microVM on this host (kernel {}, {} CPUs, {} RAM)",
            r.image,
            r.host.kernel,
            r.host.cpus,
            bytes(r.host.memory as f64)
        ),
    ));
    out.push('\n');
    if let Some(e) = &r.emulated {
        out.push_str(&paint(
            "1;31",
            &format!(
                "EMULATED HOST: this host runs under {} (CPUID hypervisor vendor \"{}\"): every absolute time (marked *) is {}.",
                e.by, e.signature, e.note
            ),
        ));
        out.push('\n');
    }
    let header: Vec<String> = head
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i + 1 < head.len() {
                pad(h, width[i])
            } else {
                h.to_string()
            }
        })
        .collect();
    out.push_str(&paint("1", &header.join("  ")));
    out.push('\n');
    for (cols, cbad, vbad) in &lines {
        let mut parts = Vec::new();
        for (i, c) in cols.iter().enumerate() {
            let text = if i + 1 < cols.len() {
                pad(c, width[i])
            } else {
                c.clone()
            };
            let bad = (i == 2 && *cbad) || (i == 3 && *vbad);
            parts.push(match i {
                0 => paint("1", &text),
                _ if bad => paint("31", &text),
                5 => paint("2", &text),
                _ => text,
            });
        }
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    }
    for (i, n) in notes.iter().enumerate() {
        out.push_str(&format!("[{}] {n}\n", i + 1));
    }
    if r.emulated.is_some() {
        out.push_str(&paint("1;31", &format!("* {EMULATED}")));
        out.push('\n');
    }
    out.push_str(&paint(
        "2",
        &format!(
            "n = samples; every figure was measured in this run ({:.0} s); ratios are microVM / container.\n",
            r.seconds
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::super::report::{Host, Metric, Row};
    use super::*;

    fn sample() -> Report {
        Report {
            image: "busybox".into(),
            command: vec![],
            runs: 3,
            budget: 1 << 30,
            host: Host {
                kernel: "6.1.0".into(),
                cpus: 2,
                memory: 1 << 34,
                kvm: "pvm".into(),
                hypervisor: None,
            },
            isolations: vec!["container".into(), "vm".into()],
            vm_unavailable: Some("no kvm".into()),
            emulated: None,
            started: "now".into(),
            seconds: 3.0,
            rows: vec![Row {
                key: "start".into(),
                title: "Boot/start time".into(),
                metrics: vec![Metric::new(
                    "start_median",
                    "start, median",
                    "wall time",
                    Cell::measured(12.34, "ms", 3, None),
                    Cell::Unavailable {
                        reason: "no kvm".into(),
                    },
                )],
            }],
        }
    }

    #[test]
    fn figures_and_units() {
        assert_eq!(figure(12.34, "ms"), "12.3 ms");
        assert_eq!(figure(1234.0, "ms"), "1234 ms");
        assert_eq!(figure(12_500.0, "ms"), "12.5 s");
        assert_eq!(figure(3.0 * 1024.0 * 1024.0, "B"), "3.0 MiB");
        assert_eq!(figure(1.049, "x host"), "1.05x host");
        assert_eq!(bytes(512.0), "512 B");
    }

    #[test]
    fn table_has_columns_samples_and_notes() {
        let t = render(&sample(), false);
        assert!(t.contains("CONTAINER"), "{t}");
        assert!(t.contains("12.3 ms (n=3)"), "{t}");
        assert!(t.contains("unavailable [1]"), "{t}");
        assert!(t.contains("[1] no kvm"), "{t}");
        assert!(!t.contains('\x1b'));
        assert!(render(&sample(), true).contains("\x1b[1m"));
        assert!(!t.contains("EMULATED"), "{t}");
    }

    #[test]
    fn an_emulated_host_is_flagged_and_its_times_marked() {
        let mut r = sample();
        r.mark_emulated("QEMU TCG (software CPU emulation)", "TCGTCGTCGTCG");
        let t = render(&r, false);
        let mut lines = t.lines();
        lines.next();
        let banner = lines.next().unwrap();
        assert!(banner.starts_with("EMULATED HOST"), "{t}");
        assert!(
            banner.contains("QEMU TCG") && banner.contains(EMULATED),
            "{t}"
        );
        assert!(t.contains("12.3 ms (n=3, emulated*)"), "{t}");
        assert!(t.contains(&format!("* {EMULATED}")), "{t}");
    }
}
