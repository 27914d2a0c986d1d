//! Creating a FIFO (the owner), removing it, and the checked open every handle goes through.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, FileKind, Result};

/// Whose FIFO an open accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Owner {
    /// Only a FIFO owned by our effective uid (the default): another user's FIFO at the path is
    /// [`Error::WrongOwner`].
    #[default]
    Me,
    /// A FIFO owned by anyone (the file's permissions still apply).
    Any,
}

/// Checks a path before any system call: not empty, no NUL byte.
pub(crate) fn check_path(path: &Path) -> Result<()> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(Error::InvalidName);
    }
    Ok(())
}

pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Checks that `st` is a FIFO (owned by us unless `owner` is `Any`).
pub(crate) fn check_stat(st: &Stat, owner: Owner) -> Result<()> {
    let found = FileKind::of(st);
    if found != FileKind::Fifo {
        return Err(Error::NotAFifo { found });
    }
    if owner == Owner::Me && st.st_uid != euid() {
        return Err(Error::WrongOwner {
            expected: euid(),
            found: st.st_uid,
        });
    }
    Ok(())
}

/// `lstat` that says what is at the path without following a symlink or opening anything.
fn lstat(path: &Path) -> Result<Stat> {
    Ok(rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Opens `path` with `flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY` after checking with `lstat`
/// that it is a FIFO (so that no device or regular file is ever opened by accident), then checks
/// the descriptor again with `fstat` (the authoritative check: the path may have changed).
pub(crate) fn open_checked(path: &Path, flags: OFlags, owner: Owner) -> Result<OwnedFd> {
    check_path(path)?;
    check_stat(&lstat(path)?, owner)?;
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = loop {
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => break fd,
            Err(Errno::INTR) => continue,
            Err(Errno::LOOP) => {
                return Err(Error::NotAFifo {
                    found: FileKind::Symlink,
                });
            }
            Err(e) => return Err(e.into()),
        }
    };
    check_stat(&rustix::fs::fstat(&fd)?, owner)?;
    Ok(fd)
}

/// Options for [`Fifo::create`]: the mode.
///
/// ```
/// # fn main() -> Result<(), ipc_fifo::Error> {
/// let dir = ipc_fifo::PrivateDir::new("ipcrs-doc-opts")?;
/// let fifo = ipc_fifo::Fifo::options().mode(0o620).create(dir.join("shared")?)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FifoOptions {
    mode: u32,
}

impl Default for FifoOptions {
    fn default() -> FifoOptions {
        FifoOptions::new()
    }
}

impl FifoOptions {
    /// Mode 0600.
    pub const fn new() -> FifoOptions {
        FifoOptions { mode: 0o600 }
    }

    /// The permission bits (`0o7777` at most; other bits are ignored). Applied exactly, whatever
    /// the umask.
    pub const fn mode(mut self, mode: u32) -> FifoOptions {
        self.mode = mode & 0o7777;
        self
    }

    /// Creates the FIFO at `path`; see [`Fifo::create`].
    ///
    /// # Errors
    /// As [`Fifo::create`].
    pub fn create(self, path: impl AsRef<Path>) -> Result<Fifo> {
        Fifo::create_with(path.as_ref(), self.mode)
    }
}

/// The owner of a FIFO it created: removes the path on drop.
///
/// Created exclusively (`mkfifo` fails if anything is at the path) with mode 0600 unless asked
/// otherwise, applied with `fchmod` so that the umask cannot change it. The owner records the
/// creating process: a forked child that drops an inherited owner removes nothing. It also
/// records the FIFO's device and inode, so it never removes a file (or another user's FIFO)
/// that replaced its FIFO.
///
/// The owner is only a name: open the ends with [`FifoReader`](crate::FifoReader) and
/// [`FifoWriter`](crate::FifoWriter), in this process or any other that knows the path.
#[derive(Debug)]
pub struct Fifo {
    path: PathBuf,
    pid: u32,
    dev: u64,
    ino: u64,
    keep: bool,
}

impl Fifo {
    /// `mkfifo(path, 0600)`—creates a FIFO exclusively and returns its owner.
    ///
    /// ```
    /// # fn main() -> Result<(), ipc_fifo::Error> {
    /// let dir = ipc_fifo::PrivateDir::new("ipcrs-doc-create")?;
    /// let path = dir.join("requests")?;
    /// let fifo = ipc_fifo::Fifo::create(&path)?;
    /// assert!(matches!(ipc_fifo::Fifo::create(&path), Err(ipc_fifo::Error::AlreadyExists)));
    /// drop(fifo);
    /// assert!(!path.exists());
    /// # Ok(()) }
    /// ```
    ///
    /// The mode is set on the inode that `mkfifo` made, named by an `O_PATH` descriptor checked
    /// with `fstat` (`chmod` of `/proc/self/fd/N`), which does not open the FIFO: no reader
    /// appears, not even for an instant. Without `/proc`, `create` opens the new FIFO for
    /// reading for an instant (non-blocking, checked with `fstat`) and uses `fchmod`; should
    /// the umask have removed our own read bit, it then uses `chmod` on the path, right after
    /// `lstat` confirmed it is still our FIFO (in a [`PrivateDir`](crate::PrivateDir) nobody
    /// else can swap it).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for an empty path or one with a NUL byte, [`Error::AlreadyExists`]
    /// if anything (even a dangling symlink) is at the path, [`Error::NotFound`] if the directory
    /// does not exist, [`Error::PermissionDenied`], or [`Error::Io`].
    ///
    /// # References
    ///  - [POSIX](https://pubs.opengroup.org/onlinepubs/9799919799/functions/mkfifo.html)
    ///  - [Linux](https://man7.org/linux/man-pages/man3/mkfifo.3.html)
    #[doc(alias = "mkfifo")]
    pub fn create(path: impl AsRef<Path>) -> Result<Fifo> {
        Fifo::create_with(path.as_ref(), 0o600)
    }

    /// Options (the mode) for creating a FIFO.
    pub const fn options() -> FifoOptions {
        FifoOptions::new()
    }

    fn create_with(path: &Path, mode: u32) -> Result<Fifo> {
        check_path(path)?;
        // The umask may only remove bits from this; the exact mode is set below.
        rustix::fs::mkfifoat(CWD, path, Mode::from_raw_mode(0o600))?;
        let pid = std::process::id();
        match apply_mode(path, mode) {
            Ok(st) => Ok(Fifo {
                path: path.to_owned(),
                pid,
                dev: st.st_dev,
                ino: st.st_ino,
                keep: false,
            }),
            Err(e) => {
                let _ = rustix::fs::unlink(path);
                Err(e)
            }
        }
    }

    /// The FIFO's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the FIFO after the owner is gone (the path is not removed on drop); returns the path.
    /// Remove it later with [`unlink`].
    pub fn persist(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }

    /// Removes the path now and reports what `unlink` says (drop ignores errors).
    ///
    /// # Errors
    /// [`Error::NotFound`] if someone else removed it, or what `unlink` fails with.
    pub fn remove(mut self) -> Result<()> {
        self.keep = true;
        remove_if_same(&self.path, self.dev, self.ino)
    }
}

fn remove_if_same(path: &Path, dev: u64, ino: u64) -> Result<()> {
    let st = lstat(path)?;
    // Inode numbers are reused (tmpfs does at once): the type and owner must match as well.
    if st.st_dev == dev && st.st_ino == ino && check_stat(&st, Owner::Me).is_ok() {
        rustix::fs::unlink(path)?;
    }
    Ok(())
}

impl Drop for Fifo {
    fn drop(&mut self) {
        if !self.keep && std::process::id() == self.pid {
            let _ = remove_if_same(&self.path, self.dev, self.ino);
        }
    }
}

/// Sets the exact mode on the FIFO just made at `path` and returns its `stat`.
///
/// Through an `O_PATH` descriptor (`chmod` of `/proc/self/fd/N`, as glibc does for
/// `fchmodat(AT_SYMLINK_NOFOLLOW)`): it names the inode that was checked with `fstat` without
/// opening the FIFO, so no reader appears even for an instant (a writer polling for one, or a
/// `fork` in another thread, could otherwise catch it), and it needs no permission on the
/// FIFO. Without `/proc`, the FIFO is opened for reading for an instant and `fchmod`ed.
fn apply_mode(path: &Path, mode: u32) -> Result<Stat> {
    let mode = Mode::from_raw_mode(mode as rustix::fs::RawMode);
    let handle = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&handle)?;
    check_stat(&st, Owner::Me)?;
    let link = format!("/proc/self/fd/{}", handle.as_raw_fd());
    match rustix::fs::chmod(link.as_str(), mode) {
        Ok(()) => return Ok(st),
        Err(Errno::NOENT) => {} // no /proc
        Err(e) => return Err(e.into()),
    }
    // O_RDONLY|O_NONBLOCK opens a FIFO at once, with or without a writer.
    match open_checked(path, OFlags::RDONLY | OFlags::NONBLOCK, Owner::Me) {
        Ok(fd) => {
            rustix::fs::fchmod(&fd, mode)?;
            Ok(rustix::fs::fstat(fd.as_fd())?)
        }
        // The umask removed our own read bit (and we are not root): the path is all we have.
        // `lstat` confirms it is still our FIFO right before `chmod`.
        Err(Error::PermissionDenied) => {
            let st = lstat(path)?;
            check_stat(&st, Owner::Me)?;
            rustix::fs::chmod(path, mode)?;
            Ok(st)
        }
        Err(e) => Err(e),
    }
}

/// `unlink(path)` for a FIFO: removes a stale FIFO (ours unless `owner` is [`Owner::Any`]).
/// Refuses anything that is not a FIFO, so it can never delete a file by mistake.
///
/// # Errors
/// [`Error::InvalidName`], [`Error::NotFound`], [`Error::NotAFifo`], [`Error::WrongOwner`], or
/// what `unlink` fails with.
pub fn unlink(path: impl AsRef<Path>, owner: Owner) -> Result<()> {
    let path = path.as_ref();
    check_path(path)?;
    check_stat(&lstat(path)?, owner)?;
    Ok(rustix::fs::unlink(path)?)
}
