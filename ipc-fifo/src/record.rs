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

/// Puts `record` with its length prefix into `buf`; returns the length to write at once.
pub(crate) fn encode_record(record: &[u8], buf: &mut [u8; PIPE_BUF]) -> Result<usize> {
    if record.len() > RECORD_MAX {
        return Err(Error::MessageTooLarge {
            len: record.len(),
            max: RECORD_MAX,
        });
    }
    let total = HEADER_LEN + record.len();
    buf[..HEADER_LEN].copy_from_slice(&(record.len() as u32).to_le_bytes());
    buf[HEADER_LEN..total].copy_from_slice(record);
    Ok(total)
}

/// A write of a record (at most `PIPE_BUF` bytes) that was not whole: cannot happen, since
/// the kernel writes such a write all at once or not at all.
pub(crate) fn short_record() -> Error {
    Error::Io(io::Error::other("short write of an atomic record"))
}

/// The length prefix of a frame of `len` bytes, and the length of prefix and frame together.
///
/// # Errors
/// [`Error::MessageTooLarge`] beyond `u32::MAX` bytes.
pub(crate) fn frame_header(len: usize) -> Result<([u8; HEADER_LEN], usize)> {
    let too_large = || Error::MessageTooLarge {
        len,
        max: u32::MAX as usize,
    };
    let header = u32::try_from(len).map_err(|_| too_large())?.to_le_bytes();
    // (Can overflow only where `usize` is 32 bits.)
    let total = HEADER_LEN.checked_add(len).ok_or_else(too_large)?;
    Ok((header, total))
}

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
        let mut buf = [0u8; PIPE_BUF];
        let total = encode_record(record, &mut buf)?;
        let n = self.write_raw(&buf[..total])?;
        if n != total {
            return Err(short_record());
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
        let (header, total) = frame_header(frame.len())?;
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
/// The peer's length prefix is not trusted: one above the reader's maximum is
/// [`Error::MessageTooLarge`] before anything is allocated, and memory grows with the bytes
/// that actually arrive, never with the length a peer announces: a 4-byte header announcing
/// 512 MiB followed by nothing costs nothing beyond the reader's 64 KiB buffer.
///
/// The reader's descriptor is switched to non-blocking mode for as long as the `RecordReader`
/// has it (waits are `poll`s, so a timed receive never blocks in `read` past its deadline,
/// even when another process reads the same FIFO); [`into_inner`](RecordReader::into_inner)
/// gives it back in the mode it came in. Poll [`get_ref`](RecordReader::get_ref) for
/// readability and drain with [`try_recv`](RecordReader::try_recv) to join an event loop.
///
/// # After `fork`
///
/// In a child forked from a multi-threaded parent, a record reader made with
/// [`RecordReader::new`] may receive ([`recv`](RecordReader::recv),
/// [`try_recv`](RecordReader::try_recv), [`recv_timeout`](RecordReader::recv_timeout): its
/// buffer is allocated already and never grows, and it makes only `read`, `poll`, `fcntl` and
/// `clock_gettime` system calls) and be dropped. A framed reader may allocate as a frame
/// arrives: not in such a child.
pub struct RecordReader {
    reader: FifoReader,
    frames: Frames,
    /// `Some(was_nonblocking)` once the descriptor has been switched to non-blocking mode.
    restore: Option<bool>,
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader")
            .field("reader", &self.reader)
            .field("frames", &self.frames)
            .finish()
    }
}

/// How much a reader asks the kernel for at once (the default capacity of a pipe), and the
/// size of its buffer until a larger frame arrives.
const READ_CHUNK: usize = 64 * 1024;

/// How long a receive waits.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Not at all (`try_recv`).
    No,
    /// Until the deadline (`recv_timeout`).
    Until(Deadline),
    /// For as long as it takes (`recv`).
    Forever,
}

/// The framing every record reader does (blocking or async): the bytes received and not yet
/// returned, where the next message starts, and the largest length accepted.
///
/// Messages are cut from `buf[start..end]`; reads append at `end`. A message is returned (and
/// `start` moves past it) only once it is complete, so a read that is abandoned half-way (a
/// dropped future) loses nothing: what arrived stays here for the next receive.
pub(crate) struct Frames {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl std::fmt::Debug for Frames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("buffered", &(self.end - self.start))
            .field("capacity", &self.buf.len())
            .field("max", &self.max)
            .finish()
    }
}

impl Frames {
    /// Frames of at most `max` bytes, in a 64 KiB buffer to begin with.
    pub(crate) fn new(max: usize) -> Frames {
        Frames {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            max,
        }
    }

    /// The announced length of the message at `start`, if its header is complete.
    fn announced(&self) -> Option<usize> {
        if self.end - self.start < HEADER_LEN {
            return None;
        }
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        Some(u32::from_le_bytes(h) as usize)
    }

    /// The next complete message in the buffer, as a range; checks the announced length.
    pub(crate) fn complete(&self) -> Result<Option<(usize, usize)>> {
        let Some(len) = self.announced() else {
            return Ok(None);
        };
        if len > self.max {
            return Err(Error::MessageTooLarge { len, max: self.max });
        }
        if self.end - self.start - HEADER_LEN < len {
            return Ok(None);
        }
        let a = self.start + HEADER_LEN;
        Ok(Some((a, a + len)))
    }

    /// Makes room after `end` for more of the current message: moves it to the front when the
    /// tail is too short, and grows the buffer only when it is full of the current message —
    /// by doubling, and never beyond the message's header and announced length (already
    /// checked against the maximum). So the buffer grows with the bytes that arrived.
    pub(crate) fn make_room(&mut self) -> Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let need = match self.announced() {
            Some(len) => len
                .checked_add(HEADER_LEN)
                .ok_or(Error::MessageTooLarge { len, max: self.max })?,
            None => HEADER_LEN,
        };
        if self.end == self.buf.len() || self.buf.len() - self.start < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Full, and the message is not complete (else `complete` had returned it): so
            // `need` > len, and the buffer grows by at most what has arrived.
            let grown = self.buf.len().saturating_mul(2).max(READ_CHUNK).min(need);
            // Exactly: `resize` alone would round the capacity up (doubling it), past the
            // maximum and past what arrived.
            self.buf.reserve_exact(grown - self.buf.len());
            self.buf.resize(grown, 0);
        }
        Ok(())
    }

    /// Where the next read goes (never empty after [`Frames::make_room`]).
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Frames::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// The stream ended: `Ok(())` if it ended between messages, [`Error::Truncated`] inside one.
    pub(crate) fn at_end(&self) -> Result<()> {
        if self.start == self.end {
            Ok(())
        } else {
            Err(Error::Truncated)
        }
    }

    /// Hands out the complete message at `range` (from [`Frames::complete`]) and moves past it.
    pub(crate) fn take(&mut self, (a, b): (usize, usize)) -> &[u8] {
        self.start = b;
        &self.buf[a..b]
    }
}

impl RecordReader {
    /// A reader of records (at most [`RECORD_MAX`] bytes each), from any number of writers.
    pub fn new(reader: FifoReader) -> RecordReader {
        RecordReader::framed(reader, RECORD_MAX)
    }

    /// A reader of frames of at most `max_len` bytes, from one writer using
    /// [`FifoWriter::write_frame`]. Memory grows as a frame's bytes arrive (doubling, from
    /// 64 KiB), to at most the largest frame received plus its header: never beyond `max_len`
    /// plus the header, and never beyond about twice what a peer has actually sent.
    pub fn framed(reader: FifoReader, max_len: usize) -> RecordReader {
        RecordReader {
            reader,
            frames: Frames::new(max_len),
            restore: None,
        }
    }

    /// The underlying reader (in non-blocking mode while the `RecordReader` has it; poll it
    /// for readability). Reading from it directly takes bytes from under the record reader.
    pub fn get_ref(&self) -> &FifoReader {
        &self.reader
    }

    /// The underlying reader, back in the blocking mode it had; bytes already buffered are lost.
    pub fn into_inner(self) -> FifoReader {
        if let Some(was_nonblocking) = self.restore {
            let _ = self.reader.set_nonblocking(was_nonblocking);
        }
        self.reader
    }

    /// Waits for the next whole message; `None` at end-of-file (every writer has closed and
    /// everything was read). A keep-alive reader never returns `None`.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] for a length prefix beyond the maximum (the stream is then
    /// out of step: every later call says the same), [`Error::Truncated`] if the stream ends
    /// inside a message, [`Error::Io`].
    pub fn recv(&mut self) -> Result<Option<&[u8]>> {
        self.recv_until(Wait::Forever)
    }

    /// As [`RecordReader::recv`], but [`Error::WouldBlock`] instead of waiting when no whole
    /// message is there.
    ///
    /// # Errors
    /// [`Error::WouldBlock`], or as [`RecordReader::recv`].
    pub fn try_recv(&mut self) -> Result<Option<&[u8]>> {
        self.recv_until(Wait::No)
    }

    /// As [`RecordReader::recv`], waiting at most `timeout` (`Duration::MAX`: forever).
    ///
    /// # Errors
    /// [`Error::TimedOut`], or as [`RecordReader::recv`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<&[u8]>> {
        let deadline = Deadline::after(timeout);
        self.recv_until(if deadline.is_never() {
            Wait::Forever
        } else {
            Wait::Until(deadline)
        })
    }

    fn recv_until(&mut self, wait: Wait) -> Result<Option<&[u8]>> {
        if self.restore.is_none() {
            let was = fcntl_getfl(self.reader.fd_ref())?.contains(OFlags::NONBLOCK);
            self.reader.set_nonblocking(true)?;
            self.restore = Some(was);
        }
        let range = loop {
            if let Some(r) = self.frames.complete()? {
                break r;
            }
            self.frames.make_room()?;
            match self.reader.read_raw(self.frames.spare()) {
                Ok(0) => {
                    self.frames.at_end()?;
                    return Ok(None);
                }
                Ok(n) => self.frames.filled(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let fd = self.reader.fd_ref();
                    match wait {
                        Wait::No => return Err(Error::WouldBlock),
                        Wait::Until(deadline) => {
                            if poll_until(fd, PollFlags::IN, deadline, None)?.is_none() {
                                return Err(Error::TimedOut);
                            }
                        }
                        Wait::Forever => {
                            poll_until(fd, PollFlags::IN, Deadline::after(Duration::MAX), None)?;
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Some(self.frames.take(range)))
    }
}

impl FifoReader {
    pub(crate) fn fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}
