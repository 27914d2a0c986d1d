//! A private directory for FIFOs, so their paths cannot be squatted.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, FileKind, Result};
use crate::fifo::{check_path, euid};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether [`PrivateDir::open_or_create`] made the directory or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirStatus {
    /// We made it (and remove it on drop).
    Created,
    /// It was there already, and passed the checks (we leave it on drop).
    Existed,
}

/// A directory only we can enter (mode 0700, owned by our effective uid), where FIFO paths
/// cannot be squatted: nobody else can create, replace or remove a name inside it.
///
/// In a world-writable directory such as `/tmp`, another user can create your FIFO's name
/// first (a regular file, a symlink, their own FIFO) and wait for you to write to it. Put FIFOs
/// here instead. The base is `$XDG_RUNTIME_DIR` when it is set (a per-user directory that is
/// already private), otherwise the temp dir.
///
/// A `PrivateDir` that created its directory removes it, with everything in it, on drop, and
/// only in the process that created it (a forked child removes nothing).
///
/// ```
/// # fn main() -> Result<(), ipc_fifo::Error> {
/// let dir = ipc_fifo::PrivateDir::new("ipcrs-doc-dir")?;
/// let path = dir.join("server")?;
/// let fifo = ipc_fifo::Fifo::create(&path)?;
/// # drop(fifo);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    status: DirStatus,
    pid: u32,
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
    /// have prepared: `mkdir` is exclusive, and a name that is taken is skipped.
    ///
    /// # Errors
    /// [`Error::InvalidName`] if `prefix` contains `/` or NUL or is empty, or what `mkdir`
    /// fails with.
    pub fn new(prefix: &str) -> Result<PrivateDir> {
        check_component(OsStr::new(prefix))?;
        let base = PrivateDir::base();
        for _ in 0..1000 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{prefix}-{}-{n}", std::process::id()));
            match create_private(&path) {
                Ok(()) => return Ok(PrivateDir::owned(path, DirStatus::Created)),
                Err(Error::AlreadyExists) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::AlreadyExists)
    }

    /// Makes `path` a private directory (mode 0700), or checks that the one already there is
    /// one: a real directory (not a symlink), owned by us, with no access for group or others.
    /// For a well-known place, e.g. `PrivateDir::base().join("myapp")`.
    ///
    /// # Errors
    /// [`Error::NotPrivate`] if the directory grants access to others, [`Error::WrongOwner`],
    /// [`Error::NotADirectory`] if the path is something else (a symlink is not followed), or
    /// what `mkdir` fails with.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<PrivateDir> {
        let path = path.as_ref();
        check_path(path)?;
        match create_private(path) {
            Ok(()) => Ok(PrivateDir::owned(path.to_owned(), DirStatus::Created)),
            Err(Error::AlreadyExists) => {
                check_private(path)?;
                Ok(PrivateDir::owned(path.to_owned(), DirStatus::Existed))
            }
            Err(e) => Err(e),
        }
    }

    fn owned(path: PathBuf, status: DirStatus) -> PrivateDir {
        PrivateDir {
            path,
            status,
            pid: std::process::id(),
            keep: false,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this handle created the directory.
    pub fn status(&self) -> DirStatus {
        self.status
    }

    /// `path()/name` for a single path component `name`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] if `name` is empty, `.`, `..`, or contains `/` or NUL.
    pub fn join(&self, name: impl AsRef<OsStr>) -> Result<PathBuf> {
        check_component(name.as_ref())?;
        Ok(self.path.join(name.as_ref()))
    }

    /// Leaves the directory in place when dropped; returns its path.
    pub fn persist(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if !self.keep && self.status == DirStatus::Created && std::process::id() == self.pid {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn check_component(name: &OsStr) -> Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Error::InvalidName);
    }
    Ok(())
}

/// `mkdir(path, 0700)` then `fchmod(0700)` on the directory opened with `O_NOFOLLOW`.
fn create_private(path: &Path) -> Result<()> {
    rustix::fs::mkdirat(CWD, path, Mode::from_raw_mode(0o700))?;
    let fix = || -> Result<()> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
        Ok(())
    };
    fix().inspect_err(|_| {
        let _ = rustix::fs::unlinkat(CWD, path, AtFlags::REMOVEDIR);
    })
}

fn check_private(path: &Path) -> Result<()> {
    let st = match rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Err(Error::NotFound),
        Err(e) => return Err(e.into()),
    };
    let found = FileKind::of(&st);
    if found != FileKind::Directory {
        return Err(Error::NotADirectory { found });
    }
    if st.st_uid != euid() {
        return Err(Error::WrongOwner {
            expected: euid(),
            found: st.st_uid,
        });
    }
    #[allow(clippy::unnecessary_cast)] // `st_mode`'s type differs between platforms
    let mode = st.st_mode as u32 & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::NotPrivate {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}
