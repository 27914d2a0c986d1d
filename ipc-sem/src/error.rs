//! The crate's one error type.

use std::fmt;
use std::io;

/// What went wrong, in the caller's terms.
///
/// Every fallible function of this crate returns it. It converts into [`io::Error`] with a
/// matching [`io::ErrorKind`], so `?` works in functions that return `io::Result`.
///
/// Errors about a named object carry its name: the POSIX name (`"/jobs"`) of a named semaphore
/// or mutex, `"key 0x4950…"` or `"id N"` for a System V set, `"descriptor N"` for an object
/// received as a descriptor, `"in-place slot at 0x…"` for memory the caller provides.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A POSIX name is not `/` followed by 1..=[`NAME_MAX`](crate::NAME_MAX) bytes (255 for a
    /// [`NamedMutex`](crate::NamedMutex)) without `/` or NUL, or is `/.` or `/..`. Nothing was
    /// created.
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Permission bits outside `0o777` were asked for (`.mode(..)`, [`SemSet::set_mode`]).
    /// Nothing was created or changed.
    ///
    /// [`SemSet::set_mode`]: crate::SemSet::set_mode
    InvalidMode {
        /// The rejected mode.
        mode: u32,
    },
    /// `create` found an object with that name or key already (`EEXIST`).
    AlreadyExists {
        /// The object.
        name: String,
    },
    /// No object with that name, key or id exists (`ENOENT`).
    NotFound {
        /// The object.
        name: String,
    },
    /// The object exists but its mode does not let us use it (`EACCES`, `EPERM`).
    PermissionDenied {
        /// The object.
        name: String,
    },
    /// `open` found an object that belongs to another user. Opening objects of other users is
    /// refused by default: a process of another user could otherwise plant an object under a
    /// name we expect to find.
    WrongOwner {
        /// The object.
        name: String,
        /// The uid we accept (our effective uid).
        expected: u32,
        /// The uid that owns the object.
        found: u32,
    },
    /// `remove_stale` (or `create` with `replace_stale`) found the object's owner alive: a live
    /// process holds the owner's descriptor, so the object is in use. Nothing was removed.
    OwnerAlive {
        /// The object.
        name: String,
    },
    /// `remove` on a handle that is not the object's owner (an opener, an adopted descriptor,
    /// or an owner inherited across fork): nothing was removed.
    NotOwner {
        /// The object.
        name: String,
    },
    /// The object under the name is not one this crate can use: not a regular file, a symbolic
    /// link, not sealed against shrinking, or a slot whose state word holds no valid state.
    /// Nothing was mapped or changed.
    InvalidObject {
        /// The object.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The object's size is not the size of what it should hold (a truncated or foreign file).
    /// It is refused before it is mapped, so a short file can never raise `SIGBUS`.
    WrongSize {
        /// The object.
        name: String,
        /// The size it must have, in bytes.
        expected: u64,
        /// The size it has.
        found: u64,
    },
    /// `open_or_create` lost the race against other processes creating and removing the name
    /// every time it tried (create found it, open then did not).
    Contended {
        /// The object.
        name: String,
        /// How many times both were tried.
        attempts: u32,
    },
    /// `init` of an in-place object found it initialised already, or being initialised by a
    /// live process. Attach to it instead (`attach`, `attach_timeout`, or `init_or_attach`).
    AlreadyInitialized {
        /// The object.
        name: String,
    },
    /// `attach` found an in-place object that nobody initialised (its state word is zero),
    /// and it stayed so until the timeout.
    NotInitialized {
        /// The object.
        name: String,
    },
    /// The process that started initialising an in-place object died (or is a zombie) before
    /// it finished: the object is half-made and is never used. Re-create the memory.
    InitializerDied {
        /// The object.
        name: String,
        /// The pid that claimed the object.
        pid: u32,
    },
    /// A `_timeout` call reached its deadline.
    TimedOut,
    /// A `try_` call would have had to wait.
    WouldBlock,
    /// An initial or new value is larger than the kind of semaphore can hold
    /// (`SEM_VALUE_MAX` for POSIX, `SEMVMX` for System V, `EVENTFD_MAX`). Nothing was created
    /// or changed.
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
    /// A System V operation named a semaphore beyond the end of the set (or `set_values` got
    /// the wrong number of values). Nothing was changed.
    IndexOutOfRange {
        /// The index asked for (for `set_values`: the number of values given).
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
        /// The limit's current value (0 where the kernel does not say).
        limit: u64,
    },
    /// The System V set was removed (`IPC_RMID`) while we used or waited on it (`EIDRM`, or
    /// `EINVAL` for an id that no longer exists).
    Removed {
        /// The set (`"id N"`).
        name: String,
    },
    /// The robust mutex's previous owner died and nobody made it consistent: it can never be
    /// locked again (`ENOTRECOVERABLE`). Destroy and re-initialise it (in place), or make a
    /// new one.
    NotRecoverable,
    /// The calling thread already holds the robust mutex (`EDEADLK`).
    Deadlock,
    /// Any other failure of the operating system.
    Io(io::Error),
}

/// `Result<T, ipc_sem::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, reason } => write!(f, "invalid name {name:?}: {reason}"),
            Error::InvalidMode { mode } => write!(
                f,
                "invalid mode {mode:#o}: only the permission bits 0o777 may be set"
            ),
            Error::AlreadyExists { name } => write!(f, "{name} already exists"),
            Error::NotFound { name } => write!(f, "{name} not found"),
            Error::PermissionDenied { name } => write!(f, "permission denied for {name}"),
            Error::WrongOwner {
                name,
                expected,
                found,
            } => write!(
                f,
                "{name} belongs to uid {found}, not to uid {expected}; to open it anyway, use \
                 .owner_check(OwnerCheck::AnyUid)"
            ),
            Error::OwnerAlive { name } => write!(
                f,
                "{name} is not stale: its owner is alive (a process holds the owner's descriptor)"
            ),
            Error::NotOwner { name } => write!(
                f,
                "this handle does not own {name} (an opener, an adopted descriptor, or an owner \
                 inherited across fork), so it removes nothing; remove it by name (unlink, \
                 sysv::remove) or with remove_stale"
            ),
            Error::InvalidObject { name, reason } => write!(f, "{name} is unusable: {reason}"),
            Error::WrongSize {
                name,
                expected,
                found,
            } => write!(
                f,
                "{name} has {found} bytes, not the {expected} it must have (truncated or foreign)"
            ),
            Error::Contended { name, attempts } => write!(
                f,
                "{name} was created and removed by others during each of {attempts} attempts \
                 to open or create it"
            ),
            Error::AlreadyInitialized { name } => write!(
                f,
                "{name} is already initialised (or being initialised): attach to it instead"
            ),
            Error::NotInitialized { name } => write!(f, "{name} was never initialised"),
            Error::InitializerDied { name, pid } => write!(
                f,
                "{name} is half-made: process {pid} began to initialise it and died"
            ),
            Error::TimedOut => f.write_str("timed out"),
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
                "{what} limit exceeded: requested {requested}, limit {limit} (see \
                 /proc/sys/kernel/sem)"
            ),
            Error::Removed { name } => write!(f, "the semaphore set {name} was removed"),
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
        Error::unnamed(e)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        Error::unnamed(e.into())
    }
}

impl Error {
    /// Translates an errno of an operation that concerns no named object.
    pub(crate) fn unnamed(e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ETIMEDOUT) => Error::TimedOut,
            Some(libc::EOVERFLOW) => Error::Overflow,
            Some(libc::ENOTRECOVERABLE) => Error::NotRecoverable,
            Some(libc::EDEADLK) => Error::Deadlock,
            _ => Error::Io(e),
        }
    }

    /// Translates an errno of an operation on the object `name` (which is built only when the
    /// error needs it).
    pub(crate) fn named(e: io::Error, name: impl FnOnce() -> String) -> Error {
        match e.raw_os_error() {
            Some(libc::EEXIST) => Error::AlreadyExists { name: name() },
            Some(libc::ENOENT) => Error::NotFound { name: name() },
            Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { name: name() },
            Some(libc::EIDRM) => Error::Removed { name: name() },
            _ => Error::unnamed(e),
        }
    }

    /// An unnamed error from a raw errno value.
    pub(crate) fn errno(code: i32) -> Error {
        Error::unnamed(io::Error::from_raw_os_error(code))
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
            | Error::InvalidMode { .. }
            | Error::ValueTooLarge { .. }
            | Error::EmptySet
            | Error::IndexOutOfRange { .. } => io::ErrorKind::InvalidInput,
            Error::AlreadyExists { .. } | Error::AlreadyInitialized { .. } => {
                io::ErrorKind::AlreadyExists
            }
            Error::NotFound { .. } | Error::Removed { .. } | Error::NotInitialized { .. } => {
                io::ErrorKind::NotFound
            }
            Error::PermissionDenied { .. } | Error::WrongOwner { .. } | Error::NotOwner { .. } => {
                io::ErrorKind::PermissionDenied
            }
            Error::OwnerAlive { .. } | Error::Contended { .. } => io::ErrorKind::ResourceBusy,
            Error::InvalidObject { .. }
            | Error::WrongSize { .. }
            | Error::InitializerDied { .. } => io::ErrorKind::InvalidData,
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            Error::Overflow | Error::LimitExceeded { .. } => io::ErrorKind::QuotaExceeded,
            Error::NotRecoverable | Error::Deadlock => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
