//! Hardware-reduced ACPI power device: the FADT's sleep control, sleep status and reset
//! registers all point at this one-byte port.

use std::sync::Arc;

use crate::arch::x86_64::acpi::{RESET_VALUE, SLEEP_TYPE_S5};
use crate::bus::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

/// Sleep enable bit of the sleep control register.
const SLP_EN: u8 = 1 << 5;

/// Turns guest writes into VM exits.
pub(crate) struct AcpiPower {
    exit: Arc<ExitSignal>,
}

impl AcpiPower {
    pub(crate) fn new(exit: Arc<ExitSignal>) -> Self {
        AcpiPower { exit }
    }
}

impl BusDevice for AcpiPower {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status: never "woken"; nothing else to report.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (0, [value]) = (offset, data) else {
            return;
        };
        if value & SLP_EN != 0 {
            let sleep_type = (value >> 2) & 0x7;
            if sleep_type == SLEEP_TYPE_S5 {
                self.exit.trigger(ExitReason::Shutdown);
            } else {
                tracing::debug!(sleep_type, "guest asked for an unsupported sleep state");
            }
        } else if *value == RESET_VALUE {
            self.exit.trigger(ExitReason::Reboot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(writes: &[(u64, &[u8])]) -> Option<ExitReason> {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let mut dev = AcpiPower::new(exit.clone());
        for (off, data) in writes {
            dev.write(*off, data);
        }
        exit.is_set().then(|| exit.wait())
    }

    #[test]
    fn s5_is_shutdown_and_reset_value_is_reboot() {
        assert_eq!(
            outcome(&[(0, &[(5 << 2) | SLP_EN])]),
            Some(ExitReason::Shutdown)
        );
        assert_eq!(outcome(&[(0, &[RESET_VALUE])]), Some(ExitReason::Reboot));
    }

    #[test]
    fn other_values_are_ignored() {
        assert_eq!(
            outcome(&[
                (0, &[(3 << 2) | SLP_EN]),
                (0, &[0x42]),
                (0, &[1, 0]),
                (1, &[1])
            ]),
            None
        );
        let mut dev = AcpiPower::new(Arc::new(ExitSignal::new().unwrap()));
        let mut d = [0xaa; 2];
        dev.read(0, &mut d);
        assert_eq!(d, [0, 0]);
    }
}
