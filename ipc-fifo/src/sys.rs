//! The crate's only unsafe code (with the `tokio` feature): registering descriptors it owns
//! with tokio's reactor, and closing one in a forked child without touching the reactor.
//!
//! `AsyncFd::register_with_interest` is `unsafe` because the reactor keeps the descriptor's
//! *number*: the descriptor must stay open, and be the same open file description, for the
//! whole life of the `AsyncFd`. [`Registered`] makes that true by construction: it moves an
//! [`OwnedFd`] into the `AsyncFd` and never hands out `&mut` access to it (through which the
//! descriptor could be swapped or closed), only `&AsyncFd` and the descriptor back by value
//! ([`Registered::into_inner`], which deregisters first).
//!
//! Raw and std types in and out; nothing of the crate above it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A descriptor of ours, registered with the current tokio runtime's reactor.
///
/// Dropped in the process that registered it, it deregisters and closes the descriptor. In a
/// forked child (which shares the reactor's epoll instance with its parent, where the same
/// descriptor is registered) it only closes its copy: deregistering there would remove the
/// parent's registration.
pub(crate) struct Registered {
    /// Always `Some` until drop or `into_inner`.
    io: Option<AsyncFd<OwnedFd>>,
    interest: Interest,
    pid: u32,
}

impl Registered {
    /// Registers `fd` (which must be in non-blocking mode: the reactor only says when to try)
    /// for `interest` with the current runtime's reactor.
    ///
    /// # Errors
    /// Outside a tokio runtime, an error that says so (instead of tokio's panic); what
    /// `epoll_ctl` fails with. `fd` is closed on error.
    ///
    /// # Panics
    /// Inside a runtime built without IO (`enable_io`/`enable_all`), as every tokio I/O type.
    pub(crate) fn new(fd: OwnedFd, interest: Interest) -> io::Result<Registered> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "ipc-fifo's async types must be made inside a tokio runtime (with IO enabled)",
            ));
        }
        // SAFETY: `fd` is an open descriptor that the `AsyncFd` owns from now on. It stays
        // open and the same open file description for the `AsyncFd`'s whole life: an
        // `OwnedFd` closes its descriptor only when dropped, and this type never gives out
        // `&mut` access to the `AsyncFd` (no `get_mut`, no `*_mut` methods), so nothing can
        // replace or close it; `into_inner` takes it back out only after deregistering.
        // `OwnedFd::as_raw_fd` always returns the same number.
        let io = unsafe { AsyncFd::register_with_interest(fd, interest) };
        Ok(Registered {
            io: Some(io.map_err(io::Error::from)?),
            interest,
            pid: std::process::id(),
        })
    }

    /// The registration, for readiness and `try_io`.
    pub(crate) fn io(&self) -> &AsyncFd<OwnedFd> {
        self.io.as_ref().expect("registered until dropped")
    }

    /// Deregisters and gives the descriptor back (still in non-blocking mode).
    pub(crate) fn into_inner(mut self) -> OwnedFd {
        self.io
            .take()
            .expect("registered until dropped")
            .into_inner()
    }

    /// Registers the same open file description anew, under a duplicate descriptor (the old
    /// one is deregistered and closed). tokio keeps a hang-up as final (`POLLHUP`, `POLLERR`:
    /// "read closed", "write closed"), but a FIFO's hang-up ends when a peer comes back; a
    /// fresh registration reports the FIFO's state as it is now.
    ///
    /// # Errors
    /// What `fcntl(F_DUPFD_CLOEXEC)` or the registration fail with; `self` is unchanged then.
    pub(crate) fn refresh(&mut self) -> io::Result<()> {
        let fd = rustix::io::fcntl_dupfd_cloexec(self.io().get_ref(), 0)?;
        *self = Registered::new(fd, self.interest)?;
        Ok(())
    }
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("fd", &self.io.as_ref().map(|io| io.as_raw_fd()))
            .finish()
    }
}

impl AsFd for Registered {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io().get_ref().as_fd()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else { return };
        if self.pid == std::process::id() {
            return drop(io); // deregisters, then closes
        }
        // A forked child: close our copy of the descriptor, and leave the registration (the
        // parent's, in the epoll instance both share) alone.
        let raw = io.as_raw_fd();
        std::mem::forget(io);
        // SAFETY: `raw` was owned by the `AsyncFd` just forgotten, so nothing else owns it or
        // will close it; it is closed exactly once, here.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
    }
}
