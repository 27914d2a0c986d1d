//! The lifetime model's small types (the same shapes in every crate of the workspace) and the
//! owner lock that tells a live owner from a dead one.

use std::io;
use std::os::fd::AsFd;

use nix::fcntl::{FcntlArg, fcntl};

use crate::sys;

/// Which queues `open` accepts, by owner: [`MessageQueueOptions::owner_check`] and
/// [`SysvQueueOptions::owner_check`].
///
/// [`MessageQueueOptions::owner_check`]: crate::MessageQueueOptions::owner_check
/// [`SysvQueueOptions::owner_check`]: crate::SysvQueueOptions::owner_check
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OwnerCheck {
    /// Only a queue owned by the caller's effective uid (`fstat`'s `st_uid` for POSIX queues,
    /// `msg_perm.uid` for System V); any other is [`Error::WrongOwner`](crate::Error::WrongOwner).
    /// The default: a queue planted by another user under the expected name is refused.
    #[default]
    SameUid,
    /// Any queue the permissions let the caller open (a queue shared between users).
    AnyUid,
}

/// What dropping the owner does with its queue: [`MessageQueueOptions::on_drop`] and
/// [`SysvQueueOptions::on_drop`].
///
/// [`MessageQueueOptions::on_drop`]: crate::MessageQueueOptions::on_drop
/// [`SysvQueueOptions::on_drop`]: crate::SysvQueueOptions::on_drop
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OnDrop {
    /// Remove the queue (and its messages) when the owner is dropped in the process that created
    /// it, if the name still refers to that queue. The default.
    #[default]
    Remove,
    /// Leave the queue and its messages for processes that come later (producers and consumers
    /// decoupled in time). While the owner lives, `remove_stale` refuses; after it is gone
    /// (dropped, exited, killed), `remove_stale` removes the queue.
    Keep,
}

/// What `open_or_create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opened {
    /// It made a new queue: this handle is its owner (initialise it).
    Created,
    /// It opened a queue that existed: this handle is an opener.
    Existing,
}

/// The byte of the object's file that its owner locks (`F_OFD_SETLK`) for as long as it lives:
/// one byte near the end of the offset range, where no data ever is. The same in every crate
/// of the workspace (and in `cargo xtask clean`).
pub const OWNER_LOCK: u64 = 0x7fff_ffff_ffff_fffe;

// `off_t` must hold OWNER_LOCK: 64-bit targets (and 32-bit ones built with 64-bit offsets).
const _: () = assert!(size_of::<libc::off_t>() == 8, "ipc-mq needs a 64-bit off_t");

/// The kind of owner lock a descriptor can take: a read lock needs a readable descriptor, a
/// write lock a writable one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    Read,
    Write,
}

fn flock(l_type: libc::c_int) -> libc::flock {
    sys::ofd_flock(l_type, OWNER_LOCK as libc::off_t)
}

/// Takes the owner lock on `fd`'s open file description; it lasts until the description's last
/// descriptor is closed (or [`unlock`]).
pub(crate) fn lock(fd: impl AsFd, kind: LockKind) -> io::Result<()> {
    let t = match kind {
        LockKind::Read => libc::F_RDLCK,
        LockKind::Write => libc::F_WRLCK,
    };
    fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&flock(t)))
        .map(drop)
        .map_err(io::Error::from)
}

/// Whether another open file description holds the owner lock of the file `fd` refers to:
/// asks `F_OFD_GETLK` for a write lock, which any owner lock conflicts with.
pub(crate) fn held(fd: impl AsFd) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK);
    fcntl(fd.as_fd(), FcntlArg::F_OFD_GETLK(&mut fl)).map_err(io::Error::from)?;
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// How long [`held_long`] keeps looking at a lock it found held.
const GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// Whether the owner lock of `fd`'s file stays held for [`GRACE`]: a lock can outlive its owner
/// by a moment — the kernel releases a dead process's locks shortly after its exit is visible
/// (measured: up to a few hundred microseconds, and up to a clock tick when the release is
/// deferred), and a child being spawned by the owner's process shares its descriptors until it
/// execs. A lock still held after that is a live owner's.
pub(crate) fn held_long(fd: impl AsFd) -> io::Result<bool> {
    let fd = fd.as_fd();
    let until = std::time::Instant::now() + GRACE;
    while held(fd)? {
        if std::time::Instant::now() >= until {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(false)
}

/// `(st_dev, st_ino)` of what `fd` refers to.
pub(crate) fn identity(fd: impl AsFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd).map_err(io::Error::from)?;
    Ok((st.st_dev, st.st_ino))
}

/// How many times `open_or_create` (and `create`'s check of its new queue) go around before
/// giving up with [`Error::Contended`](crate::Error::Contended).
pub(crate) const ATTEMPTS: u32 = 8;
