//! `vessel compare`: runs the comparison, draws its progress, prints the table and
//! writes the JSON and HTML reports.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{CompareArgs, CompareIsolation};
use crate::compare::{self, CompareError, Observer, Options};
use crate::{CmdResult, Failure, EXIT_ENGINE};
use vessel_engine::request::{parse_size, Isolation};

/// A progress bar on stderr when it is a terminal; nothing otherwise.
struct Bar(Option<ProgressBar>);

impl Observer for Bar {
    fn plan(&self, steps: u64) {
        if let Some(b) = &self.0 {
            b.set_length(steps);
        }
    }

    fn step(&self, what: &str) {
        if let Some(b) = &self.0 {
            if b.position() > 0 || !b.message().is_empty() {
                b.inc(1);
            }
            b.set_message(what.to_string());
        }
    }
}

fn write(path: &Path, what: &str, data: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, data).map_err(|e| {
        Failure::new(
            EXIT_ENGINE,
            format!("write the {what} report {}: {e}", path.display()),
        )
    })
}

/// `vessel compare`.
pub fn compare(config: &vessel_engine::EngineConfig, a: &CompareArgs) -> CmdResult {
    let budget = parse_size("--budget", &a.budget).map_err(|e| Failure::new(EXIT_ENGINE, e))?;
    let isolations = match a.isolation {
        CompareIsolation::Both => vec![Isolation::Container, Isolation::Vm],
        CompareIsolation::Container => vec![Isolation::Container],
        CompareIsolation::Vm => vec![Isolation::Vm],
    };
    let opts = Options {
        root: config.root.clone(),
        init: config.init.clone(),
        image: a.image.clone(),
        runs: a.runs,
        command: a.command.clone(),
        isolations,
        budget,
    };
    let bar = (!a.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("compare [{bar:30}] {pos}/{len} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    });
    let obs = Bar(bar);
    let report = compare::run(&opts, &obs).map_err(|e| {
        let code = match e {
            CompareError::Image(_) | CompareError::Invalid(_) | CompareError::Setup(_) => {
                EXIT_ENGINE
            }
        };
        Failure::new(code, e)
    });
    if let Some(b) = &obs.0 {
        b.finish_and_clear();
    }
    let report = report?;
    if let Some(p) = &a.json {
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| Failure::new(EXIT_ENGINE, format!("encode the report: {e}")))?;
        write(p, "JSON", &json)?;
    }
    if let Some(p) = &a.html {
        write(p, "HTML", compare::html::render(&report).as_bytes())?;
    }
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    print!("{}", compare::table::render(&report, colour));
    Ok(0)
}
