//! The socket between the runtime and the processes it forks: small JSON messages, one
//! per SOCK_SEQPACKET datagram, optionally carrying a file descriptor.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Messages exchanged during create/exec.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// Intermediate -> runtime: I unshared the user namespace, write my id maps.
    UserNsReady,
    /// Runtime -> intermediate: id maps written (and, for `exec`, cgroup joined), go on.
    Go,
    /// Runtime -> container init: you are in the container's cgroup; go on to what
    /// depends on it (the cgroup namespace, cgroup mounts, running anything).
    Joined,
    /// Intermediate -> runtime: host pid of the container process.
    Pid(i32),
    /// Container process -> runtime: the pty master is attached.
    PtyMaster,
    /// Init -> runtime: set up, waiting for start.
    Ready,
    /// Container process -> runtime: something was adjusted; log it.
    Warning(String),
    /// Any child -> runtime: setup failed.
    Error(ChildError),
}

/// A setup failure reported by a child, keeping the distinctions callers map to exit codes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ChildError {
    NotFound(String),
    NotExecutable { path: String, reason: String },
    Other(String),
}

impl From<Error> for ChildError {
    fn from(e: Error) -> Self {
        match e {
            Error::ExecutableNotFound(p) => ChildError::NotFound(p),
            Error::NotExecutable { path, reason } => ChildError::NotExecutable { path, reason },
            other => ChildError::Other(other.to_string()),
        }
    }
}

impl From<ChildError> for Error {
    fn from(e: ChildError) -> Self {
        match e {
            ChildError::NotFound(p) => Error::ExecutableNotFound(p),
            ChildError::NotExecutable { path, reason } => Error::NotExecutable { path, reason },
            ChildError::Other(m) => Error::InitFailed(m),
        }
    }
}

/// One end of the socket pair.
#[derive(Debug)]
pub(crate) struct Channel(OwnedFd);

impl Channel {
    /// A connected pair, close-on-exec so the container's program never inherits it.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::syscall("socketpair", e))?;
        Ok((Channel(a), Channel(b)))
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Send a message, with `fd` attached if given.
    pub fn send_with(&self, msg: &Msg, fd: Option<RawFd>) -> Result<()> {
        let buf = serde_json::to_vec(msg)
            .map_err(|e| Error::InitFailed(format!("encode sync message: {e}")))?;
        let iov = [IoSlice::new(&buf)];
        let fds = fd.map(|f| [f]);
        let cmsgs: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
        loop {
            match sendmsg::<()>(self.raw(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::syscall("send on sync socket", e)),
            }
        }
    }

    pub fn send(&self, msg: &Msg) -> Result<()> {
        self.send_with(msg, None)
    }

    /// Receive the next message; `None` once every peer has closed its end.
    pub fn recv(&self) -> Result<Option<(Msg, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let (len, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.raw(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => {
                    let mut fd = None;
                    for c in m
                        .cmsgs()
                        .map_err(|e| Error::syscall("recvmsg control data", e))?
                    {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for f in fds {
                                // SAFETY: SCM_RIGHTS just installed `f` in our table and
                                // nothing else owns it.
                                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    break (m.bytes, fd);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::syscall("receive on sync socket", e)),
            }
        };
        if len == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..len])
            .map_err(|e| Error::InitFailed(format!("garbled sync message: {e}")))?;
        Ok(Some((msg, fd)))
    }
}
