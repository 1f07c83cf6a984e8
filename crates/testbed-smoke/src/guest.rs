//! The smoke guest: a few instructions of 64-bit code that take two exceptions through an
//! IDT, a #BP trap (`int3`) and a #UD fault (`ud2`), whose handlers report on an I/O port
//! and return with `iretq`.
//!
//! Delivering an exception makes the CPU read the IDT and GDT in guest memory and switch
//! stacks: that is what a KVM without hardware virtualization (PVM) cannot do for an
//! ordinary guest, while real-mode code and plain port I/O work everywhere. The layout is
//! built once into guest memory by [`build`]; everything here is pure and unit-tested.

/// Guest memory size: one 2 MiB page maps all of it.
pub const MEM_SIZE: usize = 0x20_0000;
/// Guest-physical (and, identity-mapped, linear) addresses of the pieces.
pub const GDT: u64 = 0x0500;
/// The IDT: [`VECTORS`] 16-byte interrupt gates.
pub const IDT: u64 = 0x1000;
/// The main code, entered in 64-bit mode.
pub const CODE: u64 = 0x2000;
/// Handler of vector 3 (#BP).
pub const BP_HANDLER: u64 = 0x2100;
/// Handler of vector 6 (#UD).
pub const UD_HANDLER: u64 = 0x2180;
/// One stub per other vector, [`STUB_SIZE`] bytes apart, reporting it on [`UNEXPECTED_PORT`].
pub const STUBS: u64 = 0x2200;
/// Distance between two stubs.
pub const STUB_SIZE: u64 = 8;
/// Top of the stack the exceptions push their frames on.
pub const STACK_TOP: u64 = 0x8000;
/// Page map level 4, page-directory-pointer table and page directory.
pub const PML4: u64 = 0x9000;
/// See [`PML4`].
pub const PDPT: u64 = 0xa000;
/// See [`PML4`].
pub const PD: u64 = 0xb000;
/// Exceptions the IDT covers: all architectural ones.
pub const VECTORS: u8 = 32;

/// Code and data segment selectors (GDT entries 1 and 2).
pub const CODE_SELECTOR: u16 = 0x08;
/// See [`CODE_SELECTOR`].
pub const DATA_SELECTOR: u16 = 0x10;

/// The #BP and #UD handlers write their vector here.
pub const HANDLER_PORT: u16 = 0x10;
/// The main code writes [`DONE_VALUE`] here once both exceptions returned.
pub const DONE_PORT: u16 = 0x11;
/// Any other vector's stub writes the vector here and halts.
pub const UNEXPECTED_PORT: u16 = 0x12;
/// See [`DONE_PORT`].
pub const DONE_VALUE: u8 = 0xaa;

/// #BP: raised by `int3`.
pub const VECTOR_BP: u8 = 3;
/// #UD: raised by `ud2`.
pub const VECTOR_UD: u8 = 6;

/// The main code: raise #BP, raise #UD, report that both returned, halt.
#[rustfmt::skip]
pub const MAIN: [u8; 8] = [
    0xcc,                  // int3
    0x0f, 0x0b,            // ud2
    0xb0, DONE_VALUE,      // mov al, DONE_VALUE
    0xe6, DONE_PORT as u8, // out DONE_PORT, al
    0xf4,                  // hlt
];
/// Where `rip` points once the final `hlt` has run.
pub const END_RIP: u64 = CODE + MAIN.len() as u64;

/// The #BP handler. #BP is a trap: the saved rip is already past `int3`.
#[rustfmt::skip]
pub const BP_CODE: [u8; 6] = [
    0xb0, VECTOR_BP,          // mov al, 3
    0xe6, HANDLER_PORT as u8, // out HANDLER_PORT, al
    0x48, 0xcf,               // iretq
];
/// The #UD handler. #UD is a fault: the saved rip points at `ud2`, which the handler skips.
#[rustfmt::skip]
pub const UD_CODE: [u8; 11] = [
    0xb0, VECTOR_UD,              // mov al, 6
    0xe6, HANDLER_PORT as u8,     // out HANDLER_PORT, al
    0x48, 0x83, 0x04, 0x24, 0x02, // add qword [rsp], 2
    0x48, 0xcf,                   // iretq
];

/// `mov al, vector; out UNEXPECTED_PORT, al; hlt`
pub fn stub_code(vector: u8) -> [u8; 5] {
    [0xb0, vector, 0xe6, UNEXPECTED_PORT as u8, 0xf4]
}

/// The handler address of `vector`.
pub fn handler_of(vector: u8) -> u64 {
    match vector {
        VECTOR_BP => BP_HANDLER,
        VECTOR_UD => UD_HANDLER,
        v => STUBS + u64::from(v) * STUB_SIZE,
    }
}

/// A 64-bit interrupt gate: present, DPL 0, type 0xe, no IST.
pub fn idt_gate(handler: u64, selector: u16) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    g[2..4].copy_from_slice(&selector.to_le_bytes());
    g[4] = 0; // IST
    g[5] = 0x8e; // P=1, DPL=0, type=interrupt gate
    g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    g
}

/// Null, 64-bit code (L=1) and data descriptors.
pub const GDT_ENTRIES: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

/// The IDT limit to load (bytes - 1).
pub const IDT_LIMIT: u16 = (VECTORS as u16) * 16 - 1;
/// The GDT limit to load (bytes - 1).
pub const GDT_LIMIT: u16 = (GDT_ENTRIES.len() as u16) * 8 - 1;

/// Writes the whole guest (tables, code, page tables) into `mem`, guest-physical address 0
/// at index 0. `mem` must be at least [`MEM_SIZE`] bytes.
pub fn build(mem: &mut [u8]) {
    assert!(mem.len() >= MEM_SIZE, "guest memory smaller than MEM_SIZE");
    let mut put = |addr: u64, bytes: &[u8]| {
        let a = addr as usize;
        mem[a..a + bytes.len()].copy_from_slice(bytes);
    };
    for (i, d) in GDT_ENTRIES.iter().enumerate() {
        put(GDT + 8 * i as u64, &d.to_le_bytes());
    }
    for v in 0..VECTORS {
        put(
            IDT + 16 * u64::from(v),
            &idt_gate(handler_of(v), CODE_SELECTOR),
        );
        if v != VECTOR_BP && v != VECTOR_UD {
            put(handler_of(v), &stub_code(v));
        }
    }
    put(CODE, &MAIN);
    put(BP_HANDLER, &BP_CODE);
    put(UD_HANDLER, &UD_CODE);
    // Identity map of the first 2 MiB: PML4[0] -> PDPT[0] -> PD[0], a present, writable,
    // 2 MiB page.
    put(PML4, &(PDPT | 0x3).to_le_bytes());
    put(PDPT, &(PD | 0x3).to_le_bytes());
    put(PD, &0x83u64.to_le_bytes());
}

/// What the guest reports, in the order a working KVM produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A handler reached through the IDT ran for this vector.
    Handler(u8),
    /// The main code ran on after both exceptions returned.
    Done,
    /// The guest halted.
    Halt,
}

// The pieces of the layout do not overlap.
const _: () = {
    assert!(GDT + (GDT_LIMIT as u64) < IDT);
    assert!(IDT + (IDT_LIMIT as u64) < CODE);
    assert!(CODE + MAIN.len() as u64 <= BP_HANDLER);
    assert!(BP_HANDLER + BP_CODE.len() as u64 <= UD_HANDLER);
    assert!(UD_HANDLER + UD_CODE.len() as u64 <= STUBS);
    assert!(
        STUBS + VECTORS as u64 * STUB_SIZE <= 0x7000,
        "stubs run into the stack"
    );
    assert!(STACK_TOP <= PML4);
    assert!(PD + 8 <= MEM_SIZE as u64);
};

/// The expected trace of a run.
pub const EXPECTED: [Event; 4] = [
    Event::Handler(VECTOR_BP),
    Event::Handler(VECTOR_UD),
    Event::Done,
    Event::Halt,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn read_u64(mem: &[u8], addr: u64) -> u64 {
        let a = addr as usize;
        u64::from_le_bytes(mem[a..a + 8].try_into().unwrap())
    }

    #[test]
    fn gate_splits_the_handler_address() {
        let g = idt_gate(0x1234_5678_9abc_def0, 0x08);
        assert_eq!(&g[0..2], &[0xf0, 0xde]);
        assert_eq!(&g[2..4], &[0x08, 0x00]);
        assert_eq!(g[5], 0x8e);
        assert_eq!(&g[6..8], &[0xbc, 0x9a]);
        assert_eq!(&g[8..12], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(&g[12..16], &[0, 0, 0, 0]);
    }

    #[test]
    fn build_lays_out_tables_and_code() {
        let mut mem = vec![0u8; MEM_SIZE];
        build(&mut mem);
        assert_eq!(read_u64(&mem, GDT + 8), GDT_ENTRIES[1]);
        let bp = IDT + 16 * u64::from(VECTOR_BP);
        assert_eq!(
            &mem[bp as usize..bp as usize + 16],
            &idt_gate(BP_HANDLER, CODE_SELECTOR)
        );
        let gp = 13u8;
        assert_eq!(&mem[handler_of(gp) as usize..][..5], &stub_code(gp));
        assert_eq!(&mem[CODE as usize..][..MAIN.len()], &MAIN);
        assert_eq!(read_u64(&mem, PML4), PDPT | 3);
        assert_eq!(read_u64(&mem, PD), 0x83);
    }
}
