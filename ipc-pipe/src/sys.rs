//! The only file of the crate with unsafe code: one FFI call per block, each with `// SAFETY:`.
//!
//! This is the ground floor: it takes and returns raw and `std` types only (descriptor numbers,
//! `BorrowedFd`/`OwnedFd`, byte slices, `io::Result`, libc's signal values) and imports nothing
//! from the concept files above it; they wrap it. What lives here and why it needs `unsafe`:
//! - [`vmsplice`] and [`vmsplice_ring`]: the kernel keeps references to user pages after the
//!   call returns.
//! - [`Mapping`]: a private anonymous mapping (`mmap`/`munmap`), the memory a
//!   `ZeroCopyWriter` lends to its pipe, handed out as byte slices.
//! - [`install_fd_map`]: `pre_exec` runs between `fork` and `exec` in the child.
//! - [`claim_inherited`]: turns a descriptor number inherited at exec into an `OwnedFd`.
//! - [`dup_stdio`]: duplicates a standard stream by number, without touching `std::io`.
//! - [`set_sigpipe`], [`sigpipe`], [`without_sigpipe`]: signal dispositions, masks and the
//!   pending set.
//! - `register_async` (feature `tokio`): tokio's `AsyncFd::register_with_interest`, `unsafe`
//!   because the descriptor must stay open and the same for the `AsyncFd`'s whole life.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr::NonNull;
use std::sync::Mutex;

use rustix::pipe::{IoSliceRaw, SpliceFlags};

/// `vmsplice(fd, [data], 0)`: maps the pages under `data` into the pipe `fd` instead of copying
/// them. Returns how many bytes went in (possibly fewer than `data.len()`, like `write`).
///
/// # Safety
/// The pipe keeps references to the pages of `data` until its reader has consumed the bytes:
/// until then the caller must neither modify nor free `data` (see the public
/// `ipc_pipe::vmsplice`, whose contract this is).
pub(crate) unsafe fn vmsplice(fd: BorrowedFd<'_>, data: &[u8]) -> rustix::io::Result<usize> {
    let iov = [IoSliceRaw::from_slice(data)];
    // SAFETY: the kernel only reads `data` (a pipe's write end); the caller promises (this
    // function's contract) that `data` stays unchanged and alive until it is consumed.
    unsafe { rustix::pipe::vmsplice(fd, &iov, SpliceFlags::empty()) }
}

/// `vmsplice` of `piece`, a piece of a [`Mapping`] that a `ZeroCopyWriter` owns, into the pipe
/// `fd`.
///
/// Only `ZeroCopyWriter` calls this. It never writes to a piece again while the pipe may still
/// refer to it (it checks the pipe's capacity before every piece, see its docs), and its ring is
/// a [`Mapping`], which is unmapped, never handed to an allocator, when it is dropped.
pub(crate) fn vmsplice_ring(
    fd: BorrowedFd<'_>,
    piece: &[u8],
    nonblock: bool,
) -> rustix::io::Result<usize> {
    let iov = [IoSliceRaw::from_slice(piece)];
    let flags = if nonblock {
        SpliceFlags::NONBLOCK
    } else {
        SpliceFlags::empty()
    };
    // SAFETY: the kernel only reads `piece`. The piece lies in a `Mapping` owned by a
    // ZeroCopyWriter, which does not write to it again until more bytes than the pipe can hold
    // (its capacity, read before each piece) were inserted after it. When the writer is done
    // the mapping is unmapped: the pages the pipe still refers to are then mapped nowhere, so
    // nothing can change them, and the kernel frees them only when the pipe lets them go (a
    // page's reference count, not our mapping, keeps it alive). No allocator ever reuses them.
    unsafe { rustix::pipe::vmsplice(fd, &iov, flags) }
}

/// A private anonymous memory mapping of `len` bytes (`mmap(MAP_PRIVATE | MAP_ANONYMOUS)`),
/// page-aligned, zeroed by the kernel, unmapped when dropped.
///
/// This is what a `ZeroCopyWriter` lends to its pipe with `vmsplice`. Unlike heap memory,
/// which `free` gives back to the allocator for the next `malloc` (so a pipe that still refers
/// to its pages would show the reader whatever the program writes there next), an unmapped
/// page belongs to no one in this process any more: the pipe keeps it alive, unchanged, until
/// the reader has consumed it. So dropping a `Mapping` is always safe and never leaks, whatever
/// the pipe still holds.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` owns its pages as a `Box<[u8]>` owns its heap block: no other handle to
// them exists in this process, reads and writes go through `&self`/`&mut self`, and
// `mmap`/`munmap` may be called from any thread.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only gives out `&[u8]`; mutation needs `&mut Mapping`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` (> 0) bytes of private, zeroed, readable and writable memory.
    pub(crate) fn new(len: usize) -> io::Result<Mapping> {
        use rustix::mm::{MapFlags, ProtFlags};
        if len == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: a null address lets the kernel choose a free range: no existing mapping is
        // replaced. The new range is ours alone.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(io::ErrorKind::OutOfMemory)?;
        Ok(Mapping { ptr, len })
    }

    /// The mapping's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The whole mapping, for writing.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr..ptr + len` is a live, readable and writable mapping that only this
        // value owns, initialised (zeroed by the kernel, then written only through slices like
        // this one); `&mut self` makes this the only reference to it for the borrow's life.
        // (The kernel may read pages of it that a pipe refers to: reads by the kernel do not
        // alias a Rust `&mut` in any way the compiler can observe, as with `write(2)`.)
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr + len` is the range `mmap` returned for this value, unmapped once,
        // here; no slice of it outlives `self`. Pages a pipe still refers to stay alive (and
        // unchanged) in the kernel until the pipe lets them go. With valid arguments `munmap`
        // cannot fail.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len).finish()
    }
}

/// Arranges for the child of `cmd` to find each `(fd, target)` at descriptor number `target`,
/// not close-on-exec, whatever numbers the descriptors have in the parent.
///
/// The parent keeps the descriptors open (they live in the closure, owned by `cmd`) until `cmd`
/// is dropped, and `keep` with them (placeholders that hold target numbers in the parent, so
/// that `spawn`'s own descriptors cannot take them). In the child, between `fork` and `exec`,
/// only `fcntl` and `dup2` run: both are async-signal-safe (POSIX.1-2017, 2.4.3), and the closure
/// neither allocates nor locks.
pub(crate) fn install_fd_map(cmd: &mut Command, map: Vec<(OwnedFd, RawFd)>, keep: Vec<OwnedFd>) {
    // Raw numbers, computed now so the child allocates nothing. `work[i]` is where descriptor i
    // is found in the child during the two phases below.
    let raw: Vec<(RawFd, RawFd)> = map.iter().map(|(fd, t)| (fd.as_raw_fd(), *t)).collect();
    let mut work: Vec<RawFd> = raw.iter().map(|&(s, _)| s).collect();
    let above = raw
        .iter()
        .map(|&(_, t)| t)
        .max()
        .unwrap_or(2)
        .saturating_add(1);
    let hook = move || -> io::Result<()> {
        let _keep_open = (&map, &keep);
        // Phase 1: a source that sits on another entry's target would be overwritten by that
        // entry's dup2: move it above every target first.
        for (i, slot) in work.iter_mut().enumerate() {
            let clash = raw
                .iter()
                .enumerate()
                .any(|(j, &(_, t))| j != i && t == *slot);
            if clash {
                // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor this process owns (inherited
                // from the parent's `map`); async-signal-safe.
                let moved = unsafe { libc::fcntl(*slot, libc::F_DUPFD_CLOEXEC, above) };
                if moved < 0 {
                    return Err(io::Error::last_os_error());
                }
                *slot = moved;
            }
        }
        // Phase 2: put each one in place. dup2 clears FD_CLOEXEC on the new number; a source
        // already at its target only has the flag cleared.
        for (i, &(_, target)) in raw.iter().enumerate() {
            if work[i] == target {
                // SAFETY: fcntl(F_SETFD, 0) on an open descriptor; async-signal-safe.
                let r = unsafe { libc::fcntl(target, libc::F_SETFD, 0) };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else {
                // SAFETY: dup2 between two descriptor numbers; `target` is not the source of any
                // other entry (phase 1) and is not one of `spawn`'s own descriptors (a
                // placeholder in `keep`, or a descriptor of the parent's, holds it); async-
                // signal-safe.
                let r = unsafe { libc::dup2(work[i], target) };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions (fcntl, dup2) on numbers computed
    // before the fork, reads and writes memory the closure owns, and does not allocate, lock or
    // unwind.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// `fcntl(n, F_DUPFD_CLOEXEC, 3)` for standard stream `n` (0, 1 or 2): a new close-on-exec
/// descriptor, at 3 or above, that only the caller owns.
///
/// Unlike `std::io::stdin().as_fd()`, this does not initialise std's stream (its buffer and
/// its once-lock), so it is async-signal-safe: one `fcntl`.
pub(crate) fn dup_stdio(n: RawFd) -> io::Result<OwnedFd> {
    if !(0..=2).contains(&n) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor table: a closed number is EBADF, an open
    // one is left as it is (std lends the standard streams to everyone, `Stdin::as_fd`).
    let fd = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else knows about.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Why [`claim_inherited`] refused a descriptor number.
#[derive(Debug)]
pub(crate) enum Claim<E> {
    /// No descriptor is open at that number.
    NotOpen,
    /// This process claimed that number before.
    AlreadyClaimed,
    /// The caller's check refused it.
    Refused(E),
    /// Making it close-on-exec failed.
    Io(io::Error),
}

/// The descriptor numbers already claimed by [`claim_inherited`] in this process.
static CLAIMED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Takes ownership of descriptor `fd`, after checking that it is open, was not claimed before in
/// this process and passes `check`. Marks it close-on-exec so it is not passed on further by
/// accident.
///
/// # Safety
/// `fd` must be an open descriptor that nothing else in this process owns or will close (one
/// inherited at exec and not claimed by other code): the returned `OwnedFd` closes it.
pub(crate) unsafe fn claim_inherited<E>(
    fd: RawFd,
    check: impl FnOnce(BorrowedFd<'_>) -> Result<(), E>,
) -> Result<OwnedFd, Claim<E>> {
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    if claimed.contains(&fd) {
        return Err(Claim::AlreadyClaimed);
    }
    // SAFETY: `fcntl(F_GETFD)` only inspects the descriptor table; an unknown number is EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Claim::NotOpen);
    }
    // SAFETY: `fd` is open (checked just above) and, by this function's contract, owned by no
    // one else, so it stays open while it is borrowed for the checks below.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    check(borrowed).map_err(Claim::Refused)?;
    rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| Claim::Io(e.into()))?;
    claimed.push(fd);
    // SAFETY: the descriptor is open, and this function's caller promises that nothing else in
    // this process owns it; the CLAIMED registry makes sure this crate hands it out only once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `sigaction(SIGPIPE, ..)`: sets the process-wide disposition of SIGPIPE to `SIG_IGN` (if
/// `ignore`) or `SIG_DFL`; returns the previous handler value (`SIG_IGN`, `SIG_DFL` or a
/// function's address).
pub(crate) fn set_sigpipe(ignore: bool) -> io::Result<libc::sighandler_t> {
    // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags, SIG_DFL).
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = if ignore { libc::SIG_IGN } else { libc::SIG_DFL };
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: both pointers are valid; SIG_IGN and SIG_DFL are not functions, so no handler can
    // run with broken assumptions.
    if unsafe { libc::sigaction(libc::SIGPIPE, &new, old.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    Ok(old.sa_sigaction)
}

/// `sigaction(SIGPIPE, NULL, &old)`: the process-wide disposition of SIGPIPE (`SIG_IGN`,
/// `SIG_DFL` or a function's address).
pub(crate) fn sigpipe() -> io::Result<libc::sighandler_t> {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `old` is valid for writing.
    if unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), old.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    Ok(old.sa_sigaction)
}

/// A signal set holding only SIGPIPE.
fn sigpipe_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: `set` is valid for writing; sigemptyset initialises it.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: `set` was initialised by sigemptyset; SIGPIPE is a valid signal number.
    unsafe { libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE) };
    // SAFETY: initialised by the two calls above.
    unsafe { set.assume_init() }
}

/// `sigpending`: whether a SIGPIPE is pending for this thread or for the process.
pub(crate) fn sigpipe_pending() -> io::Result<bool> {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: `set` is valid for writing; sigpending fills it.
    if unsafe { libc::sigpending(set.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigpending succeeded and filled `set`.
    let set = unsafe { set.assume_init() };
    // SAFETY: `set` is an initialised signal set; SIGPIPE is a valid signal number.
    Ok(unsafe { libc::sigismember(&set, libc::SIGPIPE) } == 1)
}

/// Runs `f` so that it cannot raise SIGPIPE in this process, whatever the disposition, the
/// classic way (as libpq does):
///
/// 1. block SIGPIPE in the calling thread (if it was not blocked already);
/// 2. note whether a SIGPIPE is pending *before* `f` runs (only possible if it was blocked);
/// 3. run `f`;
/// 4. if none was pending before, take the one `f` may have raised off the queue — whatever
///    `f` returned: Linux raises SIGPIPE on a short write whose reader went away too, not only
///    on `EPIPE` — (also if `f` panicked);
/// 5. restore the mask.
///
/// A SIGPIPE that was pending before `f` ran is left pending: it is the caller's. One raised by
/// `f` merges with it (a standard signal is pending at most once per thread).
pub(crate) fn without_sigpipe<R>(f: impl FnOnce() -> R) -> io::Result<R> {
    let only_pipe = sigpipe_set();
    let mut old = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: valid pointers; blocking a signal in this thread only.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &only_pipe, old.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: pthread_sigmask succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    // SAFETY: `old` is an initialised signal set.
    let was_blocked = unsafe { libc::sigismember(&old, libc::SIGPIPE) } == 1;
    let mut guard = MaskGuard {
        old,
        only_pipe,
        restore: !was_blocked,
        drain: false,
    };
    // SIGPIPE is blocked now, so what is pending stays pending until the guard is done. (If
    // this fails, the guard restores the mask and `f` does not run.)
    guard.drain = !sigpipe_pending()?;
    let result = f();
    drop(guard);
    Ok(result)
}

/// Takes a SIGPIPE raised meanwhile off the queue (if asked), then restores the thread's signal
/// mask, when dropped, also while unwinding.
struct MaskGuard {
    old: libc::sigset_t,
    only_pipe: libc::sigset_t,
    restore: bool,
    drain: bool,
}

impl Drop for MaskGuard {
    fn drop(&mut self) {
        if self.drain {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            loop {
                // SAFETY: valid set and timeout; a null info pointer is allowed. Takes a SIGPIPE
                // pending for this thread (or the process), if any: EAGAIN at once if none.
                let got =
                    unsafe { libc::sigtimedwait(&self.only_pipe, std::ptr::null_mut(), &zero) };
                if got >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
        }
        if self.restore {
            // SAFETY: restores the mask that pthread_sigmask returned in `without_sigpipe`; with
            // valid arguments it cannot fail.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
        }
    }
}

/// Registers `fd` with the current tokio runtime's reactor for `interest`: an `AsyncFd` that
/// owns it. The caller makes it non-blocking first.
///
/// # Errors
/// When there is no current runtime (tokio would panic), or the reactor refuses it.
///
/// # Panics
/// Inside a runtime built without IO (`enable_io`), as tokio's own types do.
#[cfg(feature = "tokio")]
pub(crate) fn register_async(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(
            "an async pipe end needs a tokio runtime: make it inside one (with IO enabled)",
        ));
    }
    // SAFETY: the AsyncFd takes ownership of `fd`, an `OwnedFd`: nothing else owns (or will
    // close) that descriptor, so it stays open and refers to the same open file description
    // until the AsyncFd is dropped or gives it back (`into_inner`), and `as_raw_fd` returns the
    // same number every time. This crate never calls `AsyncFd::get_mut`, the one way to swap the
    // `OwnedFd` inside for another.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts().1)
}
