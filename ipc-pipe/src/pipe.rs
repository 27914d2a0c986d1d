//! The pipe itself: [`pipe`], [`PipeReader`], [`PipeWriter`], capacity, readiness and timeouts.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::process::{ChildStderr, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;
use rustix::pipe::PipeFlags;

use crate::sigpipe::SigpipePolicy;
use crate::{Error, Result, sys};

/// `PIPE_BUF`—The largest write that the kernel performs atomically on a pipe (4096 on Linux):
/// it is never interleaved with other writers' data and never split.
pub const PIPE_BUF: usize = rustix::pipe::PIPE_BUF;

/// The file that holds the largest capacity an unprivileged process may give a pipe.
pub const PIPE_MAX_SIZE_FILE: &str = "/proc/sys/fs/pipe-max-size";
/// The per-user soft limit on pipe buffer pages; beyond it new pipes get one page and growing
/// one fails.
pub const PIPE_USER_PAGES_SOFT_FILE: &str = "/proc/sys/fs/pipe-user-pages-soft";
/// The per-user hard limit on pipe buffer pages; beyond it growing any pipe fails.
pub const PIPE_USER_PAGES_HARD_FILE: &str = "/proc/sys/fs/pipe-user-pages-hard";

/// `pipe2(O_CLOEXEC)`—Creates a pipe whose ends are not inherited by exec'd children.
///
/// Passing an end to a child is an explicit act: [`Stdio`] (`cmd.stdin(reader)`), or
/// [`crate::ChildFds`] for a chosen descriptor number.
///
/// ```
/// use std::io::{Read, Write};
/// let (mut r, mut w) = ipc_pipe::pipe()?;
/// w.write_all(b"ping")?;
/// drop(w); // the last writer gone: the reader sees end-of-file after the data
/// let mut s = String::new();
/// r.read_to_string(&mut s)?;
/// assert_eq!(s, "ping");
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`] with `EMFILE`/`ENFILE` when the process or system is out of descriptors.
///
/// # References
///  - [POSIX](https://pubs.opengroup.org/onlinepubs/9799919799/functions/pipe.html)
///  - [Linux](https://man7.org/linux/man-pages/man2/pipe.2.html)
#[doc(alias = "pipe2")]
pub fn pipe() -> Result<(PipeReader, PipeWriter)> {
    let (r, w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    Ok((
        PipeReader {
            fd: above_stdio(r)?,
        },
        PipeWriter::from(above_stdio(w)?),
    ))
}

/// `fd` itself, or (if it landed on 0, 1 or 2 because the process runs with a standard stream
/// closed) a duplicate at 3 or above: a pipe end must not pose as a standard stream, or a
/// `println!` would write into it.
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    dup_above_stdio(fd.as_fd())
}

/// `fcntl(F_DUPFD_CLOEXEC, 3)`: a close-on-exec duplicate that is not a standard stream.
fn dup_above_stdio(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// The reading end of a pipe. `Read` is implemented for `PipeReader` and `&PipeReader`.
///
/// `read` returns `Ok(0)` (end of file) once every write end is closed and the pipe is empty.
pub struct PipeReader {
    fd: OwnedFd,
}

/// The writing end of a pipe. `Write` is implemented for `PipeWriter` and `&PipeWriter`.
///
/// Writing when every read end is closed fails with [`io::ErrorKind::BrokenPipe`] (or
/// [`Error::NoReader`]); see [`crate::sigpipe`] for what that means in a non-Rust host.
pub struct PipeWriter {
    fd: OwnedFd,
    sigpipe: SigpipePolicy,
}

impl fmt::Debug for PipeReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeReader")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl fmt::Debug for PipeWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeWriter")
            .field("fd", &self.fd.as_raw_fd())
            .field("sigpipe", &self.sigpipe)
            .finish()
    }
}

/// Methods that both ends have: they act on the pipe, not on one direction.
macro_rules! common_methods {
    () => {
        /// Sets or clears `O_NONBLOCK`. It belongs to the open pipe end, so it is shared with
        /// every duplicate of it, including those held by child processes.
        ///
        /// ```
        /// let (r, _w) = ipc_pipe::pipe()?;
        /// r.set_nonblocking(true)?;
        /// assert!(r.is_nonblocking()?);
        /// let err = std::io::Read::read(&mut &r, &mut [0; 8]).unwrap_err();
        /// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        /// # Ok::<(), std::io::Error>(())
        /// ```
        ///
        /// # Errors
        /// Only if the descriptor is invalid.
        pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
            let flags = rustix::fs::fcntl_getfl(&self.fd)?;
            let want = if nonblocking {
                flags | OFlags::NONBLOCK
            } else {
                flags - OFlags::NONBLOCK
            };
            if want != flags {
                rustix::fs::fcntl_setfl(&self.fd, want)?;
            }
            Ok(())
        }

        /// Whether `O_NONBLOCK` is set.
        ///
        /// # Errors
        /// Only if the descriptor is invalid.
        pub fn is_nonblocking(&self) -> Result<bool> {
            Ok(rustix::fs::fcntl_getfl(&self.fd)?.contains(OFlags::NONBLOCK))
        }

        /// `ioctl(FIONREAD)`—How many bytes are in the pipe right now, waiting to be read.
        ///
        /// ```
        /// let (r, w) = ipc_pipe::pipe()?;
        /// w.write_atomic(b"12345")?;
        /// assert_eq!(r.available()?, 5);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        ///
        /// # Errors
        /// Only if the descriptor is invalid.
        #[doc(alias = "FIONREAD")]
        pub fn available(&self) -> Result<usize> {
            let n = rustix::io::ioctl_fionread(&self.fd)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        }

        /// `fcntl(F_GETPIPE_SZ)`—The pipe's capacity in bytes (65536 by default on Linux).
        ///
        /// ```
        /// let (_r, w) = ipc_pipe::pipe()?;
        /// assert_eq!(w.capacity()?, 65536); // Linux's default
        /// assert_eq!(w.set_capacity(100_000)?, 131072); // rounded up to 2^n pages
        /// let max = w.set_capacity_max()?; // /proc/sys/fs/pipe-max-size
        /// assert_eq!(max as u64, ipc_pipe::pipe_max_size()?);
        /// assert!(matches!(w.set_capacity(max + 1), Err(ipc_pipe::Error::LimitExceeded { .. })));
        /// # Ok::<(), ipc_pipe::Error>(())
        /// ```
        ///
        /// # Errors
        /// Only if the descriptor is invalid.
        #[doc(alias = "F_GETPIPE_SZ")]
        pub fn capacity(&self) -> Result<usize> {
            Ok(rustix::pipe::fcntl_getpipe_size(&self.fd)?)
        }

        /// `fcntl(F_SETPIPE_SZ)`—Sets the pipe's capacity to at least `bytes`; returns the
        /// capacity the kernel chose (a power-of-two number of pages).
        ///
        /// # Errors
        /// - [`Error::LimitExceeded`] naming [`PIPE_MAX_SIZE_FILE`] and its value when `bytes` is
        ///   above it. This is checked before the call, for every process: a privileged one
        ///   could exceed it, but a program that works only as root is a trap.
        /// - [`Error::LimitExceeded`] naming [`PIPE_USER_PAGES_SOFT_FILE`] (or the hard one) when
        ///   the user's pipes already hold too many pages (`EPERM`).
        /// - [`Error::Io`] with `ResourceBusy` (`EBUSY`) when shrinking below what the pipe
        ///   holds now.
        #[doc(alias = "F_SETPIPE_SZ")]
        pub fn set_capacity(&self, bytes: usize) -> Result<usize> {
            set_capacity(self.fd.as_fd(), bytes)
        }

        /// Grows the pipe to the largest capacity allowed without privilege
        /// ([`PIPE_MAX_SIZE_FILE`], 1 MiB by default) and returns it.
        ///
        /// # Errors
        /// As [`Self::set_capacity`]; also if [`PIPE_MAX_SIZE_FILE`] cannot be read.
        pub fn set_capacity_max(&self) -> Result<usize> {
            let max = pipe_max_size()?;
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if self.capacity()? >= max {
                return self.capacity();
            }
            set_capacity(self.fd.as_fd(), max)
        }
    };
}

impl PipeReader {
    common_methods!();

    /// Duplicates this end (`F_DUPFD_CLOEXEC`, at number 3 or above): both handles refer to the
    /// same end, and the pipe sees end-of-file (or a broken pipe) only when all of them are
    /// closed.
    ///
    /// ```
    /// let (r, w) = ipc_pipe::pipe()?;
    /// let r2 = r.try_clone()?;
    /// drop(r);
    /// w.write_atomic(b"still read")?; // a reader is left: no broken pipe
    /// assert_eq!(r2.available()?, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] with `EMFILE` when the process is out of descriptors.
    #[doc(alias = "dup")]
    pub fn try_clone(&self) -> Result<PipeReader> {
        Ok(PipeReader {
            fd: dup_above_stdio(self.fd.as_fd())?,
        })
    }

    /// Claims a read end that the parent placed at descriptor number `fd` (see
    /// [`crate::ChildFds`]), after checking that `fd` is open, is a pipe or FIFO, can read (opened
    /// `O_RDONLY`, or `O_RDWR` for a FIFO), is not one of the standard streams 0..=2 (use
    /// [`Self::dup_stdin`] for those) and was not claimed before in this process (a number is
    /// claimed at most once per process, even after the handle is dropped). The descriptor is
    /// then made close-on-exec, so it is not passed on further by accident; claim it before the
    /// process starts children.
    ///
    /// ```no_run
    /// use ipc_pipe::PipeReader;
    /// // In a child started with `ChildFds::new().fd_at(3, reader)`:
    /// // SAFETY: the parent placed a pipe end at 3 for us, and nothing else in this process
    /// // took ownership of descriptor 3.
    /// let r = unsafe { PipeReader::from_inherited(3) }?;
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Safety
    /// As for [`FromRawFd::from_raw_fd`](std::os::fd::FromRawFd::from_raw_fd): nothing else in
    /// this process may own descriptor `fd` (a `File`, an `OwnedFd`, a socket, another crate's
    /// handle, or code that will close it), because the returned reader closes it when dropped.
    /// The checks catch many mistakes (a number that is not open, not a pipe, the wrong way
    /// round, claimed twice through this crate), but they cannot see who else holds a number,
    /// and a second close would close whatever reused it. A number inherited at `exec` that no
    /// other code has claimed meets the contract.
    ///
    /// After `fork` in a multi-threaded process this takes a lock: do not call it there.
    ///
    /// Safe code cannot call it, so it cannot take over a number that a `File` owns:
    ///
    /// ```compile_fail,E0133
    /// use std::os::fd::AsRawFd;
    /// let file = std::fs::File::open("/dev/null")?;
    /// let stolen = ipc_pipe::PipeReader::from_inherited(file.as_raw_fd());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NotAPipe`] if `fd` is something else; [`Error::InvalidDescriptor`] when another
    /// check fails. In both cases `fd` is left open and unclaimed.
    #[allow(unsafe_code, unsafe_op_in_unsafe_fn)]
    pub unsafe fn from_inherited(fd: RawFd) -> Result<PipeReader> {
        not_stdio(fd)?;
        // SAFETY: this function's contract is `claim_inherited`'s, passed on to our caller. It
        // is the one unsafe call here, so no unsafe block (those live in sys.rs only).
        let owned = sys::claim_inherited(fd, |b| check_end(b, fd, Direction::Read))
            .map_err(|e| refused(fd, e))?;
        Ok(PipeReader { fd: owned })
    }

    /// A read end for this process's standard input, when that is a pipe or FIFO (a child
    /// started with `cmd.stdin(reader)`, or a shell's `producer | this`): a close-on-exec
    /// duplicate of descriptor 0 (`F_DUPFD_CLOEXEC`, at number 3 or above), checked with `fstat`.
    ///
    /// Safe, unlike [`Self::from_inherited`]: descriptor 0 belongs to `std::io::stdin()`, which
    /// lends it, and the duplicate is a new descriptor that only the returned reader owns.
    /// Both refer to the same pipe end: non-blocking mode is shared, the pipe sees end-of-file
    /// only when both are closed (descriptor 0 stays open), and bytes already buffered by
    /// `std::io::stdin()` are not seen through the duplicate.
    ///
    /// ```no_run
    /// use std::io::Read;
    /// // In `producer | consumer`, the consumer:
    /// let mut input = ipc_pipe::PipeReader::dup_stdin()?;
    /// println!("{} bytes are waiting", input.available()?);
    /// let mut all = Vec::new();
    /// input.read_to_end(&mut all)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// - [`Error::NotAPipe`] (`fd: 0`) if standard input is a terminal, a file, a socket, ...
    /// - [`Error::InvalidDescriptor`] (`fd: 0`) if it is closed, or opened for writing only.
    /// - [`Error::Io`] with `EMFILE` when the process is out of descriptors.
    #[doc(alias = "dup")]
    pub fn dup_stdin() -> Result<PipeReader> {
        let fd = dup_std(0, Direction::Read)?;
        Ok(PipeReader { fd })
    }

    /// Reads what is available, waiting at most `timeout` for data (or end-of-file) to arrive.
    /// `Duration::MAX` waits forever. `EINTR` is retried against the deadline.
    ///
    /// The wait is `poll` followed by one `read`: if another process shares this read end and
    /// takes the data first, a blocking descriptor then waits in `read`. Set
    /// [`Self::set_nonblocking`] when the end is shared and the bound must be strict.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (r, w) = ipc_pipe::pipe()?;
    /// let mut buf = [0; 16];
    /// assert!(matches!(r.read_timeout(&mut buf, Duration::from_millis(10)), Err(ipc_pipe::Error::TimedOut { .. })));
    /// w.write_atomic(b"data")?;
    /// assert_eq!(r.read_timeout(&mut buf, Duration::MAX)?, 4);
    /// assert!(matches!(r.try_read(&mut buf), Err(ipc_pipe::Error::WouldBlock)));
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::TimedOut`] if nothing arrived in time; [`Error::Io`] for the rest.
    pub fn read_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        // One absolute deadline for every retry: an interrupted or pre-empted read does not
        // restart the clock.
        let deadline = deadline(timeout);
        loop {
            wait(self.fd.as_fd(), PollFlags::IN, deadline)?;
            match rustix::io::read(&self.fd, &mut *buf) {
                Ok(n) => return Ok(n),
                Err(Errno::INTR | Errno::AGAIN) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads what is available without waiting.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if the pipe is empty and a writer is still open.
    pub fn try_read(&self, buf: &mut [u8]) -> Result<usize> {
        match self.read_timeout(buf, Duration::ZERO) {
            Err(Error::TimedOut { .. }) => Err(Error::WouldBlock),
            other => other,
        }
    }
}

impl PipeWriter {
    common_methods!();

    /// Duplicates this end (`F_DUPFD_CLOEXEC`, at number 3 or above): both handles refer to the
    /// same end, and the pipe sees end-of-file (or a broken pipe) only when all of them are
    /// closed. The copy keeps this writer's [`SigpipePolicy`].
    ///
    /// ```
    /// let (r, w) = ipc_pipe::pipe()?;
    /// let w2 = w.try_clone()?;
    /// drop(w);
    /// w2.write_atomic(b"still writable")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] with `EMFILE` when the process is out of descriptors.
    #[doc(alias = "dup")]
    pub fn try_clone(&self) -> Result<PipeWriter> {
        Ok(PipeWriter {
            fd: dup_above_stdio(self.fd.as_fd())?,
            sigpipe: self.sigpipe,
        })
    }

    /// Claims a write end that the parent placed at descriptor number `fd`; the checks are
    /// those of [`PipeReader::from_inherited`], for writing (`O_WRONLY`, or `O_RDWR` for a FIFO).
    ///
    /// ```no_run
    /// use ipc_pipe::PipeWriter;
    /// // In a child started with `ChildFds::new().fd_at(3, writer)`:
    /// // SAFETY: the parent placed a pipe end at 3 for us, and nothing else in this process
    /// // took ownership of descriptor 3.
    /// let w = unsafe { PipeWriter::from_inherited(3) }?;
    /// w.write_atomic(b"hello, parent")?;
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Safety
    /// As for [`PipeReader::from_inherited`]: nothing else in this process may own descriptor
    /// `fd`, because the returned writer closes it when dropped.
    ///
    /// ```compile_fail,E0133
    /// use std::os::fd::AsRawFd;
    /// let (r, w) = std::io::pipe()?; // std's own pipe owns both numbers
    /// let stolen = ipc_pipe::PipeWriter::from_inherited(w.as_raw_fd());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NotAPipe`] if `fd` is something else; [`Error::InvalidDescriptor`] when another
    /// check fails. In both cases `fd` is left open and unclaimed.
    #[allow(unsafe_code, unsafe_op_in_unsafe_fn)]
    pub unsafe fn from_inherited(fd: RawFd) -> Result<PipeWriter> {
        not_stdio(fd)?;
        // SAFETY: this function's contract is `claim_inherited`'s, passed on to our caller. It
        // is the one unsafe call here, so no unsafe block (those live in sys.rs only).
        let owned = sys::claim_inherited(fd, |b| check_end(b, fd, Direction::Write))
            .map_err(|e| refused(fd, e))?;
        Ok(PipeWriter::from(owned))
    }

    /// A write end for this process's standard output, when that is a pipe or FIFO (a child
    /// started with `cmd.stdout(writer)`, or a shell's `this | consumer`): a close-on-exec
    /// duplicate of descriptor 1, checked with `fstat`, as [`PipeReader::dup_stdin`] does for
    /// descriptor 0. Its [`SigpipePolicy`] is `Inherit`.
    ///
    /// Writes through it bypass `std::io::stdout()`'s buffer: flush that first if both are used.
    /// The pipe sees end-of-file only when both descriptor 1 and the duplicate are closed.
    ///
    /// ```no_run
    /// // In `this | consumer`: records that never interleave with other writers.
    /// let out = ipc_pipe::PipeWriter::dup_stdout()?;
    /// out.write_atomic(b"one whole record\n")?;
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Errors
    /// - [`Error::NotAPipe`] (`fd: 1`) if standard output is a terminal, a file, a socket, ...
    /// - [`Error::InvalidDescriptor`] (`fd: 1`) if it is closed, or opened for reading only.
    /// - [`Error::Io`] with `EMFILE` when the process is out of descriptors.
    #[doc(alias = "dup")]
    pub fn dup_stdout() -> Result<PipeWriter> {
        let fd = dup_std(1, Direction::Write)?;
        Ok(PipeWriter::from(fd))
    }

    /// [`Self::dup_stdout`] for standard error (descriptor 2).
    ///
    /// # Errors
    /// As [`Self::dup_stdout`], with `fd: 2`.
    #[doc(alias = "dup")]
    pub fn dup_stderr() -> Result<PipeWriter> {
        let fd = dup_std(2, Direction::Write)?;
        Ok(PipeWriter::from(fd))
    }

    /// Chooses what a write to a pipe without reader does to this process; see
    /// [`crate::sigpipe`]. The default, [`SigpipePolicy::Inherit`], is plain `write`.
    ///
    /// ```
    /// use ipc_pipe::SigpipePolicy;
    /// let (_r, mut w) = ipc_pipe::pipe()?;
    /// assert_eq!(w.sigpipe_policy(), SigpipePolicy::Inherit);
    /// w.set_sigpipe_policy(SigpipePolicy::Suppress);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_sigpipe_policy(&mut self, policy: SigpipePolicy) {
        self.sigpipe = policy;
    }

    /// The current [`SigpipePolicy`].
    pub fn sigpipe_policy(&self) -> SigpipePolicy {
        self.sigpipe
    }

    /// Writes `record` (at most [`PIPE_BUF`] bytes) in one `write` that the kernel never splits
    /// and never interleaves with other writers' data: the reader sees it whole, or not at all.
    /// On a blocking pipe this waits for room for the whole record; `EINTR` is retried.
    ///
    /// ```
    /// let (r, w) = ipc_pipe::pipe()?;
    /// w.write_atomic(b"one whole record")?;
    /// assert_eq!(r.available()?, 16);
    /// assert!(w.write_atomic(&vec![0; ipc_pipe::PIPE_BUF + 1]).is_err());
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Errors
    /// - [`Error::MessageTooLarge`] if `record` is longer than [`PIPE_BUF`]; nothing is written.
    /// - [`Error::WouldBlock`] if the pipe is non-blocking and lacks room for the whole record;
    ///   nothing is written.
    /// - [`Error::NoReader`] if no reader is left.
    #[doc(alias = "PIPE_BUF")]
    pub fn write_atomic(&self, record: &[u8]) -> Result<()> {
        if record.len() > PIPE_BUF {
            return Err(Error::MessageTooLarge {
                len: record.len() as u64,
                max: PIPE_BUF as u64,
            });
        }
        if record.is_empty() {
            return Ok(());
        }
        loop {
            match self.write_once(record) {
                Ok(n) if n == record.len() => return Ok(()),
                // POSIX and Linux: a write of at most PIPE_BUF bytes is all or nothing.
                Ok(n) => {
                    return Err(Error::Io(io::Error::other(format!(
                        "kernel split an atomic pipe write ({n} of {} bytes)",
                        record.len()
                    ))));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// [`Self::write_atomic`], waiting at most `timeout` for room (`Duration::MAX`: forever):
    /// the record is written whole or not at all.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (_r, w) = ipc_pipe::pipe()?;
    /// w.set_capacity(4096)?;
    /// w.write_atomic_timeout(&[1; 4096], Duration::from_secs(1))?;
    /// assert!(matches!(w.try_write_atomic(b"x"), Err(ipc_pipe::Error::WouldBlock)));
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Self::write_atomic`], and [`Error::TimedOut`] (nothing was written).
    pub fn write_atomic_timeout(&self, record: &[u8], timeout: Duration) -> Result<()> {
        if record.len() > PIPE_BUF {
            return Err(Error::MessageTooLarge {
                len: record.len() as u64,
                max: PIPE_BUF as u64,
            });
        }
        let deadline = deadline(timeout);
        loop {
            // POLLOUT on a pipe means a free slot, room for PIPE_BUF bytes: the write below
            // does not block unless another writer takes the room first.
            wait(self.fd.as_fd(), PollFlags::OUT, deadline)?;
            match self.write_atomic(record) {
                Err(Error::WouldBlock) => continue,
                other => return other,
            }
        }
    }

    /// [`Self::write_atomic`] without waiting.
    ///
    /// # Errors
    /// As [`Self::write_atomic`], and [`Error::WouldBlock`] if there is no room now.
    pub fn try_write_atomic(&self, record: &[u8]) -> Result<()> {
        match self.write_atomic_timeout(record, Duration::ZERO) {
            Err(Error::TimedOut { .. }) => Err(Error::WouldBlock),
            other => other,
        }
    }

    /// Writes part of `buf`, waiting at most `timeout` for room (`Duration::MAX`: forever).
    /// Returns how many bytes were written. On a blocking pipe at most [`PIPE_BUF`] bytes are
    /// written per call, the amount `poll` promises room for, so the call cannot block after
    /// the wait (unless other writers fill the room first).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (r, w) = ipc_pipe::pipe()?;
    /// w.write_all_timeout(&[7; 100_000][..65536], Duration::from_secs(1))?; // fills the pipe
    /// assert!(matches!(w.try_write(b"more"), Err(ipc_pipe::Error::WouldBlock)));
    /// assert!(matches!(
    ///     w.write_timeout(b"more", Duration::from_millis(10)),
    ///     Err(ipc_pipe::Error::TimedOut { .. })
    /// ));
    /// drop(r);
    /// assert!(matches!(w.try_write(b"more"), Err(ipc_pipe::Error::NoReader)));
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::TimedOut`], [`Error::NoReader`], [`Error::Io`].
    pub fn write_timeout(&self, buf: &[u8], timeout: Duration) -> Result<usize> {
        let limit = if self.is_nonblocking()? {
            buf.len()
        } else {
            buf.len().min(PIPE_BUF)
        };
        let deadline = deadline(timeout);
        loop {
            wait(self.fd.as_fd(), PollFlags::OUT, deadline)?;
            match self.write_once(&buf[..limit]) {
                Ok(n) => return Ok(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes all of `buf` before the deadline `timeout` from now (`Duration::MAX`: no
    /// deadline); short writes are continued and `EINTR` is retried, so no byte is lost or
    /// repeated. Each `write` is preceded by a `poll` and, on a blocking pipe, writes at most
    /// [`PIPE_BUF`] bytes, so the deadline holds (unless other writers take the room first).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_pipe::Error;
    /// let (r, w) = ipc_pipe::pipe()?;
    /// let data = vec![7; 100_000]; // more than the pipe holds (64 KiB) while nobody reads
    /// match w.write_all_timeout(&data, Duration::from_millis(20)) {
    ///     Err(Error::TimedOut { written }) => {
    ///         assert_eq!(written, 65536);
    ///         assert_eq!(r.available()?, written); // the rest is `data[written..]`
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), ipc_pipe::Error>(())
    /// ```
    ///
    /// # Errors
    /// - [`Error::TimedOut`] whose `written` says how many bytes of `buf` went into the pipe
    ///   before the deadline: resume with `&buf[written..]`.
    /// - [`Error::NoReader`] (nobody will read what was written), [`Error::Io`].
    pub fn write_all_timeout(&self, buf: &[u8], timeout: Duration) -> Result<()> {
        let deadline = deadline(timeout);
        let mut written = 0;
        while written < buf.len() {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            match self.write_timeout(&buf[written..], left) {
                Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                // `write_timeout` returns at most what it was given.
                Ok(n) => written += n.min(buf.len() - written),
                Err(Error::TimedOut { .. }) => return Err(Error::TimedOut { written }),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes part of `buf` without waiting.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if the pipe is full; [`Error::NoReader`]; [`Error::Io`].
    pub fn try_write(&self, buf: &[u8]) -> Result<usize> {
        match self.write_timeout(buf, Duration::ZERO) {
            Err(Error::TimedOut { .. }) => Err(Error::WouldBlock),
            other => other,
        }
    }

    /// One `write`, honouring the SIGPIPE policy.
    pub(crate) fn write_once(&self, buf: &[u8]) -> io::Result<usize> {
        self.guarded(|| rustix::io::write(&self.fd, buf))
    }

    /// Runs `f`, one system call that writes into this end, under this end's SIGPIPE policy:
    /// with `Suppress`, a SIGPIPE that `f` raises is consumed whatever `f` returns (a short
    /// write whose reader went away raises one too, not only `EPIPE`).
    pub(crate) fn guarded<T>(&self, f: impl FnOnce() -> rustix::io::Result<T>) -> io::Result<T> {
        guarded(self.sigpipe, f)
    }
}

/// Runs `f`, one system call that writes into a pipe, under SIGPIPE policy `policy` (see
/// [`PipeWriter::guarded`]).
pub(crate) fn guarded<T>(
    policy: SigpipePolicy,
    f: impl FnOnce() -> rustix::io::Result<T>,
) -> io::Result<T> {
    match policy {
        SigpipePolicy::Inherit => Ok(f()?),
        SigpipePolicy::Suppress => Ok(sys::without_sigpipe(f)??),
    }
}

/// Reads a number from a `/proc/sys` file into a stack buffer: no allocation, so this (and the
/// capacity calls) can run in a child forked from a multi-threaded process.
fn read_proc_u64(path: &'static str) -> Result<u64> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let mut buf = [0u8; 32];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    std::str::from_utf8(&buf[..len])
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| {
            Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{path}: not a number: {:?}",
                    String::from_utf8_lossy(&buf[..len])
                ),
            ))
        })
}

/// The value of [`PIPE_MAX_SIZE_FILE`]: the largest capacity an unprivileged process may set.
///
/// ```
/// assert!(ipc_pipe::pipe_max_size()? >= 65536);
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
///
/// # Errors
/// If the file cannot be read (no procfs).
pub fn pipe_max_size() -> Result<u64> {
    read_proc_u64(PIPE_MAX_SIZE_FILE)
}

fn set_capacity(fd: BorrowedFd<'_>, bytes: usize) -> Result<usize> {
    // Without procfs the kernel alone decides (and EPERM below still says why).
    if let Ok(max) = pipe_max_size() {
        if bytes as u64 > max {
            return Err(Error::LimitExceeded {
                what: PIPE_MAX_SIZE_FILE,
                requested: bytes as u64,
                limit: max,
            });
        }
    }
    if i32::try_from(bytes).is_err() {
        // F_SETPIPE_SZ takes an int (rustix would report this as EPERM, the per-user limit).
        return Err(Error::LimitExceeded {
            what: "F_SETPIPE_SZ's argument (an int)",
            requested: bytes as u64,
            limit: i32::MAX as u64,
        });
    }
    match rustix::pipe::fcntl_setpipe_size(fd, bytes) {
        Ok(n) => Ok(n),
        Err(Errno::PERM) => {
            // Within pipe-max-size, so the per-user page budget is exhausted.
            let page = rustix::param::page_size() as u64;
            let soft = read_proc_u64(PIPE_USER_PAGES_SOFT_FILE).unwrap_or(0);
            let hard = read_proc_u64(PIPE_USER_PAGES_HARD_FILE).unwrap_or(0);
            let (what, pages) = if soft != 0 {
                (PIPE_USER_PAGES_SOFT_FILE, soft)
            } else {
                (PIPE_USER_PAGES_HARD_FILE, hard)
            };
            Err(Error::LimitExceeded {
                what,
                requested: bytes as u64,
                limit: pages.saturating_mul(page),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The absolute deadline `timeout` from now; `None` (forever) if it overflows.
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Waits until `fd` reports `events` (or an error/hang-up condition), retrying `EINTR`
/// against `deadline`.
pub(crate) fn wait(fd: BorrowedFd<'_>, events: PollFlags, deadline: Option<Instant>) -> Result<()> {
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let ts = left.map(|l| Timespec {
            tv_sec: l.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(l.subsec_nanos()),
        });
        let mut fds = [PollFd::new(&fd, events)];
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(0) => return Err(Error::TimedOut { written: 0 }),
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => {
                if left.is_some_and(|l| l.is_zero()) {
                    return Err(Error::TimedOut { written: 0 });
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Which way a pipe end carries data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

/// Checks that `fd` (number `number` in this process) is a pipe or FIFO end that can carry data
/// in direction `dir`.
pub(crate) fn check_end(fd: BorrowedFd<'_>, number: RawFd, dir: Direction) -> Result<()> {
    let st = match rustix::fs::fstat(fd) {
        Err(Errno::BADF) => return Err(not_open(number)),
        other => other?,
    };
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::Fifo {
        return Err(Error::NotAPipe {
            fd: number,
            found: describe(kind),
        });
    }
    let flags = rustix::fs::fcntl_getfl(fd)?;
    if flags.contains(OFlags::PATH) {
        return Err(Error::InvalidDescriptor {
            fd: number,
            reason: "an O_PATH descriptor, which can neither read nor write",
        });
    }
    let access = flags & OFlags::RWMODE;
    match dir {
        Direction::Read if access == OFlags::WRONLY => Err(Error::InvalidDescriptor {
            fd: number,
            reason: "a write end (opened O_WRONLY) where a read end was expected",
        }),
        Direction::Write if access == OFlags::RDONLY => Err(Error::InvalidDescriptor {
            fd: number,
            reason: "a read end (opened O_RDONLY) where a write end was expected",
        }),
        _ => Ok(()),
    }
}

fn not_open(fd: RawFd) -> Error {
    Error::InvalidDescriptor {
        fd,
        reason: "not an open descriptor",
    }
}

/// What a file type is, in words, for [`Error::NotAPipe`].
fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device (a terminal, /dev/null, ...)",
        FileType::BlockDevice => "a block device",
        FileType::Fifo => "a pipe or FIFO",
        _ => "an unknown kind of file",
    }
}

/// Refuses the standard streams' numbers for `from_inherited`: they belong to `std::io`.
pub(crate) fn not_stdio(fd: RawFd) -> Result<()> {
    if (0..=2).contains(&fd) {
        return Err(Error::InvalidDescriptor {
            fd,
            reason: "0, 1 and 2 are the standard streams, owned by std::io: use dup_stdin, \
                     dup_stdout or dup_stderr",
        });
    }
    if fd < 0 {
        return Err(Error::InvalidDescriptor {
            fd,
            reason: "descriptor numbers are not negative",
        });
    }
    Ok(())
}

/// The error for a number that `sys::claim_inherited` refused.
pub(crate) fn refused(fd: RawFd, why: sys::Claim<Error>) -> Error {
    match why {
        sys::Claim::NotOpen => not_open(fd),
        sys::Claim::AlreadyClaimed => Error::InvalidDescriptor {
            fd,
            reason: "claimed before in this process (a number is claimed at most once)",
        },
        sys::Claim::Refused(e) => e,
        sys::Claim::Io(e) => Error::from(e),
    }
}

/// A close-on-exec duplicate (at 3 or above) of standard stream `number`, checked to be a pipe
/// end for `dir`. The duplicate is checked, not the original, so what is checked is what is
/// kept.
fn dup_std(number: RawFd, dir: Direction) -> Result<OwnedFd> {
    let fd = match sys::dup_stdio(number) {
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => return Err(not_open(number)),
        other => other?,
    };
    check_end(fd.as_fd(), number, dir)?;
    Ok(fd)
}

impl Read for &PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(rustix::io::read(&self.fd, buf)?)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        Ok(rustix::io::readv(&self.fd, bufs)?)
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for &PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_once(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.guarded(|| rustix::io::writev(&self.fd, bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

macro_rules! fd_conversions {
    ($t:ty) => {
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

        impl IntoRawFd for $t {
            fn into_raw_fd(self) -> RawFd {
                self.fd.into_raw_fd()
            }
        }

        impl From<$t> for OwnedFd {
            fn from(end: $t) -> OwnedFd {
                end.fd
            }
        }

        /// The end becomes the child's standard stream: `cmd.stdin(reader)`.
        impl From<$t> for Stdio {
            fn from(end: $t) -> Stdio {
                Stdio::from(end.fd)
            }
        }
    };
}

fd_conversions!(PipeReader);
fd_conversions!(PipeWriter);

/// Wraps a descriptor without checking it (as `std` does); use
/// [`PipeReader::from_inherited`] for a number received from a parent.
impl From<OwnedFd> for PipeReader {
    fn from(fd: OwnedFd) -> PipeReader {
        PipeReader { fd }
    }
}

/// Wraps a descriptor without checking it (as `std` does); use
/// [`PipeWriter::from_inherited`] for a number received from a parent.
impl From<OwnedFd> for PipeWriter {
    fn from(fd: OwnedFd) -> PipeWriter {
        PipeWriter {
            fd,
            sigpipe: SigpipePolicy::Inherit,
        }
    }
}

/// A child's stdout pipe (`Stdio::piped()`) is a pipe read end.
impl From<ChildStdout> for PipeReader {
    fn from(s: ChildStdout) -> PipeReader {
        PipeReader::from(OwnedFd::from(s))
    }
}

/// A child's stderr pipe (`Stdio::piped()`) is a pipe read end.
impl From<ChildStderr> for PipeReader {
    fn from(s: ChildStderr) -> PipeReader {
        PipeReader::from(OwnedFd::from(s))
    }
}

/// A child's stdin pipe (`Stdio::piped()`) is a pipe write end.
impl From<ChildStdin> for PipeWriter {
    fn from(s: ChildStdin) -> PipeWriter {
        PipeWriter::from(OwnedFd::from(s))
    }
}
