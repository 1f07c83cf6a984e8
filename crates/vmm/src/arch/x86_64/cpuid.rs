//! CPUID: start from what KVM supports (`KVM_GET_SUPPORTED_CPUID`) and describe the VM's
//! own topology, so each vCPU's APIC id matches its LAPIC and the guest counts `vcpus`
//! single-threaded cores in one package.

use kvm_bindings::kvm_cpuid_entry2;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

/// CPUID.1:ECX bit 31: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX bit 28: the logical processor count in EBX[23:16] is valid.
const EDX_HTT: u32 = 1 << 28;
/// CLFLUSH line size in 8-byte units (64 bytes), CPUID.1:EBX[15:8].
const CLFLUSH_LINE: u32 = 8;
/// Topology level types of leaves 0xb/0x1f.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits needed to number `n` items: ceil(log2(n)).
fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Rewrites `entries` (as returned by KVM) for vCPU `index` of a `count`-vCPU VM.
pub fn patch(entries: &mut [kvm_cpuid_entry2], index: u8, count: u8) {
    let apic_id = u32::from(index);
    let count = u32::from(count.max(1));
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (apic_id << 24) | (count << 16) | (CLFLUSH_LINE << 8);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this
                // cache - 1 (one thread per core; the last level is shared by all).
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((count - 1) & 0x3f) << 26);
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = id_bits(count);
                        e.ebx = count;
                        e.ecx = (LEVEL_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            LEAF_AMD_SIZE_IDS => {
                // ECX[7:0]: cores - 1; ECX[15:12]: APIC id bits (0 = derive from cores).
                e.ecx = (e.ecx & !0xf0ff) | ((count - 1) & 0xff);
            }
            LEAF_AMD_EXT_APIC_ID => {
                e.eax = apic_id;
                e.ebx = apic_id & 0xff; // one thread per core, core id = APIC id
                e.ecx = 0; // node 0
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    fn host_like() -> Vec<kvm_cpuid_entry2> {
        let mut l1 = entry(1, 0);
        l1.ecx = 0x7ffa_3203; // hypervisor bit clear, as on bare metal
        l1.edx = 0x0f8b_fbff;
        let mut l4_1 = entry(4, 0);
        l4_1.eax = 0x1c00_4121; // L1 data cache
        let mut l4_3 = entry(4, 3);
        l4_3.eax = 0x1c03_c163; // L3
        vec![
            l1,
            l4_1,
            l4_3,
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(0x8000_0008, 0),
            entry(0x8000_001e, 0),
            entry(0x4000_0000, 0),
        ]
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let mut e = host_like();
        patch(&mut e, 2, 4);
        assert_eq!(e[0].ebx >> 24, 2);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        let mut e = host_like();
        patch(&mut e, 0, 1);
        assert_eq!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[0].ebx >> 24, 0);
    }

    #[test]
    fn topology_leaves_describe_cores() {
        let mut e = host_like();
        patch(&mut e, 3, 6);
        let (smt, core, inval) = (e[3], e[4], e[5]);
        assert_eq!(
            (smt.eax, smt.ebx, smt.ecx >> 8, smt.edx),
            (0, 1, LEVEL_SMT, 3)
        );
        assert_eq!(
            (core.eax, core.ebx, core.ecx >> 8, core.edx),
            (3, 6, LEVEL_CORE, 3)
        );
        assert_eq!(
            (inval.eax, inval.ebx, inval.ecx >> 8, inval.ecx & 0xff),
            (0, 0, 0, 2)
        );
        // Leaf 4: cores per package - 1 = 5; L1 not shared, L3 shared by all 6.
        assert_eq!(e[1].eax >> 26, 5);
        assert_eq!((e[1].eax >> 14) & 0xfff, 0);
        assert_eq!((e[2].eax >> 14) & 0xfff, 5);
        assert_eq!(e[1].eax & 0x3fff, 0x0121, "cache type/level bits kept");
        assert_eq!(e[6].ecx & 0xff, 5);
        assert_eq!(e[6].ecx & 0xf000, 0);
        assert_eq!(e[7].eax, 3);
        // Unrelated leaves are untouched.
        assert_eq!(e[8].eax, 0xffff_ffff);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(
            [1, 2, 3, 4, 5, 8, 9, 32].map(id_bits),
            [0, 1, 2, 2, 3, 3, 4, 5]
        );
    }
}
