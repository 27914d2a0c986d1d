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
//! Where the time goes, and what the two ends do about it (measured in `benches/pipe.rs`):
//! - The writer sends a frame's header and payload in one `writev` (one `write` when the frame
//!   fits in `PIPE_BUF`).
//! - A pipe's reader and writer copy under one lock, so a pipe moves large frames at half the
//!   speed of a socket (whose two sides copy at once) unless the writer does not copy: on a
//!   [`PipeWriter`], [`FramedWriter`] lends large frames' pages to the pipe with `vmsplice`
//!   (copying the payload into its own ring in user space, where the reader's copy does not
//!   wait for it), and grows a pipe that is small for its frames.
//! - The reader reads ahead (about 64 KiB), so a stream of small frames costs one `read` for
//!   many frames, and it reads a large payload straight into the caller's buffer (behind it,
//!   only the next header), reusing the buffer's allocation and its initialised bytes.
//!
//! Frames are not atomic: with several writers on one pipe, give each writer its own pipe, or
//! keep frames within `PIPE_BUF` and use one [`FramedWriter::write_frame`] call per frame (which
//! then issues a single `write`).

use std::borrow::Borrow;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::PollFlags;

use crate::pipe::{deadline, wait};
use crate::splice::Lender;
use crate::{Error, PIPE_BUF, PipeWriter, Result, pipe_max_size};

/// The bytes of a frame's length prefix.
pub const HEADER_LEN: usize = 4;

/// The default maximum frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// The first allocation for a payload, and the least each growth adds (then it doubles, never
/// beyond the announced length).
const FIRST_CHUNK: usize = 64 * 1024;

/// The most a [`FramedReader`] reads ahead: the size of its read-ahead buffer, a constant (no
/// peer decides it). 64 KiB and a cache line, deliberately not a whole number of pages: a
/// read that takes whole pages drained a default pipe (16 pages) exactly, and the writer and
/// the reader then filled and emptied it in lockstep, one wake-up per frame; a read that ends
/// inside a page avoids that (measured: 4 KiB frames at 2.3 times the rate of a 64 KiB
/// read-ahead, `cargo bench -p ipc-pipe`, `FRAME=4 ONLY=framed`).
pub(crate) const READ_AHEAD: usize = 64 * 1024 + 64;

/// A frame at least this long is "large": the reader reads its payload straight into the
/// caller's buffer and reads ahead only the next header behind it (so that large payloads are
/// not copied through the read-ahead buffer); after it, a header is read alone.
const LARGE_FRAME: usize = READ_AHEAD / 4;

/// Frames (header included) of at least this many bytes go into a pipe through the zero-copy
/// ring of a [`FramedWriter`] made by [`FramedWriter::new`] (smaller ones: `writev`).
pub(crate) const ZERO_COPY_MIN: usize = 32 * 1024;

/// The capacity a [`FramedWriter`] grows a pipe to (or `pipe-max-size`, if that is smaller).
pub(crate) const GROWN_CAPACITY: usize = 1 << 20;

/// Writes length-prefixed frames: to a pipe ([`FramedWriter::new`], which takes a
/// [`PipeWriter`] or a reference to one, and moves large frames the fastest way a pipe allows)
/// or to any [`Write`] ([`FramedWriter::from_write`]: a `ChildStdin`, a socket, a `Vec`...).
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
///
/// On a pipe ([`FramedWriter::new`]), two things happen for large frames, each of which can be
/// turned off:
/// - **The pipe grows** ([`Self::grow_pipe`]): the first frame longer than a quarter of the
///   pipe's capacity grows it to 1 MiB (or `pipe-max-size`, if smaller), once. A pipe's
///   capacity counts against its user's pipe budget (`pipe-user-pages-soft`, 64 MiB by
///   default: beyond it new pipes get one page); if the kernel refuses, the pipe stays as it is
///   and nothing is reported.
/// - **Large frames are lent, not copied** ([`Self::zero_copy`]): a frame of 32 KiB or more is
///   copied into the writer's own ring and `vmsplice`d from there, as
///   [`ZeroCopyWriter`](crate::ZeroCopyWriter) does, with the same rule: the pipe's reader must
///   *copy* the bytes out (`read`, which [`FramedReader`] does, or `splice` into a regular
///   file). A reader that forwards the raw stream with `splice` or `tee` to another pipe or a
///   socket takes references to the ring with it, and its consumer could see a later frame's
///   bytes: for such a reader, turn this off. Dropping the writer unmaps the ring; pages the
///   pipe still refers to stay intact until they are read.
pub struct FramedWriter<W> {
    inner: W,
    max: u32,
    /// Set when a frame was cut short: (bytes of it written, its length).
    cut: Option<(u64, u64)>,
    /// The unsent rest of a frame that [`FramedWriter::try_write_frame`] took in part:
    /// `pending[pending_at..]` goes out before anything else.
    pending: Vec<u8>,
    pending_at: usize,
    /// The length (header included) of the frame `pending` belongs to.
    pending_len: u64,
    /// `write_vectored` of the inner writer.
    write: fn(&mut W, &[IoSlice<'_>]) -> io::Result<usize>,
    /// `flush` of the inner writer.
    flush: fn(&mut W) -> io::Result<()>,
    /// Set by [`FramedWriter::new`]: the inner writer is a pipe's write end.
    pipe: Option<PipeMode<W>>,
}

/// What a [`FramedWriter`] on a pipe knows and keeps.
struct PipeMode<W> {
    /// The pipe end inside the writer.
    end: fn(&W) -> &PipeWriter,
    grow: bool,
    zero_copy: bool,
    /// The pipe's capacity, read at the first frame larger than `PIPE_BUF`.
    capacity: Option<usize>,
    /// Growing was tried already (it is tried once).
    grow_tried: bool,
    /// The ring of lent frames, made at the first one.
    lender: Option<Lender>,
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
/// It reads ahead: one `read` takes in what the stream has ready (about 64 KiB, a buffer of
/// fixed size allocated at the first read), and the bytes past the frame wait in the reader for
/// the next call. So keep one reader per stream for as long as it is read:
/// [`Self::into_parts`] hands back what it has taken in but not returned.
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
    decoder: Decoder,
}

impl<W> fmt::Debug for FramedWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("FramedWriter");
        d.field("max", &self.max).field("cut", &self.cut);
        if let Some(p) = &self.pipe {
            d.field("grow_pipe", &p.grow)
                .field("zero_copy", &p.zero_copy)
                .field("lender", &p.lender);
        }
        d.finish_non_exhaustive()
    }
}

impl<R> fmt::Debug for FramedReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramedReader")
            .field("max", &self.decoder.max())
            .field("state", &self.decoder.state)
            .field("read_ahead", &(self.decoder.hi - self.decoder.lo))
            .finish_non_exhaustive()
    }
}

fn pipe_write<W: Borrow<PipeWriter>>(w: &mut W, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let mut end: &PipeWriter = (*w).borrow();
    end.write_vectored(bufs)
}

fn pipe_flush<W>(_: &mut W) -> io::Result<()> {
    Ok(())
}

fn pipe_end<W: Borrow<PipeWriter>>(w: &W) -> &PipeWriter {
    w.borrow()
}

fn any_write<W: Write>(w: &mut W, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    w.write_vectored(bufs)
}

fn any_flush<W: Write>(w: &mut W) -> io::Result<()> {
    w.flush()
}

impl<W: Borrow<PipeWriter>> FramedWriter<W> {
    /// A writer on a pipe's write end (a [`PipeWriter`], `&PipeWriter`, `&mut PipeWriter`,
    /// `Box`, `Rc` or `Arc` of one) with the [`DEFAULT_MAX_FRAME`]. It writes through the
    /// end's [`SigpipePolicy`](crate::SigpipePolicy), grows the pipe for large frames and lends
    /// large frames' pages (see the type's docs; [`Self::grow_pipe`], [`Self::zero_copy`]).
    ///
    /// For any other writer (a `ChildStdin`, a socket, a wrapper that counts bytes), use
    /// [`Self::from_write`].
    pub fn new(inner: W) -> FramedWriter<W> {
        FramedWriter {
            inner,
            max: DEFAULT_MAX_FRAME,
            cut: None,
            pending: Vec::new(),
            pending_at: 0,
            pending_len: 0,
            write: pipe_write::<W>,
            flush: pipe_flush::<W>,
            pipe: Some(PipeMode {
                end: pipe_end::<W>,
                grow: true,
                zero_copy: true,
                capacity: None,
                grow_tried: false,
                lender: None,
            }),
        }
    }

    /// Whether the writer may grow the pipe for large frames (default: yes): the first frame
    /// longer than a quarter of the pipe's capacity grows it to 1 MiB (or `pipe-max-size`, if
    /// smaller), quietly keeping the capacity it has if the kernel refuses.
    ///
    /// ```
    /// use ipc_pipe::FramedWriter;
    /// let (_r, w) = ipc_pipe::pipe()?;
    /// FramedWriter::new(&w).write_frame(&[0; 20_000])?;
    /// assert!(w.capacity()? >= 65536); // 1 MiB, unless the kernel refused
    /// let (_r, w) = ipc_pipe::pipe()?;
    /// FramedWriter::new(&w).grow_pipe(false).write_frame(&[0; 20_000])?;
    /// assert_eq!(w.capacity()?, 65536);
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    #[must_use]
    pub fn grow_pipe(mut self, grow: bool) -> FramedWriter<W> {
        if let Some(p) = &mut self.pipe {
            p.grow = grow;
        }
        self
    }

    /// Whether frames of 32 KiB or more are lent to the pipe (`vmsplice` from the writer's
    /// ring) rather than copied into it (default: yes). Turn it off when the pipe's reader
    /// forwards the stream with `splice` or `tee` instead of reading it (see the type's docs).
    #[must_use]
    pub fn zero_copy(mut self, zero_copy: bool) -> FramedWriter<W> {
        if let Some(p) = &mut self.pipe {
            p.zero_copy = zero_copy;
        }
        self
    }
}

impl<W: Write> FramedWriter<W> {
    /// A writer on any [`Write`] with the [`DEFAULT_MAX_FRAME`]: frames go out through its
    /// `write_vectored`, and it is flushed after every frame. Nothing pipe-specific happens.
    ///
    /// ```
    /// use ipc_pipe::{FramedReader, FramedWriter};
    /// let mut tx = FramedWriter::from_write(Vec::new());
    /// tx.write_frame(b"into a Vec")?;
    /// let bytes = tx.into_inner();
    /// assert_eq!(bytes.len(), 4 + 10);
    /// let mut rx = FramedReader::new(&bytes[..]);
    /// assert_eq!(rx.read_frame()?.as_deref(), Some(&b"into a Vec"[..]));
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    pub fn from_write(inner: W) -> FramedWriter<W> {
        FramedWriter {
            inner,
            max: DEFAULT_MAX_FRAME,
            cut: None,
            pending: Vec::new(),
            pending_at: 0,
            pending_len: 0,
            write: any_write::<W>,
            flush: any_flush::<W>,
            pipe: None,
        }
    }
}

impl<W> FramedWriter<W> {
    /// Sets the largest payload this writer sends (match it with the reader's).
    #[must_use]
    pub fn max_frame(mut self, max: u32) -> FramedWriter<W> {
        self.max = max;
        self
    }

    /// Writes one frame: the length, then `payload`. A frame that fits in [`PIPE_BUF`] goes out
    /// in one `write` call (and so, on a pipe, in one atomic piece); a larger one is written with
    /// `writev` (or, on a pipe, lent: see the type's docs) and continued after short writes.
    /// `EINTR` is retried. A writer made by [`Self::from_write`] is flushed after every frame,
    /// so a buffered writer (`Stdout`, `BufWriter`) sends each frame at once. The rest of a frame
    /// that [`Self::try_write_frame`] took in part goes out first.
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
        let how = How {
            waits: false,
            bound: None,
            keep_rest: false,
        };
        self.write_frame_with(payload, how, |_| Ok(usize::MAX))
    }

    /// The common part of [`Self::write_frame`], [`Self::write_frame_timeout`] and
    /// [`Self::try_write_frame`]: before each `write`, `before(&inner)` may wait (its error
    /// ends the frame) and says how many bytes to write at most; `how` says the rest.
    fn write_frame_with(
        &mut self,
        payload: &[u8],
        how: How,
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
        // The rest of an earlier frame goes first; until it is out, nothing of this one is.
        self.drain(how.waits, &mut before)?;
        let header = len.to_le_bytes();
        let total = HEADER_LEN + payload.len();
        if total > PIPE_BUF && self.tune_pipe(total)? {
            return self.lend_frame(&header, payload, how);
        }
        // A frame within PIPE_BUF is copied into one buffer, so that it goes out in one write.
        let mut one;
        let (mut a, mut b): (&[u8], &[u8]) = if total <= PIPE_BUF {
            one = [0u8; PIPE_BUF];
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
                let r = (self.write)(
                    &mut self.inner,
                    &[IoSlice::new(a_part), IoSlice::new(b_part)],
                );
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
                Err(Error::WouldBlock) if how.waits => {}
                Err(e) => return self.fail(written, &header, payload, e, how.keep_rest),
            }
        }
        // A frame is a message: it must not wait in a buffer (stdout is line-buffered).
        (self.flush)(&mut self.inner)?;
        Ok(())
    }

    /// A frame failed after `written` of its bytes: the error itself if nothing went out;
    /// with `keep_rest`, a frame that ran out of room (or time) is kept, its rest pending
    /// (`Ok`); otherwise the writer is cut (and a wait that ran out, or a full non-blocking
    /// pipe, is [`Error::FrameCutShort`]: retrying would start a new frame in the middle of
    /// this one).
    fn fail(
        &mut self,
        written: usize,
        header: &[u8; HEADER_LEN],
        payload: &[u8],
        e: Error,
        keep_rest: bool,
    ) -> Result<()> {
        if written == 0 {
            return Err(e);
        }
        let out_of_room = matches!(e, Error::WouldBlock | Error::TimedOut { .. });
        if keep_rest && out_of_room {
            let mut rest = Vec::with_capacity(HEADER_LEN + payload.len() - written);
            if written < HEADER_LEN {
                rest.extend_from_slice(&header[written..]);
            }
            rest.extend_from_slice(&payload[written.saturating_sub(HEADER_LEN)..]);
            self.pending = rest;
            self.pending_at = 0;
            self.pending_len = (HEADER_LEN + payload.len()) as u64;
            return Ok(());
        }
        let cut = (written as u64, (HEADER_LEN + payload.len()) as u64);
        self.cut = Some(cut);
        Err(if out_of_room {
            Error::FrameCutShort {
                written: cut.0,
                len: cut.1,
            }
        } else {
            e
        })
    }

    /// Writes the pending rest of a frame (see [`Self::try_write_frame`]), `before` each
    /// `write` as in [`Self::write_frame_with`]. An error leaves what is still unsent pending
    /// (`WouldBlock`, `TimedOut`) or cuts the stream (any other).
    fn drain(&mut self, waits: bool, before: &mut impl FnMut(&W) -> Result<usize>) -> Result<()> {
        while self.pending_at < self.pending.len() {
            let result = before(&self.inner).and_then(|limit| {
                let rest = &self.pending[self.pending_at..];
                let part = &rest[..rest.len().min(limit)];
                match (self.write)(&mut self.inner, &[IoSlice::new(part)]) {
                    Ok(n) if n > part.len() => Err(Error::Io(io::Error::other(
                        "the inner writer reported more bytes than it was given",
                    ))),
                    Ok(0) => Err(Error::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => Ok(n),
                    Err(e) => Err(e.into()),
                }
            });
            match result {
                Ok(n) => self.pending_at += n,
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(Error::WouldBlock) if waits => {}
                Err(e @ (Error::WouldBlock | Error::TimedOut { .. })) => return Err(e),
                Err(e) => {
                    let left = (self.pending.len() - self.pending_at) as u64;
                    self.cut = Some((self.pending_len - left, self.pending_len));
                    return Err(e);
                }
            }
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.pending_at = 0;
            (self.flush)(&mut self.inner)?;
        }
        Ok(())
    }

    /// How many bytes of a frame that [`Self::try_write_frame`] took in part are still to be
    /// written (by the next frame, or [`Self::try_flush`], [`Self::flush_timeout`]).
    pub fn pending(&self) -> usize {
        self.pending.len() - self.pending_at
    }

    /// On a pipe, before a frame of `total` bytes (more than `PIPE_BUF`): grows the pipe if
    /// that is allowed and not tried yet, and says whether to lend this frame.
    fn tune_pipe(&mut self, total: usize) -> Result<bool> {
        let Some(mode) = &mut self.pipe else {
            return Ok(false);
        };
        let end = (mode.end)(&self.inner);
        if mode.capacity.is_none() {
            match end.capacity() {
                Ok(c) => mode.capacity = Some(c),
                // Not a pipe after all (a `PipeWriter` made from another descriptor): write
                // frames as to any descriptor.
                Err(_) => {
                    mode.grow = false;
                    mode.zero_copy = false;
                    return Ok(false);
                }
            }
        }
        let cap = mode.capacity.unwrap_or(usize::MAX);
        if mode.grow && !mode.grow_tried && total > cap / 4 {
            mode.grow_tried = true;
            let max = pipe_max_size().map_or(GROWN_CAPACITY, |m| {
                usize::try_from(m).unwrap_or(usize::MAX).min(GROWN_CAPACITY)
            });
            if max > cap {
                // Refused (the user's pipe budget): the pipe keeps its capacity.
                let _ = end.set_capacity(max);
            }
        }
        Ok(mode.zero_copy && total >= ZERO_COPY_MIN)
    }

    /// Sends a frame from the pipe mode's ring, in pieces of at most half the pipe's capacity
    /// (so that the reader copies one piece out while the next is filled).
    fn lend_frame(&mut self, header: &[u8; HEADER_LEN], payload: &[u8], how: How) -> Result<()> {
        let total = HEADER_LEN + payload.len();
        let Some(mode) = &mut self.pipe else {
            unreachable!("only a writer on a pipe lends frames")
        };
        let end = (mode.end)(&self.inner);
        let lender = match &mut mode.lender {
            Some(l) => l,
            None => mode.lender.insert(Lender::new(end)?),
        };
        let mut at = 0;
        while at < total {
            let piece = (lender.max_piece() / 2).max(PIPE_BUF).min(total - at);
            let fill = |p: &mut [u8]| fill_piece(p, at, header, payload);
            // A non-blocking end keeps `write`'s answers (WouldBlock, FrameCutShort): a full
            // pipe is reported, not waited for (a blocking end never says it is full).
            match lender.send_piece(end, piece, fill, how.bound, false) {
                Ok(()) => at += piece,
                Err((e, n)) => return self.fail(at + n, header, payload, e, how.keep_rest),
            }
        }
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

/// How [`FramedWriter::write_frame_with`] behaves when the pipe is full.
#[derive(Clone, Copy)]
struct How {
    /// A `write` that would block is tried again (after `before`, which waits).
    waits: bool,
    /// The deadline of a lent frame (see [`Lender::send_until`]).
    bound: Option<Option<Instant>>,
    /// A frame that runs out of room in the middle is kept (its rest pending), not cut.
    keep_rest: bool,
}

/// Fills `piece` with bytes `at..at + piece.len()` of the frame `header ++ payload`.
fn fill_piece(piece: &mut [u8], at: usize, header: &[u8; HEADER_LEN], payload: &[u8]) {
    let mut o = 0;
    if at < HEADER_LEN {
        o = (HEADER_LEN - at).min(piece.len());
        piece[..o].copy_from_slice(&header[at..at + o]);
    }
    let from = at + o - HEADER_LEN;
    let rest = piece.len() - o;
    piece[o..].copy_from_slice(&payload[from..from + rest]);
}

impl<W: AsFd> FramedWriter<W> {
    /// [`Self::write_frame`] within `timeout` (`Duration::MAX`: no deadline). Each `write` is
    /// preceded by a `poll` and writes at most [`PIPE_BUF`] bytes on a blocking descriptor, so
    /// the deadline holds there too (unless other writers take the room first); a lent frame
    /// is `vmsplice`d without blocking after each `poll`. `EINTR` is retried against the same
    /// deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_pipe::{Error, FramedWriter};
    /// let (_r, w) = ipc_pipe::pipe()?;
    /// let mut tx = FramedWriter::new(&w).grow_pipe(false);
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
        self.write_frame_until(payload, timeout, false)
    }

    /// Writes one frame without waiting, for an event loop (a non-blocking descriptor, or a
    /// blocking one: each `write` is preceded by a `poll` and kept within what it promises).
    /// Unlike [`Self::write_frame`] on a non-blocking descriptor, a frame that only partly fits
    /// is not cut: it is *taken*, its unsent rest is kept in the writer ([`Self::pending`]) and
    /// goes out first, when the loop says the pipe is writable again and it calls
    /// [`Self::try_flush`] (or the next frame's call does it).
    ///
    /// ```
    /// use ipc_pipe::{Error, FramedReader, FramedWriter};
    /// let (r, w) = ipc_pipe::pipe()?;
    /// w.set_nonblocking(true)?;
    /// let mut tx = FramedWriter::new(&w).grow_pipe(false);
    /// tx.try_write_frame(&[1; 50_000])?;
    /// tx.try_write_frame(&[2; 50_000])?; // taken: 16 KiB went in, the rest is pending
    /// assert!(tx.pending() > 0);
    /// // Until the rest is out, no new frame is taken.
    /// assert!(matches!(tx.try_write_frame(b"later"), Err(Error::WouldBlock)));
    /// let mut rx = FramedReader::new(&r);
    /// assert_eq!(rx.read_frame()?.map(|f| f.len()), Some(50_000)); // room again
    /// tx.try_flush()?;
    /// assert_eq!(tx.pending(), 0);
    /// assert_eq!(rx.read_frame()?.map(|f| f.len()), Some(50_000));
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Errors
    /// - [`Error::WouldBlock`] if nothing of the frame went in (it is not taken: call again
    ///   when the pipe is writable), also while an earlier frame's rest is still pending.
    /// - As [`Self::write_frame`] otherwise.
    pub fn try_write_frame(&mut self, payload: &[u8]) -> Result<()> {
        match self.write_frame_until(payload, Duration::ZERO, true) {
            Err(Error::TimedOut { .. }) => Err(Error::WouldBlock),
            other => other,
        }
    }

    /// Writes what it can of the pending rest of a frame ([`Self::try_write_frame`]) without
    /// waiting.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if some is still pending; [`Error::NoReader`], [`Error::Io`].
    pub fn try_flush(&mut self) -> Result<()> {
        match self.flush_until(Duration::ZERO) {
            Err(Error::TimedOut { .. }) => Err(Error::WouldBlock),
            other => other,
        }
    }

    /// Writes the pending rest of a frame ([`Self::try_write_frame`]), waiting at most
    /// `timeout` (`Duration::MAX`: forever) for room.
    ///
    /// # Errors
    /// [`Error::TimedOut`] (what is left stays pending); [`Error::NoReader`], [`Error::Io`].
    pub fn flush_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.flush_until(timeout)
    }

    fn flush_until(&mut self, timeout: Duration) -> Result<()> {
        if let Some((written, len)) = self.cut {
            return Err(Error::FrameCutShort { written, len });
        }
        let mut before = self.poller(deadline(timeout))?;
        self.drain(true, &mut before)
    }

    fn write_frame_until(
        &mut self,
        payload: &[u8],
        timeout: Duration,
        keep_rest: bool,
    ) -> Result<()> {
        let deadline = deadline(timeout);
        let before = self.poller(deadline)?;
        let how = How {
            waits: true,
            bound: Some(deadline),
            keep_rest,
        };
        self.write_frame_with(payload, how, before)
    }

    /// What a bounded call does before each `write`: `poll` for room until `deadline`, then
    /// write at most what `poll` promises room for.
    fn poller(
        &self,
        deadline: Option<Instant>,
    ) -> Result<impl FnMut(&W) -> Result<usize> + use<W>> {
        let blocking =
            !rustix::fs::fcntl_getfl(self.inner.as_fd())?.contains(rustix::fs::OFlags::NONBLOCK);
        Ok(move |w: &W| {
            wait(w.as_fd(), PollFlags::OUT, deadline)?;
            Ok(if blocking { PIPE_BUF } else { usize::MAX })
        })
    }
}

/// Where a frame reader is in the stream.
#[derive(Debug, Clone, Copy)]
enum ReadState {
    /// Between frames, or inside a header: `got` bytes of it are in `head`.
    Header { head: [u8; HEADER_LEN], got: usize },
    /// Inside the payload of a frame of `len` bytes, `filled` of which have arrived (in the
    /// caller's buffer during a call, in `partial` between calls).
    Payload { len: usize, filled: usize },
    /// The peer announced a frame above the maximum.
    TooLarge { len: u32 },
    /// The stream ended inside a frame: in its header (`len == None`) or its payload.
    Truncated { got: usize, len: Option<usize> },
}

/// The frame reader's state machine, shared by [`FramedReader`] and the async reader: it asks
/// its caller for bytes through a `read` function and keeps everything it has taken in (a
/// partial frame, the bytes read ahead) between calls, so that an interrupted call (an error,
/// `WouldBlock`, a dropped future) loses nothing.
pub(crate) struct Decoder {
    max: u32,
    state: ReadState,
    /// The payload received so far of a frame whose reading was interrupted (its first
    /// `filled` bytes; beyond them, spare initialised room); empty otherwise.
    partial: Vec<u8>,
    /// Bytes read ahead: `look[lo..hi]` are the next bytes of the stream.
    look: Vec<u8>,
    lo: usize,
    hi: usize,
    /// The last frame was large (see [`LARGE_FRAME`]): read the next header alone.
    large: bool,
}

impl Decoder {
    pub(crate) fn new(max: u32) -> Decoder {
        Decoder {
            max,
            state: ReadState::Header {
                head: [0; HEADER_LEN],
                got: 0,
            },
            partial: Vec::new(),
            look: Vec::new(),
            lo: 0,
            hi: 0,
            large: false,
        }
    }

    pub(crate) fn set_max(&mut self, max: u32) {
        self.max = max;
    }

    pub(crate) fn max(&self) -> u32 {
        self.max
    }

    /// The read-ahead buffer, allocated at the first read: its size depends on no peer.
    fn look(&mut self) -> &mut [u8] {
        if self.look.is_empty() {
            self.look = vec![0; READ_AHEAD];
        }
        &mut self.look
    }

    /// Reads the next frame into `buf` (its allocation and its initialised bytes reused) and
    /// returns its length; `Ok(None)` at a clean end of stream. On an error `buf` is left
    /// empty and what arrived is kept for the next call.
    ///
    /// `read` fills the buffers it is given in order (like `read_vectored`; filling only the
    /// first is fine) and returns the count, 0 at end of stream; an `Interrupted` error is
    /// retried, any other ends this call.
    pub(crate) fn read_frame(
        &mut self,
        buf: &mut Vec<u8>,
        mut read: impl FnMut(&mut [IoSliceMut<'_>]) -> Result<usize>,
    ) -> Result<Option<usize>> {
        if let ReadState::Payload { .. } = self.state {
            // Continue the frame where the last call left it.
            std::mem::swap(buf, &mut self.partial);
            self.partial = Vec::new();
        }
        let result = self.advance(buf, &mut read);
        match &result {
            Ok(Some(_)) => {}
            Ok(None) => buf.clear(),
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
        read: &mut impl FnMut(&mut [IoSliceMut<'_>]) -> Result<usize>,
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
                        self.state = if len > self.max {
                            ReadState::TooLarge { len }
                        } else {
                            ReadState::Payload {
                                len: len as usize,
                                filled: 0,
                            }
                        };
                        continue;
                    }
                    let take = (self.hi - self.lo).min(HEADER_LEN - got);
                    if take > 0 {
                        head[got..got + take].copy_from_slice(&self.look[self.lo..self.lo + take]);
                        self.lo += take;
                        self.state = ReadState::Header {
                            head,
                            got: got + take,
                        };
                        continue;
                    }
                    // Nothing read ahead: read what the stream has, up to the read-ahead size
                    // (after a large frame, only the header: the payload is likely large too).
                    (self.lo, self.hi) = (0, 0);
                    let want = if self.large {
                        HEADER_LEN - got
                    } else {
                        usize::MAX
                    };
                    let look = self.look();
                    let want = want.min(look.len());
                    match read(&mut [IoSliceMut::new(&mut look[..want])]) {
                        Ok(0) if got == 0 => return Ok(None),
                        Ok(0) => self.state = ReadState::Truncated { got, len: None },
                        // A reader that reports more than it was given is not believed.
                        Ok(n) => self.hi = n.min(self.look.len()),
                        Err(Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                ReadState::Payload { len, mut filled } => {
                    if filled == len {
                        buf.truncate(len);
                        self.large = len >= LARGE_FRAME;
                        self.state = ReadState::Header {
                            head: [0; HEADER_LEN],
                            got: 0,
                        };
                        return Ok(Some(len));
                    }
                    // `buf[..filled]` is the payload so far; `buf[filled..]` is initialised
                    // room (the caller's earlier contents, or zeros), used before growing.
                    let take = (self.hi - self.lo).min(len - filled);
                    if take > 0 {
                        let src = &self.look[self.lo..self.lo + take];
                        let fit = (buf.len() - filled).min(take);
                        buf[filled..filled + fit].copy_from_slice(&src[..fit]);
                        // Grow by exactly what is here: what arrived, never the announcement.
                        buf.reserve_exact(take - fit);
                        buf.extend_from_slice(&src[fit..]);
                        self.lo += take;
                        filled += take;
                        self.state = ReadState::Payload { len, filled };
                        continue;
                    }
                    if buf.len() == filled {
                        // Grow with what arrives, in windows that are zeroed once and then
                        // filled: double what is here (at least FIRST_CHUNK), never past the
                        // announced length.
                        let room = (len - filled).min(filled.max(FIRST_CHUNK));
                        buf.reserve_exact(room);
                        buf.resize(filled + room, 0);
                    }
                    let end = buf.len().min(len);
                    (self.lo, self.hi) = (0, 0);
                    let r = if end == len {
                        // The window holds the rest of the frame: read ahead behind it (only
                        // the next header behind a large frame).
                        let ahead = if len >= LARGE_FRAME {
                            HEADER_LEN
                        } else {
                            usize::MAX
                        };
                        let look = self.look();
                        let ahead = ahead.min(look.len());
                        read(&mut [
                            IoSliceMut::new(&mut buf[filled..end]),
                            IoSliceMut::new(&mut look[..ahead]),
                        ])
                    } else {
                        read(&mut [IoSliceMut::new(&mut buf[filled..end])])
                    };
                    match r {
                        Ok(0) => {
                            buf.truncate(filled);
                            self.state = ReadState::Truncated {
                                got: filled,
                                len: Some(len),
                            };
                        }
                        Ok(n) => {
                            let into_buf = n.min(end - filled);
                            filled += into_buf;
                            if end == len {
                                self.hi = (n - into_buf).min(self.look.len());
                            }
                            self.state = ReadState::Payload { len, filled };
                        }
                        Err(Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// The bytes taken from the stream and not returned as frames: the header and payload so
    /// far of a frame in progress, then what was read ahead.
    pub(crate) fn into_unread(self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.state {
            ReadState::Header { head, got } => out.extend_from_slice(&head[..got]),
            ReadState::Payload { len, filled } => {
                out.extend_from_slice(&(len as u32).to_le_bytes());
                out.extend_from_slice(&self.partial[..filled]);
            }
            ReadState::TooLarge { len } => out.extend_from_slice(&len.to_le_bytes()),
            ReadState::Truncated { .. } => {}
        }
        out.extend_from_slice(&self.look[self.lo..self.hi]);
        out
    }
}

impl<R: Read> FramedReader<R> {
    /// A reader with the [`DEFAULT_MAX_FRAME`].
    pub fn new(inner: R) -> FramedReader<R> {
        FramedReader {
            inner,
            decoder: Decoder::new(DEFAULT_MAX_FRAME),
        }
    }

    /// Sets the largest frame this reader accepts; a peer announcing more gets
    /// [`Error::MessageTooLarge`] before any allocation.
    #[must_use]
    pub fn max_frame(mut self, max: u32) -> FramedReader<R> {
        self.decoder.set_max(max);
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

    /// Reads the next frame into `buf` (its allocation reused: pass the same `Vec` again and
    /// again) and returns its length; `Ok(None)` at a clean end of stream. On an error `buf` is
    /// left empty.
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
        let inner = &mut self.inner;
        self.decoder.read_frame(buf, |bufs| {
            before(inner)?;
            Ok(inner.read_vectored(bufs)?)
        })
    }

    /// The reader inside.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Gives the reader back; what this reader took in and has not returned (a frame in
    /// progress, bytes read ahead) is lost: see [`Self::into_parts`].
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Gives the reader back with the bytes this reader took from it and has not returned as
    /// frames (the header and payload so far of a frame in progress, then what it read ahead):
    /// they come before whatever `R` yields next.
    ///
    /// ```
    /// use ipc_pipe::FramedReader;
    /// let stream = [1, 0, 0, 0, b'a', 2, 0, 0, 0, b'b'];
    /// let mut rx = FramedReader::new(&stream[..]);
    /// assert_eq!(rx.read_frame()?.as_deref(), Some(&b"a"[..]));
    /// let (rest, unread) = rx.into_parts();
    /// assert_eq!(unread, [2, 0, 0, 0, b'b']); // read ahead, not yet returned
    /// assert!(rest.is_empty());
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    pub fn into_parts(self) -> (R, Vec<u8>) {
        (self.inner, self.decoder.into_unread())
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
