//! Draining the child's output pipes with a size cap and a deadline.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

pub(super) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    super::check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptors from pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One output pipe being drained.
pub(super) struct Stream {
    pub(super) fd: Option<OwnedFd>,
    pub(super) kept: Vec<u8>,
    pub(super) total: u64,
    cap: usize,
}

impl Stream {
    pub(super) fn new(fd: Option<OwnedFd>, cap: usize) -> Stream {
        Stream {
            fd,
            kept: Vec::new(),
            total: 0,
            cap,
        }
    }
}

/// Reads all streams until they close or `deadline` passes; returns whether the deadline hit.
pub(super) fn drain_until(streams: &mut [Stream], deadline: Instant) -> bool {
    let primary = streams.len();
    drain_until_closed(streams, primary, deadline)
}

/// Reads all streams until the first `primary` of them are closed (the others may still be
/// open) or `deadline` passes; returns whether the deadline hit.
pub(super) fn drain_until_closed(
    streams: &mut [Stream],
    primary: usize,
    deadline: Instant,
) -> bool {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        if streams[..primary].iter().all(|stream| stream.fd.is_none()) {
            return false;
        }
        let mut poll_fds: Vec<libc::pollfd> = streams
            .iter()
            .filter_map(|stream| stream.fd.as_ref())
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if poll_fds.is_empty() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        let wait_ms = (deadline - now).as_millis().min(100) as libc::c_int;
        // SAFETY: valid pollfd array of the given length.
        let ready = unsafe {
            libc::poll(
                poll_fds.as_mut_ptr(),
                poll_fds.len() as libc::nfds_t,
                wait_ms.max(1),
            )
        };
        if ready <= 0 {
            continue;
        }
        for poll_fd in poll_fds.iter().filter(|poll_fd| poll_fd.revents != 0) {
            let Some(stream) = streams.iter_mut().find(|stream| {
                stream
                    .fd
                    .as_ref()
                    .is_some_and(|fd| fd.as_raw_fd() == poll_fd.fd)
            }) else {
                continue;
            };
            // SAFETY: reading into our own buffer from an open descriptor.
            let count = unsafe { libc::read(poll_fd.fd, buffer.as_mut_ptr().cast(), buffer.len()) };
            if count <= 0 {
                if count == 0
                    || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    stream.fd = None;
                }
                continue;
            }
            let count = count as usize;
            stream.total += count as u64;
            let room = stream.cap.saturating_sub(stream.kept.len());
            stream.kept.extend_from_slice(&buffer[..count.min(room)]);
        }
    }
}
