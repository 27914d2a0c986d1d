//! The crate's one error type.

use std::fmt;
use std::io;

use crate::size::Size;

/// Everything that can go wrong in `ipc-shm`, in the user's terms.
///
/// Every error about a named object carries its name: the POSIX name (`/x`), `key 0x…` or
/// `id N` for System V, `memfd:LABEL` for a memfd, `fd N` for a descriptor received from a peer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A name is not acceptable: a POSIX name is `/` followed by 1..=255 bytes without `/` or
    /// NUL (and not `.` or `..`); a memfd label is at most 249 bytes without NUL.
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Permission bits outside `0o777` were asked for.
    InvalidMode {
        /// The mode given.
        mode: u32,
    },
    /// A size is zero, larger than the address space can map ([`MAX_SIZE`](crate::MAX_SIZE),
    /// or `RLIMIT_AS`), or not a valid ring capacity. Checked before any system call.
    InvalidSize {
        /// The size asked for, in bytes.
        size: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An opener did not say which size it accepts (`.size(n)` or `.max_size(n)`): the size of
    /// an existing segment is chosen by its creator, so the opener must bound it.
    SizeRequired,
    /// The object already exists (exclusive create).
    AlreadyExists {
        /// The object.
        name: String,
    },
    /// No object of that name, key or id exists.
    NotFound {
        /// The object.
        name: String,
    },
    /// The caller may not access the object (its mode or owner), or may not seal it further.
    PermissionDenied {
        /// The object.
        name: String,
    },
    /// The name is a symbolic link: refused (`O_NOFOLLOW`).
    Symlink {
        /// The object.
        name: String,
    },
    /// The object is not a regular shared-memory file (a FIFO, directory or device planted at
    /// the name, or a descriptor of something else), or a doorbell's path is not a FIFO.
    NotRegular {
        /// The object.
        name: String,
    },
    /// The object belongs to another user, and the opener accepts only its own
    /// ([`OwnerCheck::SameUid`](crate::OwnerCheck::SameUid), the default).
    WrongOwner {
        /// The object.
        name: String,
        /// Our effective uid.
        expected: u32,
        /// The object's owner.
        found: u32,
    },
    /// The object's owner is still alive (it holds the owner lock): `remove_stale` and
    /// `replace_stale` leave it alone.
    OwnerAlive {
        /// The object.
        name: String,
    },
    /// This handle is not the object's owner (an opener, a forked child's copy, or an owner
    /// that [`persist`](crate::Shm::persist)ed), so it may not remove it.
    NotOwner {
        /// The object.
        name: String,
    },
    /// `open_or_create` kept finding the name taken by `create` and gone again by `open`.
    Contended {
        /// The object.
        name: String,
        /// How many rounds it tried.
        attempts: u32,
    },
    /// The object's size is not one the caller accepts (or it changed under us).
    SizeMismatch {
        /// The object.
        name: String,
        /// What the caller accepts.
        expected: Size,
        /// The size the object has.
        actual: u64,
    },
    /// The object has size 0: its creator has not sized it yet (still being created).
    NotReady {
        /// The object.
        name: String,
    },
    /// The file system (or memory cgroup) holding the object is full (`ENOSPC`, `ENOMEM` from
    /// `fallocate`).
    NoSpace {
        /// The object.
        name: String,
    },
    /// A segment's [`Header`](crate::Header) is not published yet: its creator has not finished
    /// laying it out (wait with [`Header::wait_ready`](crate::Header::wait_ready) or
    /// [`Ring::open_timeout`](crate::Ring::open_timeout)).
    NotPublished,
    /// A memfd lacks seals the opener requires.
    NotSealed {
        /// The seals (`F_SEAL_*` bits) required but missing.
        missing: u32,
    },
    /// A descriptor number handed to [`ChildFds`](crate::ChildFds) or claimed with
    /// `from_inherited` is not usable.
    InvalidDescriptor {
        /// The descriptor number.
        fd: i32,
        /// What is wrong with it.
        reason: &'static str,
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
    /// A ring endpoint would wait on a doorbell its peer cannot ring, or attach without the
    /// doorbell its peer waits on: both endpoints need the same
    /// [`Doorbell`](crate::Doorbell) ([`Ring::with_doorbell`](crate::Ring::with_doorbell)).
    NoDoorbell,
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
            Error::InvalidName { name, reason } => write!(f, "invalid name {name:?}: {reason}"),
            Error::InvalidMode { mode } => write!(
                f,
                "invalid mode {mode:#o}: only the permission bits 0o777 may be set"
            ),
            Error::InvalidSize { size, reason } => write!(f, "invalid size {size}: {reason}"),
            Error::SizeRequired => f.write_str(
                "opening needs the size it accepts: .size(n) for exactly n bytes or \
                 .max_size(n) for at most n (the creator chose the size)",
            ),
            Error::AlreadyExists { name } => write!(
                f,
                "{name} already exists: open it, or if its creator died, remove it with \
                 remove_stale (or create with .replace_stale())"
            ),
            Error::NotFound { name } => write!(f, "{name} does not exist"),
            Error::PermissionDenied { name } => write!(
                f,
                "permission denied for {name} (its mode or owner does not allow it)"
            ),
            Error::Symlink { name } => {
                write!(f, "{name} is a symbolic link: refusing to follow it")
            }
            Error::NotRegular { name } => {
                write!(
                    f,
                    "{name} is not an object of the expected kind (a regular shared-memory file, or a doorbell's FIFO)"
                )
            }
            Error::WrongOwner {
                name,
                expected,
                found,
            } => write!(
                f,
                "{name} is owned by uid {found}, not by us (uid {expected}); to accept it, \
                 open with .owner_check(OwnerCheck::AnyUid)"
            ),
            Error::OwnerAlive { name } => {
                write!(f, "the owner of {name} is still alive: not removed")
            }
            Error::NotOwner { name } => write!(
                f,
                "this handle does not own {name}: only its owner removes it (or use unlink)"
            ),
            Error::Contended { name, attempts } => write!(
                f,
                "{name} was created and removed again by others {attempts} times in a row: \
                 open_or_create gave up"
            ),
            Error::SizeMismatch {
                name,
                expected,
                actual,
            } => write!(f, "{name} has {actual} bytes, expected {expected}"),
            Error::NotReady { name } => {
                write!(f, "{name} has size 0: its creator has not finished")
            }
            Error::NoSpace { name } => {
                write!(
                    f,
                    "no space left for {name} (a full /dev/shm or memory limit)"
                )
            }
            Error::NotPublished => f.write_str(
                "the segment's header is not published yet: its creator has not finished",
            ),
            Error::NotSealed { missing } => write!(f, "memfd lacks required seals {missing:#x}"),
            Error::InvalidDescriptor { fd, reason } => write!(f, "descriptor {fd}: {reason}"),
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
            Error::NoDoorbell => f.write_str(
                "the ring's other endpoint has no doorbell, or waits on one this endpoint lacks: \
                 give both the same Doorbell (Ring::with_doorbell)",
            ),
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

/// A system error with no more specific meaning: [`Error::Io`]. Errors about a named object are
/// translated where the crate knows the name.
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// As `From<io::Error>`.
impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        Error::Io(e.into())
    }
}

impl Error {
    /// Translates an errno from an operation on the object `name` into what it means there.
    pub(crate) fn at(name: &str, e: rustix::io::Errno) -> Error {
        use rustix::io::Errno;
        let name = name.to_owned();
        match e {
            Errno::EXIST => Error::AlreadyExists { name },
            Errno::NOENT => Error::NotFound { name },
            Errno::ACCESS | Errno::PERM => Error::PermissionDenied { name },
            Errno::LOOP => Error::Symlink { name },
            Errno::ISDIR | Errno::NXIO => Error::NotRegular { name },
            Errno::NOSPC => Error::NoSpace { name },
            e => Error::Io(e.into()),
        }
    }

    /// As [`at`](Self::at), for an `io::Error`.
    pub(crate) fn at_io(name: &str, e: io::Error) -> Error {
        match rustix::io::Errno::from_io_error(&e) {
            Some(errno) => Error::at(name, errno),
            None => Error::Io(e),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        use io::ErrorKind as K;
        if let Error::Io(inner) = e {
            return inner;
        }
        let kind = match &e {
            Error::InvalidName { .. }
            | Error::InvalidMode { .. }
            | Error::InvalidSize { .. }
            | Error::SizeRequired
            | Error::InvalidDescriptor { .. }
            | Error::Misaligned { .. }
            | Error::OutOfBounds { .. }
            | Error::MessageTooLarge { .. }
            | Error::BufferTooSmall { .. }
            | Error::NoDoorbell => K::InvalidInput,
            Error::AlreadyExists { .. } | Error::RoleTaken => K::AlreadyExists,
            Error::NotFound { .. } => K::NotFound,
            Error::PermissionDenied { .. }
            | Error::ReadOnly
            | Error::WrongOwner { .. }
            | Error::NotOwner { .. } => K::PermissionDenied,
            Error::OwnerAlive { .. } | Error::Contended { .. } => K::ResourceBusy,
            Error::NoSpace { .. } => K::StorageFull,
            Error::WouldBlock | Error::NotReady { .. } | Error::NotPublished => K::WouldBlock,
            Error::TimedOut => K::TimedOut,
            Error::PeerGone => K::BrokenPipe,
            Error::HugePagesUnavailable | Error::LimitExceeded { .. } => K::OutOfMemory,
            Error::Corrupt { .. }
            | Error::Incompatible { .. }
            | Error::SizeMismatch { .. }
            | Error::NotSealed { .. }
            | Error::NotRegular { .. }
            | Error::Symlink { .. } => K::InvalidData,
            _ => K::Other,
        };
        io::Error::new(kind, e)
    }
}
