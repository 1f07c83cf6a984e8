//! runc's logging: `--log FILE` (default stderr) in `--log-format json|text`, one line per
//! message. containerd's runc shim and podman read the last `"level":"error"` line of the
//! file to say why a command failed, so every error ends up there.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::error::{Error, Result};

/// Where log lines go, and in which format.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Sink>,
}

#[derive(Debug)]
struct Sink {
    /// `None`: stderr.
    file: Option<Mutex<File>>,
    json: bool,
}

impl Log {
    /// Open the log: `file` (appended to, created if missing) or stderr; `format` is
    /// `json` or `text` (the default).
    pub fn open(file: Option<&Path>, format: Option<&str>) -> Result<Log> {
        let json = match format {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "invalid --log-format {other:?}: use json or text"
                )))
            }
        };
        let file = match file {
            Some(p) => Some(Mutex::new(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                    .map_err(|e| Error::Io {
                        op: "open the log file",
                        path: p.to_path_buf(),
                        source: e,
                    })?,
            )),
            None => None,
        };
        Ok(Log {
            inner: Arc::new(Sink { file, json }),
        })
    }

    /// Whether lines go to a file (else to stderr).
    pub fn to_file(&self) -> bool {
        self.inner.file.is_some()
    }

    /// Write one message at `level` (runc's level names: error, warning, info, debug).
    pub fn write(&self, level: &str, msg: &str, fields: &[(String, String)]) {
        let line = format_line(self.inner.json, level, msg, fields, &timestamp());
        match &self.inner.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    /// Report the error that ends the command: in the log, and on stderr (once, when the
    /// log is stderr).
    pub fn error(&self, msg: &str) {
        self.write("error", msg, &[]);
        if self.to_file() {
            eprintln!("vessel-runc: {msg}");
        }
    }

    /// Send `tracing` events at `level` and above to this log.
    pub fn install(&self, level: Level) {
        let layer = TracingLayer { log: self.clone() }
            .with_filter(tracing_subscriber::filter::LevelFilter::from_level(level));
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
    }
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// One line as logrus writes it: `{"level":"error","msg":"...","time":"..."}` or
/// `time="..." level=error msg="..."`.
fn format_line(
    json: bool,
    level: &str,
    msg: &str,
    fields: &[(String, String)],
    time: &str,
) -> String {
    if json {
        let mut m = serde_json::Map::new();
        for (k, v) in fields {
            m.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        m.insert("level".into(), level.into());
        m.insert("msg".into(), msg.into());
        m.insert("time".into(), time.into());
        let mut s = serde_json::Value::Object(m).to_string();
        s.push('\n');
        s
    } else {
        let q = |v: &str| serde_json::Value::String(v.to_string()).to_string();
        let mut s = format!("time={} level={level} msg={}", q(time), q(msg));
        for (k, v) in fields {
            let _ = write!(s, " {k}={}", q(v));
        }
        s.push('\n');
        s
    }
}

struct TracingLayer {
    log: Log,
}

#[derive(Default)]
struct Fields {
    msg: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.msg = format!("{value:?}");
        } else {
            self.rest
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.rest
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

impl<S: Subscriber> Layer<S> for TracingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        self.log.write(level, &f.msg, &f.rest);
    }
}

/// The level of `--log-level` (runc's names) or `--debug`.
pub fn level(debug: bool, log_level: Option<&str>) -> Result<Level> {
    match log_level {
        None if debug => Ok(Level::DEBUG),
        None => Ok(Level::WARN),
        Some("trace") => Ok(Level::TRACE),
        Some("debug") => Ok(Level::DEBUG),
        Some("info") => Ok(Level::INFO),
        Some("warn" | "warning") => Ok(Level::WARN),
        Some("error" | "fatal" | "panic") => Ok(Level::ERROR),
        Some(other) => Err(Error::Usage(format!(
            "invalid --log-level {other:?}: use debug, info, warning or error"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_what_containerd_parses() {
        let l = format_line(true, "error", "container \"x\" does not exist", &[], "T");
        let v: serde_json::Value = serde_json::from_str(l.trim_end()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" does not exist");
        assert_eq!(v["time"], "T");
        assert!(l.ends_with('\n') && l.matches('\n').count() == 1);
    }

    #[test]
    fn text_lines_quote_like_logrus() {
        let l = format_line(
            false,
            "warning",
            "a \"b\"\nc",
            &[("id".into(), "x".into())],
            "T",
        );
        assert_eq!(
            l,
            "time=\"T\" level=warning msg=\"a \\\"b\\\"\\nc\" id=\"x\"\n"
        );
    }

    #[test]
    fn a_bad_format_is_refused_by_name() {
        let e = Log::open(None, Some("yaml")).unwrap_err().to_string();
        assert!(e.contains("\"yaml\""), "{e}");
    }
}
