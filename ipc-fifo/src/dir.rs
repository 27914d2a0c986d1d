//! A private directory for FIFOs, so their paths cannot be squatted.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, FileKind, Result};
use crate::fifo::{OPEN_OR_CREATE_TRIES, Opened, euid};
use crate::lock;
use crate::path::{Named, check_component, named};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How deep [`PrivateDir`]'s removal descends into subdirectories someone made inside it;
/// deeper ones are left (and so is the directory).
const MAX_DEPTH: usize = 32;

/// A directory only we can enter (mode 0700, owned by our effective uid), where FIFO paths
/// cannot be squatted: nobody else can create, replace or remove a name inside it.
///
/// In a world-writable directory such as `/tmp`, another user can create your FIFO's name
/// first (a regular file, a symlink, their own FIFO) and wait for you to write to it. Put FIFOs
/// here instead. The base is `$XDG_RUNTIME_DIR` when it is set (a per-user directory that is
/// already private), otherwise the temp dir.
///
/// Two ways to get one:
/// - [`PrivateDir::new`] makes a fresh directory with a unique name and returns its *owner*,
///   which removes it, with everything in it, on drop — only if the path still names the
///   directory it made, and only in the process that made it.
/// - [`PrivateDir::open_or_create`] (and [`PrivateDir::open`]) is for a well-known place that
///   several programs share (a server and its clients, a server and its next run): it makes the
///   directory or checks the one there, and **never removes it**, whichever process happened
///   to create it. A shared directory is never removed from under the processes using it.
///
/// # Liveness
///
/// The owner from `new` holds an open-file-description read lock on its directory, at byte
/// [`OWNER_LOCK`](crate::OWNER_LOCK), for as long as it (or a child forked while it existed)
/// has the handle: a tool can tell a live owner's directory from one left by a crash.
///
/// # After `fork`
///
/// In a child forked from a multi-threaded parent, an inherited `PrivateDir` may be used for
/// [`path`](PrivateDir::path), [`is_owner`](PrivateDir::is_owner) (false there),
/// [`persist`](PrivateDir::persist) (which does nothing there), and dropped:
/// drop then only closes its descriptor and frees its path, and removes nothing. `join`,
/// `new`, `open`, `open_or_create` and `remove` allocate or walk the file system: not for such
/// a child.
///
/// ```
/// # fn main() -> Result<(), ipc_fifo::Error> {
/// let dir = ipc_fifo::PrivateDir::new("ipcrs-doc-dir")?;
/// let path = dir.join("server")?;
/// let fifo = ipc_fifo::Fifo::create(&path)?;
/// let where_ = dir.path().to_owned();
/// drop(fifo);
/// drop(dir);
/// assert!(!where_.exists());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    /// The directory (`O_RDONLY|O_DIRECTORY`); an owner's is read-locked at `OWNER_LOCK`.
    dir: OwnedFd,
    dev: u64,
    ino: u64,
    /// The creating process, for a `new` directory.
    owner: Option<u32>,
    /// Persisted: left in place when the owner is dropped.
    keep: bool,
}

impl PrivateDir {
    /// The base directory: `$XDG_RUNTIME_DIR` if set and absolute, else [`std::env::temp_dir`].
    pub fn base() -> PathBuf {
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
            _ => std::env::temp_dir(),
        }
    }

    /// Creates a fresh directory `{base}/{prefix}-{pid}-{n}`, mode 0700, that no one else can
    /// have prepared (`mkdir` is exclusive, and a name that is taken is skipped), and returns
    /// its owner, which removes it with its contents on drop.
    ///
    /// # Errors
    /// [`Error::InvalidName`] if `prefix` is empty, contains `/` or NUL, or makes a name longer
    /// than `NAME_MAX`; [`Error::NotFound`] if the base does not exist; what `mkdir` fails
    /// with ([`Error::PermissionDenied`], [`Error::Io`]).
    pub fn new(prefix: &str) -> Result<PrivateDir> {
        check_component(OsStr::new(prefix))?;
        let base = PrivateDir::base();
        for _ in 0..1000 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{prefix}-{}-{n}", std::process::id());
            check_component(OsStr::new(&name))?;
            let path = base.join(&name);
            let named = named(&path)?;
            match create_private(&named) {
                Ok((dir, st)) => {
                    if let Err(e) = lock::hold(dir.as_fd(), lock::OWNER_LOCK) {
                        let _ = remove_tree(&named, &dir, (st.st_dev, st.st_ino));
                        return Err(Error::Io(e));
                    }
                    return Ok(PrivateDir {
                        path,
                        dir,
                        dev: st.st_dev,
                        ino: st.st_ino,
                        owner: Some(std::process::id()),
                        keep: false,
                    });
                }
                Err(Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::AlreadyExists { path: base })
    }

    /// Checks that `path` is a private directory: a real directory (not a symlink), owned by
    /// us, with no access for group or others. Returns a handle that never removes it.
    ///
    /// # Errors
    /// [`Error::NotFound`] (it says whether the parent exists), [`Error::NotPrivate`] (not
    /// ours, or open to others), [`Error::NotADirectory`] (a symlink is not followed),
    /// [`Error::InvalidName`], [`Error::PermissionDenied`], [`Error::Io`].
    pub fn open(path: impl AsRef<Path>) -> Result<PrivateDir> {
        let named = named(path.as_ref())?;
        let (dir, st) = open_private(&named)?;
        Ok(PrivateDir::opener(named.path, dir, &st))
    }

    /// Makes `path` a private directory (mode 0700), or checks that the one already there is
    /// one, as [`PrivateDir::open`] does; says which happened. For a well-known place shared by
    /// several programs, e.g. `PrivateDir::base().join("myapp")`.
    ///
    /// The handle **never removes** the directory, even when it created it ([`Opened::Created`]):
    /// a server and its clients may start in any order, and whichever comes first must not
    /// delete the others' FIFOs when it exits. Remove such a directory explicitly when it is
    /// really no longer used (`std::fs::remove_dir_all`).
    ///
    /// ```
    /// # fn main() -> Result<(), ipc_fifo::Error> {
    /// use ipc_fifo::{Opened, PrivateDir};
    /// # let base = PrivateDir::new("ipcrs-doc-wk")?;
    /// let place = base.join("myapp")?; // e.g. PrivateDir::base().join("myapp")
    /// let (first, how) = PrivateDir::open_or_create(&place)?;
    /// assert_eq!(how, Opened::Created);
    /// let (second, how) = PrivateDir::open_or_create(&place)?;
    /// assert_eq!(how, Opened::Existing);
    /// drop((first, second));
    /// assert!(place.exists(), "a shared place is never removed");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`PrivateDir::open`], or what `mkdir` fails with; [`Error::Contended`] if the
    /// directory kept being created and removed by others while it tried.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<(PrivateDir, Opened)> {
        let named = named(path.as_ref())?;
        for _ in 0..OPEN_OR_CREATE_TRIES {
            match create_private(&named) {
                Ok((dir, st)) => {
                    return Ok((PrivateDir::opener(named.path, dir, &st), Opened::Created));
                }
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            match open_private(&named) {
                Ok((dir, st)) => {
                    return Ok((PrivateDir::opener(named.path, dir, &st), Opened::Existing));
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            path: named.path.to_owned(),
            attempts: OPEN_OR_CREATE_TRIES,
        })
    }

    fn opener(path: &Path, dir: OwnedFd, st: &Stat) -> PrivateDir {
        PrivateDir {
            path: path.to_owned(),
            dir,
            dev: st.st_dev,
            ino: st.st_ino,
            owner: None,
            keep: false,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name` for a single path component `name`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] if `name` is empty, `.`, `..`, longer than `NAME_MAX`, or
    /// contains `/` or NUL.
    pub fn join(&self, name: impl AsRef<OsStr>) -> Result<PathBuf> {
        check_component(name.as_ref())?;
        Ok(self.path.join(name.as_ref()))
    }

    /// Whether this handle owns the directory: it made it with [`PrivateDir::new`], in this
    /// process (not a forked child). A [persisted](PrivateDir::persist) owner is still the owner
    /// until it is dropped.
    pub fn is_owner(&self) -> bool {
        self.owner == Some(std::process::id())
    }

    /// Leaves the directory in place when the owner is dropped. The handle stays the owner —
    /// its lock held — until then. Does nothing on a handle that is not the owner.
    pub fn persist(&mut self) {
        if self.is_owner() {
            self.keep = true;
        }
    }

    /// Removes the directory and everything in it now, reporting errors (drop ignores them);
    /// only if the path still names the directory this owner made.
    ///
    /// # Errors
    /// [`Error::NotOwner`] on a handle that is not the owner (from `open_or_create`, in a
    /// forked child), [`Error::NotFound`] if the path is gone or names another
    /// directory now, or what removing fails with.
    pub fn remove(mut self) -> Result<()> {
        if !self.is_owner() {
            return Err(Error::NotOwner {
                path: self.path.clone(),
            });
        }
        self.owner = None;
        let named = named(&self.path)?;
        remove_tree(&named, &self.dir, (self.dev, self.ino))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // In a forked child `is_owner` is false: only the descriptor is closed.
        if self.is_owner() && !self.keep {
            if let Ok(named) = named(&self.path) {
                let _ = remove_tree(&named, &self.dir, (self.dev, self.ino));
            }
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens `named.dir` (the parent) for `*at` calls.
fn open_parent(named: &Named<'_>) -> Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::open(named.dir, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT | Errno::NOTDIR) => Err(Error::NotFound {
            path: named.path.to_owned(),
            dir_exists: false,
        }),
        Err(e) => Err(Error::at(named.dir, e)),
    }
}

/// `mkdir(0700)` exclusively, then open it (`O_NOFOLLOW`), check it is the directory we made,
/// and `fchmod(0700)` (the umask may have removed bits). A failure removes the new directory,
/// if the name still names it.
fn create_private(named: &Named<'_>) -> Result<(OwnedFd, Stat)> {
    let parent = open_parent(named)?;
    rustix::fs::mkdirat(&parent, named.name, Mode::from_raw_mode(0o700))
        .map_err(Error::wrap(named.path))?;
    let dir = match rustix::fs::openat(&parent, named.name, dir_flags(), Mode::empty()) {
        Ok(dir) => dir,
        Err(e) => {
            // No descriptor (EMFILE, ...), so no exact identity: remove it if it is an empty
            // directory of ours, as the one just made is (`rmdir` removes only empty ones).
            let st = rustix::fs::statat(&parent, named.name, AtFlags::SYMLINK_NOFOLLOW);
            if st.is_ok_and(|st| FileKind::of(&st) == FileKind::Directory && st.st_uid == euid()) {
                let _ = rustix::fs::unlinkat(&parent, named.name, AtFlags::REMOVEDIR);
            }
            return Err(Error::at(named.path, e));
        }
    };
    let st = rustix::fs::fstat(&dir)?;
    if FileKind::of(&st) != FileKind::Directory || st.st_uid != euid() {
        return Err(Error::NotPrivate {
            path: named.path.to_owned(),
            mode: mode_of(&st),
            uid: st.st_uid,
        });
    }
    if let Err(e) = rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700)) {
        let _ = rmdir_if_same(&parent, named.name, (st.st_dev, st.st_ino));
        return Err(Error::at(named.path, e));
    }
    Ok((dir, st))
}

#[allow(clippy::unnecessary_cast)] // `st_mode`'s type differs between platforms
fn mode_of(st: &Stat) -> u32 {
    st.st_mode as u32 & 0o7777
}

/// Opens the directory at `named` without following a symlink and checks it is private.
fn open_private(named: &Named<'_>) -> Result<(OwnedFd, Stat)> {
    let path = named.path;
    let dir = match rustix::fs::open(path, dir_flags(), Mode::empty()) {
        Ok(dir) => dir,
        Err(Errno::LOOP | Errno::NOTDIR) => {
            // A symlink (never followed) or something else: say what.
            let found = rustix::fs::statat(rustix::fs::CWD, path, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileKind::of(&st))
                .unwrap_or(FileKind::Unknown);
            return Err(Error::NotADirectory {
                path: path.to_owned(),
                found,
            });
        }
        Err(e) => return Err(Error::at(path, e)),
    };
    let st = rustix::fs::fstat(&dir)?;
    let mode = mode_of(&st);
    if st.st_uid != euid() || mode & 0o077 != 0 {
        return Err(Error::NotPrivate {
            path: path.to_owned(),
            mode,
            uid: st.st_uid,
        });
    }
    Ok((dir, st))
}

/// `rmdir(parent/name)` if the name still names the directory `id` (device, inode).
fn rmdir_if_same(parent: &OwnedFd, name: &OsStr, id: (u64, u64)) -> rustix::io::Result<bool> {
    let now = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if (now.st_dev, now.st_ino) != id {
        return Ok(false);
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(true)
}

/// Removes the directory `dir` (device and inode `id`) at `named`, with its contents, if the
/// path still names it. Its contents are removed through `dir` itself (never through a path
/// that could have been redirected), descending at most [`MAX_DEPTH`] levels.
fn remove_tree(named: &Named<'_>, dir: &OwnedFd, id: (u64, u64)) -> Result<()> {
    let parent = open_parent(named)?;
    let now = rustix::fs::statat(&parent, named.name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(Error::wrap(named.path))?;
    if (now.st_dev, now.st_ino) != id {
        return Err(Error::not_found(named.path));
    }
    empty(dir, 0).map_err(Error::wrap(named.path))?;
    match rmdir_if_same(&parent, named.name, id) {
        Ok(true) => Ok(()),
        Ok(false) | Err(Errno::NOENT) => Err(Error::not_found(named.path)),
        Err(e) => Err(Error::at(named.path, e)),
    }
}

/// Removes everything inside `dir`.
fn empty(dir: &OwnedFd, depth: usize) -> rustix::io::Result<()> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(entry.file_name().to_owned());
        }
    }
    for name in names {
        match rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR) if depth < MAX_DEPTH => {
                let sub = rustix::fs::openat(dir, name.as_c_str(), dir_flags(), Mode::empty())?;
                empty(&sub, depth + 1)?;
                rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::REMOVEDIR)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
