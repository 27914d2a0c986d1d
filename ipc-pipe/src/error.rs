//! The crate's one error type, for everything that is not `Read`/`Write`.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// What went wrong in an `ipc-pipe` call that is not `Read`/`Write` (those use [`io::Error`]).
///
/// Every variant converts into an [`io::Error`] with the matching [`io::ErrorKind`], so `?` works
/// in functions that return `io::Result`.
///
/// ```
/// let (_r, w) = ipc_pipe::pipe()?;
/// let err = w.write_atomic(&[0; 4097]).unwrap_err();
/// assert!(matches!(err, ipc_pipe::Error::MessageTooLarge { len: 4097, max: 4096 }));
/// assert_eq!(std::io::Error::from(err).kind(), std::io::ErrorKind::InvalidInput);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A record or frame is longer than the mechanism or the configured maximum allows.
    /// Nothing was written (or, for a peer's frame, nothing was allocated).
    MessageTooLarge {
        /// The length that was asked for (or announced by the peer).
        len: u64,
        /// The largest length allowed.
        max: u64,
    },
    /// A kernel limit stands in the way; `what` names it (a `/proc/sys/fs/...` file where the
    /// kernel has one) and `limit` is its value read at the time of the error.
    LimitExceeded {
        /// The limit, e.g. `"/proc/sys/fs/pipe-max-size"`.
        what: &'static str,
        /// What was asked for, in the limit's unit (bytes).
        requested: u64,
        /// The limit's value, in the same unit.
        limit: u64,
    },
    /// The reading end is closed: nobody will ever read what is written (`EPIPE`).
    NoReader,
    /// The descriptor is non-blocking, or a `try_` call found it not ready (`EAGAIN`).
    WouldBlock,
    /// A `_timeout` call's time ran out before it could finish.
    TimedOut {
        /// How many bytes of the caller's buffer were written before the time ran out: the
        /// place to resume from. Only [`PipeWriter::write_all_timeout`](crate::PipeWriter::write_all_timeout)
        /// can have written some; it is 0 for every other call (reads, and writes that succeed
        /// with a count or are all-or-nothing).
        written: usize,
    },
    /// A descriptor is not a pipe or FIFO (`fstat` says what it is instead).
    NotAPipe {
        /// The descriptor number, in this process.
        fd: RawFd,
        /// What it is: `"a regular file"`, `"a character device (a terminal, /dev/null, ...)"`, ...
        found: &'static str,
    },
    /// A descriptor is not what the call needs: not open, opened for the other direction, a
    /// reserved number, claimed already.
    InvalidDescriptor {
        /// The descriptor number (in this process, or the target number in a child).
        fd: RawFd,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A frame was cut short: part of it went out, then a write failed (it would block, or the
    /// time ran out). The stream is out of step — its reader would take the next bytes for the
    /// rest of this frame — so the writer refuses every later frame with this error too.
    FrameCutShort {
        /// How many bytes of the frame (length prefix included) went out.
        written: u64,
        /// The frame's length, prefix included.
        len: u64,
    },
    /// Any other system error.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MessageTooLarge { len, max } => {
                write!(
                    f,
                    "message of {len} bytes is larger than the maximum of {max} bytes"
                )
            }
            Error::LimitExceeded {
                what,
                requested,
                limit,
            } => write!(
                f,
                "{requested} exceeds the limit {what} = {limit}; raise it (as root, with sysctl) or ask for less"
            ),
            Error::NoReader => f.write_str("the pipe has no reader left (broken pipe)"),
            Error::WouldBlock => f.write_str("the operation would block"),
            Error::TimedOut { written: 0 } => f.write_str("the operation timed out"),
            Error::TimedOut { written } => {
                write!(f, "the operation timed out after writing {written} bytes")
            }
            Error::NotAPipe { fd, found } => {
                write!(f, "descriptor {fd} is not a pipe or FIFO but {found}")
            }
            Error::InvalidDescriptor { fd, reason } => {
                write!(f, "invalid descriptor {fd}: {reason}")
            }
            Error::FrameCutShort { written, len } => write!(
                f,
                "a frame was cut short after {written} of its {len} bytes; the stream is out of step and takes no more frames"
            ),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::BrokenPipe => Error::NoReader,
            io::ErrorKind::WouldBlock => Error::WouldBlock,
            _ => Error::Io(e),
        }
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        Error::from(io::Error::from(e))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io(_) => {
                let Error::Io(inner) = e else { unreachable!() };
                return inner;
            }
            Error::MessageTooLarge { .. }
            | Error::InvalidDescriptor { .. }
            | Error::NotAPipe { .. } => io::ErrorKind::InvalidInput,
            Error::LimitExceeded { .. } => io::ErrorKind::QuotaExceeded,
            Error::NoReader => io::ErrorKind::BrokenPipe,
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            Error::TimedOut { .. } => io::ErrorKind::TimedOut,
            Error::FrameCutShort { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
    }

    #[test]
    fn io_round_trip_keeps_kind() {
        let e = io::Error::from(Error::Io(io::Error::from(io::ErrorKind::UnexpectedEof)));
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            io::Error::from(Error::NoReader).kind(),
            io::ErrorKind::BrokenPipe
        );
        assert!(matches!(
            Error::from(io::Error::from(io::ErrorKind::BrokenPipe)),
            Error::NoReader
        ));
        assert_eq!(
            io::Error::from(Error::TimedOut { written: 5 }).kind(),
            io::ErrorKind::TimedOut
        );
    }

    #[test]
    fn messages_are_lowercase_without_a_full_stop() {
        let all = [
            Error::MessageTooLarge { len: 2, max: 1 },
            Error::LimitExceeded {
                what: "/proc/sys/fs/pipe-max-size",
                requested: 2,
                limit: 1,
            },
            Error::NoReader,
            Error::WouldBlock,
            Error::TimedOut { written: 0 },
            Error::TimedOut { written: 7 },
            Error::NotAPipe {
                fd: 0,
                found: "a regular file",
            },
            Error::InvalidDescriptor {
                fd: 3,
                reason: "not open",
            },
            Error::FrameCutShort { written: 4, len: 9 },
        ];
        for e in all {
            let s = e.to_string();
            assert!(!s.starts_with(|c: char| c.is_uppercase()), "{s}");
            assert!(!s.ends_with('.'), "{s}");
        }
        assert!(
            Error::TimedOut { written: 7 }
                .to_string()
                .contains("7 bytes")
        );
        assert!(
            Error::NotAPipe {
                fd: 1,
                found: "a regular file"
            }
            .to_string()
            .contains("descriptor 1")
        );
    }
}
