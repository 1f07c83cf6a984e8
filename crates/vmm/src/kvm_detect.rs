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

/// The hypervisor this host itself runs under, as CPUID announces it (leaf 1 ECX bit 31,
/// then the vendor signature of leaf `0x40000000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hypervisor {
    /// The 12-byte vendor signature (`KVMKVMKVM`, `TCGTCGTCGTCG`, `Microsoft Hv`...),
    /// NULs removed.
    pub signature: String,
    /// When the "hypervisor" is a CPU emulator (QEMU TCG), its name: every instruction
    /// is translated in software, so absolute times mean nothing; only ratios measured
    /// side by side do. A KVM offered here is then nested inside that emulation.
    pub emulator: Option<&'static str>,
}

impl Hypervisor {
    /// From CPUID: the hypervisor-present bit of leaf 1 and the EBX, ECX, EDX of leaf
    /// `0x40000000`. `None` on bare metal (that leaf then holds unrelated data).
    pub fn from_cpuid(present: bool, ebx: u32, ecx: u32, edx: u32) -> Option<Hypervisor> {
        if !present {
            return None;
        }
        let mut sig = Vec::with_capacity(12);
        for r in [ebx, ecx, edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        let signature: String = String::from_utf8_lossy(&sig)
            .trim_end_matches('\0')
            .replace('\0', "");
        let emulator = (signature == "TCGTCGTCGTCG").then_some("QEMU TCG (software CPU emulation)");
        Some(Hypervisor {
            signature,
            emulator,
        })
    }
}

impl fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.emulator {
            Some(e) => write!(f, "{e}, CPUID hypervisor vendor \"{}\"", self.signature),
            None => write!(f, "a hypervisor, CPUID vendor \"{}\"", self.signature),
        }
    }
}

/// What hypervisor, if any, this host runs under (CPUID).
pub fn detect_hypervisor() -> Option<Hypervisor> {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID exists on every x86_64 CPU; a leaf out of range returns data, never faults.
        let leaf1 = std::arch::x86_64::__cpuid(1);
        let present = leaf1.ecx & (1 << 31) != 0;
        let hv = std::arch::x86_64::__cpuid(0x4000_0000);
        Hypervisor::from_cpuid(present, hv.ebx, hv.ecx, hv.edx)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// The three CPUID registers that spell `s`.
    fn regs(s: &[u8; 12]) -> (u32, u32, u32) {
        let r = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        (r(0), r(4), r(8))
    }

    #[test]
    fn qemu_tcg_is_an_emulator_and_kvm_is_not() {
        let (b, c, d) = regs(b"TCGTCGTCGTCG");
        let tcg = Hypervisor::from_cpuid(true, b, c, d).unwrap();
        assert_eq!(tcg.signature, "TCGTCGTCGTCG");
        assert!(tcg.emulator.unwrap().contains("QEMU TCG"));
        assert!(tcg.to_string().contains("TCGTCGTCGTCG"));
        let (b, c, d) = regs(b"KVMKVMKVM\0\0\0");
        let kvm = Hypervisor::from_cpuid(true, b, c, d).unwrap();
        assert_eq!(kvm.signature, "KVMKVMKVM");
        assert_eq!(kvm.emulator, None);
        // Without the hypervisor bit the leaf means nothing, whatever it holds.
        assert_eq!(Hypervisor::from_cpuid(false, b, c, d), None);
    }

    #[test]
    fn this_hosts_hypervisor() {
        // The development machines are VMs (PVM): a hypervisor, not an emulator. The
        // testbed (QEMU TCG) is checked end to end by `vessel compare`'s VM-suite test.
        let h = detect_hypervisor();
        eprintln!("detect_hypervisor() here: {h:?}");
        if std::env::var_os("TESTBED").is_none() {
            assert_eq!(h.and_then(|h| h.emulator), None);
        }
    }

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
