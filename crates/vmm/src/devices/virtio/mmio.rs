//! virtio-mmio transport (version 2, virtio 1.x): the register window through which the
//! guest discovers a device, negotiates features and sets up queues. Queue notifications
//! normally arrive through an ioeventfd and are handled on the VM's I/O thread; a write
//! to `QueueNotify` that reaches the VMM (no ioeventfd) is handled inline.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{status, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::bus::BusDevice;
use crate::devices::IrqLine;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x5353_4556; // "VESS"

const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
/// Queue notification register; ioeventfds are registered at this offset.
pub(crate) const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_AVAIL_LOW: u64 = 0x090;
const REG_QUEUE_AVAIL_HIGH: u64 = 0x094;
const REG_QUEUE_USED_LOW: u64 = 0x0a0;
const REG_QUEUE_USED_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG_SPACE: u64 = 0x100;

/// Interrupt status bit: a used buffer was returned.
const INT_VRING: u32 = 1;
/// Interrupt status bit: configuration (or device status) changed.
const INT_CONFIG: u32 = 2;

#[derive(Debug, Clone, Copy)]
enum Ring {
    Desc,
    Avail,
    Used,
}

/// A virtio device behind its mmio register window.
pub(crate) struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: Arc<GuestMemoryMmap>,
    irq: IrqLine,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
    /// The driver wrote a queue size or ring address the queue refused; DRIVER_OK then
    /// fails instead of running with a layout the driver did not ask for.
    queue_config_error: Option<String>,
    name: String,
}

impl MmioTransport {
    /// Wraps `device`; `name` appears in logs.
    pub(crate) fn new(
        device: Box<dyn VirtioDevice>,
        mem: Arc<GuestMemoryMmap>,
        irq: IrqLine,
        name: String,
    ) -> Result<Self, virtio_queue::Error> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            irq,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
            queue_config_error: None,
            name,
        })
    }

    /// Number of queues (each gets an ioeventfd).
    pub(crate) fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// Current device status register.
    #[cfg(test)]
    pub(crate) fn device_status(&self) -> u32 {
        self.status
    }

    fn active(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && self.status & status::NEEDS_RESET == 0
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        // Queue layout may only change before the driver says DRIVER_OK.
        if self.status & status::DRIVER_OK != 0 {
            return None;
        }
        self.queues.get_mut(self.queue_select as usize)
    }

    fn raise(&mut self, bit: u32) {
        self.interrupt_status |= bit;
        if let Err(e) = self.irq.trigger() {
            tracing::error!(device = %self.name, "cannot raise interrupt: {e}");
        }
    }

    /// The driver broke the contract: stop serving until it resets the device.
    fn fail(&mut self, why: &str) {
        tracing::error!(device = %self.name, "device needs reset: {why}");
        self.status |= status::NEEDS_RESET;
        self.raise(INT_CONFIG);
    }

    /// Handles a notification for queue `index` (from the I/O thread or an MMIO write).
    pub(crate) fn notify(&mut self, index: usize) {
        if !self.active() {
            return;
        }
        let Some(queue) = self.queues.get_mut(index) else {
            tracing::debug!(device = %self.name, index, "notification for a queue that does not exist");
            return;
        };
        match self.device.process_queue(index, queue, &self.mem) {
            Ok(true) => {
                if wants_interrupt(queue, &self.mem) {
                    self.raise(INT_VRING);
                }
            }
            Ok(false) => {}
            Err(e) => self.fail(&e.to_string()),
        }
    }

    /// Handles readiness of the device's backend fd (from the I/O thread).
    pub(crate) fn backend_event(&mut self) {
        if !self.active() {
            return;
        }
        match self.device.process_backend(&mut self.queues, &self.mem) {
            Ok(true) => {
                let mem = &self.mem;
                // Every queue is asked (each keeps its own suppression state).
                let wanted = self
                    .queues
                    .iter_mut()
                    .fold(false, |any, q| wants_interrupt(q, mem) | any);
                if wanted {
                    self.raise(INT_VRING);
                }
            }
            Ok(false) => {}
            Err(e) => self.fail(&e.to_string()),
        }
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt_status = 0;
        self.queue_config_error = None;
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value & !status::NEEDS_RESET;
        let newly = |value: u32, bit: u32, old: u32| value & bit != 0 && old & bit == 0;
        let old = self.status;
        if newly(value, status::FEATURES_OK, old) {
            let offered = self.device.features();
            let unknown = self.driver_features & !offered;
            if unknown != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                tracing::warn!(
                    device = %self.name,
                    driver = format_args!("{:#x}", self.driver_features),
                    offered = format_args!("{offered:#x}"),
                    "refusing driver features"
                );
                value &= !status::FEATURES_OK;
            }
        }
        self.status = value | (old & status::NEEDS_RESET);
        if newly(value, status::DRIVER_OK, old) {
            if value & status::FEATURES_OK == 0 {
                self.fail("driver set DRIVER_OK without FEATURES_OK");
                return;
            }
            if let Some(why) = self.queue_config_error.take() {
                self.fail(&why);
                return;
            }
            let mem = Arc::clone(&self.mem);
            for (i, q) in self.queues.iter().enumerate() {
                if q.ready() && !q.is_valid(&*mem) {
                    self.fail(&format!(
                        "queue {i} is invalid (size {}, rings at {:#x}/{:#x}/{:#x} misaligned or outside guest memory)",
                        q.size(),
                        q.desc_table(),
                        q.avail_ring(),
                        q.used_ring()
                    ));
                    return;
                }
            }
            self.device.activate(self.driver_features);
            // Host data may have arrived (and its edge been ignored) before DRIVER_OK.
            self.backend_event();
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_select as usize);
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt_status,
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => {
                tracing::debug!(device = %self.name, offset, "read of unknown virtio-mmio register");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_select = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_select = v,
            REG_DRIVER_FEATURES => {
                if self.status & status::FEATURES_OK != 0 {
                    return; // frozen once accepted
                }
                match self.driver_features_select {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    _ => {}
                }
            }
            REG_QUEUE_SEL => self.queue_select = v,
            REG_QUEUE_NUM => {
                if let Some(q) = self.selected_queue() {
                    let size = u16::try_from(v).unwrap_or(0);
                    if q.try_set_size(size).is_err() {
                        self.queue_config_error = Some(format!("invalid queue size {v}"));
                    }
                }
            }
            REG_QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            REG_QUEUE_NOTIFY => self.notify(v as usize),
            REG_INTERRUPT_ACK => self.interrupt_status &= !v,
            REG_STATUS => self.set_status(v),
            REG_QUEUE_DESC_LOW | REG_QUEUE_DESC_HIGH => self.set_ring(Ring::Desc, offset, v),
            REG_QUEUE_AVAIL_LOW | REG_QUEUE_AVAIL_HIGH => self.set_ring(Ring::Avail, offset, v),
            REG_QUEUE_USED_LOW | REG_QUEUE_USED_HIGH => self.set_ring(Ring::Used, offset, v),
            _ => {
                tracing::debug!(device = %self.name, offset, v, "write to unknown virtio-mmio register")
            }
        }
    }

    /// Sets one half of a ring address. Rings are checked for alignment on every write,
    /// so a refused value is remembered and fails DRIVER_OK.
    fn set_ring(&mut self, ring: Ring, offset: u64, v: u32) {
        let high = offset % 8 == 4;
        let Some(q) = self.selected_queue() else {
            return;
        };
        let old = match ring {
            Ring::Desc => q.desc_table(),
            Ring::Avail => q.avail_ring(),
            Ring::Used => q.used_ring(),
        };
        let new = if high {
            (old & 0xffff_ffff) | (u64::from(v) << 32)
        } else {
            (old & !0xffff_ffff) | u64::from(v)
        };
        let result = match ring {
            Ring::Desc => q.try_set_desc_table_address(GuestAddress(new)),
            Ring::Avail => q.try_set_avail_ring_address(GuestAddress(new)),
            Ring::Used => q.try_set_used_ring_address(GuestAddress(new)),
        };
        if let Err(e) = result {
            self.queue_config_error = Some(format!("{ring:?} ring address {new:#x}: {e}"));
        }
    }
}

/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver's "do not interrupt me" flag (virtio 1.2,
/// 2.7.7), in the first 16 bits of the available ring.
const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Whether the driver wants an interrupt for buffers just used on `queue`: not while it
/// set `VRING_AVAIL_F_NO_INTERRUPT` (e.g. a network driver polling its rings in NAPI),
/// which spares the guest an interrupt, and its two register exits, per frame.
/// virtio-queue's `needs_notification` answers for `EVENT_IDX` only (not offered yet) and
/// says yes to everything else, so the flag is read here. A ring we cannot read gets the
/// interrupt.
fn wants_interrupt(queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    use vm_memory::Bytes;
    if !queue.needs_notification(mem).unwrap_or(true) {
        return false;
    }
    // The used ring's index (written by add_used) before the driver's flag is read.
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    match mem.load::<u16>(
        GuestAddress(queue.avail_ring()),
        std::sync::atomic::Ordering::Acquire,
    ) {
        Ok(flags) => u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT == 0,
        Err(_) => true,
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            self.device.read_config(offset - CONFIG_SPACE, data);
            return;
        }
        match <&mut [u8; 4]>::try_from(&mut *data) {
            Ok(word) if offset % 4 == 0 => *word = self.read_reg(offset).to_le_bytes(),
            _ => {
                tracing::debug!(device = %self.name, offset, len = data.len(), "bad virtio-mmio register read width");
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            self.device.write_config(offset - CONFIG_SPACE, data);
            return;
        }
        match <[u8; 4]>::try_from(data) {
            Ok(word) if offset % 4 == 0 => self.write_reg(offset, u32::from_le_bytes(word)),
            _ => {
                tracing::debug!(device = %self.name, offset, len = data.len(), "bad virtio-mmio register write width")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiskConfig;
    use crate::devices::virtio::block::Block;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    struct Rig {
        t: MmioTransport,
        irq: EventFd,
        mem: Arc<GuestMemoryMmap>,
        _disk: tempfile::NamedTempFile,
    }

    fn rig(read_only: bool) -> Rig {
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        let disk = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(disk.path(), vec![0x11u8; 8192]).unwrap();
        let blk = Block::new(
            &DiskConfig {
                path: disk.path().into(),
                read_only,
            },
            0,
            &crate::files::OpenFiles::host(),
        )
        .unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let t = MmioTransport::new(
            Box::new(blk),
            mem.clone(),
            IrqLine::new(irq.try_clone().unwrap()),
            "vda".into(),
        )
        .unwrap();
        Rig {
            t,
            irq,
            mem,
            _disk: disk,
        }
    }

    impl Rig {
        fn r(&mut self, off: u64) -> u32 {
            let mut d = [0u8; 4];
            self.t.read(off, &mut d);
            u32::from_le_bytes(d)
        }
        fn w(&mut self, off: u64, v: u32) {
            self.t.write(off, &v.to_le_bytes());
        }
        /// The Linux driver's sequence, with queue 0 laid out by a mock at `base`.
        fn bring_up(&mut self, base: u64, size: u32, features_hi: u32) {
            let avail = base + 16 * u64::from(size);
            let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
            self.bring_up_at(base, avail, used, size, features_hi);
        }
        fn bring_up_at(&mut self, desc: u64, avail: u64, used: u64, size: u32, features_hi: u32) {
            self.w(REG_STATUS, 0);
            self.w(REG_STATUS, status::ACKNOWLEDGE);
            self.w(REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
            self.w(REG_DRIVER_FEATURES_SEL, 1);
            self.w(REG_DRIVER_FEATURES, features_hi);
            self.w(REG_DRIVER_FEATURES_SEL, 0);
            self.w(REG_DRIVER_FEATURES, 0);
            self.w(
                REG_STATUS,
                status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
            );
            self.w(REG_QUEUE_SEL, 0);
            self.w(REG_QUEUE_NUM, size);
            self.w(REG_QUEUE_DESC_LOW, desc as u32);
            self.w(REG_QUEUE_DESC_HIGH, 0);
            self.w(REG_QUEUE_AVAIL_LOW, avail as u32);
            self.w(REG_QUEUE_USED_LOW, used as u32);
            self.w(REG_QUEUE_READY, 1);
            self.w(
                REG_STATUS,
                status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
            );
        }
    }

    #[test]
    fn identifies_as_a_v2_block_device() {
        let mut r = rig(true);
        assert_eq!(r.r(REG_MAGIC), MAGIC_VALUE);
        assert_eq!(r.r(REG_VERSION), 2);
        assert_eq!(r.r(REG_DEVICE_ID), 2);
        r.w(REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(r.r(REG_DEVICE_FEATURES), 1, "VERSION_1");
        r.w(REG_DEVICE_FEATURES_SEL, 0);
        assert_ne!(r.r(REG_DEVICE_FEATURES) & (1 << 5), 0, "RO");
        assert_eq!(r.r(REG_QUEUE_NUM_MAX), 256);
        r.w(REG_QUEUE_SEL, 7);
        assert_eq!(r.r(REG_QUEUE_NUM_MAX), 0, "no such queue");
        assert_eq!(r.r(CONFIG_SPACE), 16, "capacity in sectors");
    }

    #[test]
    fn full_bring_up_and_a_request_raises_the_interrupt() {
        let mut r = rig(false);
        let mem = r.mem.clone();
        let vq = MockSplitQueue::create(&*mem, GuestAddress(0x8000), 16);
        r.bring_up_at(
            vq.desc_table_addr().0,
            vq.avail_addr().0,
            vq.used_addr().0,
            16,
            1,
        );
        assert_eq!(r.t.device_status() & status::NEEDS_RESET, 0);
        assert_ne!(r.t.device_status() & status::DRIVER_OK, 0);
        let mut h = [0u8; 16];
        h[8] = 1; // IN, sector 1
        mem.write_slice(&h, GuestAddress(0x1_0000)).unwrap();
        // The read request (header, data, status) as descriptors `first`..`first + 2`.
        let read_request = |first: u16| {
            let flags = VRING_DESC_F_NEXT as u16;
            let write = VRING_DESC_F_WRITE as u16;
            vq.add_desc_chains(
                &[
                    RawDescriptor::from(Descriptor::new(0x1_0000, 16, flags, first + 1)),
                    RawDescriptor::from(Descriptor::new(0x2_0000, 512, flags | write, first + 2)),
                    RawDescriptor::from(Descriptor::new(0x3_0000, 1, write, 0)),
                ],
                first,
            )
            .unwrap();
        };
        read_request(0);
        r.w(REG_QUEUE_NOTIFY, 0);
        assert_eq!(r.irq.read().unwrap(), 1);
        assert_eq!(r.r(REG_INTERRUPT_STATUS), INT_VRING);
        r.w(REG_INTERRUPT_ACK, INT_VRING);
        assert_eq!(r.r(REG_INTERRUPT_STATUS), 0);
        assert_eq!(vq.used().idx().load(), 1);
        // A driver that asks for no interrupts (VRING_AVAIL_F_NO_INTERRUPT) gets its
        // buffers used without one.
        mem.write_obj(u16::to_le(VRING_AVAIL_F_NO_INTERRUPT), vq.avail_addr())
            .unwrap();
        read_request(3);
        r.w(REG_QUEUE_NOTIFY, 0);
        assert_eq!(vq.used().idx().load(), 2);
        assert!(r.irq.read().is_err(), "no interrupt while the driver polls");
        assert_eq!(r.r(REG_INTERRUPT_STATUS), 0);
        // Queue layout is frozen after DRIVER_OK.
        r.w(REG_QUEUE_NUM, 4);
        assert_eq!(r.t.queues[0].size(), 16);
        // Reset clears everything.
        r.w(REG_STATUS, 0);
        assert_eq!(r.r(REG_STATUS), 0);
        assert!(!r.t.queues[0].ready());
    }

    #[test]
    fn rejects_features_it_did_not_offer_or_legacy_drivers() {
        let mut r = rig(true);
        r.w(REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        r.w(REG_DRIVER_FEATURES_SEL, 0);
        r.w(REG_DRIVER_FEATURES, 1 << 9); // FLUSH, not offered for a read-only disk
        r.w(REG_DRIVER_FEATURES_SEL, 1);
        r.w(REG_DRIVER_FEATURES, 1);
        r.w(
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r.r(REG_STATUS) & status::FEATURES_OK, 0);
        let mut r = rig(true);
        r.bring_up(0x8000, 16, 0); // no VERSION_1
        assert_ne!(r.r(REG_STATUS) & status::NEEDS_RESET, 0);
    }

    #[test]
    fn hostile_queue_setup_needs_reset_instead_of_crashing() {
        // Rings outside guest memory.
        let mut r = rig(false);
        r.bring_up(0xfff0_0000, 16, 1);
        assert_ne!(r.r(REG_STATUS) & status::NEEDS_RESET, 0);
        assert_eq!(r.irq.read().unwrap(), 1, "config interrupt");
        assert_ne!(r.r(REG_INTERRUPT_STATUS) & INT_CONFIG, 0);
        r.w(REG_QUEUE_NOTIFY, 0); // ignored while broken
                                  // Misaligned descriptor table.
        let mut r = rig(false);
        r.bring_up(0x8001, 16, 1);
        assert_ne!(r.r(REG_STATUS) & status::NEEDS_RESET, 0);
        // Size not a power of two is refused; garbage chain after bring-up fails the device.
        let mut r = rig(false);
        r.w(REG_QUEUE_NUM, 3);
        assert_eq!(r.t.queues[0].size(), 256);
        let mem = r.mem.clone();
        let vq = MockSplitQueue::create(&*mem, GuestAddress(0x8000), 16);
        r.w(REG_STATUS, 0);
        r.bring_up_at(
            vq.desc_table_addr().0,
            vq.avail_addr().0,
            vq.used_addr().0,
            16,
            1,
        );
        assert_eq!(r.r(REG_STATUS) & status::NEEDS_RESET, 0);
        vq.add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(
                0x1_0000,
                16,
                VRING_DESC_F_NEXT as u16,
                0,
            ))],
            0,
        )
        .unwrap();
        r.w(REG_QUEUE_NOTIFY, 0);
        assert_ne!(r.r(REG_STATUS) & status::NEEDS_RESET, 0);
        // Odd widths and offsets.
        let mut b = [0u8; 2];
        r.t.read(REG_MAGIC, &mut b);
        assert_eq!(b, [0, 0]);
        r.t.write(REG_STATUS + 1, &[0, 0, 0, 0]);
        r.t.write(0xfff, &[1]);
        // Recovery: the driver resets and brings the device up again.
        r.w(REG_STATUS, 0);
        assert_eq!(r.r(REG_STATUS), 0);
    }
}
