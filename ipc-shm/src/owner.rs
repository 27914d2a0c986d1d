//! The lifetime model's small words ([`Opened`], [`OnDrop`], [`OwnerCheck`]) and the two
//! mechanisms behind them: identity (device and inode, through a descriptor that pins the inode)
//! and liveness (the owner's open-file-description lock at [`OWNER_LOCK`]).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::sys;

/// The byte whose open-file-description lock (`F_OFD_SETLK`, a read lock) an owner holds on the
/// file that stands for its object, for as long as its descriptor is open: a POSIX segment
/// itself, or a System V segment's companion file `/dev/shm/ipc-sysv-shm-{id}.owner`.
///
/// A prober opens the file on a descriptor of its own and asks `F_OFD_GETLK` for a write lock
/// on this byte: a conflicting lock means a live owner. The kernel drops the lock however the
/// owner's process ends (exit, `SIGKILL`; a zombie holds none), so "alive" needs no pid.
pub const OWNER_LOCK: u64 = sys::OWNER_LOCK_OFFSET;

/// Whether `open_or_create` created the object or opened an existing one.
///
/// ```
/// # let name = format!("/ipcrs-doc-opened-{}", std::process::id());
/// use ipc_shm::{Opened, Shm};
/// let (a, how) = Shm::open_or_create(&name, 4096)?;
/// assert_eq!(how, Opened::Created); // only `Created` initialises
/// let (b, how) = Shm::open_or_create(&name, 4096)?;
/// assert_eq!(how, Opened::Existing);
/// assert!(a.is_owner() && !b.is_owner());
/// # Ok::<(), ipc_shm::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opened {
    /// This call created it: the handle is the owner.
    Created,
    /// It existed: the handle is an opener.
    Existing,
}

/// What the owner does with the object when it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnDrop {
    /// Remove it (the default): unlink the name, or `IPC_RMID` a System V segment.
    #[default]
    Remove,
    /// Keep it: it outlives the owner, ownerless, until `unlink`/`sysv::remove`, or until
    /// `remove_stale` finds its owner gone.
    Keep,
}

/// Whose objects `open` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OwnerCheck {
    /// Only objects owned by our effective uid (the default): another user's object is
    /// [`Error::WrongOwner`](crate::Error::WrongOwner).
    #[default]
    SameUid,
    /// Objects of any owner (the kernel's permission checks still apply).
    AnyUid,
}

impl OwnerCheck {
    /// `Err((expected, found))` if `uid` is not acceptable.
    pub(crate) fn check(self, uid: u32) -> Result<(), (u32, u32)> {
        let me = rustix::process::geteuid().as_raw();
        match self {
            OwnerCheck::SameUid if uid != me => Err((me, uid)),
            _ => Ok(()),
        }
    }
}

/// A file's identity: device and inode. While a descriptor of the file is open, its inode
/// number cannot be reused, so equal identities mean the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file `fd` refers to.
    pub(crate) fn of(fd: BorrowedFd<'_>) -> Result<FileId, Errno> {
        let st = rustix::fs::fstat(fd)?;
        Ok(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// The identity of what `path` names now (not following a symlink), `None` if nothing.
    pub(crate) fn at(path: &str) -> Result<Option<FileId>, Errno> {
        match rustix::fs::statat(rustix::fs::CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What [`unlink_if_ours`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unlinked {
    /// The path named our file, and is removed.
    Ours,
    /// Nothing is at the path any more.
    Gone,
    /// The path names another file now (unlinked and re-created by someone else): left alone.
    Replaced,
}

/// Unlinks `path` only if it still names the file `id` (identity checked just before; the
/// window between the check and the unlink is one system call, and nothing in this crate
/// re-creates a name inside it).
pub(crate) fn unlink_if_ours(path: &str, id: FileId) -> Result<Unlinked, Errno> {
    match FileId::at(path)? {
        None => Ok(Unlinked::Gone),
        Some(now) if now != id => Ok(Unlinked::Replaced),
        Some(_) => match rustix::fs::unlink(path) {
            Ok(()) => Ok(Unlinked::Ours),
            Err(Errno::NOENT) => Ok(Unlinked::Gone),
            Err(e) => Err(e),
        },
    }
}

/// Opens `path` for probing its owner lock: read-only, not following a symlink, without
/// blocking on a FIFO planted there, close-on-exec.
pub(crate) fn open_probe(path: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
}

/// Whether a live owner holds the lock of the file `fd` refers to.
pub(crate) fn owner_alive(fd: &impl AsFd) -> Result<bool, Errno> {
    sys::owner_lock_held(fd.as_fd()).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
}

/// Takes the owner lock on `fd` (the owner's descriptor).
pub(crate) fn hold(fd: &impl AsFd) -> Result<(), Errno> {
    sys::hold_owner_lock(fd.as_fd()).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
}

/// How many rounds `open_or_create` tries before [`Error::Contended`](crate::Error::Contended).
pub(crate) const OPEN_OR_CREATE_ATTEMPTS: u32 = 8;
