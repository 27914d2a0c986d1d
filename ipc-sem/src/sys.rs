//! The ground floor: every unsafe block of the crate, one FFI call each with its SAFETY
//! argument. It takes and returns raw and std types only and names nothing above it (no
//! concept type, not even the crate's `Error`): the concept files wrap it.
//!
//! What it offers:
//! - [`SemCell`] and [`MutexCell`]: the memory of one `sem_t` / `pthread_mutex_t`, with the
//!   operations on it. A `&SemCell` is sound over any bytes (glibc's `sem_*` are atomic
//!   operations and futex calls on the cell's own bytes; garbage makes them fail or abort,
//!   never touch other memory). A `&MutexCell` is handed out only by a [`Slot`] that its
//!   [`Claim`] initialised, because a robust mutex keeps list pointers that its holder
//!   follows.
//! - [`Slot`]: a cell with the init-once state word in front of it; [`Claim`] is the exclusive
//!   right to initialise it, won by one compare-and-swap on that word.
//! - [`Mapping`], [`MappedSlot`], [`MappedSem`]: `MAP_SHARED` mappings of a descriptor, never
//!   longer than the file (`fstat` first, so a short file cannot raise `SIGBUS`), unmapped on
//!   drop.
//! - [`SlotPtr`]: a pointer to a slot in memory the caller provides. Its constructor carries the
//!   contract of the public `unsafe fn`s that call it (the only callers), so the unsafe blocks
//!   stay in this file.
//! - Open-file-description locks, `preadv2(RWF_NOWAIT)`, and the System V calls.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ffi::{CStr, c_int, c_void};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use rustix::time::Timespec;

// Declared here because the `libc` crate lacks them (glibc >= 2.30 for the two clock functions).
unsafe extern "C" {
    fn sem_clockwait(
        sem: *mut libc::sem_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> c_int;
    fn semtimedop(
        semid: c_int,
        sops: *mut libc::sembuf,
        nsops: libc::size_t,
        timeout: *const libc::timespec,
    ) -> c_int;
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> c_int;
}

/// A raw errno value.
pub(crate) type Errno = i32;

fn errno() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `Ok` for a zero return, else the thread's errno.
#[inline]
fn zero_or_errno(rc: c_int) -> Result<(), Errno> {
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

fn libc_ts(ts: &Timespec) -> libc::timespec {
    libc::timespec {
        tv_sec: ts.tv_sec as libc::time_t,
        tv_nsec: ts.tv_nsec as _,
    }
}

/// Wakes every futex waiter on `word` (shared futex: the word may be in shared memory).
fn wake_all(word: &AtomicU32) {
    let _ =
        rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), i32::MAX as u32);
}

// ---------------------------------------------------------------------------------------------
// POSIX semaphores

/// The memory of one `sem_t`: 32 bytes, 8-aligned on 64-bit glibc.
#[repr(transparent)]
pub(crate) struct SemCell(UnsafeCell<MaybeUninit<libc::sem_t>>);

// SAFETY: glibc's `sem_*` functions may be called from any thread on the same semaphore; the
// only non-atomic writer (`sem_init`) runs under exclusive access (`Claim`, `MappedSem::create`).
unsafe impl Sync for SemCell {}

impl SemCell {
    const fn zeroed() -> SemCell {
        SemCell(UnsafeCell::new(MaybeUninit::zeroed()))
    }

    #[inline]
    fn ptr(&self) -> *mut libc::sem_t {
        self.0.get().cast()
    }

    /// `sem_init(pshared = 1, value)`; private: only under exclusive access.
    fn init(&self, value: u32) -> Result<(), Errno> {
        // SAFETY: the pointer is valid, aligned and writable for a `sem_t` (it is `&self`'s
        // memory); callers have exclusive access, so the plain stores race with nothing.
        zero_or_errno(unsafe { libc::sem_init(self.ptr(), 1, value) })
    }

    /// `sem_destroy`. glibc's writes nothing (it returns 0), so it races with nothing.
    fn destroy(&self) -> Result<(), Errno> {
        // SAFETY: the pointer is valid for a `sem_t`; glibc's sem_destroy only returns 0.
        zero_or_errno(unsafe { libc::sem_destroy(self.ptr()) })
    }

    /// `sem_post`.
    #[inline]
    pub(crate) fn post(&self) -> Result<(), Errno> {
        // SAFETY: the pointer is valid for a `sem_t` while `&self` lives; sem_post makes atomic
        // operations and a futex call on these bytes only.
        zero_or_errno(unsafe { libc::sem_post(self.ptr()) })
    }

    /// `sem_wait`.
    #[inline]
    pub(crate) fn wait(&self) -> Result<(), Errno> {
        // SAFETY: as for `post`.
        zero_or_errno(unsafe { libc::sem_wait(self.ptr()) })
    }

    /// `sem_trywait`.
    #[inline]
    pub(crate) fn try_wait(&self) -> Result<(), Errno> {
        // SAFETY: as for `post`.
        zero_or_errno(unsafe { libc::sem_trywait(self.ptr()) })
    }

    /// `sem_clockwait(CLOCK_MONOTONIC, at)`.
    pub(crate) fn clock_wait(&self, at: &Timespec) -> Result<(), Errno> {
        let ts = libc_ts(at);
        // SAFETY: as for `post`; `ts` lives across the call.
        zero_or_errno(unsafe { sem_clockwait(self.ptr(), libc::CLOCK_MONOTONIC, &ts) })
    }

    /// Whether the bytes hold a process-shared glibc semaphore: a value of at most
    /// `SEM_VALUE_MAX` and the futex flag of a shared one (`private == FUTEX_SHARED`, 128). A
    /// garbage flag would make glibc abort on its first futex call ("The futex facility
    /// returned an unexpected error code"). glibc's layout on 64-bit Linux: `{ u64 data
    /// (value | waiters << 32); int private; int pad }`.
    pub(crate) fn plausible(&self) -> bool {
        #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
        {
            let base = self.ptr().cast::<u8>();
            // SAFETY: the cell is 8-aligned and 32 bytes, valid while `&self` lives, and in an
            // `UnsafeCell`: reading its first 8 bytes atomically is sound (others may write
            // them, atomically).
            let data = unsafe { &*base.cast::<AtomicU64>() }.load(Ordering::Relaxed);
            // SAFETY: as above, for the 4 bytes at offset 8 (4-aligned).
            let private =
                unsafe { &*base.wrapping_add(8).cast::<AtomicI32>() }.load(Ordering::Relaxed);
            (data & 0xffff_ffff) <= i32::MAX as u64 && private == 128
        }
        #[cfg(not(all(target_env = "gnu", target_pointer_width = "64")))]
        {
            true
        }
    }

    /// `sem_getvalue`.
    pub(crate) fn value(&self) -> Result<i32, Errno> {
        let mut v: c_int = 0;
        // SAFETY: as for `post`; `v` is a valid out location.
        zero_or_errno(unsafe { libc::sem_getvalue(self.ptr(), &mut v) }).map(|()| v)
    }
}

// ---------------------------------------------------------------------------------------------
// Robust mutex

/// The memory of one `pthread_mutex_t`: 40 bytes, 8-aligned on x86-64 glibc.
#[repr(transparent)]
pub(crate) struct MutexCell(UnsafeCell<MaybeUninit<libc::pthread_mutex_t>>);

// SAFETY: pthread mutex functions may be called from any thread on the same mutex; the only
// non-atomic writers (`pthread_mutex_init`, `_destroy`) run under exclusive access.
unsafe impl Sync for MutexCell {}

impl MutexCell {
    const fn zeroed() -> MutexCell {
        MutexCell(UnsafeCell::new(MaybeUninit::zeroed()))
    }

    fn ptr(&self) -> *mut libc::pthread_mutex_t {
        self.0.get().cast()
    }

    /// `pthread_mutex_init` with `PTHREAD_PROCESS_SHARED`, `PTHREAD_MUTEX_ROBUST` and
    /// `PTHREAD_MUTEX_ERRORCHECK`; private: only under exclusive access. Returns the error code.
    fn init(&self) -> Result<(), Errno> {
        let attr = MutexAttr::new()?;
        // SAFETY: the pointer is valid, aligned and writable for a `pthread_mutex_t`; callers
        // have exclusive access; `attr` is initialised.
        match unsafe { libc::pthread_mutex_init(self.ptr(), &attr.0) } {
            0 => Ok(()),
            rc => Err(rc),
        }
    }

    /// `pthread_mutex_destroy` (glibc stores an invalid kind atomically).
    fn destroy(&self) -> Result<(), Errno> {
        // SAFETY: the pointer is valid for a `pthread_mutex_t`; callers guarantee nobody uses
        // it any more.
        match unsafe { libc::pthread_mutex_destroy(self.ptr()) } {
            0 => Ok(()),
            rc => Err(rc),
        }
    }

    /// Whether the bytes hold a mutex of the kind `init` makes: glibc's `__kind` (an `int` at
    /// offset 16 on 64-bit Linux) is `PTHREAD_MUTEX_ERRORCHECK_NP | PTHREAD_MUTEX_ROBUST_NORMAL_NP
    /// | PTHREAD_MUTEX_PSHARED_BIT` (2 | 16 | 128). Another kind (priority-inheriting, say) would
    /// take glibc down paths that may abort on a garbage mutex.
    pub(crate) fn plausible(&self) -> bool {
        #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
        {
            let kind_at = self.ptr().cast::<u8>().wrapping_add(16);
            // SAFETY: offset 16 of the 8-aligned, 40-byte cell, valid while `&self` lives and in
            // an `UnsafeCell`: an atomic 4-byte read there is sound.
            let kind = unsafe { &*kind_at.cast::<AtomicI32>() }.load(Ordering::Relaxed);
            kind == 2 | 16 | 128
        }
        #[cfg(not(all(target_env = "gnu", target_pointer_width = "64")))]
        {
            true
        }
    }

    /// `pthread_mutex_lock`: the return code (0, EOWNERDEAD, ENOTRECOVERABLE, EDEADLK, ...).
    pub(crate) fn lock(&self) -> c_int {
        // SAFETY: the cell holds a mutex its `Claim` initialised (type invariant: only an
        // initialised slot hands out `&MutexCell`).
        unsafe { libc::pthread_mutex_lock(self.ptr()) }
    }

    /// A non-blocking lock: `pthread_mutex_clocklock` with a deadline in the past (glibc's
    /// trylock leaves an unrecoverable robust mutex held: see `RobustMutex::try_lock`);
    /// EBUSY when held.
    pub(crate) fn try_lock(&self) -> c_int {
        match self.clock_lock(&Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }) {
            libc::ETIMEDOUT => libc::EBUSY,
            rc => rc,
        }
    }

    /// `pthread_mutex_clocklock(CLOCK_MONOTONIC, at)`.
    pub(crate) fn clock_lock(&self, at: &Timespec) -> c_int {
        let ts = libc_ts(at);
        // SAFETY: as for `lock`; `ts` outlives the call.
        unsafe { pthread_mutex_clocklock(self.ptr(), libc::CLOCK_MONOTONIC, &ts) }
    }

    /// `pthread_mutex_unlock`.
    pub(crate) fn unlock(&self) -> c_int {
        // SAFETY: as for `lock`; the caller holds the mutex.
        unsafe { libc::pthread_mutex_unlock(self.ptr()) }
    }

    /// `pthread_mutex_consistent`.
    pub(crate) fn make_consistent(&self) -> c_int {
        // SAFETY: as for `lock`; the caller holds it after EOWNERDEAD.
        unsafe { libc::pthread_mutex_consistent(self.ptr()) }
    }
}

/// A `pthread_mutexattr_t` destroyed on drop.
struct MutexAttr(libc::pthread_mutexattr_t);

impl MutexAttr {
    fn new() -> Result<MutexAttr, Errno> {
        // SAFETY: an all-zero `pthread_mutexattr_t` is plain data; `pthread_mutexattr_init`
        // initialises it before any other use.
        let mut attr = MutexAttr(unsafe { std::mem::zeroed() });
        // SAFETY: `attr.0` is valid writable storage for an attribute object.
        let rc = unsafe { libc::pthread_mutexattr_init(&mut attr.0) };
        if rc != 0 {
            std::mem::forget(attr);
            return Err(rc);
        }
        for set in [
            // SAFETY: `attr.0` was initialised above.
            |a: &mut libc::pthread_mutexattr_t| unsafe {
                libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED)
            },
            // SAFETY: `attr.0` was initialised above.
            |a: &mut libc::pthread_mutexattr_t| unsafe {
                libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST)
            },
            // SAFETY: `attr.0` was initialised above.
            |a: &mut libc::pthread_mutexattr_t| unsafe {
                libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_ERRORCHECK)
            },
        ] {
            let rc = set(&mut attr.0);
            if rc != 0 {
                return Err(rc);
            }
        }
        Ok(attr)
    }
}

impl Drop for MutexAttr {
    fn drop(&mut self) {
        // SAFETY: the attribute object was initialised by `new` and is destroyed once.
        unsafe { libc::pthread_mutexattr_destroy(&mut self.0) };
    }
}

// ---------------------------------------------------------------------------------------------
// Slots: a cell with the init-once state word in front of it

/// The cells a [`Slot`] may hold (sealed: the two above).
pub(crate) trait Cell: Sync + sealed::Sealed {
    /// Whether the cell's bytes hold an object of the kind this crate makes.
    fn plausible(&self) -> bool;
}
impl Cell for SemCell {
    fn plausible(&self) -> bool {
        SemCell::plausible(self)
    }
}
impl Cell for MutexCell {
    fn plausible(&self) -> bool {
        MutexCell::plausible(self)
    }
}
mod sealed {
    pub(crate) trait Sealed {}
    impl Sealed for super::SemCell {}
    impl Sealed for super::MutexCell {}
}

/// The layout of an in-place object: a `u32` state word (the init-once protocol of `once.rs`),
/// 4 bytes of padding, then the cell at offset 8. Every byte is atomic or in an `UnsafeCell`,
/// so a `&Slot` over memory other processes write is sound.
#[repr(C)]
pub(crate) struct Slot<T> {
    state: AtomicU32,
    _pad: UnsafeCell<u32>,
    obj: T,
}

// SAFETY: the state word is atomic, the padding is never read or written, and the cell is
// `Sync` (`T: Cell`).
unsafe impl<T: Cell> Sync for Slot<T> {}

impl Slot<SemCell> {
    /// A zeroed (uninitialised) slot.
    pub(crate) const fn new() -> Self {
        Slot {
            state: AtomicU32::new(0),
            _pad: UnsafeCell::new(0),
            obj: SemCell::zeroed(),
        }
    }
}

impl Slot<SemCell> {
    /// The cell, whatever the state word says (any bytes are sound for a `SemCell`).
    #[inline]
    pub(crate) fn cell(&self) -> &SemCell {
        &self.obj
    }
}

impl Slot<MutexCell> {
    /// A zeroed (uninitialised) slot.
    pub(crate) const fn new() -> Self {
        Slot {
            state: AtomicU32::new(0),
            _pad: UnsafeCell::new(0),
            obj: MutexCell::zeroed(),
        }
    }
}

impl<T: Cell> Slot<T> {
    /// The state word.
    pub(crate) fn state(&self) -> &AtomicU32 {
        &self.state
    }

    /// The cell, if the state word says `ready` (an `Acquire` load: everything the initialiser
    /// wrote is visible).
    pub(crate) fn ready(&self, ready: u32) -> Option<&T> {
        (self.state.load(Ordering::Acquire) == ready).then_some(&self.obj)
    }

    /// Compare-and-swap of the state word from 0 to `claimed`: the exclusive right to
    /// initialise the cell, or `Err(state seen)`.
    pub(crate) fn claim(&self, claimed: u32) -> Result<Claim<'_, T>, u32> {
        self.state
            .compare_exchange(0, claimed, Ordering::Acquire, Ordering::Acquire)
            .map(|_| Claim {
                slot: self,
                published: false,
            })
    }
}

/// The exclusive right to initialise a slot: whoever holds it is the only writer of the cell
/// until it publishes. Dropped unpublished (the initialiser failed), it resets the state word
/// to 0 so that another may try. Either way, futex waiters on the word are woken.
pub(crate) struct Claim<'a, T: Cell> {
    slot: &'a Slot<T>,
    published: bool,
}

impl<'a, T: Cell> Claim<'a, T> {
    /// Stores `ready` (`Release`: the cell's initialisation happens-before every `ready()`
    /// that sees it) and wakes the waiters. Returns the cell.
    pub(crate) fn publish(mut self, ready: u32) -> &'a T {
        self.slot.state.store(ready, Ordering::Release);
        wake_all(&self.slot.state);
        self.published = true;
        &self.slot.obj
    }
}

impl Claim<'_, SemCell> {
    /// `sem_init(pshared = 1, value)` of the claimed cell.
    pub(crate) fn init(&self, value: u32) -> Result<(), Errno> {
        self.slot.obj.init(value)
    }
}

impl Claim<'_, MutexCell> {
    /// `pthread_mutex_init` (robust, process-shared, error-checking) of the claimed cell.
    pub(crate) fn init(&self) -> Result<(), Errno> {
        self.slot.obj.init()
    }
}

impl<T: Cell> Drop for Claim<'_, T> {
    fn drop(&mut self) {
        if !self.published {
            self.slot.state.store(0, Ordering::Release);
            wake_all(&self.slot.state);
        }
    }
}

/// A pointer to a [`Slot`] in memory the caller provides.
pub(crate) struct SlotPtr<T: Cell>(NonNull<Slot<T>>);

// SAFETY: a `SlotPtr` is only a way to reach a `Slot<T>`, which is `Sync`; the memory stays
// valid while the pointer lives (the constructor's contract), whichever thread holds it.
unsafe impl<T: Cell> Send for SlotPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Cell> Sync for SlotPtr<T> {}

impl<T: Cell> SlotPtr<T> {
    /// Wraps `p`.
    ///
    /// Contract (not checked; the only callers are the public `unsafe fn`s of `posix.rs` and
    /// `mutex.rs`, whose callers promise it, and the placement types, whose mapping outlives
    /// it): `p` is aligned and points to `size_of::<Slot<T>>()` bytes that stay mapped at this
    /// address while this value lives, that started zeroed or hold a slot of this crate, and
    /// that nobody writes except through this crate.
    pub(crate) fn from_raw_unchecked(p: NonNull<Slot<T>>) -> SlotPtr<T> {
        SlotPtr(p)
    }

    /// The slot.
    #[inline]
    pub(crate) fn get(&self) -> &Slot<T> {
        // SAFETY: valid, aligned and mapped while `self` lives (the constructor's contract);
        // every byte of a `Slot` is atomic or in an `UnsafeCell`, so a shared reference over
        // memory others write is sound.
        unsafe { self.0.as_ref() }
    }

    /// The slot's address (for error messages).
    pub(crate) fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

impl SlotPtr<SemCell> {
    /// `sem_destroy`, then the state word back to 0 (the slot may be initialised again).
    ///
    /// Contract (not checked; forwarded from `InPlaceSemaphore::destroy`): no handle in any
    /// process uses the semaphore any more.
    pub(crate) fn reset_unchecked(&self) -> Result<(), Errno> {
        let slot = self.get();
        slot.obj.destroy()?;
        slot.state.store(0, Ordering::Release);
        wake_all(&slot.state);
        Ok(())
    }
}

impl SlotPtr<MutexCell> {
    /// `pthread_mutex_destroy`, then the state word back to 0.
    ///
    /// Contract (not checked; forwarded from `RobustMutex::destroy`): the mutex is unlocked
    /// and no handle in any process uses it any more.
    pub(crate) fn reset_unchecked(&self) -> Result<(), Errno> {
        let slot = self.get();
        slot.obj.destroy()?;
        slot.state.store(0, Ordering::Release);
        wake_all(&slot.state);
        Ok(())
    }

    /// The cell, whatever the state word says.
    ///
    /// Contract (not checked): the slot was seen ready when the handle holding this pointer
    /// was made (`RobustMutex::attach*`, `init*`).
    pub(crate) fn cell_unchecked(&self) -> &MutexCell {
        &self.get().obj
    }
}

impl SlotPtr<SemCell> {
    /// The cell (any bytes are sound for a `SemCell`).
    #[inline]
    pub(crate) fn cell(&self) -> &SemCell {
        &self.get().obj
    }
}

// ---------------------------------------------------------------------------------------------
// Shared mappings of a descriptor

/// A `MAP_SHARED`, read-write mapping of the start of a file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by the value; what is reached through it (`Slot`,
// `SemCell`) is `Sync`.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `fstat`, then `mmap(len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`. Refuses (`EINVAL`)
    /// a file shorter than `len`, which would raise `SIGBUS` on access.
    fn shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        let st = rustix::fs::fstat(fd)?;
        if u64::try_from(st.st_size).unwrap_or(0) < len as u64 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a new mapping at an address the kernel picks aliases no Rust object; the file
        // is at least `len` bytes long (checked above).
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        let ptr = NonNull::new(p).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mapping { ptr, len })
    }

    /// Keeps the memory mapped for the rest of the process (a robust mutex locked through it
    /// is still on its holder's robust list: unmapping it would leave that list pointing at
    /// unmapped or reused memory).
    fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, `len` is its length, and no reference into it outlives
        // `self` (all access borrows the value that owns it).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr(), self.len) };
    }
}

/// A mapping of a file that holds one [`Slot`] at offset 0.
#[derive(Debug)]
pub(crate) struct MappedSlot<T: Cell> {
    map: Mapping,
    _cell: std::marker::PhantomData<T>,
}

impl<T: Cell> MappedSlot<T> {
    /// The size of the slot, which the file must have.
    pub(crate) const SIZE: usize = size_of::<Slot<T>>();

    /// Maps the slot at the start of `fd`'s file (at least [`Self::SIZE`] bytes, else EINVAL).
    pub(crate) fn map(fd: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(MappedSlot {
            map: Mapping::shared(fd, Self::SIZE)?,
            _cell: std::marker::PhantomData,
        })
    }

    /// The slot.
    #[inline]
    pub(crate) fn get(&self) -> &Slot<T> {
        // SAFETY: the mapping is page-aligned, at least `SIZE` bytes (checked by `map`) and
        // lives as long as `self`; every byte of a `Slot` is atomic or in an `UnsafeCell`.
        unsafe { self.map.ptr.cast::<Slot<T>>().as_ref() }
    }

    /// A pointer to the slot for a handle that lives no longer than `self` (the
    /// [`SlotPtr::from_raw_unchecked`] contract holds while this mapping does).
    pub(crate) fn ptr(&self) -> SlotPtr<T> {
        SlotPtr::from_raw_unchecked(self.map.ptr.cast())
    }

    /// Never unmaps the slot (see [`Mapping::leak`]).
    pub(crate) fn leak(self) {
        self.map.leak();
    }
}

/// A mapping of a named semaphore's file in glibc's layout: one `sem_t` at offset 0, nothing
/// else (so that `sem_open` in C programs interoperates).
#[derive(Debug)]
pub(crate) struct MappedSem {
    map: Mapping,
}

impl MappedSem {
    /// The size of the file: `sizeof(sem_t)`.
    pub(crate) const SIZE: usize = size_of::<libc::sem_t>();

    /// Maps an existing semaphore's file (at least [`Self::SIZE`] bytes, else EINVAL).
    pub(crate) fn map(fd: BorrowedFd<'_>) -> io::Result<MappedSem> {
        Ok(MappedSem {
            map: Mapping::shared(fd, Self::SIZE)?,
        })
    }

    /// Maps a new file of [`Self::SIZE`] zero bytes that nobody else can reach yet (not linked
    /// to a name) and initialises the semaphore in it: `sem_init(pshared = 1)` writes the same
    /// bytes as glibc's `sem_open(O_CREAT)`.
    pub(crate) fn create(fd: BorrowedFd<'_>, value: u32) -> Result<MappedSem, io::Error> {
        let m = MappedSem::map(fd)?;
        // No reference into the new mapping exists yet: this is the only access.
        m.get().init(value).map_err(io::Error::from_raw_os_error)?;
        Ok(m)
    }

    /// The semaphore.
    #[inline]
    pub(crate) fn get(&self) -> &SemCell {
        // SAFETY: the mapping is page-aligned, at least `SIZE` bytes (checked by `map`) and
        // lives as long as `self`; a `SemCell` is an `UnsafeCell`.
        unsafe { self.map.ptr.cast::<SemCell>().as_ref() }
    }
}

// ---------------------------------------------------------------------------------------------
// Open-file-description locks (the owners' liveness)

fn ofd_flock(l_type: c_int, start: i64) -> libc::flock {
    libc::flock {
        l_type: l_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: 1,
        l_pid: 0,
    }
}

/// `fcntl(F_OFD_SETLK)` of a read lock on the byte at `offset`: held until the last descriptor
/// of this open file description is closed. `EAGAIN` if a conflicting lock is held.
pub(crate) fn ofd_read_lock(fd: BorrowedFd<'_>, offset: i64) -> io::Result<()> {
    let lock = ofd_flock(libc::F_RDLCK, offset);
    // SAFETY: `fd` is open for the call; F_OFD_SETLK reads one `struct flock`, valid for it.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &lock) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fcntl(F_OFD_GETLK)` for a write lock on the byte at `offset`: whether some open file
/// description (other than `fd`'s) holds a lock there.
pub(crate) fn ofd_locked(fd: BorrowedFd<'_>, offset: i64) -> io::Result<bool> {
    let mut lock = ofd_flock(libc::F_WRLCK, offset);
    // SAFETY: `fd` is open for the call; F_OFD_GETLK reads and writes one `struct flock`,
    // valid for it.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) } == 0 {
        Ok(c_int::from(lock.l_type) != libc::F_UNLCK)
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------------------------------------
// eventfd

/// `preadv2(fd, 8 bytes, -1, RWF_NOWAIT)`: takes one unit of an eventfd semaphore without
/// blocking, whatever the descriptor's mode. Returns the number of bytes read.
pub(crate) fn read_nowait(fd: BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut v = 0u64;
    let iov = libc::iovec {
        iov_base: (&mut v as *mut u64).cast(),
        iov_len: 8,
    };
    // SAFETY: `fd` is an open descriptor; `iov` describes 8 writable bytes of `v`, both valid
    // for the call; offset -1 means "current position" (eventfd has none).
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    usize::try_from(n).map_err(|_| errno())
}

// ---------------------------------------------------------------------------------------------
// System V semaphores

/// `semget(key, nsems, flags)`.
pub(crate) fn semget(key: libc::key_t, nsems: c_int, flags: c_int) -> io::Result<c_int> {
    // SAFETY: plain integer arguments.
    let id = unsafe { libc::semget(key, nsems, flags) };
    if id < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(id)
    }
}

/// `semop(id, ops)`.
pub(crate) fn semop(id: c_int, ops: &mut [libc::sembuf]) -> Result<(), Errno> {
    // SAFETY: `ops` is a valid array of `ops.len()` sembufs for the duration of the call.
    zero_or_errno(unsafe { libc::semop(id, ops.as_mut_ptr(), ops.len()) })
}

/// `semtimedop(id, ops, timeout)` (relative timeout).
pub(crate) fn semtimedop_rel(
    id: c_int,
    ops: &mut [libc::sembuf],
    timeout: &Timespec,
) -> Result<(), Errno> {
    let ts = libc_ts(timeout);
    // SAFETY: `ops` is a valid array of `ops.len()` sembufs and `ts` a valid timespec for the
    // duration of the call.
    zero_or_errno(unsafe { semtimedop(id, ops.as_mut_ptr(), ops.len(), &ts) })
}

fn semctl_result(rc: c_int) -> io::Result<c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `semctl(id, index, GETVAL | GETNCNT | GETZCNT | GETPID)`.
pub(crate) fn semctl_get(id: c_int, index: c_int, cmd: c_int) -> io::Result<c_int> {
    // SAFETY: these commands take no fourth argument.
    semctl_result(unsafe { libc::semctl(id, index, cmd) })
}

/// `semctl(id, index, SETVAL, value)`.
pub(crate) fn semctl_setval(id: c_int, index: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: SETVAL reads `union semun.val`, an int, from the variadic argument.
    semctl_result(unsafe { libc::semctl(id, index, libc::SETVAL, value) }).map(drop)
}

/// `semctl(id, 0, GETALL, values)`; `values.len()` must be the set's size.
pub(crate) fn semctl_getall(id: c_int, values: &mut [u16]) -> io::Result<()> {
    // SAFETY: GETALL writes `nsems` unsigned shorts through `union semun.array`; the caller
    // passes a slice of exactly the set's size, valid for the call.
    semctl_result(unsafe { libc::semctl(id, 0, libc::GETALL, values.as_mut_ptr()) }).map(drop)
}

/// `semctl(id, 0, SETALL, values)`; `values.len()` must be the set's size.
pub(crate) fn semctl_setall(id: c_int, values: &[u16]) -> io::Result<()> {
    // SAFETY: SETALL reads `nsems` unsigned shorts through `union semun.array`; the caller
    // passes a slice of exactly the set's size, valid for the call (the kernel only reads it).
    semctl_result(unsafe { libc::semctl(id, 0, libc::SETALL, values.as_ptr()) }).map(drop)
}

/// What `IPC_STAT` says about a set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SemStat {
    /// Number of semaphores.
    pub(crate) nsems: usize,
    /// Time of the last `semop` (0: never).
    pub(crate) otime: i64,
    /// Time of creation or the last `IPC_SET`/`SETVAL`/`SETALL`.
    pub(crate) ctime: i64,
    /// Owner's uid.
    pub(crate) uid: u32,
}

fn semctl_stat_raw(id: c_int) -> io::Result<libc::semid_ds> {
    // SAFETY: `semid_ds` is plain data; all-zero is a valid value that IPC_STAT overwrites.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one `semid_ds` through `union semun.buf`; `ds` is valid for it.
    semctl_result(unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) })?;
    Ok(ds)
}

/// `semctl(id, 0, IPC_STAT)`.
pub(crate) fn semctl_stat(id: c_int) -> io::Result<SemStat> {
    let ds = semctl_stat_raw(id)?;
    Ok(SemStat {
        nsems: ds.sem_nsems as usize,
        otime: ds.sem_otime as i64,
        ctime: ds.sem_ctime as i64,
        uid: ds.sem_perm.uid,
    })
}

/// `semctl(id, 0, IPC_SET)` with a new mode (uid/gid unchanged).
pub(crate) fn semctl_set_mode(id: c_int, mode: u32) -> io::Result<()> {
    let mut ds = semctl_stat_raw(id)?;
    ds.sem_perm.mode = mode as _;
    // SAFETY: IPC_SET reads one `semid_ds` through `union semun.buf`; `ds` is valid for it.
    semctl_result(unsafe { libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) })
        .map(drop)
}

/// `semctl(id, 0, IPC_RMID)`.
pub(crate) fn semctl_rmid(id: c_int) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no fourth argument.
    semctl_result(unsafe { libc::semctl(id, 0, libc::IPC_RMID) }).map(drop)
}

/// `ftok(path, proj)`.
pub(crate) fn ftok(path: &CStr, proj: u8) -> io::Result<libc::key_t> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let key = unsafe { libc::ftok(path.as_ptr(), c_int::from(proj)) };
    if key == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(key)
    }
}

// ---------------------------------------------------------------------------------------------
// The await-able forms (feature `tokio`): the words the waiter thread watches, its signal
// mask, and the one registration with tokio's reactor.

#[cfg(feature = "tokio")]
impl SemCell {
    /// glibc's 64-bit `data` word of the semaphore (`struct new_sem` on every 64-bit glibc):
    /// the value in its low 32 bits, the number of registered waiters (`nwaiters`) in its high
    /// 32 bits. `sem_post` adds one to the value and wakes one futex waiter on the value word
    /// if `nwaiters` is not zero. `None` where the layout is another.
    pub(crate) fn data(&self) -> Option<&AtomicU64> {
        #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
        {
            // SAFETY: as in `plausible`: the cell is 8-aligned, 32 bytes, valid while `&self`
            // lives and in an `UnsafeCell`; glibc accesses these 8 bytes only atomically.
            Some(unsafe { &*self.ptr().cast::<AtomicU64>() })
        }
        #[cfg(not(all(target_env = "gnu", target_pointer_width = "64")))]
        {
            None
        }
    }

    /// The address of the value word, the 32-bit futex glibc's waiters sleep on: the low half
    /// of [`data`](Self::data). Only ever passed to the kernel (no Rust access through it).
    pub(crate) fn value_word(&self) -> *mut u32 {
        let base = self.ptr().cast::<u32>();
        if cfg!(target_endian = "big") {
            base.wrapping_add(1)
        } else {
            base
        }
    }

    /// `futex(FUTEX_WAKE, 1)` on the value word (a shared futex, as glibc's `sem_post` uses):
    /// wakes one sleeping waiter, in any process.
    pub(crate) fn wake_one(&self) {
        // SAFETY: FUTEX_WAKE only uses the address as the futex's key (it reads and writes no
        // memory through it); the remaining arguments are ignored for this operation.
        let _ = unsafe { libc::syscall(libc::SYS_futex, self.value_word(), libc::FUTEX_WAKE, 1) };
    }
}

#[cfg(feature = "tokio")]
impl MutexCell {
    /// glibc's lock word (`__data.__lock`, offset 0 on every glibc target): the holder's thread
    /// id, `FUTEX_WAITERS` when a locker sleeps on it (the holder's unlock then wakes one), and
    /// `FUTEX_OWNER_DIED` after the kernel released a dead holder's lock (the robust-futex ABI).
    /// `None` where the layout is another.
    pub(crate) fn lock_word(&self) -> Option<&AtomicU32> {
        #[cfg(target_env = "gnu")]
        {
            // SAFETY: offset 0 of the 8-aligned cell, valid while `&self` lives and in an
            // `UnsafeCell`; glibc and the kernel access these 4 bytes only atomically (except
            // `pthread_mutex_init`/`_destroy`, which run when nobody uses the mutex).
            Some(unsafe { &*self.ptr().cast::<AtomicU32>() })
        }
        #[cfg(not(target_env = "gnu"))]
        {
            None
        }
    }
}

/// Blocks every signal in the calling thread, so that the application's signal handlers never
/// run on a thread of this crate and its waits are never interrupted.
#[cfg(feature = "tokio")]
pub(crate) fn block_signals() {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigfillset` initialises the set it is given, valid writable storage here.
    unsafe { libc::sigfillset(set.as_mut_ptr()) };
    // SAFETY: the set was initialised above; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut()) };
}

/// Registers `fd` (an eventfd semaphore's descriptor, non-blocking) with the current tokio
/// runtime's reactor for readability.
///
/// The caller must be inside a runtime with IO enabled (tokio panics otherwise).
#[cfg(feature = "tokio")]
pub(crate) fn register_readable(
    fd: std::os::fd::OwnedFd,
) -> Result<
    tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    tokio::io::unix::AsyncFdRegisterError<std::os::fd::OwnedFd>,
> {
    // SAFETY: the `AsyncFd` owns the `OwnedFd`, so the descriptor stays open, and refers to the
    // same open file description, until the `AsyncFd` is dropped or `into_inner` deregisters it;
    // `OwnedFd::as_raw_fd` always returns that descriptor. The crate's only user
    // (`AsyncEventSemaphore`) never calls `get_mut` (which could swap the descriptor) and hands
    // out only borrowed descriptors.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
}
