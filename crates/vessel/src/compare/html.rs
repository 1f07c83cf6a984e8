//! The HTML report of a [`Report`]: one self-contained page (inline CSS, inline SVG bar
//! charts, no script, nothing fetched), readable offline and printable.

use std::fmt::Write;

use super::report::{Cell, Metric, Report};
use super::table::{bytes, figure};

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;color:#1d2330;max-width:1200px}
h1{font-size:1.5em;margin-bottom:.2em}
.sub{color:#566;margin-top:0}
table{border-collapse:collapse;width:100%;margin-top:1em}
th,td{border-bottom:1px solid #dde;padding:.45em .6em;text-align:left;vertical-align:top;font-size:.92em}
th{background:#f2f4f8}
tr.aspect td{background:#357070;color:#fff;font-weight:600;font-size:1em}
td.container{color:#2c2857}
td.vm{color:#8a3030}
td.bad{color:#a00;font-style:italic}
.method{color:#667;font-size:.85em}
.detail{color:#667;font-size:.8em;display:block}
.n{color:#889;font-size:.8em}
svg text{font-family:system-ui,sans-serif;font-size:11px}
.emulated{background:#fde8e8;border:2px solid #a00;color:#a00;padding:.6em .8em;font-size:1.05em}
.caveat{color:#a00;font-size:.8em;display:block}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}
";

/// Colours of the two isolations (the seed's diagram colours for containers and VMs).
const CONTAINER: &str = "#2c2857";
const VM: &str = "#c0504d";

/// A cell's HTML and extra class; `said` is a reason already shown above the table.
fn cell_html(c: &Cell, said: Option<&str>) -> (String, &'static str) {
    match c {
        Cell::Measured {
            value,
            unit,
            samples,
            detail,
            caveat,
        } => {
            let mut s = format!(
                "{} <span class=\"n\">n={samples}</span>",
                escape(&figure(*value, unit))
            );
            if let Some(c) = caveat {
                let _ = write!(s, "<span class=\"caveat\">{}</span>", escape(c));
            }
            if let Some(d) = detail {
                let _ = write!(s, "<span class=\"detail\">{}</span>", escape(d));
            }
            (s, "")
        }
        Cell::Extrapolated {
            value,
            unit,
            samples,
            basis,
        } => (
            format!(
                "{} <span class=\"n\">extrapolated from n={samples}</span><span class=\"detail\">{}</span>",
                escape(&figure(*value, unit)),
                escape(basis)
            ),
            "",
        ),
        Cell::Observed { text, samples } => (
            format!("{} <span class=\"n\">n={samples}</span>", escape(text)),
            "",
        ),
        Cell::Stated { text } => (
            format!("{} <span class=\"n\">(stated)</span>", escape(text)),
            "",
        ),
        Cell::Failed { reason } => (format!("failed: {}", escape(reason)), " bad"),
        Cell::Unavailable { reason } if Some(reason.as_str()) == said => {
            ("unavailable (see above)".to_string(), " bad")
        }
        Cell::Unavailable { reason } => (format!("unavailable: {}", escape(reason)), " bad"),
    }
}

/// A horizontal two-bar chart of a metric measured on at least one side.
fn chart(m: &Metric) -> Option<String> {
    let c = m.container.number();
    let v = m.vm.number();
    let unit = c.or(v)?.1;
    let max = [c, v]
        .iter()
        .flatten()
        .map(|(x, _)| *x)
        .fold(0.0f64, f64::max)
        .max(if unit == "x host" { 1.0 } else { 0.0 });
    if max <= 0.0 {
        return None;
    }
    let (w, label_w, bar_h) = (420.0, 80.0, 18.0);
    let span = w - label_w - 90.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"50\" role=\"img\" aria-label=\"{}\">",
        escape(&m.label)
    );
    for (i, (name, colour, val)) in [("container", CONTAINER, c), ("microVM", VM, v)]
        .into_iter()
        .enumerate()
    {
        let y = 4.0 + i as f64 * (bar_h + 6.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{name}</text>",
            y + bar_h * 0.75
        );
        match val {
            Some((x, u)) => {
                let len = (x / max * span).max(1.0);
                let _ = write!(
                    svg,
                    "<rect x=\"{label_w}\" y=\"{y}\" width=\"{len:.1}\" height=\"{bar_h}\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{}\">{}</text>",
                    label_w + len + 4.0,
                    y + bar_h * 0.75,
                    escape(&figure(x, u))
                );
            }
            None => {
                let _ = write!(
                    svg,
                    "<text x=\"{label_w}\" y=\"{}\" fill=\"#a00\">not measured</text>",
                    y + bar_h * 0.75
                );
            }
        }
    }
    if unit == "x host" {
        let x = label_w + span / max;
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"50\" stroke=\"#357070\" stroke-dasharray=\"3,2\"><title>host = 1.0</title></line>"
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// Renders the report as one self-contained HTML page.
pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>vessel compare: {img}</title><style>{STYLE}</style></head><body>\
         <h1>Container vs microVM, measured: {img}</h1>\
         <p class=\"sub\">Host kernel {kernel}, {cpus} CPUs, {mem} RAM; KVM: {kvm}. \
         {runs} runs per timed figure; measured {started}, in {secs:.0} s. \
         Every figure below was measured in this run; n is its sample count; ratios are microVM / container.</p>\
         <p class=\"legend\"><span style=\"background:{CONTAINER}\"></span>container<span style=\"background:{VM}\"></span>microVM</p>",
        img = escape(&r.image),
        kernel = escape(&r.host.kernel),
        cpus = r.host.cpus,
        mem = escape(&bytes(r.host.memory as f64)),
        kvm = escape(&r.host.kvm),
        runs = r.runs,
        started = escape(&r.started),
        secs = r.seconds,
    );
    if let Some(e) = &r.emulated {
        let _ = write!(
            h,
            "<p class=\"emulated\" id=\"emulated\"><b>Emulated host:</b> this host runs under {} \
             (CPUID hypervisor vendor &quot;{}&quot;). Every absolute time below is {}: \
             only ratios measured side by side in this run mean anything.</p>",
            escape(&e.by),
            escape(&e.signature),
            escape(&e.note)
        );
    }
    if let Some(why) = &r.vm_unavailable {
        let _ = write!(
            h,
            "<p class=\"bad\"><b>The microVM side could not run on this host:</b> {}</p>",
            escape(why)
        );
    }
    h.push_str(
        "<table><thead><tr><th>Measure</th><th>Container</th><th>MicroVM</th>\
         <th>VM / container</th><th>Chart</th></tr></thead><tbody>",
    );
    for row in &r.rows {
        let _ = write!(
            h,
            "<tr class=\"aspect\" id=\"{}\"><td colspan=\"5\">{}</td></tr>",
            escape(&row.key),
            escape(&row.title)
        );
        for m in &row.metrics {
            let said = r.vm_unavailable.as_deref();
            let (c, cbad) = cell_html(&m.container, said);
            let (v, vbad) = cell_html(&m.vm, said);
            let ratio = m.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default();
            let _ = write!(
                h,
                "<tr id=\"{key}\"><td>{label}<span class=\"method detail\">{method}</span></td>\
                 <td class=\"container{cbad}\">{c}</td><td class=\"vm{vbad}\">{v}</td>\
                 <td>{ratio}</td><td>{chart}</td></tr>",
                key = escape(&m.key),
                label = escape(&m.label),
                method = escape(&m.method),
                chart = chart(m).unwrap_or_default(),
            );
        }
    }
    h.push_str("</tbody></table>");
    if !r.command.is_empty() {
        let _ = write!(
            h,
            "<p class=\"sub\">Your workload: <code>{}</code></p>",
            escape(&r.command.join(" "))
        );
    }
    h.push_str("<p class=\"sub\">Generated by <code>vessel compare</code>.</p></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::super::report::{Host, Row};
    use super::*;

    #[test]
    fn escapes_everything_it_shows() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let r = Report {
            image: "<evil-image>".into(),
            command: vec!["echo".into(), "<evil-cmd>".into()],
            runs: 1,
            budget: 1 << 30,
            host: Host {
                kernel: "k".into(),
                cpus: 1,
                memory: 1,
                kvm: "none".into(),
                hypervisor: None,
            },
            isolations: vec!["container".into()],
            vm_unavailable: Some("no <evil-kvm>".into()),
            emulated: None,
            started: "t".into(),
            seconds: 1.0,
            rows: vec![Row {
                key: "start".into(),
                title: "Boot".into(),
                metrics: vec![Metric::new(
                    "start_median",
                    "start",
                    "m",
                    Cell::measured(10.0, "ms", 3, None),
                    Cell::measured(50.0, "ms", 3, None),
                )],
            }],
        };
        let page = render(&r);
        for raw in ["<evil-image>", "<evil-cmd>", "<evil-kvm>"] {
            assert!(!page.contains(raw), "{raw} unescaped");
        }
        assert!(page.contains("&lt;evil-kvm&gt;"));
        assert!(page.contains("<svg"));
        assert!(page.contains("5.00x"));
        // Nothing to fetch: no scripts, no linked resources.
        for bad in ["<script", "src=", "href=", "<link", "url("] {
            assert!(!page.contains(bad), "{bad}");
        }
        assert!(!page.contains("class=\"emulated\""));
        let mut r = r;
        r.mark_emulated("QEMU <TCG>", "TCGTCGTCGTCG");
        let page = render(&r);
        assert!(
            page.contains("<p class=\"emulated\" id=\"emulated\">"),
            "{page}"
        );
        assert!(page.contains("QEMU &lt;TCG&gt;"));
        // Both absolute times carry the caveat.
        assert_eq!(
            page.matches("<span class=\"caveat\">emulated: compare ratios only</span>")
                .count(),
            2
        );
    }
}
