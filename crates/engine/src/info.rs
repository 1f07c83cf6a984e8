//! Docker's system-wide document (`docker info`, the API's `GET /info`): instances by
//! state, images, and what this host and engine are.

use serde_json::{json, Value};

use crate::catalogue::Status;
use crate::{Engine, Result};

/// The host's kernel release.
pub fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The host's operating system (`PRETTY_NAME` of os-release), as Docker reports it.
fn operating_system() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
                .collect::<Vec<_>>()
        })
        .next()
        .unwrap_or_else(|| "linux".into())
}

impl Engine {
    /// Docker's `/info` document, with Docker's field names.
    pub fn info(&self) -> Result<Value> {
        let all = self.list()?;
        let running: Vec<_> = all.iter().filter(|i| i.status == Status::Running).collect();
        let paused = running.iter().filter(|i| self.paused(i)).count();
        let images = self.store()?.list()?.len();
        let cgroup_version = match vessel_container::cgroup_mode() {
            Ok(vessel_container::CgroupMode::Unified) => "2",
            Ok(_) => "1",
            Err(_) => "",
        };
        let name = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kvm = std::path::Path::new("/dev/kvm").exists();
        Ok(json!({
            "ID": "vessel",
            "Containers": all.len(),
            "ContainersRunning": running.len() - paused,
            "ContainersPaused": paused,
            "ContainersStopped": all.len() - running.len(),
            "Images": images,
            "Driver": "overlay2",
            "DockerRootDir": self.config().root.display().to_string(),
            "Name": name,
            "OperatingSystem": operating_system(),
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "KernelVersion": kernel_version(),
            "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "MemTotal": nix::sys::sysinfo::sysinfo().map(|s| s.ram_total()).unwrap_or(0),
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "DefaultRuntime": "runc",
            "Runtimes": {
                "runc": {"path": "vessel", "status": {"isolation": "container"}},
                "vessel": {"path": "vessel", "status": {"isolation": "container"}},
                "vessel-vm": {"path": "vessel", "status": {
                    "isolation": "microvm",
                    "kvm": if kvm { "/dev/kvm" } else { "missing" },
                }},
            },
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": cgroup_version,
            "LoggingDriver": "json-file",
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "none"], "Log": ["json-file", "none"]},
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Warnings": [],
            "Swarm": {"LocalNodeState": "inactive"},
            "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": []},
        }))
    }
}
