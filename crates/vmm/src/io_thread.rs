//! The VM's I/O thread: waits on every virtio queue's ioeventfd and on device backends
//! (the console's host stream) and runs the device's processing, so vCPUs only pay for a
//! notification, not for the I/O.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::mmio::MmioTransport;
use crate::error::{Error, Result};
use crate::exit::{ExitReason, ExitSignal};
use crate::seccomp::{self, Filters};

const STOP_TOKEN: u64 = u64::MAX;

/// Something the I/O thread waits on.
pub(crate) enum IoSource {
    /// A queue's ioeventfd: the driver notified queue `queue`.
    Queue {
        transport: Arc<Mutex<MmioTransport>>,
        queue: usize,
        evt: EventFd,
    },
    /// A device's host-side fd (owned by the device inside `transport`) became ready.
    Backend {
        transport: Arc<Mutex<MmioTransport>>,
        fd: RawFd,
    },
}

/// Handle to stop the running I/O thread.
pub(crate) struct IoThread {
    stop: EventFd,
    handle: JoinHandle<()>,
}

impl IoThread {
    /// Starts the thread, which confines itself with `filter` (see [`crate::seccomp`])
    /// before it handles any guest request; if it cannot, it ends the VM through `exit`.
    pub(crate) fn spawn(
        events: Vec<IoSource>,
        filter: Option<Filters>,
        exit: Arc<ExitSignal>,
    ) -> Result<IoThread> {
        let epoll = Epoll::new().map_err(|e| Error::os("creating the I/O epoll", e))?;
        let stop = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| Error::os("creating the I/O stop eventfd", e))?;
        epoll
            .ctl(
                ControlOperation::Add,
                stop.as_raw_fd(),
                EpollEvent::new(EventSet::IN, STOP_TOKEN),
            )
            .map_err(|e| Error::os("registering the I/O stop eventfd", e))?;
        for (i, ev) in events.iter().enumerate() {
            let (fd, set) = match ev {
                IoSource::Queue { evt, .. } => (evt.as_raw_fd(), EventSet::IN),
                IoSource::Backend { fd, .. } => (
                    *fd,
                    EventSet::IN
                        | EventSet::OUT
                        | EventSet::READ_HANG_UP
                        | EventSet::EDGE_TRIGGERED,
                ),
            };
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(set, i as u64))
                .map_err(|e| Error::os("registering a device fd with the I/O epoll", e))?;
        }
        let stop_clone = stop
            .try_clone()
            .map_err(|e| Error::os("cloning the I/O stop eventfd", e))?;
        let handle = std::thread::Builder::new()
            .name("vmm-io".into())
            .spawn(
                move || match seccomp::confine_current_thread(filter.as_ref()) {
                    Ok(()) => run(epoll, events, stop_clone),
                    Err(e) => exit.trigger(ExitReason::Crashed(format!("I/O thread: {e}"))),
                },
            )
            .map_err(|e| Error::os("spawning the I/O thread", e))?;
        Ok(IoThread { stop, handle })
    }

    /// Stops and joins the thread.
    pub(crate) fn stop(self) -> Option<String> {
        if let Err(e) = self.stop.write(1) {
            return Some(format!("cannot stop the I/O thread: {e}"));
        }
        self.handle
            .join()
            .err()
            .map(|_| "the I/O thread panicked".to_string())
    }
}

fn run(epoll: Epoll, events: Vec<IoSource>, _stop: EventFd) {
    let mut ready = vec![EpollEvent::default(); events.len() + 1];
    loop {
        let n = match epoll.wait(-1, &mut ready) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("I/O thread epoll failed, virtio devices stop: {e}");
                return;
            }
        };
        for ev in &ready[..n] {
            let token = ev.data();
            if token == STOP_TOKEN {
                return;
            }
            match usize::try_from(token).ok().and_then(|i| events.get(i)) {
                Some(IoSource::Queue {
                    transport,
                    queue,
                    evt,
                }) => {
                    // A drained counter is fine: the notification only says "look at the
                    // ring".
                    let _ = evt.read();
                    transport
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .notify(*queue);
                }
                Some(IoSource::Backend { transport, .. }) => transport
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .backend_event(),
                None => {}
            }
        }
    }
}
