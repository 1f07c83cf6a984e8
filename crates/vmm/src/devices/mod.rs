//! Device models: legacy PC devices and virtio devices with their transport.

pub(crate) mod legacy;
pub(crate) mod virtio;

use vmm_sys_util::eventfd::EventFd;

/// An interrupt line into KVM: writing the eventfd (registered as an irqfd for a GSI)
/// raises an edge on that IOAPIC pin.
#[derive(Debug)]
pub(crate) struct IrqLine {
    evt: EventFd,
}

impl IrqLine {
    pub(crate) fn new(evt: EventFd) -> Self {
        IrqLine { evt }
    }

    /// Raises the interrupt.
    pub(crate) fn trigger(&self) -> std::io::Result<()> {
        self.evt.write(1)
    }
}
