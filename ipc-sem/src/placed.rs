//! Robust mutexes that ipc-sem places itself: anonymous ([`SharedMutex`], a sealed memfd) and
//! named ([`NamedMutex`], a POSIX shared-memory object), both following the init-once protocol
//! and, for the named one, the lifetime model.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::anon;
use crate::error::{Error, Result};
use crate::file::{self, Ident, Unlinked};
use crate::lifetime::{OPEN_OR_CREATE_ATTEMPTS, OnDrop, Opened, OwnerCheck, check_mode};
use crate::mutex::RobustMutex;
use crate::name;
use crate::once::{self, Begun, READY};
use crate::sys::{MappedSlot, MutexCell};

/// Initialises the mutex in a fresh mapping that only we can reach.
fn init_fresh(map: &MappedSlot<MutexCell>, name: &dyn Fn() -> String) -> Result<()> {
    match once::begin(map.get(), name)? {
        Begun::Won(claim) => {
            claim.init().map_err(Error::errno)?;
            claim.publish(READY);
            Ok(())
        }
        Begun::Taken => Err(Error::AlreadyInitialized { name: name() }),
    }
}

/// A mapped mutex slot and the handle on it. Dropped, it unmaps the slot, unless a lock taken
/// through the handle is still held (a forgotten guard): then the memory stays mapped, because
/// the holding thread's robust list points into it.
struct Placed {
    map: Option<MappedSlot<MutexCell>>,
    mutex: RobustMutex,
}

impl Placed {
    fn new(map: MappedSlot<MutexCell>) -> Placed {
        Placed {
            mutex: RobustMutex::from_ptr(map.ptr()),
            map: Some(map),
        }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            if self.mutex.holds_locks() {
                map.leak();
            }
        }
    }
}

/// A robust, process-shared mutex in its own anonymous shared memory: a sealed memfd
/// (`memfd_create`, close-on-exec) mapped `MAP_SHARED`. It dereferences to [`RobustMutex`]
/// for `lock`, `try_lock` and `lock_timeout`.
///
/// Processes forked after [`new`](Self::new) share it through the inherited mapping; a spawned
/// child gets it as a descriptor, passed explicitly (with std only: as one of its standard
/// streams), and rebuilds it with [`from_fd`](Self::from_fd). The memfd is sealed against
/// shrinking and growing, so no holder can truncate it under another. For unrelated processes,
/// use [`NamedMutex`].
///
/// After `fork` (also from a multi-threaded parent), the child may lock and unlock it and drop
/// the handle (`munmap` and `close` only).
///
/// ```
/// use std::os::fd::AsFd;
/// use std::process::{Command, Stdio};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let m = ipc_sem::SharedMutex::new()?;
/// // A spawned child gets it as its stdin and calls `SharedMutex::from_fd` on a dup of fd 0.
/// let status = Command::new("true")
///     .stdin(Stdio::from(m.as_fd().try_clone_to_owned()?))
///     .status()?;
/// assert!(status.success());
/// let guard = m.lock()?.recover()?;
/// drop(guard);
/// # Ok(()) }
/// ```
pub struct SharedMutex {
    placed: Placed,
    fd: OwnedFd,
}

impl fmt::Debug for SharedMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMutex")
            .field("fd", &self.fd.as_raw_fd())
            .finish_non_exhaustive()
    }
}

impl SharedMutex {
    /// Creates a sealed memfd of [`RawRobustMutex::SIZE`](crate::RawRobustMutex::SIZE) bytes,
    /// maps it shared and initialises a robust, process-shared, error-checking mutex in it.
    ///
    /// # Errors
    /// `memfd_create`/`mmap` failures (`EMFILE`, `ENOMEM`); what `pthread_mutex_init` fails
    /// with.
    #[doc(alias = "pthread_mutex_init")]
    #[doc(alias = "memfd_create")]
    pub fn new() -> Result<SharedMutex> {
        let fd = anon::create("ipc-sem-mutex", MappedSlot::<MutexCell>::SIZE)?;
        let map = MappedSlot::<MutexCell>::map(fd.as_fd())?;
        init_fresh(&map, &|| anon::fd_name(fd.as_fd()))?;
        Ok(SharedMutex {
            placed: Placed::new(map),
            fd,
        })
    }

    /// Rebuilds a mutex from its descriptor (received from the parent). The descriptor is
    /// checked before it is mapped: a memfd sealed against shrinking and growing, of exactly
    /// [`RawRobustMutex::SIZE`](crate::RawRobustMutex::SIZE) bytes, holding an initialised mutex.
    ///
    /// # Errors
    /// [`Error::InvalidObject`]; [`Error::WrongSize`].
    pub fn from_fd(fd: OwnedFd) -> Result<SharedMutex> {
        anon::check(fd.as_fd(), MappedSlot::<MutexCell>::SIZE)?;
        let map = MappedSlot::<MutexCell>::map(fd.as_fd())?;
        once::wait_ready(map.get(), Duration::ZERO, &|| anon::fd_name(fd.as_fd()))?;
        Ok(SharedMutex {
            placed: Placed::new(map),
            fd,
        })
    }
}

impl Deref for SharedMutex {
    type Target = RobustMutex;
    fn deref(&self) -> &RobustMutex {
        &self.placed.mutex
    }
}

impl AsFd for SharedMutex {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for SharedMutex {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The memfd (this handle's mapping is unmapped, unless it is still locked through it; others
/// keep theirs).
impl From<SharedMutex> for OwnedFd {
    fn from(m: SharedMutex) -> OwnedFd {
        m.fd
    }
}

/// As [`SharedMutex::from_fd`].
impl TryFrom<OwnedFd> for SharedMutex {
    type Error = Error;
    fn try_from(fd: OwnedFd) -> Result<SharedMutex> {
        SharedMutex::from_fd(fd)
    }
}

// ---------------------------------------------------------------------------------------------

/// How to create or open a [`NamedMutex`]: `NamedMutex::options()`, `const fn` setters, then
/// [`create`](Self::create), [`open`](Self::open) or [`open_or_create`](Self::open_or_create).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedMutexOptions {
    mode: u32,
    on_drop: OnDrop,
    owner_check: OwnerCheck,
    replace_stale: bool,
}

impl Default for NamedMutexOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl NamedMutexOptions {
    /// The defaults: mode 0600, [`OnDrop::Remove`], [`OwnerCheck::SameUid`], no
    /// `replace_stale`.
    pub const fn new() -> Self {
        NamedMutexOptions {
            mode: 0o600,
            on_drop: OnDrop::Remove,
            owner_check: OwnerCheck::SameUid,
            replace_stale: false,
        }
    }

    /// The permission bits of a created mutex (default `0o600`), set with `fchmod`. Bits
    /// outside `0o777` are [`Error::InvalidMode`].
    pub const fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// What the owner does when dropped (default [`OnDrop::Remove`]).
    pub const fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }

    /// Whose mutexes `open` accepts (default [`OwnerCheck::SameUid`]).
    pub const fn owner_check(mut self, check: OwnerCheck) -> Self {
        self.owner_check = check;
        self
    }

    /// `create` first removes a stale object under the name (owner dead, as
    /// [`NamedMutex::remove_stale`]); a live owner's is [`Error::OwnerAlive`].
    pub const fn replace_stale(mut self) -> Self {
        self.replace_stale = true;
        self
    }

    /// Creates a new named mutex exclusively and returns its owner: the shared-memory object
    /// `/dev/shm/NAME` is made whole (mode, size, initialised mutex, owner lock) before it has
    /// its name, so no process ever opens it half-made.
    ///
    /// # Errors
    /// Before any syscall: [`Error::InvalidName`], [`Error::InvalidMode`]. Then
    /// [`Error::AlreadyExists`]; [`Error::OwnerAlive`] with `replace_stale`;
    /// [`Error::PermissionDenied`].
    pub fn create(&self, name: &str) -> Result<NamedMutex> {
        let path = name::shm_path(name)?;
        check_mode(self.mode)?;
        if self.replace_stale {
            match file::remove_stale(&path, name) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let size = MappedSlot::<MutexCell>::SIZE as u64;
        let (fd, map, ident) = file::create(&path, self.mode, size, &mut |fd| {
            let map = MappedSlot::<MutexCell>::map(fd)?;
            init_fresh(&map, &|| name.to_owned()).map_err(io::Error::from)?;
            Ok(map)
        })
        .map_err(|e| Error::named(e, || name.to_owned()))?;
        Ok(NamedMutex {
            placed: Placed::new(map),
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

    /// Opens an existing named mutex (never removed by this handle). The object is opened with
    /// `O_NOFOLLOW` and checked before it is mapped: a regular file of our uid (unless
    /// [`OwnerCheck::AnyUid`]) of exactly the size of a mutex slot, holding an initialised
    /// mutex.
    ///
    /// # Errors
    /// [`Error::InvalidName`] before any syscall; [`Error::NotFound`];
    /// [`Error::PermissionDenied`]; [`Error::WrongOwner`]; [`Error::WrongSize`];
    /// [`Error::InvalidObject`].
    pub fn open(&self, name: &str) -> Result<NamedMutex> {
        let path = name::shm_path(name)?;
        let size = MappedSlot::<MutexCell>::SIZE as u64;
        let (fd, ident) = file::open_checked(&path, name, true, self.owner_check, size)?;
        let map = MappedSlot::<MutexCell>::map(fd.as_fd())?;
        drop(fd);
        once::wait_ready(map.get(), Duration::ZERO, &|| name.to_owned())?;
        Ok(NamedMutex {
            placed: Placed::new(map),
            name: name.to_owned(),
            path,
            ident,
            owner: None,
        })
    }

    /// Opens the mutex if it exists, else creates it; bounded as
    /// [`NamedSemaphoreOptions::open_or_create`](crate::NamedSemaphoreOptions::open_or_create).
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open); [`Error::Contended`].
    pub fn open_or_create(&self, name: &str) -> Result<(NamedMutex, Opened)> {
        for _ in 0..OPEN_OR_CREATE_ATTEMPTS {
            match self.create(name) {
                Ok(m) => return Ok((m, Opened::Created)),
                Err(Error::AlreadyExists { .. } | Error::OwnerAlive { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.open(name) {
                Ok(m) => return Ok((m, Opened::Existing)),
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

struct Owner {
    _fd: OwnedFd,
    pid: u32,
    on_drop: OnDrop,
}

/// A robust, process-shared mutex that unrelated processes open by name. It lives in the POSIX
/// shared-memory object `/NAME` (the file `/dev/shm/NAME`, one mutex slot) and dereferences to
/// [`RobustMutex`] for `lock`, `try_lock` and `lock_timeout`.
///
/// It follows the workspace's lifetime model, as [`NamedSemaphore`](crate::NamedSemaphore):
/// `create` (exclusive) returns the owner, which removes the name on drop if it still refers to
/// its object, only in the creating process; `open` never removes anything; the owner's
/// descriptor carries its liveness lock, so [`remove_stale`](Self::remove_stale) spares live
/// owners. Names share the namespace of POSIX shared memory (`ipc_shm` segments): `/NAME` may
/// be `/` and up to 255 bytes.
///
/// After `fork` (also from a multi-threaded parent), the child may lock and unlock it, call
/// `is_owner` and `name`, and drop the handle (`munmap`/`close` only; it removes nothing).
///
/// ```
/// # fn main() -> Result<(), ipc_sem::Error> {
/// use ipc_sem::NamedMutex;
/// # let name = format!("/ipcrs-doc-mutex-{}", std::process::id());
/// let owner = NamedMutex::create(&name)?;
/// let other = NamedMutex::open(&name)?; // e.g. in another process
/// let held = other.lock()?.recover()?;
/// // Held: another thread or process would get WouldBlock; this thread holds it already.
/// assert!(matches!(owner.try_lock(), Err(ipc_sem::Error::Deadlock)));
/// drop(held);
/// assert!(owner.try_lock().is_ok());
/// # Ok(()) }
/// ```
pub struct NamedMutex {
    placed: Placed,
    name: String,
    path: CString,
    ident: Ident,
    owner: Option<Owner>,
}

impl fmt::Debug for NamedMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedMutex")
            .field("name", &self.name)
            .field("owner", &self.is_owner())
            .finish_non_exhaustive()
    }
}

impl NamedMutex {
    /// The options.
    pub const fn options() -> NamedMutexOptions {
        NamedMutexOptions::new()
    }

    /// `NamedMutex::options().create(name)`.
    ///
    /// # Errors
    /// As [`NamedMutexOptions::create`].
    pub fn create(name: &str) -> Result<NamedMutex> {
        NamedMutex::options().create(name)
    }

    /// `NamedMutex::options().open(name)`.
    ///
    /// # Errors
    /// As [`NamedMutexOptions::open`].
    pub fn open(name: &str) -> Result<NamedMutex> {
        NamedMutex::options().open(name)
    }

    /// `NamedMutex::options().open_or_create(name)`.
    ///
    /// # Errors
    /// As [`NamedMutexOptions::open_or_create`].
    pub fn open_or_create(name: &str) -> Result<(NamedMutex, Opened)> {
        NamedMutex::options().open_or_create(name)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this handle is the owner: it created the object, in this process (false in a
    /// forked child and for openers). An owner told to keep it ([`OnDrop::Keep`],
    /// [`persist`](Self::persist)) is still the owner until it is dropped.
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

    /// Keeps the object after this owner is dropped (as [`OnDrop::Keep`] at create). The handle
    /// stays the owner — its owner lock held — until it is dropped; then the object is
    /// ownerless.
    pub fn persist(&mut self) {
        if let Some(o) = &mut self.owner {
            o.on_drop = OnDrop::Keep;
        }
    }

    /// Removes the name now if it still refers to this handle's object, reporting errors.
    ///
    /// # Errors
    /// [`Error::NotOwner`] unless [`is_owner`](Self::is_owner) (nothing is removed: use
    /// [`NamedMutex::unlink`] or [`NamedMutex::remove_stale`]); [`Error::NotFound`] if the name
    /// is gone or refers to another object (left alone); [`Error::PermissionDenied`].
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

    /// Removes the name `/NAME` whoever made it (explicit clean-up; `shm_unlink`).
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::NotFound`]; [`Error::PermissionDenied`].
    #[doc(alias = "shm_unlink")]
    pub fn unlink(name: &str) -> Result<()> {
        let path = name::shm_path(name)?;
        rustix::fs::unlink(path.as_c_str()).map_err(|e| Error::named(e.into(), || name.to_owned()))
    }

    /// Removes the named mutex only if its owner is dead (as
    /// [`remove_stale`](crate::remove_stale) for semaphores).
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::NotFound`]; [`Error::OwnerAlive`];
    /// [`Error::InvalidObject`]; [`Error::PermissionDenied`].
    pub fn remove_stale(name: &str) -> Result<()> {
        let path = name::shm_path(name)?;
        file::remove_stale(&path, name)
    }
}

impl Deref for NamedMutex {
    type Target = RobustMutex;
    fn deref(&self) -> &RobustMutex {
        &self.placed.mutex
    }
}

impl Drop for NamedMutex {
    fn drop(&mut self) {
        if self.removes_on_drop() {
            let _ = file::unlink_if(&self.path, self.ident);
        }
        // Then `placed` unmaps (or keeps a still-locked slot mapped) and the descriptor closes.
    }
}
