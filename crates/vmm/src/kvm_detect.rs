//! What kind of KVM this host offers. Decided before anything else, so the engine can
//! refuse early with a message that says what to do.

use std::fmt;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;

/// CPU vendor behind hardware KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVendor {
    /// VMX (`kvm_intel`).
    Intel,
    /// SVM (`kvm_amd`).
    Amd,
    /// KVM works but the backend module is not one we recognise.
    Unknown,
}

/// The host's KVM, as far as booting a stock distribution kernel is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmKind {
    /// Hardware-assisted KVM (VMX or SVM): stock kernels boot.
    Hardware {
        /// Which vendor's extension.
        vendor: CpuVendor,
    },
    /// PVM (pagetable-based paravirtual KVM, module `kvm_pvm`): only kernels built as PVM
    /// guests (`CONFIG_PVM_GUEST`) run; a stock kernel fails at its first exception.
    Pvm,
    /// `/dev/kvm` is absent or cannot be opened.
    Missing {
        /// Why, and what to do.
        reason: String,
    },
}

impl KvmKind {
    /// Whether the stock Debian kernel can boot here.
    pub fn runs_stock_kernels(&self) -> bool {
        matches!(self, KvmKind::Hardware { .. })
    }
}

impl fmt::Display for KvmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmKind::Hardware { vendor } => write!(f, "hardware KVM ({vendor:?})"),
            KvmKind::Pvm => write!(
                f,
                "this host's /dev/kvm is PVM (kvm_pvm), which cannot run a stock kernel: \
                 pass a PVM guest kernel (CONFIG_PVM_GUEST) with --kernel, or run on a host \
                 with hardware virtualization (VMX/SVM)"
            ),
            KvmKind::Missing { reason } => write!(f, "{reason}"),
        }
    }
}

/// Inspects `/dev/kvm` and `/sys/module` on this host.
pub fn detect_kvm() -> KvmKind {
    detect_at(Path::new("/"))
}

/// [`detect_kvm`] against another root, for tests.
pub(crate) fn detect_at(root: &Path) -> KvmKind {
    let dev = root.join("dev/kvm");
    if let Err(e) = OpenOptions::new().read(true).write(true).open(&dev) {
        let reason = match e.kind() {
            ErrorKind::NotFound => "no /dev/kvm: load kvm_intel or kvm_amd, and enable \
                                    virtualization (VMX/SVM) in the firmware or hypervisor"
                .to_string(),
            ErrorKind::PermissionDenied => "permission denied opening /dev/kvm: run as root \
                                            or add the user to the kvm group"
                .to_string(),
            _ => format!("cannot open /dev/kvm: {e}"),
        };
        return KvmKind::Missing { reason };
    }
    let module = |m: &str| root.join("sys/module").join(m).exists();
    if module("kvm_pvm") {
        return KvmKind::Pvm;
    }
    let vendor = if module("kvm_intel") {
        CpuVendor::Intel
    } else if module("kvm_amd") {
        CpuVendor::Amd
    } else {
        CpuVendor::Unknown
    };
    KvmKind::Hardware { vendor }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root(modules: &[&str], dev: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("dev")).unwrap();
        if dev {
            fs::write(t.path().join("dev/kvm"), b"").unwrap();
        }
        for m in modules {
            fs::create_dir_all(t.path().join("sys/module").join(m)).unwrap();
        }
        t
    }

    #[test]
    fn classifies_hosts() {
        assert_eq!(
            detect_at(root(&["kvm", "kvm_pvm"], true).path()),
            KvmKind::Pvm
        );
        assert_eq!(
            detect_at(root(&["kvm", "kvm_amd"], true).path()),
            KvmKind::Hardware {
                vendor: CpuVendor::Amd
            }
        );
        assert_eq!(
            detect_at(root(&["kvm_intel"], true).path()),
            KvmKind::Hardware {
                vendor: CpuVendor::Intel
            }
        );
        let missing = detect_at(root(&["kvm_amd"], false).path());
        assert!(matches!(&missing, KvmKind::Missing { reason } if reason.contains("no /dev/kvm")));
        assert!(!missing.runs_stock_kernels());
        assert!(KvmKind::Pvm.to_string().contains("--kernel"));
    }

    #[test]
    fn this_host() {
        // On the development machines this is PVM; print it for the record.
        eprintln!("detect_kvm() here: {:?}", detect_kvm());
    }
}
