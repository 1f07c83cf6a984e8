//! A virtio-balloon device used for free page reporting (virtio 1.2, 5.5).
//!
//! Guest RAM is anonymous memory mapped lazily: a page costs host memory once the guest
//! touches it, and would stay resident after the guest frees it. With
//! `VIRTIO_BALLOON_F_REPORTING` the guest kernel reports free page blocks on the
//! reporting queue; the device drops them from the host mapping (`MADV_DONTNEED`), so an
//! idle guest gives back what booting touched (the initramfs, init memory, freed page
//! cache). A reported page reads as zeros the next time the guest uses it, which the
//! specification allows (no `VIRTIO_BALLOON_F_PAGE_POISON`).
//!
//! The balloon itself never asks for pages (`num_pages` stays 0); pages a guest puts on
//! the inflate queue anyway are dropped too, and deflating needs nothing from the host.

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::devices::virtio::{DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};

/// Virtio device id of a memory balloon.
const VIRTIO_ID_BALLOON: u32 = 5;
/// Feature: the reporting queue exists and free pages are reported on it.
const VIRTIO_BALLOON_F_REPORTING: u64 = 1 << 5;
/// The inflate, deflate and (with no stats or hinting queue before it) reporting queues.
pub(crate) const INFLATE: usize = 0;
#[cfg(test)]
pub(crate) const DEFLATE: usize = 1;
pub(crate) const REPORTING: usize = 2;
/// Linux reports at most 32 ranges per request (`PAGE_REPORTING_CAPACITY`).
const QUEUE_SIZES: [u16; 3] = [64, 64, 32];
/// Balloon page frames are 4 KiB, whatever the guest's page size.
const PFN_SHIFT: u32 = 12;
const PAGE: usize = 4096;
/// `struct virtio_balloon_config` up to `actual`.
const CONFIG_LEN: usize = 8;

/// Why the device stopped: the guest broke the virtio contract.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BalloonError {
    #[error("virtio-balloon queue: {0}")]
    Queue(#[from] virtio_queue::Error),
    #[error("virtio-balloon: range {addr:#x}+{len:#x} is not in guest memory")]
    OutOfMemory { addr: u64, len: u64 },
    #[error("virtio-balloon: madvise(MADV_DONTNEED) of guest memory: {0}")]
    Discard(std::io::Error),
}

/// The balloon. Holds no host resource besides the guest memory it discards from.
pub(crate) struct Balloon {
    /// `actual` as last written by the driver (pages it holds; always 0 from us).
    actual: u32,
    /// Bytes of guest memory handed back to the host so far.
    discarded: u64,
}

impl Balloon {
    pub(crate) fn new() -> Balloon {
        Balloon {
            actual: 0,
            discarded: 0,
        }
    }

    /// Bytes of guest memory given back to the host so far.
    #[cfg(test)]
    pub(crate) fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Serves one chain of queue `index`; `Ok(false)` when none is available.
    fn serve(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, BalloonError> {
        let chain = queue.iter(mem)?.next();
        let Some(chain) = chain else {
            return Ok(false);
        };
        let head = chain.head_index();
        let mut result = Ok(());
        // The chain iterator stops at a loop or after a ring's worth of descriptors.
        for desc in chain {
            let (addr, len) = (desc.addr(), u64::from(desc.len()));
            result = match index {
                REPORTING => self.discard(mem, addr, len),
                INFLATE => self.inflate(mem, addr, len),
                // DEFLATE: the guest takes pages back by touching them.
                _ => Ok(()),
            };
            if result.is_err() {
                break;
            }
        }
        // Give the buffer back even on error, so the driver is not left waiting on it.
        queue.add_used(mem, head, 0)?;
        result.map(|()| true)
    }

    /// An inflate buffer: an array of 4 KiB page frame numbers the guest gave up.
    fn inflate(
        &mut self,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: u64,
    ) -> Result<(), BalloonError> {
        for i in 0..len / 4 {
            let at = addr
                .checked_add(i * 4)
                .ok_or(BalloonError::OutOfMemory { addr: addr.0, len })?;
            let pfn: u32 = mem
                .read_obj(at)
                .map_err(|_| BalloonError::OutOfMemory { addr: at.0, len: 4 })?;
            self.discard(mem, GuestAddress(u64::from(pfn) << PFN_SHIFT), PAGE as u64)?;
        }
        Ok(())
    }

    /// Drops the whole host pages inside guest range `addr..addr+len` from the mapping.
    fn discard(
        &mut self,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: u64,
    ) -> Result<(), BalloonError> {
        let bad = || BalloonError::OutOfMemory { addr: addr.0, len };
        let count = usize::try_from(len).map_err(|_| bad())?;
        if count == 0 {
            return Ok(());
        }
        // One region holds the whole range, or the guest lied.
        let slice = mem.get_slice(addr, count).map_err(|_| bad())?;
        let guard = slice.ptr_guard_mut();
        let ptr = guard.as_ptr() as usize;
        let start = ptr.next_multiple_of(PAGE);
        let end = (ptr + count) & !(PAGE - 1);
        if end <= start {
            return Ok(());
        }
        // SAFETY: [start, end) lies inside a guest memory region that this process
        // mapped (get_slice checked the bounds); dropping the pages only makes the next
        // guest access see zeros, which the reporting and inflate contracts allow.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(BalloonError::Discard(std::io::Error::last_os_error()));
        }
        self.discarded += (end - start) as u64;
        Ok(())
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_REPORTING
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; CONFIG_LEN];
        // num_pages (0: the host never asks for memory back), then actual.
        config[4..8].copy_from_slice(&self.actual.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (offset 4, 4 bytes) is the driver's to write.
        if offset == 4 && data.len() == 4 {
            self.actual = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        }
    }

    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        let mut used = false;
        // Bounded by the ring: each iteration consumes one available entry.
        loop {
            match self.serve(index, queue, mem) {
                Ok(true) => used = true,
                Ok(false) => return Ok(used),
                Err(e) => return Err(Box::new(e)),
            }
        }
    }

    fn reset(&mut self) {
        self.actual = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;

    const W: u16 = VRING_DESC_F_WRITE as u16;
    const N: u16 = VRING_DESC_F_NEXT as u16;
    const MIB: u64 = 1 << 20;

    fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 * MIB as usize)]).unwrap()
    }

    /// Resident pages of `len` bytes at guest `addr` (mincore).
    fn resident(mem: &GuestMemoryMmap, addr: u64, len: usize) -> usize {
        let slice = mem.get_slice(GuestAddress(addr), len).unwrap();
        let guard = slice.ptr_guard_mut();
        let mut vec = vec![0u8; len.div_ceil(PAGE)];
        // SAFETY: a page-aligned range of our own mapping, and a vector of one byte per page.
        let rc = unsafe { libc::mincore(guard.as_ptr().cast(), len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    #[test]
    fn reported_free_pages_leave_the_host_and_read_as_zero() {
        let mem = memory();
        let mut b = Balloon::new();
        // The guest touched 2 MiB at 4 MiB, then reports it free in two ranges.
        mem.write_slice(&vec![0xabu8; 2 * MIB as usize], GuestAddress(4 * MIB))
            .unwrap();
        assert_eq!(resident(&mem, 4 * MIB, 2 * MIB as usize), 512);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 32);
        vq.add_desc_chains(
            &[
                raw(4 * MIB, MIB as u32, W | N, 1),
                raw(5 * MIB, MIB as u32, W, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(b.process_queue(REPORTING, &mut q, &mem).unwrap());
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(b.discarded(), 2 * MIB);
        assert_eq!(resident(&mem, 4 * MIB, 2 * MIB as usize), 0);
        let v: u64 = mem.read_obj(GuestAddress(5 * MIB + 8)).unwrap();
        assert_eq!(v, 0);
    }

    #[test]
    fn inflated_page_frames_are_dropped_and_deflate_needs_nothing() {
        let mem = memory();
        let mut b = Balloon::new();
        mem.write_slice(&[1u8; 3 * PAGE], GuestAddress(6 * MIB))
            .unwrap();
        // Frames 6 MiB / 4 KiB and the next, in an array at 0x8000.
        let pfn = ((6 * MIB) >> PFN_SHIFT) as u32;
        let mut arr = Vec::new();
        for p in [pfn, pfn + 1] {
            arr.extend_from_slice(&p.to_le_bytes());
        }
        mem.write_slice(&arr, GuestAddress(0x8000)).unwrap();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 64);
        vq.add_desc_chains(&[raw(0x8000, 8, 0, 0)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(b.process_queue(INFLATE, &mut q, &mem).unwrap());
        assert_eq!(resident(&mem, 6 * MIB, 3 * PAGE), 1, "the third page stays");
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1_0000), 64);
        vq.add_desc_chains(&[raw(0x8000, 8, 0, 0)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(b.process_queue(DEFLATE, &mut q, &mem).unwrap());
        assert_eq!(b.discarded(), 2 * PAGE as u64);
    }

    #[test]
    fn partial_pages_are_kept_and_config_holds_actual() {
        let mem = memory();
        let mut b = Balloon::new();
        mem.write_slice(&[7u8; 2 * PAGE], GuestAddress(3 * MIB))
            .unwrap();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 32);
        // Not one whole page inside: nothing may be dropped.
        vq.add_desc_chains(&[raw(3 * MIB + 1, PAGE as u32, W, 0)], 0)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(b.process_queue(REPORTING, &mut q, &mem).unwrap());
        assert_eq!(b.discarded(), 0);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(3 * MIB + 100)).unwrap(), 7);
        b.write_config(4, &9u32.to_le_bytes());
        let mut c = [0u8; 12];
        b.read_config(0, &mut c);
        assert_eq!(c, [0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        b.reset();
        b.read_config(4, &mut c[..4]);
        assert_eq!(&c[..4], &[0; 4]);
    }

    #[test]
    fn hostile_rings_fail_the_device_without_touching_other_memory() {
        let mem = memory();
        let mut b = Balloon::new();
        mem.write_slice(&[5u8; PAGE], GuestAddress(7 * MIB))
            .unwrap();
        // A range past the end of guest memory, one that straddles it, a length that
        // wraps the address space, and an inflate frame outside memory.
        for (index, d) in [
            (REPORTING, raw(16 * MIB, MIB as u32, W, 0)),
            (REPORTING, raw(7 * MIB, 2 * MIB as u32, W, 0)),
            (REPORTING, raw(u64::MAX - 0xfff, u32::MAX, W, 0)),
        ] {
            let vq = MockSplitQueue::create(&mem, GuestAddress(0), 32);
            vq.add_desc_chains(&[d], 0).unwrap();
            let mut q: Queue = vq.create_queue().unwrap();
            assert!(b.process_queue(index, &mut q, &mem).is_err());
            assert_eq!(vq.used().idx().load(), 1, "the buffer is given back");
        }
        mem.write_obj(u32::MAX, GuestAddress(0x8000)).unwrap();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 64);
        vq.add_desc_chains(&[raw(0x8000, 4, 0, 0)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(b.process_queue(INFLATE, &mut q, &mem).is_err());
        // A looping chain ends; the page it names is dropped, nothing else.
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 32);
        vq.add_desc_chains(&[raw(6 * MIB, PAGE as u32, W | N, 0)], 0)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let _ = b.process_queue(REPORTING, &mut q, &mem);
        let once = PAGE as u64;
        assert!(
            (once..=32 * once).contains(&b.discarded()),
            "{}",
            b.discarded()
        );
        assert_eq!(
            resident(&mem, 7 * MIB, PAGE),
            1,
            "untouched by the failures"
        );
        assert_eq!(mem.read_obj::<u8>(GuestAddress(7 * MIB)).unwrap(), 5);
    }
}
