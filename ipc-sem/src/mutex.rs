//! A robust, process-shared pthread mutex in memory the caller provides.

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::time::Duration;

use static_assertions::{assert_eq_align, assert_eq_size};

use crate::error::{Error, Result};
use crate::sys::{MutexPtr, NotSend};
use crate::time::Deadline;

/// The memory of one robust mutex (`pthread_mutex_t`), to place in shared memory: 40 bytes,
/// 8-byte aligned on x86-64 Linux (pinned with `static_assertions`). Initialise it with
/// [`RobustMutex::init`].
#[repr(C)]
pub struct RawRobustMutex(UnsafeCell<MaybeUninit<libc::pthread_mutex_t>>);

assert_eq_size!(RawRobustMutex, libc::pthread_mutex_t);
assert_eq_align!(RawRobustMutex, libc::pthread_mutex_t);
#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
static_assertions::const_assert!(
    std::mem::size_of::<RawRobustMutex>() == 40 && std::mem::align_of::<RawRobustMutex>() == 8
);

impl RawRobustMutex {
    /// Its size in bytes.
    pub const SIZE: usize = std::mem::size_of::<RawRobustMutex>();
    /// Its alignment in bytes.
    pub const ALIGN: usize = std::mem::align_of::<RawRobustMutex>();
}

impl fmt::Debug for RawRobustMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawRobustMutex")
    }
}

/// A handle to a robust, process-shared mutex (`PTHREAD_PROCESS_SHARED`,
/// `PTHREAD_MUTEX_ROBUST`, error-checking) that lives in memory the caller provides.
///
/// [`init`](Self::init) it once, [`attach`](Self::attach) in each other process. When a holder
/// dies (even by `SIGKILL`), the kernel hands the mutex to the next locker with "owner died":
/// [`lock`](Self::lock) returns [`Locked::OwnerDied`]. That locker repairs the protected data
/// and calls [`OwnerDiedGuard::make_consistent`]; if it unlocks without doing so, the mutex is
/// unrecoverable and every later lock fails with [`Error::NotRecoverable`], as POSIX defines.
///
/// Ownership belongs to a thread: the guards are not `Send`.
///
/// ```
/// use std::mem::MaybeUninit;
/// use std::ptr::NonNull;
/// use ipc_sem::{Locked, RawRobustMutex, RobustMutex};
/// # fn main() -> Result<(), ipc_sem::Error> {
/// // Private memory for brevity; between processes, a shared mapping every process maps.
/// let mut slot = MaybeUninit::<RawRobustMutex>::uninit();
/// let slot = NonNull::new(slot.as_mut_ptr()).unwrap();
/// // SAFETY: aligned, initialised once, not moved while `m` lives, destroyed once below.
/// let m = unsafe { RobustMutex::init(slot) }?;
/// match m.lock()? {
///     Locked::Normal(_guard) => { /* use the protected data */ }
///     Locked::OwnerDied(guard) => {
///         // The previous owner died holding it: repair the data, then
///         let _guard = guard.make_consistent()?;
///     }
/// }
/// // SAFETY: unlocked, and nobody uses it any more.
/// unsafe { m.destroy() }?;
/// # Ok(()) }
/// ```
pub struct RobustMutex {
    ptr: MutexPtr,
}

impl fmt::Debug for RobustMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RobustMutex").finish_non_exhaustive()
    }
}

/// The result of a successful lock: normal, or after the previous owner died holding it.
#[must_use = "dropping the result unlocks the mutex at once"]
#[derive(Debug)]
pub enum Locked<'a> {
    /// Locked; the previous owner unlocked normally.
    Normal(MutexGuard<'a>),
    /// Locked, but the previous owner died while holding it: the data it protects may be
    /// half-updated. Repair it, then call [`OwnerDiedGuard::make_consistent`].
    OwnerDied(OwnerDiedGuard<'a>),
}

impl<'a> Locked<'a> {
    /// Whether the previous owner died holding the mutex.
    pub fn is_owner_died(&self) -> bool {
        matches!(self, Locked::OwnerDied(_))
    }

    /// The guard, marking the mutex consistent first if its owner died (for data that needs
    /// no repair).
    ///
    /// # Errors
    /// What `pthread_mutex_consistent` fails with.
    pub fn recover(self) -> Result<MutexGuard<'a>> {
        match self {
            Locked::Normal(g) => Ok(g),
            Locked::OwnerDied(g) => g.make_consistent(),
        }
    }
}

/// Holds the robust mutex; unlocks it when dropped.
#[must_use = "dropping the guard unlocks the mutex at once"]
pub struct MutexGuard<'a> {
    m: &'a MutexPtr,
    _not_send: NotSend,
}

impl fmt::Debug for MutexGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard").finish_non_exhaustive()
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        let _ = self.m.unlock();
    }
}

/// Holds a robust mutex whose previous owner died. Call
/// [`make_consistent`](Self::make_consistent) after repairing the data; dropping this guard
/// without it unlocks the mutex *unrecoverably*.
#[must_use = "dropping this guard makes the mutex unrecoverable"]
pub struct OwnerDiedGuard<'a> {
    m: &'a MutexPtr,
    _not_send: NotSend,
}

impl fmt::Debug for OwnerDiedGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerDiedGuard").finish_non_exhaustive()
    }
}

impl<'a> OwnerDiedGuard<'a> {
    /// `pthread_mutex_consistent`—Declares the protected data repaired; the mutex works
    /// normally again. Returns the normal guard.
    ///
    /// # Errors
    /// What `pthread_mutex_consistent` fails with; the mutex is then unlocked without being
    /// made consistent (so it becomes unrecoverable).
    #[doc(alias = "pthread_mutex_consistent")]
    pub fn make_consistent(self) -> Result<MutexGuard<'a>> {
        let m = self.m;
        let rc = m.make_consistent();
        if rc != 0 {
            return Err(Error::errno(rc));
        }
        std::mem::forget(self);
        Ok(MutexGuard {
            m,
            _not_send: NotSend::default(),
        })
    }
}

impl Drop for OwnerDiedGuard<'_> {
    fn drop(&mut self) {
        let _ = self.m.unlock();
    }
}

impl RobustMutex {
    pub(crate) fn from_ptr(ptr: MutexPtr) -> RobustMutex {
        RobustMutex { ptr }
    }

    pub(crate) fn ptr(&self) -> &MutexPtr {
        &self.ptr
    }

    fn locked(&self, rc: i32) -> Result<Locked<'_>> {
        match rc {
            0 => Ok(Locked::Normal(MutexGuard {
                m: &self.ptr,
                _not_send: NotSend::default(),
            })),
            libc::EOWNERDEAD => Ok(Locked::OwnerDied(OwnerDiedGuard {
                m: &self.ptr,
                _not_send: NotSend::default(),
            })),
            libc::EBUSY => Err(Error::WouldBlock),
            rc => Err(Error::errno(rc)),
        }
    }

    /// `pthread_mutex_lock`—Waits for the mutex.
    ///
    /// # Errors
    /// [`Error::NotRecoverable`] if an owner died and nobody made it consistent;
    /// [`Error::Deadlock`] if this thread holds it already.
    #[doc(alias = "pthread_mutex_lock")]
    pub fn lock(&self) -> Result<Locked<'_>> {
        self.locked(self.ptr.lock())
    }

    /// Takes the mutex if it is free, without waiting.
    ///
    /// Implemented as `pthread_mutex_clocklock` with a deadline in the past, not
    /// `pthread_mutex_trylock`: glibc's trylock, on an unrecoverable robust mutex, returns
    /// `ENOTRECOVERABLE` but leaves the lock word held by the caller, so every later lock
    /// would fail with `EDEADLK` in this thread and block in all others.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if another thread holds it; as [`lock`](Self::lock).
    #[doc(alias = "pthread_mutex_trylock")]
    pub fn try_lock(&self) -> Result<Locked<'_>> {
        self.locked(self.ptr.try_lock())
    }

    /// `pthread_mutex_clocklock(CLOCK_MONOTONIC)`—Waits at most `timeout`. Zero only tries;
    /// `Duration::MAX` waits forever.
    ///
    /// # Errors
    /// [`Error::TimedOut`] at the deadline; as [`lock`](Self::lock).
    #[doc(alias = "pthread_mutex_clocklock")]
    #[doc(alias = "pthread_mutex_timedlock")]
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Locked<'_>> {
        if timeout.is_zero() {
            return self.try_lock().map_err(|e| match e {
                Error::WouldBlock => Error::TimedOut,
                e => e,
            });
        }
        match Deadline::after(timeout) {
            Deadline::Forever => self.lock(),
            Deadline::At(at) => self.locked(self.ptr.clock_lock(&at)),
        }
    }
}
