//! A robust, process-shared pthread mutex in memory the caller provides.

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use static_assertions::const_assert;

use crate::error::{Error, Result};
use crate::lifetime::Opened;
use crate::once::{self, Begun, READY};
use crate::sys::{MutexCell, Slot, SlotPtr};
use crate::time::Deadline;

/// The memory of one in-place robust mutex, to place in shared memory: a 4-byte state word
/// (the init-once protocol), 4 bytes of padding, then the `pthread_mutex_t` — 48 bytes, 8-byte
/// aligned on x86-64 Linux (pinned with `static_assertions`).
///
/// Zeroed memory is an uninitialised slot, ready for [`RobustMutex::init`];
/// [`RawRobustMutex::new`] makes one in ordinary memory.
#[repr(transparent)]
pub struct RawRobustMutex(Slot<MutexCell>);

const_assert!(
    std::mem::size_of::<RawRobustMutex>() == 8 + std::mem::size_of::<libc::pthread_mutex_t>()
);
#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
const_assert!(
    std::mem::size_of::<RawRobustMutex>() == 48 && std::mem::align_of::<RawRobustMutex>() == 8
);

impl RawRobustMutex {
    /// Its size in bytes.
    pub const SIZE: usize = std::mem::size_of::<RawRobustMutex>();
    /// Its alignment in bytes.
    pub const ALIGN: usize = std::mem::align_of::<RawRobustMutex>();

    /// An uninitialised slot (all zero).
    pub const fn new() -> RawRobustMutex {
        RawRobustMutex(Slot::<MutexCell>::new())
    }
}

impl Default for RawRobustMutex {
    fn default() -> RawRobustMutex {
        RawRobustMutex::new()
    }
}

impl fmt::Debug for RawRobustMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawRobustMutex")
    }
}

/// Makes a guard type `!Send` (a pthread mutex must be unlocked by the thread that locked it).
type NotSend = PhantomData<*const ()>;

fn slot_name(addr: usize) -> String {
    format!("in-place mutex slot at {addr:#x}")
}

/// A handle to a robust, process-shared mutex (`PTHREAD_PROCESS_SHARED`,
/// `PTHREAD_MUTEX_ROBUST`, error-checking) that lives in memory the caller provides.
///
/// The slot has an init-once protocol: exactly one [`init`](Self::init) wins; the others get
/// [`Error::AlreadyInitialized`]; [`attach_timeout`](Self::attach_timeout) waits (bounded) for
/// an initialiser that has not finished; a slot whose initialiser died half-way is
/// [`Error::InitializerDied`], never used. [`init_or_attach`](Self::init_or_attach) does either.
/// Without shared memory of your own, [`SharedMutex`](crate::SharedMutex) (anonymous, for
/// children) and [`NamedMutex`](crate::NamedMutex) (by name) place one for you, without
/// `unsafe`; both dereference to this type.
///
/// When a holder dies (even by `SIGKILL`), the kernel hands the mutex to the next locker with
/// "owner died": [`lock`](Self::lock) returns [`Locked::OwnerDied`]. That locker repairs the
/// protected data and calls [`OwnerDiedGuard::make_consistent`]; if it unlocks without doing so,
/// the mutex is unrecoverable and every later lock fails with [`Error::NotRecoverable`], as POSIX
/// defines.
///
/// Ownership belongs to a thread: the guards are not `Send`. Every process that can write the
/// mutex's memory is trusted: a robust mutex keeps pointers that its holder follows, so a
/// process that scribbles over it can corrupt the holder.
///
/// After `fork` (also from a multi-threaded parent), the child may call `lock`, `try_lock`,
/// `lock_timeout` and drop guards it took (futex calls and the thread's robust list; glibc
/// re-registers that list in the child), and drop the handle (it does nothing). A lock the
/// parent's thread held is not the child's: unlocking it there fails, dropping its guard
/// returns.
///
/// ```
/// use std::ptr::NonNull;
/// use ipc_sem::{Locked, RawRobustMutex, RobustMutex};
/// # fn main() -> Result<(), ipc_sem::Error> {
/// // Ordinary memory for brevity; between processes, a shared mapping every process maps.
/// let mut slot = Box::new(RawRobustMutex::new());
/// let slot = NonNull::from(&mut *slot);
/// // SAFETY: aligned, zeroed, not moved or freed while `m` lives or any lock is held.
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
    slot: SlotPtr<MutexCell>,
    /// Locks taken through this handle and not released (a forgotten guard stays counted).
    held: AtomicUsize,
}

impl fmt::Debug for RobustMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RobustMutex")
            .field("slot", &(self.slot.addr() as *const ()))
            .finish_non_exhaustive()
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
    m: &'a RobustMutex,
    _not_send: NotSend,
}

impl fmt::Debug for MutexGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard").finish_non_exhaustive()
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        self.m.unlock();
    }
}

/// Holds a robust mutex whose previous owner died. Call
/// [`make_consistent`](Self::make_consistent) after repairing the data; dropping this guard
/// without it unlocks the mutex *unrecoverably*.
#[must_use = "dropping this guard makes the mutex unrecoverable"]
pub struct OwnerDiedGuard<'a> {
    m: &'a RobustMutex,
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
        let rc = m.cell().make_consistent();
        if rc != 0 {
            return Err(Error::errno(rc));
        }
        std::mem::forget(self);
        Ok(MutexGuard {
            m,
            _not_send: PhantomData,
        })
    }
}

impl Drop for OwnerDiedGuard<'_> {
    fn drop(&mut self) {
        self.m.unlock();
    }
}

impl RobustMutex {
    /// A handle on a slot seen ready (the `SlotPtr` contract is the caller's).
    pub(crate) fn from_ptr(slot: SlotPtr<MutexCell>) -> RobustMutex {
        RobustMutex {
            slot,
            held: AtomicUsize::new(0),
        }
    }

    fn from_slot(slot: NonNull<RawRobustMutex>) -> RobustMutex {
        // `RawRobustMutex` is a transparent `Slot<MutexCell>`; the caller's contract is
        // `SlotPtr::from_raw_unchecked`'s.
        RobustMutex::from_ptr(SlotPtr::from_raw_unchecked(slot.cast()))
    }

    fn name(&self) -> String {
        slot_name(self.slot.addr())
    }

    fn cell(&self) -> &MutexCell {
        // Every handle is made only after its slot was seen ready.
        self.slot.cell_unchecked()
    }

    /// Whether a lock taken through this handle is still held (a guard was forgotten): its
    /// memory must then stay mapped, because the holder's robust list points into it.
    pub(crate) fn holds_locks(&self) -> bool {
        self.held.load(Ordering::Acquire) != 0
    }

    /// Unlocks; a lock that did not come off (`EPERM`: not this thread's, as for a guard a
    /// forked child inherited) stays counted, since it may still be on a robust list.
    fn unlock(&self) {
        let _ = self.raw_unlock();
    }

    /// A non-blocking lock attempt by the calling thread, counted as held when it succeeds
    /// (0 or `EOWNERDEAD`); the return code otherwise (`EBUSY`, `EDEADLK`, `ENOTRECOVERABLE`).
    /// For the waiter thread of the async forms, which holds async guards' locks.
    #[cfg(feature = "tokio")]
    pub(crate) fn raw_try_lock(&self) -> i32 {
        let rc = self.cell().try_lock();
        if rc == 0 || rc == libc::EOWNERDEAD {
            self.held.fetch_add(1, Ordering::AcqRel);
        }
        rc
    }

    /// `pthread_mutex_unlock` by the calling thread; the count goes down only if it came off.
    pub(crate) fn raw_unlock(&self) -> i32 {
        let rc = self.cell().unlock();
        if rc == 0 {
            self.held.fetch_sub(1, Ordering::AcqRel);
        }
        rc
    }

    /// `pthread_mutex_consistent` by the calling thread (the holder after `EOWNERDEAD`).
    #[cfg(feature = "tokio")]
    pub(crate) fn raw_make_consistent(&self) -> i32 {
        self.cell().make_consistent()
    }

    /// The mutex's lock word, where glibc's layout is known (see `MutexCell::lock_word`).
    #[cfg(feature = "tokio")]
    pub(crate) fn lock_word(&self) -> Option<&std::sync::atomic::AtomicU32> {
        self.cell().lock_word()
    }

    /// Initialises a robust, process-shared, error-checking mutex in the slot, if nobody has:
    /// the one call that wins the slot's state word does it and gets the handle.
    ///
    /// # Safety
    /// The caller guarantees that `slot`:
    /// - is aligned for [`RawRobustMutex`] and points to [`RawRobustMutex::SIZE`] bytes of
    ///   writable memory, mapped `MAP_SHARED` if other processes are to use it;
    /// - started zeroed (fresh shared memory is) or holds a slot of this crate, and nobody
    ///   writes those bytes except through this crate;
    /// - stays mapped at the same address, never moved, copied or freed, for as long as any
    ///   handle on the slot lives *and* while any thread of this process holds the mutex (a
    ///   forgotten guard keeps it held until that thread exits: the thread's robust list points
    ///   into the slot).
    ///
    /// # Errors
    /// [`Error::AlreadyInitialized`] if the slot is initialised or a live process is
    /// initialising it; [`Error::InitializerDied`]; [`Error::InvalidObject`] for a garbage
    /// state word; what `pthread_mutex_init` or the attribute setters fail with.
    #[doc(alias = "pthread_mutex_init")]
    #[allow(unsafe_code)]
    pub unsafe fn init(slot: NonNull<RawRobustMutex>) -> Result<RobustMutex> {
        let this = RobustMutex::from_slot(slot);
        match this.begin()? {
            true => Ok(this),
            false => Err(Error::AlreadyInitialized { name: this.name() }),
        }
    }

    fn begin(&self) -> Result<bool> {
        match once::begin(self.slot.get(), &|| self.name())? {
            Begun::Won(claim) => {
                claim.init().map_err(Error::errno)?;
                claim.publish(READY);
                Ok(true)
            }
            Begun::Taken => Ok(false),
        }
    }

    /// Attaches to a mutex that another handle (perhaps in another process) initialised in
    /// `slot` (in this process's mapping of the same memory), without waiting.
    ///
    /// # Safety
    /// As for [`init`](Self::init).
    ///
    /// # Errors
    /// [`Error::NotInitialized`], [`Error::TimedOut`] (a live process is initialising it),
    /// [`Error::InitializerDied`], [`Error::InvalidObject`].
    #[allow(unsafe_code)]
    pub unsafe fn attach(slot: NonNull<RawRobustMutex>) -> Result<RobustMutex> {
        RobustMutex::attach_within(slot, Duration::ZERO)
    }

    /// Like [`attach`](Self::attach), waiting at most `timeout` for the slot to be initialised
    /// (`Duration::MAX`: forever, but a dead initialiser is still reported).
    ///
    /// # Safety
    /// As for [`init`](Self::init).
    ///
    /// # Errors
    /// As [`InPlaceSemaphore::attach_timeout`](crate::InPlaceSemaphore::attach_timeout).
    #[allow(unsafe_code)]
    pub unsafe fn attach_timeout(
        slot: NonNull<RawRobustMutex>,
        timeout: Duration,
    ) -> Result<RobustMutex> {
        RobustMutex::attach_within(slot, timeout)
    }

    fn attach_within(slot: NonNull<RawRobustMutex>, timeout: Duration) -> Result<RobustMutex> {
        let this = RobustMutex::from_slot(slot);
        once::wait_ready(this.slot.get(), timeout, &|| this.name())?;
        Ok(this)
    }

    /// [`init`](Self::init) if nobody has, else [`attach_timeout`](Self::attach_timeout):
    /// exactly one of all the processes that race here gets [`Opened::Created`].
    ///
    /// # Safety
    /// As for [`init`](Self::init).
    ///
    /// # Errors
    /// As [`init`](Self::init) and [`attach_timeout`](Self::attach_timeout).
    #[allow(unsafe_code)]
    pub unsafe fn init_or_attach(
        slot: NonNull<RawRobustMutex>,
        timeout: Duration,
    ) -> Result<(RobustMutex, Opened)> {
        let this = RobustMutex::from_slot(slot);
        if this.begin()? {
            return Ok((this, Opened::Created));
        }
        once::wait_ready(this.slot.get(), timeout, &|| this.name())?;
        Ok((this, Opened::Existing))
    }

    /// `pthread_mutex_destroy`—Destroys the mutex and marks the slot uninitialised again (it
    /// may be initialised anew, e.g. after [`Error::NotRecoverable`]). Consumes this handle.
    ///
    /// # Safety
    /// The mutex is unlocked, and no handle in any process uses it afterwards.
    ///
    /// # Errors
    /// `EBUSY` (as [`Error::Io`]) if it is locked.
    #[doc(alias = "pthread_mutex_destroy")]
    #[allow(unsafe_code)]
    pub unsafe fn destroy(self) -> Result<()> {
        self.slot.reset_unchecked().map_err(Error::errno)
    }

    fn locked(&self, rc: i32) -> Result<Locked<'_>> {
        let held = || {
            self.held.fetch_add(1, Ordering::AcqRel);
        };
        match rc {
            0 => {
                held();
                Ok(Locked::Normal(MutexGuard {
                    m: self,
                    _not_send: PhantomData,
                }))
            }
            libc::EOWNERDEAD => {
                held();
                Ok(Locked::OwnerDied(OwnerDiedGuard {
                    m: self,
                    _not_send: PhantomData,
                }))
            }
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
        self.locked(self.cell().lock())
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
        self.locked(self.cell().try_lock())
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
            Deadline::At(at) => self.locked(self.cell().clock_lock(&at)),
        }
    }
}
