//! POSIX named semaphores, in glibc's format, without glibc's `sem_open`.
//!
//! glibc keeps a named semaphore `/NAME` in the file `/dev/shm/sem.NAME`, which holds one
//! `sem_t` (32 bytes on 64-bit Linux) that every process maps. This module opens and creates
//! that file itself instead of calling `sem_open`, for two reasons: glibc's `sem_open` opens the
//! file without `O_CLOEXEC` (a concurrent `Command::spawn` hands the descriptor to the child),
//! and `sem_close` takes a process-wide lock, so dropping a semaphore in a child forked while
//! another thread held that lock hangs forever. The file format is the same, so C programs that
//! use `sem_open`, `sem_post` and `sem_unlink` on the name interoperate.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};

use crate::error::{Error, Result};
use crate::file::{self, Ident, Unlinked};
use crate::lifetime::{OPEN_OR_CREATE_ATTEMPTS, OnDrop, Opened, OwnerCheck, check_mode};
use crate::name;
use crate::posix::check_value;
use crate::sys::{MappedSem, SemCell};

/// How to create or open a [`NamedSemaphore`]: `NamedSemaphore::options()`, then `const fn`
/// setters, then [`create`](Self::create), [`open`](Self::open) or
/// [`open_or_create`](Self::open_or_create).
///
/// ```
/// # fn main() -> Result<(), ipc_sem::Error> {
/// use ipc_sem::{NamedSemaphore, OnDrop};
/// # let name = format!("/ipcrs-doc-opts-{}", std::process::id());
/// let sem = NamedSemaphore::options()
///     .mode(0o640)
///     .on_drop(OnDrop::Remove)
///     .create(&name, 3)?;
/// assert_eq!(sem.value()?, 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedSemaphoreOptions {
    mode: u32,
    on_drop: OnDrop,
    owner_check: OwnerCheck,
    replace_stale: bool,
}

impl Default for NamedSemaphoreOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl NamedSemaphoreOptions {
    /// The defaults: mode 0600, [`OnDrop::Remove`], [`OwnerCheck::SameUid`], no
    /// `replace_stale`.
    pub const fn new() -> Self {
        NamedSemaphoreOptions {
            mode: 0o600,
            on_drop: OnDrop::Remove,
            owner_check: OwnerCheck::SameUid,
            replace_stale: false,
        }
    }

    /// The permission bits of a created semaphore (default `0o600`), set with `fchmod`, so
    /// the umask does not change them. Bits outside `0o777` are [`Error::InvalidMode`].
    pub const fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// What the owner does when dropped (default [`OnDrop::Remove`]).
    pub const fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }

    /// Whose semaphores `open` accepts (default [`OwnerCheck::SameUid`]).
    pub const fn owner_check(mut self, check: OwnerCheck) -> Self {
        self.owner_check = check;
        self
    }

    /// `create` first removes a stale semaphore under the name (one whose owner is dead, as
    /// [`remove_stale`]); a live owner's is [`Error::OwnerAlive`]. For a server restarted
    /// after a crash.
    pub const fn replace_stale(mut self) -> Self {
        self.replace_stale = true;
        self
    }

    /// Creates a new semaphore with the initial `value`, exclusively, and returns its owner.
    ///
    /// The file `/dev/shm/sem.NAME` is made whole before it has its name (an `O_TMPFILE`,
    /// given its mode, size and initialised `sem_t`, owner-locked, then linked), so no process
    /// ever opens a half-made semaphore; every descriptor is close-on-exec.
    ///
    /// # Errors
    /// Before any syscall: [`Error::InvalidName`], [`Error::ValueTooLarge`],
    /// [`Error::InvalidMode`]. Then [`Error::AlreadyExists`]; [`Error::OwnerAlive`] with
    /// `replace_stale`; [`Error::PermissionDenied`]; `/dev/shm` failures.
    #[doc(alias = "sem_open")]
    pub fn create(&self, name: &str, value: u32) -> Result<NamedSemaphore> {
        let path = name::sem_path(name)?;
        check_value(value)?;
        check_mode(self.mode)?;
        if self.replace_stale {
            match file::remove_stale(&path, name) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (fd, sem, ident) = file::create(&path, self.mode, MappedSem::SIZE as u64, &mut |fd| {
            MappedSem::create(fd, value)
        })
        .map_err(|e| Error::named(e, || name.to_owned()))?;
        Ok(NamedSemaphore {
            sem,
            name: name.to_owned(),
            path,
            ident,
            owner: Some(Owner {
                _fd: fd,
                pid: std::process::id(),
                on_drop: self.on_drop,
            }),
        })
    }

    /// Opens an existing semaphore. The handle never removes it on drop.
    ///
    /// The file is opened with `O_NOFOLLOW` (a symbolic link planted under the name is
    /// refused) and checked before it is mapped: a regular file, owned by our uid (unless
    /// [`OwnerCheck::AnyUid`]), of exactly 32 bytes (so a truncated or foreign file is a typed
    /// error, never `SIGBUS`), holding a plausible process-shared `sem_t` (a value of at most
    /// `SEM_VALUE_MAX` and the shared futex flag; garbage there would make glibc abort).
    ///
    /// # Errors
    /// [`Error::InvalidName`] before any syscall; [`Error::NotFound`];
    /// [`Error::PermissionDenied`]; [`Error::WrongOwner`]; [`Error::InvalidObject`];
    /// [`Error::WrongSize`].
    #[doc(alias = "sem_open")]
    pub fn open(&self, name: &str) -> Result<NamedSemaphore> {
        let path = name::sem_path(name)?;
        let (fd, ident) =
            file::open_checked(&path, name, true, self.owner_check, MappedSem::SIZE as u64)?;
        let sem = MappedSem::map(fd.as_fd())?;
        // The mapping pins the inode, so `ident` keeps naming this semaphore.
        drop(fd);
        if !sem.get().plausible() {
            return Err(Error::InvalidObject {
                name: name.to_owned(),
                reason: "it holds no process-shared semaphore (value or futex flag out of range)",
            });
        }
        Ok(NamedSemaphore {
            sem,
            name: name.to_owned(),
            path,
            ident,
            owner: None,
        })
    }

    /// Opens the semaphore if it exists, else creates it with `value` (only the creator sets
    /// the value). Bounded: if the name keeps being created and removed by others between our
    /// two attempts, [`Error::Contended`] after a few rounds.
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn open_or_create(&self, name: &str, value: u32) -> Result<(NamedSemaphore, Opened)> {
        for _ in 0..OPEN_OR_CREATE_ATTEMPTS {
            match self.create(name, value) {
                Ok(s) => return Ok((s, Opened::Created)),
                Err(Error::AlreadyExists { .. } | Error::OwnerAlive { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.open(name) {
                Ok(s) => return Ok((s, Opened::Existing)),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            name: name.to_owned(),
            attempts: OPEN_OR_CREATE_ATTEMPTS,
        })
    }
}

/// What the creator holds: its descriptor of the file (the owner lock, held while it is open,
/// and the inode pinned for the identity check), its pid and what to do on drop.
struct Owner {
    _fd: OwnedFd,
    pid: u32,
    on_drop: OnDrop,
}

/// A POSIX named semaphore: any process that knows the name can open it (C programs too,
/// with `sem_open`).
///
/// [`create`](Self::create) makes a new one exclusively and returns its *owner*, which removes
/// the name when dropped in the process that created it — only if the name still refers to the
/// semaphore it created (device and inode). [`open`](Self::open) attaches to an existing one and
/// never removes anything. Processes that have it open keep using it after the name is removed.
///
/// The owner holds a lock on its descriptor of the file for as long as it lives (also in
/// children it forks, which share that descriptor): [`remove_stale`] uses it to remove only
/// semaphores whose owner is dead. A semaphore made by a C program (`sem_open`) has no owner
/// lock and counts as stale.
///
/// It does **not** survive a holder's crash: a process killed between `wait` and `post` takes
/// its unit with it. Use [`wait_timeout`](Self::wait_timeout) to notice, or a System V set with
/// undo ([`crate::SemSet`]) or a [`crate::RobustMutex`].
///
/// After `fork` (also from a multi-threaded parent), the child may call `post`, `try_wait`,
/// `wait`, `wait_timeout`, `value` and the guard forms, `is_owner` and `name`, and drop the
/// handle: dropping unmaps and closes only (no lock, unlike glibc's `sem_close`) and, since the
/// child is not the creator, removes nothing.
///
/// A process that can write the file (mode and owner permitting) can corrupt the semaphore or
/// truncate the file under everyone's mapping (`SIGBUS`), as with `sem_open`: keep the default
/// mode 0600 unless you trust the other users.
///
/// ```
/// # fn main() -> Result<(), ipc_sem::Error> {
/// use ipc_sem::NamedSemaphore;
/// # let name = format!("/ipcrs-doc-named-{}", std::process::id());
/// let owner = NamedSemaphore::create(&name, 1)?; // mode 0600, removed when `owner` drops
/// let other = NamedSemaphore::open(&name)?; // e.g. in another process
/// {
///     let _held = other.acquire()?;
///     assert!(owner.try_wait().is_err()); // held: WouldBlock
/// }
/// assert_eq!(owner.value()?, 1);
/// assert!(owner.is_owner() && !other.is_owner());
/// # Ok(()) }
/// ```
pub struct NamedSemaphore {
    sem: MappedSem,
    name: String,
    /// `/dev/shm/sem.NAME`, made once so that `Drop` allocates nothing.
    path: CString,
    /// The file this handle mapped (pinned by the mapping).
    ident: Ident,
    owner: Option<Owner>,
}

impl fmt::Debug for NamedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedSemaphore")
            .field("name", &self.name)
            .field("owner", &self.is_owner())
            .field("value", &self.value().ok())
            .finish()
    }
}

impl NamedSemaphore {
    /// The options, to set the mode, the drop behaviour, the owner check or `replace_stale`.
    pub const fn options() -> NamedSemaphoreOptions {
        NamedSemaphoreOptions::new()
    }

    /// Creates a new semaphore with the initial `value`, mode 0600: the owner
    /// (`NamedSemaphore::options().create(name, value)`).
    ///
    /// # Errors
    /// As [`NamedSemaphoreOptions::create`].
    #[doc(alias = "sem_open")]
    pub fn create(name: &str, value: u32) -> Result<NamedSemaphore> {
        NamedSemaphore::options().create(name, value)
    }

    /// Opens an existing semaphore of our uid (`NamedSemaphore::options().open(name)`).
    ///
    /// # Errors
    /// As [`NamedSemaphoreOptions::open`].
    pub fn open(name: &str) -> Result<NamedSemaphore> {
        NamedSemaphore::options().open(name)
    }

    /// Opens the semaphore, or creates it with `value`
    /// (`NamedSemaphore::options().open_or_create(name, value)`).
    ///
    /// # Errors
    /// As [`NamedSemaphoreOptions::open_or_create`].
    pub fn open_or_create(name: &str, value: u32) -> Result<(NamedSemaphore, Opened)> {
        NamedSemaphore::options().open_or_create(name, value)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this handle is the owner: it created the semaphore, in this process (false in
    /// a forked child and for openers). An owner told to keep the semaphore
    /// ([`OnDrop::Keep`], [`persist`](Self::persist)) is still the owner until it is dropped.
    pub fn is_owner(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|o| o.pid == std::process::id())
    }

    /// Whether dropping this handle removes the name.
    fn removes_on_drop(&self) -> bool {
        self.is_owner()
            && self
                .owner
                .as_ref()
                .is_some_and(|o| o.on_drop == OnDrop::Remove)
    }

    /// Keeps the semaphore after this owner is dropped (as [`OnDrop::Keep`] at create). The
    /// handle stays the owner — its owner lock held, so [`remove_stale`] refuses — until it is
    /// dropped; then the semaphore is ownerless. Remove it later with [`unlink`] or
    /// [`remove_stale`].
    pub fn persist(&mut self) {
        if let Some(o) = &mut self.owner {
            o.on_drop = OnDrop::Keep;
        }
    }

    /// `sem_unlink`—Removes the name now, reporting errors, if it still refers to this
    /// handle's semaphore (processes that have it open keep using it).
    ///
    /// # Errors
    /// [`Error::NotOwner`] unless [`is_owner`](Self::is_owner) (nothing is removed: remove a
    /// name you did not create with [`unlink`] or [`remove_stale`]); [`Error::NotFound`] if
    /// the name is gone or refers to another semaphore (left alone);
    /// [`Error::PermissionDenied`].
    #[doc(alias = "sem_unlink")]
    pub fn remove(mut self) -> Result<()> {
        if !self.is_owner() {
            return Err(Error::NotOwner {
                name: self.name.clone(),
            });
        }
        self.persist();
        match file::unlink_if(&self.path, self.ident)
            .map_err(|e| Error::named(e, || self.name.clone()))?
        {
            Unlinked::Removed => Ok(()),
            Unlinked::Gone | Unlinked::Replaced => Err(Error::NotFound {
                name: self.name.clone(),
            }),
        }
    }

    #[inline]
    pub(crate) fn cell(&self) -> &SemCell {
        self.sem.get()
    }
}

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        if self.removes_on_drop() {
            let _ = file::unlink_if(&self.path, self.ident);
        }
        // Then the mapping is unmapped and the owner's descriptor closed: no lock is taken.
    }
}

/// `sem_unlink`—Removes a named semaphore's name, whoever made it (explicit clean-up;
/// processes that have it open keep it). Prefer [`remove_stale`], which spares live owners.
///
/// # Errors
/// [`Error::InvalidName`] before any syscall; [`Error::NotFound`];
/// [`Error::PermissionDenied`].
#[doc(alias = "sem_unlink")]
pub fn unlink(name: &str) -> Result<()> {
    let path = name::sem_path(name)?;
    rustix::fs::unlink(path.as_c_str()).map_err(|e| Error::named(e.into(), || name.to_owned()))
}

/// Removes the named semaphore only if its owner is dead: no live process holds the owner's
/// descriptor (its creator was killed, is a zombie, or dropped it with [`OnDrop::Keep`]), or it
/// was made by a program that does not use this crate (no owner lock).
///
/// "Holds" counts children: one the owner forked, and, until it execs, one being spawned
/// (it has copies of all the parent's descriptors for that moment).
///
/// # Errors
/// [`Error::InvalidName`] before any syscall; [`Error::NotFound`]; [`Error::OwnerAlive`];
/// [`Error::InvalidObject`] for a symbolic link or non-regular file under the name (left
/// alone); [`Error::PermissionDenied`].
pub fn remove_stale(name: &str) -> Result<()> {
    let path = name::sem_path(name)?;
    file::remove_stale(&path, name)
}
