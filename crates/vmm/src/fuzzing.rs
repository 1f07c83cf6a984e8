//! Entry points for `cargo fuzz` (feature `fuzzing`; see `fuzz/`): guest-controlled input
//! fed to the virtio-blk request parser, to the virtio-mmio transport and queue handling,
//! and to the virtio-net queues, against a small guest memory with no VM. Any panic, hang or access outside
//! the guest memory is a bug.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueOwnedT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::devices::virtio::block::request::{self, Disk, ID_LEN};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::device::{MAX_FRAME, VNET_HDR_LEN};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::VirtioDevice;
use crate::devices::IrqLine;

/// Guest memory of the fuzzed machine: 1 MiB at 0, and 64 KiB after a hole at 4 MiB, so
/// that descriptors can point into a gap.
const RAM: [(u64, usize); 2] = [(0, 1 << 20), (4 << 20, 64 << 10)];
/// The fuzzed disk: 64 sectors in an anonymous file.
const DISK_BYTES: usize = 64 * 512;

fn memory(contents: &[u8]) -> GuestMemoryMmap {
    let ranges: Vec<_> = RAM.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges).expect("fuzz guest memory");
    let n = contents.len().min(RAM[0].1);
    mem.write_slice(&contents[..n], GuestAddress(0))
        .expect("write fuzz guest memory");
    mem
}

fn disk_file() -> File {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is checked and then owned.
    let fd = unsafe { libc::memfd_create(c"vessel-fuzz-disk".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(&[0x5a; DISK_BYTES])
        .expect("fill the fuzz disk");
    f
}

/// Reads little-endian integers from the fuzzer's bytes, zero once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let n = self.0.len().min(N);
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

/// A descriptor chain built from `data` (up to 16 descriptors of arbitrary address,
/// length, flags and next index, placed in a split queue), parsed as a virtio-blk
/// request and, if it parses, executed against a 64-sector disk.
pub fn blk_request(data: &[u8]) {
    let mut input = Input(data);
    let count = usize::from(input.u8() % 16) + 1;
    let descs: Vec<RawDescriptor> = (0..count)
        .map(|_| {
            let addr = input.u64() % (8 << 20);
            let len = input.u32() % (2 << 20);
            let flags = input.u16() & 0x7;
            let next = input.u16() % 20;
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
        })
        .collect();
    let read_only = input.u8() & 1 == 1;
    let mem = memory(input.0);
    // The descriptors go into the table as given (next indices and flags included: loops
    // and out-of-table links are the point), with an avail entry per chain head.
    let vq = MockSplitQueue::new(&mem, 16);
    if vq.add_desc_chains(&descs, 0).is_err() {
        return;
    }
    let Ok(mut queue) = vq.create_queue::<virtio_queue::Queue>() else {
        return;
    };
    let Ok(iter) = queue.iter(&mem) else {
        return;
    };
    let file = disk_file();
    let id = [b'f'; ID_LEN];
    let disk = Disk {
        file: &file,
        size: DISK_BYTES as u64,
        read_only,
        id: &id,
    };
    for chain in iter {
        if let Ok(req) = request::parse(chain, &mem) {
            let mut buf = Vec::new();
            let _ = request::execute(&req, &disk, &mem, &mut buf);
        }
    }
}

/// A virtio-blk device behind its mmio transport, driven by `data` as a guest would: a
/// sequence of register reads and writes (any offset, any width up to 8, any value:
/// queue sizes, ring addresses, status, notifications) against a guest memory whose
/// contents (rings, descriptors, requests) also come from `data`.
pub fn mmio_queue(data: &[u8]) {
    let mut input = Input(data);
    let ops = usize::from(input.u8() % 64);
    let mut script = Vec::with_capacity(ops);
    for _ in 0..ops {
        let op = input.u8();
        let offset = u64::from(input.u16() % 0x140);
        let value = input.u64();
        script.push((op, offset, value));
    }
    let mem = Arc::new(memory(input.0));
    let block = Block::from_file(disk_file(), DISK_BYTES as u64, false, 0);
    let irq = IrqLine::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
    let Ok(mut t) = MmioTransport::new(Box::new(block), mem, irq, "fuzz".into()) else {
        return;
    };
    for (op, offset, value) in script {
        let width = [1usize, 2, 4, 8][usize::from(op >> 6)];
        match op & 0x3 {
            0 => {
                let mut d = vec![0u8; width];
                t.read(offset, &mut d);
            }
            1 | 2 => t.write(offset, &value.to_le_bytes()[..width]),
            _ => t.notify(value as usize % 4),
        }
    }
}

/// Descriptors from the fuzzer: arbitrary address, length, flags and next index.
fn descriptors(input: &mut Input<'_>, max: u8) -> Vec<RawDescriptor> {
    let count = usize::from(input.u8() % max) + 1;
    (0..count)
        .map(|_| {
            let addr = input.u64() % (8 << 20);
            let len = input.u32() % (2 << 20);
            let flags = input.u16() & 0x7;
            let next = input.u16() % 20;
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
        })
        .collect()
}

/// A virtio-net device whose receive and transmit queues hold chains built from `data`
/// (as in [`blk_request`]), fed frames of fuzzed sizes by the host end of its stand-in
/// tap (a datagram socketpair), then run in a fuzzed order: transmit, receive, backend
/// readiness, reset, activation with fuzzed features (offloads, mergeable buffers). Frames
/// the guest sends must respect the size bounds, and carry its header only when it
/// accepted checksum offload.
pub fn net_queues(data: &[u8]) {
    let mut input = Input(data);
    let rx_descs = descriptors(&mut input, 16);
    let tx_descs = descriptors(&mut input, 16);
    let frames: Vec<usize> = (0..input.u8() % 8)
        .map(|_| usize::from(input.u16()) % (MAX_FRAME + 64))
        .collect();
    let steps: Vec<u8> = (0..input.u8() % 16).map(|_| input.u8()).collect();
    // What a driver accepts when it activates the device: any of the offered bits that
    // fit 16 bits (the offloads and mergeable buffers are bits 0-15).
    let accepted = u64::from(input.u16());
    let mem = memory(input.0);
    let (host, vmm) = std::os::unix::net::UnixDatagram::pair().expect("socketpair");
    host.set_nonblocking(true).expect("non-blocking host end");
    let Ok(mut net) = Net::with_backend(vmm.into(), [2, 0, 0, 0, 0, 1], 65535) else {
        return;
    };
    for len in frames {
        // A full socket buffer just means fewer frames.
        let _ = host.send(&vec![0xa5; len]);
    }
    let rx = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let tx = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
    if rx.add_desc_chains(&rx_descs, 0).is_err() || tx.add_desc_chains(&tx_descs, 0).is_err() {
        return;
    }
    let (Ok(rxq), Ok(txq)) = (
        rx.create_queue::<virtio_queue::Queue>(),
        tx.create_queue::<virtio_queue::Queue>(),
    ) else {
        return;
    };
    let mut queues = [rxq, txq];
    // Whether the guest's own headers may have reached the tap (VIRTIO_NET_F_CSUM accepted).
    let mut headers_passed = false;
    for step in steps {
        let _ = match step % 5 {
            0 => net.process_queue(0, &mut queues[0], &mem),
            1 => net.process_queue(1, &mut queues[1], &mem),
            2 => net.process_backend(&mut queues, &mem),
            3 => {
                net.reset();
                Ok(false)
            }
            _ => {
                let acked =
                    net.features() & (accepted | crate::devices::virtio::VIRTIO_F_VERSION_1);
                headers_passed |= acked & 1 != 0;
                net.activate(acked);
                Ok(false)
            }
        };
    }
    let mut buf = vec![0u8; MAX_FRAME + 64];
    while let Ok(n) = host.recv(&mut buf) {
        assert!(
            n > VNET_HDR_LEN && n <= MAX_FRAME,
            "a {n}-byte frame reached the tap"
        );
        assert!(
            headers_passed || buf[..VNET_HDR_LEN].iter().all(|&b| b == 0),
            "guest header passed on without VIRTIO_NET_F_CSUM"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry points survive empty, short and patterned inputs (the fuzzer's start).
    #[test]
    fn entry_points_take_any_input() {
        for data in [
            &[][..],
            &[0xff; 3][..],
            &[0u8; 600][..],
            &(0..=255u8).cycle().take(4096).collect::<Vec<_>>()[..],
        ] {
            blk_request(data);
            mmio_queue(data);
            net_queues(data);
        }
    }
}
