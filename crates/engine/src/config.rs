//! The engine's settings: built once by a front end and handed to [`crate::Engine::open`].
//!
//! The engine reads no settings from its environment. A front end builds an
//! [`EngineConfig`] (the CLI from its flags and environment, through
//! [`EngineConfig::from_vars`]); the engine passes it on, explicitly, to the processes it
//! starts that open an engine themselves (the monitor, re-executed from `exe`) as the
//! environment [`EngineConfig::child_env`] returns, which the re-executed front end reads
//! back with [`EngineConfig::from_vars`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Default directory for state that dies with the host (runtime state, sockets).
pub const RUN_DIR: &str = "/run/vessel";

/// The variable that carries [`EngineConfig::run_dir`].
pub const ENV_RUN_DIR: &str = "VESSEL_RUN_DIR";
/// The variable that carries [`EngineConfig::network_dir`].
pub const ENV_NETWORK_DIR: &str = "VESSEL_NETWORK_DIR";
/// The variable that carries [`EngineConfig::kernel_dir`].
pub const ENV_KERNEL_DIR: &str = "VESSEL_KERNEL_DIR";
/// The variable that carries [`EngineConfig::init`].
pub const ENV_INIT: &str = "VESSEL_INIT";
/// The variable that carries [`EngineConfig::shim`].
pub const ENV_SHIM: &str = "VESSEL_SHIM";
/// The variable that carries [`EngineConfig::entry`].
pub const ENV_ENTRY: &str = "VESSEL_ENTRY";

/// Diagnostics the jailed VMM reads, and nothing else of the environment reaches it:
/// `VESSEL_VMM_SECCOMP` (`log` or `off`, see `vessel_vmm::seccomp`), the log filter and
/// Rust's backtrace switch.
pub const VMM_ENV: [&str; 3] = ["VESSEL_VMM_SECCOMP", "VESSEL_LOG", "RUST_BACKTRACE"];

/// Where an engine keeps its state and finds its helper binaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Data root: images, instances, the instance catalogue.
    pub root: PathBuf,
    /// State that dies with the host (the container runtime's state, sockets).
    pub run_dir: PathBuf,
    /// The networks' database directory.
    pub network_dir: PathBuf,
    /// The guest kernel of microVMs (as `scripts/fetch-kernel` lays it out).
    pub kernel_dir: PathBuf,
    /// `vessel-init`: the static PID 1 of `--init` containers and the agent of microVMs.
    pub init: PathBuf,
    /// `vessel-shim`, the small process that outlives a detached container's monitor;
    /// without it the monitor stays for the container's whole life.
    pub shim: Option<PathBuf>,
    /// `vessel-entry`, the static program every container process is exec'd through
    /// from a sealed view (see `vessel_container::Runtime::with_entry`).
    pub entry: PathBuf,
    /// The binary the engine re-executes for its hidden commands (`__monitor`,
    /// `__monitor-finish`, `__vmm`): the host's `vessel`, never a
    /// path inside a container (see `vessel_container::sealed::host_exe`).
    pub exe: PathBuf,
    /// The diagnostics of [`VMM_ENV`] that are set, passed on to the jailed VMM.
    pub vmm_env: Vec<(String, OsString)>,
}

impl EngineConfig {
    /// The defaults over data root `root`, with helpers beside `exe`: `/run/vessel`,
    /// the network crate's directory, `<root>/kernel`, `vessel-init`, `vessel-entry` and
    /// (if it is there) `vessel-shim` beside `exe`, no VMM diagnostics.
    pub fn new(root: &Path, exe: &Path) -> EngineConfig {
        EngineConfig::from_vars(root, exe, |_| None)
    }

    /// The defaults of [`EngineConfig::new`], each overridden by its variable
    /// (`VESSEL_RUN_DIR`, `VESSEL_NETWORK_DIR`, `VESSEL_KERNEL_DIR`, `VESSEL_INIT`,
    /// `VESSEL_SHIM`, `VESSEL_ENTRY`, and those of [`VMM_ENV`]) as `var` gives it: the front end passes
    /// its own environment (`|k| std::env::var_os(k)`), a test a map.
    pub fn from_vars(
        root: &Path,
        exe: &Path,
        var: impl Fn(&str) -> Option<OsString>,
    ) -> EngineConfig {
        let path = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let beside = |name: &str| exe.with_file_name(name);
        EngineConfig {
            root: root.to_path_buf(),
            run_dir: path(ENV_RUN_DIR).unwrap_or_else(|| PathBuf::from(RUN_DIR)),
            network_dir: path(ENV_NETWORK_DIR)
                .unwrap_or_else(|| PathBuf::from(vessel_network::DEFAULT_DIR)),
            kernel_dir: path(ENV_KERNEL_DIR).unwrap_or_else(|| root.join("kernel")),
            init: path(ENV_INIT).unwrap_or_else(|| beside("vessel-init")),
            shim: path(ENV_SHIM).or_else(|| Some(beside("vessel-shim")).filter(|p| p.is_file())),
            entry: path(ENV_ENTRY).unwrap_or_else(|| beside("vessel-entry")),
            exe: exe.to_path_buf(),
            vmm_env: VMM_ENV
                .iter()
                .filter_map(|k| var(k).map(|v| (k.to_string(), v)))
                .collect(),
        }
    }

    /// The environment that carries this configuration (all of it but the root, which
    /// goes as `--root`) to a re-executed front end, which rebuilds it with
    /// [`EngineConfig::from_vars`]. A variable mapped to `None` must be removed: the
    /// child then finds the same default as we did (a shim beside the same binary).
    pub fn child_env(&self) -> Vec<(&'static str, Option<OsString>)> {
        let mut env = vec![
            (ENV_RUN_DIR, Some(self.run_dir.clone().into_os_string())),
            (
                ENV_NETWORK_DIR,
                Some(self.network_dir.clone().into_os_string()),
            ),
            (
                ENV_KERNEL_DIR,
                Some(self.kernel_dir.clone().into_os_string()),
            ),
            (ENV_INIT, Some(self.init.clone().into_os_string())),
            (ENV_SHIM, self.shim.clone().map(PathBuf::into_os_string)),
            (ENV_ENTRY, Some(self.entry.clone().into_os_string())),
        ];
        for k in VMM_ENV {
            let v = self
                .vmm_env
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone());
            env.push((k, v));
        }
        env
    }

    /// Applies [`EngineConfig::child_env`] to a command about to be spawned.
    pub fn apply_child_env(&self, cmd: &mut std::process::Command) {
        for (k, v) in self.child_env() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
    }

    /// The `vessel-init` binary, which must exist.
    pub fn init_binary(&self) -> crate::Result<PathBuf> {
        crate::init::binary(&self.init)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(m: HashMap<String, OsString>) -> impl Fn(&str) -> Option<OsString> {
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_sit_beside_the_binary_and_under_the_root() {
        let c = EngineConfig::new(Path::new("/data"), Path::new("/opt/v/vessel"));
        assert_eq!(c.run_dir, PathBuf::from(RUN_DIR));
        assert_eq!(c.network_dir, PathBuf::from(vessel_network::DEFAULT_DIR));
        assert_eq!(c.kernel_dir, PathBuf::from("/data/kernel"));
        assert_eq!(c.init, PathBuf::from("/opt/v/vessel-init"));
        assert_eq!(c.shim, None, "no vessel-shim file there");
        assert!(c.vmm_env.is_empty());
    }

    #[test]
    fn child_env_round_trips_every_setting() {
        let mut vars = HashMap::new();
        for (k, v) in [
            (ENV_RUN_DIR, "/r"),
            (ENV_NETWORK_DIR, "/n"),
            (ENV_KERNEL_DIR, "/k"),
            (ENV_INIT, "/i"),
            (ENV_SHIM, "/s"),
            ("VESSEL_VMM_SECCOMP", "log"),
        ] {
            vars.insert(k.to_string(), OsString::from(v));
        }
        let exe = Path::new("/opt/v/vessel");
        let c = EngineConfig::from_vars(Path::new("/data"), exe, lookup(vars));
        assert_eq!(c.shim, Some(PathBuf::from("/s")));
        assert_eq!(c.vmm_env, vec![("VESSEL_VMM_SECCOMP".into(), "log".into())]);
        let child: HashMap<String, OsString> = c
            .child_env()
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
        assert_eq!(
            EngineConfig::from_vars(Path::new("/data"), exe, lookup(child)),
            c
        );
    }

    #[test]
    fn unset_settings_are_removed_from_the_child_not_inherited() {
        let c = EngineConfig::new(Path::new("/data"), Path::new("/opt/v/vessel"));
        let env = c.child_env();
        for k in [
            ENV_SHIM,
            "VESSEL_VMM_SECCOMP",
            "VESSEL_LOG",
            "RUST_BACKTRACE",
        ] {
            assert!(env.contains(&(k, None)), "{k} must be removed: {env:?}");
        }
    }

    #[test]
    fn a_missing_init_binary_is_named() {
        let c = EngineConfig::new(Path::new("/data"), Path::new("/nonexistent/vessel"));
        let e = c.init_binary().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/vessel-init"), "{e}");
    }

    #[test]
    fn a_spawned_child_sees_the_config_not_what_it_would_inherit() {
        let mut c = EngineConfig::new(Path::new("/data"), Path::new("/opt/v/vessel"));
        c.run_dir = PathBuf::from("/from/config");
        let mut cmd = std::process::Command::new("env");
        // As if inherited from the front end's environment.
        cmd.env(ENV_RUN_DIR, "/stale").env(ENV_SHIM, "/stale/shim");
        c.apply_child_env(&mut cmd);
        let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        assert!(
            out.lines().any(|l| l == "VESSEL_RUN_DIR=/from/config"),
            "{out}"
        );
        assert!(!out.contains("/stale"), "{out}");
        assert!(
            out.lines().any(|l| l == "VESSEL_INIT=/opt/v/vessel-init"),
            "{out}"
        );
    }
}
