//! The only unsafe code of the crate: the `sem_*`, `sem*` (System V), `pthread_mutex_*` and
//! `mmap` calls, one per block, each with its SAFETY argument; and the `unsafe` constructors of
//! the in-place types, whose contracts the caller keeps.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_int, c_void};
use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;

use rustix::time::Timespec;

use crate::error::{Error, Result};
use crate::mutex::{RawRobustMutex, RobustMutex};
use crate::posix::{InPlaceSemaphore, RawSemaphore};

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

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn libc_ts(ts: &Timespec) -> libc::timespec {
    libc::timespec {
        tv_sec: ts.tv_sec as libc::time_t,
        tv_nsec: ts.tv_nsec as _,
    }
}

// ---------------------------------------------------------------------------------------------
// POSIX semaphores

/// A pointer to an initialised `sem_t` that stays valid and in place for as long as this value
/// lives (the invariant every constructor establishes).
#[derive(Debug)]
pub(crate) struct SemPtr(NonNull<libc::sem_t>);

// SAFETY: the `sem_*` functions are safe to call from any thread on the same semaphore; the
// pointer is valid for the value's lifetime wherever the value is used.
unsafe impl Send for SemPtr {}
// SAFETY: as above; every method takes `&self` and the semaphore synchronises itself.
unsafe impl Sync for SemPtr {}

impl SemPtr {
    /// `sem_post`: `Err(errno)` on failure.
    #[inline]
    pub(crate) fn post(&self) -> std::result::Result<(), i32> {
        // SAFETY: the pointer is valid and initialised (type invariant).
        if unsafe { libc::sem_post(self.0.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(errno())
        }
    }

    /// `sem_wait`.
    #[inline]
    pub(crate) fn wait(&self) -> std::result::Result<(), i32> {
        // SAFETY: the pointer is valid and initialised (type invariant).
        if unsafe { libc::sem_wait(self.0.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(errno())
        }
    }

    /// `sem_trywait`.
    #[inline]
    pub(crate) fn try_wait(&self) -> std::result::Result<(), i32> {
        // SAFETY: the pointer is valid and initialised (type invariant).
        if unsafe { libc::sem_trywait(self.0.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(errno())
        }
    }

    /// `sem_clockwait(CLOCK_MONOTONIC, at)`.
    pub(crate) fn clock_wait(&self, at: &Timespec) -> std::result::Result<(), i32> {
        let ts = libc_ts(at);
        // SAFETY: the pointer is valid and initialised (type invariant); `ts` lives across the
        // call.
        if unsafe { sem_clockwait(self.0.as_ptr(), libc::CLOCK_MONOTONIC, &ts) } == 0 {
            Ok(())
        } else {
            Err(errno())
        }
    }

    /// `sem_getvalue`.
    pub(crate) fn value(&self) -> std::result::Result<i32, i32> {
        let mut v: c_int = 0;
        // SAFETY: the pointer is valid and initialised (type invariant); `v` is a valid out
        // location.
        if unsafe { libc::sem_getvalue(self.0.as_ptr(), &mut v) } == 0 {
            Ok(v)
        } else {
            Err(errno())
        }
    }
}

/// A semaphore from `sem_open`, closed (`sem_close`) on drop.
#[derive(Debug)]
pub(crate) struct NamedSem(SemPtr);

impl std::ops::Deref for NamedSem {
    type Target = SemPtr;
    fn deref(&self) -> &SemPtr {
        &self.0
    }
}

impl NamedSem {
    fn from_raw(p: *mut libc::sem_t) -> io::Result<NamedSem> {
        if p == libc::SEM_FAILED {
            return Err(io::Error::last_os_error());
        }
        // `sem_open` succeeded: the pointer is a mapped, initialised semaphore until
        // `sem_close`, which only our Drop calls.
        NonNull::new(p)
            .map(|p| NamedSem(SemPtr(p)))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// `sem_open(name, O_CREAT | O_EXCL, mode, value)`.
    pub(crate) fn create(name: &CStr, mode: u32, value: u32) -> io::Result<NamedSem> {
        // SAFETY: `name` is NUL-terminated and outlives the call; with O_CREAT the variadic
        // arguments are the mode (promoted to c_uint) and the initial value (c_uint).
        let p = unsafe {
            libc::sem_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL,
                mode as libc::c_uint,
                value as libc::c_uint,
            )
        };
        NamedSem::from_raw(p)
    }

    /// `sem_open(name, 0)`.
    pub(crate) fn open(name: &CStr) -> io::Result<NamedSem> {
        // SAFETY: `name` is NUL-terminated and outlives the call; without O_CREAT no variadic
        // arguments are read.
        let p = unsafe { libc::sem_open(name.as_ptr(), 0) };
        NamedSem::from_raw(p)
    }
}

impl Drop for NamedSem {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `sem_open` and is closed exactly once, here; nothing
        // uses it afterwards (the only copy is in `self`).
        unsafe { libc::sem_close(self.0.0.as_ptr()) };
    }
}

/// `sem_unlink(name)`.
pub(crate) fn sem_unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    if unsafe { libc::sem_unlink(name.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl InPlaceSemaphore {
    /// `sem_init(slot, pshared = 1, value)`—Initialises a process-shared semaphore in memory the
    /// caller provides (for example a POSIX or System V shared-memory segment) and returns a
    /// handle to it.
    ///
    /// # Safety
    /// The caller guarantees that `slot`:
    /// - is aligned for [`RawSemaphore`] and points to `size_of::<RawSemaphore>()` bytes of
    ///   writable memory, mapped `MAP_SHARED` if other processes are to use it;
    /// - is initialised exactly once (no process calls `init` on it again while any process
    ///   uses it), and no one writes those bytes except through these handles;
    /// - stays mapped and at the same address, never moved or copied, for as long as this
    ///   handle and every handle from [`InPlaceSemaphore::attach`] live;
    /// - is destroyed at most once, with [`InPlaceSemaphore::destroy`], when no process uses it
    ///   any more.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`] for `value > SEM_VALUE_MAX` (nothing is written).
    #[doc(alias = "sem_init")]
    pub unsafe fn init(slot: NonNull<RawSemaphore>, value: u32) -> Result<InPlaceSemaphore> {
        crate::posix::check_value(value)?;
        let p = slot.as_ptr().cast::<libc::sem_t>();
        // SAFETY: the caller guarantees `p` is aligned, writable, shared and not in use;
        // `RawSemaphore` has the size and alignment of `sem_t` (asserted in posix.rs).
        if unsafe { libc::sem_init(p, 1, value) } != 0 {
            return Err(Error::from(io::Error::last_os_error()));
        }
        Ok(InPlaceSemaphore {
            sem: SemPtr(slot.cast()),
        })
    }

    /// Attaches to a semaphore that another handle (perhaps in another process) initialised
    /// with [`InPlaceSemaphore::init`] at `slot` (in this process's mapping of the same memory).
    ///
    /// # Safety
    /// The caller guarantees that `slot` points to a semaphore initialised by `init` and not yet
    /// destroyed, and that the memory stays mapped at that address, unmoved, for as long as the
    /// returned handle lives (the contract of [`InPlaceSemaphore::init`]).
    pub unsafe fn attach(slot: NonNull<RawSemaphore>) -> InPlaceSemaphore {
        InPlaceSemaphore {
            sem: SemPtr(slot.cast()),
        }
    }

    /// `sem_destroy`—Destroys the semaphore. Consumes this handle.
    ///
    /// # Safety
    /// No process may use the semaphore afterwards (through any handle, in any process) until
    /// it is initialised again; no process may be blocked on it.
    ///
    /// # Errors
    /// What `sem_destroy` fails with (glibc never fails).
    #[doc(alias = "sem_destroy")]
    pub unsafe fn destroy(self) -> Result<()> {
        // SAFETY: the pointer is an initialised semaphore (type invariant) and the caller
        // guarantees nobody uses it any more.
        if unsafe { libc::sem_destroy(self.sem.0.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(Error::from(io::Error::last_os_error()))
        }
    }
}

/// A private anonymous `MAP_SHARED` page holding one process-shared semaphore: forked children
/// inherit the mapping, so they share the semaphore.
#[derive(Debug)]
pub(crate) struct SharedSem {
    page: NonNull<c_void>,
    len: usize,
    sem: SemPtr,
    creator: u32,
}

// SAFETY: the page is owned by the value and the semaphore in it is thread-safe.
unsafe impl Send for SharedSem {}
// SAFETY: as above; all access goes through `SemPtr`, which is `Sync`.
unsafe impl Sync for SharedSem {}

impl SharedSem {
    /// Maps a page and initialises a process-shared semaphore at its start.
    pub(crate) fn new(value: u32) -> Result<SharedSem> {
        crate::posix::check_value(value)?;
        let len = rustix::param::page_size();
        // SAFETY: a fresh anonymous mapping at an address the kernel picks cannot alias any Rust
        // object.
        let page = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
            )
        }
        .map_err(io::Error::from)?;
        let page = NonNull::new(page).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let p = page.as_ptr().cast::<libc::sem_t>();
        // SAFETY: `p` is the page-aligned start of a fresh, writable, shared mapping of at least
        // `size_of::<sem_t>()` bytes that nobody else uses yet.
        if unsafe { libc::sem_init(p, 1, value) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: the mapping is ours and unused.
            let _ = unsafe { rustix::mm::munmap(page.as_ptr(), len) };
            return Err(e.into());
        }
        Ok(SharedSem {
            page,
            len,
            sem: SemPtr(page.cast()),
            creator: std::process::id(),
        })
    }

    /// The semaphore.
    pub(crate) fn sem(&self) -> &SemPtr {
        &self.sem
    }
}

impl Drop for SharedSem {
    fn drop(&mut self) {
        if std::process::id() == self.creator {
            // SAFETY: the semaphore was initialised by `new` and is destroyed once, by the
            // creating process (glibc's sem_destroy does not touch the memory, so children that
            // still hold the page are not affected).
            unsafe { libc::sem_destroy(self.sem.0.as_ptr()) };
        }
        // SAFETY: the mapping is ours, `len` is its length, and no reference into it outlives
        // `self` (all access borrows `self`).
        let _ = unsafe { rustix::mm::munmap(self.page.as_ptr(), self.len) };
    }
}

// ---------------------------------------------------------------------------------------------
// eventfd

/// `preadv2(fd, 8 bytes, -1, RWF_NOWAIT)`: takes one unit of an eventfd semaphore without
/// blocking, whatever the descriptor's mode.
pub(crate) fn read_nowait(fd: &std::os::fd::OwnedFd) -> std::result::Result<(), rustix::io::Errno> {
    use std::os::fd::AsRawFd;
    let mut v = 0u64;
    let iov = libc::iovec {
        iov_base: (&mut v as *mut u64).cast(),
        iov_len: 8,
    };
    // SAFETY: `fd` is an open descriptor; `iov` describes 8 writable bytes of `v`, both valid
    // for the call; offset -1 means "current position" (eventfd has none).
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    if n == 8 {
        Ok(())
    } else if n < 0 {
        Err(
            rustix::io::Errno::from_io_error(&io::Error::last_os_error())
                .unwrap_or(rustix::io::Errno::IO),
        )
    } else {
        Err(rustix::io::Errno::IO)
    }
}

// ---------------------------------------------------------------------------------------------
// Robust mutex

/// A pointer to an initialised robust, process-shared `pthread_mutex_t` that stays valid and in
/// place while this value lives.
#[derive(Debug)]
pub(crate) struct MutexPtr(NonNull<libc::pthread_mutex_t>);

// SAFETY: pthread mutex functions are thread-safe; the pointer is valid (type invariant).
unsafe impl Send for MutexPtr {}
// SAFETY: as above.
unsafe impl Sync for MutexPtr {}

impl MutexPtr {
    /// `pthread_mutex_lock`: the return code (0, EOWNERDEAD, ENOTRECOVERABLE, EDEADLK, ...).
    pub(crate) fn lock(&self) -> c_int {
        // SAFETY: the pointer is an initialised mutex (type invariant).
        unsafe { libc::pthread_mutex_lock(self.0.as_ptr()) }
    }

    /// A non-blocking lock: `pthread_mutex_clocklock` with a deadline in the past (see
    /// `RobustMutex::try_lock` for why not `pthread_mutex_trylock`); EBUSY when held.
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
        // SAFETY: the pointer is an initialised mutex (type invariant); `ts` outlives the call.
        unsafe { pthread_mutex_clocklock(self.0.as_ptr(), libc::CLOCK_MONOTONIC, &ts) }
    }

    /// `pthread_mutex_unlock`.
    pub(crate) fn unlock(&self) -> c_int {
        // SAFETY: the pointer is an initialised mutex (type invariant); the caller holds it.
        unsafe { libc::pthread_mutex_unlock(self.0.as_ptr()) }
    }

    /// `pthread_mutex_consistent`.
    pub(crate) fn make_consistent(&self) -> c_int {
        // SAFETY: the pointer is an initialised robust mutex (type invariant); the caller holds
        // it after EOWNERDEAD.
        unsafe { libc::pthread_mutex_consistent(self.0.as_ptr()) }
    }
}

/// A `pthread_mutexattr_t` destroyed on drop.
struct MutexAttr(libc::pthread_mutexattr_t);

impl MutexAttr {
    fn new() -> Result<MutexAttr> {
        // SAFETY: an all-zero `pthread_mutexattr_t` is plain data; `pthread_mutexattr_init`
        // initialises it before any other use.
        let mut attr = MutexAttr(unsafe { std::mem::zeroed() });
        // SAFETY: `attr.0` is valid writable storage for an attribute object.
        let rc = unsafe { libc::pthread_mutexattr_init(&mut attr.0) };
        if rc != 0 {
            std::mem::forget(attr);
            return Err(Error::errno(rc));
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
                return Err(Error::errno(rc));
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

impl RobustMutex {
    /// `pthread_mutex_init` with `PTHREAD_PROCESS_SHARED`, `PTHREAD_MUTEX_ROBUST` and
    /// `PTHREAD_MUTEX_ERRORCHECK`—Initialises a robust, process-shared mutex in memory the
    /// caller provides and returns a handle to it.
    ///
    /// # Safety
    /// The caller guarantees that `slot`:
    /// - is aligned for [`RawRobustMutex`] and points to `size_of::<RawRobustMutex>()` bytes of
    ///   writable memory, mapped `MAP_SHARED` if other processes are to use it;
    /// - is initialised exactly once (never again while any process uses it), and no one
    ///   writes those bytes except through these handles;
    /// - stays mapped at the same address, never moved or copied, for as long as this handle
    ///   and every handle from [`RobustMutex::attach`] live;
    /// - is destroyed at most once, with [`RobustMutex::destroy`], when it is unlocked and no
    ///   process uses it any more.
    ///
    /// # Errors
    /// What `pthread_mutex_init` or the attribute setters fail with.
    #[doc(alias = "pthread_mutex_init")]
    pub unsafe fn init(slot: NonNull<RawRobustMutex>) -> Result<RobustMutex> {
        let attr = MutexAttr::new()?;
        let p = slot.as_ptr().cast::<libc::pthread_mutex_t>();
        // SAFETY: the caller guarantees `p` is aligned, writable, shared and not in use;
        // `RawRobustMutex` has the size and alignment of `pthread_mutex_t` (asserted in
        // mutex.rs); `attr` is initialised.
        let rc = unsafe { libc::pthread_mutex_init(p, &attr.0) };
        if rc != 0 {
            return Err(Error::errno(rc));
        }
        Ok(RobustMutex::from_ptr(MutexPtr(slot.cast())))
    }

    /// Attaches to a mutex that another handle (perhaps in another process) initialised with
    /// [`RobustMutex::init`] at `slot` (in this process's mapping of the same memory).
    ///
    /// # Safety
    /// `slot` points to a mutex initialised by `init` and not destroyed, and the memory stays
    /// mapped at that address, unmoved, for as long as the returned handle lives.
    pub unsafe fn attach(slot: NonNull<RawRobustMutex>) -> RobustMutex {
        RobustMutex::from_ptr(MutexPtr(slot.cast()))
    }

    /// `pthread_mutex_destroy`—Destroys the mutex. Consumes this handle.
    ///
    /// # Safety
    /// No process may use the mutex afterwards until it is initialised again.
    ///
    /// # Errors
    /// `EBUSY` (as [`Error::Io`]) if it is locked.
    #[doc(alias = "pthread_mutex_destroy")]
    pub unsafe fn destroy(self) -> Result<()> {
        // SAFETY: the pointer is an initialised mutex (type invariant) and the caller
        // guarantees nobody uses it any more.
        let rc = unsafe { libc::pthread_mutex_destroy(self.ptr().0.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::errno(rc))
        }
    }
}

/// Makes a guard type `!Send` (a pthread mutex must be unlocked by the thread that locked it).
pub(crate) type NotSend = PhantomData<*const ()>;

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
pub(crate) fn semop(id: c_int, ops: &mut [libc::sembuf]) -> std::result::Result<(), i32> {
    // SAFETY: `ops` is a valid array of `ops.len()` sembufs for the duration of the call.
    if unsafe { libc::semop(id, ops.as_mut_ptr(), ops.len()) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// `semtimedop(id, ops, timeout)` (relative timeout).
pub(crate) fn semtimedop_rel(
    id: c_int,
    ops: &mut [libc::sembuf],
    timeout: &Timespec,
) -> std::result::Result<(), i32> {
    let ts = libc_ts(timeout);
    // SAFETY: `ops` is a valid array of `ops.len()` sembufs and `ts` a valid timespec for the
    // duration of the call.
    if unsafe { semtimedop(id, ops.as_mut_ptr(), ops.len(), &ts) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
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

/// `semctl(id, 0, IPC_STAT)`: (number of semaphores, `sem_otime`, mode, owner uid).
pub(crate) fn semctl_stat(id: c_int) -> io::Result<(usize, i64, u32, u32)> {
    // SAFETY: `semid_ds` is plain data; all-zero is a valid value that IPC_STAT overwrites.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one `semid_ds` through `union semun.buf`; `ds` is valid for it.
    semctl_result(unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) })?;
    Ok((
        ds.sem_nsems as usize,
        ds.sem_otime as i64,
        u32::from(ds.sem_perm.mode) & 0o777,
        ds.sem_perm.uid,
    ))
}

/// `semctl(id, 0, IPC_SET)` with a new mode (uid/gid unchanged).
pub(crate) fn semctl_set_mode(id: c_int, mode: u32) -> io::Result<()> {
    // SAFETY: `semid_ds` is plain data; all-zero is a valid value that IPC_STAT overwrites.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one `semid_ds` through `union semun.buf`; `ds` is valid for it.
    semctl_result(unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) })?;
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
