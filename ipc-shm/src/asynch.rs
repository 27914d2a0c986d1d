//! Async ring endpoints on tokio's reactor (the `tokio` feature): [`AsyncRingWriter`] and
//! [`AsyncRingReader`] wait on the ring's [`Doorbell`](crate::Doorbell), and on the peer's
//! process (a pidfd), instead of a futex.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::OwnedFd;
use std::task::Poll;

use ::tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::region::Segment;
use crate::ring::{Reservation, RingReader, RingWriter};
use crate::sys;

/// What an async endpoint waits on: its doorbell half, and the peer's process.
struct Waiter {
    bell: AsyncFd<OwnedFd>,
    /// The peer's pid and a pidfd of it (readable once it has exited).
    peer: Option<(u32, AsyncFd<OwnedFd>)>,
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("bell", &self.bell.get_ref())
            .field("peer", &self.peer.as_ref().map(|(pid, _)| pid))
            .finish()
    }
}

/// Reads what the doorbell holds: `Ok` if it had been rung, `WouldBlock` if not.
fn drain(fd: &OwnedFd) -> io::Result<()> {
    let mut buf = [0u8; 64];
    match rustix::io::read(fd, &mut buf) {
        Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Waiter {
    fn new(bell: OwnedFd) -> Result<Waiter> {
        Ok(Waiter {
            bell: sys::register_readable(bell)?,
            peer: None,
        })
    }

    /// Watches the process `pid` (0: no peer attached yet, its attach rings the doorbell).
    /// Returns false if it is already gone.
    fn watch(&mut self, pid: u32) -> Result<bool> {
        if pid == 0 || self.peer.as_ref().is_some_and(|(p, _)| *p == pid) {
            return Ok(true);
        }
        self.peer = None;
        let Some(p) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return Ok(false);
        };
        match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => {
                self.peer = Some((pid, sys::register_readable(fd)?));
                Ok(true)
            }
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the doorbell has been rung, or the peer's process has ended.
    async fn wait(&mut self, peer_pid: u32) -> Result<()> {
        if !self.watch(peer_pid)? {
            return Ok(());
        }
        let bell = &self.bell;
        let peer = self.peer.as_ref().map(|(_, fd)| fd);
        poll_fn(|cx| {
            loop {
                match bell.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => match guard.try_io(|fd| drain(fd.get_ref())) {
                        Ok(_) => return Poll::Ready(Ok(())),
                        // Not rung after all: readiness cleared, poll again to be woken.
                        Err(_would_block) => continue,
                    },
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::from(e))),
                    Poll::Pending => break,
                }
            }
            if let Some(p) = peer {
                if p.poll_read_ready(cx).is_ready() {
                    return Poll::Ready(Ok(())); // the peer exited: the next try_ call says so
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// The writing end of a [`Ring`](crate::Ring) for tokio: [`send`](Self::send) waits for room on
/// the ring's doorbell instead of blocking the thread.
///
/// Built from a [`RingWriter`] whose ring was given a [`Doorbell`](crate::Doorbell)
/// ([`Ring::with_doorbell`](crate::Ring::with_doorbell)); the reader needs the same doorbell (a
/// blocking reader too: it rings the doorbell when it frees room). The fast path is the
/// writer's: a message that fits is committed at once, without a system call. A full ring
/// arms the doorbell (the reader rings it with the next room it frees) and the task waits on
/// it and on the reader's process (a pidfd: a reader that exits without closing is noticed).
///
/// Cancellation: a message is committed whole inside one poll or not at all, so dropping a
/// pending [`send`](Self::send) leaves nothing half-written in the ring; the message was simply
/// not sent.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ipc_shm::Error> {
/// use ipc_shm::{Anon, AsyncRingReader, AsyncRingWriter, Doorbell, Ring};
/// let seg = Anon::new(Ring::segment_size(4096)?)?;
/// let bell = Doorbell::new()?;
/// let w = Ring::create(&seg)?.with_doorbell(bell.try_clone()?).into_writer()?;
/// let r = Ring::open(&seg)?.with_doorbell(bell).into_reader()?;
/// let (mut w, mut r) = (AsyncRingWriter::new(w)?, AsyncRingReader::new(r)?);
/// let sender = async {
///     for i in 0..100u32 {
///         w.send(&i.to_le_bytes().repeat(100)).await?; // 400 bytes: the ring fills up
///     }
///     Ok::<(), ipc_shm::Error>(())
/// };
/// let receiver = async {
///     let mut buf = [0u8; 400];
///     for i in 0..100u32 {
///         assert_eq!(r.recv(&mut buf).await?, 400);
///         assert_eq!(buf[..4], i.to_le_bytes());
///     }
///     Ok::<(), ipc_shm::Error>(())
/// };
/// tokio::try_join!(sender, receiver)?;
/// # Ok(()) }
/// ```
///
/// Between processes that know the segment's name (the README's example,
/// `examples/async_ring.rs`):
///
#[doc = concat!("```\n", include_str!("../examples/async_ring.rs"), "```")]
///
/// After fork: as [`RingWriter`]; the reactor registration belongs to the runtime that made
/// it, so a child uses neither (it may drop them).
pub struct AsyncRingWriter<S: Segment> {
    inner: RingWriter<S>,
    waiter: Waiter,
}

impl<S: Segment> fmt::Debug for AsyncRingWriter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRingWriter")
            .field("inner", &self.inner)
            .field("waiter", &self.waiter)
            .finish()
    }
}

impl<S: Segment> AsyncRingWriter<S> {
    /// Registers the writer's doorbell half (a duplicate of its descriptor, owned by the
    /// registration) with the current tokio reactor.
    ///
    /// # Errors
    /// [`Error::NoDoorbell`] if the writer's ring was not given a doorbell; [`Error::Io`] if the
    /// reactor refuses the descriptor.
    ///
    /// # Panics
    /// Outside a tokio runtime (like tokio's own constructors).
    pub fn new(mut inner: RingWriter<S>) -> Result<AsyncRingWriter<S>> {
        let bell = inner.wait_bell()?.ok_or(Error::NoDoorbell)?;
        inner.set_async(true);
        Ok(AsyncRingWriter {
            waiter: Waiter::new(bell)?,
            inner,
        })
    }

    /// Sends `msg`, waiting (asynchronously) while the ring is full.
    ///
    /// # Errors
    /// As [`RingWriter::send`].
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        loop {
            match self.inner.try_send(msg) {
                Err(Error::WouldBlock) => self.waiter.wait(self.inner.peer_pid()).await?,
                r => return r,
            }
        }
    }

    /// Waits (asynchronously) for room for a message of `len` bytes, then reserves it for the
    /// caller to fill in place ([`Reservation`]). Dropping the future, or the reservation,
    /// sends nothing.
    ///
    /// # Errors
    /// As [`RingWriter::send`].
    pub async fn reserve(&mut self, len: usize) -> Result<Reservation<'_, S>> {
        loop {
            match self.inner.try_room(len) {
                Err(Error::WouldBlock) => self.waiter.wait(self.inner.peer_pid()).await?,
                Err(e) => return Err(e),
                Ok(()) => break,
            }
        }
        self.inner.try_reserve(len)
    }

    /// The blocking writer inside.
    pub fn get_ref(&self) -> &RingWriter<S> {
        &self.inner
    }

    /// The blocking writer inside, for its `try_` calls and settings.
    pub fn get_mut(&mut self) -> &mut RingWriter<S> {
        &mut self.inner
    }

    /// Unregisters from the reactor and returns the blocking writer.
    pub fn into_inner(mut self) -> RingWriter<S> {
        self.inner.set_async(false);
        self.inner
    }
}

/// The reading end of a [`Ring`](crate::Ring) for tokio: [`recv`](Self::recv) waits for a
/// message on the ring's doorbell instead of blocking the thread.
///
/// Built from a [`RingReader`] whose ring was given a [`Doorbell`](crate::Doorbell); the writer
/// needs the same doorbell (a blocking writer too: it rings it when it commits while this
/// reader waits). A message already in the ring is taken at once, without a system call; an
/// empty ring arms the doorbell and the task waits on it and on the writer's process (a
/// writer that exits without closing is noticed: [`Error::PeerGone`] after what it sent).
///
/// Cancellation: a message is copied out and freed inside one poll or not at all, so dropping
/// a pending [`recv`](Self::recv) loses nothing: the next receive gets the message.
///
/// See [`AsyncRingWriter`] for an example.
///
/// After fork: as [`RingReader`].
pub struct AsyncRingReader<S: Segment> {
    inner: RingReader<S>,
    waiter: Waiter,
}

impl<S: Segment> fmt::Debug for AsyncRingReader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRingReader")
            .field("inner", &self.inner)
            .field("waiter", &self.waiter)
            .finish()
    }
}

impl<S: Segment> AsyncRingReader<S> {
    /// Registers the reader's doorbell half (a duplicate of its descriptor, owned by the
    /// registration) with the current tokio reactor.
    ///
    /// # Errors
    /// [`Error::NoDoorbell`] if the reader's ring was not given a doorbell; [`Error::Io`] if the
    /// reactor refuses the descriptor.
    ///
    /// # Panics
    /// Outside a tokio runtime (like tokio's own constructors).
    pub fn new(mut inner: RingReader<S>) -> Result<AsyncRingReader<S>> {
        let bell = inner.wait_bell()?.ok_or(Error::NoDoorbell)?;
        inner.set_async(true);
        Ok(AsyncRingReader {
            waiter: Waiter::new(bell)?,
            inner,
        })
    }

    /// Receives the next message into `buf`, waiting (asynchronously) while the ring is empty;
    /// returns its length.
    ///
    /// # Errors
    /// As [`RingReader::recv`].
    pub async fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.inner.try_recv(buf) {
                Err(Error::WouldBlock) => self.waiter.wait(self.inner.peer_pid()).await?,
                r => return r,
            }
        }
    }

    /// Receives the next message into a new vector, waiting while the ring is empty.
    ///
    /// # Errors
    /// As [`RingReader::recv_vec`].
    pub async fn recv_vec(&mut self) -> Result<Vec<u8>> {
        loop {
            match self.inner.try_recv_vec() {
                Err(Error::WouldBlock) => self.waiter.wait(self.inner.peer_pid()).await?,
                r => return r,
            }
        }
    }

    /// Waits for the next message, then lends it to `f` in place, as
    /// [`RingReader::recv_with`].
    ///
    /// # Errors
    /// As [`RingReader::recv_with`].
    pub async fn recv_with<R>(&mut self, f: impl FnOnce(&crate::Message<'_>) -> R) -> Result<R> {
        loop {
            match self.inner.try_ready() {
                Err(Error::WouldBlock) => self.waiter.wait(self.inner.peer_pid()).await?,
                Err(e) => return Err(e),
                Ok(()) => return self.inner.try_recv_with(f),
            }
        }
    }

    /// The blocking reader inside.
    pub fn get_ref(&self) -> &RingReader<S> {
        &self.inner
    }

    /// The blocking reader inside, for its `try_` calls and settings.
    pub fn get_mut(&mut self) -> &mut RingReader<S> {
        &mut self.inner
    }

    /// Unregisters from the reactor and returns the blocking reader.
    pub fn into_inner(mut self) -> RingReader<S> {
        self.inner.set_async(false);
        self.inner
    }
}
