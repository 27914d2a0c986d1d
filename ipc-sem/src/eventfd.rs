//! A counting semaphore that is a descriptor: `eventfd(EFD_SEMAPHORE)`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags, eventfd, poll};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::time::{Deadline, to_timespec};

/// The largest value an eventfd counter holds (`0xffff_ffff_ffff_fffe`).
pub const EVENTFD_MAX: u64 = u64::MAX - 1;

/// A counting semaphore that is a descriptor (`eventfd(EFD_SEMAPHORE | EFD_CLOEXEC)`): each
/// [`wait`](Self::wait) takes one unit, [`post`](Self::post) adds units.
///
/// Because it is a descriptor it is pollable ([`AsFd`]: readable means a unit is available),
/// so it joins a `poll`/`epoll` loop or an async runtime's fd adapter; and it can be handed to a
/// child process, forked or exec'd (close-on-exec is set: pass it explicitly, e.g. as the
/// child's stdin with `Stdio::from(OwnedFd::from(sem))`, and rebuild it there with
/// [`From<OwnedFd>`]). Unrelated processes cannot open it by name.
///
/// The descriptor is blocking unless [`set_nonblocking`](Self::set_nonblocking) says otherwise
/// (an event loop wants it non-blocking); every method works in either mode. On a blocking
/// descriptor [`wait`](Self::wait) is a single `read`; the non-blocking forms use
/// `preadv2(RWF_NOWAIT)` (Linux 5.12 and later; older kernels fall back to making the
/// descriptor non-blocking) and `poll`. With the `tokio` feature, `AsyncEventSemaphore` waits on
/// it in tokio's reactor. It does not survive a holder's crash.
///
/// After `fork` (also from a multi-threaded parent), the child may call `post`, `post_n`,
/// `try_wait`, `wait` and `wait_timeout` (`read`, `write`, `poll` system calls) and drop the
/// handle (`close`).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::os::fd::OwnedFd;
/// use std::process::{Command, Stdio};
/// let jobs = ipc_sem::EventSemaphore::new(0)?;
/// jobs.post_n(2)?;
/// jobs.wait()?;
/// // Hand a copy to a child as its stdin: the child rebuilds it with `EventSemaphore::from`.
/// let status = Command::new("true")
///     .stdin(Stdio::from(OwnedFd::from(jobs.try_clone()?)))
///     .status()?;
/// assert!(status.success());
/// jobs.try_wait()?; // the second unit
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct EventSemaphore {
    fd: OwnedFd,
}

impl EventSemaphore {
    /// `eventfd(initial, EFD_SEMAPHORE | EFD_CLOEXEC)`.
    ///
    /// # Errors
    /// `EMFILE`/`ENFILE` when out of descriptors.
    #[doc(alias = "eventfd")]
    pub fn new(initial: u32) -> Result<EventSemaphore> {
        let fd = eventfd(initial, EventfdFlags::SEMAPHORE | EventfdFlags::CLOEXEC)?;
        Ok(EventSemaphore { fd })
    }

    /// A second handle on the same semaphore (`F_DUPFD_CLOEXEC`).
    ///
    /// # Errors
    /// `EMFILE` when out of descriptors.
    pub fn try_clone(&self) -> Result<EventSemaphore> {
        Ok(EventSemaphore {
            fd: self.fd.try_clone()?,
        })
    }

    /// Adds one unit, waking one waiter.
    ///
    /// # Errors
    /// [`Error::Overflow`] at [`EVENTFD_MAX`].
    pub fn post(&self) -> Result<()> {
        self.post_n(1)
    }

    /// Adds `n` units.
    ///
    /// A post that would take the count past [`EVENTFD_MAX`] waits (blocking descriptor) until
    /// waiters have taken enough units, as `write(2)` on an eventfd does.
    ///
    /// # Errors
    /// [`Error::Overflow`] on a non-blocking descriptor whose count would pass
    /// [`EVENTFD_MAX`] (nothing is added); [`Error::ValueTooLarge`] for `n > EVENTFD_MAX`.
    pub fn post_n(&self, n: u64) -> Result<()> {
        post_n(self.fd.as_fd(), n)
    }

    /// Takes one unit if there is one, without waiting.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if the count is zero.
    pub fn try_wait(&self) -> Result<()> {
        try_wait(self.fd.as_fd())
    }

    /// Makes the descriptor non-blocking (`true`) or blocking (`false`): `ioctl(FIONBIO)`.
    ///
    /// Every method of this type works in either mode (a [`wait`](Self::wait) on a
    /// non-blocking descriptor sleeps in `poll`). A non-blocking descriptor is what an event
    /// loop needs: nothing on it can block the loop's thread, not even a
    /// [`post_n`](Self::post_n) that would overflow the count ([`Error::Overflow`] instead).
    ///
    /// The mode belongs to the open file description, which every copy shares: descriptors
    /// from [`try_clone`](Self::try_clone), and those passed to other processes.
    ///
    /// # Errors
    /// Only unexpected OS errors.
    #[doc(alias = "FIONBIO")]
    #[doc(alias = "O_NONBLOCK")]
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        Ok(rustix::io::ioctl_fionbio(&self.fd, nonblocking)?)
    }

    /// Whether the descriptor is non-blocking (`O_NONBLOCK`, see
    /// [`set_nonblocking`](Self::set_nonblocking)).
    ///
    /// # Errors
    /// Only unexpected OS errors.
    pub fn is_nonblocking(&self) -> Result<bool> {
        let flags = rustix::fs::fcntl_getfl(&self.fd)?;
        Ok(flags.contains(rustix::fs::OFlags::NONBLOCK))
    }

    /// One `read`: blocks on a blocking descriptor, `WouldBlock` on a non-blocking one.
    fn read_one(&self) -> Result<()> {
        read_one(self.fd.as_fd())
    }

    /// Waits for a unit and takes it.
    ///
    /// # Errors
    /// Only unexpected OS errors.
    pub fn wait(&self) -> Result<()> {
        match self.read_one() {
            Err(Error::WouldBlock) => self.wait_until(Deadline::Forever),
            r => r,
        }
    }

    /// Waits at most `timeout` for a unit (zero only tries; `Duration::MAX` waits forever).
    /// `EINTR` is retried against the same deadline.
    ///
    /// # Errors
    /// [`Error::TimedOut`] at the deadline.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        if timeout.is_zero() {
            return self.try_wait().map_err(|e| match e {
                Error::WouldBlock => Error::TimedOut,
                e => e,
            });
        }
        match Deadline::after(timeout) {
            Deadline::Forever => self.wait(),
            d => self.wait_until(d),
        }
    }

    fn wait_until(&self, deadline: Deadline) -> Result<()> {
        loop {
            match self.try_wait() {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
            let left = deadline.remaining();
            if left.is_some_and(|l| l.is_zero()) {
                return Err(Error::TimedOut);
            }
            let ts = left.map(to_timespec);
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Adds `n` units to the eventfd `fd` (see [`EventSemaphore::post_n`]).
pub(crate) fn post_n(fd: BorrowedFd<'_>, n: u64) -> Result<()> {
    if n > EVENTFD_MAX {
        return Err(Error::ValueTooLarge {
            value: n,
            max: EVENTFD_MAX,
        });
    }
    loop {
        match rustix::io::write(fd, &n.to_ne_bytes()) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Err(Error::Overflow),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Takes one unit of the eventfd `fd` without waiting, whatever the descriptor's mode (see
/// [`EventSemaphore::try_wait`]).
pub(crate) fn try_wait(fd: BorrowedFd<'_>) -> Result<()> {
    loop {
        match crate::sys::read_nowait(fd) {
            Ok(n) => return unit(n),
            Err(libc::EINTR) => continue,
            Err(libc::EAGAIN) => return Err(Error::WouldBlock),
            // RWF_NOWAIT is not supported for eventfd before Linux 5.12: make the descriptor
            // non-blocking instead (every method copes with either mode).
            Err(libc::EOPNOTSUPP) | Err(libc::EINVAL) => {
                rustix::io::ioctl_fionbio(fd, true)?;
                return read_one(fd);
            }
            Err(e) => return Err(Error::errno(e)),
        }
    }
}

/// One `read`: blocks on a blocking descriptor, `WouldBlock` on a non-blocking one.
fn read_one(fd: BorrowedFd<'_>) -> Result<()> {
    let mut buf = [0u8; 8];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(n) => return unit(n),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Err(Error::WouldBlock),
            Err(e) => return Err(e.into()),
        }
    }
}

/// An eventfd read is always 8 bytes; anything else means the descriptor is not an eventfd
/// (`From<OwnedFd>` takes the caller's word for it).
fn unit(n: usize) -> Result<()> {
    if n == 8 {
        Ok(())
    } else {
        Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("read {n} bytes from an EventSemaphore: its descriptor is not an eventfd"),
        )))
    }
}

impl AsFd for EventSemaphore {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventSemaphore {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<EventSemaphore> for OwnedFd {
    fn from(s: EventSemaphore) -> OwnedFd {
        s.fd
    }
}

/// Adopts a descriptor that must be an eventfd created with `EFD_SEMAPHORE` (for example one
/// passed to this process by its parent). Blocking or non-blocking, both work.
impl From<OwnedFd> for EventSemaphore {
    fn from(fd: OwnedFd) -> EventSemaphore {
        EventSemaphore { fd }
    }
}
