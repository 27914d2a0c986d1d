//! POSIX unnamed process-shared semaphores (`sem_init(pshared = 1)`): in memory the caller
//! provides ([`InPlaceSemaphore`]) or in their own anonymous memory ([`SharedSemaphore`]); and
//! the operations every POSIX semaphore has.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use static_assertions::const_assert;

use crate::anon;
use crate::error::{Error, Result};
use crate::lifetime::Opened;
use crate::once::{self, Begun, READY};
use crate::sys::{MappedSlot, SemCell, Slot, SlotPtr};
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

#[inline]
fn wait(s: &SemCell) -> Result<()> {
    loop {
        match s.wait() {
            Ok(()) => return Ok(()),
            Err(libc::EINTR) => continue,
            Err(e) => return Err(Error::errno(e)),
        }
    }
}

#[inline]
pub(crate) fn try_wait(s: &SemCell) -> Result<()> {
    loop {
        match s.try_wait() {
            Ok(()) => return Ok(()),
            Err(libc::EAGAIN) => return Err(Error::WouldBlock),
            Err(libc::EINTR) => continue,
            Err(e) => return Err(Error::errno(e)),
        }
    }
}

fn wait_timeout(s: &SemCell, timeout: Duration) -> Result<()> {
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
pub(crate) fn post(s: &SemCell) -> Result<()> {
    match s.post() {
        Ok(()) => Ok(()),
        Err(libc::EOVERFLOW) => Err(Error::Overflow),
        Err(e) => Err(Error::errno(e)),
    }
}

pub(crate) fn value(s: &SemCell) -> Result<u32> {
    s.value()
        .map(|v| u32::try_from(v).unwrap_or(0))
        .map_err(Error::errno)
}

/// A held unit of a POSIX semaphore: posts it back when dropped.
///
/// Returned by `acquire`, `try_acquire` and `acquire_timeout` of [`NamedSemaphore`],
/// [`SharedSemaphore`] and [`InPlaceSemaphore`].
///
/// [`NamedSemaphore`]: crate::NamedSemaphore
#[must_use = "dropping the guard posts the semaphore at once"]
pub struct SemGuard<'a> {
    sem: &'a SemCell,
}

impl fmt::Debug for SemGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemGuard").finish_non_exhaustive()
    }
}

impl<'a> SemGuard<'a> {
    /// A guard for a unit just taken from `sem`.
    pub(crate) fn new(sem: &'a SemCell) -> SemGuard<'a> {
        SemGuard { sem }
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
            #[inline]
            pub fn wait(&self) -> Result<()> {
                wait(self.cell())
            }

            /// `sem_trywait`—Decrements the value if it is above zero, without waiting. On
            /// glibc this is a userspace atomic operation: no system call.
            ///
            /// # Errors
            /// [`Error::WouldBlock`] if the value is zero.
            #[doc(alias = "sem_trywait")]
            #[inline]
            pub fn try_wait(&self) -> Result<()> {
                try_wait(self.cell())
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
                wait_timeout(self.cell(), timeout)
            }

            /// `sem_post`—Increments the value, waking one waiter. With no waiter on glibc it
            /// is a userspace atomic operation: no system call.
            ///
            /// # Errors
            /// [`Error::Overflow`] if the value is already `SEM_VALUE_MAX` (it is unchanged).
            #[doc(alias = "sem_post")]
            #[inline]
            pub fn post(&self) -> Result<()> {
                post(self.cell())
            }

            /// `sem_getvalue`—The current value (a snapshot: it may change at once).
            ///
            /// # Errors
            /// Only unexpected OS errors.
            #[doc(alias = "sem_getvalue")]
            pub fn value(&self) -> Result<u32> {
                value(self.cell())
            }

            /// Waits like [`wait`](Self::wait) and returns a guard that posts on drop.
            ///
            /// # Errors
            /// As [`wait`](Self::wait).
            pub fn acquire(&self) -> Result<SemGuard<'_>> {
                self.wait()?;
                Ok(SemGuard::new(self.cell()))
            }

            /// Tries like [`try_wait`](Self::try_wait) and returns a guard that posts on drop.
            ///
            /// # Errors
            /// [`Error::WouldBlock`] if the value is zero.
            #[inline]
            pub fn try_acquire(&self) -> Result<SemGuard<'_>> {
                self.try_wait()?;
                Ok(SemGuard::new(self.cell()))
            }

            /// Waits like [`wait_timeout`](Self::wait_timeout) and returns a guard that posts
            /// on drop.
            ///
            /// # Errors
            /// [`Error::TimedOut`] at the deadline.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemGuard<'_>> {
                self.wait_timeout(timeout)?;
                Ok(SemGuard::new(self.cell()))
            }
        }
    };
}

posix_ops!(crate::NamedSemaphore);
posix_ops!(SharedSemaphore);
posix_ops!(InPlaceSemaphore);

// ---------------------------------------------------------------------------------------------

/// The memory of one in-place POSIX semaphore, to place in shared memory: a 4-byte state word
/// (the init-once protocol), 4 bytes of padding, then the `sem_t` — 40 bytes, 8-byte aligned on
/// 64-bit Linux (pinned with `static_assertions`).
///
/// Zeroed memory is an uninitialised slot, so a fresh shared mapping (`ftruncate`d file,
/// anonymous memory) holds slots ready for [`InPlaceSemaphore::init`]. [`RawSemaphore::new`]
/// makes one in ordinary memory.
#[repr(transparent)]
pub struct RawSemaphore(Slot<SemCell>);

const_assert!(std::mem::size_of::<RawSemaphore>() == 8 + std::mem::size_of::<libc::sem_t>());
const_assert!(std::mem::align_of::<RawSemaphore>() == std::mem::align_of::<libc::sem_t>());
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
const_assert!(
    std::mem::size_of::<RawSemaphore>() == 40 && std::mem::align_of::<RawSemaphore>() == 8
);

impl RawSemaphore {
    /// Its size in bytes.
    pub const SIZE: usize = std::mem::size_of::<RawSemaphore>();
    /// Its alignment in bytes.
    pub const ALIGN: usize = std::mem::align_of::<RawSemaphore>();

    /// An uninitialised slot (all zero), e.g. for a `static` or a `Box` shared by threads, or
    /// to copy into shared memory before any process uses it.
    pub const fn new() -> RawSemaphore {
        RawSemaphore(Slot::<SemCell>::new())
    }
}

impl Default for RawSemaphore {
    fn default() -> RawSemaphore {
        RawSemaphore::new()
    }
}

impl fmt::Debug for RawSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSemaphore")
    }
}

fn slot_name(addr: usize) -> String {
    format!("in-place semaphore slot at {addr:#x}")
}

/// A handle to a process-shared POSIX semaphore in memory the caller provides (for example a
/// shared-memory segment every process maps), with an init-once protocol: exactly one
/// [`init`](Self::init) wins and is told so; the others are told
/// [`Error::AlreadyInitialized`]; [`attach_timeout`](Self::attach_timeout) waits (bounded) for
/// an initialiser that has not finished, and a slot whose initialiser died half-way is
/// reported ([`Error::InitializerDied`]), never used. [`init_or_attach`](Self::init_or_attach)
/// does either. Dropping a handle does nothing; [`destroy`](Self::destroy) ends the semaphore.
///
/// If you do not have shared memory of your own, [`SharedSemaphore`] (anonymous, for children)
/// and [`NamedSemaphore`](crate::NamedSemaphore) (by name, for unrelated processes) place the
/// semaphore for you, without `unsafe`.
///
/// After `fork` (also from a multi-threaded parent), the child may call `post`, `try_wait`,
/// `wait`, `wait_timeout`, `value` and the guard forms on an inherited handle (atomic operations
/// and futex calls; no lock), and drop it (dropping does nothing).
///
/// ```
/// use std::ptr::NonNull;
/// use ipc_sem::{InPlaceSemaphore, Opened, RawSemaphore};
/// # fn main() -> Result<(), ipc_sem::Error> {
/// // Here ordinary memory for brevity; between processes it is a shared mapping (MAP_SHARED)
/// // that every process maps, e.g. an ipc-shm segment, which starts zeroed.
/// let mut slot = Box::new(RawSemaphore::new());
/// let slot = NonNull::from(&mut *slot);
/// // SAFETY: aligned, zeroed, not moved or freed while the handles live.
/// let sem = unsafe { InPlaceSemaphore::init(slot, 1) }?;
/// // A second initialiser is told the slot is taken, and attaches instead.
/// // SAFETY: as above.
/// assert!(matches!(unsafe { InPlaceSemaphore::init(slot, 1) }, Err(ipc_sem::Error::AlreadyInitialized { .. })));
/// // SAFETY: as above.
/// let (other, how) = unsafe { InPlaceSemaphore::init_or_attach(slot, 1, std::time::Duration::from_secs(1)) }?;
/// assert_eq!(how, Opened::Existing);
/// other.wait()?;
/// sem.post()?;
/// drop(other);
/// // SAFETY: nobody uses it any more.
/// unsafe { sem.destroy() }?;
/// # Ok(()) }
/// ```
pub struct InPlaceSemaphore {
    slot: SlotPtr<SemCell>,
}

impl fmt::Debug for InPlaceSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InPlaceSemaphore")
            .field("slot", &(self.slot.addr() as *const ()))
            .field("value", &self.value().ok())
            .finish()
    }
}

impl InPlaceSemaphore {
    #[inline]
    pub(crate) fn cell(&self) -> &SemCell {
        self.slot.cell()
    }

    fn from_slot(slot: NonNull<RawSemaphore>) -> InPlaceSemaphore {
        // `RawSemaphore` is a transparent `Slot<SemCell>`; the caller's contract is
        // `SlotPtr::from_raw_unchecked`'s.
        InPlaceSemaphore {
            slot: SlotPtr::from_raw_unchecked(slot.cast()),
        }
    }

    fn name(&self) -> String {
        slot_name(self.slot.addr())
    }

    /// Initialises a process-shared semaphore with `value` in the slot (`sem_init(pshared =
    /// 1)`), if nobody has: the one call that wins the slot's state word does it and gets the
    /// handle.
    ///
    /// # Safety
    /// The caller guarantees that `slot`:
    /// - is aligned for [`RawSemaphore`] and points to [`RawSemaphore::SIZE`] bytes of writable
    ///   memory, mapped `MAP_SHARED` if other processes are to use it;
    /// - started zeroed (fresh shared memory is) or holds a slot of this crate, and nobody
    ///   writes those bytes except through this crate;
    /// - stays mapped at the same address, never moved, copied or freed, for as long as this
    ///   handle or any other handle on the slot lives.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`] for `value > SEM_VALUE_MAX` (nothing is written);
    /// [`Error::AlreadyInitialized`] if the slot is initialised or a live process is
    /// initialising it; [`Error::InitializerDied`]; [`Error::InvalidObject`] if the state word
    /// holds garbage.
    #[doc(alias = "sem_init")]
    #[allow(unsafe_code)]
    pub unsafe fn init(slot: NonNull<RawSemaphore>, value: u32) -> Result<InPlaceSemaphore> {
        let this = InPlaceSemaphore::from_slot(slot);
        match this.begin(value)? {
            true => Ok(this),
            false => Err(Error::AlreadyInitialized { name: this.name() }),
        }
    }

    /// `Ok(true)`: we initialised it; `Ok(false)`: someone else did or does.
    fn begin(&self, value: u32) -> Result<bool> {
        check_value(value)?;
        match once::begin(self.slot.get(), &|| self.name())? {
            Begun::Won(claim) => {
                claim.init(value).map_err(Error::errno)?;
                claim.publish(READY);
                Ok(true)
            }
            Begun::Taken => Ok(false),
        }
    }

    /// Attaches to a semaphore that another handle (perhaps in another process) initialised in
    /// `slot` (in this process's mapping of the same memory), without waiting.
    ///
    /// # Safety
    /// As for [`init`](Self::init).
    ///
    /// # Errors
    /// [`Error::NotInitialized`], [`Error::TimedOut`] (a live process is initialising it:
    /// use [`attach_timeout`](Self::attach_timeout)), [`Error::InitializerDied`],
    /// [`Error::InvalidObject`].
    #[allow(unsafe_code)]
    pub unsafe fn attach(slot: NonNull<RawSemaphore>) -> Result<InPlaceSemaphore> {
        InPlaceSemaphore::attach_within(slot, Duration::ZERO)
    }

    /// Like [`attach`](Self::attach), waiting at most `timeout` for the slot to be initialised
    /// (`Duration::MAX`: forever, but a dead initialiser is still reported).
    ///
    /// # Safety
    /// As for [`init`](Self::init).
    ///
    /// # Errors
    /// At the deadline: [`Error::NotInitialized`] if nobody began, [`Error::TimedOut`] if a live
    /// process is still initialising it, [`Error::InitializerDied`] if it died;
    /// [`Error::InvalidObject`] at once for a garbage state word.
    #[allow(unsafe_code)]
    pub unsafe fn attach_timeout(
        slot: NonNull<RawSemaphore>,
        timeout: Duration,
    ) -> Result<InPlaceSemaphore> {
        InPlaceSemaphore::attach_within(slot, timeout)
    }

    fn attach_within(slot: NonNull<RawSemaphore>, timeout: Duration) -> Result<InPlaceSemaphore> {
        let this = InPlaceSemaphore::from_slot(slot);
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
        slot: NonNull<RawSemaphore>,
        value: u32,
        timeout: Duration,
    ) -> Result<(InPlaceSemaphore, Opened)> {
        let this = InPlaceSemaphore::from_slot(slot);
        if this.begin(value)? {
            return Ok((this, Opened::Created));
        }
        once::wait_ready(this.slot.get(), timeout, &|| this.name())?;
        Ok((this, Opened::Existing))
    }

    /// `sem_destroy`—Destroys the semaphore and marks the slot uninitialised again (it may be
    /// initialised anew). Consumes this handle.
    ///
    /// # Safety
    /// No handle in any process may use the semaphore afterwards, and none may be blocked on
    /// it.
    ///
    /// # Errors
    /// What `sem_destroy` fails with (glibc never fails).
    #[doc(alias = "sem_destroy")]
    #[allow(unsafe_code)]
    pub unsafe fn destroy(self) -> Result<()> {
        self.slot.reset_unchecked().map_err(Error::errno)
    }
}

// ---------------------------------------------------------------------------------------------

/// A process-shared POSIX semaphore in its own anonymous shared memory: a sealed memfd
/// (`memfd_create`, close-on-exec) mapped `MAP_SHARED`.
///
/// Processes forked after [`new`](Self::new) share it through the inherited mapping. A
/// *spawned* child (`Command`) gets it as a descriptor, passed explicitly — with std only, as
/// one of its standard streams — and rebuilds it with [`from_fd`](Self::from_fd). The memfd is
/// sealed against shrinking and growing, so no holder can truncate it under another (which
/// would raise `SIGBUS`). For unrelated processes, use [`NamedSemaphore`]; for a semaphore
/// inside shared memory of your own, [`InPlaceSemaphore`].
///
/// Like every POSIX semaphore, it does not survive a holder's crash: use timeouts.
///
/// After `fork` (also from a multi-threaded parent), the child may call `post`, `try_wait`,
/// `wait`, `wait_timeout`, `value` and the guard forms, and drop the handle (`munmap` and
/// `close` only).
///
/// [`NamedSemaphore`]: crate::NamedSemaphore
///
/// ```
/// use std::os::fd::AsFd;
/// use std::process::{Command, Stdio};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let done = ipc_sem::SharedSemaphore::new(0)?;
/// // A spawned child gets it as its stdin and calls `SharedSemaphore::from_fd` on a dup of
/// // fd 0 (here `true` only shows the passing; it does not post).
/// let status = Command::new("true")
///     .stdin(Stdio::from(done.as_fd().try_clone_to_owned()?))
///     .status()?;
/// assert!(status.success());
/// # done.post()?;
/// done.wait_timeout(std::time::Duration::from_secs(5))?;
/// # Ok(()) }
/// ```
pub struct SharedSemaphore {
    map: MappedSlot<SemCell>,
    fd: OwnedFd,
}

impl fmt::Debug for SharedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSemaphore")
            .field("fd", &self.fd.as_raw_fd())
            .field("value", &self.value().ok())
            .finish()
    }
}

impl SharedSemaphore {
    /// Creates a sealed memfd of [`RawSemaphore::SIZE`] bytes, maps it shared and initialises
    /// a process-shared semaphore with `value` in it.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`] before any syscall; `memfd_create`/`mmap` failures
    /// (`EMFILE`, `ENOMEM`).
    #[doc(alias = "sem_init")]
    #[doc(alias = "memfd_create")]
    pub fn new(value: u32) -> Result<SharedSemaphore> {
        check_value(value)?;
        let fd = anon::create("ipc-sem", MappedSlot::<SemCell>::SIZE)?;
        let map = MappedSlot::<SemCell>::map(fd.as_fd())?;
        let name = || anon::fd_name(fd.as_fd());
        match once::begin(map.get(), &name)? {
            Begun::Won(claim) => {
                claim.init(value).map_err(Error::errno)?;
                claim.publish(READY);
            }
            // A fresh memfd that nobody else has seen cannot be taken.
            Begun::Taken => return Err(Error::AlreadyInitialized { name: name() }),
        }
        Ok(SharedSemaphore { map, fd })
    }

    /// Rebuilds a semaphore from its descriptor (received from the parent, e.g. as a standard
    /// stream, or over a Unix socket). The descriptor is checked before it is mapped: a memfd
    /// sealed against shrinking and growing, of exactly [`RawSemaphore::SIZE`] bytes, holding an
    /// initialised semaphore.
    ///
    /// # Errors
    /// [`Error::InvalidObject`] for a descriptor that is not such a memfd or holds no
    /// initialised semaphore; [`Error::WrongSize`].
    pub fn from_fd(fd: OwnedFd) -> Result<SharedSemaphore> {
        anon::check(fd.as_fd(), MappedSlot::<SemCell>::SIZE)?;
        let map = MappedSlot::<SemCell>::map(fd.as_fd())?;
        once::wait_ready(map.get(), Duration::ZERO, &|| anon::fd_name(fd.as_fd()))?;
        Ok(SharedSemaphore { map, fd })
    }

    #[inline]
    pub(crate) fn cell(&self) -> &SemCell {
        self.map.get().cell()
    }
}

impl AsFd for SharedSemaphore {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for SharedSemaphore {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The memfd (this handle's mapping is unmapped; others keep theirs).
impl From<SharedSemaphore> for OwnedFd {
    fn from(s: SharedSemaphore) -> OwnedFd {
        s.fd
    }
}

/// As [`SharedSemaphore::from_fd`].
impl TryFrom<OwnedFd> for SharedSemaphore {
    type Error = Error;
    fn try_from(fd: OwnedFd) -> Result<SharedSemaphore> {
        SharedSemaphore::from_fd(fd)
    }
}
