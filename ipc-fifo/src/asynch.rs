//! The `tokio` feature: async FIFO ends, opens that wait without blocking the runtime, and
//! cancellation-safe records and frames.
//!
//! Every descriptor here is non-blocking and registered with the reactor of the runtime the
//! handle was made in ([`crate::sys::Registered`], the crate's one `unsafe` registration). A
//! wait is a readiness future — of the FIFO itself, of an inotify descriptor (a FIFO or a
//! directory appearing, someone opening the FIFO) or of a timerfd (the deadline, the retry
//! caps) — so no thread is ever blocked and no tokio timer is needed: a runtime needs only
//! IO enabled.
//!
//! Cancellation: every system call that moves data happens inside one `poll`, and whatever it
//! moved is recorded in the handle before that `poll` returns. So a future dropped between two
//! polls has either done its whole step or nothing of it: a record is written whole or not at
//! all; a frame that was begun keeps its unsent rest in the writer; bytes a receive read stay
//! in the record reader for the next one.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::fs::OFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use crate::error::{Error, Result};
use crate::fifo::{OwnerCheck, open_checked};
use crate::open::{
    APPEAR_CAP, FifoReader, FifoWriter, RETRY_CAP, ReaderOptions, Want, WriterOptions, drain,
    keep_alive_end, read_end, set_nonblocking, watch_appearance, watch_opens, watch_opens_of,
    write_end, writer_present, writev_end,
};
use crate::path::named;
use crate::record::{
    Frames, HEADER_LEN, PIPE_BUF, RECORD_MAX, encode_record, frame_header, short_record,
};
use crate::sys::Registered;
use crate::time::{Deadline, poll_until};

/// Which readiness an operation waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

/// How many times one `poll` re-registers a descriptor whose hang-up tokio kept (see
/// [`Registered::refresh`]) before it yields: the kernel changes its mind only when a peer
/// comes or goes, so more than once in a row is a race with a peer, never a loop.
const REFRESHES_PER_POLL: usize = 2;

/// Waits for `io`'s readiness in `dir`, then tries `op` (non-blocking system calls on the
/// descriptor) until it does not say `WouldBlock`.
///
/// `op` returns its result and whether it drained the descriptor (a short read or write of a
/// pipe: it is empty, or full), in which case the readiness is cleared at once instead of
/// after one more call that would say `WouldBlock` — as tokio's own pipes do.
///
/// tokio treats a hang-up (`POLLHUP` for a reader, `POLLERR` for a writer) as final, so a
/// FIFO whose peer came back after a hang-up would stay "ready" and `op` would say
/// `WouldBlock` forever: then the descriptor is registered anew, which reports its real state.
fn poll_io<R>(
    io: &mut Registered,
    cx: &mut Context<'_>,
    dir: Dir,
    mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<(R, bool)>,
) -> Poll<io::Result<R>> {
    let mut refreshed = 0;
    loop {
        let mut guard = ready!(match dir {
            Dir::Read => io.io().poll_read_ready(cx),
            Dir::Write => io.io().poll_write_ready(cx),
        })?;
        let ready = guard.ready();
        let closed = match dir {
            Dir::Read => ready.is_read_closed(),
            Dir::Write => ready.is_write_closed(),
        };
        match guard.try_io(|fd| op(fd.get_ref().as_fd())) {
            Ok(Ok((r, drained))) => {
                if drained {
                    guard.clear_ready();
                }
                return Poll::Ready(Ok(r));
            }
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            Err(_would_block) => {
                drop(guard);
                if closed {
                    if refreshed == REFRESHES_PER_POLL {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    io.refresh()?;
                    refreshed += 1;
                }
            }
        }
    }
}

/// Whether `fd` has data or a hang-up right now (`poll` with a zero timeout).
fn ready_now(fd: BorrowedFd<'_>) -> Result<bool> {
    let now = Deadline::after(Duration::ZERO);
    Ok(poll_until(fd, PollFlags::IN, now, Some(Duration::ZERO))?.is_some())
}

/// Polls `r` for readability; if it is readable, empties it (inotify events and timer
/// expirations are only wake-ups here) and clears its readiness. `Ready(true)` if it was.
fn poll_wake_up(r: &Registered, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
    match r.io().poll_read_ready(cx) {
        Poll::Ready(Ok(mut guard)) => {
            drain(r.as_fd());
            guard.clear_ready();
            Poll::Ready(Ok(true))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Ready(Ok(false)),
    }
}

/// Waits until one of `fds` is readable (each readable one is emptied); returns a bit mask of
/// those that were.
async fn wake_up(fds: &[&Registered]) -> io::Result<u32> {
    poll_fn(|cx| {
        let mut fired = 0;
        for (i, r) in fds.iter().enumerate() {
            if ready!(poll_wake_up(r, cx))? {
                fired |= 1 << i;
            }
        }
        if fired == 0 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(fired))
        }
    })
    .await
}

/// A monotonic timer (a timerfd, registered) for the deadline and the retry caps of a waiting
/// open: no tokio timer is involved, so a runtime needs only IO enabled.
struct Timer(Registered);

impl Timer {
    fn new() -> Result<Timer> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )?;
        Ok(Timer(Registered::new(fd, Interest::READABLE)?))
    }

    /// The timer of `slot`, made on first use.
    fn of(slot: &mut Option<Timer>) -> Result<&Timer> {
        if slot.is_none() {
            *slot = Some(Timer::new()?);
        }
        Ok(slot.as_ref().expect("just made"))
    }

    /// Fires once, `after` from now (`None`: never).
    fn arm(&self, after: Option<Duration>) -> Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let spec = |d: Duration| Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        };
        // A zero value disarms a timerfd: "now" is the shortest time that still fires.
        let value = after.map_or(Duration::ZERO, |d| d.max(Duration::from_nanos(1)));
        let new = Itimerspec {
            it_interval: spec(Duration::ZERO),
            it_value: spec(value),
        };
        timerfd_settime(self.0.as_fd(), TimerfdTimerFlags::empty(), &new)?;
        Ok(())
    }
}

/// The waiting of an async open, as the blocking `Waiter` does it: inotify watches for what it
/// waits for, retry caps and the deadline on a timer, and the error once the deadline passes.
struct AsyncWaiter<'a> {
    path: &'a Path,
    deadline: Deadline,
    /// What the watch is for, and the inotify descriptor (`None`: no inotify, retry on a timer).
    watch: Option<(Want, Option<Registered>)>,
    timer: Option<Timer>,
}

impl<'a> AsyncWaiter<'a> {
    fn new(path: &'a Path, deadline: Deadline) -> AsyncWaiter<'a> {
        AsyncWaiter {
            path,
            deadline,
            watch: None,
            timer: None,
        }
    }

    /// Called after an attempt failed for want of `want`: returns when it is worth trying
    /// again, or the error to return once the deadline has passed ([`Error::NotFound`] for a
    /// FIFO that never appeared, [`Error::TimedOut`] for a peer that never came).
    async fn wait(&mut self, want: Want) -> Result<()> {
        let left = self.deadline.remaining();
        if left.is_some_and(|l| l.is_zero()) {
            return Err(match want {
                Want::Appear => Error::not_found(self.path),
                Want::Opens => Error::TimedOut,
            });
        }
        let watch = match &self.watch {
            Some((w, fd)) if *w == want => fd,
            _ => {
                // Set the watch up, then try again at once: it may have happened meanwhile.
                let fd = match want {
                    Want::Appear => watch_appearance(self.path),
                    Want::Opens => watch_opens(self.path),
                };
                let fd = fd
                    .map(|fd| Registered::new(fd, Interest::READABLE))
                    .transpose()?;
                self.watch = Some((want, fd));
                return Ok(());
            }
        };
        let timer = Timer::of(&mut self.timer)?;
        match watch {
            Some(w) => {
                let cap = match want {
                    Want::Appear => APPEAR_CAP,
                    Want::Opens => RETRY_CAP,
                };
                timer.arm(Some(left.map_or(cap, |l| l.min(cap))))?;
                if wake_up(&[w, &timer.0]).await? & 1 != 0 {
                    // Something happened: watch anew next time, so that the watch follows a
                    // FIFO that was replaced, or the then-nearest existing directory.
                    self.watch = None;
                }
            }
            // No inotify instance left: retry on a short timer instead.
            None => {
                timer.arm(Some(left.unwrap_or(RETRY_CAP).min(RETRY_CAP / 5)))?;
                wake_up(&[&timer.0]).await?;
                self.watch = None;
            }
        }
        Ok(())
    }
}

/// Waits until a writer has opened the FIFO that `io` reads, or `deadline` passes; `false` on
/// time-out. The same test as the blocking open's (a writer has it open now, data is there, or
/// one came and went), woken by the FIFO's readiness, an inotify watch on its inode
/// (`IN_OPEN`), or (without inotify) a timer every [`RETRY_CAP`].
async fn wait_for_writer(
    io: &mut Registered,
    deadline: Deadline,
    timer: &mut Option<Timer>,
) -> Result<bool> {
    let mut watch: Option<Option<Registered>> = None;
    loop {
        if ready_now(io.as_fd())? || writer_present(io.as_fd()) {
            return Ok(true);
        }
        let left = deadline.remaining();
        if left.is_some_and(|l| l.is_zero()) {
            return Ok(false);
        }
        let Some(w) = &watch else {
            // Set the watch up, then check again at once: a writer may have come meanwhile.
            let w = watch_opens_of(io.as_fd());
            watch = Some(
                w.map(|w| Registered::new(w, Interest::READABLE))
                    .transpose()?,
            );
            continue;
        };
        let timer = Timer::of(timer)?;
        timer.arm(match w {
            Some(_) => left,
            None => Some(left.map_or(RETRY_CAP, |l| l.min(RETRY_CAP))),
        })?;
        let fifo: &Registered = io;
        // Ok(true): the FIFO reports a hang-up that tokio keeps (see `poll_io`).
        let latched = poll_fn(|cx| {
            let mut woke = false;
            let mut latched = false;
            // The FIFO itself: data or a hang-up end the wait. Its readiness is left for the
            // reads to come; one that `poll` no longer confirms is cleared.
            loop {
                match fifo.io().poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        if ready_now(fifo.as_fd())? {
                            woke = true;
                        } else if guard.ready().is_read_closed() {
                            latched = true;
                            woke = true;
                        } else {
                            guard.clear_ready();
                            continue;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::from(e))),
                    Poll::Pending => {}
                }
                break;
            }
            if let Some(w) = w {
                woke |= ready!(poll_wake_up(w, cx))?;
            }
            woke |= ready!(poll_wake_up(&timer.0, cx))?;
            if woke {
                Poll::Ready(Ok(latched))
            } else {
                Poll::Pending
            }
        })
        .await?;
        if latched {
            io.refresh()?;
        }
    }
}

/// The read end of a FIFO for tokio: [`AsyncRead`], and async opens that wait for the FIFO
/// and its first writer without blocking the runtime. Available with the `tokio` feature.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use ipc_fifo::{AsyncFifoReader, AsyncFifoWriter, Fifo, PrivateDir};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let dir = PrivateDir::new("ipcrs-doc-async")?;
/// let fifo = Fifo::create(dir.join("f")?)?;
/// let path = fifo.path().to_owned();
/// // The reader's open waits for a writer, here a task on the same (one-thread) runtime.
/// let writer = tokio::spawn(async move {
///     let mut w = AsyncFifoWriter::open_timeout(&path, Duration::from_secs(5)).await?;
///     w.write_all(b"hello").await?;
///     Ok::<_, std::io::Error>(())
/// });
/// let mut reader = AsyncFifoReader::open_timeout(fifo.path(), Duration::from_secs(5)).await?;
/// let mut got = Vec::new();
/// reader.read_to_end(&mut got).await?; // the writer task ends: end-of-file
/// assert_eq!(got, b"hello");
/// writer.await??;
/// # Ok(()) }
/// ```
///
/// Reads never return a false end-of-file: before the first writer has come, a read waits.
/// End-of-file (a read of 0 bytes) means every writer that came has gone; a later writer may
/// come back, and reads then go on with its data ([`KeepAlive::On`](crate::KeepAlive::On)
/// readers never see end-of-file).
///
/// Reads are cancellation-safe: a read future dropped before it completed read nothing.
///
/// The descriptor is non-blocking and registered with the reactor of the runtime it was made
/// in, which must have IO enabled; it is used by that runtime only. Its number can change
/// (it is registered anew, under a duplicate, after a writer's hang-up that tokio would keep
/// as final).
///
/// # After `fork`
///
/// Not for a forked child: tokio's runtime does not survive `fork`. Dropping an inherited
/// async handle there only closes its descriptor (it does not deregister it from the epoll
/// instance parent and child share, which would take the parent's registration away).
///
/// # A server and its clients
///
/// The README's tokio example (`examples/async_server.rs`): a keep-alive server of records
/// and clients whose opens wait for it, on a one-thread runtime.
///
#[doc = concat!("```\n", include_str!("../examples/async_server.rs"), "```")]
pub struct AsyncFifoReader {
    io: Registered,
    keep_alive: Option<OwnedFd>,
}

impl fmt::Debug for AsyncFifoReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncFifoReader")
            .field("fd", &self.as_raw_fd())
            .field("keep_alive", &self.keep_alive.is_some())
            .finish()
    }
}

/// Async opens with reader options (the `tokio` feature).
impl ReaderOptions {
    /// As [`ReaderOptions::open`], without blocking the runtime: waits for the FIFO (and its
    /// directory) to appear and for its first writer; see [`AsyncFifoReader::open`].
    ///
    /// # Errors
    /// As [`AsyncFifoReader::open`].
    pub async fn open_async(self, path: impl AsRef<Path>) -> Result<AsyncFifoReader> {
        open_reader(path.as_ref(), self, Some(Deadline::after(Duration::MAX))).await
    }

    /// As [`ReaderOptions::open_timeout`], without blocking the runtime; see
    /// [`AsyncFifoReader::open_timeout`].
    ///
    /// # Errors
    /// As [`AsyncFifoReader::open_timeout`].
    pub async fn open_timeout_async(
        self,
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<AsyncFifoReader> {
        open_reader(path.as_ref(), self, Some(Deadline::after(timeout))).await
    }

    /// As [`ReaderOptions::try_open`] (no waiting at all), for tokio; see
    /// [`AsyncFifoReader::try_open`].
    ///
    /// # Errors
    /// As [`AsyncFifoReader::try_open`].
    pub fn try_open_async(self, path: impl AsRef<Path>) -> Result<AsyncFifoReader> {
        let path = path.as_ref();
        named(path)?;
        let fd = open_checked(path, OFlags::RDONLY | OFlags::NONBLOCK, self.owner_check)?;
        let keep_alive = keep_alive_end(path, &fd, self.keep_alive)?;
        Ok(AsyncFifoReader {
            io: Registered::new(fd, Interest::READABLE)?,
            keep_alive,
        })
    }
}

async fn open_reader(
    path: &Path,
    opts: ReaderOptions,
    wait: Option<Deadline>,
) -> Result<AsyncFifoReader> {
    named(path)?;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK;
    let mut timer = None;
    let fd = match wait {
        None => open_checked(path, flags, opts.owner_check)?,
        Some(deadline) => {
            let mut waiter = AsyncWaiter::new(path, deadline);
            let fd = loop {
                match open_checked(path, flags, opts.owner_check) {
                    Ok(fd) => break fd,
                    Err(Error::NotFound { .. }) => waiter.wait(Want::Appear).await?,
                    Err(e) => return Err(e),
                }
            };
            timer = waiter.timer;
            fd
        }
    };
    let keep_alive = keep_alive_end(path, &fd, opts.keep_alive)?;
    let mut io = Registered::new(fd, Interest::READABLE)?;
    if let (Some(deadline), None) = (wait, &keep_alive) {
        if !wait_for_writer(&mut io, deadline, &mut timer).await? {
            return Err(Error::TimedOut);
        }
    }
    Ok(AsyncFifoReader { io, keep_alive })
}

impl AsyncFifoReader {
    /// Opens `path` for reading and waits, without blocking the runtime, for the FIFO to
    /// appear (if it, or its directory, is not there yet) and for a writer to have it open:
    /// the async [`FifoReader::open`], with the same checks (`O_NOFOLLOW`, a FIFO owned by us).
    ///
    /// The wait is woken by inotify and by the FIFO's readiness, with a timer where inotify
    /// is missing; no thread blocks. Dropping the future stops the wait and closes what it
    /// opened: a writer released by that reader's open (a peer's blocking `open(O_WRONLY)`)
    /// then finds no reader, as with any reader that comes and goes.
    ///
    /// # Errors
    /// As [`FifoReader::open`]; [`Error::Io`] outside a tokio runtime.
    ///
    /// # Panics
    /// Inside a runtime built without IO enabled (as every tokio I/O type).
    pub async fn open(path: impl AsRef<Path>) -> Result<AsyncFifoReader> {
        ReaderOptions::new().open_async(path).await
    }

    /// As [`AsyncFifoReader::open`], waiting at most `timeout` in all (`Duration::MAX`:
    /// forever) for the FIFO to appear and for its first writer.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no FIFO appeared in time, [`Error::TimedOut`] if no writer came
    /// in time, or as [`AsyncFifoReader::open`].
    pub async fn open_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<AsyncFifoReader> {
        ReaderOptions::new().open_timeout_async(path, timeout).await
    }

    /// Opens `path` for reading without waiting (for the FIFO or a writer). Reads then wait
    /// for the first writer, never returning a false end-of-file.
    ///
    /// # Errors
    /// [`Error::NotFound`] at once if nothing is at the path, or as [`AsyncFifoReader::open`].
    pub fn try_open(path: impl AsRef<Path>) -> Result<AsyncFifoReader> {
        ReaderOptions::new().try_open_async(path)
    }

    /// Makes `reader` async: switches it to non-blocking mode and registers it with the
    /// current runtime's reactor.
    ///
    /// # Errors
    /// Outside a tokio runtime, or what `fcntl` or the registration fail with; the reader is
    /// closed then.
    pub fn new(reader: FifoReader) -> Result<AsyncFifoReader> {
        let (fd, keep_alive) = reader.into_parts();
        set_nonblocking(&fd, true)?;
        Ok(AsyncFifoReader {
            io: Registered::new(fd, Interest::READABLE)?,
            keep_alive,
        })
    }

    /// The blocking reader of the same FIFO end (deregistered, back in blocking mode).
    ///
    /// # Errors
    /// What `fcntl` fails with.
    pub fn into_blocking(self) -> Result<FifoReader> {
        let fd = self.io.into_inner();
        set_nonblocking(&fd, false)?;
        Ok(FifoReader::from_parts(fd, self.keep_alive))
    }

    /// Whether this reader holds a keep-alive write end (it never sees end-of-file).
    pub fn is_keep_alive(&self) -> bool {
        self.keep_alive.is_some()
    }

    /// One read without waiting: what is there now (`Ok(0)` only at end-of-file), or
    /// [`io::ErrorKind::WouldBlock`].
    ///
    /// # Errors
    /// `WouldBlock`, or what `read` fails with.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_end(self.io.as_fd(), buf)
    }
}

impl AsyncRead for AsyncFifoReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let this = self.get_mut();
        let dst = buf.initialize_unfilled();
        let len = dst.len();
        let n = ready!(poll_io(&mut this.io, cx, Dir::Read, |fd| {
            let n = read_end(fd, dst)?;
            Ok((n, n > 0 && n < len))
        }))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// The unsent rest of a frame whose future was dropped after its first byte went out: it is
/// sent before anything else this writer writes.
#[derive(Default)]
struct Rest {
    buf: Vec<u8>,
    at: usize,
}

impl Rest {
    fn len(&self) -> usize {
        self.buf.len() - self.at
    }

    /// Sends as much of the rest as the FIFO takes now; `WouldBlock` while some is left.
    fn send(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        while self.at < self.buf.len() {
            let n = write_end(fd, &self.buf[self.at..])?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.at += n;
        }
        if !self.buf.is_empty() {
            *self = Rest::default(); // and its memory goes
        }
        Ok(())
    }
}

/// A frame being sent: if it is dropped (its future was, or a write failed) after its first
/// byte and before its last, the rest goes into the writer's [`Rest`].
struct Sending<'a> {
    rest: &'a mut Rest,
    header: [u8; HEADER_LEN],
    frame: &'a [u8],
    total: usize,
    done: usize,
}

impl Sending<'_> {
    /// What is left to send, as (at most) two slices for `writev`.
    fn left(&self) -> [IoSlice<'_>; 2] {
        if self.done < HEADER_LEN {
            [
                IoSlice::new(&self.header[self.done..]),
                IoSlice::new(self.frame),
            ]
        } else {
            [
                IoSlice::new(&self.frame[self.done - HEADER_LEN..]),
                IoSlice::new(&[]),
            ]
        }
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if self.done == 0 || self.done == self.total {
            return;
        }
        let mut buf = Vec::with_capacity(self.total - self.done);
        for part in self.left() {
            buf.extend_from_slice(&part);
        }
        *self.rest = Rest { buf, at: 0 };
    }
}

/// The write end of a FIFO for tokio: [`AsyncWrite`], cancellation-safe records and frames,
/// and async opens that wait for a reader without blocking the runtime. Available with the
/// `tokio` feature.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use ipc_fifo::{AsyncFifoReader, AsyncFifoWriter, AsyncRecordReader, Fifo, PrivateDir};
///
/// let dir = PrivateDir::new("ipcrs-doc-async-rec")?;
/// let fifo = Fifo::create(dir.join("f")?)?;
/// let reader = AsyncFifoReader::try_open(fifo.path())?;
/// let mut frames = AsyncRecordReader::framed(reader, 1 << 20); // records are frames too
/// let mut writer = AsyncFifoWriter::open_timeout(fifo.path(), Duration::from_secs(5)).await?;
/// let big = vec![7u8; 100_000]; // larger than the FIFO holds: the writer waits for the reader
/// let sender = tokio::spawn(async move {
///     writer.write_record(b"one").await?;
///     writer.write_frame(&big).await?;
///     Ok::<_, ipc_fifo::Error>(())
/// });
/// assert_eq!(frames.recv().await?, Some(&b"one"[..]));
/// assert_eq!(frames.recv().await?.map(<[u8]>::len), Some(100_000));
/// sender.await??;
/// assert_eq!(frames.recv().await?, None); // the writer is gone
/// # Ok(()) }
/// ```
///
/// Cancellation (a future dropped by `select!`, a timeout, an aborted task):
/// - [`write_record`](AsyncFifoWriter::write_record): the record was written whole, or not
///   at all if the future did not complete.
/// - [`write_frame`](AsyncFifoWriter::write_frame): if nothing of the frame went out, nothing
///   of it ever will; once its first byte went out, the unsent rest is kept in the writer
///   ([`unsent`](AsyncFifoWriter::unsent) says how much) and sent before anything else the
///   writer writes, or by [`flush`](AsyncFifoWriter::flush): the frame arrives whole. Call
///   `flush` before a `write_frame` you may cancel; then `unsent() > 0` after the cancellation
///   says exactly that this frame was begun (and will arrive).
/// - [`AsyncWrite`]: as tokio's own streams, a `write` future dropped before it completed
///   wrote nothing.
///
/// A kept rest is lost if the writer is dropped before it is sent: the reader then sees the
/// frame cut short ([`Error::Truncated`]). Flush first (or use
/// [`into_blocking`](AsyncFifoWriter::into_blocking), which does).
///
/// The writing methods take `&mut self`: a writer is one task's. Tasks of one process that
/// write records to the same FIFO each open their own writer (records from any number of
/// writers never interleave).
///
/// The descriptor is registered as for [`AsyncFifoReader`], and the same rules after `fork`
/// apply.
pub struct AsyncFifoWriter {
    io: Registered,
    rest: Rest,
}

impl fmt::Debug for AsyncFifoWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncFifoWriter")
            .field("fd", &self.as_raw_fd())
            .field("unsent", &self.rest.len())
            .finish()
    }
}

/// Async opens with writer options (the `tokio` feature).
impl WriterOptions {
    /// As [`WriterOptions::open`], without blocking the runtime: waits for the FIFO (and its
    /// directory) to appear and for a reader; see [`AsyncFifoWriter::open`].
    ///
    /// # Errors
    /// As [`AsyncFifoWriter::open`].
    pub async fn open_async(self, path: impl AsRef<Path>) -> Result<AsyncFifoWriter> {
        open_writer(
            path.as_ref(),
            self.owner_check,
            Deadline::after(Duration::MAX),
        )
        .await
    }

    /// As [`WriterOptions::open_timeout`], without blocking the runtime; see
    /// [`AsyncFifoWriter::open_timeout`].
    ///
    /// # Errors
    /// As [`AsyncFifoWriter::open_timeout`].
    pub async fn open_timeout_async(
        self,
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<AsyncFifoWriter> {
        open_writer(path.as_ref(), self.owner_check, Deadline::after(timeout)).await
    }

    /// As [`WriterOptions::try_open`] (only if a reader has the FIFO open now), for tokio;
    /// see [`AsyncFifoWriter::try_open`].
    ///
    /// # Errors
    /// As [`AsyncFifoWriter::try_open`].
    pub fn try_open_async(self, path: impl AsRef<Path>) -> Result<AsyncFifoWriter> {
        let fd = open_checked(
            path.as_ref(),
            OFlags::WRONLY | OFlags::NONBLOCK,
            self.owner_check,
        )?;
        AsyncFifoWriter::registered(fd)
    }
}

async fn open_writer(
    path: &Path,
    check: OwnerCheck,
    deadline: Deadline,
) -> Result<AsyncFifoWriter> {
    named(path)?;
    let mut waiter = AsyncWaiter::new(path, deadline);
    loop {
        match open_checked(path, OFlags::WRONLY | OFlags::NONBLOCK, check) {
            Ok(fd) => return AsyncFifoWriter::registered(fd),
            Err(Error::NotFound { .. }) => waiter.wait(Want::Appear).await?,
            Err(Error::NoReader) => waiter.wait(Want::Opens).await?,
            Err(e) => return Err(e),
        }
    }
}

impl AsyncFifoWriter {
    /// Opens `path` for writing and waits, without blocking the runtime, for the FIFO to
    /// appear (if it, or its directory, is not there yet) and for a reader: the async
    /// [`FifoWriter::open`], with the same checks.
    ///
    /// The opens are non-blocking (`ENXIO` while there is no reader), woken by inotify (the
    /// directory while the FIFO is missing; the FIFO, for someone opening it), and retried
    /// every 50 ms at most for a reader blocked inside its own `open(2)`, which inotify does
    /// not announce. Dropping the future stops the wait; it has opened nothing then.
    ///
    /// # Errors
    /// As [`FifoWriter::open`]; [`Error::Io`] outside a tokio runtime.
    ///
    /// # Panics
    /// Inside a runtime built without IO enabled (as every tokio I/O type).
    pub async fn open(path: impl AsRef<Path>) -> Result<AsyncFifoWriter> {
        WriterOptions::new().open_async(path).await
    }

    /// As [`AsyncFifoWriter::open`], waiting at most `timeout` in all (`Duration::MAX`:
    /// forever) for the FIFO to appear and for a reader.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no FIFO appeared in time, [`Error::TimedOut`] if no reader came
    /// in time, or as [`AsyncFifoWriter::open`].
    pub async fn open_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<AsyncFifoWriter> {
        WriterOptions::new().open_timeout_async(path, timeout).await
    }

    /// Opens `path` for writing only if a reader has it open now.
    ///
    /// # Errors
    /// [`Error::NoReader`] if there is no reader, [`Error::NotFound`] at once if nothing is
    /// at the path, or as [`AsyncFifoWriter::open`].
    pub fn try_open(path: impl AsRef<Path>) -> Result<AsyncFifoWriter> {
        WriterOptions::new().try_open_async(path)
    }

    /// Makes `writer` async: switches it to non-blocking mode and registers it with the
    /// current runtime's reactor.
    ///
    /// # Errors
    /// Outside a tokio runtime, or what `fcntl` or the registration fail with; the writer is
    /// closed then.
    pub fn new(writer: FifoWriter) -> Result<AsyncFifoWriter> {
        let fd = OwnedFd::from(writer);
        set_nonblocking(&fd, true)?;
        AsyncFifoWriter::registered(fd)
    }

    fn registered(fd: OwnedFd) -> Result<AsyncFifoWriter> {
        Ok(AsyncFifoWriter {
            io: Registered::new(fd, Interest::WRITABLE)?,
            rest: Rest::default(),
        })
    }

    /// The blocking writer of the same FIFO end (deregistered, back in blocking mode), after
    /// sending the rest of an interrupted frame, if there is one.
    ///
    /// # Errors
    /// As [`AsyncFifoWriter::flush`], or what `fcntl` fails with.
    pub async fn into_blocking(mut self) -> Result<FifoWriter> {
        self.flush().await?;
        let fd = self.io.into_inner();
        set_nonblocking(&fd, false)?;
        Ok(FifoWriter::from_checked(fd))
    }

    /// How many bytes of an interrupted frame (see the type's docs) are still to be sent.
    pub fn unsent(&self) -> usize {
        self.rest.len()
    }

    /// Sends the rest of an interrupted frame, if there is one, waiting for room as needed.
    /// Cancellation-safe: what is not sent stays.
    ///
    /// # Errors
    /// [`Error::NoReader`] if every reader has gone, [`Error::Io`].
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await?;
        Ok(())
    }

    /// Sends `record` as one atomic write, waiting (without blocking the runtime) while the
    /// FIFO is full: it never interleaves with other writers' records. Any number of writers
    /// (processes, or tasks with a writer each) may write records to one FIFO.
    ///
    /// Cancellation-safe: if the future is dropped before it completed, nothing of the record
    /// was written. The rest of an interrupted frame goes first.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] `{ len, max: RECORD_MAX }` beyond [`RECORD_MAX`] (4092)
    /// bytes (nothing is written), [`Error::NoReader`] if every reader has gone,
    /// [`Error::Io`].
    pub async fn write_record(&mut self, record: &[u8]) -> Result<()> {
        let mut buf = [0u8; PIPE_BUF];
        let total = encode_record(record, &mut buf)?;
        let Self { io, rest } = self;
        poll_fn(|cx| {
            poll_io(io, cx, Dir::Write, |fd| {
                rest.send(fd)?;
                if write_end(fd, &buf[..total])? != total {
                    return Err(short_record().into());
                }
                Ok(((), false))
            })
        })
        .await?;
        Ok(())
    }

    /// As [`AsyncFifoWriter::write_record`], but [`Error::WouldBlock`] instead of waiting
    /// when the FIFO has no room (for the record, or for the rest of an interrupted frame,
    /// which goes first).
    ///
    /// # Errors
    /// [`Error::WouldBlock`], or as [`AsyncFifoWriter::write_record`].
    pub fn try_write_record(&mut self, record: &[u8]) -> Result<()> {
        let mut buf = [0u8; PIPE_BUF];
        let total = encode_record(record, &mut buf)?;
        let fd = self.io.as_fd();
        self.rest.send(fd)?;
        if write_end(fd, &buf[..total])? != total {
            return Err(short_record());
        }
        Ok(())
    }

    /// Sends `frame` (any length up to `u32::MAX`) with its length prefix, in as many writes
    /// as it takes, waiting for room without blocking the runtime; for an
    /// [`AsyncRecordReader::framed`] (or a blocking [`RecordReader::framed`]) reader. Frames
    /// from two writers can interleave: one writer per FIFO.
    ///
    /// Cancellation-safe: dropped before its first byte went out, the frame is not sent at
    /// all; dropped later, its unsent rest stays in the writer and is sent before anything
    /// else (see the type's docs), so the frame always arrives whole. The rest of an earlier
    /// interrupted frame goes first.
    ///
    /// [`RecordReader::framed`]: crate::RecordReader::framed
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] beyond `u32::MAX` bytes (nothing is written),
    /// [`Error::NoReader`], [`Error::Io`]. A frame that fails half-way keeps its rest too.
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        let (header, total) = frame_header(frame.len())?;
        self.flush().await?;
        let Self { io, rest } = self;
        let mut sending = Sending {
            rest,
            header,
            frame,
            total,
            done: 0,
        };
        while sending.done < total {
            let left = total - sending.done;
            let n = poll_fn(|cx| {
                poll_io(io, cx, Dir::Write, |fd| {
                    let n = writev_end(fd, &sending.left())?;
                    Ok((n, n < left))
                })
            })
            .await?;
            if n == 0 {
                return Err(Error::Io(io::ErrorKind::WriteZero.into()));
            }
            sending.done += n;
        }
        Ok(())
    }
}

impl AsyncWrite for AsyncFifoWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let Self { io, rest } = self.get_mut();
        poll_io(io, cx, Dir::Write, |fd| {
            rest.send(fd)?;
            let n = write_end(fd, buf)?;
            Ok((n, n < buf.len()))
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        let Self { io, rest } = self.get_mut();
        poll_io(io, cx, Dir::Write, |fd| {
            rest.send(fd)?;
            let n = writev_end(fd, bufs)?;
            Ok((n, n < len))
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Sends the rest of an interrupted frame, if any (nothing else is buffered).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Self { io, rest } = self.get_mut();
        if rest.len() == 0 {
            return Poll::Ready(Ok(()));
        }
        poll_io(io, cx, Dir::Write, |fd| rest.send(fd).map(|()| ((), false)))
    }

    /// As `poll_flush`: a FIFO's write end closes when the writer is dropped.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// Whole records (or frames) from a FIFO, for tokio: the async [`RecordReader`]. Available
/// with the `tokio` feature.
///
/// [`recv`](AsyncRecordReader::recv) is cancellation-safe: the bytes a dropped receive had
/// read stay in the reader, and the next receive returns the message they begin, whole. No
/// byte and no message is lost or returned twice. The peer's length prefix is not trusted,
/// exactly as in [`RecordReader`].
///
/// [`RecordReader`]: crate::RecordReader
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use ipc_fifo::{AsyncFifoReader, AsyncRecordReader, Fifo, FifoWriter, PrivateDir};
///
/// let dir = PrivateDir::new("ipcrs-doc-async-recv")?;
/// let fifo = Fifo::create(dir.join("f")?)?;
/// let mut records = AsyncRecordReader::new(AsyncFifoReader::try_open(fifo.path())?);
/// // Nothing yet: a receive with a timeout gives up, and loses nothing.
/// let r = tokio::time::timeout(Duration::from_millis(10), records.recv()).await;
/// assert!(r.is_err());
/// let writer = FifoWriter::try_open(fifo.path())?; // any writer: blocking, async, C
/// writer.write_record(b"late")?;
/// assert_eq!(records.recv().await?, Some(&b"late"[..]));
/// # Ok(()) }
/// ```
pub struct AsyncRecordReader {
    reader: AsyncFifoReader,
    frames: Frames,
}

impl fmt::Debug for AsyncRecordReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRecordReader")
            .field("reader", &self.reader)
            .field("frames", &self.frames)
            .finish()
    }
}

impl AsyncRecordReader {
    /// A reader of records (at most [`RECORD_MAX`] bytes each), from any number of writers.
    pub fn new(reader: AsyncFifoReader) -> AsyncRecordReader {
        AsyncRecordReader::framed(reader, RECORD_MAX)
    }

    /// A reader of frames of at most `max_len` bytes, from one writer; memory grows with the
    /// bytes that arrive, as for [`RecordReader::framed`](crate::RecordReader::framed).
    pub fn framed(reader: AsyncFifoReader, max_len: usize) -> AsyncRecordReader {
        AsyncRecordReader {
            reader,
            frames: Frames::new(max_len),
        }
    }

    /// The underlying reader. Reading from it directly takes bytes from under the record
    /// reader.
    pub fn get_ref(&self) -> &AsyncFifoReader {
        &self.reader
    }

    /// The underlying reader; bytes already buffered (a message begun) are lost.
    pub fn into_inner(self) -> AsyncFifoReader {
        self.reader
    }

    /// Waits, without blocking the runtime, for the next whole message; `None` at end-of-file
    /// (every writer has closed and everything was read). A keep-alive reader never returns
    /// `None`. Cancellation-safe (see the type's docs).
    ///
    /// # Errors
    /// As [`RecordReader::recv`](crate::RecordReader::recv): [`Error::MessageTooLarge`] (the
    /// stream is then out of step: every later call says the same), [`Error::Truncated`],
    /// [`Error::Io`].
    pub async fn recv(&mut self) -> Result<Option<&[u8]>> {
        let range = loop {
            if let Some(r) = self.frames.complete()? {
                break r;
            }
            self.frames.make_room()?;
            let Self { reader, frames } = &mut *self;
            let n = poll_fn(|cx| {
                poll_io(&mut reader.io, cx, Dir::Read, |fd| {
                    let spare = frames.spare();
                    let len = spare.len();
                    let n = read_end(fd, spare)?;
                    Ok((n, n > 0 && n < len))
                })
            })
            .await?;
            if n == 0 {
                self.frames.at_end()?;
                return Ok(None);
            }
            self.frames.filled(n);
        };
        Ok(Some(self.frames.take(range)))
    }

    /// As [`AsyncRecordReader::recv`], but [`Error::WouldBlock`] instead of waiting when no
    /// whole message is there.
    ///
    /// # Errors
    /// [`Error::WouldBlock`], or as [`AsyncRecordReader::recv`].
    pub fn try_recv(&mut self) -> Result<Option<&[u8]>> {
        let range = loop {
            if let Some(r) = self.frames.complete()? {
                break r;
            }
            self.frames.make_room()?;
            match read_end(self.reader.io.as_fd(), self.frames.spare()) {
                Ok(0) => {
                    self.frames.at_end()?;
                    return Ok(None);
                }
                Ok(n) => self.frames.filled(n),
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Some(self.frames.take(range)))
    }
}

macro_rules! async_fd_interop {
    ($t:ty, $io:ident) => {
        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.$io.as_fd()
            }
        }
        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.$io.as_fd().as_raw_fd()
            }
        }
    };
}

async_fd_interop!(AsyncFifoReader, io);
async_fd_interop!(AsyncFifoWriter, io);
