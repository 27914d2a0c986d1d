//! The crate's one error type.

use std::fmt;
use std::io;

/// What went wrong, in the caller's terms.
///
/// Every fallible function of this crate returns it. It converts into [`io::Error`] with a
/// matching [`io::ErrorKind`], so `?` works in functions that return `io::Result`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A POSIX semaphore name is not `/` followed by 1..=251 bytes without `/` or NUL (and not
    /// `.` or `..`). Nothing was created.
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// `create` found an object with that name or key already (`EEXIST`).
    AlreadyExists,
    /// `open` found no object with that name or key (`ENOENT`).
    NotFound,
    /// The object exists but its mode or owner does not let us use it (`EACCES`, `EPERM`).
    PermissionDenied,
    /// A `_timeout` call reached its deadline.
    TimedOut,
    /// A `try_` call would have had to wait.
    WouldBlock,
    /// An initial or new value is larger than the kind of semaphore can hold
    /// (`SEM_VALUE_MAX` for POSIX, `SEMVMX` for System V). Nothing was created or changed.
    ValueTooLarge {
        /// The value asked for.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A post would have taken the value over its maximum (`EOVERFLOW`, `ERANGE`). The value
    /// is unchanged.
    Overflow,
    /// A System V set of zero semaphores was asked for. Nothing was created.
    EmptySet,
    /// A System V operation named a semaphore beyond the end of the set. Nothing was changed.
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The number of semaphores in the set.
        len: usize,
    },
    /// A request is over a kernel limit; `what` names the limit (for System V, the fields of
    /// `/proc/sys/kernel/sem`).
    LimitExceeded {
        /// The limit, as the kernel names it.
        what: &'static str,
        /// What was asked for.
        requested: u64,
        /// The limit's current value.
        limit: u64,
    },
    /// The System V set was removed (`IPC_RMID`) while we used or waited on it (`EIDRM`, or
    /// `EINVAL` for an id that no longer exists).
    Removed,
    /// The robust mutex's previous owner died and nobody made it consistent: it can never be
    /// locked again (`ENOTRECOVERABLE`). Destroy and re-initialise it.
    NotRecoverable,
    /// The calling thread already holds the robust mutex (`EDEADLK`).
    Deadlock,
    /// Any other failure of the operating system.
    Io(io::Error),
}

/// `Result<T, ipc_sem::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, reason } => {
                write!(f, "invalid semaphore name {name:?}: {reason}")
            }
            Error::AlreadyExists => f.write_str("semaphore already exists"),
            Error::NotFound => f.write_str("semaphore not found"),
            Error::PermissionDenied => f.write_str("permission denied"),
            Error::TimedOut => f.write_str("timed out waiting for the semaphore"),
            Error::WouldBlock => f.write_str("the semaphore is not available now"),
            Error::ValueTooLarge { value, max } => {
                write!(f, "semaphore value {value} is larger than the maximum {max}")
            }
            Error::Overflow => f.write_str("post would overflow the semaphore's maximum value"),
            Error::EmptySet => f.write_str("a System V semaphore set needs at least one semaphore"),
            Error::IndexOutOfRange { index, len } => {
                write!(f, "semaphore index {index} out of range for a set of {len}")
            }
            Error::LimitExceeded {
                what,
                requested,
                limit,
            } => write!(
                f,
                "{what} limit exceeded: requested {requested}, limit {limit} (see /proc/sys/kernel/sem)"
            ),
            Error::Removed => f.write_str("the semaphore set was removed"),
            Error::NotRecoverable => f.write_str(
                "the mutex is not recoverable: a previous owner died and it was not made consistent",
            ),
            Error::Deadlock => f.write_str("the calling thread already holds the mutex"),
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
        Error::from_errno(e)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        Error::from_errno(e.into())
    }
}

impl Error {
    /// Translates the errnos every kind shares; the rest stays `Io`.
    pub(crate) fn from_errno(e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EEXIST) => Error::AlreadyExists,
            Some(libc::ENOENT) => Error::NotFound,
            Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied,
            Some(libc::ETIMEDOUT) => Error::TimedOut,
            Some(libc::EOVERFLOW) => Error::Overflow,
            Some(libc::EIDRM) => Error::Removed,
            Some(libc::ENOTRECOVERABLE) => Error::NotRecoverable,
            Some(libc::EDEADLK) => Error::Deadlock,
            _ => Error::Io(e),
        }
    }

    /// An error from a raw errno value.
    pub(crate) fn errno(code: i32) -> Error {
        Error::from_errno(io::Error::from_raw_os_error(code))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io(_) => {
                let Error::Io(inner) = e else { unreachable!() };
                return inner;
            }
            Error::InvalidName { .. }
            | Error::ValueTooLarge { .. }
            | Error::EmptySet
            | Error::IndexOutOfRange { .. } => io::ErrorKind::InvalidInput,
            Error::AlreadyExists => io::ErrorKind::AlreadyExists,
            Error::NotFound | Error::Removed => io::ErrorKind::NotFound,
            Error::PermissionDenied => io::ErrorKind::PermissionDenied,
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            Error::Overflow | Error::LimitExceeded { .. } => io::ErrorKind::QuotaExceeded,
            Error::NotRecoverable | Error::Deadlock => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
