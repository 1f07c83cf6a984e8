//! How a task asks for its isolation: the OCI annotations `io.vessel.*` of the bundle,
//! or the runtime options containerd passes (`runtimeoptions.v1.Options`, whose
//! `ConfigBody` or `ConfigPath` holds `key = "value"` lines). Parsed once, validated
//! before anything is created; a key vessel does not know is refused by name.

use std::collections::HashMap;
use std::path::Path;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::CodedInputStream;
use vessel_engine::request::Isolation;

use crate::error::{Error, Result};

/// The annotation that selects the isolation (`container` or `vm`).
pub const ISOLATION: &str = "io.vessel.isolation";
/// Guest kernel of a microVM (a path).
pub const VM_KERNEL: &str = "io.vessel.vm.kernel";
/// vCPUs of a microVM.
pub const VM_CPUS: &str = "io.vessel.vm.cpus";
/// Memory of a microVM, in MiB.
pub const VM_MEMORY: &str = "io.vessel.vm.memory-mib";

/// The type containerd's `ctr --runtime-config-path` and CRI's generic runtime
/// `options` table are sent as.
const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// What the task asked for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOptions {
    /// Container or microVM.
    pub isolation: Isolation,
    /// microVM sizing (only with `Isolation::Vm`).
    pub vm: VmSize,
}

/// A microVM's kernel and size, when given.
pub type VmSize = vessel_engine::bundle::VmSpec;

impl TaskOptions {
    /// From the bundle's annotations and containerd's runtime options (annotations win).
    /// Without either, a one-container microVM.
    pub fn parse(annotations: &HashMap<String, String>, options: Option<&Any>) -> Result<Self> {
        let mut kv: HashMap<String, String> = HashMap::new();
        if let Some(any) = options.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) {
            for (k, v) in runtime_options(any)? {
                kv.insert(k, v);
            }
        }
        for (key, name) in [
            (ISOLATION, "isolation"),
            (VM_KERNEL, "kernel"),
            (VM_CPUS, "cpus"),
            (VM_MEMORY, "memory_mib"),
        ] {
            if let Some(v) = annotations.get(key) {
                kv.insert(name.to_string(), v.clone());
            }
        }
        if let Some(k) = annotations.keys().find(|k| {
            k.starts_with("io.vessel.")
                && ![ISOLATION, VM_KERNEL, VM_CPUS, VM_MEMORY].contains(&k.as_str())
        }) {
            return Err(Error::Invalid(format!(
                "unknown annotation {k:?}: vessel knows {ISOLATION}, {VM_KERNEL}, {VM_CPUS}, {VM_MEMORY}"
            )));
        }
        let isolation = match kv.get("isolation").map(String::as_str) {
            None | Some("vm") => Isolation::Vm,
            Some("container") => Isolation::Container,
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "isolation {other:?}: use \"container\" or \"vm\""
                )))
            }
        };
        let vm = VmSize {
            kernel: kv.get("kernel").map(std::path::PathBuf::from),
            cpus: kv
                .get("cpus")
                .map(|v| match v.parse::<u8>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(Error::Invalid(format!(
                        "cpus {v:?}: a number from 1 to 255"
                    ))),
                })
                .transpose()?,
            memory_mib: kv
                .get("memory_mib")
                .map(|v| match v.parse::<u32>() {
                    Ok(n) if n >= 64 => Ok(n),
                    _ => Err(Error::Invalid(format!(
                        "memory_mib {v:?}: a number of MiB, at least 64"
                    ))),
                })
                .transpose()?,
        };
        if isolation == Isolation::Container && vm != VmSize::default() {
            return Err(Error::Invalid(
                "kernel, cpus and memory_mib size a microVM: they mean nothing with isolation=container"
                    .into(),
            ));
        }
        for k in kv.keys() {
            if !["isolation", "kernel", "cpus", "memory_mib"].contains(&k.as_str()) {
                return Err(Error::Invalid(format!(
                    "unknown runtime option {k:?}: vessel knows isolation, kernel, cpus, memory_mib"
                )));
            }
        }
        Ok(TaskOptions { isolation, vm })
    }
}

/// The `key = "value"` pairs of a `runtimeoptions.v1.Options` (fields 1 type_url,
/// 2 config_path, 3 config_body; all strings).
fn runtime_options(any: &Any) -> Result<Vec<(String, String)>> {
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    if type_name != RUNTIME_OPTIONS_TYPE {
        return Err(Error::Invalid(format!(
            "runtime options of type {:?}: vessel takes {RUNTIME_OPTIONS_TYPE} (ConfigPath or \
             ConfigBody) or the annotation {ISOLATION}",
            any.type_url
        )));
    }
    let bad = |e: String| Error::Invalid(format!("runtime options: {e}"));
    let mut input = CodedInputStream::from_bytes(&any.value);
    let (mut path, mut body) = (String::new(), String::new());
    while !input.eof().map_err(|e| bad(e.to_string()))? {
        let tag = input.read_raw_varint32().map_err(|e| bad(e.to_string()))?;
        match tag {
            // Field 1 (TypeUrl): the type the body would decode to; vessel's is text.
            10 => {
                input.read_string().map_err(|e| bad(e.to_string()))?;
            }
            18 => path = input.read_string().map_err(|e| bad(e.to_string()))?,
            26 => body = input.read_string().map_err(|e| bad(e.to_string()))?,
            t => return Err(bad(format!("unexpected field tag {t}"))),
        }
    }
    if !path.is_empty() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        body.push('\n');
        body.push_str(&text);
    }
    parse_pairs(
        &body,
        Path::new(if path.is_empty() { "ConfigBody" } else { &path }),
    )
}

/// `key = "value"` or `key = number` lines; `#` comments and blank lines skipped.
fn parse_pairs(text: &str, origin: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(Error::Invalid(format!(
                "{}: {line:?} is not `key = \"value\"`",
                origin.display()
            )));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_is_a_microvm() {
        let o = TaskOptions::parse(&HashMap::new(), None).unwrap();
        assert_eq!(o.isolation, Isolation::Vm);
    }

    #[test]
    fn annotation_selects_container() {
        let o = TaskOptions::parse(&ann(&[(ISOLATION, "container")]), None).unwrap();
        assert_eq!(o.isolation, Isolation::Container);
    }

    #[test]
    fn annotations_size_the_microvm() {
        let o = TaskOptions::parse(
            &ann(&[
                (VM_CPUS, "2"),
                (VM_MEMORY, "200"),
                (VM_KERNEL, "/k/vmlinux"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(o.isolation, Isolation::Vm);
        assert_eq!(o.vm.cpus, Some(2));
        assert_eq!(o.vm.memory_mib, Some(200));
        assert_eq!(
            o.vm.kernel.as_deref(),
            Some(std::path::Path::new("/k/vmlinux"))
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = TaskOptions::parse(&ann(&[(ISOLATION, "gvisor")]), None).unwrap_err();
        assert!(e.to_string().contains("\"gvisor\""), "{e}");
        let e = TaskOptions::parse(&ann(&[(VM_CPUS, "0")]), None).unwrap_err();
        assert!(e.to_string().contains("\"0\""), "{e}");
        let e = TaskOptions::parse(&ann(&[("io.vessel.typo", "1")]), None).unwrap_err();
        assert!(e.to_string().contains("io.vessel.typo"), "{e}");
        let e = TaskOptions::parse(&ann(&[(ISOLATION, "container"), (VM_MEMORY, "512")]), None)
            .unwrap_err();
        assert!(e.to_string().contains("isolation=container"), "{e}");
    }

    fn encode(body: &str) -> Any {
        let mut v = vec![26u8, body.len() as u8];
        v.extend_from_slice(body.as_bytes());
        Any {
            type_url: format!("types.containerd.io/{RUNTIME_OPTIONS_TYPE}"),
            value: v,
            ..Default::default()
        }
    }

    #[test]
    fn runtime_options_body() {
        let o = TaskOptions::parse(
            &HashMap::new(),
            Some(&encode("isolation = \"container\"\n")),
        )
        .unwrap();
        assert_eq!(o.isolation, Isolation::Container);
        let e = TaskOptions::parse(&HashMap::new(), Some(&encode("colour = \"red\""))).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn foreign_options_type_refused() {
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![],
            ..Default::default()
        };
        let e = TaskOptions::parse(&HashMap::new(), Some(&any)).unwrap_err();
        assert!(e.to_string().contains("containerd.runc.v1.Options"), "{e}");
    }
}
