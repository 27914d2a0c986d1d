//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

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
/// Converts into [`io::Error`] with the matching [`io::ErrorKind`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The path is empty, contains a NUL byte, or (for [`PrivateDir::join`](crate::PrivateDir::join))
    /// the name is not a single path component. Checked before any system call.
    InvalidName,
    /// `create` found something already at the path (`EEXIST`).
    AlreadyExists,
    /// Nothing is at the path (`ENOENT`).
    NotFound,
    /// The kernel refused access (`EACCES`/`EPERM`).
    PermissionDenied,
    /// The path names something that is not a FIFO (a symbolic link is never followed).
    /// Nothing was read from or written to it.
    NotAFifo {
        /// What is there instead.
        found: FileKind,
    },
    /// A private directory's path names something that is not a directory (a symbolic link is
    /// never followed).
    NotADirectory {
        /// What is there instead.
        found: FileKind,
    },
    /// The FIFO (or directory) belongs to another user; refused unless the caller opted out
    /// with [`Owner::Any`](crate::Owner::Any).
    WrongOwner {
        /// Our effective uid.
        expected: u32,
        /// The uid that owns the file.
        found: u32,
    },
    /// A private directory exists but is not private: its mode grants access to others.
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName => f.write_str("invalid path or name"),
            Error::AlreadyExists => f.write_str("something already exists at the path"),
            Error::NotFound => f.write_str("no FIFO at the path"),
            Error::PermissionDenied => f.write_str("permission denied"),
            Error::NotAFifo { found } => write!(f, "the path is {found}, not a FIFO"),
            Error::NotADirectory { found } => write!(f, "the path is {found}, not a directory"),
            Error::WrongOwner { expected, found } => {
                write!(f, "owned by uid {found}, not by us (uid {expected})")
            }
            Error::NotPrivate { path, mode } => write!(
                f,
                "directory {} has mode {mode:04o}; a private directory must be 0700",
                path.display()
            ),
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

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Error {
        use rustix::io::Errno;
        match e {
            Errno::EXIST => Error::AlreadyExists,
            Errno::NOENT => Error::NotFound,
            Errno::ACCESS | Errno::PERM => Error::PermissionDenied,
            Errno::NXIO | Errno::PIPE => Error::NoReader,
            Errno::AGAIN => Error::WouldBlock,
            Errno::TIMEDOUT => Error::TimedOut,
            Errno::ISDIR => Error::NotAFifo {
                found: FileKind::Directory,
            },
            e => Error::Io(e.into()),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(code) => Error::from(rustix::io::Errno::from_raw_os_error(code)),
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
            Error::InvalidName => io::ErrorKind::InvalidInput,
            Error::AlreadyExists => io::ErrorKind::AlreadyExists,
            Error::NotFound => io::ErrorKind::NotFound,
            Error::PermissionDenied | Error::WrongOwner { .. } | Error::NotPrivate { .. } => {
                io::ErrorKind::PermissionDenied
            }
            Error::NotAFifo { .. } | Error::NotADirectory { .. } => io::ErrorKind::InvalidInput,
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
