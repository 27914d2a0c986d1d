//! Whole messages over a FIFO: atomic records (many writers) and frames (one writer).
//!
//! Both are a 4-byte little-endian length followed by the payload. A record is written with one
//! `write(2)` of at most `PIPE_BUF` bytes, which POSIX guarantees is never interleaved with
//! other writers' data; that write carries the length prefix too, so a record's payload is at
//! most `PIPE_BUF - 4` bytes ([`RECORD_MAX`], 4092 on Linux). A frame may be larger and is
//! written in several pieces, so only one writer may send frames to a FIFO.

use std::io::{self, IoSlice};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};

use crate::error::{Error, Result};
use crate::open::{FifoReader, FifoWriter};
use crate::time::{Deadline, poll_until};

/// `PIPE_BUF`: writes up to this many bytes to a FIFO are atomic (4096 on Linux).
pub const PIPE_BUF: usize = rustix::pipe::PIPE_BUF;

/// The length prefix of a record or frame: a `u32`, little-endian.
pub const HEADER_LEN: usize = 4;

/// The largest record payload: [`PIPE_BUF`] minus the 4-byte length prefix ([`HEADER_LEN`]),
/// so that prefix and payload go out in one atomic write. 4092 bytes on Linux.
///
/// A FIFO is a byte stream: the reader finds where each record ends only from its length
/// prefix, and only writes of at most `PIPE_BUF` bytes—prefix included—are kept whole
/// among several writers. Larger messages: frames, from one writer
/// ([`FifoWriter::write_frame`]).
pub const RECORD_MAX: usize = PIPE_BUF - HEADER_LEN;

// The figures in the docs.
#[cfg(target_os = "linux")]
const _: () = assert!(PIPE_BUF == 4096 && RECORD_MAX == 4092);

impl FifoWriter {
    /// Sends `record` as one atomic write: it never interleaves with other writers' records, so
    /// any number of processes may write records to one FIFO. Blocks while the FIFO is full
    /// (unless in non-blocking mode).
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] `{ len, max: RECORD_MAX }` if `record` is longer than
    /// [`RECORD_MAX`] (4092 on Linux: `PIPE_BUF` less the 4-byte length prefix; nothing is
    /// written), [`Error::NoReader`] if every reader has gone, [`Error::WouldBlock`] in
    /// non-blocking mode when the FIFO has no room, [`Error::Io`].
    pub fn write_record(&self, record: &[u8]) -> Result<()> {
        if record.len() > RECORD_MAX {
            return Err(Error::MessageTooLarge {
                len: record.len(),
                max: RECORD_MAX,
            });
        }
        let mut buf = [0u8; PIPE_BUF];
        let total = HEADER_LEN + record.len();
        buf[..HEADER_LEN].copy_from_slice(&(record.len() as u32).to_le_bytes());
        buf[HEADER_LEN..total].copy_from_slice(record);
        let n = self.write_raw(&buf[..total])?;
        if n != total {
            // Cannot happen for writes of at most PIPE_BUF bytes.
            return Err(Error::Io(io::Error::other(
                "short write of an atomic record",
            )));
        }
        Ok(())
    }

    /// As [`FifoWriter::write_record`], but [`Error::WouldBlock`] instead of waiting when the
    /// FIFO is full.
    ///
    /// # Errors
    /// As [`FifoWriter::write_record`].
    pub fn try_write_record(&self, record: &[u8]) -> Result<()> {
        self.write_record_timeout(record, Duration::ZERO)
            .map_err(|e| match e {
                Error::TimedOut => Error::WouldBlock,
                e => e,
            })
    }

    /// As [`FifoWriter::write_record`], waiting at most `timeout` for room (`Duration::MAX`:
    /// forever). The write is made with `O_NONBLOCK` set for its duration, so it cannot
    /// overshoot the deadline when other writers race for the same room.
    ///
    /// `O_NONBLOCK` belongs to the open file, which this writer shares with copies of its
    /// descriptor (`dup`, a forked child's) and with other threads writing through
    /// `&FifoWriter`: a blocking write through one of those at the same moment may see
    /// [`Error::WouldBlock`]. Give each thread that mixes the two forms its own writer
    /// ([`FifoWriter::open`] again).
    ///
    /// # Errors
    /// [`Error::TimedOut`], or as [`FifoWriter::write_record`].
    pub fn write_record_timeout(&self, record: &[u8], timeout: Duration) -> Result<()> {
        let deadline = Deadline::after(timeout);
        if deadline.is_never() {
            return self.write_record(record);
        }
        if record.len() > RECORD_MAX {
            return Err(Error::MessageTooLarge {
                len: record.len(),
                max: RECORD_MAX,
            });
        }
        let flags = fcntl_getfl(self.fd())?;
        let was_blocking = !flags.contains(OFlags::NONBLOCK);
        if was_blocking {
            fcntl_setfl(self.fd(), flags | OFlags::NONBLOCK)?;
        }
        let result = loop {
            match self.write_record(record) {
                Err(Error::WouldBlock) => {}
                r => break r,
            }
            match poll_until(self.fd(), PollFlags::OUT, deadline, None) {
                Ok(Some(_)) => {}
                Ok(None) => break Err(Error::TimedOut),
                Err(e) => break Err(e),
            }
        };
        // Back to blocking mode on every path. The write's own error comes first; restoring
        // the flag on a valid descriptor does not fail in practice.
        let restored = if was_blocking {
            fcntl_setfl(self.fd(), flags)
        } else {
            Ok(())
        };
        result.and(restored.map_err(Error::from))
    }

    /// Sends `frame` (any length up to `u32::MAX`) with its length prefix, in as many writes as
    /// it takes. Frames from two writers can interleave: use frames with one writer per FIFO,
    /// and [`RecordReader::framed`] to read them.
    ///
    /// Frames have no `try_`/`_timeout` forms: a frame that was begun must be finished, or the
    /// stream would be corrupt. In non-blocking mode, a frame of which nothing could be written
    /// is [`Error::WouldBlock`]; one that was begun is completed, waiting for room as needed.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] beyond `u32::MAX` bytes, [`Error::NoReader`],
    /// [`Error::WouldBlock`] (see above), [`Error::Io`].
    pub fn write_frame(&self, frame: &[u8]) -> Result<()> {
        let len = u32::try_from(frame.len()).map_err(|_| Error::MessageTooLarge {
            len: frame.len(),
            max: u32::MAX as usize,
        })?;
        let header = len.to_le_bytes();
        let total = HEADER_LEN + frame.len();
        let mut done = 0;
        while done < total {
            let r = if done < HEADER_LEN {
                self.write_vectored_raw(&[IoSlice::new(&header[done..]), IoSlice::new(frame)])
            } else {
                self.write_raw(&frame[done - HEADER_LEN..])
            };
            let n = match r {
                Ok(n) => n,
                // Non-blocking mode: nothing sent yet, so say so; a frame once begun is
                // finished (a half frame would corrupt the stream for good).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if done == 0 {
                        return Err(Error::WouldBlock);
                    }
                    poll_until(
                        self.fd(),
                        PollFlags::OUT,
                        Deadline::after(Duration::MAX),
                        None,
                    )?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(Error::Io(io::ErrorKind::WriteZero.into()));
            }
            done += n;
        }
        Ok(())
    }
}

/// Reads whole records (or frames) from a FIFO: each `recv` returns one complete message, as it
/// was sent, or `None` at end-of-file.
///
/// ```
/// # fn main() -> Result<(), ipc_fifo::Error> {
/// # let dir = ipc_fifo::PrivateDir::new("ipcrs-doc-rec")?;
/// # let fifo = ipc_fifo::Fifo::create(dir.join("f")?)?;
/// let mut records = ipc_fifo::RecordReader::new(ipc_fifo::FifoReader::try_open(fifo.path())?);
/// let writer = ipc_fifo::FifoWriter::try_open(fifo.path())?;
/// writer.write_record(b"one")?;
/// writer.write_record(b"two")?;
/// drop(writer);
/// assert_eq!(records.recv()?, Some(&b"one"[..]));
/// assert_eq!(records.recv()?, Some(&b"two"[..]));
/// assert_eq!(records.recv()?, None);
/// # Ok(()) }
/// ```
///
/// A length prefix above the reader's maximum is [`Error::MessageTooLarge`] before anything is
/// allocated: the peer's header is not trusted.
#[derive(Debug)]
pub struct RecordReader {
    reader: FifoReader,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

/// How much a reader asks the kernel for at once (the default capacity of a pipe).
const READ_CHUNK: usize = 64 * 1024;

impl RecordReader {
    /// A reader of records (at most [`RECORD_MAX`] bytes each), from any number of writers.
    pub fn new(reader: FifoReader) -> RecordReader {
        RecordReader::framed(reader, RECORD_MAX)
    }

    /// A reader of frames of at most `max_len` bytes, from one writer using
    /// [`FifoWriter::write_frame`]. Memory grows to the largest frame received, never beyond
    /// `max_len` plus the header.
    pub fn framed(reader: FifoReader, max_len: usize) -> RecordReader {
        RecordReader {
            reader,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            max: max_len,
        }
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &FifoReader {
        &self.reader
    }

    /// The underlying reader; bytes already buffered are lost.
    pub fn into_inner(self) -> FifoReader {
        self.reader
    }

    /// Waits for the next whole message; `None` at end-of-file (every writer has closed and
    /// everything was read). A keep-alive reader never returns `None`.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] for a length prefix beyond the maximum, [`Error::Truncated`]
    /// if the stream ends inside a message, [`Error::WouldBlock`] if the reader is in
    /// non-blocking mode and no whole message is there, [`Error::Io`].
    pub fn recv(&mut self) -> Result<Option<&[u8]>> {
        self.recv_until(None)
    }

    /// As [`RecordReader::recv`], but [`Error::WouldBlock`] instead of waiting.
    ///
    /// # Errors
    /// As [`RecordReader::recv`].
    pub fn try_recv(&mut self) -> Result<Option<&[u8]>> {
        match self.recv_until(Some(Deadline::after(Duration::ZERO))) {
            Err(Error::TimedOut) => Err(Error::WouldBlock),
            r => r,
        }
    }

    /// As [`RecordReader::recv`], waiting at most `timeout` (`Duration::MAX`: forever).
    ///
    /// # Errors
    /// [`Error::TimedOut`], or as [`RecordReader::recv`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<&[u8]>> {
        let deadline = Deadline::after(timeout);
        self.recv_until((!deadline.is_never()).then_some(deadline))
    }

    /// The next complete message in the buffer, as a range; checks the announced length.
    fn complete(&self) -> Result<Option<(usize, usize)>> {
        let avail = self.end - self.start;
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        let len = u32::from_le_bytes(h) as usize;
        if len > self.max {
            return Err(Error::MessageTooLarge { len, max: self.max });
        }
        if avail - HEADER_LEN < len {
            return Ok(None);
        }
        let a = self.start + HEADER_LEN;
        Ok(Some((a, a + len)))
    }

    /// Makes room after `end` for the rest of the current message and at least some more.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        // The whole current message must fit: header + announced length (already checked
        // against max, so this cannot be a hostile allocation).
        let need = if self.end - self.start >= HEADER_LEN {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
            HEADER_LEN + u32::from_le_bytes(h) as usize
        } else {
            HEADER_LEN
        };
        if self.buf.len() - self.start < need || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < need {
            self.buf.resize(need.max(READ_CHUNK), 0);
        }
    }

    fn recv_until(&mut self, deadline: Option<Deadline>) -> Result<Option<&[u8]>> {
        let (a, b) = loop {
            if let Some(r) = self.complete()? {
                break r;
            }
            self.make_room();
            if let Some(deadline) = deadline {
                if poll_until(self.reader.fd_ref(), PollFlags::IN, deadline, None)?.is_none() {
                    return Err(Error::TimedOut);
                }
            }
            let n = self.reader.read_raw(&mut self.buf[self.end..])?;
            if n == 0 {
                if self.start == self.end {
                    return Ok(None);
                }
                return Err(Error::Truncated);
            }
            self.end += n;
        };
        self.start = b;
        Ok(Some(&self.buf[a..b]))
    }
}

impl FifoReader {
    pub(crate) fn fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}
