//! The crate's one error type.

use std::fmt;
use std::io;

/// Everything that can go wrong in `ipc-shm`, in the user's terms.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A POSIX name is not `/` followed by 1..=255 bytes without `/` or NUL (or is `/.`, `/..`).
    InvalidName,
    /// A size is zero, or too large for this system (`isize::MAX`, the address space).
    InvalidSize {
        /// The size asked for, in bytes.
        size: u64,
    },
    /// The object already exists (exclusive create).
    AlreadyExists,
    /// No object of that name or key exists.
    NotFound,
    /// The caller may not access the object (mode, owner, read-only mapping).
    PermissionDenied,
    /// The name is a symbolic link: refused (`O_NOFOLLOW`).
    Symlink,
    /// The object is not a regular shared-memory file.
    NotRegular,
    /// The object belongs to another user, and the opener asked for its own objects only.
    WrongOwner {
        /// The owner's uid.
        uid: u32,
    },
    /// The object's size is not the size the caller expected (or it shrank under us).
    SizeMismatch {
        /// The size the caller expected.
        expected: u64,
        /// The size the object has.
        actual: u64,
    },
    /// The object has size 0: its creator has not sized it yet (still being created).
    NotReady,
    /// The file system holding the object is full (`ENOSPC` from `posix_fallocate`).
    NoSpace,
    /// A memfd lacks seals the opener requires.
    NotSealed {
        /// The seals (`F_SEAL_*` bits) required but missing.
        missing: u32,
    },
    /// An offset or `offset + len` (or `count * size`) is outside the region or overflows.
    OutOfBounds {
        /// The offset asked for.
        offset: usize,
        /// The length asked for (saturated on overflow).
        len: usize,
        /// The region's length.
        region: usize,
    },
    /// An offset is not aligned for the type asked for.
    Misaligned {
        /// The offset asked for.
        offset: usize,
        /// The alignment the type needs.
        align: usize,
    },
    /// The region is mapped read-only and a write was asked for.
    ReadOnly,
    /// The segment has no valid header: wrong magic or version, or its layout is not ours.
    Incompatible {
        /// What did not match.
        what: &'static str,
    },
    /// A peer wrote values that break the ring's invariants (an index or length out of range).
    Corrupt {
        /// What was wrong.
        what: &'static str,
    },
    /// A message is larger than the ring can hold.
    MessageTooLarge {
        /// The message's length.
        len: usize,
        /// The largest message the ring accepts.
        max: usize,
    },
    /// The receive buffer is smaller than the next message (the message stays in the ring).
    BufferTooSmall {
        /// The length of the next message.
        needed: usize,
    },
    /// The ring's reader or writer role is already taken by a live process.
    RoleTaken,
    /// The peer closed its end or its process is gone.
    PeerGone,
    /// The operation would block (`try_` forms).
    WouldBlock,
    /// The time limit passed (`_timeout` forms).
    TimedOut,
    /// Huge pages were asked for and the system has none available.
    HugePagesUnavailable,
    /// A kernel limit forbids the request.
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The value asked for.
        requested: u64,
        /// The limit, where the kernel exposes it (else 0).
        limit: u64,
    },
    /// Any other system error.
    Io(io::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName => f.write_str(
                "invalid name: POSIX names are `/` and 1 to 255 bytes with no `/` or NUL",
            ),
            Error::InvalidSize { size } => write!(f, "invalid size {size}: zero or too large"),
            Error::AlreadyExists => f.write_str("object already exists"),
            Error::NotFound => f.write_str("no such object"),
            Error::PermissionDenied => f.write_str("permission denied"),
            Error::Symlink => f.write_str("refusing to follow a symbolic link"),
            Error::NotRegular => f.write_str("not a regular shared-memory object"),
            Error::WrongOwner { uid } => write!(f, "object is owned by uid {uid}, not by us"),
            Error::SizeMismatch { expected, actual } => {
                write!(f, "object has {actual} bytes, expected {expected}")
            }
            Error::NotReady => f.write_str("object has size 0: its creator has not finished"),
            Error::NoSpace => f.write_str("no space left for shared memory"),
            Error::NotSealed { missing } => write!(f, "memfd lacks required seals {missing:#x}"),
            Error::OutOfBounds {
                offset,
                len,
                region,
            } => write!(
                f,
                "range {offset}+{len} is outside the region of {region} bytes"
            ),
            Error::Misaligned { offset, align } => {
                write!(f, "offset {offset} is not aligned to {align}")
            }
            Error::ReadOnly => f.write_str("region is mapped read-only"),
            Error::Incompatible { what } => write!(f, "incompatible segment: {what}"),
            Error::Corrupt { what } => write!(f, "peer corrupted the ring: {what}"),
            Error::MessageTooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max}")
            }
            Error::BufferTooSmall { needed } => {
                write!(f, "buffer too small: the next message has {needed} bytes")
            }
            Error::RoleTaken => f.write_str("ring role already taken by a live process"),
            Error::PeerGone => f.write_str("peer closed its end or exited"),
            Error::WouldBlock => f.write_str("operation would block"),
            Error::TimedOut => f.write_str("timed out"),
            Error::HugePagesUnavailable => f.write_str("no huge pages available"),
            Error::LimitExceeded {
                what,
                requested,
                limit,
            } => write!(f, "{what}: requested {requested}, limit {limit}"),
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
        Error::from_errno(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
            .unwrap_or(Error::Io(e))
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        Error::from_errno(e).unwrap_or_else(|| Error::Io(e.into()))
    }
}

impl Error {
    /// The errnos with a meaning of their own.
    fn from_errno(e: rustix::io::Errno) -> Option<Error> {
        use rustix::io::Errno;
        Some(match e {
            Errno::EXIST => Error::AlreadyExists,
            Errno::NOENT => Error::NotFound,
            Errno::ACCESS | Errno::PERM => Error::PermissionDenied,
            Errno::LOOP => Error::Symlink,
            Errno::NOSPC => Error::NoSpace,
            Errno::AGAIN => Error::WouldBlock,
            Errno::TIMEDOUT => Error::TimedOut,
            _ => return None,
        })
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        use io::ErrorKind as K;
        if let Error::Io(inner) = e {
            return inner;
        }
        let kind = match &e {
            Error::InvalidName | Error::InvalidSize { .. } | Error::Misaligned { .. } => {
                K::InvalidInput
            }
            Error::AlreadyExists | Error::RoleTaken => K::AlreadyExists,
            Error::NotFound => K::NotFound,
            Error::PermissionDenied | Error::ReadOnly | Error::WrongOwner { .. } => {
                K::PermissionDenied
            }
            Error::NoSpace => K::StorageFull,
            Error::WouldBlock => K::WouldBlock,
            Error::TimedOut => K::TimedOut,
            Error::PeerGone => K::BrokenPipe,
            Error::OutOfBounds { .. }
            | Error::MessageTooLarge { .. }
            | Error::BufferTooSmall { .. } => K::InvalidInput,
            Error::Corrupt { .. } | Error::Incompatible { .. } | Error::SizeMismatch { .. } => {
                K::InvalidData
            }
            _ => K::Other,
        };
        io::Error::new(kind, e)
    }
}
