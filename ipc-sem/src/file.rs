//! Files in `/dev/shm` that stand for named objects: made whole before they get their name,
//! opened with checks, removed only if the name still refers to them, and probed for a live
//! owner (the lifetime model of ARCHITECTURE.md).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::lifetime::OwnerCheck;
use crate::sys;

/// The byte an owner holds a read lock on, for as long as its descriptor is open
/// (`F_OFD_SETLK`); a prober asks `F_OFD_GETLK` for a write lock there.
pub(crate) const OWNER_LOCK: i64 = crate::lifetime::OWNER_LOCK as i64;

/// Where POSIX named semaphores and shared-memory objects live on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// Device and inode of a file: which object a name refers to. The owner's descriptor (or a
/// mapping) pins the inode, so the number cannot be reused while it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ident {
    dev: u64,
    ino: u64,
}

impl Ident {
    /// The file an `lstat`/`fstat` result describes.
    pub(crate) fn from_stat(st: &rustix::fs::Stat) -> Ident {
        Ident {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }

    /// The file behind `fd`.
    pub(crate) fn of(fd: BorrowedFd<'_>) -> io::Result<Ident> {
        Ok(Ident::from_stat(&rustix::fs::fstat(fd)?))
    }
}

/// What [`unlink_if`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unlinked {
    /// The name referred to the object and is gone now.
    Removed,
    /// Nothing is at the name any more.
    Gone,
    /// The name refers to another object, which was left alone.
    Replaced,
}

/// Unlinks `path` only if it still refers to `ident` (`lstat`, compare, `unlink`).
pub(crate) fn unlink_if(path: &CStr, ident: Ident) -> io::Result<Unlinked> {
    let st = match rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(Unlinked::Gone),
        Err(e) => return Err(e.into()),
    };
    if Ident::from_stat(&st) != ident {
        return Ok(Unlinked::Replaced);
    }
    match rustix::fs::unlinkat(CWD, path, AtFlags::empty()) {
        Ok(()) => Ok(Unlinked::Removed),
        Err(Errno::NOENT) => Ok(Unlinked::Gone),
        Err(e) => Err(e.into()),
    }
}

/// Whether a live process holds the owner lock of the file behind `fd`.
pub(crate) fn owner_alive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    sys::ofd_locked(fd, OWNER_LOCK)
}

/// Takes the owner lock on `fd` (held until its last descriptor is closed).
pub(crate) fn take_owner_lock(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::ofd_read_lock(fd, OWNER_LOCK)
}

enum Made<M> {
    Done(OwnedFd, M, Ident),
    /// `O_TMPFILE` is not supported, or a tmpfile cannot be linked here (no
    /// `CAP_DAC_READ_SEARCH` on kernels before 6.10, and no `/proc`): use a temporary name.
    Fallback,
}

/// Gives a new file its final mode and size, runs `init` on it, and takes the owner lock: all
/// before the file has its name, so nobody ever sees it half-made or ownerless.
fn prepare<M>(
    fd: BorrowedFd<'_>,
    mode: u32,
    len: u64,
    init: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<M>,
) -> io::Result<M> {
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    rustix::fs::ftruncate(fd, len)?;
    let m = init(fd)?;
    take_owner_lock(fd)?;
    Ok(m)
}

/// Creates `path` (a file in `/dev/shm`) exclusively as a complete object: mode `mode`
/// (exact: `fchmod`), size `len`, contents written by `init`, owner lock held; it appears
/// under its name only then, by `linkat` of an `O_TMPFILE` (or of a temporary name, which is
/// then removed). `EEXIST` if the name is taken.
pub(crate) fn create<M>(
    path: &CStr,
    mode: u32,
    len: u64,
    init: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<M>,
) -> io::Result<(OwnedFd, M, Ident)> {
    match create_tmpfile(path, mode, len, init)? {
        Made::Done(fd, m, id) => Ok((fd, m, id)),
        Made::Fallback => create_temp_name(path, mode, len, init),
    }
}

fn create_tmpfile<M>(
    path: &CStr,
    mode: u32,
    len: u64,
    init: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<M>,
) -> io::Result<Made<M>> {
    let fd = match rustix::fs::open(
        SHM_DIR,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    ) {
        Ok(fd) => fd,
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => return Ok(Made::Fallback),
        Err(e) => return Err(e.into()),
    };
    let m = prepare(fd.as_fd(), mode, len, init)?;
    let linked = match rustix::fs::linkat(&fd, c"", CWD, path, AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT) => {
            // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH before Linux 6.10; /proc/self/fd works
            // for anyone.
            let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
            match rustix::fs::linkat(CWD, proc.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW) {
                Err(Errno::NOENT) => return Ok(Made::Fallback),
                r => r,
            }
        }
        r => r,
    };
    linked?;
    let id = Ident::of(fd.as_fd())?;
    Ok(Made::Done(fd, m, id))
}

/// The fallback, as glibc's `sem_open` does it: a new file under a temporary name, linked to
/// the final name, then the temporary name removed. A crash between the two leaves a
/// `/dev/shm/.ipc-sem-*.tmp` file behind.
fn create_temp_name<M>(
    path: &CStr,
    mode: u32,
    len: u64,
    init: &mut dyn FnMut(BorrowedFd<'_>) -> io::Result<M>,
) -> io::Result<(OwnedFd, M, Ident)> {
    static N: AtomicU32 = AtomicU32::new(0);
    for _ in 0..16 {
        let nanos = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic).tv_nsec;
        let tmp = CString::new(format!(
            "{SHM_DIR}/.ipc-sem-{}-{}-{nanos}.tmp",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let fd = match rustix::fs::open(
            tmp.as_c_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        ) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        };
        let id = Ident::of(fd.as_fd())?;
        let r = prepare(fd.as_fd(), mode, len, init).and_then(|m| {
            rustix::fs::linkat(CWD, tmp.as_c_str(), CWD, path, AtFlags::empty())?;
            Ok(m)
        });
        let _ = unlink_if(&tmp, id);
        return r.map(|m| (fd, m, id));
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

/// Opens the existing file `path` for the object `name` and checks it: a regular file (never
/// through a symbolic link), owned by us unless `check` says otherwise, exactly `len` bytes.
/// `O_NONBLOCK`, so a FIFO planted under the name cannot make the open wait.
pub(crate) fn open_checked(
    path: &CStr,
    name: &str,
    write: bool,
    check: OwnerCheck,
    len: u64,
) -> Result<(OwnedFd, Ident)> {
    let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
    let fd = open_nofollow(path, name, access)?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::InvalidObject {
            name: name.to_owned(),
            reason: "not a regular file",
        });
    }
    check
        .check(st.st_uid)
        .map_err(|(expected, found)| Error::WrongOwner {
            name: name.to_owned(),
            expected,
            found,
        })?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size != len {
        return Err(Error::WrongSize {
            name: name.to_owned(),
            expected: len,
            found: size,
        });
    }
    Ok((fd, Ident::from_stat(&st)))
}

fn open_nofollow(path: &CStr, name: &str, access: OFlags) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        access | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP => Error::InvalidObject {
            name: name.to_owned(),
            reason: "a symbolic link (refused: O_NOFOLLOW)",
        },
        Errno::ISDIR | Errno::NXIO => Error::InvalidObject {
            name: name.to_owned(),
            reason: "not a regular file",
        },
        e => Error::named(e.into(), || name.to_owned()),
    })
}

/// `remove_stale` for the file `path` of object `name`: removes it only if no live process
/// holds its owner lock, and only the file that was probed.
///
/// # Errors
/// [`Error::NotFound`], [`Error::OwnerAlive`], [`Error::InvalidObject`] for a symbolic link
/// or a non-regular file (left alone), [`Error::PermissionDenied`], [`Error::Contended`] if
/// the name was re-created three times between probe and unlink.
pub(crate) fn remove_stale(path: &CStr, name: &str) -> Result<()> {
    const ATTEMPTS: u32 = 3;
    for _ in 0..ATTEMPTS {
        let fd = open_nofollow(path, name, OFlags::RDONLY)?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::InvalidObject {
                name: name.to_owned(),
                reason: "not a regular file",
            });
        }
        if owner_alive(fd.as_fd())? {
            return Err(Error::OwnerAlive {
                name: name.to_owned(),
            });
        }
        match unlink_if(path, Ident::from_stat(&st))
            .map_err(|e| Error::named(e, || name.to_owned()))?
        {
            Unlinked::Removed => return Ok(()),
            Unlinked::Gone => {
                return Err(Error::NotFound {
                    name: name.to_owned(),
                });
            }
            Unlinked::Replaced => continue,
        }
    }
    Err(Error::Contended {
        name: name.to_owned(),
        attempts: ATTEMPTS,
    })
}
