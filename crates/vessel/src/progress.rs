//! Draws transfer progress: one `indicatif` bar per layer on a terminal, plain lines
//! otherwise (CI logs, pipes).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vessel_image::progress::Progress;

/// The CLI's [`Progress`] implementation.
pub struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    quiet: bool,
}

impl Bars {
    /// Bars on stderr when it is a terminal; `quiet` prints nothing at all.
    pub fn new(quiet: bool) -> Bars {
        let tty = std::io::stderr().is_terminal();
        let multi =
            (tty && !quiet).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
            quiet,
        }
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProgressBar>> {
        self.bars.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Progress for Bars {
    fn start(&self, id: &str, what: &str, total: Option<u64>) {
        match &self.multi {
            Some(m) => {
                let bar = m.add(match total {
                    Some(t) => ProgressBar::new(t),
                    None => ProgressBar::new_spinner(),
                });
                let style = ProgressStyle::with_template(
                    "{prefix}: {msg:<12} [{bar:30}] {bytes}/{total_bytes}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(id.to_string());
                bar.set_message(what.to_string());
                self.bars().insert(id.to_string(), bar);
            }
            None if !self.quiet => eprintln!("{id}: {what}"),
            None => {}
        }
    }

    fn advance(&self, id: &str, bytes: u64) {
        if let Some(bar) = self.bars().get(id) {
            bar.inc(bytes);
        }
    }

    fn finish(&self, id: &str, status: &str) {
        match self.bars().remove(id) {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("{prefix}: {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.finish_with_message(status.to_string());
            }
            None if !self.quiet => eprintln!("{id}: {status}"),
            None => {}
        }
    }

    fn message(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }
}
