//! ACPI tables: RSDP → XSDT → {FADT → DSDT, MADT}.
//!
//! The platform is ACPI "hardware reduced": no PM1 blocks, no SCI, no legacy PIC. Power
//! off and reset go through the FADT sleep control and reset registers, both mapped to
//! the one-byte port [`ACPI_POWER_PORT`] (see `devices::legacy::power`). The DSDT
//! describes COM1 and every virtio-mmio device (`LNRO0005`), because the stock Debian
//! kernel cannot take virtio-mmio devices from its command line.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};

use super::layout::{
    ACPI_END, ACPI_POWER_PORT, ACPI_START, COM1_IRQ, COM1_PORT, IOAPIC_ADDR, LAPIC_ADDR,
    VIRTIO_MMIO_SIZE,
};

const OEM_ID: [u8; 6] = *b"VESSEL";
const OEM_REVISION: u32 = 1;
/// Value written to the sleep control register to enter S5 (soft off): SLP_TYP=5 in
/// bits 2..4, SLP_EN in bit 5, as Linux's `acpi_hw_extended_sleep` writes it.
pub const SLEEP_TYPE_S5: u8 = 5;
/// Value written to the reset register to reset the machine.
pub const RESET_VALUE: u8 = 0x01;
/// IA-PC boot architecture flags: no VGA, no CMOS RTC. Without the latter Linux probes
/// ports 0x70/0x71 for an RTC, which here reads as "update in progress" for ~20 s.
const IAPC_BOOT_ARCH: u16 = (1 << 2) | (1 << 5);

/// One virtio-mmio device as the guest must learn of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioAcpi {
    /// Guest physical base of its register window.
    pub addr: u64,
    /// IOAPIC pin (GSI).
    pub irq: u32,
}

/// Serialized tables with their guest addresses.
#[derive(Debug, Clone)]
pub struct AcpiTables {
    /// Address of the RSDP (for `boot_params.acpi_rsdp_addr`).
    pub rsdp_addr: u64,
    /// (guest address, bytes) of every table.
    pub blobs: Vec<(u64, Vec<u8>)>,
}

fn to_bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

fn power_register() -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(ACPI_POWER_PORT),
    )
}

/// Already-serialized AML, so devices can be built one at a time.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn com1_device() -> Raw {
    let io = aml::IO::new(COM1_PORT, COM1_PORT, 1, 8);
    let irq = aml::Interrupt::new(true, true, false, false, COM1_IRQ);
    let crs = aml::ResourceTemplate::new(vec![&io, &irq]);
    let hid_value = aml::EISAName::new("PNP0501");
    let hid = aml::Name::new("_HID".into(), &hid_value);
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let crs_name = aml::Name::new("_CRS".into(), &crs);
    Raw(to_bytes(&aml::Device::new(
        "COM1".into(),
        vec![&hid, &uid, &crs_name],
    )))
}

fn virtio_device(index: usize, dev: &VirtioMmioAcpi) -> Raw {
    let mem = aml::Memory32Fixed::new(true, dev.addr as u32, VIRTIO_MMIO_SIZE as u32);
    let irq = aml::Interrupt::new(true, true, false, false, dev.irq);
    let crs = aml::ResourceTemplate::new(vec![&mem, &irq]);
    let hid = aml::Name::new("_HID".into(), &"LNRO0005");
    let uid_value = index as u32;
    let uid = aml::Name::new("_UID".into(), &uid_value);
    let cca = aml::Name::new("_CCA".into(), &aml::ONE);
    let crs_name = aml::Name::new("_CRS".into(), &crs);
    let name = format!("V{index:03X}");
    Raw(to_bytes(&aml::Device::new(
        name.as_str().into(),
        vec![&hid, &uid, &cca, &crs_name],
    )))
}

/// Builds the DSDT body.
pub fn dsdt(virtio: &[VirtioMmioAcpi]) -> Vec<u8> {
    let mut devices = vec![com1_device()];
    devices.extend(virtio.iter().enumerate().map(|(i, d)| virtio_device(i, d)));
    let children: Vec<&dyn Aml> = devices.iter().map(|d| d as &dyn Aml).collect();
    let sb = aml::Scope::new("\\_SB_".into(), children);

    // \_S5_: sleep type values for soft off; with a hardware-reduced FADT the kernel
    // writes (SLP_TYP << 2) | SLP_EN to the sleep control register.
    let s5_pkg = aml::Package::new(vec![&SLEEP_TYPE_S5, &aml::ZERO]);
    let s5 = aml::Name::new("_S5_".into(), &s5_pkg);

    let mut body = Vec::new();
    sb.to_aml_bytes(&mut body);
    s5.to_aml_bytes(&mut body);
    body
}

/// Builds every table for a machine with `vcpus` CPUs and these virtio devices, laid out
/// from [`ACPI_START`]. Returns `None` if they would not fit below [`ACPI_END`] (cannot
/// happen within the crate's device and vCPU limits).
pub fn create(vcpus: u8, virtio: &[VirtioMmioAcpi]) -> Option<AcpiTables> {
    let align = |x: u64| (x + 15) & !15;
    let rsdp_addr = ACPI_START;
    let mut next = align(rsdp_addr + Rsdp::len() as u64);

    let mut dsdt_sdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, *b"VESSELDS", OEM_REVISION);
    dsdt_sdt.append_slice(&dsdt(virtio));
    let dsdt_bytes = dsdt_sdt.as_slice().to_vec();
    let dsdt_addr = next;
    next = align(next + dsdt_bytes.len() as u64);

    let mut fadt = FADTBuilder::new(OEM_ID, *b"VESSELFA", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.reset_reg = power_register();
    fadt.reset_value = RESET_VALUE;
    fadt.sleep_control_reg = power_register();
    fadt.sleep_status_reg = power_register();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"VESSEL\0\0").into();
    let fadt_bytes = to_bytes(&fadt.finalize());
    let fadt_addr = next;
    next = align(next + fadt_bytes.len() as u64);

    let mut madt = MADT::new(
        OEM_ID,
        *b"VESSELMA",
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for id in 0..vcpus {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, IOAPIC_ADDR, 0));
    let madt_bytes = to_bytes(&madt);
    let madt_addr = next;
    next = align(next + madt_bytes.len() as u64);

    let mut xsdt = XSDT::new(OEM_ID, *b"VESSELXS", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_bytes = to_bytes(&xsdt);
    let xsdt_addr = next;
    next += xsdt_bytes.len() as u64;

    let rsdp_bytes = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    if next > ACPI_END {
        return None;
    }
    Some(AcpiTables {
        rsdp_addr,
        blobs: vec![
            (rsdp_addr, rsdp_bytes),
            (dsdt_addr, dsdt_bytes),
            (fadt_addr, fadt_bytes),
            (madt_addr, madt_bytes),
            (xsdt_addr, xsdt_bytes),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn find(t: &AcpiTables, sig: &[u8; 4]) -> (u64, Vec<u8>) {
        t.blobs
            .iter()
            .find(|(_, b)| &b[..4] == sig)
            .cloned()
            .unwrap()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn devs(n: usize) -> Vec<VirtioMmioAcpi> {
        (0..n)
            .map(|i| VirtioMmioAcpi {
                addr: 0xd000_0000 + i as u64 * 0x1000,
                irq: 5 + i as u32,
            })
            .collect()
    }

    #[test]
    fn every_table_checksums_to_zero_and_lengths_match() {
        let t = create(4, &devs(3)).unwrap();
        for (addr, b) in &t.blobs {
            assert_eq!(sum(b), 0, "table at {addr:#x}");
            if &b[..8] != b"RSD PTR " {
                let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
                assert_eq!(len, b.len(), "{:?}", std::str::from_utf8(&b[..4]));
            }
        }
        let (_, rsdp) = find_rsdp(&t);
        assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
    }

    fn find_rsdp(t: &AcpiTables) -> (u64, Vec<u8>) {
        t.blobs
            .iter()
            .find(|(_, b)| &b[..8] == b"RSD PTR ")
            .cloned()
            .unwrap()
    }

    #[test]
    fn tables_link_to_each_other_and_fit() {
        let t = create(1, &devs(1)).unwrap();
        let (rsdp_addr, rsdp) = find_rsdp(&t);
        assert_eq!(rsdp_addr, t.rsdp_addr);
        assert_eq!(rsdp_addr % 16, 0, "kernel scans on 16-byte boundaries");
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let (xa, xsdt) = find(&t, b"XSDT");
        assert_eq!(xa, xsdt_addr);
        let entries: Vec<u64> = xsdt[36..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let (fa, fadt) = find(&t, b"FACP");
        let (ma, _) = find(&t, b"APIC");
        assert_eq!(entries, vec![fa, ma]);
        let (da, _) = find(&t, b"DSDT");
        assert_eq!(
            u64::from_le_bytes(fadt[140..148].try_into().unwrap()),
            da,
            "X_DSDT"
        );
        for (a, b) in &t.blobs {
            assert!(*a >= ACPI_START && a + b.len() as u64 <= ACPI_END);
        }
        assert!(create(
            crate::config::MAX_VCPUS,
            &devs(crate::config::MAX_VIRTIO_DEVICES)
        )
        .is_some());
    }

    #[test]
    fn fadt_is_hardware_reduced_with_power_registers() {
        let t = create(1, &[]).unwrap();
        let (_, fadt) = find(&t, b"FACP");
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        let boot_arch = u16::from_le_bytes(fadt[109..111].try_into().unwrap());
        assert_ne!(boot_arch & (1 << 5), 0, "CMOS RTC not present");
        // RESET_REG GAS at 116: system I/O, 8 bits, the power port.
        assert_eq!(fadt[116], 1);
        assert_eq!(fadt[117], 8);
        assert_eq!(
            u64::from_le_bytes(fadt[120..128].try_into().unwrap()),
            0x3c0
        );
        assert_eq!(fadt[128], RESET_VALUE);
        // SLEEP_CONTROL_REG at 244.
        assert_eq!(fadt[244], 1);
        assert_eq!(
            u64::from_le_bytes(fadt[248..256].try_into().unwrap()),
            0x3c0
        );
    }

    #[test]
    fn madt_lists_each_vcpu_and_the_ioapic() {
        let t = create(3, &[]).unwrap();
        let (_, madt) = find(&t, b"APIC");
        assert_eq!(
            u32::from_le_bytes(madt[36..40].try_into().unwrap()),
            LAPIC_ADDR
        );
        let mut off = 44;
        let mut lapics = vec![];
        let mut ioapics = 0;
        while off < madt.len() {
            let (ty, len) = (madt[off], madt[off + 1] as usize);
            match ty {
                0 => {
                    lapics.push(madt[off + 3]);
                    assert_eq!(madt[off + 4] & 1, 1, "enabled");
                }
                1 => {
                    ioapics += 1;
                    assert_eq!(
                        u32::from_le_bytes(madt[off + 4..off + 8].try_into().unwrap()),
                        IOAPIC_ADDR
                    );
                }
                _ => panic!("unexpected MADT entry {ty}"),
            }
            off += len;
        }
        assert_eq!(lapics, vec![0, 1, 2]);
        assert_eq!(ioapics, 1);
    }

    #[test]
    fn dsdt_describes_com1_virtio_devices_and_s5() {
        let t = create(1, &devs(2)).unwrap();
        let (_, d) = find(&t, b"DSDT");
        assert!(contains(&d, b"_SB_"));
        assert!(contains(&d, b"COM1"));
        assert!(contains(&d, b"V000") && contains(&d, b"V001"));
        assert!(!contains(&d, b"V002"));
        assert_eq!(
            d.windows(9).filter(|w| w == b"LNRO0005\0").count(),
            2,
            "one _HID string per virtio device"
        );
        assert!(contains(&d, b"_S5_"));
        // Memory32Fixed descriptor (0x86, len 9, RW) for the second device window.
        let mut mem = vec![0x86, 9, 0, 1];
        mem.extend_from_slice(&0xd000_1000u32.to_le_bytes());
        mem.extend_from_slice(&0x1000u32.to_le_bytes());
        assert!(contains(&d, &mem));
        // Extended interrupt descriptor for GSI 6: consumer, edge, active high.
        let irq = [0x89, 6, 0, 0x03, 1, 6, 0, 0, 0];
        assert!(contains(&d, &irq));
        // COM1 I/O ports 0x3f8..0x3ff.
        assert!(contains(&d, &[0x47, 1, 0xf8, 0x03, 0xf8, 0x03, 1, 8]));
    }
}
