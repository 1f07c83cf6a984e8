//! virtio-blk requests: parsing a descriptor chain the guest controls (every field is
//! hostile until checked) and executing it against the disk file.

use std::fs::File;
use std::os::unix::fs::FileExt;

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Bytes per sector; virtio-blk addresses the disk in 512-byte sectors whatever the
/// backing store's block size.
pub(crate) const SECTOR_SIZE: u64 = 512;
/// `struct virtio_blk_outhdr`: type (u32), reserved (u32), sector (u64).
const HEADER_LEN: u32 = 16;
/// Length of the GET_ID response.
pub(crate) const ID_LEN: usize = 20;
/// Largest bounce buffer used per disk access, so a guest asking for a 4 GiB read does
/// not make the VMM allocate 4 GiB.
const MAX_CHUNK: usize = 64 * 1024;

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;

/// Request completed.
pub(crate) const VIRTIO_BLK_S_OK: u8 = 0;
/// Request failed (I/O error, out of range, write to a read-only disk).
pub(crate) const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Request type not supported.
pub(crate) const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Kind of request, from the header's `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestType {
    /// Read sectors into the guest.
    In,
    /// Write sectors from the guest.
    Out,
    /// Flush the disk's write cache.
    Flush,
    /// Return the device id string.
    GetId,
    /// Anything else (discard, write zeroes, ...).
    Unsupported(u32),
}

impl RequestType {
    fn from_raw(t: u32) -> Self {
        match t {
            VIRTIO_BLK_T_IN => RequestType::In,
            VIRTIO_BLK_T_OUT => RequestType::Out,
            VIRTIO_BLK_T_FLUSH => RequestType::Flush,
            VIRTIO_BLK_T_GET_ID => RequestType::GetId,
            other => RequestType::Unsupported(other),
        }
    }

    /// Whether data buffers must be device-writable (the device fills them).
    fn data_is_writable(self) -> bool {
        matches!(self, RequestType::In | RequestType::GetId)
    }
}

/// A request whose buffers have all been checked to lie in guest memory with the right
/// direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub kind: RequestType,
    pub sector: u64,
    /// Data buffers, in order.
    pub data: Vec<(GuestAddress, u32)>,
    /// Where the one-byte status goes.
    pub status: GuestAddress,
}

/// Why a descriptor chain is not a valid virtio-blk request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestError {
    /// No descriptor could be read at all.
    #[error("the descriptor chain is empty or its head cannot be read")]
    EmptyChain,
    /// The chain stops while its last descriptor says more follow: a loop, an index past
    /// the table, or a descriptor outside guest memory.
    #[error("the descriptor chain is broken after {0} descriptors (loop, bad next index or unreadable descriptor)")]
    BrokenChain(usize),
    /// Header and status need at least two descriptors.
    #[error("a request needs a header and a status descriptor, got {0} descriptor(s)")]
    TooFewDescriptors(usize),
    /// The header is device-writable.
    #[error("the request header descriptor is device-writable")]
    HeaderWritable,
    /// The header descriptor is too short.
    #[error("the request header descriptor is {0} bytes, at least 16 are needed")]
    HeaderTooShort(u32),
    /// The status descriptor is read-only or empty.
    #[error("the status descriptor (len {len}) must be device-writable and at least 1 byte")]
    BadStatus {
        /// Its length.
        len: u32,
    },
    /// A data buffer has the wrong direction for the request type.
    #[error("data descriptor {index} is {actual} but a {kind:?} request needs it {expected}")]
    DataDirection {
        /// Position in the chain.
        index: usize,
        /// Request type.
        kind: RequestType,
        /// What it is.
        actual: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A buffer is not entirely inside guest RAM.
    #[error("descriptor buffer {addr:#x}+{len:#x} is not inside guest memory")]
    OutsideMemory {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// Reading the header or writing the status failed.
    #[error("guest memory access at {addr:#x} failed")]
    MemoryAccess {
        /// Address accessed.
        addr: u64,
    },
}

fn direction(writable: bool) -> &'static str {
    if writable {
        "device-writable"
    } else {
        "read-only"
    }
}

fn check_in_memory(mem: &GuestMemoryMmap, d: &Descriptor) -> Result<(), RequestError> {
    let ok = d.len() == 0 || GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize);
    if ok {
        Ok(())
    } else {
        Err(RequestError::OutsideMemory {
            addr: d.addr().0,
            len: d.len(),
        })
    }
}

/// Parses and validates a descriptor chain (as yielded by `virtio_queue`'s iterator,
/// which ends early on loops and unreadable descriptors).
pub(crate) fn parse(
    chain: impl IntoIterator<Item = Descriptor>,
    mem: &GuestMemoryMmap,
) -> Result<Request, RequestError> {
    let descs: Vec<Descriptor> = chain.into_iter().collect();
    let last = descs.last().ok_or(RequestError::EmptyChain)?;
    if last.has_next() {
        return Err(RequestError::BrokenChain(descs.len()));
    }
    if descs.len() < 2 {
        return Err(RequestError::TooFewDescriptors(descs.len()));
    }
    for d in &descs {
        check_in_memory(mem, d)?;
    }

    let header = descs[0];
    if header.is_write_only() {
        return Err(RequestError::HeaderWritable);
    }
    if header.len() < HEADER_LEN {
        return Err(RequestError::HeaderTooShort(header.len()));
    }
    let mut raw = [0u8; HEADER_LEN as usize];
    mem.read_slice(&mut raw, header.addr())
        .map_err(|_| RequestError::MemoryAccess {
            addr: header.addr().0,
        })?;
    let mut t = [0u8; 4];
    t.copy_from_slice(&raw[0..4]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&raw[8..16]);
    let kind = RequestType::from_raw(u32::from_le_bytes(t));
    let sector = u64::from_le_bytes(s);

    let status = descs[descs.len() - 1];
    if !status.is_write_only() || status.len() < 1 {
        return Err(RequestError::BadStatus { len: status.len() });
    }

    let middle = &descs[1..descs.len() - 1];
    let mut data = Vec::with_capacity(middle.len());
    for (i, d) in middle.iter().enumerate() {
        let needs_writable = kind.data_is_writable();
        let checked = matches!(
            kind,
            RequestType::In | RequestType::Out | RequestType::GetId
        );
        if checked && d.is_write_only() != needs_writable {
            return Err(RequestError::DataDirection {
                index: i + 1,
                kind,
                actual: direction(d.is_write_only()),
                expected: direction(needs_writable),
            });
        }
        data.push((d.addr(), d.len()));
    }
    Ok(Request {
        kind,
        sector,
        data,
        status: status.addr(),
    })
}

/// The disk a request runs against.
pub(crate) struct Disk<'a> {
    pub file: &'a File,
    pub size: u64,
    pub read_only: bool,
    pub id: &'a [u8; ID_LEN],
}

/// Runs a parsed request. Returns the virtio-blk status and the number of bytes written
/// into guest buffers (excluding the status byte). Failures the guest can cause by
/// asking (out-of-range sectors, writes to a read-only disk) are I/O errors for that
/// request, not device errors.
pub(crate) fn execute(
    req: &Request,
    disk: &Disk<'_>,
    mem: &GuestMemoryMmap,
    buf: &mut Vec<u8>,
) -> (u8, u32) {
    match req.kind {
        RequestType::In | RequestType::Out => {
            if req.kind == RequestType::Out && disk.read_only {
                return (VIRTIO_BLK_S_IOERR, 0);
            }
            let total: u64 = req.data.iter().map(|(_, l)| u64::from(*l)).sum();
            let range = req
                .sector
                .checked_mul(SECTOR_SIZE)
                .and_then(|start| Some((start, start.checked_add(total)?)));
            let Some((start, end)) = range else {
                return (VIRTIO_BLK_S_IOERR, 0);
            };
            if total % SECTOR_SIZE != 0 || end > disk.size {
                tracing::debug!(
                    sector = req.sector,
                    total,
                    disk_size = disk.size,
                    "request out of range"
                );
                return (VIRTIO_BLK_S_IOERR, 0);
            }
            match transfer(req, disk.file, start, mem, buf) {
                Ok(()) => {
                    let written = if req.kind == RequestType::In {
                        total as u32
                    } else {
                        0
                    };
                    (VIRTIO_BLK_S_OK, written)
                }
                Err(e) => {
                    tracing::warn!("disk I/O at byte {start} failed: {e}");
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
        }
        RequestType::Flush => {
            if disk.read_only {
                return (VIRTIO_BLK_S_OK, 0);
            }
            match disk.file.sync_data() {
                Ok(()) => (VIRTIO_BLK_S_OK, 0),
                Err(e) => {
                    tracing::warn!("disk flush failed: {e}");
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
        }
        RequestType::GetId => {
            let Some(&(addr, len)) = req.data.first() else {
                return (VIRTIO_BLK_S_IOERR, 0);
            };
            let n = (len as usize).min(ID_LEN);
            match mem.write_slice(&disk.id[..n], addr) {
                Ok(()) => (VIRTIO_BLK_S_OK, n as u32),
                Err(_) => (VIRTIO_BLK_S_IOERR, 0),
            }
        }
        RequestType::Unsupported(_) => (VIRTIO_BLK_S_UNSUPP, 0),
    }
}

fn transfer(
    req: &Request,
    file: &File,
    mut offset: u64,
    mem: &GuestMemoryMmap,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let to_io = |e: vm_memory::GuestMemoryError| std::io::Error::other(e.to_string());
    for &(addr, len) in &req.data {
        let mut done = 0usize;
        let len = len as usize;
        while done < len {
            let n = (len - done).min(MAX_CHUNK);
            buf.resize(n, 0);
            let gaddr = GuestAddress(addr.0 + done as u64);
            if req.kind == RequestType::In {
                file.read_exact_at(&mut buf[..n], offset)?;
                mem.write_slice(&buf[..n], gaddr).map_err(to_io)?;
            } else {
                mem.read_slice(&mut buf[..n], gaddr).map_err(to_io)?;
                file.write_all_at(&buf[..n], offset)?;
            }
            done += n;
            offset += n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

    const W: u16 = VRING_DESC_F_WRITE as u16;
    const N: u16 = VRING_DESC_F_NEXT as u16;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn header(mem: &GuestMemoryMmap, addr: u64, t: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(addr)).unwrap();
    }

    fn d(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    #[test]
    fn parses_a_read() {
        let m = mem();
        header(&m, 0x1000, VIRTIO_BLK_T_IN, 7);
        let r = parse(
            [d(0x1000, 16, N), d(0x2000, 512, W | N), d(0x3000, 1, W)],
            &m,
        )
        .unwrap();
        assert_eq!(r.kind, RequestType::In);
        assert_eq!(r.sector, 7);
        assert_eq!(r.data, vec![(GuestAddress(0x2000), 512)]);
        assert_eq!(r.status, GuestAddress(0x3000));
    }

    #[test]
    fn rejects_hostile_chains() {
        let m = mem();
        header(&m, 0x1000, VIRTIO_BLK_T_IN, 0);
        let cases: Vec<(Vec<Descriptor>, RequestError)> = vec![
            (vec![], RequestError::EmptyChain),
            (
                vec![d(0x1000, 16, N), d(0x2000, 8, W | N)],
                RequestError::BrokenChain(2),
            ),
            (vec![d(0x1000, 16, 0)], RequestError::TooFewDescriptors(1)),
            (
                vec![d(0x1000, 16, W | N), d(0x3000, 1, W)],
                RequestError::HeaderWritable,
            ),
            (
                vec![d(0x1000, 8, N), d(0x3000, 1, W)],
                RequestError::HeaderTooShort(8),
            ),
            (
                vec![d(0x1000, 16, N), d(0x3000, 1, 0)],
                RequestError::BadStatus { len: 1 },
            ),
            (
                vec![d(0x1000, 16, N), d(0x3000, 0, W)],
                RequestError::BadStatus { len: 0 },
            ),
            (
                vec![d(0x1000, 16, N), d(0xff000, 0x2000, W | N), d(0x3000, 1, W)],
                RequestError::OutsideMemory {
                    addr: 0xff000,
                    len: 0x2000,
                },
            ),
            (
                vec![
                    d(0x1000, 16, N),
                    d(u64::MAX - 4, 16, W | N),
                    d(0x3000, 1, W),
                ],
                RequestError::OutsideMemory {
                    addr: u64::MAX - 4,
                    len: 16,
                },
            ),
            (
                vec![d(0x1000, 16, N), d(0x3000, 1, W), d(0xdead_0000, 1, W)],
                RequestError::OutsideMemory {
                    addr: 0xdead_0000,
                    len: 1,
                },
            ),
        ];
        for (chain, want) in cases {
            assert_eq!(parse(chain.clone(), &m), Err(want), "{chain:?}");
        }
        // A read whose data buffer is read-only would make the device write into memory
        // the driver marked as input.
        let err = parse([d(0x1000, 16, N), d(0x2000, 512, N), d(0x3000, 1, W)], &m).unwrap_err();
        assert!(
            matches!(err, RequestError::DataDirection { index: 1, .. }),
            "{err}"
        );
        header(&m, 0x1000, VIRTIO_BLK_T_OUT, 0);
        let err = parse(
            [d(0x1000, 16, N), d(0x2000, 512, W | N), d(0x3000, 1, W)],
            &m,
        )
        .unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
    }

    fn disk_file(sectors: u64) -> (tempfile::NamedTempFile, File) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..sectors * 512).map(|i| (i / 512) as u8).collect();
        std::fs::write(f.path(), data).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f.path())
            .unwrap();
        (f, file)
    }

    fn req(kind: RequestType, sector: u64, data: Vec<(u64, u32)>) -> Request {
        Request {
            kind,
            sector,
            data: data
                .into_iter()
                .map(|(a, l)| (GuestAddress(a), l))
                .collect(),
            status: GuestAddress(0x3000),
        }
    }

    #[test]
    fn executes_reads_writes_and_rejects_out_of_range() {
        let m = mem();
        let (_t, file) = disk_file(8);
        let id = *b"vessel-disk-0\0\0\0\0\0\0\0";
        let disk = Disk {
            file: &file,
            size: 8 * 512,
            read_only: false,
            id: &id,
        };
        let mut buf = Vec::new();

        let r = req(RequestType::In, 2, vec![(0x2000, 512), (0x4000, 1024)]);
        assert_eq!(execute(&r, &disk, &m, &mut buf), (VIRTIO_BLK_S_OK, 1536));
        let mut b = [0u8; 1];
        m.read_slice(&mut b, GuestAddress(0x2000 + 511)).unwrap();
        assert_eq!(b, [2]);
        m.read_slice(&mut b, GuestAddress(0x4000 + 600)).unwrap();
        assert_eq!(b, [4]);

        m.write_slice(&[0xabu8; 512], GuestAddress(0x5000)).unwrap();
        let w = req(RequestType::Out, 7, vec![(0x5000, 512)]);
        assert_eq!(execute(&w, &disk, &m, &mut buf), (VIRTIO_BLK_S_OK, 0));
        let mut sector7 = [0u8; 512];
        file.read_exact_at(&mut sector7, 7 * 512).unwrap();
        assert_eq!(sector7, [0xab; 512]);

        for bad in [
            req(RequestType::In, 8, vec![(0x2000, 512)]),
            req(RequestType::In, 7, vec![(0x2000, 1024)]),
            req(RequestType::In, u64::MAX / 2, vec![(0x2000, 512)]),
            req(RequestType::In, 0, vec![(0x2000, 100)]),
        ] {
            assert_eq!(
                execute(&bad, &disk, &m, &mut buf).0,
                VIRTIO_BLK_S_IOERR,
                "{bad:?}"
            );
        }
        let ro = Disk {
            read_only: true,
            ..disk
        };
        assert_eq!(execute(&w, &ro, &m, &mut buf).0, VIRTIO_BLK_S_IOERR);
        assert_eq!(
            execute(&req(RequestType::Flush, 0, vec![]), &ro, &m, &mut buf).0,
            VIRTIO_BLK_S_OK
        );
        assert_eq!(
            execute(
                &req(RequestType::Unsupported(11), 0, vec![]),
                &disk,
                &m,
                &mut buf
            )
            .0,
            VIRTIO_BLK_S_UNSUPP
        );
        let g = req(RequestType::GetId, 0, vec![(0x6000, 64)]);
        assert_eq!(execute(&g, &disk, &m, &mut buf), (VIRTIO_BLK_S_OK, 20));
        let mut got = [0u8; 13];
        m.read_slice(&mut got, GuestAddress(0x6000)).unwrap();
        assert_eq!(&got, b"vessel-disk-0");
    }

    #[test]
    fn a_flush_reaches_the_backing_file() {
        // FLUSH is the guest's fsync: it must fdatasync the disk file, whose failure the
        // guest sees. A file that cannot be synced (a pipe) proves the sync is attempted.
        let m = mem();
        let (rx, _tx) = std::io::pipe().unwrap();
        let pipe = File::from(std::os::fd::OwnedFd::from(rx));
        let id = [0u8; ID_LEN];
        let disk = Disk {
            file: &pipe,
            size: 512,
            read_only: false,
            id: &id,
        };
        let flush = req(RequestType::Flush, 0, vec![]);
        let mut buf = Vec::new();
        assert_eq!(execute(&flush, &disk, &m, &mut buf).0, VIRTIO_BLK_S_IOERR);
        let (_t, file) = disk_file(1);
        let disk = Disk {
            file: &file,
            ..disk
        };
        assert_eq!(execute(&flush, &disk, &m, &mut buf).0, VIRTIO_BLK_S_OK);
    }

    #[test]
    fn large_requests_use_a_bounded_buffer() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (_t, file) = disk_file(1024);
        let id = [0u8; ID_LEN];
        let disk = Disk {
            file: &file,
            size: 1024 * 512,
            read_only: false,
            id: &id,
        };
        let mut buf = Vec::new();
        let r = req(RequestType::In, 0, vec![(0x1_0000, 512 * 1024)]);
        assert_eq!(
            execute(&r, &disk, &m, &mut buf),
            (VIRTIO_BLK_S_OK, 512 * 1024)
        );
        assert!(buf.capacity() <= MAX_CHUNK * 2);
        let mut b = [0u8; 1];
        m.read_slice(&mut b, GuestAddress(0x1_0000 + 1023 * 512))
            .unwrap();
        assert_eq!(b, [(1023 % 256) as u8]);
    }
}
