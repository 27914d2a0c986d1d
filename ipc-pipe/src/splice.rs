//! Zero-copy transfers: [`splice`], [`tee`], [`vmsplice`](crate::vmsplice), the
//! [`ZeroCopyWriter`] built on it, and [`copy`], the fast "from this descriptor into that one".
//!
//! A pipe's buffer is a ring of page references. `splice` moves those references between a pipe
//! and another descriptor, `tee` duplicates them into a second pipe, and `vmsplice` makes them
//! point at the caller's own memory: data crosses without being copied through user space.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::pipe::SpliceFlags;

use crate::pipe::{deadline, wait};
use crate::{Error, PipeReader, PipeWriter, Result, pipe, sys};

/// `vmsplice(fd, [data], 0)`—Maps the pages under `data` into the pipe instead of copying them.
///
/// Returns how many bytes were spliced (possibly fewer than `data.len()`, like `write`). Blocks
/// while the pipe is full unless the writer is non-blocking. Honours the writer's
/// [`SigpipePolicy`](crate::SigpipePolicy).
///
/// # Safety
/// The pipe keeps *references* to the pages of `data`, not copies, until the reader has consumed
/// the bytes. Until then the caller must neither modify `data` nor free it (a freed buffer is
/// reused by the allocator, and the reader would then read whatever is written there next, which
/// may be another part of the program's secrets). "Consumed" means the reader copied the bytes
/// out (`read`, `splice` into a regular file); if the reader `splice`s or `tee`s them into another
/// pipe or a socket, the references travel on and the rule holds until *that* consumer is done.
///
/// The simplest safe way to meet the contract is [`ZeroCopyWriter`], which owns its buffer
/// and reuses a piece only after the pipe can no longer refer to it.
///
/// ```
/// use std::io::Read;
/// let (mut r, w) = ipc_pipe::pipe()?;
/// let data: &'static [u8] = b"static bytes never change"; // meets the contract trivially
/// // SAFETY: `data` is immutable and lives for the whole program.
/// let n = unsafe { ipc_pipe::vmsplice(&w, data)? };
/// let mut got = vec![0; n];
/// r.read_exact(&mut got)?;
/// assert_eq!(got, data);
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
///
/// # Errors
/// [`Error::NoReader`] when there is no reader, [`Error::WouldBlock`] on a full non-blocking
/// pipe, [`Error::Io`] (`EINTR` is reported as `Interrupted`, not retried).
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/vmsplice.2.html)
#[doc(alias = "SPLICE_F_GIFT")]
#[allow(unsafe_code, unsafe_op_in_unsafe_fn)]
pub unsafe fn vmsplice(writer: &PipeWriter, data: &[u8]) -> Result<usize> {
    // SAFETY: this function's contract is `sys::vmsplice`'s, passed on to our caller. It is the
    // one unsafe call here, so no unsafe block (those live in sys.rs only).
    Ok(writer.guarded(|| sys::vmsplice(writer.as_fd(), data))?)
}

/// `splice(from, NULL, to, NULL, len, 0)`—Moves up to `len` bytes from `from` to `to` without
/// copying them through user space. One of the two must be a pipe. Returns the number of bytes
/// moved; 0 means end of file on `from` (or `len == 0`).
///
/// ```
/// use std::io::{Read, Write};
/// let (mut r1, mut w1) = ipc_pipe::pipe()?;
/// let (mut r2, w2) = ipc_pipe::pipe()?;
/// w1.write_all(b"moved, not copied")?;
/// assert_eq!(ipc_pipe::splice(&r1, &w2, 1 << 20)?, 17);
/// drop((w1, w2));
/// let mut s = String::new();
/// r2.read_to_string(&mut s)?;
/// assert_eq!(s, "moved, not copied");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Whether a `to` pipe without reader also raises SIGPIPE depends on the process's disposition
/// (this call cannot know a [`PipeWriter`]'s policy); see [`crate::sigpipe::suppressed`].
///
/// # Errors
/// [`Error::NoReader`] if `to` is a pipe without reader, [`Error::WouldBlock`] if a non-blocking
/// end is not ready, [`Error::Io`] with `InvalidInput` (`EINVAL`) if neither side is a pipe or
/// the other side does not support splicing (e.g. a file opened with `O_APPEND`).
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/splice.2.html)
pub fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> Result<usize> {
    loop {
        match rustix::pipe::splice(&from, None, &to, None, len, SpliceFlags::MOVE) {
            Err(Errno::INTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// [`splice`], waiting at most `timeout` (`Duration::MAX`: forever) for `from` to be readable
/// and `to` writable. `EINTR` is retried against the same deadline.
///
/// The pipe side never blocks past the deadline (`poll` first, then `SPLICE_F_NONBLOCK`); a
/// side that is not a pipe blocks as its descriptor says, so make a socket non-blocking too
/// where the bound must be strict (regular files never wait).
///
/// ```
/// use std::time::Duration;
/// use ipc_pipe::Error;
/// let (r1, w1) = ipc_pipe::pipe()?;
/// let (r2, w2) = ipc_pipe::pipe()?;
/// assert!(matches!(ipc_pipe::splice_timeout(&r1, &w2, 64, Duration::from_millis(5)),
///     Err(Error::TimedOut { .. })));
/// assert!(matches!(ipc_pipe::try_splice(&r1, &w2, 64), Err(Error::WouldBlock)));
/// w1.write_atomic(b"now")?;
/// assert_eq!(ipc_pipe::splice_timeout(&r1, &w2, 64, Duration::MAX)?, 3);
/// assert_eq!(r2.available()?, 3);
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
///
/// # Errors
/// As [`splice`], and [`Error::TimedOut`] (nothing was moved).
pub fn splice_timeout(
    from: impl AsFd,
    to: impl AsFd,
    len: usize,
    timeout: Duration,
) -> Result<usize> {
    let (from, to) = (from.as_fd(), to.as_fd());
    if len == 0 {
        return Ok(0);
    }
    let deadline = deadline(timeout);
    loop {
        wait(to, PollFlags::OUT, deadline)?;
        wait(from, PollFlags::IN, deadline)?;
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        match rustix::pipe::splice(from, None, to, None, len, flags) {
            // Another process took the data or the room first: wait again.
            Err(Errno::INTR | Errno::AGAIN) => continue,
            other => return Ok(other?),
        }
    }
}

/// [`splice`] without waiting.
///
/// # Errors
/// As [`splice`]; [`Error::WouldBlock`] if `from` has nothing or `to` has no room now.
pub fn try_splice(from: impl AsFd, to: impl AsFd, len: usize) -> Result<usize> {
    match splice_timeout(from, to, len, Duration::ZERO) {
        Err(Error::TimedOut { .. }) => Err(Error::WouldBlock),
        other => other,
    }
}

/// `tee(from, to, len, 0)`—Duplicates up to `len` bytes at the head of pipe `from` into pipe
/// `to` without consuming them: `from` still yields the same bytes afterwards. Returns the
/// number of bytes duplicated; 0 if `from` is empty and has no writer.
///
/// ```
/// use std::io::{Read, Write};
/// let (mut r1, mut w1) = ipc_pipe::pipe()?;
/// let (mut r2, w2) = ipc_pipe::pipe()?;
/// w1.write_all(b"twice")?;
/// assert_eq!(ipc_pipe::tee(&r1, &w2, 64)?, 5);
/// let mut a = [0; 5];
/// let mut b = [0; 5];
/// r1.read_exact(&mut a)?;
/// r2.read_exact(&mut b)?;
/// assert_eq!((&a, &b), (b"twice", b"twice"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::NoReader`], [`Error::WouldBlock`], [`Error::Io`].
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/tee.2.html)
pub fn tee(from: &PipeReader, to: &PipeWriter, len: usize) -> Result<usize> {
    // Honours `to`'s SIGPIPE policy.
    loop {
        match to.guarded(|| rustix::pipe::tee(from, to, len, SpliceFlags::empty())) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return Ok(other?),
        }
    }
}

/// [`tee`], waiting at most `timeout` (`Duration::MAX`: forever) for data in `from` and room in
/// `to`; both are pipes, so the bound is strict (`poll`, then `SPLICE_F_NONBLOCK`). `EINTR` is
/// retried against the same deadline.
///
/// ```
/// use std::time::Duration;
/// use ipc_pipe::Error;
/// let (r1, w1) = ipc_pipe::pipe()?;
/// let (_r2, w2) = ipc_pipe::pipe()?;
/// assert!(matches!(ipc_pipe::try_tee(&r1, &w2, 64), Err(Error::WouldBlock)));
/// w1.write_atomic(b"twice")?;
/// assert_eq!(ipc_pipe::tee_timeout(&r1, &w2, 64, Duration::from_secs(5))?, 5);
/// assert_eq!(r1.available()?, 5); // still there
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
///
/// # Errors
/// As [`tee`], and [`Error::TimedOut`] (nothing was duplicated).
pub fn tee_timeout(
    from: &PipeReader,
    to: &PipeWriter,
    len: usize,
    timeout: Duration,
) -> Result<usize> {
    if len == 0 {
        return Ok(0);
    }
    let deadline = deadline(timeout);
    loop {
        wait(to.as_fd(), PollFlags::OUT, deadline)?;
        wait(from.as_fd(), PollFlags::IN, deadline)?;
        match to.guarded(|| rustix::pipe::tee(from, to, len, SpliceFlags::NONBLOCK)) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                continue;
            }
            other => return Ok(other?),
        }
    }
}

/// [`tee`] without waiting.
///
/// # Errors
/// As [`tee`]; [`Error::WouldBlock`] if `from` is empty or `to` is full now.
pub fn try_tee(from: &PipeReader, to: &PipeWriter, len: usize) -> Result<usize> {
    match tee_timeout(from, to, len, Duration::ZERO) {
        Err(Error::TimedOut { .. }) => Err(Error::WouldBlock),
        other => other,
    }
}

/// Copies `len` bytes (or everything up to end of file when `len` is `None`) from `from` to
/// `to`, the fastest way the two descriptors allow, and returns how many bytes were copied:
///
/// - if either is a pipe: `splice` directly, no user-space copy;
/// - otherwise (file to socket, file to file, ...): `splice` through an internal pipe;
/// - if the kernel refuses to splice these descriptors (`EINVAL`, e.g. an `O_APPEND` file):
///   `read`/`write` through a 64 KiB buffer.
///
/// Short transfers are continued and `EINTR` is retried, so no byte is lost or repeated;
/// non-blocking descriptors are waited for with `poll`. A `to` without reader raises SIGPIPE
/// as the process's disposition says; wrap the call in [`crate::sigpipe::suppressed`] where
/// that may be the default.
///
/// `copy` waits as long as the descriptors make it wait: it has no `_timeout` form, because
/// bytes already taken from `from` into its internal pipe could not be given back when time
/// ran out. For a bound, loop over [`splice_timeout`] (when one side is a pipe, nothing is in
/// flight between calls), or use non-blocking descriptors and `poll`.
///
/// ```
/// use std::io::Read;
/// let (mut r, w) = ipc_pipe::pipe()?;
/// let file = std::fs::File::open("/proc/self/exe")?;
/// let n = std::thread::scope(|s| {
///     // The writer moves into the thread: when the copy is done, it closes (end-of-file).
///     let copier = s.spawn(move || ipc_pipe::copy(&file, &w, Some(10_000)));
///     let mut got = Vec::new();
///     r.read_to_end(&mut got).unwrap();
///     assert_eq!(&got[..4], b"\x7fELF");
///     copier.join().unwrap()
/// })?;
/// assert_eq!(n, 10_000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::NoReader`] when `to` is a pipe without reader; [`Error::InvalidDescriptor`] when
/// `len` is `None` and `to` is the same file or pipe as `from`; [`Error::Io`] for the rest,
/// after some bytes may have been copied.
pub fn copy(from: impl AsFd, to: impl AsFd, len: Option<u64>) -> Result<u64> {
    let (from, to) = (from.as_fd(), to.as_fd());
    if len.is_none() {
        // Copying a file or pipe into itself "up to end of file" never reaches it.
        let (a, b) = (rustix::fs::fstat(from)?, rustix::fs::fstat(to)?);
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) {
            return Err(Error::InvalidDescriptor {
                fd: std::os::fd::AsRawFd::as_raw_fd(&to),
                reason: "the same file or pipe as `from`: copying it into itself up to end of \
                         file never ends (give a length)",
            });
        }
    }
    let mut copier = Copier {
        from,
        to,
        left: len.unwrap_or(u64::MAX),
        done: 0,
    };
    if is_pipe(from)? || is_pipe(to)? {
        match copier.splice_direct() {
            Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EINVAL) && copier.done == 0 => {}
            other => return other,
        }
    } else {
        let (mid_r, mid_w) = pipe()?;
        // As large as allowed: fewer round trips. Failing to grow only costs speed.
        let _ = mid_w.set_capacity_max();
        match copier.splice_through(&mid_r, &mid_w) {
            Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Whatever reached the middle pipe must still reach `to`.
                copier.read_write(Some(&mid_r))?;
            }
            other => return other,
        }
    }
    copier.read_write(None)?;
    Ok(copier.done)
}

fn is_pipe(fd: BorrowedFd<'_>) -> Result<bool> {
    let st = rustix::fs::fstat(fd)?;
    Ok(rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo)
}

/// The most a single `splice` asks for: large enough for any pipe capacity.
const SPLICE_CHUNK: usize = 1 << 24;

struct Copier<'a> {
    from: BorrowedFd<'a>,
    to: BorrowedFd<'a>,
    left: u64,
    done: u64,
}

impl Copier<'_> {
    fn chunk(&self, max: usize) -> usize {
        usize::try_from(self.left).unwrap_or(usize::MAX).min(max)
    }

    /// Waits until `from` is readable and `to` writable: what a non-blocking `EAGAIN` needs.
    fn wait_ready(&self) -> Result<()> {
        wait(self.to, PollFlags::OUT, None)?;
        wait(self.from, PollFlags::IN, None)
    }

    fn splice_direct(&mut self) -> Result<u64> {
        while self.left > 0 {
            let want = self.chunk(SPLICE_CHUNK);
            match rustix::pipe::splice(self.from, None, self.to, None, want, SpliceFlags::MOVE) {
                Ok(0) => break,
                Ok(n) => {
                    self.left -= n as u64;
                    self.done += n as u64;
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => self.wait_ready()?,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.done)
    }

    fn splice_through(&mut self, mid_r: &PipeReader, mid_w: &PipeWriter) -> Result<u64> {
        while self.left > 0 {
            let want = self.chunk(SPLICE_CHUNK);
            let n =
                match rustix::pipe::splice(self.from, None, mid_w, None, want, SpliceFlags::MOVE) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(Errno::INTR) => continue,
                    Err(Errno::AGAIN) => {
                        wait(self.from, PollFlags::IN, None)?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
            let mut pending = n;
            while pending > 0 {
                match rustix::pipe::splice(mid_r, None, self.to, None, pending, SpliceFlags::MOVE) {
                    Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                    Ok(m) => {
                        pending -= m;
                        self.left -= m as u64;
                        self.done += m as u64;
                    }
                    Err(Errno::INTR) => {}
                    Err(Errno::AGAIN) => {
                        wait(self.to, PollFlags::OUT, None)?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(self.done)
    }

    /// The plain path: `read` then `write`. With `drain`, empties that (middle) pipe into `to`
    /// instead of reading `from`; its bytes count as copied once they reach `to`.
    fn read_write(&mut self, drain: Option<&PipeReader>) -> Result<u64> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if self.left == 0 {
                if let Some(mid) = drain {
                    if mid.available()? == 0 {
                        break;
                    }
                } else {
                    break;
                }
            }
            let want = match drain {
                Some(mid) => mid.available()?.min(buf.len()),
                None => self.chunk(buf.len()),
            };
            if want == 0 {
                break;
            }
            let got = match drain {
                Some(mid) => read_some(mid.as_fd(), &mut buf[..want]),
                None => read_some(self.from, &mut buf[..want]),
            };
            let n = match got {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(drain.map_or(self.from, |m| m.as_fd()), PollFlags::IN, None)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            write_all_fd(self.to, &buf[..n])?;
            self.left = self.left.saturating_sub(n as u64);
            self.done += n as u64;
        }
        Ok(self.done)
    }
}

/// Writes all of `data` into `pipe` (waiting for room, within `bound` if given, or without
/// bound if `wait_when_full`: see [`Lender::send_piece`]); on an error, says how many bytes went
/// in.
fn copy_out(
    pipe: &PipeWriter,
    data: &[u8],
    bound: Option<Option<Instant>>,
    wait_when_full: bool,
) -> std::result::Result<(), (Error, usize)> {
    let mut done = 0;
    while done < data.len() {
        let r = match bound {
            None => pipe.write_once(&data[done..]).map_err(Error::from),
            Some(deadline) => {
                let left = deadline.map_or(Duration::MAX, |d| {
                    d.saturating_duration_since(Instant::now())
                });
                pipe.write_timeout(&data[done..], left)
            }
        };
        match r {
            Ok(0) => return Err((Error::Io(io::ErrorKind::WriteZero.into()), done)),
            Ok(n) => done += n.min(data.len() - done),
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(Error::WouldBlock) if bound.is_none() && wait_when_full => {
                wait(pipe.as_fd(), PollFlags::OUT, None).map_err(|e| (e, done))?;
            }
            Err(Error::TimedOut { .. }) => return Err((Error::TimedOut { written: done }, done)),
            Err(e) => return Err((e, done)),
        }
    }
    Ok(())
}

fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::io::read(fd, buf)?)
}

fn write_all_fd(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => wait(fd, PollFlags::OUT, None)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A writer that sends its own pages into a pipe with `vmsplice`: the caller fills each piece in
/// place ([`ZeroCopyWriter::send_with`]) and the reader copies it out of those very pages, one
/// copy instead of two. This is the safe way to use [`vmsplice`].
///
/// How it keeps `vmsplice`'s contract: a pipe of capacity `P` holds at most `P / page` buffers,
/// and every buffer this writer inserts holds at most a page, so once `P` more of its bytes have
/// gone in after a piece, the pipe no longer refers to that piece (whatever other writers
/// insert). The writer cycles pieces of at most `P` bytes through a page-aligned ring of `2 P`
/// bytes and remembers, for each recent piece, how many bytes it had inserted when the piece
/// went in. It hands out a region of the ring again only if at least `P` bytes were inserted
/// since anything in that region was sent; when pieces of varying sizes make that not yet true,
/// the piece goes through a private buffer and a plain `write` instead (correct, just not
/// zero-copy). The capacity is read before every piece (one `fcntl`): if anyone grew the pipe
/// (this process or the reader's), the writer moves to a new ring sized for it and never writes
/// to the old one again; beyond 16 MiB (only privileged processes can grow a pipe past
/// `pipe-max-size`) it keeps no ring and copies every piece, so that a peer cannot make it
/// allocate twice a huge capacity.
///
/// The ring is not heap memory but a private anonymous mapping (`mmap`), and a ring the writer
/// is done with (an old one after the pipe grew, or every ring when the writer is dropped) is
/// unmapped at once, whatever the pipe still holds. That is safe, and nothing leaks: pages the
/// pipe still refers to are then mapped nowhere in this process, so nothing can change them
/// (heap memory would go back to the allocator and be reused while the reader has not copied
/// it yet); the pipe keeps them alive, and the kernel frees them when the reader has consumed
/// them (or the pipe is closed).
///
/// The reader must *copy* the data out (`read`, or `splice` into a regular file): a reader that
/// `splice`s or `tee`s the pages on to another pipe or a socket takes the references with it,
/// and may then see later contents of the ring.
///
/// ```
/// use std::io::Read;
/// let (mut r, w) = ipc_pipe::pipe()?;
/// let mut z = ipc_pipe::ZeroCopyWriter::new(&w)?;
/// z.send_with(5, |piece| piece.copy_from_slice(b"hello"))?;
/// let mut got = [0; 5];
/// r.read_exact(&mut got)?;
/// assert_eq!(&got, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ZeroCopyWriter<'a> {
    pipe: &'a PipeWriter,
    lender: Lender,
}

/// The ring of a [`ZeroCopyWriter`] (and of a [`crate::FramedWriter`] on a pipe) and the
/// bookkeeping that says which of its regions the pipe may still refer to.
pub(crate) struct Lender {
    /// The ring (`2 * cap` bytes), or `None` in copying mode.
    ring: Option<sys::Mapping>,
    /// The pipe capacity the ring was sized for (`ring.len == 2 * cap`).
    cap: usize,
    /// Where the next piece goes in the ring.
    pos: usize,
    /// Bytes inserted into the pipe so far (by vmsplice or by the copying fallback).
    inserted: u64,
    /// Recent pieces: ring start, ring end, value of `inserted` just after the piece. Pieces
    /// older than `cap` bytes of stream are forgotten (the pipe cannot refer to them).
    recent: VecDeque<(usize, usize, u64)>,
    /// The copying fallback's buffer.
    scratch: Vec<u8>,
}

/// The largest pipe capacity a [`ZeroCopyWriter`] keeps a ring for (the ring is twice as large).
/// Beyond it (only privileged processes can grow a pipe past `pipe-max-size`, 1 MiB by default)
/// it copies instead, so that a peer that grows the pipe cannot make it allocate gigabytes.
const RING_LIMIT: usize = 16 << 20;

/// A ring for a pipe of capacity `cap`: `2 * cap` bytes of mapped memory, or `None` (copy
/// every piece) beyond [`RING_LIMIT`] or when the memory cannot be mapped.
fn ring_for(cap: usize) -> Option<sys::Mapping> {
    if cap == 0 || cap > RING_LIMIT {
        return None;
    }
    sys::Mapping::new(cap * 2).ok()
}

impl fmt::Debug for ZeroCopyWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZeroCopyWriter")
            .field("pipe", &self.pipe)
            .field("capacity", &self.lender.cap)
            .field("ring", &self.lender.ring_len())
            .field("pos", &self.lender.pos)
            .field("inserted", &self.lender.inserted)
            .finish()
    }
}

impl fmt::Debug for Lender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lender")
            .field("capacity", &self.cap)
            .field("ring", &self.ring_len())
            .field("inserted", &self.inserted)
            .finish_non_exhaustive()
    }
}

impl<'a> ZeroCopyWriter<'a> {
    /// A writer for `pipe`, with a ring sized for the pipe's current capacity (2 × capacity).
    /// Grow the pipe first ([`PipeWriter::set_capacity`]) to send larger pieces.
    ///
    /// # Errors
    /// If the pipe's capacity cannot be read.
    pub fn new(pipe: &'a PipeWriter) -> Result<ZeroCopyWriter<'a>> {
        Ok(ZeroCopyWriter {
            pipe,
            lender: Lender::new(pipe)?,
        })
    }

    /// The largest piece [`Self::send_with`] accepts: the pipe's capacity (as last read; a pipe
    /// grown since is noticed at the next piece).
    pub fn max_piece(&self) -> usize {
        self.lender.cap
    }

    /// Lets `fill` write a piece of `len` bytes in place, then splices it into the pipe,
    /// waiting for room as a blocking write would (also on a non-blocking pipe).
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] if `len` exceeds the pipe's capacity; [`Error::NoReader`];
    /// [`Error::Io`]. After an error part of the piece may have been sent.
    pub fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        self.lender.send_until(self.pipe, len, fill, None)
    }

    /// [`Self::send_with`], waiting at most `timeout` for room (`Duration::MAX`: forever): each
    /// `vmsplice` is preceded by a `poll` and does not block (`SPLICE_F_NONBLOCK`), so the
    /// deadline holds.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_pipe::{Error, ZeroCopyWriter};
    /// let (r, w) = ipc_pipe::pipe()?;
    /// let mut z = ZeroCopyWriter::new(&w)?;
    /// z.send_timeout(&[1; 40_000], Duration::from_secs(5))?;
    /// // Nobody reads: the next piece fits only in part.
    /// let piece = [2; 40_000];
    /// match z.send_timeout(&piece, Duration::from_millis(10)) {
    ///     Err(Error::TimedOut { written }) => {
    ///         assert!(written < piece.len());
    ///         assert_eq!(r.available()?, 40_000 + written); // the rest is `piece[written..]`
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Self::send_with`], and [`Error::TimedOut`] whose `written` says how many bytes of
    /// the piece went into the pipe before the deadline.
    pub fn send_with_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        self.lender
            .send_until(self.pipe, len, fill, Some(deadline(timeout)))
    }

    /// [`Self::send`] within `timeout`; see [`Self::send_with_timeout`].
    ///
    /// # Errors
    /// As [`Self::send_with_timeout`].
    pub fn send_timeout(&mut self, data: &[u8], timeout: Duration) -> Result<()> {
        self.send_with_timeout(data.len(), timeout, |piece| piece.copy_from_slice(data))
    }

    /// Copies `data` into the next piece and sends it: no faster than `write`, but keeps one
    /// code path for callers whose data is not produced in place.
    ///
    /// # Errors
    /// As [`Self::send_with`].
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.send_with(data.len(), |piece| piece.copy_from_slice(data))
    }
}

impl Lender {
    /// A ring sized for `pipe`'s current capacity.
    pub(crate) fn new(pipe: &PipeWriter) -> Result<Lender> {
        let cap = pipe.capacity()?;
        Ok(Lender {
            ring: ring_for(cap),
            cap,
            pos: 0,
            inserted: 0,
            recent: VecDeque::new(),
            scratch: Vec::new(),
        })
    }

    fn ring_len(&self) -> usize {
        self.ring.as_ref().map_or(0, sys::Mapping::len)
    }

    /// The largest piece [`Self::send_until`] takes: the capacity the ring was made for.
    pub(crate) fn max_piece(&self) -> usize {
        self.cap
    }

    /// The body of the send calls; `bound` is `None` for no bound, `Some(deadline)` for a
    /// deadline (`Some(None)`: one too far away to express, so none).
    pub(crate) fn send_until(
        &mut self,
        pipe: &PipeWriter,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        bound: Option<Option<Instant>>,
    ) -> Result<()> {
        self.send_piece(pipe, len, fill, bound, true)
            .map_err(|(e, _)| e)
    }

    /// [`Self::send_until`], saying on an error how many bytes of the piece went into the pipe.
    /// Without a bound, a full pipe is waited for (`wait_when_full`: also a non-blocking one,
    /// as `ZeroCopyWriter` documents), or treated as `write` would treat it (`!wait_when_full`:
    /// a blocking descriptor waits, a non-blocking one says `Error::WouldBlock`; `vmsplice`
    /// itself ignores `O_NONBLOCK`, so this asks the descriptor when the pipe is full).
    pub(crate) fn send_piece(
        &mut self,
        pipe: &PipeWriter,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        bound: Option<Option<Instant>>,
        wait_when_full: bool,
    ) -> std::result::Result<(), (Error, usize)> {
        // Anyone holding an end may have grown the pipe since the last piece: then it can refer
        // to more of the past than this ring's bound assumes. Move to a ring sized for it.
        let cap = pipe.capacity().map_err(|e| (e, 0))?;
        if cap > self.cap {
            self.grow(cap);
        }
        if len > self.cap {
            let e = Error::MessageTooLarge {
                len: len as u64,
                max: self.cap as u64,
            };
            return Err((e, 0));
        }
        if len == 0 {
            return Ok(());
        }
        let ring_len = self.ring_len();
        if self.pos + len > ring_len {
            self.pos = 0;
        }
        let (start, end) = (self.pos, self.pos + len);
        let cap = self.cap as u64;
        while self
            .recent
            .front()
            .is_some_and(|&(_, _, e)| e + cap <= self.inserted)
        {
            self.recent.pop_front();
        }
        let busy = self.recent.iter().any(|&(s, e, _)| s < end && start < e);
        let Some(ring) = self.ring.as_mut().filter(|_| !busy) else {
            // The pipe may still refer to part of this region (or there is no ring): copy this
            // piece instead.
            self.scratch.resize(len, 0);
            fill(&mut self.scratch);
            let r = copy_out(pipe, &self.scratch, bound, wait_when_full);
            let done = match &r {
                Ok(()) => len,
                Err((_, n)) => *n,
            };
            // What went in counts: the regions it follows stay busy until the pipe moved on.
            self.inserted += done as u64;
            return r;
        };
        fill(&mut ring.as_mut_slice()[start..end]);
        let mut sent = 0;
        let fd = pipe.as_fd();
        while sent < len {
            if let Some(deadline) = bound {
                if let Err(e) = wait(fd, PollFlags::OUT, deadline) {
                    self.sent(start, end, sent);
                    let e = match e {
                        Error::TimedOut { .. } => Error::TimedOut { written: sent },
                        other => other,
                    };
                    return Err((e, sent));
                }
            }
            let Some(ring) = self.ring.as_mut() else {
                unreachable!("a piece is sent from the ring only while there is one")
            };
            let piece = &ring.as_mut_slice()[start + sent..end];
            // vmsplice blocks on a full pipe unless told not to (O_NONBLOCK does not count).
            let nonblock = bound.is_some() || !wait_when_full;
            match pipe.guarded(|| sys::vmsplice_ring(fd, piece, nonblock)) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Bounded: the loop polls again. Unbounded: wait here, as a blocking `write`
                    // would, or say so where a non-blocking `write` would.
                    if bound.is_none() {
                        let r = if wait_when_full {
                            wait(fd, PollFlags::OUT, None)
                        } else {
                            match pipe.is_nonblocking() {
                                Ok(true) => Err(Error::WouldBlock),
                                Ok(false) => wait(fd, PollFlags::OUT, None),
                                Err(e) => Err(e),
                            }
                        };
                        if let Err(e) = r {
                            self.sent(start, end, sent);
                            return Err((e, sent));
                        }
                    }
                }
                Err(e) => {
                    // What went in before the error is in the pipe: the region is in use.
                    self.sent(start, end, sent);
                    return Err((e.into(), sent));
                }
            }
        }
        self.sent(start, end, len);
        Ok(())
    }

    /// Records that `bytes` of the ring region `start..end` went into the pipe.
    fn sent(&mut self, start: usize, end: usize, bytes: usize) {
        self.pos = end;
        self.inserted += bytes as u64;
        self.recent.push_back((start, end, self.inserted));
    }

    /// Drops the ring (unmapped: the pipe may still refer to its pages, which then stay alive
    /// and unchanged in the kernel until the reader has consumed them) and maps a new one for
    /// capacity `cap`. Beyond [`RING_LIMIT`], or when the memory cannot be mapped, there is no
    /// new ring: the writer copies.
    fn grow(&mut self, cap: usize) {
        self.ring = None;
        self.ring = ring_for(cap);
        self.recent.clear();
        self.cap = cap;
        self.pos = 0;
    }
}
