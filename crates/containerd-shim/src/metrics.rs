//! A task's cgroup statistics in the shape containerd decodes for `ctr task metrics`
//! and the CRI: `io.containerd.cgroups.v1.Metrics` where the controllers are v1 hierarchies
//! (legacy and hybrid hosts, as containerd 1.6 treats them), `io.containerd.cgroups.v2.Metrics`
//! on a unified host.

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use vessel_container::{CgroupMode, Stats};

use crate::error::{Error, Result};

/// v1 metrics from vessel's stats.
fn v1_metrics(s: &Stats) -> v1::Metrics {
    v1::Metrics {
        pids: MessageField::some(v1::PidsStat {
            current: s.pids_current,
            limit: s.pids_limit.unwrap_or(0),
            ..Default::default()
        }),
        cpu: MessageField::some(v1::CPUStat {
            usage: MessageField::some(v1::CPUUsage {
                total: s.cpu_usage_ns,
                ..Default::default()
            }),
            throttling: MessageField::some(v1::Throttle {
                throttled_periods: s.cpu_throttled_periods,
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(v1::MemoryStat {
            usage: MessageField::some(v1::MemoryEntry {
                usage: s.memory_usage,
                max: s.memory_max_usage.unwrap_or(0),
                limit: s.memory_limit.unwrap_or(u64::MAX),
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory_oom_control: MessageField::some(v1::MemoryOomControl {
            oom_kill: s.oom_kills,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// v2 metrics from vessel's stats.
fn v2_metrics(s: &Stats) -> v2::Metrics {
    v2::Metrics {
        pids: MessageField::some(v2::PidsStat {
            current: s.pids_current,
            limit: s.pids_limit.unwrap_or(0),
            ..Default::default()
        }),
        cpu: MessageField::some(v2::CPUStat {
            usage_usec: s.cpu_usage_ns / 1000,
            nr_throttled: s.cpu_throttled_periods,
            ..Default::default()
        }),
        memory: MessageField::some(v2::MemoryStat {
            usage: s.memory_usage,
            usage_limit: s.memory_limit.unwrap_or(u64::MAX),
            max_usage: s.memory_max_usage.unwrap_or(0),
            ..Default::default()
        }),
        memory_events: MessageField::some(v2::MemoryEvents {
            oom_kill: s.oom_kills,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pack(m: Box<dyn MessageDyn>) -> Result<Any> {
    let mut value = Vec::new();
    m.write_to_vec_dyn(&mut value)
        .map_err(|e| Error::Shim(format!("encode metrics: {e}")))?;
    Ok(Any {
        type_url: m.descriptor_dyn().full_name().to_string(),
        value,
        ..Default::default()
    })
}

/// The metrics of `stats` for this host's cgroup layout, packed for `StatsResponse`.
pub fn to_any(stats: &Stats) -> Result<Any> {
    let mode =
        vessel_container::cgroup_mode().map_err(|e| Error::Shim(format!("cgroup layout: {e}")))?;
    match mode {
        CgroupMode::Unified => pack(Box::new(v2_metrics(stats))),
        CgroupMode::Legacy | CgroupMode::Hybrid => pack(Box::new(v1_metrics(stats))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::Message;

    fn stats() -> Stats {
        Stats {
            memory_usage: 4096,
            memory_max_usage: Some(8192),
            memory_limit: Some(1 << 20),
            oom_kills: 1,
            oom_killed: true,
            pids_current: 2,
            pids_limit: Some(10),
            cpu_usage_ns: 5000,
            cpu_throttled_periods: 3,
            io_read_bytes: 0,
            io_write_bytes: 0,
        }
    }

    #[test]
    fn v1_round_trip() {
        let any = pack(Box::new(v1_metrics(&stats()))).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, 1 << 20);
        assert_eq!(m.pids.current, 2);
        assert_eq!(m.cpu.usage.total, 5000);
        assert_eq!(m.memory_oom_control.oom_kill, 1);
    }

    #[test]
    fn v2_round_trip() {
        let any = pack(Box::new(v2_metrics(&stats()))).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.cpu.usage_usec, 5);
        assert_eq!(m.pids.limit, 10);
    }
}
