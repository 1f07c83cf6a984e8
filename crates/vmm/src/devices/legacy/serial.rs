//! COM1: a 16550A UART (vm-superio) whose output goes to a file, stdout or an fd and
//! whose interrupt is an irqfd.

use std::io::Write;

use vm_superio::{Serial as Uart, Trigger};

use crate::bus::BusDevice;
use crate::devices::IrqLine;

/// vm-superio's interrupt hook, backed by an irqfd.
pub(crate) struct SerialIrq(pub IrqLine);

impl Trigger for SerialIrq {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.trigger()
    }
}

/// The UART as a port I/O device.
pub(crate) struct Serial {
    uart: Uart<SerialIrq, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
    /// Only the first output error is logged: a closed pipe would otherwise log once per
    /// byte the guest prints.
    write_failed: bool,
}

impl Serial {
    pub(crate) fn new(irq: IrqLine, out: Box<dyn Write + Send>) -> Self {
        Serial {
            uart: Uart::new(SerialIrq(irq), out),
            write_failed: false,
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data) {
            (Ok(off), [b]) => *b = self.uart.read(off),
            (_, data) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Ok(off), [b]) = (u8::try_from(offset), data) else {
            return;
        };
        if let Err(e) = self.uart.write(off, *b) {
            if !self.write_failed {
                self.write_failed = true;
                tracing::warn!("serial console output failed, further output dropped: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_to_thr_reach_the_output_and_raise_irq_when_enabled() {
        let out = Shared::default();
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = IrqLine::new(evt.try_clone().unwrap());
        let mut s = Serial::new(irq, Box::new(out.clone()));
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        assert!(evt.read().is_err(), "no interrupt while IER is 0");
        s.write(1, &[0x02]); // IER: THR empty
        s.write(0, b"x");
        assert!(evt.read().unwrap() >= 1);
        // LSR says the transmitter is empty, so the kernel never waits.
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        // Wide or out-of-range accesses are ignored, not fatal.
        let mut wide = [0u8; 4];
        s.read(0, &mut wide);
        assert_eq!(wide, [0xff; 4]);
        s.write(0, &[1, 2]);
        s.write(u64::MAX, &[1]);
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn broken_output_does_not_stop_the_guest() {
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut s = Serial::new(irq, Box::new(Broken));
        for _ in 0..3 {
            s.write(0, b"a");
        }
        assert!(s.write_failed);
    }
}
