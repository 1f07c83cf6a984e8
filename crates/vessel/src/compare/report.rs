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
        }
    }

    /// The figure and unit, when measured.
    pub fn number(&self) -> Option<(f64, &str)> {
        match self {
            Cell::Measured { value, unit, .. } => Some((*value, unit)),
            _ => None,
        }
    }
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
    /// What `/dev/kvm` is here.
    pub kvm: String,
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
    /// When it started (RFC 3339).
    pub started: String,
    /// Wall time of the whole comparison, seconds.
    pub seconds: f64,
    /// The table.
    pub rows: Vec<Row>,
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
