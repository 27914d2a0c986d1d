//! Async pipe ends for tokio (feature `tokio`): [`AsyncPipeReader`], [`AsyncPipeWriter`],
//! [`AsyncDuplex`], and frames that survive cancellation: [`AsyncFramedWriter`],
//! [`AsyncFramedReader`].
//!
//! The ends own their descriptors and register them with the runtime's reactor themselves (the
//! one `unsafe` of tokio's `AsyncFd::register`, carried by this crate), after making them
//! non-blocking: a blocking descriptor in a reactor would stall every task of its thread.
//! Writes go through this crate's write path, so a writer keeps its
//! [`SigpipePolicy`](crate::SigpipePolicy) (tokio's own `pipe::Sender` has none: a write to a
//! pipe without reader gives `EPIPE` only where SIGPIPE is ignored, as it is in Rust programs;
//! in a host that left SIGPIPE at its default, it kills the process).
//!
//! Cancellation: dropping a pending future loses nothing. A dropped [`AsyncFramedReader::recv`]
//! keeps what arrived of the frame (and what was read ahead) for the next call; a dropped
//! [`AsyncFramedWriter::send`] either sent nothing of its frame, or the frame is committed: its
//! unsent rest stays in the writer and goes out first, at the next `send` or
//! [`AsyncFramedWriter::flush`] ([`AsyncFramedWriter::frames_committed`] tells which).

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use crate::frame::{DEFAULT_MAX_FRAME, Decoder, HEADER_LEN};
use crate::pipe::guarded;
use crate::sigpipe::SigpipePolicy;
use crate::{Duplex, Error, PipeReader, PipeWriter, Result, pipe, sys};

/// `pipe2(O_CLOEXEC | O_NONBLOCK)` for tokio: an [`AsyncPipeReader`] and an
/// [`AsyncPipeWriter`], registered with the current runtime. (Feature `tokio`.)
///
/// ```
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// # tokio::runtime::Builder::new_current_thread().enable_io().build()?.block_on(async {
/// let (mut r, mut w) = ipc_pipe::async_pipe()?;
/// w.write_all(b"ping").await?;
/// drop(w); // end of file for the reader
/// let mut got = String::new();
/// r.read_to_string(&mut got).await?;
/// assert_eq!(got, "ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`pipe`]; and [`Error::Io`] outside a tokio runtime.
///
/// # Panics
/// Inside a runtime built without IO (`enable_io`), as tokio's own types do.
pub fn async_pipe() -> Result<(AsyncPipeReader, AsyncPipeWriter)> {
    let (r, w) = pipe()?;
    Ok((AsyncPipeReader::new(r)?, AsyncPipeWriter::new(w)?))
}

/// The reading end of a pipe, for tokio: [`AsyncRead`], and `async fn read`. (Feature `tokio`.)
///
/// Made from a [`PipeReader`] ([`Self::new`]), which it makes non-blocking (`O_NONBLOCK`
/// belongs to the open pipe end: a child that shares the end sees it too) and registers with the
/// current runtime. [`Self::into_inner`] gives the `PipeReader` back as it was.
pub struct AsyncPipeReader {
    fd: AsyncFd<OwnedFd>,
    /// Whether the end was non-blocking before it was registered (restored by `into_inner`).
    was_nonblocking: bool,
}

/// The writing end of a pipe, for tokio: [`AsyncWrite`], and `async fn write`. (Feature
/// `tokio`.)
///
/// Made from a [`PipeWriter`] ([`Self::new`]), which it makes non-blocking and registers with
/// the current runtime; it keeps the writer's [`SigpipePolicy`]. Writing when every read end
/// is closed fails with [`io::ErrorKind::BrokenPipe`]. `poll_shutdown` does nothing: the pipe's
/// reader sees end of file when every write end is dropped.
pub struct AsyncPipeWriter {
    fd: AsyncFd<OwnedFd>,
    sigpipe: SigpipePolicy,
    was_nonblocking: bool,
}

impl fmt::Debug for AsyncPipeReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncPipeReader")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl fmt::Debug for AsyncPipeWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncPipeWriter")
            .field("fd", &self.as_raw_fd())
            .field("sigpipe", &self.sigpipe)
            .finish()
    }
}

/// Makes `fd` non-blocking and registers it for `interest`; returns the registration and
/// whether it was non-blocking already.
fn register(fd: OwnedFd, interest: Interest) -> Result<(AsyncFd<OwnedFd>, bool)> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    let was = flags.contains(rustix::fs::OFlags::NONBLOCK);
    if !was {
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    }
    match sys::register_async(fd, interest) {
        Ok(fd) => Ok((fd, was)),
        Err(e) => Err(Error::Io(e)),
    }
}

/// Deregisters and restores the blocking mode the end had before.
fn unregister(fd: AsyncFd<OwnedFd>, was_nonblocking: bool) -> Result<OwnedFd> {
    let fd = fd.into_inner();
    if !was_nonblocking {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags - rustix::fs::OFlags::NONBLOCK)?;
    }
    Ok(fd)
}

impl AsyncPipeReader {
    /// Registers `reader` with the current tokio runtime, after making it non-blocking.
    ///
    /// # Errors
    /// [`Error::Io`] outside a tokio runtime, or if the descriptor cannot be registered.
    ///
    /// # Panics
    /// Inside a runtime built without IO (`enable_io`), as tokio's own types do.
    pub fn new(reader: PipeReader) -> Result<AsyncPipeReader> {
        let (fd, was_nonblocking) = register(OwnedFd::from(reader), Interest::READABLE)?;
        Ok(AsyncPipeReader {
            fd,
            was_nonblocking,
        })
    }

    /// Reads what is available, waiting (without blocking the thread) until something is or the
    /// pipe is at end of file (`Ok(0)`). Cancellation-safe: a dropped future read nothing.
    ///
    /// # Errors
    /// What `read` fails with.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |fd| read_retrying(fd.as_fd(), buf))
            .await
    }

    /// Reads what is available now, without waiting.
    ///
    /// # Errors
    /// [`io::ErrorKind::WouldBlock`] if the pipe is empty and a writer is still open.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .try_io(Interest::READABLE, |fd| read_retrying(fd.as_fd(), buf))
    }

    /// Deregisters the end and gives the [`PipeReader`] back, blocking again if it was before.
    ///
    /// # Errors
    /// Only if the descriptor's flags cannot be set.
    pub fn into_inner(self) -> Result<PipeReader> {
        Ok(PipeReader::from(unregister(self.fd, self.was_nonblocking)?))
    }

    fn poll_read_buf(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| read_retrying(fd.as_fd(), unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not ready after all: readiness is cleared, wait again.
                Err(_would_block) => {}
            }
        }
    }
}

/// One `read`, `EINTR` retried (a non-blocking descriptor does not wait, but a signal may still
/// interrupt the copy).
fn read_retrying(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(rustix::io::Errno::INTR) => {}
            other => return Ok(other?),
        }
    }
}

impl AsyncPipeWriter {
    /// Registers `writer` with the current tokio runtime, after making it non-blocking; the
    /// writer's [`SigpipePolicy`] is kept.
    ///
    /// # Errors
    /// [`Error::Io`] outside a tokio runtime, or if the descriptor cannot be registered.
    ///
    /// # Panics
    /// Inside a runtime built without IO (`enable_io`), as tokio's own types do.
    pub fn new(writer: PipeWriter) -> Result<AsyncPipeWriter> {
        let sigpipe = writer.sigpipe_policy();
        let (fd, was_nonblocking) = register(OwnedFd::from(writer), Interest::WRITABLE)?;
        Ok(AsyncPipeWriter {
            fd,
            sigpipe,
            was_nonblocking,
        })
    }

    /// Writes part of `buf`, waiting (without blocking the thread) for room; returns how many
    /// bytes went in. Cancellation-safe: a dropped future wrote nothing.
    ///
    /// # Errors
    /// [`io::ErrorKind::BrokenPipe`] when no reader is left; what `write` fails with.
    pub async fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                write_retrying(self.sigpipe, fd.as_fd(), &[IoSlice::new(buf)])
            })
            .await
    }

    /// Writes part of `buf` now, without waiting.
    ///
    /// # Errors
    /// [`io::ErrorKind::WouldBlock`] if the pipe is full; as [`Self::write`].
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.fd.try_io(Interest::WRITABLE, |fd| {
            write_retrying(self.sigpipe, fd.as_fd(), &[IoSlice::new(buf)])
        })
    }

    /// Chooses what a write to a pipe without reader does to this process (see
    /// [`crate::sigpipe`]).
    pub fn set_sigpipe_policy(&mut self, policy: SigpipePolicy) {
        self.sigpipe = policy;
    }

    /// The current [`SigpipePolicy`].
    pub fn sigpipe_policy(&self) -> SigpipePolicy {
        self.sigpipe
    }

    /// Deregisters the end and gives the [`PipeWriter`] back (with its policy), blocking again
    /// if it was before.
    ///
    /// # Errors
    /// Only if the descriptor's flags cannot be set.
    pub fn into_inner(self) -> Result<PipeWriter> {
        let mut w = PipeWriter::from(unregister(self.fd, self.was_nonblocking)?);
        w.set_sigpipe_policy(self.sigpipe);
        Ok(w)
    }

    fn poll_write_bufs(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| write_retrying(self.sigpipe, fd.as_fd(), bufs)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => {}
            }
        }
    }
}

/// One `writev` under SIGPIPE policy `policy`, `EINTR` retried.
fn write_retrying(
    policy: SigpipePolicy,
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
) -> io::Result<usize> {
    loop {
        match guarded(policy, || rustix::io::writev(fd, bufs)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

impl AsyncRead for AsyncPipeReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_read_buf(cx, buf)
    }
}

impl AsyncWrite for AsyncPipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

macro_rules! fd_impls {
    ($t:ty) => {
        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.get_ref().as_fd()
            }
        }

        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.get_ref().as_raw_fd()
            }
        }
    };
}

fd_impls!(AsyncPipeReader);
fd_impls!(AsyncPipeWriter);

/// Deregisters the end and gives its descriptor, still non-blocking (use
/// [`AsyncPipeReader::into_inner`] to have the blocking mode restored).
impl From<AsyncPipeReader> for OwnedFd {
    fn from(end: AsyncPipeReader) -> OwnedFd {
        end.fd.into_inner()
    }
}

/// Deregisters the end and gives its descriptor, still non-blocking (use
/// [`AsyncPipeWriter::into_inner`] to have the blocking mode restored).
impl From<AsyncPipeWriter> for OwnedFd {
    fn from(end: AsyncPipeWriter) -> OwnedFd {
        end.fd.into_inner()
    }
}

/// A [`Duplex`] for tokio: two async pipe ends, one per direction ([`AsyncRead`] from the
/// peer, [`AsyncWrite`] to it). (Feature `tokio`.)
///
/// ```
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// # tokio::runtime::Builder::new_current_thread().enable_io().build()?.block_on(async {
/// let (a, b) = ipc_pipe::duplex()?;
/// let (mut a, mut b) = (ipc_pipe::AsyncDuplex::new(a)?, ipc_pipe::AsyncDuplex::new(b)?);
/// a.write_all(b"ping").await?;
/// let mut buf = [0; 4];
/// b.read_exact(&mut buf).await?;
/// b.write_all(b"pong").await?;
/// a.read_exact(&mut buf).await?;
/// assert_eq!(&buf, b"pong");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AsyncDuplex {
    reader: AsyncPipeReader,
    writer: AsyncPipeWriter,
}

impl AsyncDuplex {
    /// Registers both ends of `duplex` with the current tokio runtime (see
    /// [`AsyncPipeReader::new`]).
    ///
    /// # Errors
    /// As [`AsyncPipeReader::new`].
    ///
    /// # Panics
    /// Inside a runtime built without IO (`enable_io`).
    pub fn new(duplex: Duplex) -> Result<AsyncDuplex> {
        let (r, w) = duplex.into_parts();
        Ok(AsyncDuplex {
            reader: AsyncPipeReader::new(r)?,
            writer: AsyncPipeWriter::new(w)?,
        })
    }

    /// The end this side reads from.
    pub fn reader(&self) -> &AsyncPipeReader {
        &self.reader
    }

    /// The end this side writes to.
    pub fn writer(&self) -> &AsyncPipeWriter {
        &self.writer
    }

    /// The two ends, to use from different tasks; dropping the writer tells the peer "no more"
    /// (end of file).
    pub fn into_split(self) -> (AsyncPipeReader, AsyncPipeWriter) {
        (self.reader, self.writer)
    }
}

impl AsyncRead for AsyncDuplex {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.reader.poll_read_buf(cx, buf)
    }
}

impl AsyncWrite for AsyncDuplex {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writer.poll_write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.writer.poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Writes length-prefixed frames (the format of [`crate::FramedWriter`]) to any [`AsyncWrite`]
/// (an [`AsyncPipeWriter`], a tokio `ChildStdin` or `UnixStream`...), cancellation-safe.
/// (Feature `tokio`.)
///
/// [`Self::send`] returns a future; if it is dropped before it is done, either nothing of its
/// frame was written (the frame is not sent: send it again if you want it), or the frame is
/// *committed*: the writer keeps its unsent rest and writes it first, at the next `send` or at
/// [`Self::flush`], so the stream never holds half a frame followed by something else.
/// [`Self::frames_committed`] counts the frames sent or committed, so a caller can tell the two
/// cases apart. Flush before dropping the writer, or a committed rest is lost with it (and
/// the reader sees a frame cut short: `UnexpectedEof`, never a wrong frame).
///
/// (The README's example.)
///
/// ```
/// use ipc_pipe::{AsyncFramedReader, AsyncFramedWriter};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let runtime = tokio::runtime::Builder::new_current_thread()
///         .enable_io()
///         .build()?;
///     runtime.block_on(async {
///         let (r, w) = ipc_pipe::async_pipe()?;
///         let mut tx = AsyncFramedWriter::new(w);
///         let mut rx = AsyncFramedReader::new(r);
///         tx.send(b"hello from a task").await?;
///         assert_eq!(rx.recv().await?.as_deref(), Some(&b"hello from a task"[..]));
///         Ok(())
///     })
/// }
/// ```
pub struct AsyncFramedWriter<W> {
    inner: W,
    max: u32,
    /// The unsent rest of a committed frame whose `send` was dropped; `pending[at..]` is left.
    pending: Vec<u8>,
    at: usize,
    /// The length (header included) of the frame `pending` belongs to.
    pending_len: u64,
    /// A `send` future has written part of its frame and is not done: if it is forgotten
    /// instead of dropped, the stream is out of step (what was written, the frame's length).
    in_flight: Option<(u64, u64)>,
    /// A frame was cut short by an error: (bytes of it written, its length).
    cut: Option<(u64, u64)>,
    committed: u64,
}

impl<W> fmt::Debug for AsyncFramedWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncFramedWriter")
            .field("max", &self.max)
            .field("pending", &(self.pending.len() - self.at))
            .field("committed", &self.committed)
            .field("cut", &self.cut)
            .finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin> AsyncFramedWriter<W> {
    /// A writer with the [`DEFAULT_MAX_FRAME`](crate::DEFAULT_MAX_FRAME).
    pub fn new(inner: W) -> AsyncFramedWriter<W> {
        AsyncFramedWriter {
            inner,
            max: DEFAULT_MAX_FRAME,
            pending: Vec::new(),
            at: 0,
            pending_len: 0,
            in_flight: None,
            cut: None,
            committed: 0,
        }
    }

    /// Sets the largest payload this writer sends (match it with the reader's).
    #[must_use]
    pub fn max_frame(mut self, max: u32) -> AsyncFramedWriter<W> {
        self.max = max;
        self
    }

    /// Sends one frame: first the unsent rest of an earlier, cancelled frame (if any), then the
    /// length and `payload` (one vectored write where the inner writer allows), then flushes
    /// the inner writer. See the type's docs for what dropping the future means.
    ///
    /// # Errors
    /// - [`Error::MessageTooLarge`] if `payload` exceeds the maximum (nothing is written).
    /// - [`Error::NoReader`] (no reader left), [`Error::Io`]; after such an error in the middle
    ///   of a frame, this and every later call return [`Error::FrameCutShort`].
    pub fn send<'a>(&'a mut self, payload: &'a [u8]) -> SendFrame<'a, W> {
        SendFrame {
            writer: self,
            payload,
            written: 0,
            started: false,
            wrote: false,
            done: false,
        }
    }

    /// Writes the unsent rest of a cancelled frame, if any, and flushes the inner writer.
    /// Cancellation-safe: what is still unsent stays in the writer.
    ///
    /// # Errors
    /// As [`Self::send`].
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| {
            ready!(self.poll_pending(cx))?;
            Pin::new(&mut self.inner)
                .poll_flush(cx)
                .map_err(Error::from)
        })
        .await
    }

    /// How many frames were sent or committed (a frame whose `send` was dropped after part of
    /// it went out is committed: its rest goes out before anything else).
    pub fn frames_committed(&self) -> u64 {
        self.committed
    }

    /// How many bytes of a committed frame are still to be written (by the next `send` or
    /// `flush`).
    pub fn pending(&self) -> usize {
        self.pending.len() - self.at
    }

    /// The writer inside.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Gives the writer back; the unsent rest of a committed frame ([`Self::pending`]) is lost
    /// (flush first).
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The refusal that every call returns once the stream is out of step.
    fn out_of_step(&self) -> Option<Error> {
        self.cut
            .or(self.in_flight)
            .map(|(written, len)| Error::FrameCutShort { written, len })
    }

    /// Writes `pending[at..]`.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(e) = self.out_of_step() {
            return Poll::Ready(Err(e));
        }
        while self.at < self.pending.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.at..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(self.cut_pending(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => self.at += n.min(self.pending.len() - self.at),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.cut_pending(e))),
            }
        }
        self.pending = Vec::new();
        self.at = 0;
        Poll::Ready(Ok(()))
    }

    /// The pending rest could not be written: the stream is cut.
    fn cut_pending(&mut self, e: io::Error) -> Error {
        let left = (self.pending.len() - self.at) as u64;
        self.cut = Some((self.pending_len - left, self.pending_len));
        Error::from(e)
    }
}

/// The future of [`AsyncFramedWriter::send`]; see there (and the type's docs for what dropping
/// it means). (Feature `tokio`.)
#[must_use = "futures do nothing unless polled"]
pub struct SendFrame<'a, W: AsyncWrite + Unpin> {
    writer: &'a mut AsyncFramedWriter<W>,
    payload: &'a [u8],
    /// Bytes of this frame (header included) written so far.
    written: usize,
    /// The frame was checked and its turn has come (after any pending rest).
    started: bool,
    /// All of the frame was written (and counted); what is left is the flush.
    wrote: bool,
    done: bool,
}

impl<W: AsyncWrite + Unpin> fmt::Debug for SendFrame<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFrame")
            .field("len", &self.payload.len())
            .field("written", &self.written)
            .field("done", &self.done)
            .finish()
    }
}

impl<W: AsyncWrite + Unpin> SendFrame<'_, W> {
    fn total(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        (self.payload.len() as u32).to_le_bytes()
    }

    /// The frame's bytes from `at` on: a part of the header, then the payload.
    fn rest(&self, at: usize) -> Vec<u8> {
        let header = self.header();
        let mut out = Vec::with_capacity(self.total() - at);
        if at < HEADER_LEN {
            out.extend_from_slice(&header[at..]);
        }
        out.extend_from_slice(&self.payload[at.saturating_sub(HEADER_LEN)..]);
        out
    }
}

impl<W: AsyncWrite + Unpin> std::future::Future for SendFrame<'_, W> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        if !this.started {
            if let Some(e) = this.writer.out_of_step() {
                this.done = true;
                return Poll::Ready(Err(e));
            }
            if u32::try_from(this.payload.len()).map_or(true, |l| l > this.writer.max) {
                this.done = true;
                return Poll::Ready(Err(Error::MessageTooLarge {
                    len: this.payload.len() as u64,
                    max: u64::from(this.writer.max),
                }));
            }
            // An earlier frame's rest goes first; until it is out, nothing of this one is.
            if let Err(e) = ready!(this.writer.poll_pending(cx)) {
                this.done = true;
                return Poll::Ready(Err(e));
            }
            this.started = true;
        }
        let header = this.header();
        let total = this.total();
        while !this.wrote {
            if this.written == total {
                this.writer.in_flight = None;
                this.writer.committed += 1;
                this.wrote = true;
                break;
            }
            let (a, b): (&[u8], &[u8]) = if this.written < HEADER_LEN {
                (&header[this.written..], this.payload)
            } else {
                (&[], &this.payload[this.written - HEADER_LEN..])
            };
            let bufs = [IoSlice::new(a), IoSlice::new(b)];
            let bufs = if a.is_empty() { &bufs[1..] } else { &bufs[..] };
            match Pin::new(&mut this.writer.inner).poll_write_vectored(cx, bufs) {
                Poll::Pending => {
                    if this.written > 0 {
                        this.writer.in_flight = Some((this.written as u64, total as u64));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(this.fail(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => this.written += n.min(total - this.written),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(this.fail(e))),
            }
        }
        // A frame is a message: it must not wait in a buffered writer. (If this is dropped while
        // the flush waits, the frame is whole in the inner writer already.)
        let r = ready!(Pin::new(&mut this.writer.inner).poll_flush(cx));
        this.done = true;
        Poll::Ready(r.map_err(Error::from))
    }
}

impl<W: AsyncWrite + Unpin> SendFrame<'_, W> {
    /// An error of the inner writer during this frame: the stream is cut if part of the frame
    /// went out.
    fn fail(&mut self, e: io::Error) -> Error {
        self.done = true;
        self.writer.in_flight = None;
        if self.written > 0 {
            self.writer.cut = Some((self.written as u64, self.total() as u64));
        }
        Error::from(e)
    }
}

impl<W: AsyncWrite + Unpin> Drop for SendFrame<'_, W> {
    fn drop(&mut self) {
        let total = self.total();
        if self.done || self.wrote || !self.started || self.written == 0 || self.written >= total {
            return;
        }
        // Dropped in the middle of its frame: the frame is committed, its rest goes out first.
        let rest = self.rest(self.written);
        let w = &mut *self.writer;
        w.pending = rest;
        w.at = 0;
        w.pending_len = total as u64;
        w.in_flight = None;
        w.committed += 1;
    }
}

/// Reads length-prefixed frames (the format of [`crate::FramedReader`], with the same defences
/// against a hostile length and the same read-ahead) from any [`AsyncRead`], cancellation-safe:
/// a dropped [`Self::recv`] keeps what arrived of its frame for the next call. (Feature
/// `tokio`.)
///
/// ```
/// use ipc_pipe::{AsyncFramedReader, Error};
/// # tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?.block_on(async {
/// let (r, w) = ipc_pipe::async_pipe()?;
/// let mut rx = AsyncFramedReader::new(r).max_frame(1 << 20);
/// w.write(&[5, 0, 0, 0, b'h', b'e']).await?; // half a frame
/// let wait = std::time::Duration::from_millis(20);
/// assert!(tokio::time::timeout(wait, rx.recv()).await.is_err()); // dropped, nothing lost
/// w.write(b"llo").await?;
/// assert_eq!(rx.recv().await?.as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AsyncFramedReader<R> {
    inner: R,
    decoder: Decoder,
}

impl<R> fmt::Debug for AsyncFramedReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncFramedReader")
            .field("max", &self.decoder.max())
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> AsyncFramedReader<R> {
    /// A reader with the [`DEFAULT_MAX_FRAME`](crate::DEFAULT_MAX_FRAME).
    pub fn new(inner: R) -> AsyncFramedReader<R> {
        AsyncFramedReader {
            inner,
            decoder: Decoder::new(DEFAULT_MAX_FRAME),
        }
    }

    /// Sets the largest frame this reader accepts; a peer announcing more gets
    /// [`Error::MessageTooLarge`] before any allocation.
    #[must_use]
    pub fn max_frame(mut self, max: u32) -> AsyncFramedReader<R> {
        self.decoder.set_max(max);
        self
    }

    /// Receives the next frame; `Ok(None)` at a clean end of stream. Cancellation-safe.
    ///
    /// # Errors
    /// As [`crate::FramedReader::read_frame`] (without `WouldBlock`: this waits).
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.recv_into(&mut buf).await?.map(|_| buf))
    }

    /// Receives the next frame into `buf` (its allocation reused) and returns its length;
    /// `Ok(None)` at a clean end of stream. Cancellation-safe: if the future is dropped, what
    /// arrived of the frame is kept in the reader (not in `buf`, which is left empty).
    ///
    /// # Errors
    /// As [`Self::recv`].
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>> {
        poll_fn(|cx| self.poll_recv_into(cx, buf)).await
    }

    fn poll_recv_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<Result<Option<usize>>> {
        let Self { inner, decoder } = self;
        let mut waiting = false;
        let r = decoder.read_frame(buf, |bufs: &mut [IoSliceMut<'_>]| {
            let Some(first) = bufs.iter_mut().find(|b| !b.is_empty()) else {
                return Ok(0);
            };
            let mut rb = ReadBuf::new(&mut first[..]);
            match Pin::new(&mut *inner).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    waiting = true;
                    Err(Error::WouldBlock)
                }
                Poll::Ready(Ok(())) => Ok(rb.filled().len()),
                Poll::Ready(Err(e)) => Err(Error::from(e)),
            }
        });
        match r {
            // The inner reader has registered the waker; the place in the stream is kept.
            Err(Error::WouldBlock) if waiting => Poll::Pending,
            other => Poll::Ready(other),
        }
    }

    /// The reader inside.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Gives the reader back with the bytes this reader took from it and has not returned as
    /// frames (see [`crate::FramedReader::into_parts`]).
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.inner, self.decoder.into_unread())
    }
}
