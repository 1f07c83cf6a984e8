//! The virtio-blk device model.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::request::{self, Disk, ID_LEN, SECTOR_SIZE};
use super::BlockError;
use crate::config::{open_disk, DiskConfig};
use crate::devices::virtio::{DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::files::OpenFiles;

/// Virtio device id of a block device.
const VIRTIO_ID_BLOCK: u32 = 2;
/// Feature: `seg_max` in config space is valid.
const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
/// Feature: the disk is read-only.
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// Feature: the FLUSH command is supported.
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
/// One request queue.
pub(crate) const QUEUE_SIZE: u16 = 256;
/// Size of the config space we expose (`struct virtio_blk_config` up to `blk_size`).
const CONFIG_LEN: usize = 24;

/// A raw disk image as a virtio-blk device.
pub(crate) struct Block {
    file: File,
    size: u64,
    read_only: bool,
    id: [u8; ID_LEN],
    config: [u8; CONFIG_LEN],
    queue_sizes: [u16; 1],
    /// Reused bounce buffer for disk transfers.
    buf: Vec<u8>,
}

impl Block {
    /// Opens the disk (read-only if so configured). `index` makes the GET_ID string
    /// unique within the VM ("vessel-vda", "vessel-vdb", ...).
    pub(crate) fn new(
        cfg: &DiskConfig,
        index: usize,
        files: &OpenFiles,
    ) -> Result<Block, BlockError> {
        let mut file = open_disk(cfg, files).map_err(|source| BlockError::Open {
            path: cfg.path.clone(),
            source,
        })?;
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: cfg.path.clone(),
                source,
            })?;
        Ok(Self::from_file(file, size, cfg.read_only, index))
    }

    pub(crate) fn from_file(file: File, size: u64, read_only: bool, index: usize) -> Block {
        // A trailing partial sector is not addressable.
        let size = size - size % SECTOR_SIZE;
        let mut id = [0u8; ID_LEN];
        let name = format!("vessel-vd{}", (b'a' + (index % 26) as u8) as char);
        id[..name.len()].copy_from_slice(name.as_bytes());
        let mut config = [0u8; CONFIG_LEN];
        config[0..8].copy_from_slice(&(size / SECTOR_SIZE).to_le_bytes());
        // seg_max: a request may use every descriptor but the header and status.
        config[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        Block {
            file,
            size,
            read_only,
            id,
            config,
            queue_sizes: [QUEUE_SIZE],
            buf: Vec::new(),
        }
    }

    /// Serves one descriptor chain; `Err` when the chain is malformed.
    fn serve(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, BlockError> {
        let chain = {
            let mut iter = queue.iter(mem).map_err(BlockError::Queue)?;
            iter.next()
        };
        let Some(chain) = chain else {
            return Ok(false);
        };
        let head = chain.head_index();
        let req = match request::parse(chain, mem) {
            Ok(req) => req,
            Err(source) => {
                // Hand the buffer back so the driver is not left waiting on it, then fail
                // the device.
                let _ = queue.add_used(mem, head, 0);
                return Err(BlockError::Request { head, source });
            }
        };
        let disk = Disk {
            file: &self.file,
            size: self.size,
            read_only: self.read_only,
            id: &self.id,
        };
        let (status, written) = request::execute(&req, &disk, mem, &mut self.buf);
        let status_ok = mem.write_obj(status, req.status).is_ok();
        queue
            .add_used(mem, head, written + u32::from(status_ok))
            .map_err(BlockError::Queue)?;
        if !status_ok {
            return Err(BlockError::Request {
                head,
                source: request::RequestError::MemoryAccess { addr: req.status.0 },
            });
        }
        Ok(true)
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_SEG_MAX;
        if self.read_only {
            f |= VIRTIO_BLK_F_RO;
        } else {
            f |= VIRTIO_BLK_F_FLUSH;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn process_queue(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        let mut used = false;
        // Bounded by the ring: each iteration consumes one available entry, and the queue
        // rejects an avail index more than a ring's length ahead.
        loop {
            match self.serve(queue, mem) {
                Ok(true) => used = true,
                Ok(false) => return Ok(used),
                Err(e) => return Err(Box::new(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    const W: u16 = VRING_DESC_F_WRITE as u16;
    const N: u16 = VRING_DESC_F_NEXT as u16;

    fn setup() -> (GuestMemoryMmap, tempfile::NamedTempFile, Block) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), vec![0x5au8; 4096 + 100]).unwrap();
        let blk = Block::new(
            &DiskConfig {
                path: t.path().into(),
                read_only: false,
            },
            1,
            &crate::files::OpenFiles::host(),
        )
        .unwrap();
        (mem, t, blk)
    }

    fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    fn header(mem: &GuestMemoryMmap, addr: u64, t: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(addr)).unwrap();
    }

    #[test]
    fn config_and_features() {
        let (_m, _t, blk) = setup();
        let mut cap = [0u8; 8];
        blk.read_config(0, &mut cap);
        assert_eq!(
            u64::from_le_bytes(cap),
            8,
            "partial trailing sector dropped"
        );
        let mut past = [0xffu8; 4];
        blk.read_config(22, &mut past);
        assert_eq!(past, [0, 0, 0, 0]);
        blk.read_config(u64::MAX, &mut past);
        assert_eq!(past, [0; 4]);
        assert_ne!(blk.features() & VIRTIO_F_VERSION_1, 0);
        assert_ne!(blk.features() & VIRTIO_BLK_F_FLUSH, 0);
        assert_eq!(blk.features() & VIRTIO_BLK_F_RO, 0);
        assert_eq!(&blk.id[..10], b"vessel-vdb");
    }

    #[test]
    fn serves_a_crafted_read_chain_through_the_queue() {
        let (mem, _t, mut blk) = setup();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        header(&mem, 0x1_0000, 0, 1);
        vq.add_desc_chains(
            &[
                raw(0x1_0000, 16, N, 1),
                raw(0x2_0000, 512, W | N, 2),
                raw(0x3_0000, 1, W, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(blk.process_queue(0, &mut q, &mem).unwrap());
        let mut status = [0xffu8];
        mem.read_slice(&mut status, GuestAddress(0x3_0000)).unwrap();
        assert_eq!(status, [0]);
        let mut data = [0u8; 512];
        mem.read_slice(&mut data, GuestAddress(0x2_0000)).unwrap();
        assert_eq!(data, [0x5a; 512]);
        let used = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!((used.id(), used.len()), (0, 513));
        // Nothing more to do.
        assert!(!blk.process_queue(0, &mut q, &mem).unwrap());
    }

    #[test]
    fn write_lands_in_the_file() {
        let (mem, t, mut blk) = setup();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        header(&mem, 0x1_0000, 1, 3);
        mem.write_slice(&[7u8; 512], GuestAddress(0x2_0000))
            .unwrap();
        vq.add_desc_chains(
            &[
                raw(0x1_0000, 16, N, 1),
                raw(0x2_0000, 512, N, 2),
                raw(0x3_0000, 1, W, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(blk.process_queue(0, &mut q, &mem).unwrap());
        let f = File::open(t.path()).unwrap();
        let mut got = [0u8; 512];
        f.read_exact_at(&mut got, 3 * 512).unwrap();
        assert_eq!(got, [7; 512]);
    }

    #[test]
    fn garbage_chains_are_errors_not_panics_or_hangs() {
        let (mem, _t, mut blk) = setup();
        // A descriptor that points at itself: the chain iterator stops after the ring's
        // length, the request is rejected, and the buffer is returned.
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.add_desc_chains(&[raw(0x1_0000, 16, N, 0)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let err = blk.process_queue(0, &mut q, &mem).unwrap_err().to_string();
        assert!(err.contains("broken"), "{err}");
        assert_eq!(vq.used().idx().load(), 1, "looping chain handed back");

        // next index past the table.
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.add_desc_chains(&[raw(0x1_0000, 16, N, 500)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(blk.process_queue(0, &mut q, &mem).is_err());

        // Buffers outside guest memory.
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        header(&mem, 0x1_0000, 0, 0);
        vq.add_desc_chains(
            &[
                raw(0x1_0000, 16, N, 1),
                raw(0xffff_f000, 0x10_0000, W | N, 2),
                raw(0x3_0000, 1, W, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let err = blk.process_queue(0, &mut q, &mem).unwrap_err().to_string();
        assert!(err.contains("not inside guest memory"), "{err}");

        // An available index far ahead of the ring.
        let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        vq.avail().idx().store(1000);
        let mut q: Queue = vq.create_queue().unwrap();
        let err = blk.process_queue(0, &mut q, &mem).unwrap_err().to_string();
        assert!(err.contains("virtqueue is corrupt"), "{err}");

        // Random bytes as the whole descriptor table and ring.
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..200 {
            let mut junk = vec![0u8; 16 * 16 + 6 + 2 * 16];
            for b in junk.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
            mem.write_slice(&junk, GuestAddress(0)).unwrap();
            let mut q: Queue = vq.create_queue().unwrap();
            let _ = blk.process_queue(0, &mut q, &mem);
        }
    }
}
