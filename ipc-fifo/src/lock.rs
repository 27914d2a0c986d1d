//! Liveness of an owner: open-file-description locks (`F_OFD_SETLK`), which the kernel drops
//! however the process holding them ends.
//!
//! An owner holds a *read* lock on one byte of a file that stands for its object, for as long
//! as its descriptor is open (in any process: a forked child that keeps the inherited handle
//! keeps it). A prober opens that file on a descriptor of its own and asks `F_OFD_GETLK` for a
//! *write* lock on the byte: a conflicting lock means a live owner. A zombie, or a process
//! killed with `SIGKILL`, holds no lock.
//!
//! For a FIFO the file is its directory, at offset = the FIFO's inode number: locking the FIFO
//! itself would need a read or write descriptor, which would make the owner a reader or a
//! writer. For a [`PrivateDir`](crate::PrivateDir) made by `new` it is the directory itself,
//! at [`OWNER_LOCK`]. A directory can only be opened for reading, so only read locks exist on
//! it and owners never conflict with each other.

use std::io;
use std::os::fd::BorrowedFd;

use nix::fcntl::{FcntlArg, fcntl};

/// The byte of an object's file on which its owner holds its lock: `0x7fff_ffff_ffff_fffe`,
/// the same in every crate of the workspace (for a [`PrivateDir`](crate::PrivateDir) made by
/// [`PrivateDir::new`](crate::PrivateDir::new): of the directory itself).
///
/// A tool that wants to know whether such a directory's owner is alive opens the directory
/// (`O_RDONLY|O_DIRECTORY`) and asks `fcntl(F_OFD_GETLK)` for a write lock on this one byte:
/// the answer is a read lock while the owner lives, `F_UNLCK` once it is gone.
pub const OWNER_LOCK: u64 = 0x7fff_ffff_ffff_fffe;

/// The byte of the directory at which the owner of the FIFO with inode `ino` holds its lock:
/// the inode number itself, folded below [`OWNER_LOCK`] on file systems with inode numbers
/// that large (lock offsets are signed 64-bit, and `OWNER_LOCK` belongs to the directory's
/// own owner).
pub(crate) fn fifo_offset(ino: u64) -> u64 {
    if ino < OWNER_LOCK {
        ino
    } else {
        ino % OWNER_LOCK
    }
}

fn one_byte(kind: libc::c_int, offset: u64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        // `offset` < OWNER_LOCK < i64::MAX: the cast is exact.
        l_start: offset as libc::off_t,
        l_len: 1,
        l_pid: 0,
    }
}

fn retry(mut f: impl FnMut() -> nix::Result<libc::c_int>) -> io::Result<()> {
    loop {
        match f() {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Takes a read lock on byte `offset` of the file `fd` refers to, owned by `fd`'s open file
/// description (so by every copy of `fd`, including a forked child's).
pub(crate) fn hold(fd: BorrowedFd<'_>, offset: u64) -> io::Result<()> {
    let lock = one_byte(libc::F_RDLCK, offset);
    retry(|| fcntl(fd, FcntlArg::F_OFD_SETLK(&lock)))
}

/// Whether an open file description other than `fd`'s holds a lock on byte `offset` of the
/// file: `fd` must be a descriptor of the prober's own.
pub(crate) fn held(fd: BorrowedFd<'_>, offset: u64) -> io::Result<bool> {
    let mut lock = one_byte(libc::F_WRLCK, offset);
    retry(|| fcntl(fd, FcntlArg::F_OFD_GETLK(&mut lock)))?;
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}
