//! Messages over a byte stream: a length-prefixed [`FramedWriter`] / [`FramedReader`].
//!
//! A pipe carries bytes, not messages. Records up to [`PIPE_BUF`](crate::PIPE_BUF) can rely on
//! the kernel's atomicity ([`PipeWriter::write_atomic`](crate::PipeWriter::write_atomic)); larger
//! messages need framing. A frame is a 4-byte little-endian length followed by that many bytes.
//!
//! The reader treats the length as hostile: one above its maximum is refused before anything is
//! allocated, the buffer grows with the bytes that actually arrive (never beyond the announced
//! length), and a stream that ends inside a frame is `UnexpectedEof`, never a short message.
//! It keeps its place: on a non-blocking descriptor, or with the `_timeout` and `try_` forms, a
//! frame that has only partly arrived is kept and completed by the next call, so no byte is
//! lost and the stream never gets out of step. After a refused or truncated frame every later
//! call returns the same error: the bytes that follow cannot be trusted to start a frame.
//!
//! Frames are not atomic: with several writers on one pipe, give each writer its own pipe, or
//! keep frames within `PIPE_BUF` and use one [`FramedWriter::write_frame`] call per frame (which
//! then issues a single `write`).

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::event::PollFlags;

use crate::pipe::{deadline, wait};
use crate::{Error, PIPE_BUF, Result};

/// The bytes of a frame's length prefix.
pub const HEADER_LEN: usize = 4;

/// The default maximum frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// The first allocation for a payload, and the least each growth adds (then it doubles, never
/// beyond the announced length).
const FIRST_CHUNK: usize = 64 * 1024;

/// Writes length-prefixed frames to any [`Write`] (a [`PipeWriter`](crate::PipeWriter),
/// `&PipeWriter`, a `ChildStdin`...).
///
/// ```
/// use ipc_pipe::{FramedReader, FramedWriter};
/// let (r, w) = ipc_pipe::pipe()?;
/// let mut tx = FramedWriter::new(w);
/// tx.write_frame(b"first")?;
/// tx.write_frame(b"")?;
/// drop(tx);
/// let mut rx = FramedReader::new(r);
/// assert_eq!(rx.read_frame()?.as_deref(), Some(&b"first"[..]));
/// assert_eq!(rx.read_frame()?.as_deref(), Some(&b""[..]));
/// assert_eq!(rx.read_frame()?, None); // clean end of stream
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub struct FramedWriter<W> {
    inner: W,
    max: u32,
    /// Set when a frame was cut short: (bytes of it written, its length).
    cut: Option<(u64, u64)>,
}

/// Reads length-prefixed frames (a 4-byte little-endian length, then that many bytes) from any
/// [`Read`]; see [`FramedWriter`].
///
/// The length is hostile: one above the maximum ([`Self::max_frame`]) is refused before
/// anything is allocated, the buffer grows with the bytes that actually arrive (never beyond
/// the announced length), and a stream that ends inside a frame is `UnexpectedEof`, never a
/// short message. The reader keeps its place: on a non-blocking descriptor, or with the
/// `_timeout` and `try_` forms, a frame that has only partly arrived is kept and completed by
/// the next call, so no byte is lost and the stream never gets out of step. After a refused or
/// truncated frame every later call returns the same error: what follows cannot be trusted to
/// start a frame.
///
/// ```
/// use ipc_pipe::{Error, FramedReader};
/// let (r, w) = ipc_pipe::pipe()?;
/// r.set_nonblocking(true)?;
/// let mut rx = FramedReader::new(&r);
/// w.write_atomic(&[3, 0, 0])?; // part of a header
/// assert!(matches!(rx.read_frame(), Err(Error::WouldBlock)));
/// w.write_atomic(&[0, b'a', b'b', b'c'])?;
/// assert_eq!(rx.read_frame()?.as_deref(), Some(&b"abc"[..]));
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub struct FramedReader<R> {
    inner: R,
    max: u32,
    state: ReadState,
    /// The payload received so far of a frame whose reading was interrupted (`WouldBlock`, a
    /// timeout, an error); empty otherwise.
    partial: Vec<u8>,
}

/// Where a [`FramedReader`] is in the stream.
#[derive(Debug, Clone, Copy)]
enum ReadState {
    /// Between frames, or inside a header: `got` bytes of it are in `head`.
    Header { head: [u8; HEADER_LEN], got: usize },
    /// Inside the payload of a frame of `len` bytes (what arrived is in `partial`).
    Payload { len: usize },
    /// The peer announced a frame above the maximum.
    TooLarge { len: u32 },
    /// The stream ended inside a frame: in its header (`len == None`) or its payload.
    Truncated { got: usize, len: Option<usize> },
}

impl<W> fmt::Debug for FramedWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramedWriter")
            .field("max", &self.max)
            .field("cut", &self.cut)
            .finish_non_exhaustive()
    }
}

impl<R> fmt::Debug for FramedReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramedReader")
            .field("max", &self.max)
            .field("state", &self.state)
            .field("partial", &self.partial.len())
            .finish_non_exhaustive()
    }
}

impl<W: Write> FramedWriter<W> {
    /// A writer with the [`DEFAULT_MAX_FRAME`].
    pub fn new(inner: W) -> FramedWriter<W> {
        FramedWriter {
            inner,
            max: DEFAULT_MAX_FRAME,
            cut: None,
        }
    }

    /// Sets the largest payload this writer sends (match it with the reader's).
    #[must_use]
    pub fn max_frame(mut self, max: u32) -> FramedWriter<W> {
        self.max = max;
        self
    }

    /// Writes one frame: the length, then `payload`. A frame that fits in [`PIPE_BUF`] goes out
    /// in one `write` call (and so, on a pipe, in one atomic piece); a larger one is written with
    /// `writev` and continued after short writes. `EINTR` is retried. The inner writer is
    /// flushed after every frame, so a buffered writer (`Stdout`, `BufWriter`) sends each frame
    /// at once (on a pipe, flushing costs nothing).
    ///
    /// # Errors
    /// - [`Error::MessageTooLarge`] if `payload` exceeds the maximum (nothing is written).
    /// - [`Error::WouldBlock`] if a non-blocking writer had no room for any of it (nothing is
    ///   written: call again later).
    /// - [`Error::FrameCutShort`] if a non-blocking writer ran out of room in the middle of the
    ///   frame, and for every frame after a cut one.
    /// - [`Error::NoReader`]; [`Error::Io`] (after which the stream may hold part of the frame,
    ///   and later frames are refused with [`Error::FrameCutShort`]).
    pub fn write_frame(&mut self, payload: &[u8]) -> Result<()> {
        self.write_frame_with(payload, false, |_| Ok(usize::MAX))
    }

    /// The common part of [`Self::write_frame`] and [`Self::write_frame_timeout`]: before each
    /// `write`, `before(&inner)` may wait (its error ends the frame) and says how many bytes to
    /// write at most. With `waits`, a `write` that would block is tried again after `before`
    /// (another writer took the room that `poll` saw).
    fn write_frame_with(
        &mut self,
        payload: &[u8],
        waits: bool,
        mut before: impl FnMut(&W) -> Result<usize>,
    ) -> Result<()> {
        if let Some((written, len)) = self.cut {
            return Err(Error::FrameCutShort { written, len });
        }
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= self.max)
            .ok_or(Error::MessageTooLarge {
                len: payload.len() as u64,
                max: u64::from(self.max),
            })?;
        let header = len.to_le_bytes();
        let total = HEADER_LEN + payload.len();
        // A frame within PIPE_BUF is copied into one buffer, so that it goes out in one write.
        let mut one = [0u8; PIPE_BUF];
        let (mut a, mut b): (&[u8], &[u8]) = if total <= PIPE_BUF {
            one[..HEADER_LEN].copy_from_slice(&header);
            one[HEADER_LEN..total].copy_from_slice(payload);
            (&one[..total], &[])
        } else {
            (&header, payload)
        };
        let mut written = 0usize;
        while !a.is_empty() || !b.is_empty() {
            let result = before(&self.inner).and_then(|limit| {
                let a_part = &a[..a.len().min(limit)];
                let b_part = &b[..b.len().min(limit - a_part.len())];
                let r = if b_part.is_empty() {
                    self.inner.write(a_part)
                } else {
                    self.inner
                        .write_vectored(&[IoSlice::new(a_part), IoSlice::new(b_part)])
                };
                match r {
                    // A writer that reports more than it was given is broken: do not trust it.
                    Ok(n) if n > a_part.len() + b_part.len() => Err(Error::Io(io::Error::other(
                        "the inner writer reported more bytes than it was given",
                    ))),
                    Ok(0) => Err(Error::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => Ok(n),
                    Err(e) => Err(e.into()),
                }
            });
            match result {
                Ok(mut n) => {
                    written += n;
                    let from_a = n.min(a.len());
                    a = &a[from_a..];
                    n -= from_a;
                    b = &b[n..];
                }
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(Error::WouldBlock) if waits => {}
                Err(e) if written == 0 => return Err(e),
                Err(e) => {
                    let cut = (written as u64, total as u64);
                    self.cut = Some(cut);
                    return Err(match e {
                        // Retrying would start a new frame in the middle of this one.
                        Error::WouldBlock | Error::TimedOut { .. } => Error::FrameCutShort {
                            written: cut.0,
                            len: cut.1,
                        },
                        other => other,
                    });
                }
            }
        }
        // A frame is a message: it must not wait in a buffer (stdout is line-buffered).
        self.inner.flush()?;
        Ok(())
    }

    /// The writer inside.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Gives the writer back.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write + AsFd> FramedWriter<W> {
    /// [`Self::write_frame`] within `timeout` (`Duration::MAX`: no deadline). Each `write` is
    /// preceded by a `poll` and writes at most [`PIPE_BUF`] bytes on a blocking descriptor, so
    /// the deadline holds there too (unless other writers take the room first); `EINTR` is
    /// retried against the same deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_pipe::{Error, FramedWriter};
    /// let (_r, w) = ipc_pipe::pipe()?;
    /// let mut tx = FramedWriter::new(&w);
    /// tx.write_frame_timeout(&[1; 60_000], Duration::from_secs(5))?;
    /// // Nobody reads: the next frame does not fit, and time runs out in the middle of it.
    /// let err = tx.write_frame_timeout(&[2; 60_000], Duration::from_millis(20)).unwrap_err();
    /// assert!(matches!(err, Error::FrameCutShort { .. }), "{err:?}");
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Self::write_frame`]; and [`Error::TimedOut`] if none of the frame went out in time
    /// (nothing was written: the writer stays usable), or [`Error::FrameCutShort`] if part of
    /// it did.
    pub fn write_frame_timeout(&mut self, payload: &[u8], timeout: Duration) -> Result<()> {
        let deadline = deadline(timeout);
        let blocking =
            !rustix::fs::fcntl_getfl(self.inner.as_fd())?.contains(rustix::fs::OFlags::NONBLOCK);
        self.write_frame_with(payload, true, |w| {
            wait(w.as_fd(), PollFlags::OUT, deadline)?;
            Ok(if blocking { PIPE_BUF } else { usize::MAX })
        })
    }
}

impl<R: Read> FramedReader<R> {
    /// A reader with the [`DEFAULT_MAX_FRAME`].
    pub fn new(inner: R) -> FramedReader<R> {
        FramedReader {
            inner,
            max: DEFAULT_MAX_FRAME,
            state: ReadState::Header {
                head: [0; HEADER_LEN],
                got: 0,
            },
            partial: Vec::new(),
        }
    }

    /// Sets the largest frame this reader accepts; a peer announcing more gets
    /// [`Error::MessageTooLarge`] before any allocation.
    #[must_use]
    pub fn max_frame(mut self, max: u32) -> FramedReader<R> {
        self.max = max;
        self
    }

    /// Reads the next frame into a new `Vec`; `Ok(None)` at a clean end of stream (end of file
    /// exactly between two frames).
    ///
    /// # Errors
    /// - [`Error::MessageTooLarge`] if the peer announces more than the maximum; nothing was
    ///   allocated. The stream is then out of step: every later call returns the same error.
    /// - [`Error::Io`] of kind [`io::ErrorKind::UnexpectedEof`] if the stream ends inside a
    ///   frame (in its header or its payload); every later call returns it too.
    /// - [`Error::WouldBlock`] from a non-blocking reader with no byte ready: what arrived of
    ///   the frame is kept, and the next call continues it. So is it after any other error of
    ///   the inner reader.
    pub fn read_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.read_frame_into(&mut buf)?.map(|_| buf))
    }

    /// Reads the next frame into `buf` (cleared first, its allocation reused) and returns its
    /// length; `Ok(None)` at a clean end of stream. On an error `buf` is left empty.
    ///
    /// ```
    /// use ipc_pipe::{Error, FramedReader};
    /// // A hostile peer announces 4 GiB: refused before anything is allocated.
    /// let hostile = u32::MAX.to_le_bytes();
    /// let mut buf = Vec::new();
    /// let err = FramedReader::new(&hostile[..]).read_frame_into(&mut buf).unwrap_err();
    /// assert!(matches!(err, Error::MessageTooLarge { .. }));
    /// assert_eq!(buf.capacity(), 0);
    /// // A frame cut short is UnexpectedEof, not a short message.
    /// let cut = [10, 0, 0, 0, b'a', b'b'];
    /// let err = FramedReader::new(&cut[..]).read_frame_into(&mut buf).unwrap_err();
    /// assert_eq!(std::io::Error::from(err).kind(), std::io::ErrorKind::UnexpectedEof);
    /// ```
    ///
    /// # Errors
    /// As [`Self::read_frame`].
    pub fn read_frame_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>> {
        self.read_frame_with(buf, |_| Ok(()))
    }

    /// The state machine: before each `read` of the inner reader, `before(&inner)` may wait
    /// (its error ends this call, keeping the place in the stream).
    fn read_frame_with(
        &mut self,
        buf: &mut Vec<u8>,
        mut before: impl FnMut(&R) -> Result<()>,
    ) -> Result<Option<usize>> {
        buf.clear();
        if let ReadState::Payload { .. } = self.state {
            // Continue the frame where the last call left it.
            std::mem::swap(buf, &mut self.partial);
            self.partial = Vec::new();
        }
        let result = self.advance(buf, &mut before);
        match &result {
            Ok(_) => {}
            Err(_) => {
                if let ReadState::Payload { .. } = self.state {
                    std::mem::swap(buf, &mut self.partial);
                }
                buf.clear();
            }
        }
        result
    }

    fn advance(
        &mut self,
        buf: &mut Vec<u8>,
        before: &mut impl FnMut(&R) -> Result<()>,
    ) -> Result<Option<usize>> {
        loop {
            match self.state {
                ReadState::TooLarge { len } => {
                    return Err(Error::MessageTooLarge {
                        len: u64::from(len),
                        max: u64::from(self.max),
                    });
                }
                ReadState::Truncated { got, len } => return Err(truncated(got, len)),
                ReadState::Header { mut head, got } => {
                    if got == HEADER_LEN {
                        let len = u32::from_le_bytes(head);
                        if len > self.max {
                            self.state = ReadState::TooLarge { len };
                            continue;
                        }
                        self.state = ReadState::Payload { len: len as usize };
                        continue;
                    }
                    before(&self.inner)?;
                    match self.inner.read(&mut head[got..]) {
                        Ok(0) if got == 0 => return Ok(None),
                        Ok(0) => self.state = ReadState::Truncated { got, len: None },
                        Ok(n) => {
                            let got = got + n.min(HEADER_LEN - got);
                            self.state = ReadState::Header { head, got };
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                ReadState::Payload { len } => {
                    // `buf` holds what arrived. It grows with what arrives, in windows that are
                    // zeroed once and then filled: double what is here (at least FIRST_CHUNK),
                    // never past the announced length.
                    let mut filled = buf.len();
                    let result = loop {
                        if filled == len {
                            break Ok(());
                        }
                        if filled == buf.len() {
                            let room = (len - filled).min(filled.max(FIRST_CHUNK));
                            buf.reserve_exact(room);
                            buf.resize(filled + room, 0);
                        }
                        if let Err(e) = before(&self.inner) {
                            break Err(e);
                        }
                        match self.inner.read(&mut buf[filled..]) {
                            Ok(0) => {
                                self.state = ReadState::Truncated {
                                    got: filled,
                                    len: Some(len),
                                };
                                break Ok(());
                            }
                            // A reader that reports more than it was given is not believed.
                            Ok(n) => filled += n.min(buf.len() - filled),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e.into()),
                        }
                    };
                    buf.truncate(filled);
                    result?;
                    if filled == len {
                        self.state = ReadState::Header {
                            head: [0; HEADER_LEN],
                            got: 0,
                        };
                        return Ok(Some(len));
                    }
                }
            }
        }
    }

    /// The reader inside.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Gives the reader back (with it goes the place in the stream: a frame read in part is
    /// lost).
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// The error for a stream that ended inside a frame.
fn truncated(got: usize, len: Option<usize>) -> Error {
    let message = match len {
        None => format!("stream ended inside a frame header ({got} of {HEADER_LEN} bytes)"),
        Some(len) => format!("stream ended inside a frame ({got} of {len} bytes)"),
    };
    Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, message))
}

impl<R: Read + AsFd> FramedReader<R> {
    /// [`Self::read_frame`] within `timeout` (`Duration::MAX`: no deadline): each `read` is
    /// preceded by a `poll`, so this works on a blocking descriptor too; `EINTR` is retried
    /// against the same deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_pipe::{Error, FramedReader};
    /// let (r, w) = ipc_pipe::pipe()?;
    /// let mut rx = FramedReader::new(&r);
    /// // Half a frame arrives, then nothing: a timeout, and the half is kept.
    /// w.write_atomic(&[5, 0, 0, 0, b'h', b'e'])?;
    /// let err = rx.read_frame_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(err, Error::TimedOut { .. }));
    /// w.write_atomic(b"llo")?;
    /// assert_eq!(rx.read_frame_timeout(Duration::MAX)?.as_deref(), Some(&b"hello"[..]));
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Self::read_frame`], and [`Error::TimedOut`] if the frame did not arrive whole in
    /// time (what arrived is kept for the next call).
    pub fn read_frame_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self
            .read_frame_into_timeout(&mut buf, timeout)?
            .map(|_| buf))
    }

    /// [`Self::read_frame_into`] within `timeout`; see [`Self::read_frame_timeout`].
    ///
    /// # Errors
    /// As [`Self::read_frame_timeout`].
    pub fn read_frame_into_timeout(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Option<usize>> {
        let deadline = deadline(timeout);
        loop {
            match self.read_frame_with(buf, |r| wait(r.as_fd(), PollFlags::IN, deadline)) {
                // Another reader of a non-blocking descriptor took what `poll` saw: the place
                // is kept, wait again (the deadline ends this with TimedOut).
                Err(Error::WouldBlock) => {}
                other => return other,
            }
        }
    }

    /// [`Self::read_frame_into`] without waiting: what has arrived of the next frame is taken
    /// in, and the frame is returned if it is whole.
    ///
    /// # Errors
    /// As [`Self::read_frame_into`]; [`Error::WouldBlock`] if the frame is not whole yet (what
    /// arrived is kept).
    pub fn try_read_frame_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>> {
        match self.read_frame_into_timeout(buf, Duration::ZERO) {
            Err(Error::TimedOut { .. }) => Err(Error::WouldBlock),
            other => other,
        }
    }

    /// [`Self::read_frame`] without waiting; see [`Self::try_read_frame_into`].
    ///
    /// # Errors
    /// As [`Self::try_read_frame_into`].
    pub fn try_read_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.try_read_frame_into(&mut buf)?.map(|_| buf))
    }
}
