//! POSIX semaphores: named (`sem_open`) and unnamed process-shared (`sem_init(pshared = 1)`).

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::time::Duration;

use static_assertions::{assert_eq_align, assert_eq_size};

use crate::error::{Error, Result};
use crate::name;
use crate::sys::{NamedSem, SemPtr, SharedSem};
use crate::time::Deadline;

/// The largest value a POSIX semaphore holds (`SEM_VALUE_MAX`, `INT_MAX` on Linux).
pub const SEM_VALUE_MAX: u32 = i32::MAX as u32;

pub(crate) fn check_value(value: u32) -> Result<()> {
    if value > SEM_VALUE_MAX {
        Err(Error::ValueTooLarge {
            value: u64::from(value),
            max: u64::from(SEM_VALUE_MAX),
        })
    } else {
        Ok(())
    }
}

fn wait(s: &SemPtr) -> Result<()> {
    loop {
        match s.wait() {
            Ok(()) => return Ok(()),
            Err(libc::EINTR) => continue,
            Err(e) => return Err(Error::errno(e)),
        }
    }
}

#[inline]
fn try_wait(s: &SemPtr) -> Result<()> {
    loop {
        match s.try_wait() {
            Ok(()) => return Ok(()),
            Err(libc::EAGAIN) => return Err(Error::WouldBlock),
            Err(libc::EINTR) => continue,
            Err(e) => return Err(Error::errno(e)),
        }
    }
}

fn wait_timeout(s: &SemPtr, timeout: Duration) -> Result<()> {
    if timeout.is_zero() {
        return try_wait(s).map_err(|e| match e {
            Error::WouldBlock => Error::TimedOut,
            e => e,
        });
    }
    match Deadline::after(timeout) {
        Deadline::Forever => wait(s),
        Deadline::At(at) => loop {
            // The deadline is absolute, so a retry after EINTR does not extend it.
            match s.clock_wait(&at) {
                Ok(()) => return Ok(()),
                Err(libc::EINTR) => continue,
                Err(libc::ETIMEDOUT) => return Err(Error::TimedOut),
                Err(e) => return Err(Error::errno(e)),
            }
        },
    }
}

#[inline]
fn post(s: &SemPtr) -> Result<()> {
    match s.post() {
        Ok(()) => Ok(()),
        Err(libc::EOVERFLOW) => Err(Error::Overflow),
        Err(e) => Err(Error::errno(e)),
    }
}

fn value(s: &SemPtr) -> Result<u32> {
    s.value()
        .map(|v| u32::try_from(v).unwrap_or(0))
        .map_err(Error::errno)
}

/// A held unit of a POSIX semaphore: posts it back when dropped.
///
/// Returned by `acquire`, `try_acquire` and `acquire_timeout` of [`NamedSemaphore`],
/// [`SharedSemaphore`] and [`InPlaceSemaphore`].
#[must_use = "dropping the guard posts the semaphore at once"]
pub struct SemGuard<'a> {
    sem: &'a SemPtr,
}

impl fmt::Debug for SemGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemGuard").finish_non_exhaustive()
    }
}

impl SemGuard<'_> {
    /// Posts now and reports an error (`Drop` would ignore it).
    ///
    /// # Errors
    /// [`Error::Overflow`] if someone else posted the value up to `SEM_VALUE_MAX` meanwhile.
    pub fn release(self) -> Result<()> {
        let sem = self.sem;
        std::mem::forget(self);
        post(sem)
    }
}

impl Drop for SemGuard<'_> {
    fn drop(&mut self) {
        let _ = post(self.sem);
    }
}

/// The operations every POSIX semaphore handle has.
macro_rules! posix_ops {
    ($t:ty) => {
        impl $t {
            /// `sem_wait`—Waits until the value is above zero and decrements it. `EINTR` is
            /// retried.
            ///
            /// # Errors
            /// Only unexpected OS errors ([`Error::Io`]).
            #[doc(alias = "sem_wait")]
            pub fn wait(&self) -> Result<()> {
                wait(self.raw())
            }

            /// `sem_trywait`—Decrements the value if it is above zero, without waiting. On
            /// glibc this is a userspace atomic operation: no system call.
            ///
            /// # Errors
            /// [`Error::WouldBlock`] if the value is zero.
            #[doc(alias = "sem_trywait")]
            #[inline]
            pub fn try_wait(&self) -> Result<()> {
                try_wait(self.raw())
            }

            /// `sem_clockwait(CLOCK_MONOTONIC)`—Waits at most `timeout` (measured on the
            /// monotonic clock, so changes of the wall clock do not matter). Zero only tries;
            /// `Duration::MAX` waits forever. `EINTR` is retried against the same deadline.
            ///
            /// # Errors
            /// [`Error::TimedOut`] if the value stayed zero until the deadline.
            #[doc(alias = "sem_clockwait")]
            #[doc(alias = "sem_timedwait")]
            pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
                wait_timeout(self.raw(), timeout)
            }

            /// `sem_post`—Increments the value, waking one waiter. With no waiter on glibc it
            /// is a userspace atomic operation: no system call.
            ///
            /// # Errors
            /// [`Error::Overflow`] if the value is already `SEM_VALUE_MAX` (it is unchanged).
            #[doc(alias = "sem_post")]
            #[inline]
            pub fn post(&self) -> Result<()> {
                post(self.raw())
            }

            /// `sem_getvalue`—The current value (a snapshot: it may change at once).
            ///
            /// # Errors
            /// Only unexpected OS errors.
            #[doc(alias = "sem_getvalue")]
            pub fn value(&self) -> Result<u32> {
                value(self.raw())
            }

            /// Waits like [`wait`](Self::wait) and returns a guard that posts on drop.
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            pub fn acquire(&self) -> Result<SemGuard<'_>> {
                self.wait()?;
                Ok(SemGuard { sem: self.raw() })
            }

            /// Tries like [`try_wait`](Self::try_wait) and returns a guard that posts on drop.
            ///
            /// # Errors
            /// [`Error::WouldBlock`] if the value is zero.
            #[inline]
            pub fn try_acquire(&self) -> Result<SemGuard<'_>> {
                self.try_wait()?;
                Ok(SemGuard { sem: self.raw() })
            }

            /// Waits like [`wait_timeout`](Self::wait_timeout) and returns a guard that posts
            /// on drop.
            ///
            /// # Errors
            /// [`Error::TimedOut`] at the deadline.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemGuard<'_>> {
                self.wait_timeout(timeout)?;
                Ok(SemGuard { sem: self.raw() })
            }
        }
    };
}

posix_ops!(NamedSemaphore);
posix_ops!(SharedSemaphore);
posix_ops!(InPlaceSemaphore);

// ---------------------------------------------------------------------------------------------

/// A POSIX named semaphore (`sem_open`): any process that knows the name can open it.
///
/// [`create`](Self::create) makes a new one exclusively and returns its *owner*, which unlinks
/// the name when dropped in the process that created it; [`open`](Self::open) attaches to an
/// existing one. Processes that have it open keep using it after the name is unlinked.
///
/// It does **not** survive a holder's crash: a process killed between `wait` and `post` takes
/// its unit with it. Use [`wait_timeout`](Self::wait_timeout) to notice, or a System V set with
/// undo ([`crate::SemSet`]) or a [`crate::RobustMutex`].
///
/// ```
/// # fn main() -> Result<(), ipc_sem::Error> {
/// use ipc_sem::NamedSemaphore;
/// # let name = format!("/ipcrs-doc-named-{}", std::process::id());
/// let owner = NamedSemaphore::create(&name, 1)?; // mode 0600, unlinked when `owner` drops
/// let other = NamedSemaphore::open(&name)?; // e.g. in another process
/// {
///     let _held = other.acquire()?;
///     assert!(owner.try_wait().is_err()); // held: WouldBlock
/// }
/// assert_eq!(owner.value()?, 1);
/// # Ok(()) }
/// ```
pub struct NamedSemaphore {
    sem: NamedSem,
    name: String,
    owner: Option<u32>,
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
    /// `sem_open(O_CREAT | O_EXCL)`—Creates a new semaphore with the initial `value`, mode
    /// 0600 (applied with `fchmod`, so the umask does not matter). Returns the owner.
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::ValueTooLarge`] before any syscall;
    /// [`Error::AlreadyExists`] if the name is taken.
    #[doc(alias = "sem_open")]
    pub fn create(name: &str, value: u32) -> Result<NamedSemaphore> {
        NamedSemaphore::create_with_mode(name, value, 0o600)
    }

    /// Like [`create`](Self::create) with the permission bits `mode` (e.g. `0o660`).
    ///
    /// # Errors
    /// As [`create`](Self::create); [`Error::ValueTooLarge`] also for mode bits outside 0o777.
    pub fn create_with_mode(name: &str, value: u32, mode: u32) -> Result<NamedSemaphore> {
        let cname = name::validate(name)?;
        check_value(value)?;
        if mode & !0o777 != 0 {
            return Err(Error::ValueTooLarge {
                value: u64::from(mode),
                max: 0o777,
            });
        }
        let sem = NamedSem::create(&cname, mode, value)?;
        let this = NamedSemaphore {
            sem,
            name: name.to_owned(),
            owner: Some(std::process::id()),
        };
        // The file now exists with `mode & !umask`; set the exact mode on the file we created
        // (O_NOFOLLOW, and checked to be a regular file owned by us). On failure, dropping
        // `this` unlinks the name (once: a second unlink could hit someone else's new object).
        set_mode(name, mode)?;
        Ok(this)
    }

    /// `sem_open(name, 0)`—Opens an existing semaphore. The handle never unlinks it.
    ///
    /// glibc opens `/dev/shm/sem.NAME` with `O_NOFOLLOW`, so a symlink planted under the name
    /// is refused.
    ///
    /// # Errors
    /// [`Error::InvalidName`] before any syscall; [`Error::NotFound`];
    /// [`Error::PermissionDenied`].
    pub fn open(name: &str) -> Result<NamedSemaphore> {
        let cname = name::validate(name)?;
        let sem = NamedSem::open(&cname)?;
        Ok(NamedSemaphore {
            sem,
            name: name.to_owned(),
            owner: None,
        })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether dropping this handle unlinks the name (it is the owner, in the creating process).
    pub fn is_owner(&self) -> bool {
        self.owner == Some(std::process::id())
    }

    /// Keeps the name after this handle is dropped; remove it later with [`unlink`].
    pub fn into_persistent(mut self) -> NamedSemaphore {
        self.owner = None;
        self
    }

    fn raw(&self) -> &SemPtr {
        &self.sem
    }
}

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        if self.is_owner() {
            if let Ok(c) = name::validate(&self.name) {
                let _ = crate::sys::sem_unlink(&c);
            }
        }
    }
}

/// Sets the exact permission bits of a semaphore we just created, through its file in
/// `/dev/shm` (opened with `O_NOFOLLOW`, checked to be a regular file owned by us).
fn set_mode(name: &str, mode: u32) -> Result<()> {
    use rustix::fs::{FileType, Mode, OFlags};
    let path = name::dev_shm_path(name);
    let fd = rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || st.st_uid != rustix::process::geteuid().as_raw()
    {
        return Err(Error::PermissionDenied);
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// `sem_unlink`—Removes a named semaphore's name (processes that have it open keep it).
///
/// # Errors
/// [`Error::InvalidName`] before any syscall; [`Error::NotFound`].
#[doc(alias = "sem_unlink")]
pub fn unlink(name: &str) -> Result<()> {
    let cname = name::validate(name)?;
    crate::sys::sem_unlink(&cname)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------

/// An unnamed process-shared POSIX semaphore (`sem_init(pshared = 1)`) in its own anonymous
/// shared page: processes forked after `new` share it.
///
/// Use it between a parent and its forked children. For semaphores in memory that unrelated
/// processes map (a shared-memory segment), use [`InPlaceSemaphore`].
/// Like every POSIX semaphore, it does not survive a holder's crash.
///
/// ```
/// # fn main() -> Result<(), ipc_sem::Error> {
/// let done = ipc_sem::SharedSemaphore::new(0)?;
/// // ... fork; the child calls `done.post()` when its work is finished ...
/// # done.post()?;
/// done.wait_timeout(std::time::Duration::from_secs(5))?;
/// # Ok(()) }
/// ```
pub struct SharedSemaphore {
    inner: SharedSem,
}

impl fmt::Debug for SharedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSemaphore")
            .field("value", &self.value().ok())
            .finish()
    }
}

impl SharedSemaphore {
    /// Maps an anonymous `MAP_SHARED` page and initialises a process-shared semaphore with
    /// `value` in it. The creating process destroys it on drop; forked children only unmap.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`] before any syscall; `mmap` failures.
    #[doc(alias = "sem_init")]
    pub fn new(value: u32) -> Result<SharedSemaphore> {
        Ok(SharedSemaphore {
            inner: SharedSem::new(value)?,
        })
    }

    fn raw(&self) -> &SemPtr {
        self.inner.sem()
    }
}

/// The memory of one unnamed POSIX semaphore (`sem_t`), to place in shared memory: 32 bytes,
/// 8-byte aligned on 64-bit Linux (pinned with `static_assertions`). Initialise it with
/// [`InPlaceSemaphore::init`].
#[repr(C)]
pub struct RawSemaphore(UnsafeCell<MaybeUninit<libc::sem_t>>);

assert_eq_size!(RawSemaphore, libc::sem_t);
assert_eq_align!(RawSemaphore, libc::sem_t);
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
static_assertions::const_assert!(
    std::mem::size_of::<RawSemaphore>() == 32 && std::mem::align_of::<RawSemaphore>() == 8
);

impl RawSemaphore {
    /// Its size in bytes.
    pub const SIZE: usize = std::mem::size_of::<RawSemaphore>();
    /// Its alignment in bytes.
    pub const ALIGN: usize = std::mem::align_of::<RawSemaphore>();
}

impl fmt::Debug for RawSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSemaphore")
    }
}

/// A handle to an unnamed process-shared semaphore in memory the caller provides (for example
/// a shared-memory segment every process maps): [`init`](Self::init) once, then
/// [`attach`](Self::attach) in each other process. Dropping a handle does nothing;
/// [`destroy`](Self::destroy) ends the semaphore.
///
/// ```
/// use std::mem::MaybeUninit;
/// use std::ptr::NonNull;
/// use ipc_sem::{InPlaceSemaphore, RawSemaphore};
/// # fn main() -> Result<(), ipc_sem::Error> {
/// // Here private memory for brevity; between processes it is a shared mapping (MAP_SHARED)
/// // that every process maps, e.g. an ipc-shm segment.
/// let mut slot = MaybeUninit::<RawSemaphore>::uninit();
/// let slot = NonNull::new(slot.as_mut_ptr()).unwrap();
/// // SAFETY: aligned, initialised once, not moved while `sem` lives, destroyed once below.
/// let sem = unsafe { InPlaceSemaphore::init(slot, 1) }?;
/// // SAFETY: `slot` was initialised above and outlives `other`.
/// let other = unsafe { InPlaceSemaphore::attach(slot) };
/// other.wait()?;
/// sem.post()?;
/// drop(other);
/// // SAFETY: nobody uses it any more.
/// unsafe { sem.destroy() }?;
/// # Ok(()) }
/// ```
pub struct InPlaceSemaphore {
    pub(crate) sem: SemPtr,
}

impl fmt::Debug for InPlaceSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InPlaceSemaphore")
            .field("value", &self.value().ok())
            .finish()
    }
}

impl InPlaceSemaphore {
    fn raw(&self) -> &SemPtr {
        &self.sem
    }
}
