//! Creating a FIFO (the owner), opening one by name, removing it, and the checked open every
//! end goes through.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, FileKind, Result};
use crate::lock;
use crate::path::{Named, named};

/// Whose FIFO an open accepts (`.owner_check(..)` on [`FifoOptions`],
/// [`ReaderOptions`](crate::ReaderOptions) and [`WriterOptions`](crate::WriterOptions)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OwnerCheck {
    /// Only a FIFO owned by our effective uid (the default): another user's FIFO at the path is
    /// [`Error::WrongOwner`]. Someone who can write to the directory could otherwise make us
    /// talk to a FIFO of theirs.
    #[default]
    SameUid,
    /// A FIFO owned by anyone (the file's permissions still apply).
    AnyUid,
}

/// What the owner does with the FIFO when it is dropped (`.on_drop(..)` on [`FifoOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnDrop {
    /// Remove the path (the default), if it still names the FIFO this owner created.
    #[default]
    Remove,
    /// Leave the FIFO in place. Once the owner is dropped the FIFO is ownerless, and
    /// [`remove_stale`] removes it.
    Keep,
}

/// What [`Fifo::open_or_create`] (or [`PrivateDir::open_or_create`](crate::PrivateDir::open_or_create))
/// did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opened {
    /// It made a new object: the handle is its owner.
    Created,
    /// The object was there already (and passed the checks): the handle is an opener.
    Existing,
}

pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Checks that `st` (of `path`) is a FIFO, owned by us unless `check` is `AnyUid`.
pub(crate) fn check_stat(st: &Stat, path: &Path, check: OwnerCheck) -> Result<()> {
    let found = FileKind::of(st);
    if found != FileKind::Fifo {
        return Err(Error::NotAFifo {
            path: path.to_owned(),
            found,
        });
    }
    if check == OwnerCheck::SameUid && st.st_uid != euid() {
        return Err(Error::WrongOwner {
            path: path.to_owned(),
            expected: euid(),
            found: st.st_uid,
        });
    }
    Ok(())
}

/// `lstat` that says what is at the path without following a symlink or opening anything.
fn lstat(path: &Path) -> Result<Stat> {
    rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW).map_err(Error::wrap(path))
}

/// Opens `path` with `flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY` after checking with `lstat`
/// that it is a FIFO (so that no device or regular file is ever opened by accident), then checks
/// the descriptor again with `fstat` (the authoritative check: the path may have changed).
pub(crate) fn open_checked(path: &Path, flags: OFlags, check: OwnerCheck) -> Result<OwnedFd> {
    named(path)?;
    check_stat(&lstat(path)?, path, check)?;
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = loop {
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => break fd,
            Err(Errno::INTR) => continue,
            Err(Errno::LOOP) => {
                return Err(Error::NotAFifo {
                    path: path.to_owned(),
                    found: FileKind::Symlink,
                });
            }
            Err(e) => return Err(Error::at(path, e)),
        }
    };
    check_stat(&rustix::fs::fstat(&fd)?, path, check)?;
    Ok(fd)
}

/// Opens the directory of `named` for reading: the descriptor every name operation goes
/// through, and the file an owner's liveness lock is on.
fn open_dir(named: &Named<'_>) -> Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    loop {
        return match rustix::fs::open(named.dir, flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::INTR) => continue,
            Err(Errno::NOENT | Errno::NOTDIR) => Err(Error::NotFound {
                path: named.path.to_owned(),
                dir_exists: false,
            }),
            Err(e) => Err(Error::at(named.dir, e)),
        };
    }
}

/// `fstatat(dir, name)` without following a symlink.
fn stat_in(dir: &OwnedFd, name: &std::ffi::OsStr) -> rustix::io::Result<Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// Removes `name` from `dir` if it is still the inode `(dev, ino)`: the identity check every
/// removal by an owner makes. `Ok(false)` if the name is gone or names something else.
fn unlink_if_same(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    dev: u64,
    ino: u64,
) -> rustix::io::Result<bool> {
    let st = stat_in(dir, name)?;
    if (st.st_dev, st.st_ino) != (dev, ino) {
        return Ok(false);
    }
    rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    Ok(true)
}

/// The error when the FIFO `create` just made was swapped for something else before it could
/// be set up (only possible where others can write to the directory).
fn replaced(path: &Path) -> Error {
    Error::Io(io::Error::other(format!(
        "the FIFO just made for {} was replaced by someone else before it was set up; \
         nothing was removed",
        path.display()
    )))
}

/// Options for [`Fifo::create`], [`Fifo::open`] and [`Fifo::open_or_create`]: the mode, what to
/// do on drop, whose FIFO to accept, and whether to take over a stale FIFO.
///
/// ```
/// # fn main() -> Result<(), ipc_fifo::Error> {
/// use ipc_fifo::{Fifo, OnDrop, OwnerCheck};
/// let dir = ipc_fifo::PrivateDir::new("ipcrs-doc-opts")?;
/// let fifo = Fifo::options().mode(0o620).on_drop(OnDrop::Remove).create(dir.join("shared")?)?;
/// let opener = Fifo::options().owner_check(OwnerCheck::AnyUid).open(fifo.path())?;
/// assert!(fifo.is_owner() && !opener.is_owner());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FifoOptions {
    mode: u32,
    owner_check: OwnerCheck,
    on_drop: OnDrop,
    replace_stale: bool,
}

impl Default for FifoOptions {
    fn default() -> FifoOptions {
        FifoOptions::new()
    }
}

static TEMP: AtomicU32 = AtomicU32::new(0);

impl FifoOptions {
    /// Mode 0600, [`OwnerCheck::SameUid`], [`OnDrop::Remove`], no stale take-over.
    pub const fn new() -> FifoOptions {
        FifoOptions {
            mode: 0o600,
            owner_check: OwnerCheck::SameUid,
            on_drop: OnDrop::Remove,
            replace_stale: false,
        }
    }

    /// The permission bits of a created FIFO (default 0o600), applied exactly whatever the
    /// umask. Bits outside `0o777` make `create` fail with [`Error::InvalidMode`] before any
    /// system call. An existing FIFO's mode is never changed.
    pub const fn mode(mut self, mode: u32) -> FifoOptions {
        self.mode = mode;
        self
    }

    /// Whose FIFO [`open`](FifoOptions::open), [`open_or_create`](FifoOptions::open_or_create)
    /// and [`replace_stale`](FifoOptions::replace_stale) accept (default: ours only).
    pub const fn owner_check(mut self, check: OwnerCheck) -> FifoOptions {
        self.owner_check = check;
        self
    }

    /// What the owner does on drop (default: remove the FIFO). With [`OnDrop::Keep`] the owner
    /// still holds its liveness lock while it lives ([`remove_stale`] says
    /// [`Error::OwnerAlive`]) and leaves an ownerless FIFO when dropped.
    pub const fn on_drop(mut self, on_drop: OnDrop) -> FifoOptions {
        self.on_drop = on_drop;
        self
    }

    /// Take over a stale FIFO: `create` first removes a FIFO at the path whose owner is dead
    /// (as [`remove_stale`] does), then creates. If its owner lives, `create` fails with
    /// [`Error::OwnerAlive`] and [`open_or_create`](FifoOptions::open_or_create) opens it.
    ///
    /// This is the call for a server restarted after a crash: its old FIFO (and, with
    /// [`PrivateDir::open_or_create`](crate::PrivateDir::open_or_create), its directory) is
    /// still there, and no process owns it any more.
    ///
    /// ```
    /// # fn main() -> Result<(), ipc_fifo::Error> {
    /// use ipc_fifo::{Fifo, OnDrop, Opened, PrivateDir};
    /// # let base = PrivateDir::new("ipcrs-doc-stale")?;
    /// let place = base.join("myapp")?; // e.g. PrivateDir::base().join("myapp")
    /// {
    ///     // A first run made its place and FIFO, then "crashed" (here: kept them and left).
    ///     let (dir, _) = PrivateDir::open_or_create(&place)?;
    ///     Fifo::options().on_drop(OnDrop::Keep).create(dir.join("server")?)?;
    /// }
    /// // The restarted server: the same two calls, taking over what is stale.
    /// let (dir, opened) = PrivateDir::open_or_create(&place)?;
    /// assert_eq!(opened, Opened::Existing);
    /// let fifo = Fifo::options().replace_stale().create(dir.join("server")?)?;
    /// assert!(fifo.is_owner());
    /// # Ok(()) }
    /// ```
    pub const fn replace_stale(mut self) -> FifoOptions {
        self.replace_stale = true;
        self
    }

    /// Creates the FIFO at `path`, exclusively; see [`Fifo::create`].
    ///
    /// # Errors
    /// As [`Fifo::create`]; with [`replace_stale`](FifoOptions::replace_stale) also
    /// [`Error::OwnerAlive`], [`Error::WrongOwner`] and [`Error::NotAFifo`] for what is at the
    /// path.
    pub fn create(self, path: impl AsRef<Path>) -> Result<Fifo> {
        if self.mode & !0o777 != 0 {
            return Err(Error::InvalidMode { mode: self.mode });
        }
        let named = named(path.as_ref())?;
        let dir = open_dir(&named)?;
        if self.replace_stale {
            match remove_stale_in(&dir, &named, self.owner_check) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        create_in(dir, &named, self)
    }

    /// Checks that `path` is a FIFO (ours unless [`OwnerCheck::AnyUid`]); see [`Fifo::open`].
    ///
    /// # Errors
    /// As [`Fifo::open`].
    pub fn open(self, path: impl AsRef<Path>) -> Result<Fifo> {
        let named = named(path.as_ref())?;
        let st = lstat(named.path)?;
        check_stat(&st, named.path, self.owner_check)?;
        Ok(Fifo {
            path: named.path.to_owned(),
            dev: st.st_dev,
            ino: st.st_ino,
            owner: None,
        })
    }

    /// Creates the FIFO, or opens the one already there; see [`Fifo::open_or_create`].
    ///
    /// # Errors
    /// As [`FifoOptions::create`] and [`FifoOptions::open`] (never [`Error::AlreadyExists`] or
    /// [`Error::OwnerAlive`]); [`Error::Contended`] if the path kept being created and removed
    /// by others while it tried.
    pub fn open_or_create(self, path: impl AsRef<Path>) -> Result<(Fifo, Opened)> {
        let path = path.as_ref();
        for _ in 0..OPEN_OR_CREATE_TRIES {
            match self.create(path) {
                Ok(f) => return Ok((f, Opened::Created)),
                Err(Error::AlreadyExists { .. } | Error::OwnerAlive { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.open(path) {
                Ok(f) => return Ok((f, Opened::Existing)),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            path: path.to_owned(),
            attempts: OPEN_OR_CREATE_TRIES,
        })
    }
}

/// How often `open_or_create` retries create → `EEXIST` → open → `ENOENT`.
pub(crate) const OPEN_OR_CREATE_TRIES: u32 = 8;

/// The state only an owner has.
#[derive(Debug)]
struct Owned {
    /// The creating process: a forked child is not the owner.
    pid: u32,
    /// The FIFO's directory, read-locked at [`lock::fifo_offset`] of the FIFO's inode.
    dir: OwnedFd,
    /// An `O_PATH` descriptor of the FIFO: keeps its inode (so its number, the identity and
    /// the lock's offset) from being reused while the owner lives. Held, never read.
    #[allow(dead_code)]
    pin: OwnedFd,
    /// The FIFO's name in `dir`.
    name: OsString,
    on_drop: OnDrop,
}

/// A FIFO in the file system, by name: the *owner* of one it created, or an *opener* of one
/// that exists.
///
/// [`Fifo::create`] makes the FIFO exclusively, mode 0600 unless asked otherwise (set with
/// `fchmod`-like calls so the umask cannot change it), and returns its owner, which removes
/// the path on drop ([`OnDrop::Remove`]) — only if the path still names the FIFO it created
/// (device and inode, through an `O_PATH` descriptor that pins the inode), and only in the
/// process that created it. [`Fifo::open`] checks an existing FIFO and returns an opener, which
/// never removes anything.
///
/// The handle is only a name: open the ends with [`FifoReader`](crate::FifoReader) and
/// [`FifoWriter`](crate::FifoWriter), in this process or any other that knows the path.
///
/// # Liveness
///
/// While an owner lives, [`remove_stale`] (and a [`replace_stale`](FifoOptions::replace_stale)
/// create) refuses to remove its FIFO with [`Error::OwnerAlive`]. "Lives" means some process
/// holds the owner's descriptors: the owner holds an open-file-description read lock on the
/// FIFO's directory at the byte whose offset is the FIFO's inode number, which the kernel drops
/// however the process ends (exit, `SIGKILL`; a zombie holds none). A child forked while the
/// owner exists inherits those descriptors and so keeps the owner alive until it exits or
/// execs (they are close-on-exec). The lock is on the directory the FIFO was created in: a
/// FIFO renamed into another directory looks ownerless there. Creating a FIFO needs read
/// permission on its directory, to open it for the lock, and a file system that supports such
/// locks on directories (local ones do; a network file system may refuse them, and then
/// `create` fails cleanly with [`Error::Io`]).
///
/// A new FIFO appears at its path already complete (mode set, lock held): `create` makes it
/// under a temporary name (`.ipc-fifo-{pid}-{n}.tmp`) in the same directory and links it to
/// the path exclusively, so a concurrent `remove_stale` can never see it unowned.
///
/// # After `fork`
///
/// In a child forked from a multi-threaded parent (which may make only async-signal-safe
/// calls until it execs or exits), a `Fifo` inherited from the parent may be used for
/// [`path`](Fifo::path), [`is_owner`](Fifo::is_owner) (false there),
/// [`persist`](Fifo::persist) (which does nothing there: it must not release the parent's
/// lock), and dropped: drop then
/// only closes the handle's descriptors (and frees its path; glibc's `fork` resets the
/// allocator's lock) and removes nothing. Creating, opening or removing needs allocation and
/// is not for such a child.
///
/// ```
/// # fn main() -> Result<(), ipc_fifo::Error> {
/// use ipc_fifo::{Error, Fifo, Opened};
/// let dir = ipc_fifo::PrivateDir::new("ipcrs-doc-fifo")?;
/// let path = dir.join("requests")?;
/// let (owner, how) = Fifo::open_or_create(&path)?;
/// assert_eq!(how, Opened::Created);
/// let (opener, how) = Fifo::open_or_create(&path)?;
/// assert_eq!(how, Opened::Existing);
/// assert!(owner.is_owner() && !opener.is_owner());
/// assert!(matches!(ipc_fifo::remove_stale(&path), Err(Error::OwnerAlive { .. })));
/// drop(opener);
/// assert!(path.exists(), "an opener removes nothing");
/// drop(owner);
/// assert!(!path.exists());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Fifo {
    path: PathBuf,
    dev: u64,
    ino: u64,
    owner: Option<Owned>,
}

impl Fifo {
    /// `mkfifo(path, 0600)`—creates a FIFO exclusively and returns its owner
    /// (`Fifo::options().create(path)`).
    ///
    /// ```
    /// # fn main() -> Result<(), ipc_fifo::Error> {
    /// let dir = ipc_fifo::PrivateDir::new("ipcrs-doc-create")?;
    /// let path = dir.join("requests")?;
    /// let fifo = ipc_fifo::Fifo::create(&path)?;
    /// assert!(matches!(ipc_fifo::Fifo::create(&path), Err(ipc_fifo::Error::AlreadyExists { .. })));
    /// drop(fifo);
    /// assert!(!path.exists());
    /// # Ok(()) }
    /// ```
    ///
    /// The FIFO is made under a temporary name in the same directory, its mode set and its
    /// owner's lock taken, then linked to `path` (exclusively: `EEXIST` if anything is there)
    /// and the temporary name removed. The mode is set on the inode `mkfifo` made, named by an
    /// `O_PATH` descriptor checked with `fstat` (`chmod` of `/proc/self/fd/N`), which does not
    /// open the FIFO. Without `/proc` the FIFO is opened for reading for an instant under its
    /// temporary name (where no peer can see it) and `fchmod`ed; should the umask have removed
    /// our own read bit, the temporary name is `chmod`ed, right after `fstatat` confirmed it is
    /// still our FIFO.
    ///
    /// Every clean-up after a failure removes only the temporary name, and only if it still
    /// names the FIFO this call made.
    ///
    /// # Errors
    /// [`Error::InvalidName`] (before any system call: empty, a NUL byte, too long, or not
    /// ending in a file name), [`Error::InvalidMode`], [`Error::AlreadyExists`] if anything
    /// (even a dangling symlink) is at the path, [`Error::NotFound`] if the directory does not
    /// exist, [`Error::PermissionDenied`] (the directory must be writable and readable), or
    /// [`Error::Io`].
    ///
    /// # References
    ///  - [POSIX](https://pubs.opengroup.org/onlinepubs/9799919799/functions/mkfifo.html)
    ///  - [Linux](https://man7.org/linux/man-pages/man3/mkfifo.3.html)
    #[doc(alias = "mkfifo")]
    pub fn create(path: impl AsRef<Path>) -> Result<Fifo> {
        FifoOptions::new().create(path)
    }

    /// Checks that `path` is a FIFO owned by us and returns an opener for it, which never
    /// removes anything (`Fifo::options().open(path)`). Opens nothing: open its ends with
    /// [`FifoReader`](crate::FifoReader) and [`FifoWriter`](crate::FifoWriter).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::NotFound`], [`Error::NotAFifo`] (a symlink is not
    /// followed), [`Error::WrongOwner`] (see [`FifoOptions::owner_check`]),
    /// [`Error::PermissionDenied`], [`Error::Io`].
    pub fn open(path: impl AsRef<Path>) -> Result<Fifo> {
        FifoOptions::new().open(path)
    }

    /// Creates the FIFO if nothing is at `path`, otherwise checks the one there as
    /// [`Fifo::open`] does; says which happened. Only [`Opened::Created`] returns an owner.
    /// A FIFO removed between the failed create and the open is retried a few times.
    ///
    /// # Errors
    /// As [`FifoOptions::open_or_create`].
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<(Fifo, Opened)> {
        FifoOptions::new().open_or_create(path)
    }

    /// Options: mode, owner check, on-drop behaviour, stale take-over.
    pub const fn options() -> FifoOptions {
        FifoOptions::new()
    }

    /// The FIFO's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this handle owns the FIFO: it created it, in this process (not a forked child).
    /// An owner told to keep the FIFO ([`OnDrop::Keep`], [`persist`](Fifo::persist)) is still
    /// the owner until it is dropped.
    pub fn is_owner(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|o| o.pid == std::process::id())
    }

    /// Keeps the FIFO after this owner is dropped, as [`OnDrop::Keep`] at create would have. The
    /// handle stays the owner — its liveness lock held, so [`remove_stale`] refuses — until it
    /// is dropped; then the FIFO is ownerless. Remove it later with [`unlink`] or
    /// [`remove_stale`]. Does nothing on a handle that is not the owner.
    pub fn persist(&mut self) {
        if let Some(o) = &mut self.owner {
            o.on_drop = OnDrop::Keep;
        }
    }

    /// Removes the FIFO now and reports what happened (drop ignores errors). Like drop, it
    /// removes the path only if it still names the FIFO this owner created.
    ///
    /// # Errors
    /// [`Error::NotOwner`] on a handle that is not the owner (nothing is removed),
    /// [`Error::NotFound`] if the path is gone or names something else now, or what `unlink`
    /// fails with ([`Error::PermissionDenied`], [`Error::Io`]).
    pub fn remove(mut self) -> Result<()> {
        if !self.is_owner() {
            return Err(Error::NotOwner {
                path: self.path.clone(),
            });
        }
        let o = self.owner.take().expect("is_owner");
        match unlink_if_same(&o.dir, &o.name, self.dev, self.ino) {
            Ok(true) => Ok(()),
            Ok(false) | Err(Errno::NOENT) => Err(Error::not_found(&self.path)),
            Err(e) => Err(Error::at(&self.path, e)),
        }
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        // In a forked child `is_owner` is false: only the descriptors are closed.
        if self.is_owner() {
            if let Some(o) = &self.owner {
                if o.on_drop == OnDrop::Remove {
                    let _ = unlink_if_same(&o.dir, &o.name, self.dev, self.ino);
                }
            }
        }
    }
}

/// A temporary FIFO `create` made, removed again (if it is still ours) when this is dropped.
struct Temp<'a> {
    dir: &'a OwnedFd,
    name: String,
    dev: u64,
    ino: u64,
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        let _ = unlink_if_same(self.dir, self.name.as_ref(), self.dev, self.ino);
    }
}

/// Makes a FIFO with a fresh temporary name in `dir`, pins it with an `O_PATH` descriptor and
/// checks it is the FIFO we made.
fn make_temp<'a>(dir: &'a OwnedFd, named: &Named<'_>) -> Result<(Temp<'a>, OwnedFd, Stat)> {
    let pid = std::process::id();
    let mut tries = 0;
    let name = loop {
        let name = format!(
            ".ipc-fifo-{pid}-{}.tmp",
            TEMP.fetch_add(1, Ordering::Relaxed)
        );
        // The umask may only remove bits from this; the exact mode is set later.
        match rustix::fs::mkfifoat(dir, name.as_str(), Mode::from_raw_mode(0o600)) {
            Ok(()) => break name,
            Err(Errno::EXIST) if tries < 16 => tries += 1,
            Err(e) => return Err(Error::at(named.path, e)),
        }
    };
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let pin = match rustix::fs::openat(dir, name.as_str(), flags, Mode::empty()) {
        Ok(pin) => pin,
        Err(e) => {
            // No descriptor (EMFILE, ...), so no exact identity: remove the name only if it is
            // a FIFO of ours, as the one just made is (no one else knows this name).
            if let Ok(st) = stat_in(dir, name.as_ref()) {
                if check_stat(&st, named.path, OwnerCheck::SameUid).is_ok() {
                    let _ = rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty());
                }
            }
            return Err(Error::at(named.path, e));
        }
    };
    let st = rustix::fs::fstat(&pin)?;
    if check_stat(&st, named.path, OwnerCheck::SameUid).is_err() {
        // Not what we made: someone swapped it. We cannot tell where ours went; remove nothing.
        return Err(replaced(named.path));
    }
    let temp = Temp {
        dir,
        name,
        dev: st.st_dev,
        ino: st.st_ino,
    };
    Ok((temp, pin, st))
}

/// Steps of `create` after the directory is open (and a stale FIFO removed).
fn create_in(dir: OwnedFd, named: &Named<'_>, opts: FifoOptions) -> Result<Fifo> {
    let (temp, pin, st) = make_temp(&dir, named)?;
    apply_mode(&temp, &pin, opts.mode, named.path)?;
    lock::hold(dir.as_fd(), lock::fifo_offset(st.st_ino)).map_err(Error::Io)?;
    // Exclusive, and the FIFO appears complete: mode set, owner's lock held.
    rustix::fs::linkat(&dir, temp.name.as_str(), &dir, named.name, AtFlags::empty())
        .map_err(Error::wrap(named.path))?;
    drop(temp); // the temporary name goes; the FIFO stays under `path`
    Ok(Fifo {
        path: named.path.to_owned(),
        dev: st.st_dev,
        ino: st.st_ino,
        owner: Some(Owned {
            pid: std::process::id(),
            dir,
            pin,
            name: named.name_owned(),
            on_drop: opts.on_drop,
        }),
    })
}

/// Sets the exact mode on the FIFO `create` just made.
///
/// Through its `O_PATH` descriptor (`chmod` of `/proc/self/fd/N`, as glibc does for
/// `fchmodat(AT_SYMLINK_NOFOLLOW)`): it names the inode that was checked with `fstat` without
/// opening the FIFO, and needs no permission on it. Without `/proc`, the FIFO is opened for
/// reading for an instant (under its temporary name, where no peer can see it) and
/// `fchmod`ed; if the umask took our own read bit, the temporary name is `chmod`ed after
/// `fstatat` confirmed it is still our FIFO.
fn apply_mode(temp: &Temp<'_>, pin: &OwnedFd, mode: u32, path: &Path) -> Result<()> {
    let mode = Mode::from_raw_mode(mode as rustix::fs::RawMode);
    let link = format!("/proc/self/fd/{}", pin.as_raw_fd());
    match rustix::fs::chmod(link.as_str(), mode) {
        Ok(()) => return Ok(()),
        Err(Errno::NOENT) => {} // no /proc
        Err(e) => return Err(Error::at(path, e)),
    }
    let same = |st: &Stat| (st.st_dev, st.st_ino) == (temp.dev, temp.ino);
    // O_RDONLY|O_NONBLOCK opens a FIFO at once, with or without a writer.
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(temp.dir, temp.name.as_str(), flags, Mode::empty()) {
        Ok(fd) => {
            if !same(&rustix::fs::fstat(&fd)?) {
                return Err(replaced(path));
            }
            rustix::fs::fchmod(&fd, mode).map_err(Error::wrap(path))
        }
        // The umask removed our own read bit (and we are not root): the name is all we have.
        Err(Errno::ACCESS) => {
            let st = stat_in(temp.dir, temp.name.as_ref()).map_err(Error::wrap(path))?;
            if !same(&st) {
                return Err(replaced(path));
            }
            rustix::fs::chmodat(temp.dir, temp.name.as_str(), mode, AtFlags::empty())
                .map_err(Error::wrap(path))
        }
        Err(e) => Err(Error::at(path, e)),
    }
}

/// Removes the FIFO `named` in `dir` if no owner holds it (checked as `check` says).
fn remove_stale_in(dir: &OwnedFd, named: &Named<'_>, check: OwnerCheck) -> Result<()> {
    let gone = || Error::NotFound {
        path: named.path.to_owned(),
        dir_exists: true,
    };
    for _ in 0..4 {
        let st = match stat_in(dir, named.name) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Err(gone()),
            Err(e) => return Err(Error::at(named.path, e)),
        };
        check_stat(&st, named.path, check)?;
        // Our own descriptor of the directory, so any lock found is someone else's.
        if lock::held(dir.as_fd(), lock::fifo_offset(st.st_ino)).map_err(Error::Io)? {
            return Err(Error::OwnerAlive {
                path: named.path.to_owned(),
            });
        }
        match unlink_if_same(dir, named.name, st.st_dev, st.st_ino) {
            Ok(true) => return Ok(()),
            Ok(false) => continue, // replaced meanwhile: look at the new one
            Err(Errno::NOENT) => return Err(gone()),
            Err(e) => return Err(Error::at(named.path, e)),
        }
    }
    Err(Error::Io(io::Error::other(format!(
        "{} kept being replaced while it was checked",
        named.path.display()
    ))))
}

/// `unlink(path)` for a FIFO: removes it whether or not its owner lives (explicit clean-up, as
/// `rm` would). Refuses anything that is not a FIFO, so it never deletes a file by mistake, and
/// another user's FIFO ([`Error::WrongOwner`]; `std::fs::remove_file` removes that, if it is
/// really meant). Processes that have the FIFO open keep using it.
///
/// ```
/// # fn main() -> Result<(), ipc_fifo::Error> {
/// # let dir = ipc_fifo::PrivateDir::new("ipcrs-doc-unlink")?;
/// # let path = dir.join("f")?;
/// let mut fifo = ipc_fifo::Fifo::create(&path)?;
/// fifo.persist();
/// drop(fifo);
/// ipc_fifo::unlink(&path)?;
/// assert!(!path.exists());
/// # Ok(()) }
/// ```
///
/// The check and the removal are two system calls: a file that replaces the FIFO between
/// them (only possible where others can write to the directory) could be removed instead.
///
/// # Errors
/// [`Error::InvalidName`], [`Error::NotFound`], [`Error::NotAFifo`], [`Error::WrongOwner`],
/// [`Error::PermissionDenied`], or what `unlink` fails with.
pub fn unlink(path: impl AsRef<Path>) -> Result<()> {
    let named = named(path.as_ref())?;
    check_stat(&lstat(named.path)?, named.path, OwnerCheck::SameUid)?;
    rustix::fs::unlink(named.path).map_err(Error::wrap(named.path))
}

/// Removes the FIFO at `path` only if its owner is dead: no process holds the handle that
/// created it (its creator exited or was killed, or dropped it with [`OnDrop::Keep`] or
/// [`persist`](Fifo::persist)ed it). A FIFO made by a program that does not use this crate has
/// no owner lock and is removed.
///
/// ```
/// # fn main() -> Result<(), ipc_fifo::Error> {
/// use ipc_fifo::{Error, Fifo, OnDrop};
/// # let dir = ipc_fifo::PrivateDir::new("ipcrs-doc-stale-fn")?;
/// # let path = dir.join("f")?;
/// let fifo = Fifo::options().on_drop(OnDrop::Keep).create(&path)?;
/// assert!(matches!(ipc_fifo::remove_stale(&path), Err(Error::OwnerAlive { .. })));
/// drop(fifo); // kept, and now ownerless
/// ipc_fifo::remove_stale(&path)?;
/// assert!(!path.exists());
/// # Ok(()) }
/// ```
///
/// The check and the removal are two system calls: a FIFO that replaces the stale one between
/// them (only possible where others can write to the directory) could be removed instead. A
/// FIFO made by [`Fifo::create`] is never seen ownerless, since it appears with its lock held.
///
/// # Errors
/// [`Error::OwnerAlive`] (nothing is removed), [`Error::InvalidName`], [`Error::NotFound`],
/// [`Error::NotAFifo`], [`Error::WrongOwner`] (another user's FIFO),
/// [`Error::PermissionDenied`] (this needs read and write permission on the directory), or
/// [`Error::Io`].
pub fn remove_stale(path: impl AsRef<Path>) -> Result<()> {
    let named = named(path.as_ref())?;
    let dir = open_dir(&named)?;
    remove_stale_in(&dir, &named, OwnerCheck::SameUid)
}
