//! The virtio-net device model: receiveq (0) carries frames from the tap into the guest,
//! transmitq (1) carries guest frames to the tap.
//!
//! The tap is opened with `IFF_VNET_HDR` and its header size set to the 12 bytes of a
//! virtio 1.x `virtio_net_hdr_v1`, so a frame has the same layout on both sides: header,
//! then Ethernet frame, one `read`/`write` each.
//!
//! Offloads: the device offers checksum offload and TCP segmentation both ways
//! (`VIRTIO_NET_F_CSUM`, `GUEST_CSUM`, `HOST_TSO4/6`, `GUEST_TSO4/6`) and mergeable
//! receive buffers (`MRG_RXBUF`). What the driver accepts is switched on in the tap
//! (`TUNSETOFFLOAD`: the host kernel then hands the guest 64 KiB TCP segments with partial
//! checksums), and the guest's own headers (checksum start/offset, GSO type and size) go to
//! the tap as they are, where the host kernel validates them (`virtio_net_hdr_to_skb`) and
//! refuses what is inconsistent. Without `CSUM` the device writes zeros over the guest's
//! header, so nothing it put there reaches the host kernel as a request. A received frame
//! spreads over as many of the guest's (page-sized) receive buffers as it needs, with
//! `num_buffers` saying how many; without `MRG_RXBUF` it must fit one buffer chain.
//!
//! Frames are copied through one bounded buffer per direction (checked guest-memory
//! accesses only, never a raw pointer into guest RAM). A frame that does not fit the
//! guest's receive buffers is dropped, as a NIC drops it; a frame read while the guest has
//! no receive buffer waits in the device (one frame), and the tap is not read again until
//! the driver adds buffers, so the host kernel's tap queue absorbs (and drops) the rest.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap};

use super::NetError;
use crate::devices::virtio::{DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};

const RX: usize = 0;
const TX: usize = 1;
const QUEUE_SIZE: u16 = 256;
/// `sizeof(struct virtio_net_hdr_v1)`: the header every frame carries with VERSION_1.
pub(crate) const VNET_HDR_LEN: usize = 12;
/// Largest frame either way, header included: a 64 KiB IP packet, an Ethernet header and
/// a VLAN tag, as Firecracker bounds it. Without offloads frames are MTU-sized; this only
/// bounds what a hostile guest or a misconfigured host can make us buffer.
pub(crate) const MAX_FRAME: usize = VNET_HDR_LEN + 65_550;

/// `TUNSETVNETHDRSZ` (`_IOW('T', 216, int)`), from `<linux/if_tun.h>`.
const TUNTAP: u32 = b'T' as u32;
vmm_sys_util::ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP, 216, ::std::os::raw::c_int);
// `TUNSETOFFLOAD` (`_IOW('T', 208, unsigned int)`): which offloaded frames the tap may
// hand us (and so the guest).
vmm_sys_util::ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, ::std::os::raw::c_uint);
/// `TUN_F_*` offload flags, from `<linux/if_tun.h>`.
const TUN_F_CSUM: u32 = 0x01;
const TUN_F_TSO4: u32 = 0x02;
const TUN_F_TSO6: u32 = 0x04;

/// Offloads the device offers, besides `VERSION_1`, `MAC` and `MTU`.
const OFFLOADS: u64 = (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_MRG_RXBUF);

/// The tap's offload flags for what the driver accepted: it only gets partial checksums
/// and segments it said it can take.
fn tun_offloads(acked: u64) -> u32 {
    let has = |bit: u32| acked & (1 << bit) != 0;
    let mut flags = 0;
    if has(VIRTIO_NET_F_GUEST_CSUM) {
        flags |= TUN_F_CSUM;
        // Segmentation needs checksum offload (the kernel refuses TSO without CSUM).
        if has(VIRTIO_NET_F_GUEST_TSO4) {
            flags |= TUN_F_TSO4;
        }
        if has(VIRTIO_NET_F_GUEST_TSO6) {
            flags |= TUN_F_TSO6;
        }
    }
    flags
}

/// Counters of what was dropped, for the log at teardown and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drops {
    /// Frames from the host larger than the guest's receive buffer.
    pub rx_too_big: u64,
    /// Frames from the guest outside the size bounds, or refused by the tap.
    pub tx: u64,
}

/// virtio-net backed by a tap descriptor.
pub(crate) struct Net {
    tap: File,
    /// `struct virtio_net_config` as far as we fill it: `mac[6]`, `status` (unused, 0),
    /// `max_virtqueue_pairs` (unused, 0), `mtu`, little-endian.
    config: [u8; 12],
    /// A frame read from the tap, waiting for a receive buffer (`rx_len` bytes of it).
    rx_frame: Box<[u8]>,
    rx_len: usize,
    tx_frame: Vec<u8>,
    drops: Drops,
    queue_sizes: [u16; 2],
    /// The backend is a tap (offloads are set with its ioctls); false for the test stand-in.
    is_tap: bool,
    /// The driver accepted `VIRTIO_NET_F_CSUM`: its headers reach the tap as they are.
    guest_headers: bool,
    /// The driver accepted `MRG_RXBUF`: a frame may take several receive buffers.
    mergeable: bool,
}

/// What became of a received frame.
enum Placed {
    /// It is in the guest's buffers.
    Used,
    /// Not enough buffers now: it waits, and so does the tap.
    Wait,
    /// It can never fit: dropped.
    Dropped,
}

impl Net {
    /// The device over `tap`, a tap queue descriptor opened with `IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR`; sets its vnet header size to 12 and makes it non-blocking. `mtu` is
    /// the link's (the tap's), offered to the driver with `VIRTIO_NET_F_MTU`.
    pub(crate) fn new(tap: OwnedFd, mac: [u8; 6], mtu: u16) -> Result<Net, NetError> {
        let size: std::os::raw::c_int = VNET_HDR_LEN as _;
        // SAFETY: TUNSETVNETHDRSZ reads one int through a pointer valid for the call, on
        // a descriptor we own; the result is checked.
        let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&tap, TUNSETVNETHDRSZ(), &size) };
        if ret < 0 {
            return Err(NetError::Tap(std::io::Error::last_os_error()));
        }
        let mut net = Net::with_backend(tap, mac, mtu)?;
        net.is_tap = true;
        net.set_tap_offloads(0);
        Ok(net)
    }

    /// Tells the tap which offloaded frames it may deliver. A failure only means frames
    /// come without offloads (the host kernel then checksums and segments them itself).
    fn set_tap_offloads(&self, flags: u32) {
        if !self.is_tap {
            return;
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value, on a descriptor we own; the
        // result is checked.
        let ret = unsafe {
            vmm_sys_util::ioctl::ioctl_with_val(&self.tap, TUNSETOFFLOAD(), u64::from(flags))
        };
        if ret < 0 {
            tracing::warn!(
                flags,
                "virtio-net: the tap refused offloads: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// The device over any datagram descriptor that behaves like a tap with 12-byte vnet
    /// headers (one frame per read and write): the tap itself, or a socketpair in tests.
    pub(crate) fn with_backend(backend: OwnedFd, mac: [u8; 6], mtu: u16) -> Result<Net, NetError> {
        set_nonblocking(backend.as_raw_fd()).map_err(NetError::Tap)?;
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&mac);
        config[10..].copy_from_slice(&mtu.to_le_bytes());
        Ok(Net {
            tap: File::from(backend),
            config,
            rx_frame: vec![0u8; MAX_FRAME].into_boxed_slice(),
            rx_len: 0,
            tx_frame: Vec::with_capacity(MAX_FRAME),
            drops: Drops::default(),
            queue_sizes: [QUEUE_SIZE, QUEUE_SIZE],
            is_tap: false,
            guest_headers: false,
            mergeable: false,
        })
    }

    /// What was dropped so far.
    #[cfg(test)]
    pub(crate) fn drops(&self) -> Drops {
        self.drops
    }

    /// Reads the next frame from the tap into `rx_frame`; false if there is none now.
    fn read_frame(&mut self) -> bool {
        loop {
            match self.tap.read(&mut self.rx_frame) {
                // A tap never reads empty; a closed stand-in backend does: nothing more.
                Ok(0) => return false,
                // A runt (shorter than the header) cannot be a frame: skip it.
                Ok(n) if n <= VNET_HDR_LEN => continue,
                Ok(n) => {
                    // `num_buffers`, which the tap leaves untouched: one, unless a
                    // mergeable frame takes more (set when it is placed).
                    self.rx_frame[10..12].copy_from_slice(&1u16.to_le_bytes());
                    self.rx_len = n;
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) => {
                    tracing::warn!("virtio-net: reading the tap failed: {e}");
                    return false;
                }
            }
        }
    }

    /// Moves tap frames into guest receive buffers while both exist.
    fn fill_rx(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, NetError> {
        let mut used = false;
        loop {
            if self.rx_len == 0 && !self.read_frame() {
                return Ok(used);
            }
            if self.mergeable {
                match self.place_merged(q, mem)? {
                    Placed::Used => used = true,
                    Placed::Wait => return Ok(used),
                    Placed::Dropped => {}
                }
                continue;
            }
            // No buffer: the frame waits, and so does the tap.
            let Some((head, descs)) = next_chain(q, mem, true)? else {
                return Ok(used);
            };
            let capacity: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
            if capacity < self.rx_len as u64 {
                // Too big for this buffer (and, the driver sizing them all alike, for any):
                // drop the frame, keep the buffer for the next one.
                q.go_to_previous_position();
                self.drops.rx_too_big += 1;
                tracing::debug!(
                    frame = self.rx_len,
                    capacity,
                    "virtio-net: frame larger than the guest's receive buffer dropped"
                );
                self.rx_len = 0;
                continue;
            }
            let mut written = 0usize;
            for d in &descs {
                let n = (d.len() as usize).min(self.rx_len - written);
                if n == 0 {
                    break;
                }
                mem.write_slice(&self.rx_frame[written..written + n], d.addr())
                    .map_err(|e| NetError::Chain {
                        head,
                        reason: e.to_string(),
                    })?;
                written += n;
            }
            q.add_used(mem, head, written as u32)
                .map_err(NetError::Queue)?;
            self.rx_len = 0;
            used = true;
        }
    }

    /// Puts the waiting frame into as many receive buffers as it needs (`MRG_RXBUF`), each
    /// returned with the bytes it got and the first one's header saying how many.
    fn place_merged(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<Placed, NetError> {
        let mut chains: Vec<(u16, Vec<Descriptor>)> = Vec::new();
        let mut capacity = 0u64;
        while capacity < self.rx_len as u64 {
            let Some((head, descs)) = next_chain(q, mem, true)? else {
                // Give back what was taken; wait for the driver, unless even a full ring
                // could not hold the frame.
                for _ in 0..chains.len() {
                    q.go_to_previous_position();
                }
                if chains.len() >= usize::from(q.size()) {
                    self.drops.rx_too_big += 1;
                    self.rx_len = 0;
                    return Ok(Placed::Dropped);
                }
                return Ok(Placed::Wait);
            };
            capacity += descs.iter().map(|d| u64::from(d.len())).sum::<u64>();
            chains.push((head, descs));
        }
        let count = u16::try_from(chains.len()).unwrap_or(u16::MAX);
        self.rx_frame[10..12].copy_from_slice(&count.to_le_bytes());
        let mut written = 0usize;
        for (head, descs) in &chains {
            let mut in_chain = 0usize;
            for d in descs {
                let n = (d.len() as usize).min(self.rx_len - written);
                if n == 0 {
                    break;
                }
                mem.write_slice(&self.rx_frame[written..written + n], d.addr())
                    .map_err(|e| NetError::Chain {
                        head: *head,
                        reason: e.to_string(),
                    })?;
                written += n;
                in_chain += n;
            }
            q.add_used(mem, *head, in_chain as u32)
                .map_err(NetError::Queue)?;
        }
        self.rx_len = 0;
        Ok(Placed::Used)
    }

    /// Sends every frame the guest queued. While it drains, the driver is told not to kick
    /// (`VRING_USED_F_NO_NOTIFY`): frames it queues meanwhile are taken in this same pass,
    /// each without a guest exit; the flag is cleared before returning, and the ring looked
    /// at once more so that no frame queued at that moment waits for a kick that never comes.
    fn drain_tx(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, NetError> {
        let mut used = false;
        loop {
            q.disable_notification(mem).map_err(NetError::Queue)?;
            used |= self.drain_tx_once(q, mem)?;
            if !q.enable_notification(mem).map_err(NetError::Queue)? {
                return Ok(used);
            }
        }
    }

    fn drain_tx_once(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, NetError> {
        let mut used = false;
        loop {
            let Some((head, descs)) = next_chain(q, mem, false)? else {
                return Ok(used);
            };
            let total: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
            if total <= VNET_HDR_LEN as u64 || total > MAX_FRAME as u64 {
                self.drops.tx += 1;
                tracing::debug!(total, "virtio-net: guest frame of impossible size dropped");
            } else {
                self.tx_frame.clear();
                self.tx_frame.resize(total as usize, 0);
                let mut at = 0usize;
                for d in &descs {
                    let end = at + d.len() as usize;
                    mem.read_slice(&mut self.tx_frame[at..end], d.addr())
                        .map_err(|e| NetError::Chain {
                            head,
                            reason: e.to_string(),
                        })?;
                    at = end;
                }
                if !self.guest_headers {
                    // No offload was negotiated: whatever the guest put in the header
                    // must not reach the host kernel as a checksum or segmentation request.
                    self.tx_frame[..VNET_HDR_LEN].fill(0);
                }
                self.send_frame();
            }
            q.add_used(mem, head, 0).map_err(NetError::Queue)?;
            used = true;
        }
    }

    /// Writes `tx_frame` to the tap; a frame the tap refuses is dropped, as a NIC would.
    fn send_frame(&mut self) {
        loop {
            match self.tap.write(&self.tx_frame) {
                Ok(_) => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.drops.tx += 1;
                    if e.kind() != ErrorKind::WouldBlock {
                        tracing::debug!("virtio-net: the tap refused a frame: {e}");
                    }
                    return;
                }
            }
        }
    }
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
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

/// Takes the next buffer chain the driver made available, if any, checked as
/// [`checked_chain`] checks it; a broken one is returned to the driver unused (length 0)
/// and is the device's error.
fn next_chain(
    q: &mut Queue,
    mem: &GuestMemoryMmap,
    writable: bool,
) -> Result<Option<(u16, Vec<Descriptor>)>, NetError> {
    let chain = {
        let mut iter = q.iter(mem).map_err(NetError::Queue)?;
        iter.next()
    };
    let Some(chain) = chain else {
        return Ok(None);
    };
    let head = chain.head_index();
    match checked_chain(chain, mem, writable) {
        Ok(descs) => Ok(Some((head, descs))),
        Err(reason) => {
            let _ = q.add_used(mem, head, 0);
            Err(NetError::Chain { head, reason })
        }
    }
}

/// Collects a chain whose every buffer has direction `writable` and lies inside guest
/// memory. The chain iterator stops after as many descriptors as the queue holds, so a
/// looping chain ends with a descriptor that still has NEXT set, and is refused here.
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
    let want = if writable {
        "device-writable"
    } else {
        "read-only"
    };
    for d in &descs {
        if d.is_write_only() != writable {
            return Err(format!(
                "buffer at {:#x} is not {want}, as this queue needs",
                d.addr().0
            ));
        }
        if d.len() > 0 && !GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize) {
            return Err(format!(
                "buffer {:#x}+{:#x} is not inside guest memory",
                d.addr().0,
                d.len()
            ));
        }
    }
    Ok(descs)
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        // With MTU above 1500 and no mergeable buffers, Linux posts receive buffers of
        // the MTU's size ("big packets"), so frames up to the MTU arrive whole.
        VIRTIO_F_VERSION_1 | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_MTU) | OFFLOADS
    }

    fn activate(&mut self, acked: u64) {
        self.guest_headers = acked & (1 << VIRTIO_NET_F_CSUM) != 0;
        self.mergeable = acked & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        self.set_tap_offloads(tun_offloads(acked));
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // No STATUS or MQ: their fields read as zero, as the spec allows.
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start >= self.config.len() {
            return;
        }
        let n = data.len().min(self.config.len() - start);
        data[..n].copy_from_slice(&self.config[start..start + n]);
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
        let Some(rx) = queues.get_mut(RX) else {
            return Ok(false);
        };
        self.fill_rx(rx, mem)
            .map_err(|e| Box::new(e) as DeviceError)
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.tap.as_raw_fd())
    }

    fn reset(&mut self) {
        if self.drops != Drops::default() {
            tracing::debug!(drops = ?self.drops, "virtio-net reset");
        }
        self.rx_len = 0;
        self.tx_frame.clear();
        self.guest_headers = false;
        self.mergeable = false;
        // Until the driver accepts offloads again, the tap must not deliver any.
        self.set_tap_offloads(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    const W: u16 = VRING_DESC_F_WRITE as u16;
    const N: u16 = VRING_DESC_F_NEXT as u16;
    const MAC: [u8; 6] = [0x02, 0x42, 10, 88, 0, 2];

    fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    /// 1 MiB of guest memory, the host end of a datagram "tap", and the device.
    fn setup() -> (GuestMemoryMmap, UnixDatagram, Net) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (host, vmm) = UnixDatagram::pair().unwrap();
        host.set_nonblocking(true).unwrap();
        (
            mem,
            host,
            Net::with_backend(OwnedFd::from(vmm), MAC, 9000).unwrap(),
        )
    }

    fn frame(payload: &[u8], hdr_byte: u8) -> Vec<u8> {
        let mut f = vec![hdr_byte; VNET_HDR_LEN];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn config_space_holds_the_mac_and_mtu_and_features_offer_them() {
        let (_mem, _host, net) = setup();
        let mut b = [0xffu8; 8];
        net.read_config(0, &mut b);
        assert_eq!(&b[..6], &MAC);
        assert_eq!(&b[6..], &[0, 0]);
        let mut b = [0u8; 2];
        net.read_config(4, &mut b);
        assert_eq!(b, [0, 2]);
        net.read_config(10, &mut b);
        assert_eq!(u16::from_le_bytes(b), 9000);
        let mut b = [0xffu8; 4];
        net.read_config(11, &mut b);
        assert_eq!(
            b,
            [(9000u16 >> 8) as u8, 0, 0, 0],
            "past the MTU reads zero"
        );
        let mut b = [0u8; 2];
        net.read_config(u64::MAX, &mut b);
        assert_eq!(b, [0, 0]);
        assert_eq!(net.device_type(), 1);
        assert_ne!(net.features() & (1 << VIRTIO_NET_F_MAC), 0);
        assert_ne!(net.features() & (1 << VIRTIO_NET_F_MTU), 0);
        assert_ne!(net.features() & VIRTIO_F_VERSION_1, 0);
    }

    #[test]
    fn a_guest_frame_reaches_the_tap_with_a_zeroed_header() {
        let (mem, host, mut net) = setup();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        // Header (with garbage the guest may not pass on) in one buffer, frame in two.
        mem.write_slice(&[0xee; VNET_HDR_LEN], GuestAddress(0x1_0000))
            .unwrap();
        mem.write_slice(b"ethernet ", GuestAddress(0x2_0000))
            .unwrap();
        mem.write_slice(b"frame", GuestAddress(0x3_0000)).unwrap();
        vq.add_desc_chains(
            &[
                raw(0x1_0000, VNET_HDR_LEN as u32, N, 1),
                raw(0x2_0000, 9, N, 2),
                raw(0x3_0000, 5, 0, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(net.process_queue(TX, &mut q, &mem).unwrap());
        let mut got = [0u8; 100];
        let n = host.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &frame(b"ethernet frame", 0)[..]);
        assert_eq!(vq.used().idx().load(), 1);
        // Kicks are wanted again once the queue is drained (no VRING_USED_F_NO_NOTIFY left).
        let used_flags: u16 = mem.read_obj(vq.used_addr()).unwrap();
        assert_eq!(used_flags, 0);
    }

    #[test]
    fn tap_frames_wait_for_receive_buffers_then_fill_them() {
        let (mem, host, mut net) = setup();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        let mut q: Queue = vq.create_queue().unwrap();
        host.send(&frame(b"first", 0)).unwrap();
        host.send(&frame(b"second", 0)).unwrap();
        // Empty receive queue while the tap has data: nothing used, nothing lost, no spin.
        assert!(!net
            .process_backend(std::slice::from_mut(&mut q), &mem)
            .unwrap());
        assert!(!net.process_queue(RX, &mut q, &mem).unwrap());
        // Buffers arrive: a header-sized one chained to a small one, and a single one.
        vq.add_desc_chains(
            &[
                raw(0x4_0000, VNET_HDR_LEN as u32, W | N, 1),
                raw(0x5_0000, 1514, W, 0),
                raw(0x6_0000, 1526, W, 0),
            ],
            0,
        )
        .unwrap();
        assert!(net.process_queue(RX, &mut q, &mem).unwrap());
        assert_eq!(vq.used().idx().load(), 2);
        let first = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!(first.len() as usize, VNET_HDR_LEN + 5);
        let mut hdr = [0xffu8; VNET_HDR_LEN];
        mem.read_slice(&mut hdr, GuestAddress(0x4_0000)).unwrap();
        assert_eq!(&hdr[10..], &[1, 0], "num_buffers is 1");
        let mut body = [0u8; 5];
        mem.read_slice(&mut body, GuestAddress(0x5_0000)).unwrap();
        assert_eq!(&body, b"first");
        let mut second = [0u8; VNET_HDR_LEN + 6];
        mem.read_slice(&mut second, GuestAddress(0x6_0000)).unwrap();
        assert_eq!(&second[VNET_HDR_LEN..], b"second");
    }

    #[test]
    fn mergeable_frames_spread_over_buffers_and_wait_for_enough() {
        let (mem, host, mut net) = setup();
        net.activate(VIRTIO_F_VERSION_1 | (1 << VIRTIO_NET_F_MRG_RXBUF));
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.add_desc_chains(&[raw(0x4_0000, 1024, W, 0), raw(0x5_0000, 1024, W, 0)], 0)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let payload: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        host.send(&frame(&payload, 0)).unwrap();
        // 2512 bytes do not fit two 1 KiB buffers: nothing is used until a third comes.
        assert!(!net.process_queue(RX, &mut q, &mem).unwrap());
        assert_eq!(vq.used().idx().load(), 0);
        vq.add_desc_chains(&[raw(0x6_0000, 1024, W, 0)], 2).unwrap();
        assert!(net.process_queue(RX, &mut q, &mem).unwrap());
        assert_eq!(vq.used().idx().load(), 3);
        let lens: Vec<u32> = (0..3)
            .map(|i| vq.used().ring().ref_at(i).unwrap().load().len())
            .collect();
        assert_eq!(lens, [1024, 1024, 2512 - 2048]);
        let mut got = vec![0u8; 2512];
        for (i, at) in [0x4_0000u64, 0x5_0000, 0x6_0000].iter().enumerate() {
            let n = lens[i] as usize;
            mem.read_slice(&mut got[i * 1024..i * 1024 + n], GuestAddress(*at))
                .unwrap();
        }
        assert_eq!(&got[10..12], &[3, 0], "num_buffers is 3");
        assert_eq!(&got[VNET_HDR_LEN..], &payload[..]);
    }

    #[test]
    fn offloads_pass_the_guests_header_and_set_the_taps_flags() {
        let (mem, host, mut net) = setup();
        let all = net.features();
        for bit in [
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_MRG_RXBUF,
        ] {
            assert_ne!(all & (1 << bit), 0, "feature bit {bit} offered");
        }
        assert_eq!(tun_offloads(all), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6);
        // Segments only with checksum offload; nothing the driver did not accept.
        assert_eq!(tun_offloads(1 << VIRTIO_NET_F_GUEST_TSO4), 0);
        assert_eq!(tun_offloads(VIRTIO_F_VERSION_1), 0);
        net.activate(all);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        // A partial-checksum TSO header: flags, gso type, header length, segment size,
        // checksum start and offset.
        let hdr = [1u8, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0];
        mem.write_slice(&hdr, GuestAddress(0x1_0000)).unwrap();
        mem.write_slice(b"segment", GuestAddress(0x2_0000)).unwrap();
        vq.add_desc_chains(
            &[
                raw(0x1_0000, VNET_HDR_LEN as u32, N, 1),
                raw(0x2_0000, 7, 0, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(net.process_queue(TX, &mut q, &mem).unwrap());
        let mut got = [0u8; 100];
        let n = host.recv(&mut got).unwrap();
        assert_eq!(
            &got[..VNET_HDR_LEN],
            &hdr,
            "the header reaches the tap as sent"
        );
        assert_eq!(&got[VNET_HDR_LEN..n], b"segment");
        // After a reset (no offloads until negotiated again) it is zeroed once more.
        net.reset();
        vq.add_desc_chains(
            &[
                raw(0x1_0000, VNET_HDR_LEN as u32, N, 3),
                raw(0x2_0000, 7, 0, 0),
            ],
            2,
        )
        .unwrap();
        assert!(net.process_queue(TX, &mut q, &mem).unwrap());
        let n = host.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &frame(b"segment", 0)[..]);
    }

    #[test]
    fn a_frame_larger_than_the_buffers_is_dropped_and_the_buffer_kept() {
        let (mem, host, mut net) = setup();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.add_desc_chains(&[raw(0x4_0000, 100, W, 0)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        host.send(&frame(&[7u8; 500], 0)).unwrap();
        host.send(&frame(b"fits", 0)).unwrap();
        assert!(net.process_queue(RX, &mut q, &mem).unwrap());
        assert_eq!(net.drops().rx_too_big, 1);
        assert_eq!(vq.used().idx().load(), 1);
        let used = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!(used.len() as usize, VNET_HDR_LEN + 4);
    }

    #[test]
    fn hostile_chains_fail_the_device_without_touching_host_memory() {
        let cases: Vec<(usize, Vec<RawDescriptor>)> = vec![
            // Receive buffer that is read-only.
            (RX, vec![raw(0x4_0000, 2048, 0, 0)]),
            // Receive buffer past the end of guest memory, and one straddling it.
            (RX, vec![raw(0xffff_0000, 2048, W, 0)]),
            (RX, vec![raw((1 << 20) - 16, 2048, W, 0)]),
            // Transmit buffer outside memory, device-writable, looping.
            (TX, vec![raw(0xdead_0000, 64, 0, 0)]),
            (TX, vec![raw(0x1_0000, 64, W, 0)]),
            (TX, vec![raw(0x1_0000, 64, N, 1), raw(0x2_0000, 64, N, 0)]),
            // A length that would wrap a 64-bit address.
            (TX, vec![raw(u64::MAX - 8, u32::MAX, 0, 0)]),
        ];
        for (queue, descs) in cases {
            let (mem, host, mut net) = setup();
            host.send(&frame(b"pending", 0)).unwrap();
            let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
            vq.add_desc_chains(&descs, 0).unwrap();
            let mut q: Queue = vq.create_queue().unwrap();
            assert!(
                net.process_queue(queue, &mut q, &mem).is_err(),
                "queue {queue}: {descs:?} accepted"
            );
        }
    }

    #[test]
    fn oversized_and_runt_guest_frames_are_dropped_not_buffered() {
        let (mem, host, mut net) = setup();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.add_desc_chains(
            &[
                // 0xf_0000 bytes (960 KiB) of "frame": inside memory, above MAX_FRAME.
                raw(0x1_0000, 0xf_0000, 0, 0),
                // Header only.
                raw(0x1_0000, VNET_HDR_LEN as u32, 0, 0),
                raw(0x1_0000, 60, 0, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(net.process_queue(TX, &mut q, &mem).unwrap());
        assert_eq!(vq.used().idx().load(), 3, "every chain is returned");
        assert_eq!(net.drops().tx, 2);
        let mut got = [0u8; 200];
        assert_eq!(host.recv(&mut got).unwrap(), 60);
        assert!(host.recv(&mut got).is_err(), "nothing else was sent");
        assert!(net.tx_frame.capacity() <= MAX_FRAME);
    }

    #[test]
    fn a_closed_or_silent_tap_is_survived() {
        let (mem, host, mut net) = setup();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.add_desc_chains(&[raw(0x4_0000, 2048, W, 0), raw(0x1_0000, 60, 0, 0)], 0)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(!net.process_queue(RX, &mut q, &mem).unwrap());
        drop(host);
        assert!(!net.process_queue(RX, &mut q, &mem).unwrap());
        net.reset();
    }
}
