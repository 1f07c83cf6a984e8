//! How a VM ends, and the one place any thread reports it.

use std::sync::Mutex;

use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};

/// Why [`crate::Vm::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (ACPI S5, e.g. `poweroff -f`).
    Shutdown,
    /// The guest asked for a reset (ACPI reset register, i8042 reset, `reboot -f`, or a
    /// kernel panic with `panic=-1`). The VMM does not restart it.
    Reboot,
    /// The guest crashed (triple fault, KVM internal or entry error); the text says how.
    Crashed(String),
    /// The host asked the VM to stop ([`crate::StopHandle::stop`]).
    Stopped,
}

/// First-writer-wins exit reason plus an eventfd the VM's main thread waits on.
#[derive(Debug)]
pub(crate) struct ExitSignal {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl ExitSignal {
    pub(crate) fn new() -> Result<Self> {
        Ok(ExitSignal {
            reason: Mutex::new(None),
            evt: EventFd::new(libc::EFD_CLOEXEC)
                .map_err(|e| Error::os("creating the VM exit eventfd", e))?,
        })
    }

    /// Records `reason` unless another one came first, and wakes the waiter.
    pub(crate) fn trigger(&self, reason: ExitReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::debug!(?reason, "VM exit requested");
            *slot = Some(reason);
        }
        drop(slot);
        if let Err(e) = self.evt.write(1) {
            tracing::error!("cannot signal VM exit: {e}");
        }
    }

    /// Whether an exit has been requested.
    pub(crate) fn is_set(&self) -> bool {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Blocks until [`ExitSignal::trigger`] was called, then returns the first reason.
    pub(crate) fn wait(&self) -> ExitReason {
        loop {
            if let Some(r) = self
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return r;
            }
            if let Err(e) = self.evt.read() {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!("waiting for VM exit: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_reason_wins_and_wakes_waiter() {
        let s = Arc::new(ExitSignal::new().unwrap());
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait());
        s.trigger(ExitReason::Reboot);
        s.trigger(ExitReason::Shutdown);
        assert_eq!(t.join().unwrap(), ExitReason::Reboot);
        assert!(s.is_set());
    }
}
