//! Translate OCI `linux.resources` into cgroup file writes, for v1 and v2. Pure: the
//! manager decides which hierarchy each write lands in.

use oci_spec::runtime::LinuxResources;

use super::devices_bpf::DeviceRule;

/// One value to write into one cgroup control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The controller owning the file (`memory`, `cpu`, ...).
    pub controller: String,
    /// File name inside the cgroup directory.
    pub file: String,
    /// The value, as the kernel expects it.
    pub value: String,
    /// Skip silently when the file does not exist (e.g. `memory.memsw.*` without swap
    /// accounting); otherwise a missing file is an error.
    pub optional: bool,
}

fn w(controller: &str, file: &str, value: impl ToString, optional: bool) -> Write {
    Write {
        controller: controller.to_string(),
        file: file.to_string(),
        value: value.to_string(),
        optional,
    }
}

/// Default period of the CFS bandwidth controller, in microseconds.
pub const DEFAULT_CFS_PERIOD: u64 = 100_000;

/// Writes for cgroup v1 hierarchies, in the order they must happen.
pub fn plan_v1(res: &LinuxResources) -> Vec<Write> {
    let mut out = Vec::new();
    if let Some(m) = res.memory() {
        if let Some(limit) = m.limit() {
            out.push(w("memory", "memory.limit_in_bytes", limit, false));
        }
        // memsw is memory+swap and must be >= the memory limit, so it comes after it.
        if let Some(swap) = m.swap() {
            out.push(w("memory", "memory.memsw.limit_in_bytes", swap, true));
        }
        if let Some(r) = m.reservation() {
            out.push(w("memory", "memory.soft_limit_in_bytes", r, false));
        }
        if let Some(s) = m.swappiness() {
            out.push(w("memory", "memory.swappiness", s, true));
        }
        if m.disable_oom_killer() == Some(true) {
            out.push(w("memory", "memory.oom_control", 1, false));
        }
    }
    if let Some(c) = res.cpu() {
        if let Some(s) = c.shares().filter(|s| *s > 0) {
            out.push(w("cpu", "cpu.shares", s, false));
        }
        // The period first: a quota larger than the old period would be refused otherwise.
        if let Some(p) = c.period().filter(|p| *p > 0) {
            out.push(w("cpu", "cpu.cfs_period_us", p, false));
        }
        if let Some(q) = c.quota().filter(|q| *q != 0) {
            out.push(w("cpu", "cpu.cfs_quota_us", q, false));
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            out.push(w("cpuset", "cpuset.cpus", cpus, false));
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            out.push(w("cpuset", "cpuset.mems", mems, false));
        }
    }
    if let Some(p) = res.pids() {
        out.push(w("pids", "pids.max", pids_value(p.limit()), false));
    }
    if let Some(b) = res.block_io() {
        if let Some(weight) = b.weight() {
            out.push(w("blkio", "blkio.weight", weight, true));
        }
    }
    out
}

/// Writes for cgroup v2, in order.
pub fn plan_v2(res: &LinuxResources) -> Vec<Write> {
    let mut out = Vec::new();
    if let Some(m) = res.memory() {
        if let Some(limit) = m.limit() {
            out.push(w("memory", "memory.max", max_or(limit), false));
            // OCI swap is memory+swap; v2 wants the swap part alone.
            if let Some(swap) = m.swap() {
                let v = if swap < 0 || limit < 0 {
                    "max".to_string()
                } else {
                    swap.saturating_sub(limit).max(0).to_string()
                };
                out.push(w("memory", "memory.swap.max", v, true));
            }
        }
        if let Some(r) = m.reservation() {
            out.push(w("memory", "memory.low", max_or(r), false));
        }
    }
    if let Some(c) = res.cpu() {
        if let Some(s) = c.shares().filter(|s| *s > 0) {
            out.push(w("cpu", "cpu.weight", shares_to_weight(s), false));
        }
        if c.quota().is_some() || c.period().is_some() {
            out.push(w("cpu", "cpu.max", cpu_max(c.quota(), c.period()), false));
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            out.push(w("cpuset", "cpuset.cpus", cpus, false));
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            out.push(w("cpuset", "cpuset.mems", mems, false));
        }
    }
    if let Some(p) = res.pids() {
        out.push(w("pids", "pids.max", pids_value(p.limit()), false));
    }
    if let Some(b) = res.block_io() {
        if let Some(weight) = b.weight() {
            out.push(w("io", "io.weight", blkio_to_io_weight(weight), true));
        }
    }
    if let Some(unified) = res.unified() {
        let mut keys: Vec<_> = unified.keys().collect();
        keys.sort();
        for k in keys {
            let controller = k.split('.').next().unwrap_or(k);
            out.push(w(controller, k, &unified[k], false));
        }
    }
    out
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// `pids.max` value: OCI says 0 or -1 mean unlimited.
pub fn pids_value(limit: i64) -> String {
    if limit <= 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

/// The `cpu.max` line ("$QUOTA $PERIOD") for an OCI quota/period pair.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> String {
    let period = period.filter(|p| *p > 0).unwrap_or(DEFAULT_CFS_PERIOD);
    match quota {
        Some(q) if q > 0 => format!("{q} {period}"),
        _ => format!("max {period}"),
    }
}

/// Convert v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000), as runc and crun do.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Convert v1 `blkio.weight` (10..1000) to v2 `io.weight` (1..10000).
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// v1 devices-controller writes for the container's effective rule list
/// ([`devices_bpf::effective_rules`]: deny all, the spec's rules, Docker's defaults), in
/// order, so the controller ends in the state the same list gives on cgroup v2.
pub fn plan_devices_v1(rules: &[DeviceRule]) -> Vec<Write> {
    rules
        .iter()
        .map(|r| {
            let file = if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            w("devices", file, r, false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
        LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    fn res() -> LinuxResources {
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 * 1024 * 1024)
                    .swap(64 * 1024 * 1024)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(150_000)
                    .period(100_000u64)
                    .shares(1024u64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn v1_plan_orders_and_formats() {
        let p = plan_v1(&res());
        let files: Vec<_> = p
            .iter()
            .map(|w| (w.file.as_str(), w.value.as_str()))
            .collect();
        assert_eq!(
            files,
            [
                ("memory.limit_in_bytes", "67108864"),
                ("memory.memsw.limit_in_bytes", "67108864"),
                ("cpu.shares", "1024"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "150000"),
                ("pids.max", "20"),
            ]
        );
        assert!(p[1].optional, "memsw exists only with swap accounting");
    }

    #[test]
    fn v2_plan_converts() {
        let p = plan_v2(&res());
        let get = |f: &str| p.iter().find(|w| w.file == f).unwrap().value.clone();
        assert_eq!(get("memory.max"), "67108864");
        assert_eq!(get("memory.swap.max"), "0");
        assert_eq!(get("cpu.max"), "150000 100000");
        assert_eq!(get("cpu.weight"), "39");
        assert_eq!(get("pids.max"), "20");
    }

    #[test]
    fn conversions() {
        assert_eq!(cpu_max(None, None), "max 100000");
        assert_eq!(cpu_max(Some(-1), Some(50_000)), "max 50000");
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(pids_value(0), "max");
        assert_eq!(pids_value(-1), "max");
    }

    #[test]
    fn device_rules() {
        let fuse = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(229)
            .access("rw")
            .build()
            .unwrap();
        let plan = plan_devices_v1(&crate::cgroups::devices_bpf::effective_rules(&[fuse]).unwrap());
        assert_eq!(plan[0].value, "a");
        assert_eq!(plan[0].file, "devices.deny");
        assert_eq!(plan[1].value, "c 10:229 rw");
        assert_eq!(plan[1].file, "devices.allow");
        assert_eq!(plan[2].value, "c *:* m");
        assert!(plan.iter().any(|w| w.value == "c 136:* rwm"));
    }
}
