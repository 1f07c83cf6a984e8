//! What `vessel compare` found: rows of metrics, each with a cell per isolation. This is
//! the JSON document `--json` writes; the table and the HTML report render it.

use serde::Serialize;

/// One side's figure for one metric.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Cell {
    /// A number measured in this run.
    Measured {
        /// The figure (the median where several samples were taken).
        value: f64,
        /// Its unit: `ms`, `B`, `instances`, `x host`.
        unit: String,
        /// How many samples it summarises.
        samples: u32,
        /// What else was measured to get it (components, the host's figure...).
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// What limits its meaning (under an emulator: "emulated: compare ratios only").
        #[serde(skip_serializing_if = "Option::is_none")]
        caveat: Option<String>,
    },
    /// A number computed from measured ones, not itself measured (e.g. how many idle
    /// instances would fit a budget, from one instance's cost).
    Extrapolated {
        /// The figure.
        value: f64,
        /// Its unit.
        unit: String,
        /// Samples of the measurement it was computed from.
        samples: u32,
        /// How it was computed.
        basis: String,
    },
    /// A fact observed in this run, in words.
    Observed {
        /// The fact.
        text: String,
        /// How many observations it rests on.
        samples: u32,
    },
    /// A consequence stated from what was observed (not triggered).
    Stated {
        /// The statement.
        text: String,
    },
    /// The measurement ran and failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// This isolation could not run here at all.
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl Cell {
    /// A measured figure.
    pub fn measured(value: f64, unit: &str, samples: u32, detail: Option<String>) -> Cell {
        Cell::Measured {
            value,
            unit: unit.to_string(),
            samples,
            detail,
            caveat: None,
        }
    }

    /// The figure and unit, when measured or extrapolated.
    pub fn number(&self) -> Option<(f64, &str)> {
        match self {
            Cell::Measured { value, unit, .. } | Cell::Extrapolated { value, unit, .. } => {
                Some((*value, unit))
            }
            _ => None,
        }
    }
}

/// What [`Report::emulated`] says and every absolute time carries under an emulator.
pub const EMULATED: &str = "emulated: compare ratios only";

/// The host runs under a CPU emulator: its absolute times are not a machine's.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Emulation {
    /// The emulator (e.g. "QEMU TCG (software CPU emulation)").
    pub by: String,
    /// The CPUID hypervisor vendor signature it announced.
    pub signature: String,
    /// [`EMULATED`].
    pub note: String,
}

/// One line of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Metric {
    /// Stable key for machines (`start_median`...).
    pub key: String,
    /// What it is, for people.
    pub label: String,
    /// How it was measured, in one line.
    pub method: String,
    /// The container's figure.
    pub container: Cell,
    /// The microVM's figure.
    pub vm: Cell,
    /// VM figure divided by the container's, when both are measured in the same unit.
    pub ratio: Option<f64>,
}

impl Metric {
    /// A metric, its ratio computed from the cells.
    pub fn new(key: &str, label: &str, method: &str, container: Cell, vm: Cell) -> Metric {
        let ratio = match (container.number(), vm.number()) {
            (Some((c, cu)), Some((v, vu))) if cu == vu && c > 0.0 => Some(v / c),
            _ => None,
        };
        Metric {
            key: key.to_string(),
            label: label.to_string(),
            method: method.to_string(),
            container,
            vm,
            ratio,
        }
    }
}

/// One aspect of the seed's table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Stable key (`virtualization`, `start`, `resources`, `storage`, `isolation`,
    /// `performance`, `portability`, and `workload` with a user command).
    pub key: String,
    /// The aspect's name.
    pub title: String,
    /// Its metrics.
    pub metrics: Vec<Metric>,
}

/// The host the comparison ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// `MemTotal`, bytes.
    pub memory: u64,
    /// What `/dev/kvm` is here (qualified when the host is emulated).
    pub kvm: String,
    /// The hypervisor this host runs under, from CPUID, if any.
    pub hypervisor: Option<String>,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The image as named.
    pub image: String,
    /// The user's workload, if one was given after `--`.
    pub command: Vec<String>,
    /// Samples per timed measurement.
    pub runs: u32,
    /// Memory budget for the "instances that fit" extrapolation, bytes.
    pub budget: u64,
    /// The host.
    pub host: Host,
    /// Isolations asked for.
    pub isolations: Vec<String>,
    /// Why the VM side could not run, if it could not.
    pub vm_unavailable: Option<String>,
    /// Set when the host runs under a CPU emulator (QEMU TCG): every absolute time then
    /// carries the caveat [`EMULATED`]; only ratios measured side by side mean anything.
    pub emulated: Option<Emulation>,
    /// When it started (RFC 3339).
    pub started: String,
    /// Wall time of the whole comparison, seconds.
    pub seconds: f64,
    /// The table.
    pub rows: Vec<Row>,
}

impl Report {
    /// Marks the report as run under `by` (an emulator): the flag, and the caveat on every
    /// absolute time (unit `ms`). Ratios (`x host`, VM / container) stay as they are: both
    /// sides ran under the same emulator.
    pub fn mark_emulated(&mut self, by: &str, signature: &str) {
        self.emulated = Some(Emulation {
            by: by.to_string(),
            signature: signature.to_string(),
            note: EMULATED.to_string(),
        });
        for m in self.rows.iter_mut().flat_map(|r| r.metrics.iter_mut()) {
            for c in [&mut m.container, &mut m.vm] {
                if let Cell::Measured { unit, caveat, .. } = c {
                    if unit == "ms" {
                        *caveat = Some(EMULATED.to_string());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_only_for_two_figures_in_one_unit() {
        let m = |c, v| Metric::new("k", "l", "m", c, v).ratio;
        let ms = |v| Cell::measured(v, "ms", 3, None);
        assert_eq!(m(ms(10.0), ms(25.0)), Some(2.5));
        assert_eq!(m(ms(10.0), Cell::measured(1.0, "B", 1, None)), None);
        let gone = Cell::Unavailable { reason: "r".into() };
        assert_eq!(m(ms(10.0), gone), None);
        assert_eq!(m(ms(0.0), ms(1.0)), None);
    }

    #[test]
    fn emulated_reports_flag_every_absolute_time() {
        let mut r = Report {
            image: "i".into(),
            command: vec![],
            runs: 1,
            budget: 1,
            host: Host {
                kernel: "k".into(),
                cpus: 1,
                memory: 1,
                kvm: "hardware KVM (Amd)".into(),
                hypervisor: None,
            },
            isolations: vec![],
            vm_unavailable: None,
            emulated: None,
            started: "t".into(),
            seconds: 1.0,
            rows: vec![Row {
                key: "k".into(),
                title: "t".into(),
                metrics: vec![
                    Metric::new(
                        "start",
                        "s",
                        "m",
                        Cell::measured(4.0, "ms", 1, None),
                        Cell::measured(40.0, "ms", 1, None),
                    ),
                    Metric::new(
                        "cpu",
                        "c",
                        "m",
                        Cell::measured(1.1, "x host", 1, None),
                        Cell::measured(5.0, "B", 1, None),
                    ),
                ],
            }],
        };
        r.mark_emulated("QEMU TCG", "TCGTCGTCGTCG");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["emulated"]["note"], EMULATED);
        assert_eq!(j["emulated"]["signature"], "TCGTCGTCGTCG");
        let m = &j["rows"][0]["metrics"];
        assert_eq!(m[0]["container"]["caveat"], EMULATED);
        assert_eq!(m[0]["vm"]["caveat"], EMULATED);
        assert!(m[1]["container"].get("caveat").is_none());
        assert!(m[1]["vm"].get("caveat").is_none());
        assert_eq!(m[0]["ratio"], 10.0);
    }

    #[test]
    fn extrapolated_cells_say_so() {
        let e = Cell::Extrapolated {
            value: 8.0,
            unit: "instances".into(),
            samples: 2,
            basis: "b".into(),
        };
        assert_eq!(e.number(), Some((8.0, "instances")));
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["status"], "extrapolated");
    }

    #[test]
    fn cells_serialise_with_their_status() {
        let j = serde_json::to_value(Cell::measured(1.5, "ms", 3, None)).unwrap();
        assert_eq!(j["status"], "measured");
        assert_eq!(j["unit"], "ms");
        assert_eq!(j["samples"], 3);
        let j = serde_json::to_value(Cell::Failed { reason: "x".into() }).unwrap();
        assert_eq!(j["status"], "failed");
        assert_eq!(j["reason"], "x");
    }
}
