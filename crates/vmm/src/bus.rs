//! Dispatch of guest port I/O and MMIO exits to device models by address range.

use std::sync::{Arc, Mutex};

/// A device reachable through port I/O or MMIO. `offset` is relative to the range the
/// device was inserted at; `data.len()` is the access width (1, 2, 4 or 8).
pub(crate) trait BusDevice: Send {
    /// Guest read: fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Shared handle to a device on a bus.
pub(crate) type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Entry {
    base: u64,
    len: u64,
    device: SharedDevice,
}

/// Non-overlapping address ranges mapped to devices.
#[derive(Clone, Default)]
pub(crate) struct Bus {
    entries: Vec<Entry>,
}

/// Two devices were given overlapping ranges (a wiring bug, reported at build time).
#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
pub(crate) struct OverlapError {
    base: u64,
    len: u64,
}

impl Bus {
    /// Maps `device` at `base..base+len`.
    pub(crate) fn insert(
        &mut self,
        device: SharedDevice,
        base: u64,
        len: u64,
    ) -> Result<(), OverlapError> {
        let end = base.checked_add(len).ok_or(OverlapError { base, len })?;
        if len == 0
            || self
                .entries
                .iter()
                .any(|e| base < e.base + e.len && e.base < end)
        {
            return Err(OverlapError { base, len });
        }
        let pos = self.entries.partition_point(|e| e.base < base);
        self.entries.insert(pos, Entry { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(&Entry, u64)> {
        let idx = self
            .entries
            .partition_point(|e| e.base <= addr)
            .checked_sub(1)?;
        let e = &self.entries[idx];
        let offset = addr - e.base;
        // The whole access must fall inside the device's range.
        (offset.checked_add(size as u64)? <= e.len).then_some((e, offset))
    }

    /// Forwards a read; returns false if no device covers the access.
    pub(crate) fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, off)) => {
                e.device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .read(off, data);
                true
            }
            None => false,
        }
    }

    /// Forwards a write; returns false if no device covers the access.
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, off)) => {
                e.device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write(off, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_rejects_overlaps_and_straddling() {
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::default();
        bus.insert(b.clone(), 0x3f8, 8).unwrap();
        bus.insert(a.clone(), 0x60, 5).unwrap();
        assert!(bus.insert(a.clone(), 0x3fc, 8).is_err());
        assert!(bus.insert(a.clone(), 0x3f0, 9).is_err());
        assert!(bus.insert(a.clone(), u64::MAX, 2).is_err());
        let mut d = [0u8; 1];
        assert!(bus.read(0x3f9, &mut d));
        assert_eq!(d, [1]);
        assert!(bus.write(0x64, &[0xfe]));
        assert_eq!(a.lock().unwrap().0, vec![(4, vec![0xfe])]);
        assert!(!bus.read(0x65, &mut d));
        assert!(!bus.read(0x10, &mut d));
        let mut w = [0u8; 4];
        assert!(!bus.read(0x3fe, &mut w), "access straddling the end");
        assert!(!bus.write(u64::MAX, &[0; 8]));
    }
}
