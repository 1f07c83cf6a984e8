//! The virtio-console device model: receiveq (0) carries host bytes into the guest,
//! transmitq (1) carries guest bytes out. The host end is a non-blocking stream; bytes
//! the host cannot take yet wait in a bounded buffer, and the transmit queue is left alone
//! until it drains, so a slow host slows the guest instead of growing VMM memory.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap};

use super::ConsoleError;
use crate::devices::virtio::{DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};

const VIRTIO_ID_CONSOLE: u32 = 3;
const RX: usize = 0;
const TX: usize = 1;
const QUEUE_SIZE: u16 = 256;
/// Most host-bound bytes held while the host end is not reading.
const TX_LIMIT: usize = 256 * 1024;
/// Largest read from the host end at a time.
const RX_CHUNK: usize = 64 * 1024;

/// virtio-console with one port.
pub(crate) struct Console {
    backend: File,
    /// Guest bytes the host end has not accepted yet.
    tx_pending: Vec<u8>,
    /// Host bytes read but not yet given to the guest (no receive buffers).
    rx_pending: Vec<u8>,
    rx_closed: bool,
    tx_closed: bool,
    queue_sizes: [u16; 2],
}

impl Console {
    /// Bridges the guest's port to `backend` (made non-blocking).
    pub(crate) fn new(backend: OwnedFd) -> Result<Console, ConsoleError> {
        rustix_nonblock(backend.as_fd().as_raw_fd()).map_err(ConsoleError::Backend)?;
        Ok(Console {
            backend: File::from(backend),
            tx_pending: Vec::new(),
            rx_pending: Vec::new(),
            rx_closed: false,
            tx_closed: false,
            queue_sizes: [QUEUE_SIZE, QUEUE_SIZE],
        })
    }

    /// The host end, for the I/O thread's epoll.
    pub(crate) fn backend_fd(&self) -> RawFd {
        self.backend.as_raw_fd()
    }

    /// Moves host bytes into guest receive buffers while both exist.
    fn fill_rx(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, ConsoleError> {
        let mut used = false;
        loop {
            if self.rx_pending.is_empty() {
                if self.rx_closed {
                    return Ok(used);
                }
                let mut buf = vec![0u8; RX_CHUNK];
                match self.backend.read(&mut buf) {
                    Ok(0) => {
                        self.rx_closed = true;
                        return Ok(used);
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        self.rx_pending = buf;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(used),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("virtio-console: host end read failed, closing: {e}");
                        self.rx_closed = true;
                        return Ok(used);
                    }
                }
            }
            let chain = {
                let mut iter = q.iter(mem).map_err(ConsoleError::Queue)?;
                iter.next()
            };
            let Some(chain) = chain else {
                return Ok(used);
            };
            let head = chain.head_index();
            let descs = match checked_chain(chain, mem, true) {
                Ok(d) => d,
                Err(reason) => {
                    let _ = q.add_used(mem, head, 0);
                    return Err(ConsoleError::Chain { head, reason });
                }
            };
            let mut written = 0usize;
            for d in descs {
                let n = (d.len() as usize).min(self.rx_pending.len() - written);
                if n == 0 {
                    break;
                }
                mem.write_slice(&self.rx_pending[written..written + n], d.addr())
                    .map_err(|e| ConsoleError::Chain {
                        head,
                        reason: e.to_string(),
                    })?;
                written += n;
            }
            self.rx_pending.drain(..written);
            q.add_used(mem, head, written as u32)
                .map_err(ConsoleError::Queue)?;
            used = true;
        }
    }

    /// Writes what the host end accepts; drops everything if it is gone.
    fn flush_tx(&mut self) {
        while !self.tx_pending.is_empty() && !self.tx_closed {
            match self.backend.write(&self.tx_pending) {
                Ok(0) => self.tx_closed = true,
                Ok(n) => {
                    self.tx_pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("virtio-console: host end write failed, dropping output: {e}");
                    self.tx_closed = true;
                }
            }
        }
        if self.tx_closed {
            self.tx_pending.clear();
        }
    }

    /// Takes guest output while the pending buffer has room.
    fn drain_tx(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, ConsoleError> {
        let mut used = false;
        self.flush_tx();
        while self.tx_pending.len() < TX_LIMIT {
            let chain = {
                let mut iter = q.iter(mem).map_err(ConsoleError::Queue)?;
                iter.next()
            };
            let Some(chain) = chain else {
                break;
            };
            let head = chain.head_index();
            let descs = match checked_chain(chain, mem, false) {
                Ok(d) => d,
                Err(reason) => {
                    let _ = q.add_used(mem, head, 0);
                    return Err(ConsoleError::Chain { head, reason });
                }
            };
            for d in descs {
                let start = self.tx_pending.len();
                self.tx_pending.resize(start + d.len() as usize, 0);
                mem.read_slice(&mut self.tx_pending[start..], d.addr())
                    .map_err(|e| ConsoleError::Chain {
                        head,
                        reason: e.to_string(),
                    })?;
            }
            q.add_used(mem, head, 0).map_err(ConsoleError::Queue)?;
            used = true;
            self.flush_tx();
        }
        Ok(used)
    }
}

fn rustix_nonblock(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Collects a chain whose every buffer has direction `writable` and lies in guest memory.
/// Total size is bounded by the chain length (the queue size) times `u32::MAX`... and by
/// `TX_LIMIT` checks at the caller for output; each buffer is checked against memory.
fn checked_chain<M>(
    chain: virtio_queue::DescriptorChain<M>,
    mem: &GuestMemoryMmap,
    writable: bool,
) -> Result<Vec<Descriptor>, String>
where
    M: std::ops::Deref,
    M::Target: vm_memory::GuestMemory,
{
    let descs: Vec<Descriptor> = chain.collect();
    let Some(last) = descs.last() else {
        return Err("empty or unreadable descriptor chain".into());
    };
    if last.has_next() {
        return Err(format!(
            "descriptor chain broken after {} descriptors (loop or bad index)",
            descs.len()
        ));
    }
    let mut total = 0u64;
    for d in &descs {
        if d.is_write_only() != writable {
            return Err(format!(
                "buffer at {:#x} is {} but this queue needs {}",
                d.addr().0,
                if d.is_write_only() {
                    "device-writable"
                } else {
                    "read-only"
                },
                if writable {
                    "device-writable"
                } else {
                    "read-only"
                }
            ));
        }
        if d.len() > 0 && !GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize) {
            return Err(format!(
                "buffer {:#x}+{:#x} is not inside guest memory",
                d.addr().0,
                d.len()
            ));
        }
        total += u64::from(d.len());
    }
    if !writable && total > TX_LIMIT as u64 {
        return Err(format!("output buffer of {total} bytes exceeds {TX_LIMIT}"));
    }
    Ok(descs)
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // No SIZE, MULTIPORT or EMERG_WRITE: the config space is unused.
        data.fill(0);
    }

    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        let r = match index {
            RX => self.fill_rx(queue, mem),
            TX => self.drain_tx(queue, mem),
            _ => Ok(false),
        };
        r.map_err(|e| Box::new(e) as DeviceError)
    }

    fn process_backend(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        let [rx, tx] = queues else {
            return Ok(false);
        };
        let a = self.fill_rx(rx, mem).map_err(Box::new)?;
        let b = self.drain_tx(tx, mem).map_err(Box::new)?;
        Ok(a || b)
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.backend_fd())
    }

    fn reset(&mut self) {
        self.rx_pending.clear();
        self.tx_pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    const W: u16 = VRING_DESC_F_WRITE as u16;
    const N: u16 = VRING_DESC_F_NEXT as u16;

    fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    fn setup() -> (GuestMemoryMmap, UnixStream, Console) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (host, vmm) = UnixStream::pair().unwrap();
        (mem, host, Console::new(OwnedFd::from(vmm)).unwrap())
    }

    #[test]
    fn guest_output_reaches_the_host_end() {
        let (mem, mut host, mut con) = setup();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        mem.write_slice(b"hello ", GuestAddress(0x1_0000)).unwrap();
        mem.write_slice(b"host\n", GuestAddress(0x2_0000)).unwrap();
        vq.add_desc_chains(&[raw(0x1_0000, 6, N, 1), raw(0x2_0000, 5, 0, 0)], 0)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(con.process_queue(TX, &mut q, &mem).unwrap());
        let mut got = [0u8; 11];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello host\n");
    }

    #[test]
    fn host_input_fills_guest_buffers_and_waits_for_more_buffers() {
        let (mem, mut host, mut con) = setup();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        let mut q: Queue = vq.create_queue().unwrap();
        host.write_all(b"ping\n").unwrap();
        // No receive buffers yet: nothing used, the bytes wait.
        assert!(!con.process_queue(RX, &mut q, &mem).unwrap());
        vq.add_desc_chains(&[raw(0x3_0000, 3, W, 0), raw(0x4_0000, 64, W, 0)], 0)
            .unwrap();
        assert!(con.process_queue(RX, &mut q, &mem).unwrap());
        let mut a = [0u8; 3];
        mem.read_slice(&mut a, GuestAddress(0x3_0000)).unwrap();
        let mut b = [0u8; 2];
        mem.read_slice(&mut b, GuestAddress(0x4_0000)).unwrap();
        assert_eq!((&a, &b), (b"pin", b"g\n"));
        assert_eq!(vq.used().idx().load(), 2);
        let used = vq.used().ring().ref_at(1).unwrap().load();
        assert_eq!(used.len(), 2);
    }

    #[test]
    fn hostile_chains_fail_the_device_without_panicking() {
        let (mem, _host, mut con) = setup();
        // Read-only buffer on the receive queue.
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.add_desc_chains(&[raw(0x3_0000, 8, 0, 0)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        // Needs pending host data to look at the queue at all.
        let (mut h2, v2) = UnixStream::pair().unwrap();
        let mut con2 = Console::new(OwnedFd::from(v2)).unwrap();
        h2.write_all(b"x").unwrap();
        assert!(con2.process_queue(RX, &mut q, &mem).is_err());
        // Output buffer outside memory, and a looping chain.
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.add_desc_chains(&[raw(0xffff_0000, 8, 0, 0)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(con.process_queue(TX, &mut q, &mem).is_err());
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.add_desc_chains(&[raw(0x1_0000, 8, N, 0)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(con.process_queue(TX, &mut q, &mem).is_err());
        // A huge output buffer is refused rather than buffered.
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.add_desc_chains(&[raw(0x1_0000, 0xf_0000, 0, 0)], 0)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(con.process_queue(TX, &mut q, &mem).is_err());
    }

    #[test]
    fn a_host_that_stops_reading_bounds_the_buffer_and_a_closed_host_is_survived() {
        let (mem, host, mut con) = setup();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 256);
        let chains: Vec<RawDescriptor> = (0..200u16)
            .map(|i| raw(0x1_0000 + u64::from(i) * 0x1000, 0x1000, 0, 0))
            .collect();
        vq.add_desc_chains(&chains, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        con.process_queue(TX, &mut q, &mem).unwrap();
        assert!(con.tx_pending.len() <= TX_LIMIT + 0x1000);
        drop(host);
        con.process_queue(TX, &mut q, &mem).unwrap();
        assert!(
            con.tx_pending.is_empty(),
            "output to a closed host is dropped"
        );
        let mut q2: Queue = MockSplitQueue::create(&mem, GuestAddress(0x80_000), 16)
            .create_queue()
            .unwrap();
        assert!(!con.process_queue(RX, &mut q2, &mem).unwrap());
    }
}
