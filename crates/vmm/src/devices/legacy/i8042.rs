//! Just enough of the i8042 keyboard controller for its CPU reset line: the command
//! 0xfe written to port 0x64 resets the machine (Linux `reboot=k`, and its fallback
//! after ACPI reset). Reads report an empty controller.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

/// Offset of the command/status port (0x64) from the data port (0x60).
const COMMAND_OFFSET: u64 = 4;
/// Pulse the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;

/// The reset-only i8042.
pub(crate) struct I8042 {
    exit: Arc<ExitSignal>,
}

impl I8042 {
    pub(crate) fn new(exit: Arc<ExitSignal>) -> Self {
        I8042 { exit }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty, so reset loops never spin.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data == [CMD_RESET_CPU] {
            self.exit.trigger(ExitReason::Reboot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_reboots() {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let mut dev = I8042::new(exit.clone());
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(COMMAND_OFFSET, &[0x20]);
        assert!(!exit.is_set());
        let mut status = [0xff];
        dev.read(COMMAND_OFFSET, &mut status);
        assert_eq!(status, [0]);
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(exit.wait(), ExitReason::Reboot);
    }
}
