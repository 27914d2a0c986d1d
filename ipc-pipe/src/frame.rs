//! Messages over a byte stream: a length-prefixed [`FramedWriter`] / [`FramedReader`].
//!
//! A pipe carries bytes, not messages. Records up to [`PIPE_BUF`](crate::PIPE_BUF) can rely on
//! the kernel's atomicity ([`PipeWriter::write_atomic`](crate::PipeWriter::write_atomic)); larger
//! messages need framing. A frame is a 4-byte little-endian length followed by that many bytes.
//! The reader treats the length as hostile: one above its maximum is refused before anything is
//! allocated, and a stream that ends inside a frame is `UnexpectedEof`, never a short message.
//!
//! Frames are not atomic: with several writers on one pipe, give each writer its own pipe, or
//! keep frames within `PIPE_BUF` and use one [`FramedWriter::write_frame`] call per frame (which
//! then issues a single `write`).

use std::fmt;
use std::io::{self, IoSlice, Read, Write};

use crate::{Error, PIPE_BUF, Result};

/// The bytes of a frame's length prefix.
pub const HEADER_LEN: usize = 4;

/// The default maximum frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

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
}

/// Reads length-prefixed frames from any [`Read`]; see [`FramedWriter`].
pub struct FramedReader<R> {
    inner: R,
    max: u32,
}

impl<W> fmt::Debug for FramedWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramedWriter")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<R> fmt::Debug for FramedReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FramedReader")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<W: Write> FramedWriter<W> {
    /// A writer with the [`DEFAULT_MAX_FRAME`].
    pub fn new(inner: W) -> FramedWriter<W> {
        FramedWriter {
            inner,
            max: DEFAULT_MAX_FRAME,
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
    /// [`Error::MessageTooLarge`] if `payload` exceeds the maximum (nothing is written);
    /// [`Error::NoReader`]; [`Error::Io`] (after which the stream may hold part of a frame).
    pub fn write_frame(&mut self, payload: &[u8]) -> Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= self.max)
            .ok_or(Error::MessageTooLarge {
                len: payload.len() as u64,
                max: u64::from(self.max),
            })?;
        let header = len.to_le_bytes();
        if HEADER_LEN + payload.len() <= PIPE_BUF {
            let mut one = [0u8; PIPE_BUF];
            one[..HEADER_LEN].copy_from_slice(&header);
            one[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
            self.inner.write_all(&one[..HEADER_LEN + payload.len()])?;
        } else {
            write_all_vectored(&mut self.inner, &header, payload)?;
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

/// `write_all` over two slices with `writev`, continuing after short writes.
fn write_all_vectored(w: &mut impl Write, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        match w.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                let from_a = n.min(a.len());
                a = &a[from_a..];
                n -= from_a;
                b = &b[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl<R: Read> FramedReader<R> {
    /// A reader with the [`DEFAULT_MAX_FRAME`].
    pub fn new(inner: R) -> FramedReader<R> {
        FramedReader {
            inner,
            max: DEFAULT_MAX_FRAME,
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
    ///   allocated, and the stream is then out of step (drop it).
    /// - [`Error::Io`] of kind [`io::ErrorKind::UnexpectedEof`] if the stream ends inside a
    ///   frame (in its header or its payload).
    pub fn read_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.read_frame_into(&mut buf)?.map(|_| buf))
    }

    /// Reads the next frame into `buf` (cleared first, its allocation reused) and returns its
    /// length; `Ok(None)` at a clean end of stream.
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
        buf.clear();
        let mut header = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match self.inner.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("stream ended inside a frame header ({got} of {HEADER_LEN} bytes)"),
                    )));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let len = u32::from_le_bytes(header);
        if len > self.max {
            return Err(Error::MessageTooLarge {
                len: u64::from(len),
                max: u64::from(self.max),
            });
        }
        let len = len as usize;
        // `take` + `read_to_end` grows the buffer as bytes arrive, not by the announced length
        // at once: a peer that announces the maximum and sends nothing costs us nothing.
        buf.reserve(len.min(64 * 1024));
        let got = (&mut self.inner).take(len as u64).read_to_end(buf)?;
        if got < len {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended inside a frame ({got} of {len} bytes)"),
            )));
        }
        Ok(Some(len))
    }

    /// The reader inside.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Gives the reader back.
    pub fn into_inner(self) -> R {
        self.inner
    }
}
