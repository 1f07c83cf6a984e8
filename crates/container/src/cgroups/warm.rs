//! Hiding the RCU grace period of the first cgroup migration.
//!
//! Every write to a `cgroup.procs` file (v1 or v2) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing. That is a per-CPU rwsem: its writer first
//! switches readers (every fork and exit on the host) to the slow path and waits an RCU
//! grace period for them to notice (`rcu_sync_enter`), unless another writer did so
//! within about the last grace period. On an otherwise quiet host the first migration
//! of a container start therefore waits 5-11 ms here, longer than the rest of the
//! runtime's create; runc and crun pay it too. (A cgroup2 mount with `favordynmods`
//! keeps readers on the slow path for good, but that is the host's choice.)
//!
//! [`warm`] starts that wait early, in parallel with the work that comes before the
//! container's migration (recording the instance, starting the monitor, creating the
//! cgroup): a thread of the calling process writes its own pid to its own
//! `cgroup.procs` (a migration to where it already is: nothing moves) every 2 ms until
//! the guard is dropped or a deadline passes. When the runtime then moves the container
//! in, the rwsem is still in its writer-friendly state and the write returns at once.
//!
//! Only containers in a user namespace are still moved in that way; every other init is
//! born in its cgroup without the rwsem ([`super::SelfJoin`]), and a warming write would
//! only make the creation of its cgroup wait (the write holds `cgroup_mutex`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::detect;

/// How often the thread renews the writer-friendly state: well inside a grace period.
const PERIOD: Duration = Duration::from_millis(2);
/// The longest it runs if the guard is not dropped sooner (a start that hangs).
const LIMIT: Duration = Duration::from_millis(500);

/// Stops the warming thread when dropped.
#[derive(Debug)]
pub struct Warmer {
    stop: Arc<AtomicBool>,
}

impl Drop for Warmer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `cgroup.procs` of the calling process's own cgroup in the first hierarchy that
/// has one (a v1 controller hierarchy, else cgroup2).
fn own_procs_file() -> Option<PathBuf> {
    let layout = detect::parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)?;
    let own = detect::parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").ok()?);
    let h = layout.v1.first().or(layout.v2.as_ref())?;
    Some(detect::host_dir(h, detect::own_cgroup(h, &own)).join("cgroup.procs"))
}

/// Starts warming; `None` where there is no cgroup file to write (no cgroups mounted, or
/// no thread could be started). Best effort: errors of the writes are ignored (the lock
/// is taken before a write can fail).
pub fn warm() -> Option<Warmer> {
    let path = own_procs_file()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // The thread must not take signals meant for the caller's other threads (which may
    // block them to wait for them synchronously): it starts with all of them blocked.
    let all = nix::sys::signal::SigSet::all();
    let old = all
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_SETMASK)
        .ok()?;
    let spawned = std::thread::Builder::new()
        .name("cgroup-warm".into())
        .spawn(move || {
            let pid = std::process::id().to_string();
            let end = Instant::now() + LIMIT;
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                let _ = std::fs::write(&path, &pid);
                std::thread::sleep(PERIOD);
            }
        });
    let _ = old.thread_set_mask();
    spawned.ok().map(|_| Warmer { stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_procs_file_lists_this_process_and_warming_moves_nothing() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test writes to cgroup.procs: run it as root"
        );
        let path = own_procs_file().expect("cgroups are mounted");
        let me = std::process::id().to_string();
        let listed = std::fs::read_to_string(&path).unwrap();
        assert!(
            listed.lines().any(|l| l == me),
            "{}: {listed}",
            path.display()
        );
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let w = warm().expect("a warming thread");
        std::thread::sleep(Duration::from_millis(20));
        drop(w);
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            before
        );
    }
}
