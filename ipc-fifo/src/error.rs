//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

/// What was found at a path that should have been a FIFO (or a private directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO (named pipe).
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix-domain socket.
    Socket,
    /// Something the kernel did not classify.
    Unknown,
}

impl FileKind {
    /// What `st` describes. (`st_mode`'s type differs between platforms, hence the cast.)
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn of(st: &rustix::fs::Stat) -> FileKind {
        use rustix::fs::FileType;
        match FileType::from_raw_mode(st.st_mode as rustix::fs::RawMode) {
            FileType::RegularFile => FileKind::Regular,
            FileType::Directory => FileKind::Directory,
            FileType::Symlink => FileKind::Symlink,
            FileType::Fifo => FileKind::Fifo,
            FileType::CharacterDevice => FileKind::CharDevice,
            FileType::BlockDevice => FileKind::BlockDevice,
            FileType::Socket => FileKind::Socket,
            _ => FileKind::Unknown,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Unknown => "a file of unknown type",
        })
    }
}

/// Everything that can go wrong with a FIFO, in the caller's terms.
///
/// Every error about a path says which path (`path`). Converts into [`io::Error`] with the
/// matching [`io::ErrorKind`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The path (or name) cannot name a FIFO or directory: empty, a NUL byte, a component
    /// longer than `NAME_MAX` (255 bytes) or a path longer than `PATH_MAX` (4095 bytes and the
    /// NUL), not ending in a file name, or (for [`PrivateDir::join`](crate::PrivateDir::join))
    /// not a single component. Checked before any system call where it can be; the kernel's
    /// `ENAMETOOLONG` (a file system with a shorter limit) is this error too.
    InvalidName {
        /// The path or name as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Permission bits outside `0o777` (set-user-id, set-group-id, sticky or file-type bits).
    /// Checked before any system call.
    InvalidMode {
        /// The mode that was asked for.
        mode: u32,
    },
    /// `create` found something already at the path (`EEXIST`), even a dangling symlink.
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// Nothing is at the path (`ENOENT`), or the FIFO a handle owned is no longer there.
    NotFound {
        /// The path.
        path: PathBuf,
        /// Whether the path's directory existed when the error was made: `false` means the
        /// directory itself is missing, or a component of it is not a directory (`ENOTDIR`).
        dir_exists: bool,
    },
    /// The kernel refused access (`EACCES`/`EPERM`).
    PermissionDenied {
        /// The path.
        path: PathBuf,
    },
    /// The path names something that is not a FIFO (a symbolic link is never followed).
    /// Nothing was read from, written to or removed at it.
    NotAFifo {
        /// The path.
        path: PathBuf,
        /// What is there instead.
        found: FileKind,
    },
    /// A private directory's path names something that is not a directory (a symbolic link is
    /// never followed).
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// What is there instead.
        found: FileKind,
    },
    /// The FIFO belongs to another user; refused unless the caller opted out with
    /// [`owner_check(OwnerCheck::AnyUid)`](crate::OwnerCheck::AnyUid).
    WrongOwner {
        /// The FIFO.
        path: PathBuf,
        /// Our effective uid.
        expected: u32,
        /// The uid that owns the FIFO.
        found: u32,
    },
    /// A directory exists but is not private: it is not ours, or its mode grants access to
    /// group or others.
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The uid that owns it.
        uid: u32,
    },
    /// [`remove_stale`](crate::remove_stale) (or a [`replace_stale`](crate::FifoOptions::replace_stale)
    /// create) found a FIFO whose owner is alive: some process still holds the handle that
    /// created it. Nothing was removed.
    OwnerAlive {
        /// The FIFO.
        path: PathBuf,
    },
    /// `open_or_create` found the path created and removed again by others between its steps,
    /// round after round, and gave up.
    Contended {
        /// The FIFO.
        path: PathBuf,
        /// How many rounds it tried.
        attempts: u32,
    },
    /// [`Fifo::remove`](crate::Fifo::remove) or [`PrivateDir::remove`](crate::PrivateDir::remove)
    /// on a handle that does not own its object (it opened it, persisted it, or was inherited
    /// through `fork`). Nothing was removed.
    NotOwner {
        /// The object.
        path: PathBuf,
    },
    /// A descriptor handed to `TryFrom<OwnedFd>` is not a FIFO or pipe.
    NotAFifoDescriptor {
        /// What it is instead.
        found: FileKind,
    },
    /// A descriptor handed to `TryFrom<OwnedFd>` is the other end: not open for reading (a
    /// [`FifoReader`](crate::FifoReader)) or writing (a [`FifoWriter`](crate::FifoWriter)).
    WrongEnd {
        /// `"reading"` or `"writing"`: what the descriptor must be open for.
        needed: &'static str,
    },
    /// A writer found no reader: a non-blocking open (`ENXIO`), or a write after every reader
    /// left (`EPIPE`).
    NoReader,
    /// The deadline passed before the peer arrived or the data came.
    TimedOut,
    /// The operation would block (a `try_` form, or a descriptor in non-blocking mode).
    WouldBlock,
    /// A record or frame is longer than the mode allows. Records are at most
    /// [`RECORD_MAX`](crate::RECORD_MAX) bytes (4092 on Linux): a record and its 4-byte length
    /// prefix go out in one write of at most `PIPE_BUF` (4096) bytes, the largest write that
    /// never interleaves with other writers'. Frames are at most the reader's `max_len`, or
    /// `u32::MAX` bytes for the writer.
    MessageTooLarge {
        /// The length that was asked for or announced.
        len: usize,
        /// The largest length allowed.
        max: usize,
    },
    /// The stream ended in the middle of a record or frame (a writer died mid-frame, or the
    /// FIFO is shared by several framed writers).
    Truncated,
    /// Any other I/O error.
    Io(io::Error),
}

/// `Result<T, ipc_fifo::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The directory part of `path` as the kernel resolves it (`"."` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether the directory of `path` exists (following symlinks, as a lookup does).
pub(crate) fn dir_exists(path: &Path) -> bool {
    rustix::fs::stat(parent_of(path)).is_ok_and(|st| FileKind::of(&st) == FileKind::Directory)
}

impl Error {
    /// [`Error::NotFound`] for `path`, looking whether its directory exists.
    pub(crate) fn not_found(path: &Path) -> Error {
        Error::NotFound {
            path: path.to_owned(),
            dir_exists: dir_exists(path),
        }
    }

    /// What `e`, returned by a system call on `path`, means.
    pub(crate) fn at(path: &Path, e: Errno) -> Error {
        let path_buf = || path.to_owned();
        match e {
            Errno::EXIST => Error::AlreadyExists { path: path_buf() },
            Errno::NOENT => Error::not_found(path),
            // A component of the directory part is not a directory: no such directory.
            Errno::NOTDIR => Error::NotFound {
                path: path_buf(),
                dir_exists: false,
            },
            Errno::ACCESS | Errno::PERM => Error::PermissionDenied { path: path_buf() },
            Errno::NAMETOOLONG => Error::InvalidName {
                path: path_buf(),
                reason: "a component or the whole path is too long for this file system \
                         (ENAMETOOLONG)",
            },
            Errno::ISDIR => Error::NotAFifo {
                path: path_buf(),
                found: FileKind::Directory,
            },
            e => Error::from(e),
        }
    }

    /// Wraps an error of a call on `path` (see [`Error::at`]).
    pub(crate) fn wrap(path: &Path) -> impl Fn(Errno) -> Error + '_ {
        move |e| Error::at(path, e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { path, reason } => {
                write!(f, "invalid path or name {path:?}: {reason}")
            }
            Error::InvalidMode { mode } => write!(
                f,
                "invalid mode {mode:#o}: only permission bits (0o777 at most) are allowed"
            ),
            Error::AlreadyExists { path } => write!(
                f,
                "{} already exists (if it is a FIFO whose owner died, create with \
                 .replace_stale() or remove it with ipc_fifo::remove_stale)",
                path.display()
            ),
            Error::NotFound { path, dir_exists } => {
                if *dir_exists {
                    write!(
                        f,
                        "no FIFO or directory at {} (its directory exists)",
                        path.display()
                    )
                } else {
                    write!(
                        f,
                        "no FIFO or directory at {}: its directory {} does not exist (or is not \
                         a directory)",
                        path.display(),
                        parent_of(path).display()
                    )
                }
            }
            Error::PermissionDenied { path } => {
                write!(f, "permission denied for {}", path.display())
            }
            Error::NotAFifo { path, found } => {
                write!(f, "{} is {found}, not a FIFO", path.display())
            }
            Error::NotADirectory { path, found } => {
                write!(f, "{} is {found}, not a directory", path.display())
            }
            Error::WrongOwner {
                path,
                expected,
                found,
            } => write!(
                f,
                "the FIFO {} is owned by uid {found}, not by us (uid {expected}); to accept another \
                 user's FIFO, set .owner_check(OwnerCheck::AnyUid)",
                path.display()
            ),
            Error::NotPrivate { path, mode, uid } => write!(
                f,
                "directory {} (owner uid {uid}, mode {mode:04o}) is not private: a private \
                 directory is ours with mode 0700",
                path.display()
            ),
            Error::Contended { path, attempts } => write!(
                f,
                "the FIFO {} was created and removed again by others {attempts} times in a row: \
                 open_or_create gave up",
                path.display()
            ),
            Error::OwnerAlive { path } => write!(
                f,
                "the FIFO {} has a live owner (a process still holds the handle that created it); \
                 nothing was removed",
                path.display()
            ),
            Error::NotOwner { path } => write!(
                f,
                "this handle does not own {} (it opened it, persisted it, or was inherited \
                 through fork), so it removes nothing; ipc_fifo::unlink removes a FIFO by path",
                path.display()
            ),
            Error::NotAFifoDescriptor { found } => {
                write!(f, "the descriptor is {found}, not a FIFO or pipe")
            }
            Error::WrongEnd { needed } => {
                write!(f, "the descriptor is not open for {needed}")
            }
            Error::NoReader => f.write_str("the FIFO has no reader"),
            Error::TimedOut => f.write_str("timed out"),
            Error::WouldBlock => f.write_str("the operation would block"),
            Error::MessageTooLarge { len, max } => {
                write!(
                    f,
                    "message of {len} bytes is larger than the maximum of {max}"
                )?;
                if *max == crate::RECORD_MAX {
                    write!(
                        f,
                        " for a record (PIPE_BUF = {} bytes per atomic write, less the \
                         {}-byte length prefix); send larger messages as frames from a \
                         single writer",
                        crate::PIPE_BUF,
                        crate::HEADER_LEN
                    )?;
                }
                Ok(())
            }
            Error::Truncated => f.write_str("the stream ended inside a message"),
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

/// Errors of calls that name no path (reads, writes, `poll`, `fcntl` on a descriptor).
impl From<Errno> for Error {
    fn from(e: Errno) -> Error {
        match e {
            Errno::NXIO | Errno::PIPE => Error::NoReader,
            Errno::AGAIN => Error::WouldBlock,
            Errno::TIMEDOUT => Error::TimedOut,
            e => Error::Io(e.into()),
        }
    }
}

/// Errors of reads and writes (`EAGAIN` is [`Error::WouldBlock`], `EPIPE` [`Error::NoReader`],
/// an unexpected end-of-file [`Error::Truncated`]); anything else is [`Error::Io`].
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(code) => Error::from(Errno::from_raw_os_error(code)),
            None => match e.kind() {
                io::ErrorKind::WouldBlock => Error::WouldBlock,
                io::ErrorKind::TimedOut => Error::TimedOut,
                io::ErrorKind::UnexpectedEof => Error::Truncated,
                _ => Error::Io(e),
            },
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::InvalidName { .. } | Error::InvalidMode { .. } => io::ErrorKind::InvalidInput,
            Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            Error::NotFound { .. } => io::ErrorKind::NotFound,
            Error::PermissionDenied { .. }
            | Error::WrongOwner { .. }
            | Error::NotPrivate { .. }
            | Error::NotOwner { .. } => io::ErrorKind::PermissionDenied,
            Error::NotAFifo { .. }
            | Error::NotADirectory { .. }
            | Error::NotAFifoDescriptor { .. }
            | Error::WrongEnd { .. } => io::ErrorKind::InvalidInput,
            Error::OwnerAlive { .. } | Error::Contended { .. } => io::ErrorKind::ResourceBusy,
            Error::NoReader => io::ErrorKind::BrokenPipe,
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            Error::MessageTooLarge { .. } => io::ErrorKind::InvalidInput,
            Error::Truncated => io::ErrorKind::UnexpectedEof,
            Error::Io(_) => io::ErrorKind::Other,
        };
        match e {
            Error::Io(inner) => inner,
            e => io::Error::new(kind, e),
        }
    }
}
