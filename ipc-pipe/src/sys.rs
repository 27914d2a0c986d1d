//! The only file of the crate with unsafe code: one FFI call per block, each with `// SAFETY:`.
//!
//! What lives here and why it needs `unsafe`:
//! - [`vmsplice`] and the ring of [`crate::ZeroCopyWriter`]: the kernel keeps references to user
//!   pages after the call returns.
//! - [`install_fd_map`]: `pre_exec` runs between `fork` and `exec` in the child.
//! - [`claim_inherited`]: turns a descriptor number inherited at exec into an `OwnedFd`.
//! - [`set_sigpipe`], [`sigpipe`], [`without_sigpipe`]: signal dispositions and masks.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;

use rustix::pipe::{IoSliceRaw, SpliceFlags};

use crate::PipeWriter;
use crate::sigpipe::Disposition;

/// `vmsplice(fd, [data], 0)`—Maps the pages under `data` into the pipe instead of copying them.
///
/// Returns how many bytes were spliced (possibly fewer than `data.len()`, like `write`). Blocks
/// while the pipe is full unless the writer is non-blocking.
///
/// # Safety
/// The pipe keeps *references* to the pages of `data`, not copies, until the reader has consumed
/// the bytes. Until then the caller must neither modify `data` nor free it (a freed buffer is
/// reused by the allocator, and the reader would then read whatever is written there next, which
/// may be another part of the program's secrets). "Consumed" means the reader copied the bytes
/// out (`read`, `splice` into a regular file); if the reader `splice`s or `tee`s them into another
/// pipe or a socket, the references travel on and the rule holds until *that* consumer is done.
///
/// The simplest safe way to meet the contract is [`crate::ZeroCopyWriter`], which owns its buffer
/// and reuses a piece only after the pipe can no longer refer to it.
///
/// ```
/// use std::io::Read;
/// let (mut r, w) = ipc_pipe::pipe()?;
/// let data: &'static [u8] = b"static bytes never change"; // meets the contract trivially
/// // SAFETY: `data` is immutable and lives for the whole program.
/// let n = unsafe { ipc_pipe::vmsplice(&w, data)? };
/// let mut got = vec![0; n];
/// r.read_exact(&mut got)?;
/// assert_eq!(got, data);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// `BrokenPipe` when there is no reader, `WouldBlock` on a full non-blocking pipe.
///
/// # References
///  - [Linux](https://man7.org/linux/man-pages/man2/vmsplice.2.html)
#[doc(alias = "SPLICE_F_GIFT")]
pub unsafe fn vmsplice(writer: &PipeWriter, data: &[u8]) -> io::Result<usize> {
    let iov = [IoSliceRaw::from_slice(data)];
    writer.guarded(|| {
        // SAFETY: `writer` is the write end of a pipe, so the kernel only reads `data`; the
        // caller promises (this function's contract) that `data` stays unchanged until it is
        // consumed.
        unsafe { rustix::pipe::vmsplice(writer, &iov, SpliceFlags::empty()) }
    })
}

/// `vmsplice` of `buf[start..start + len]`, a piece of a [`crate::ZeroCopyWriter`]'s own ring.
///
/// Only `ZeroCopyWriter` calls this; it never hands out `&mut` access to a piece that the pipe may
/// still reference (see its docs), and it never frees its ring while the pipe may reference it.
pub(crate) fn vmsplice_ring(writer: &PipeWriter, piece: &[u8]) -> io::Result<usize> {
    let iov = [IoSliceRaw::from_slice(piece)];
    writer.guarded(|| {
        // SAFETY: `writer` is a pipe's write end, so the kernel only reads `piece`. The piece
        // belongs to a ZeroCopyWriter ring, which does not write to it again until at least one
        // pipe capacity of newer bytes has been inserted after it (a pipe holds at most its
        // capacity, so it no longer refers to it), and which leaks rather than frees its ring if
        // the pipe may still refer to it when dropped.
        unsafe { rustix::pipe::vmsplice(writer, &iov, SpliceFlags::empty()) }
    })
}

/// Arranges for the child of `cmd` to find each `(fd, target)` at descriptor number `target`,
/// not close-on-exec, whatever numbers the descriptors have in the parent.
///
/// The parent keeps the descriptors open (they live in the closure, owned by `cmd`) until `cmd`
/// is dropped. In the child, between `fork` and `exec`, only `fcntl` and `dup2` run: both are
/// async-signal-safe (POSIX.1-2017, 2.4.3), and the closure neither allocates nor locks.
pub(crate) fn install_fd_map(cmd: &mut Command, map: Vec<(OwnedFd, RawFd)>) {
    // Raw numbers, computed now so the child allocates nothing. `work[i]` is where descriptor i
    // is found in the child during the two phases below.
    let raw: Vec<(RawFd, RawFd)> = map.iter().map(|(fd, t)| (fd.as_raw_fd(), *t)).collect();
    let mut work: Vec<RawFd> = raw.iter().map(|&(s, _)| s).collect();
    let above = raw.iter().map(|&(_, t)| t).max().unwrap_or(2) + 1;
    let hook = move || -> io::Result<()> {
        let _keep_open = &map;
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
                // other entry (phase 1); async-signal-safe.
                let r = unsafe { libc::dup2(work[i], target) };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions (fcntl, dup2) on numbers computed
    // before the fork, reads memory the closure owns, and does not allocate, lock or unwind.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// The descriptor numbers already claimed by [`claim_inherited`] in this process.
static CLAIMED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Takes ownership of descriptor `fd`, inherited from the parent at exec, after checking that it
/// is open, a pipe or FIFO, opened with `want` (`O_RDONLY` or `O_WRONLY` access), not 0..=2 (the
/// standard streams belong to `std::io`), and not claimed before in this process. Marks it
/// close-on-exec so it is not passed on further by accident.
pub(crate) fn claim_inherited(fd: RawFd, want: rustix::fs::OFlags) -> crate::Result<OwnedFd> {
    use crate::Error;
    if fd <= 2 {
        return Err(Error::InvalidDescriptor(
            "descriptors 0, 1 and 2 are the standard streams; use std::io::stdin/stdout/stderr",
        ));
    }
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    if claimed.contains(&fd) {
        return Err(Error::InvalidDescriptor(
            "this descriptor was already claimed in this process",
        ));
    }
    // SAFETY: `fcntl(F_GETFD)` only inspects the descriptor table; an unknown number is EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::InvalidDescriptor("no such open descriptor"));
    }
    // SAFETY: `fd` is open (checked just above) and is borrowed only for the checks below, which
    // complete before this function returns.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let st = rustix::fs::fstat(borrowed)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Fifo {
        return Err(Error::InvalidDescriptor("not a pipe or FIFO"));
    }
    let access = rustix::fs::fcntl_getfl(borrowed)? & rustix::fs::OFlags::RWMODE;
    if access != want {
        return Err(Error::InvalidDescriptor(
            "opened for the other direction (a read end where a write end was expected, or the reverse)",
        ));
    }
    rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC)?;
    claimed.push(fd);
    // SAFETY: the descriptor is open and was inherited at exec (by the caller's contract with its
    // parent); the CLAIMED registry guarantees no other handle of this crate owns it, and numbers
    // above 2 are not owned by std. This is the same argument as systemd's `sd_listen_fds`.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `sigaction(SIGPIPE, ..)`: sets the process-wide disposition of SIGPIPE.
pub(crate) fn set_sigpipe(disposition: Disposition) -> io::Result<Disposition> {
    let handler = match disposition {
        Disposition::Ignore => libc::SIG_IGN,
        Disposition::Default => libc::SIG_DFL,
        Disposition::Handler => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "installing a handler is the host program's business",
            ));
        }
    };
    // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags, SIG_DFL).
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = handler;
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: both pointers are valid; SIG_IGN and SIG_DFL are not functions, so no handler can
    // run with broken assumptions.
    if unsafe { libc::sigaction(libc::SIGPIPE, &new, old.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    Ok(disposition_of(old.sa_sigaction))
}

/// `sigaction(SIGPIPE, NULL, &old)`: the process-wide disposition of SIGPIPE.
pub(crate) fn sigpipe() -> io::Result<Disposition> {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `old` is valid for writing.
    if unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), old.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    Ok(disposition_of(old.sa_sigaction))
}

fn disposition_of(h: libc::sighandler_t) -> Disposition {
    match h {
        libc::SIG_IGN => Disposition::Ignore,
        libc::SIG_DFL => Disposition::Default,
        _ => Disposition::Handler,
    }
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

/// Runs `f` so that it cannot raise SIGPIPE in this process, whatever the disposition:
/// SIGPIPE is blocked in the calling thread while `f` runs; afterwards, if `raised(&result)`
/// says `f` may have hit a pipe without reader (or if `f` panicked), the SIGPIPE that this
/// queued for the thread is taken off the queue before the mask is restored.
///
/// If the caller had SIGPIPE blocked already, `f` runs plainly: a pending SIGPIPE is then the
/// caller's to handle.
pub(crate) fn without_sigpipe<R>(
    f: impl FnOnce() -> R,
    raised: impl FnOnce(&R) -> bool,
) -> io::Result<R> {
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
        // Until `f` returns normally: a panic drains too.
        drain: true,
    };
    let result = f();
    guard.drain = raised(&result);
    drop(guard);
    Ok(result)
}

/// Restores the thread's signal mask (after taking a queued SIGPIPE, if asked) when dropped,
/// also while unwinding.
struct MaskGuard {
    old: libc::sigset_t,
    only_pipe: libc::sigset_t,
    restore: bool,
    drain: bool,
}

impl Drop for MaskGuard {
    fn drop(&mut self) {
        if !self.restore {
            return;
        }
        if self.drain {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            loop {
                // SAFETY: valid set and timeout; a null info pointer is allowed. Takes the
                // SIGPIPE queued for this thread, if any (EAGAIN if none).
                let got =
                    unsafe { libc::sigtimedwait(&self.only_pipe, std::ptr::null_mut(), &zero) };
                if got >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
        }
        // SAFETY: restores the mask that pthread_sigmask returned in `without_sigpipe`; with
        // valid arguments it cannot fail.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}
