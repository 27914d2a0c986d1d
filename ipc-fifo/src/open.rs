//! The two ends of a FIFO, opened with explicit semantics.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
use rustix::io::Errno;

use crate::error::{Error, FileKind, Result, parent_of};
use crate::fifo::{OwnerCheck, open_checked};
use crate::path::named;
use crate::time::{Deadline, poll_all_until, poll_until};

/// Whether a reader also holds a write end of its own FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeepAlive {
    /// A plain reader (the default): it sees end-of-file once every writer has closed.
    #[default]
    Off,
    /// The reader also opens the FIFO for writing and keeps that descriptor, so the FIFO always
    /// has a writer: when the last client leaves, reads wait for the next one instead of
    /// returning end-of-file.
    ///
    /// The trade-off: such a reader **never sees end-of-file**. It must decide by itself when to
    /// stop (a "quit" record, a count of expected clients, a read timeout). And since the FIFO
    /// always has a reader while it runs, writers never get `NoReader` from it.
    On,
}

/// How to open a [`FifoReader`]: whose FIFO to accept, and keep-alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReaderOptions {
    pub(crate) owner_check: OwnerCheck,
    pub(crate) keep_alive: KeepAlive,
}

impl ReaderOptions {
    /// [`OwnerCheck::SameUid`], [`KeepAlive::Off`].
    pub const fn new() -> ReaderOptions {
        ReaderOptions {
            owner_check: OwnerCheck::SameUid,
            keep_alive: KeepAlive::Off,
        }
    }

    /// Whose FIFO to accept (default: ours only; another user's is [`Error::WrongOwner`]).
    pub const fn owner_check(mut self, check: OwnerCheck) -> ReaderOptions {
        self.owner_check = check;
        self
    }

    /// Keep-alive for servers (default: off). A keep-alive reader's open never waits for a
    /// writer (it is one), only for the FIFO to appear.
    pub const fn keep_alive(mut self, keep_alive: KeepAlive) -> ReaderOptions {
        self.keep_alive = keep_alive;
        self
    }

    /// Opens (waiting for the FIFO to appear) and waits for the first writer; see
    /// [`FifoReader::open`].
    ///
    /// # Errors
    /// As [`FifoReader::open`].
    pub fn open(self, path: impl AsRef<Path>) -> Result<FifoReader> {
        FifoReader::open_with(path.as_ref(), self, Some(Deadline::after(Duration::MAX)))
    }

    /// Opens and waits at most `timeout`, for the FIFO to appear and for the first writer; see
    /// [`FifoReader::open_timeout`].
    ///
    /// # Errors
    /// As [`FifoReader::open_timeout`].
    pub fn open_timeout(self, path: impl AsRef<Path>, timeout: Duration) -> Result<FifoReader> {
        FifoReader::open_with(path.as_ref(), self, Some(Deadline::after(timeout)))
    }

    /// Opens without waiting (for the FIFO or a writer); see [`FifoReader::try_open`].
    ///
    /// # Errors
    /// As [`FifoReader::try_open`].
    pub fn try_open(self, path: impl AsRef<Path>) -> Result<FifoReader> {
        FifoReader::open_with(path.as_ref(), self, None)
    }
}

/// The read end of a FIFO.
///
/// Reads wait for a writer instead of returning a false end-of-file: a FIFO opened for reading
/// before any writer has opened it reads as empty-and-closed (`read` returns 0) on Linux. This
/// reader tells the two apart (`poll` reports a hang-up only once a writer has come and gone)
/// and waits (blocking mode) or says [`io::ErrorKind::WouldBlock`] (non-blocking mode) until a
/// writer arrives. End-of-file then means what it says: every writer that came has closed.
///
/// Descriptor interop: [`AsFd`] and [`AsRawFd`] (poll it, or register it with an event loop
/// after [`set_nonblocking(true)`](FifoReader::set_nonblocking): a blocking read there stalls
/// the loop; with tokio, use the `tokio` feature's `AsyncFifoReader`), `From<FifoReader> for
/// OwnedFd` and for [`Stdio`], and
/// back with [`TryFrom<OwnedFd>`](#impl-TryFrom%3COwnedFd%3E-for-FifoReader), which checks the
/// descriptor (a fallible conversion, where `ipc-pipe`'s ends have an unchecked
/// `From<OwnedFd>`: see there why).
///
/// # After `fork`
///
/// In a child forked from a multi-threaded parent, an inherited reader may be used for
/// `read` (through [`Read`]: `read`, `poll` and `fcntl` system calls only),
/// [`set_nonblocking`](FifoReader::set_nonblocking), [`wait_readable`](FifoReader::wait_readable),
/// [`as_fd`](AsFd::as_fd), and dropped (which closes its descriptors). Opening a reader
/// allocates (the path's checks, inotify) and is not for such a child.
pub struct FifoReader {
    fd: OwnedFd,
    keep_alive: Option<OwnedFd>,
}

impl fmt::Debug for FifoReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FifoReader")
            .field("fd", &self.fd.as_raw_fd())
            .field("keep_alive", &self.keep_alive.is_some())
            .finish()
    }
}

impl FifoReader {
    /// Options: owner check and keep-alive.
    pub const fn options() -> ReaderOptions {
        ReaderOptions::new()
    }

    /// Opens `path` for reading and blocks until a writer has it open, however long that
    /// takes—as `open(2)` with `O_RDONLY` does, but safely. If nothing is at the path yet (the
    /// FIFO, or even its directory, is still to be made), it first waits for the FIFO to
    /// appear: a client and its server may start in any order.
    ///
    /// The open itself is non-blocking (`O_RDONLY|O_NONBLOCK|O_NOFOLLOW|O_CLOEXEC`, then
    /// `fstat`: a FIFO owned by us), so a writer waiting in its own open is released at once.
    /// Then it waits, without spinning, until a writer is there: one that has the FIFO open
    /// (even if it has written nothing yet), or whose data or close is visible. A writer
    /// that opened and has not written is seen with `tee(2)`, and its arrival announced by
    /// inotify (Linux); where those are missing, the open waits for the writer's first data
    /// or its close instead. The returned reader is in blocking mode.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::NotAFifo`] (a regular file, directory or symlink at
    /// the path: nothing is read from it), [`Error::WrongOwner`], [`Error::PermissionDenied`],
    /// [`Error::Io`].
    pub fn open(path: impl AsRef<Path>) -> Result<FifoReader> {
        ReaderOptions::new().open(path)
    }

    /// As [`FifoReader::open`], waiting at most `timeout` in all (`Duration::MAX`: forever)
    /// for the FIFO to appear and for its first writer.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no FIFO appeared at the path in time (it says whether its
    /// directory exists), [`Error::TimedOut`] if no writer arrived in time, or as
    /// [`FifoReader::open`].
    pub fn open_timeout(path: impl AsRef<Path>, timeout: Duration) -> Result<FifoReader> {
        ReaderOptions::new().open_timeout(path, timeout)
    }

    /// Opens `path` for reading without waiting for anything (the non-blocking open). Blocking
    /// reads then wait for the first writer, never returning a false end-of-file.
    ///
    /// # Errors
    /// [`Error::NotFound`] at once if nothing is at the path, or as [`FifoReader::open`].
    pub fn try_open(path: impl AsRef<Path>) -> Result<FifoReader> {
        ReaderOptions::new().try_open(path)
    }

    fn open_with(path: &Path, opts: ReaderOptions, wait: Option<Deadline>) -> Result<FifoReader> {
        named(path)?;
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        let fd = match wait {
            None => open_checked(path, flags, opts.owner_check)?,
            Some(deadline) => {
                let mut waiter = Waiter::new(path, deadline);
                loop {
                    match open_checked(path, flags, opts.owner_check) {
                        Ok(fd) => break fd,
                        Err(Error::NotFound { .. }) => waiter.wait(Want::Appear)?,
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        let keep_alive = keep_alive_end(path, &fd, opts.keep_alive)?;
        if let (Some(deadline), None) = (wait, &keep_alive) {
            if !wait_for_writer(&fd, deadline)? {
                return Err(Error::TimedOut);
            }
        }
        set_nonblocking(&fd, false)?;
        Ok(FifoReader { fd, keep_alive })
    }

    /// The read descriptor and the keep-alive write end.
    #[cfg(feature = "tokio")]
    pub(crate) fn into_parts(self) -> (OwnedFd, Option<OwnedFd>) {
        (self.fd, self.keep_alive)
    }

    /// A reader of `fd` (checked to be a FIFO's read end), with its keep-alive write end.
    #[cfg(feature = "tokio")]
    pub(crate) fn from_parts(fd: OwnedFd, keep_alive: Option<OwnedFd>) -> FifoReader {
        FifoReader { fd, keep_alive }
    }

    /// Whether this reader holds a keep-alive write end.
    pub fn is_keep_alive(&self) -> bool {
        self.keep_alive.is_some()
    }

    /// Switches non-blocking mode (`O_NONBLOCK`) on or off. In non-blocking mode a read with
    /// nothing to read is [`io::ErrorKind::WouldBlock`].
    ///
    /// # Errors
    /// What `fcntl` fails with.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        set_nonblocking(&self.fd, nonblocking)
    }

    /// Waits at most `timeout` until there is something to read (data, or end-of-file).
    /// Returns `false` on time-out.
    ///
    /// # Errors
    /// What `poll` fails with.
    pub fn wait_readable(&self, timeout: Duration) -> Result<bool> {
        Ok(poll_until(&self.fd, PollFlags::IN, Deadline::after(timeout), None)?.is_some())
    }

    /// One `read(2)`, with the false end-of-file told apart from the real one.
    pub(crate) fn read_raw(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_end(self.fd.as_fd(), buf)
    }
}

/// The keep-alive write end of the reader `fd` just opened at `path`, if asked for.
pub(crate) fn keep_alive_end(
    path: &Path,
    fd: &OwnedFd,
    keep_alive: KeepAlive,
) -> Result<Option<OwnedFd>> {
    if keep_alive == KeepAlive::Off {
        return Ok(None);
    }
    // We are a reader now, so a non-blocking write open succeeds at once (unless the path
    // was replaced meanwhile: no reader there).
    let w = match open_checked(path, OFlags::WRONLY | OFlags::NONBLOCK, OwnerCheck::AnyUid) {
        Ok(w) => w,
        Err(Error::NoReader) => return Err(Error::not_found(path)),
        Err(e) => return Err(e),
    };
    let (a, b) = (rustix::fs::fstat(fd)?, rustix::fs::fstat(&w)?);
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
        // The path was replaced between the two opens.
        return Err(Error::not_found(path));
    }
    Ok(Some(w))
}

/// One `read(2)` of the FIFO read end `fd`, with the false end-of-file told apart from the
/// real one: 0 only at end-of-file (every writer that came has gone); with no writer yet, a
/// wait (blocking mode) or `WouldBlock` (non-blocking mode).
pub(crate) fn read_end(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) if !buf.is_empty() => {
                // End-of-file, or no writer has opened the FIFO since we did?
                let now = Deadline::after(Duration::ZERO);
                let ev = poll_until(fd, PollFlags::IN, now, Some(Duration::ZERO))?;
                match ev {
                    Some(ev) if ev.contains(PollFlags::IN) => continue,
                    Some(ev) if ev.contains(PollFlags::HUP) => return Ok(0),
                    _ => {}
                }
                if fcntl_getfl(fd)?.contains(OFlags::NONBLOCK) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                poll_until(fd, PollFlags::IN, Deadline::after(Duration::MAX), None)?;
            }
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl Read for FifoReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_raw(buf)
    }
}

impl Read for &FifoReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_raw(buf)
    }
}

/// How to open a [`FifoWriter`]: whose FIFO to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WriterOptions {
    pub(crate) owner_check: OwnerCheck,
}

impl WriterOptions {
    /// [`OwnerCheck::SameUid`].
    pub const fn new() -> WriterOptions {
        WriterOptions {
            owner_check: OwnerCheck::SameUid,
        }
    }

    /// Whose FIFO to accept (default: ours only; another user's is [`Error::WrongOwner`]).
    pub const fn owner_check(mut self, check: OwnerCheck) -> WriterOptions {
        self.owner_check = check;
        self
    }

    /// Opens (waiting for the FIFO to appear) and waits for a reader; see [`FifoWriter::open`].
    ///
    /// # Errors
    /// As [`FifoWriter::open`].
    pub fn open(self, path: impl AsRef<Path>) -> Result<FifoWriter> {
        FifoWriter::open_with(
            path.as_ref(),
            self.owner_check,
            Deadline::after(Duration::MAX),
        )
    }

    /// Opens and waits at most `timeout`, for the FIFO to appear and for a reader; see
    /// [`FifoWriter::open_timeout`].
    ///
    /// # Errors
    /// As [`FifoWriter::open_timeout`].
    pub fn open_timeout(self, path: impl AsRef<Path>, timeout: Duration) -> Result<FifoWriter> {
        FifoWriter::open_with(path.as_ref(), self.owner_check, Deadline::after(timeout))
    }

    /// Opens if the FIFO is there and a reader has it open now; see [`FifoWriter::try_open`].
    ///
    /// # Errors
    /// As [`FifoWriter::try_open`].
    pub fn try_open(self, path: impl AsRef<Path>) -> Result<FifoWriter> {
        let fd = open_checked(
            path.as_ref(),
            OFlags::WRONLY | OFlags::NONBLOCK,
            self.owner_check,
        )?;
        set_nonblocking(&fd, false)?;
        Ok(FifoWriter { fd })
    }
}

/// The write end of a FIFO.
///
/// Writing after every reader has gone is [`io::ErrorKind::BrokenPipe`] (Rust programs ignore
/// `SIGPIPE`; a C host that does not would be killed instead—ignore `SIGPIPE` there).
///
/// Besides [`Write`], it sends whole records ([`FifoWriter::write_record`], any number of
/// writers) and frames ([`FifoWriter::write_frame`], one writer) for a
/// [`RecordReader`](crate::RecordReader).
///
/// Descriptor interop as for [`FifoReader`]: [`AsFd`], [`AsRawFd`], `From<FifoWriter> for
/// OwnedFd` and for [`Stdio`], and a checked `TryFrom<OwnedFd>`.
///
/// # After `fork`
///
/// In a child forked from a multi-threaded parent, an inherited writer may be used for
/// `write` (through [`Write`]), [`write_record`](FifoWriter::write_record),
/// [`try_write_record`](FifoWriter::try_write_record),
/// [`write_record_timeout`](FifoWriter::write_record_timeout),
/// [`write_frame`](FifoWriter::write_frame), [`set_nonblocking`](FifoWriter::set_nonblocking),
/// [`as_fd`](AsFd::as_fd), and dropped: these make only `write`, `writev`, `poll`, `fcntl` and
/// `clock_gettime` system calls, on buffers of the caller's or on the stack. Opening a writer
/// is not for such a child.
pub struct FifoWriter {
    fd: OwnedFd,
}

impl fmt::Debug for FifoWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FifoWriter")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

/// How long a writer waiting for a reader sleeps at most between two open attempts when no
/// inotify event woke it (a reader blocked inside its own `open(2)` is not announced); and how
/// often a reader waiting for a writer checks again when it has no inotify watch.
pub(crate) const RETRY_CAP: Duration = Duration::from_millis(50);

/// How long an open waiting for a FIFO to appear waits at most between two looks when no
/// inotify event woke it (an event missed because a directory on the way was replaced).
pub(crate) const APPEAR_CAP: Duration = Duration::from_secs(1);

impl FifoWriter {
    /// Options: the owner check.
    pub const fn options() -> WriterOptions {
        WriterOptions::new()
    }

    /// Opens `path` for writing and blocks until a reader has it open (`open(O_WRONLY)`,
    /// `EINTR` retried), then checks with `fstat` that it is a FIFO owned by us. If nothing is
    /// at the path yet (the FIFO, or even its directory, is still to be made), it first waits
    /// for the FIFO to appear: a client and its server may start in any order.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::NotAFifo`] (nothing is written to a regular file at
    /// the path), [`Error::WrongOwner`], [`Error::PermissionDenied`], [`Error::Io`].
    pub fn open(path: impl AsRef<Path>) -> Result<FifoWriter> {
        WriterOptions::new().open(path)
    }

    /// As [`FifoWriter::open`], waiting at most `timeout` in all (`Duration::MAX`: forever)
    /// for the FIFO to appear and for a reader. Waits without spinning: non-blocking opens,
    /// woken by inotify (on the nearest existing directory of the path while it waits for the
    /// FIFO to appear; on the FIFO, for someone opening it, once it is there), with a retry
    /// every 50 ms at most for a reader that is blocked inside its own open, which inotify does
    /// not announce.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no FIFO appeared at the path in time (it says whether its
    /// directory exists), [`Error::TimedOut`] if no reader came in time, or as
    /// [`FifoWriter::open`].
    pub fn open_timeout(path: impl AsRef<Path>, timeout: Duration) -> Result<FifoWriter> {
        WriterOptions::new().open_timeout(path, timeout)
    }

    /// Opens `path` for writing only if a reader has it open now (`O_NONBLOCK`).
    ///
    /// # Errors
    /// [`Error::NoReader`] if there is no reader (the kernel's `ENXIO`), [`Error::NotFound`] at
    /// once if nothing is at the path, or as [`FifoWriter::open`].
    pub fn try_open(path: impl AsRef<Path>) -> Result<FifoWriter> {
        WriterOptions::new().try_open(path)
    }

    fn open_with(path: &Path, check: OwnerCheck, deadline: Deadline) -> Result<FifoWriter> {
        named(path)?;
        // Forever: the kernel's blocking open waits for the reader. Otherwise non-blocking
        // attempts, woken by inotify.
        let flags = if deadline.is_never() {
            OFlags::WRONLY
        } else {
            OFlags::WRONLY | OFlags::NONBLOCK
        };
        let mut waiter = Waiter::new(path, deadline);
        loop {
            match open_checked(path, flags, check) {
                Ok(fd) => {
                    set_nonblocking(&fd, false)?;
                    return Ok(FifoWriter { fd });
                }
                Err(Error::NotFound { .. }) => waiter.wait(Want::Appear)?,
                Err(Error::NoReader) => waiter.wait(Want::Opens)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Switches non-blocking mode (`O_NONBLOCK`) on or off. In non-blocking mode a write to a
    /// full FIFO is [`io::ErrorKind::WouldBlock`] (a record: [`Error::WouldBlock`]).
    ///
    /// # Errors
    /// What `fcntl` fails with.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        set_nonblocking(&self.fd, nonblocking)
    }

    pub(crate) fn write_raw(&self, buf: &[u8]) -> io::Result<usize> {
        write_end(self.fd.as_fd(), buf)
    }

    pub(crate) fn write_vectored_raw(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        writev_end(self.fd.as_fd(), bufs)
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One `write(2)`, `EINTR` retried.
pub(crate) fn write_end(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::io::write(fd, buf) {
            Err(Errno::INTR) => continue,
            r => return r.map_err(Into::into),
        }
    }
}

/// One `writev(2)`, `EINTR` retried.
pub(crate) fn writev_end(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    loop {
        match rustix::io::writev(fd, bufs) {
            Err(Errno::INTR) => continue,
            r => return r.map_err(Into::into),
        }
    }
}

/// What a waiting open is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// The FIFO to appear at the path (nothing is there yet, maybe not even its directory).
    Appear,
    /// Someone to open the FIFO (a writer waiting for a reader).
    Opens,
}

/// The waiting of an open: inotify watches for what it waits for, the deadline, and the error
/// when the deadline passes.
struct Waiter<'a> {
    path: &'a Path,
    deadline: Deadline,
    /// What the watch is for, and the inotify descriptor (`None`: no inotify, retry on a timer).
    watch: Option<(Want, Option<OwnedFd>)>,
}

impl<'a> Waiter<'a> {
    fn new(path: &'a Path, deadline: Deadline) -> Waiter<'a> {
        Waiter {
            path,
            deadline,
            watch: None,
        }
    }

    /// Called after an attempt failed for want of `want`: returns when it is worth trying
    /// again, or the error to return once the deadline has passed ([`Error::NotFound`] for a
    /// FIFO that never appeared, [`Error::TimedOut`] for a peer that never came).
    fn wait(&mut self, want: Want) -> Result<()> {
        if self.deadline.remaining().is_some_and(|l| l.is_zero()) {
            return Err(match want {
                Want::Appear => Error::not_found(self.path),
                Want::Opens => Error::TimedOut,
            });
        }
        let fd = match &self.watch {
            Some((w, fd)) if *w == want => fd,
            _ => {
                // Set the watch up, then try again at once: it may have happened meanwhile.
                let fd = match want {
                    Want::Appear => watch_appearance(self.path),
                    Want::Opens => watch_opens(self.path),
                };
                self.watch = Some((want, fd));
                return Ok(());
            }
        };
        let cap = match want {
            Want::Appear => APPEAR_CAP,
            Want::Opens => RETRY_CAP,
        };
        match fd {
            Some(w) => {
                if poll_until(w, PollFlags::IN, self.deadline, Some(cap))?.is_some() {
                    // Something happened: watch anew next time, so that the watch follows a
                    // FIFO that was replaced, or the then-nearest existing directory.
                    self.watch = None;
                }
            }
            // No inotify instance left: retry on a short timer instead.
            None => {
                let left = self.deadline.remaining().unwrap_or(RETRY_CAP);
                std::thread::sleep(left.min(RETRY_CAP / 5));
                self.watch = None;
            }
        }
        Ok(())
    }
}

/// Waits until a writer has opened the FIFO that `fd` (non-blocking) reads, or `deadline`
/// passes; `false` on time-out.
///
/// "A writer has arrived" means: one has the FIFO open now, or data is there, or one came and
/// went since our open (`poll` reports `POLLHUP` only then). The first is what a blocking
/// `open(O_RDONLY)` waits for, and `poll` cannot see it (a writer that opened and has not
/// written is no event): [`writer_present`] asks `tee(2)`, and an inotify watch on the FIFO's
/// inode (`IN_OPEN`) says when to ask again. Without inotify, the check is repeated every
/// [`RETRY_CAP`] at most.
fn wait_for_writer(fd: &OwnedFd, deadline: Deadline) -> Result<bool> {
    let mut watch: Option<OwnedFd> = None;
    let mut tried_watch = false;
    loop {
        let now = Deadline::after(Duration::ZERO);
        if poll_until(fd, PollFlags::IN, now, Some(Duration::ZERO))?.is_some()
            || writer_present(fd.as_fd())
        {
            return Ok(true);
        }
        if deadline.remaining().is_some_and(|l| l.is_zero()) {
            return Ok(false);
        }
        if !tried_watch {
            // Set the watch up, then check again at once: a writer may have come meanwhile.
            tried_watch = true;
            watch = watch_opens_of(fd.as_fd());
            continue;
        }
        match &watch {
            Some(w) => {
                let mut fds = [
                    PollFd::new(fd, PollFlags::IN),
                    PollFd::new(w, PollFlags::IN),
                ];
                poll_all_until(&mut fds, deadline, None)?;
                drain(w.as_fd());
            }
            None => {
                poll_until(fd, PollFlags::IN, deadline, Some(RETRY_CAP))?;
            }
        }
    }
}

/// Whether some process has the FIFO that `fd` reads open for writing, without consuming
/// anything: `tee(2)` of one byte into a scratch pipe, non-blocking, fails with `EAGAIN` exactly
/// when the FIFO is empty and has a writer (it copies a byte when there is data, and returns 0
/// when there is no writer). Linux only; where `tee` fails otherwise, `false` (the caller then
/// waits for data or a hang-up, which `poll` does report). The scratch pipe is close-on-exec
/// and closed before returning.
pub(crate) fn writer_present(fd: BorrowedFd<'_>) -> bool {
    use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, tee};
    let Ok((_scratch_r, scratch_w)) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK) else {
        return false;
    };
    loop {
        match tee(fd, &scratch_w, 1, SpliceFlags::NONBLOCK) {
            Ok(n) => return n > 0,
            Err(Errno::AGAIN) => return true,
            Err(Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

pub(crate) fn new_inotify() -> Option<OwnedFd> {
    use rustix::fs::inotify;
    inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).ok()
}

/// An inotify descriptor watching the inode that `fd` refers to (through `/proc/self/fd`, so
/// not whatever is at its path now) for opens, or `None` when inotify or `/proc` is not there.
pub(crate) fn watch_opens_of(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    use rustix::fs::inotify;
    let w = new_inotify()?;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    inotify::add_watch(&w, link.as_str(), inotify::WatchFlags::OPEN).ok()?;
    Some(w)
}

/// An inotify descriptor watching `path` for opens and removal, or `None` when inotify is not
/// available (no instances left): the caller then retries on a timer.
pub(crate) fn watch_opens(path: &Path) -> Option<OwnedFd> {
    use rustix::fs::inotify;
    let fd = new_inotify()?;
    let flags = inotify::WatchFlags::OPEN
        | inotify::WatchFlags::DELETE_SELF
        | inotify::WatchFlags::ATTRIB
        | inotify::WatchFlags::DONT_FOLLOW;
    inotify::add_watch(&fd, path, flags).ok()?;
    Some(fd)
}

/// An inotify descriptor watching the nearest existing directory on the way to `path` for
/// names appearing in it (and for its own removal), or `None` when there is no inotify (or no
/// permission to watch): the caller then retries on a timer.
pub(crate) fn watch_appearance(path: &Path) -> Option<OwnedFd> {
    use rustix::fs::inotify;
    let fd = new_inotify()?;
    let flags = inotify::WatchFlags::CREATE
        | inotify::WatchFlags::MOVED_TO
        | inotify::WatchFlags::ATTRIB
        | inotify::WatchFlags::DELETE_SELF
        | inotify::WatchFlags::MOVE_SELF
        | inotify::WatchFlags::ONLYDIR;
    for dir in parent_of(path).ancestors() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        match inotify::add_watch(&fd, dir, flags) {
            Ok(_) => return Some(fd),
            Err(Errno::NOENT | Errno::NOTDIR) => continue,
            Err(_) => return None,
        }
    }
    None
}

pub(crate) fn drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = rustix::io::read(fd, &mut buf) {
        if n == 0 {
            break;
        }
    }
}

pub(crate) fn set_nonblocking(fd: impl AsFd, on: bool) -> Result<()> {
    let flags = fcntl_getfl(&fd)?;
    let new = if on {
        flags | OFlags::NONBLOCK
    } else {
        flags - OFlags::NONBLOCK
    };
    if new != flags {
        fcntl_setfl(&fd, new)?;
    }
    Ok(())
}

impl Write for FifoWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_raw(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored_raw(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &FifoWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_raw(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored_raw(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

macro_rules! fd_interop {
    ($t:ty, $access:expr, $needed:literal) => {
        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.as_fd()
            }
        }
        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.as_raw_fd()
            }
        }
        impl From<$t> for Stdio {
            fn from(x: $t) -> Stdio {
                Stdio::from(OwnedFd::from(x))
            }
        }
        /// Takes a descriptor after checking, with `fstat` and `fcntl(F_GETFL)`, that it is a
        /// FIFO (or an anonymous pipe: the same kernel object) opened for this end's direction
        /// or `O_RDWR`. Of any owner: whoever hands over a descriptor has already opened it,
        /// and the owner check guards the lookup of a path, which is not made here. Its
        /// blocking mode is kept as it is.
        ///
        /// Fallible, where `ipc-pipe`'s ends and `std::fs::File` have an unchecked
        /// `From<OwnedFd>`: every value of this type is a FIFO end—that is what keeps a
        /// regular file, a device or a socket from being read or written as if it were one,
        /// and what the reader's end-of-file handling relies on—and a conversion that cannot
        /// fail could only skip that check or panic.
        ///
        /// A reader made from an `O_RDWR` descriptor is its own writer, so (like a
        /// [`KeepAlive::On`] reader) it never sees end-of-file.
        ///
        /// # Errors
        /// [`Error::NotAFifoDescriptor`] for anything else, [`Error::WrongEnd`] for the other
        /// direction's end, [`Error::Io`] if `fstat` or `fcntl` fails. The descriptor is
        /// closed on error (`try_clone` it first to keep it).
        impl TryFrom<OwnedFd> for $t {
            type Error = Error;
            fn try_from(fd: OwnedFd) -> Result<$t> {
                let st = rustix::fs::fstat(&fd)?;
                let found = FileKind::of(&st);
                if found != FileKind::Fifo {
                    return Err(Error::NotAFifoDescriptor { found });
                }
                let mode = fcntl_getfl(&fd)? & OFlags::RWMODE;
                if mode != $access && mode != OFlags::RDWR {
                    return Err(Error::WrongEnd { needed: $needed });
                }
                Ok(Self::from_checked(fd))
            }
        }
    };
}

impl FifoReader {
    fn from_checked(fd: OwnedFd) -> FifoReader {
        FifoReader {
            fd,
            keep_alive: None,
        }
    }
}

impl FifoWriter {
    pub(crate) fn from_checked(fd: OwnedFd) -> FifoWriter {
        FifoWriter { fd }
    }
}

fd_interop!(FifoReader, OFlags::RDONLY, "reading");
fd_interop!(FifoWriter, OFlags::WRONLY, "writing");

/// The read descriptor; a keep-alive write end is closed.
impl From<FifoReader> for OwnedFd {
    fn from(r: FifoReader) -> OwnedFd {
        r.fd
    }
}

impl From<FifoWriter> for OwnedFd {
    fn from(w: FifoWriter) -> OwnedFd {
        w.fd
    }
}
