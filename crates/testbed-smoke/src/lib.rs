//! KVM smoke test of the nested-virtualization testbed.
//!
//! Runs the long-mode guest of [`guest`] in a fresh KVM VM and checks that both of its
//! exceptions were delivered through its IDT, handled, and returned from. Passes on
//! hardware virtualization (including the SVM that QEMU's TCG emulates in the testbed);
//! fails on PVM, which cannot deliver a stock guest's exceptions.

pub mod guest;

use std::ptr::NonNull;

use guest::Event;
use kvm_bindings::{kvm_dtable, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

/// Why the smoke test failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// /dev/kvm is missing or not usable.
    #[error("cannot open /dev/kvm: {0} (no KVM on this machine?)")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl of the set-up failed.
    #[error("{what} failed: {source}")]
    Ioctl {
        /// The ioctl, as a phrase.
        what: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be mapped.
    #[error("cannot map {0} bytes of guest memory: {1}")]
    Mmap(usize, #[source] std::io::Error),
    /// KVM_RUN itself returned an error.
    #[error("KVM_RUN failed after {seen:?}: {source}")]
    Run {
        /// Events observed before.
        seen: Vec<Event>,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM gave up on the guest: the typical PVM outcome at the first exception.
    #[error(
        "KVM_EXIT_INTERNAL_ERROR, suberror {suberror} ({}), after {seen:?}: \
         KVM could not deliver the guest's exception through its IDT",
        internal_error_name(*suberror)
    )]
    Internal {
        /// KVM_INTERNAL_ERROR_*.
        suberror: u32,
        /// Events observed before.
        seen: Vec<Event>,
    },
    /// The guest triple-faulted: exception delivery failed inside the guest.
    #[error("the guest shut down (triple fault) after {seen:?}: exception delivery through its IDT failed")]
    Shutdown {
        /// Events observed before.
        seen: Vec<Event>,
    },
    /// The guest took an exception it should not have (a stub reported it).
    #[error("the guest took unexpected exception vector {vector} after {seen:?}")]
    UnexpectedVector {
        /// The vector.
        vector: u8,
        /// Events observed before.
        seen: Vec<Event>,
    },
    /// Any other exit, or the right exits in the wrong order.
    #[error("unexpected {exit} after {seen:?} (expected {:?})", guest::EXPECTED)]
    UnexpectedExit {
        /// The exit, described.
        exit: String,
        /// Events observed before.
        seen: Vec<Event>,
    },
    /// The guest halted, but not where (or with the stack) it should have.
    #[error(
        "the guest halted at rip {rip:#x} with rsp {rsp:#x} (expected {:#x} and {:#x})",
        guest::END_RIP,
        guest::STACK_TOP
    )]
    WrongEndState {
        /// rip at the halt.
        rip: u64,
        /// rsp at the halt.
        rsp: u64,
    },
}

fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "emulation failure",
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "simultaneous exceptions",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        kvm_bindings::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected exit reason",
        _ => "unknown",
    }
}

/// Anonymous, private guest memory, unmapped on drop.
struct GuestMemory {
    ptr: NonNull<u8>,
    len: usize,
}

impl GuestMemory {
    fn new(len: usize) -> Result<Self, Error> {
        // SAFETY: an anonymous private mapping with no address hint touches no existing
        // memory; the result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Mmap(len, std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| {
            Error::Mmap(len, std::io::Error::other("mmap returned a null pointer"))
        })?;
        Ok(Self { ptr, len })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr/len describe a live read-write mapping owned by self; &mut self
        // guarantees no other Rust reference to it exists.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in new(); the VM that referenced it
        // is dropped before (field order in run()).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

fn ioctl<T>(what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, Error> {
    r.map_err(|source| Error::Ioctl { what, source })
}

fn flat_segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 }, // execute/read accessed; read/write accessed
        present: 1,
        dpl: 0,
        db: u8::from(!code), // a 64-bit code segment has D=0, L=1
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

fn setup_long_mode(vcpu: &VcpuFd) -> Result<(), Error> {
    let mut sregs = ioctl("KVM_GET_SREGS", vcpu.get_sregs())?;
    sregs.cs = flat_segment(guest::CODE_SELECTOR, true);
    let data = flat_segment(guest::DATA_SELECTOR, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt = kvm_dtable {
        base: guest::GDT,
        limit: guest::GDT_LIMIT,
        padding: [0; 3],
    };
    sregs.idt = kvm_dtable {
        base: guest::IDT,
        limit: guest::IDT_LIMIT,
        padding: [0; 3],
    };
    sregs.cr3 = guest::PML4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = (1 << 0) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31); // PE ET NE WP PG
    sregs.efer = (1 << 8) | (1 << 10); // LME LMA
    ioctl("KVM_SET_SREGS", vcpu.set_sregs(&sregs))?;
    let mut regs = ioctl("KVM_GET_REGS", vcpu.get_regs())?;
    regs.rip = guest::CODE;
    regs.rsp = guest::STACK_TOP;
    regs.rflags = 0x2;
    ioctl("KVM_SET_REGS", vcpu.set_regs(&regs))
}

/// Runs the smoke guest; `Ok` when its trace is [`guest::EXPECTED`] and it halted where
/// it should, with its stack unwound.
pub fn run() -> Result<Vec<Event>, Error> {
    let kvm = Kvm::new().map_err(Error::OpenKvm)?;
    let mut mem = GuestMemory::new(guest::MEM_SIZE)?;
    guest::build(mem.as_mut_slice());
    let vm = ioctl("KVM_CREATE_VM", kvm.create_vm())?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: guest::MEM_SIZE as u64,
        userspace_addr: mem.ptr.as_ptr() as u64,
    };
    // SAFETY: the region is a live mapping of MEM_SIZE bytes that outlives the VM: `mem`
    // is declared before `vm`, so it is dropped after it.
    ioctl("KVM_SET_USER_MEMORY_REGION", unsafe {
        vm.set_user_memory_region(region)
    })?;
    let mut vcpu = ioctl("KVM_CREATE_VCPU", vm.create_vcpu(0))?;
    setup_long_mode(&vcpu)?;

    let mut seen = Vec::new();
    while seen.len() < guest::EXPECTED.len() {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(source) => return Err(Error::Run { seen, source }),
        };
        let event = match exit {
            VcpuExit::IoOut(guest::HANDLER_PORT, [v]) => Event::Handler(*v),
            VcpuExit::IoOut(guest::DONE_PORT, [guest::DONE_VALUE]) => Event::Done,
            VcpuExit::IoOut(guest::UNEXPECTED_PORT, [v]) => {
                return Err(Error::UnexpectedVector { vector: *v, seen });
            }
            VcpuExit::Hlt => Event::Halt,
            VcpuExit::InternalError => {
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so the kernel filled
                // the `internal` member of the union.
                let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                return Err(Error::Internal { suberror, seen });
            }
            VcpuExit::Shutdown => return Err(Error::Shutdown { seen }),
            other => {
                return Err(Error::UnexpectedExit {
                    exit: format!("exit {other:?}"),
                    seen,
                });
            }
        };
        if guest::EXPECTED[seen.len()] != event {
            return Err(Error::UnexpectedExit {
                exit: format!("event {event:?}"),
                seen,
            });
        }
        seen.push(event);
    }
    let regs = ioctl("KVM_GET_REGS", vcpu.get_regs())?;
    if regs.rip != guest::END_RIP || regs.rsp != guest::STACK_TOP {
        return Err(Error::WrongEndState {
            rip: regs.rip,
            rsp: regs.rsp,
        });
    }
    drop(vcpu);
    drop(vm);
    drop(mem);
    Ok(seen)
}
