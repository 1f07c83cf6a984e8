//! vCPUs: boot state, and the run loop that turns exits into device accesses or a VM
//! exit. One thread per vCPU.

use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{
    CpuId, Msrs, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::arch::x86_64::{cpuid, regs};
use crate::bus::Bus;
use crate::error::{Error, Result};
use crate::exit::{ExitReason, ExitSignal};
use crate::seccomp::{self, Filters};

/// Port I/O and MMIO buses shared by all vCPUs.
pub(crate) struct IoBuses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// One vCPU, configured and ready to run on its own thread.
pub(crate) struct Vcpu {
    fd: VcpuFd,
    index: u8,
    buses: Arc<IoBuses>,
    exit: Arc<ExitSignal>,
}

/// Signal used to knock a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // Without a handler the signal would kill the process; with a no-op one it only
        // interrupts KVM_RUN with EINTR.
        result = register_signal_handler(kick_signal(), noop_handler)
            .map_err(|e| Error::os("installing the vCPU kick signal handler", e.into()));
    });
    result
}

impl Vcpu {
    pub(crate) fn new(
        vm: &VmFd,
        index: u8,
        buses: Arc<IoBuses>,
        exit: Arc<ExitSignal>,
    ) -> Result<Self> {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(|e| Error::kvm(format!("KVM_CREATE_VCPU {index}"), e))?;
        Ok(Vcpu {
            fd,
            index,
            buses,
            exit,
        })
    }

    fn kvm(&self, op: &str) -> impl FnOnce(kvm_ioctls::Error) -> Error + '_ {
        let op = format!("{op} (vCPU {})", self.index);
        move |e| Error::kvm(op, e)
    }

    /// CPUID, MSRs, FPU and LAPIC for any vCPU; registers for 64-bit entry at `entry`
    /// (application processors are held by the in-kernel LAPIC until the boot CPU sends
    /// INIT/SIPI, which resets them anyway).
    pub(crate) fn configure_linux(&self, supported: &CpuId, vcpus: u8, entry: u64) -> Result<()> {
        let mut cpuid = supported.clone();
        cpuid::patch(cpuid.as_mut_slice(), self.index, vcpus);
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(self.kvm("KVM_SET_CPUID2"))?;

        let entries = regs::boot_msrs();
        let msrs = Msrs::from_entries(&entries)
            .map_err(|e| Error::boot(format!("building the MSR list: {e:?}")))?;
        let set = self.fd.set_msrs(&msrs).map_err(self.kvm("KVM_SET_MSRS"))?;
        if set != entries.len() {
            // KVM stops at the first MSR it refuses; the rest are conveniences.
            tracing::debug!(
                set,
                wanted = entries.len(),
                "KVM accepted only some boot MSRs"
            );
        }

        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(self.kvm("KVM_SET_FPU"))?;
        let sregs = self.fd.get_sregs().map_err(self.kvm("KVM_GET_SREGS"))?;
        self.fd
            .set_sregs(&regs::long_mode_sregs(sregs))
            .map_err(self.kvm("KVM_SET_SREGS"))?;
        self.fd
            .set_regs(&regs::long_mode_regs(entry))
            .map_err(self.kvm("KVM_SET_REGS"))?;
        let mut lapic = self.fd.get_lapic().map_err(self.kvm("KVM_GET_LAPIC"))?;
        regs::set_lint(&mut lapic);
        self.fd
            .set_lapic(&lapic)
            .map_err(self.kvm("KVM_SET_LAPIC"))?;
        Ok(())
    }

    /// Real mode with CS base 0 and `ip` as instruction pointer: for tiny test guests.
    #[cfg(test)]
    pub(crate) fn configure_real_mode(&self, ip: u16) -> Result<()> {
        let mut sregs = self.fd.get_sregs().map_err(self.kvm("KVM_GET_SREGS"))?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        self.fd
            .set_sregs(&sregs)
            .map_err(self.kvm("KVM_SET_SREGS"))?;
        let regs = kvm_bindings::kvm_regs {
            rip: u64::from(ip),
            rflags: 2,
            ..Default::default()
        };
        self.fd.set_regs(&regs).map_err(self.kvm("KVM_SET_REGS"))
    }

    /// Starts the vCPU thread, which confines itself with `filter` (see [`crate::seccomp`])
    /// before it first enters the guest.
    pub(crate) fn spawn(self, filter: Option<Arc<Filters>>) -> Result<JoinHandle<()>> {
        install_kick_handler()?;
        std::thread::Builder::new()
            .name(format!("vcpu{}", self.index))
            .spawn(move || {
                if let Err(e) = seccomp::confine_current_thread(filter.as_deref()) {
                    self.exit
                        .trigger(ExitReason::Crashed(format!("vCPU {}: {e}", self.index)));
                    return;
                }
                self.run_loop()
            })
            .map_err(|e| Error::os("spawning a vCPU thread", e))
    }

    fn run_loop(mut self) {
        let index = self.index;
        while !self.exit.is_set() {
            let outcome = match self.fd.run() {
                Ok(exit) => handle_exit(index, exit, &self.buses),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
                Err(e) => Some(ExitReason::Crashed(format!(
                    "vCPU {index}: KVM_RUN failed: {e}"
                ))),
            };
            let outcome = outcome.map(|r| match r {
                ExitReason::Crashed(msg) if msg.contains("KVM_EXIT_INTERNAL_ERROR") => {
                    ExitReason::Crashed(format!("{msg}{}", self.internal_error_detail()))
                }
                other => other,
            });
            if let Some(reason) = outcome {
                self.exit.trigger(reason);
            }
        }
        tracing::debug!(vcpu = index, "vCPU thread done");
    }

    fn internal_error_detail(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: called only right after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, for
        // which the kernel fills the `internal` member of the exit union.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        format!(
            " (suberror {}, data {:x?})",
            internal.suberror,
            &internal.data[..n]
        )
    }
}

/// Turns one exit into device work; returns the VM's end if this exit is one.
fn handle_exit(index: u8, exit: VcpuExit<'_>, buses: &IoBuses) -> Option<ExitReason> {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !buses.pio.read(u64::from(port), data) {
                data.fill(0xff);
            }
            None
        }
        VcpuExit::IoOut(port, data) => {
            if !buses.pio.write(u64::from(port), data) {
                tracing::trace!(port, ?data, "write to unhandled port");
            }
            None
        }
        VcpuExit::MmioRead(addr, data) => {
            if !buses.mmio.read(addr, data) {
                tracing::debug!(addr = format_args!("{addr:#x}"), "read of unhandled MMIO");
                data.fill(0xff);
            }
            None
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !buses.mmio.write(addr, data) {
                tracing::debug!(addr = format_args!("{addr:#x}"), "write to unhandled MMIO");
            }
            None
        }
        VcpuExit::SystemEvent(kind, _) => Some(match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::Shutdown,
            KVM_SYSTEM_EVENT_RESET => ExitReason::Reboot,
            KVM_SYSTEM_EVENT_CRASH => {
                ExitReason::Crashed(format!("vCPU {index}: guest reported a crash"))
            }
            other => ExitReason::Crashed(format!("vCPU {index}: unknown system event {other}")),
        }),
        VcpuExit::Shutdown => Some(ExitReason::Crashed(format!(
            "vCPU {index}: triple fault (KVM_EXIT_SHUTDOWN)"
        ))),
        VcpuExit::Hlt => Some(ExitReason::Crashed(format!(
            "vCPU {index}: halted outside the in-kernel irqchip"
        ))),
        VcpuExit::InternalError => Some(ExitReason::Crashed(format!(
            "vCPU {index}: KVM_EXIT_INTERNAL_ERROR"
        ))),
        VcpuExit::FailEntry(reason, cpu) => Some(ExitReason::Crashed(format!(
            "vCPU {index}: KVM_EXIT_FAIL_ENTRY (hardware reason {reason:#x}, host cpu {cpu})"
        ))),
        VcpuExit::Intr => None,
        other => Some(ExitReason::Crashed(format!(
            "vCPU {index}: unexpected exit {other:?}"
        ))),
    }
}

/// Interrupts `threads` until each has left its run loop (the exit signal must already be
/// set), then joins them. A thread between its last check and `KVM_RUN` can miss one
/// signal, hence the retries.
pub(crate) fn stop_all(threads: Vec<JoinHandle<()>>) -> Vec<String> {
    let mut problems = Vec::new();
    for t in threads {
        let name = t.thread().name().unwrap_or("vcpu").to_string();
        let mut tries = 0u32;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !t.is_finished() {
            if std::time::Instant::now() > deadline {
                problems.push(format!("{name} did not stop within 10 s; left running"));
                break;
            }
            if let Err(e) = t.kill(kick_signal()) {
                if !t.is_finished() {
                    problems.push(format!("{name}: cannot signal: {e}"));
                    break;
                }
            }
            tries += 1;
            std::thread::sleep(Duration::from_millis(if tries < 50 { 1 } else { 20 }));
        }
        if t.is_finished() && t.join().is_err() {
            problems.push(format!("{name} panicked"));
        }
    }
    problems
}
