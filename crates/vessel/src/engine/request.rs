//! The validated run request: the image's config merged with the user's flags, parsed
//! once at the boundary. Both backends take the same request.

use serde::{Deserialize, Serialize};

use super::{EngineError, Result};

/// Which kind of isolation runs the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces and cgroups on the host kernel.
    Container,
    /// A KVM microVM with its own kernel.
    Vm,
}

impl Isolation {
    /// The word the CLI and `ps` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Vm => "vm",
        }
    }
}

/// A host path mounted into the instance (`-v /host:/ctr[:ro]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Absolute host path.
    pub source: String,
    /// Absolute path inside.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Volume {
    /// Parses `-v SRC:DST[:ro|rw]`.
    pub fn parse(s: &str) -> Result<Volume> {
        let bad = |why: &str| {
            EngineError::InvalidFlag(format!("invalid volume specification {s:?}: {why}"))
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [src, dst] => (*src, *dst, "rw"),
            [src, dst, mode] => (*src, *dst, *mode),
            _ => return Err(bad("expected /host/path:/container/path[:ro]")),
        };
        if !source.starts_with('/') {
            return Err(bad(
                "the host path must be absolute (named volumes are not supported)",
            ));
        }
        if !target.starts_with('/') || target.split('/').any(|c| c == "..") {
            return Err(bad("the container path must be absolute, without '..'"));
        }
        let read_only = match mode {
            "ro" => true,
            "rw" => false,
            _ => return Err(bad("mode must be ro or rw")),
        };
        if !std::path::Path::new(source).exists() {
            return Err(bad("the host path does not exist"));
        }
        Ok(Volume {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
        })
    }
}

/// Everything needed to run an instance, resolved from flags and the image config.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRequest {
    /// Container or VM.
    pub isolation: Isolation,
    /// The full argv (entrypoint + command), never empty.
    pub args: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
    /// Working directory inside.
    pub workdir: String,
    /// `user[:group]` as given (resolved against the image's /etc/passwd at start).
    pub user: String,
    /// Hostname (defaults to the id's first 12 digits).
    pub hostname: String,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// Remove when it exits.
    pub auto_remove: bool,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// Bind mounts.
    pub volumes: Vec<Volume>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU limit in CPUs.
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
    /// Run a reaping init as PID 1.
    pub init: bool,
    /// Private user namespace (root inside maps to an unprivileged range).
    pub userns: bool,
    /// Signal `stop` sends first.
    pub stop_signal: i32,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: u32,
    /// VM only: the guest kernel to boot instead of the default one.
    #[serde(default)]
    pub kernel: Option<std::path::PathBuf>,
    /// VM only: show the guest's console on the attached terminal.
    #[serde(default)]
    pub console: bool,
    /// `--network`: none, host, or a bridge network (records from before networking
    /// had none: loopback only).
    #[serde(default)]
    pub network: vessel_network::Mode,
    /// `-p`: ports published on the host.
    #[serde(default)]
    pub ports: Vec<vessel_network::PortMap>,
    /// The instance's address and ports on its network, decided at create.
    #[serde(default)]
    pub attachment: Option<vessel_network::Attachment>,
    /// `--log-driver`, `--log-opt`: where output goes and how much of it is kept
    /// (records from before logs were bounded get the default bound).
    #[serde(default)]
    pub log: LogConfig,
}

/// `--log-driver`: what is done with an instance's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    /// Docker's `json-file`: JSON lines in `log.json`, rotated.
    JsonFile,
    /// Nothing is kept; `vessel logs` has nothing to read.
    None,
}

impl LogDriver {
    /// The name Docker uses.
    pub fn as_str(self) -> &'static str {
        match self {
            LogDriver::JsonFile => "json-file",
            LogDriver::None => "none",
        }
    }
}

/// The logging configuration of an instance, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// The driver.
    pub driver: LogDriver,
    /// The options in force, as `inspect` shows them (`max-size`, `max-file`).
    pub options: std::collections::BTreeMap<String, String>,
    /// What `max-size` and `max-file` mean for the writer.
    pub rotation: vessel_shim::logs::Rotation,
}

impl Default for LogConfig {
    /// json-file with the default bound ([`vessel_shim::logs::Rotation::DEFAULT`]).
    fn default() -> Self {
        LogConfig {
            driver: LogDriver::JsonFile,
            options: [("max-size", "20m"), ("max-file", "5")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            rotation: vessel_shim::logs::Rotation::DEFAULT,
        }
    }
}

impl LogConfig {
    /// Parses `--log-driver` (json-file when absent) and the `--log-opt KEY=VALUE`s, as
    /// Docker's json-file driver reads them: `max-size` a positive size with an optional
    /// k, m or g (decimal units, as Docker's) or -1 for no limit; `max-file` at least 1
    /// and only with a `max-size`. With neither, the default bound applies.
    pub fn parse(driver: Option<&str>, opts: &[String]) -> Result<LogConfig> {
        let driver = match driver.unwrap_or("json-file") {
            "json-file" => LogDriver::JsonFile,
            "none" => LogDriver::None,
            other => {
                return Err(EngineError::InvalidFlag(format!(
                    "invalid --log-driver {other:?}: vessel supports json-file and none"
                )))
            }
        };
        let mut options = std::collections::BTreeMap::new();
        for o in opts {
            let Some((k, v)) = o.split_once('=') else {
                return Err(EngineError::InvalidFlag(format!(
                    "invalid --log-opt {o:?}: expected KEY=VALUE"
                )));
            };
            match (driver, k) {
                (LogDriver::JsonFile, "max-size" | "max-file") => {}
                (LogDriver::JsonFile, _) => {
                    return Err(EngineError::InvalidFlag(format!(
                        "unknown log opt {k:?} for the json-file log driver (--log-opt {o:?}): vessel supports max-size and max-file"
                    )))
                }
                (LogDriver::None, _) => {
                    return Err(EngineError::InvalidFlag(format!(
                        "unknown log opt {k:?} for the none log driver (--log-opt {o:?}): it takes none"
                    )))
                }
            }
            options.insert(k.to_string(), v.to_string());
        }
        if driver == LogDriver::None {
            return Ok(LogConfig {
                driver,
                options,
                rotation: vessel_shim::logs::Rotation::UNLIMITED,
            });
        }
        if options.is_empty() {
            return Ok(LogConfig::default());
        }
        let max_size = match options.get("max-size") {
            Some(v) => parse_log_size(v)?,
            None => None,
        };
        let max_files = match options.get("max-file") {
            None => 1,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(EngineError::InvalidFlag(format!(
                    "invalid --log-opt max-file={v}: expected a whole number of files, at least 1"
                )))
                }
            },
        };
        if max_files > 1 && max_size.is_none() {
            return Err(EngineError::InvalidFlag(format!(
                "--log-opt max-file={max_files} needs a max-size (files are rotated when they reach it)"
            )));
        }
        Ok(LogConfig {
            driver,
            options,
            rotation: vessel_shim::logs::Rotation {
                max_size,
                max_files,
            },
        })
    }
}

/// Parses json-file's `max-size`: `-1` (no limit) or a positive size in bytes with an
/// optional decimal unit (`100k`, `20m`, `1.5g`, `10MB`), as Docker's `FromHumanSize`.
fn parse_log_size(v: &str) -> Result<Option<u64>> {
    if v == "-1" {
        return Ok(None);
    }
    let bad = || {
        EngineError::InvalidFlag(format!(
            "invalid --log-opt max-size={v}: expected a size like 100k, 20m or 1g, or -1 for no limit"
        ))
    };
    let t = v.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('g') => (&t[..t.len() - 1], 1e9),
        Some(c) if c.is_ascii_digit() => (t, 1.0),
        _ => return Err(bad()),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = n * mult;
    if !(1.0..=1e15).contains(&bytes) {
        return Err(bad());
    }
    Ok(Some(bytes as u64))
}

/// Parses Docker-style sizes: `64m`, `1g`, `512k`, `1048576`, `1.5g` (binary units).
pub fn parse_size(flag: &str, s: &str) -> Result<u64> {
    let bad = || {
        EngineError::InvalidFlag(format!(
            "invalid value {s:?} for {flag}: expected a size like 64m, 1g, 512k or bytes"
        ))
    };
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() => (t, 1),
        _ => return Err(bad()),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 {
        return Err(bad());
    }
    let bytes = v * mult as f64;
    if bytes > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Parses a signal by name (`TERM`, `SIGTERM`, `sigterm`) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| EngineError::InvalidFlag(format!("invalid signal {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("--memory", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("--memory", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("--memory", "512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("--memory", "1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("--memory", "4096").unwrap(), 4096);
        assert_eq!(parse_size("--memory", "64mb").unwrap(), 64 << 20);
        for bad in ["12zz", "", "m", "-1m", "0", "nan", "infg"] {
            let e = parse_size("--memory", bad).unwrap_err().to_string();
            assert!(e.contains("--memory"), "{bad}: {e}");
        }
    }

    #[test]
    fn log_options() {
        use vessel_shim::logs::Rotation;
        let opts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let d = LogConfig::parse(None, &[]).unwrap();
        assert_eq!(d, LogConfig::default());
        assert_eq!(d.rotation, Rotation::DEFAULT);
        let c =
            LogConfig::parse(Some("json-file"), &opts(&["max-size=100k", "max-file=2"])).unwrap();
        assert_eq!(
            c.rotation,
            Rotation {
                max_size: Some(100_000),
                max_files: 2
            }
        );
        assert_eq!(c.options["max-size"], "100k");
        let c = LogConfig::parse(None, &opts(&["max-size=1.5MB"])).unwrap();
        assert_eq!(c.rotation.max_size, Some(1_500_000));
        assert_eq!(c.rotation.max_files, 1);
        let c = LogConfig::parse(None, &opts(&["max-size=-1"])).unwrap();
        assert_eq!(c.rotation, Rotation::UNLIMITED);
        assert_eq!(
            LogConfig::parse(Some("none"), &[]).unwrap().driver,
            LogDriver::None
        );
        for (driver, bad, needle) in [
            (None, "max-size=bogus", "bogus"),
            (None, "max-size=0", "max-size=0"),
            (None, "max-size=-5m", "-5m"),
            (None, "foo=bar", "foo"),
            (None, "compress=true", "compress"),
            (None, "max-size", "max-size"),
            (None, "max-file=0", "max-file=0"),
            (None, "max-file=3", "needs a max-size"),
            (Some("none"), "max-size=1m", "none"),
            (Some("syslog"), "max-size=1m", "syslog"),
        ] {
            let e = LogConfig::parse(driver, &opts(&[bad]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("HUP").unwrap(), 1);
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("15").unwrap(), 15);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn volumes() {
        let v = Volume::parse("/tmp:/data:ro").unwrap();
        assert_eq!(
            (v.source.as_str(), v.target.as_str(), v.read_only),
            ("/tmp", "/data", true)
        );
        assert!(Volume::parse("rel:/data").is_err());
        assert!(Volume::parse("/tmp:/../x").is_err());
        assert!(Volume::parse("/tmp:/x:zz").is_err());
        assert!(Volume::parse("/does/not/exist:/x").is_err());
    }
}
