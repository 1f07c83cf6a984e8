//! `kvm-smoke`: proves that this machine's /dev/kvm runs a guest that takes exceptions
//! through its IDT. Prints `kvm-smoke: ok` and exits 0, or says why not and exits 1.

use std::process::ExitCode;
use std::time::Duration;

/// A guest that neither halts nor exits in this time is stuck (a handful of instructions
/// take microseconds, even nested under TCG).
const WATCHDOG: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!(
            "kvm-smoke: FAIL: the guest did not finish within {} s",
            WATCHDOG.as_secs()
        );
        std::process::exit(1);
    });
    match testbed_smoke::run() {
        Ok(trace) => {
            println!("kvm-smoke: ok");
            eprintln!("kvm-smoke: trace {trace:?}: int3 and ud2 went through the guest's IDT, their handlers returned");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvm-smoke: FAIL: {e}");
            if std::path::Path::new("/sys/module/kvm_pvm").exists() {
                eprintln!(
                    "kvm-smoke: this host's KVM is PVM, which runs only PVM guests: this failure is \
                     expected here; run the test in the nested testbed (testbed/run)"
                );
            }
            ExitCode::FAILURE
        }
    }
}
