//! The only file with unsafe code: thin wrappers over the libc calls rustix does not offer
//! (`mq_*`, `msg*`, `ftok`) and the zeroed `flock` an OFD lock request starts from. One FFI
//! call (or one unsafe operation) per unsafe block, each with its SAFETY note; every wrapper
//! returns `io::Result` built from `errno`.
//!
//! Vetted against glibc 2.36: `mq_open`, `mq_unlink` (which turns `EPERM` into `EACCES`),
//! `mq_timedsend`/`mq_timedreceive` (and `mq_send`/`mq_receive` on top of them),
//! `mq_getattr`/`mq_setattr`, `msgget`/`msgsnd`/`msgrcv`/`msgctl` are bare system calls that
//! open no descriptor and take no lock. `mq_notify` is one too for `SIGEV_SIGNAL`, `SIGEV_NONE`
//! and `NULL`, the only forms used here; for `SIGEV_THREAD` (never used) glibc would create,
//! once per process, a netlink socket (`SOCK_CLOEXEC`) and a helper thread, which a forked
//! child inherits without the thread. `ftok` is a `stat` and arithmetic.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The attributes of a POSIX queue, as plain numbers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawAttr {
    pub(crate) flags: i64,
    pub(crate) maxmsg: i64,
    pub(crate) msgsize: i64,
    pub(crate) curmsgs: i64,
}

fn zeroed_attr() -> libc::mq_attr {
    // SAFETY: `mq_attr` is plain integers (and padding): all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `mq_open(name, oflag, mode, attr)`; `attr` = (max messages, message size).
pub(crate) fn mq_open(
    name: &CStr,
    oflag: libc::c_int,
    mode: libc::mode_t,
    attr: Option<(i64, i64)>,
) -> io::Result<OwnedFd> {
    let mut a = zeroed_attr();
    let ptr: *mut libc::mq_attr = match attr {
        Some((maxmsg, msgsize)) => {
            a.mq_maxmsg = maxmsg as libc::c_long;
            a.mq_msgsize = msgsize as libc::c_long;
            &mut a
        }
        None => std::ptr::null_mut(),
    };
    // SAFETY: `name` is NUL-terminated and outlives the call; `ptr` is null or points to the
    // initialised `a`, which outlives the call; the variadic mode/attr are what mq_open reads
    // when O_CREAT is set (and ignores otherwise).
    let fd = unsafe { libc::mq_open(name.as_ptr(), oflag, mode, ptr) };
    let fd = cvt(fd)?;
    // SAFETY: `fd` was just returned by mq_open (on Linux an mqd_t is a descriptor) and
    // nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mq_unlink(name)`.
pub(crate) fn mq_unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::mq_unlink(name.as_ptr()) }).map(drop)
}

/// `mq_send(fd, msg, prio)`.
pub(crate) fn mq_send(fd: BorrowedFd<'_>, msg: &[u8], prio: u32) -> io::Result<()> {
    // SAFETY: `msg` is valid for reads of `msg.len()` bytes for the call; `fd` is open.
    cvt(unsafe { libc::mq_send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), prio) }).map(drop)
}

/// `mq_timedsend(fd, msg, prio, deadline)` (absolute CLOCK_REALTIME deadline).
pub(crate) fn mq_timedsend(
    fd: BorrowedFd<'_>,
    msg: &[u8],
    prio: u32,
    deadline: &libc::timespec,
) -> io::Result<()> {
    // SAFETY: `msg` is valid for reads of `msg.len()` bytes and `deadline` points to a valid
    // timespec, both for the duration of the call; `fd` is open.
    cvt(unsafe {
        libc::mq_timedsend(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            prio,
            deadline,
        )
    })
    .map(drop)
}

/// `mq_receive(fd, buf, &prio)` → (length, priority).
pub(crate) fn mq_receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, u32)> {
    let mut prio: libc::c_uint = 0;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes and `prio` for one c_uint, for
    // the duration of the call; `fd` is open.
    let n = unsafe {
        libc::mq_receive(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut prio,
        )
    };
    Ok((cvt_size(n)?, prio))
}

/// `mq_timedreceive(fd, buf, &prio, deadline)` → (length, priority).
pub(crate) fn mq_timedreceive(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: &libc::timespec,
) -> io::Result<(usize, u32)> {
    let mut prio: libc::c_uint = 0;
    // SAFETY: as for `mq_receive`; `deadline` points to a valid timespec for the call.
    let n = unsafe {
        libc::mq_timedreceive(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut prio,
            deadline,
        )
    };
    Ok((cvt_size(n)?, prio))
}

// `c_long` is `i64` on 64-bit targets only.
#[allow(clippy::unnecessary_cast)]
fn to_raw(a: &libc::mq_attr) -> RawAttr {
    RawAttr {
        flags: a.mq_flags as i64,
        maxmsg: a.mq_maxmsg as i64,
        msgsize: a.mq_msgsize as i64,
        curmsgs: a.mq_curmsgs as i64,
    }
}

/// `mq_getattr(fd)`.
pub(crate) fn mq_getattr(fd: BorrowedFd<'_>) -> io::Result<RawAttr> {
    let mut a = zeroed_attr();
    // SAFETY: `a` is a valid, writable mq_attr for the call; `fd` is open.
    cvt(unsafe { libc::mq_getattr(fd.as_raw_fd(), &mut a) })?;
    Ok(to_raw(&a))
}

/// `mq_setattr(fd, {mq_flags: flags})` → the previous attributes.
pub(crate) fn mq_setattr(fd: BorrowedFd<'_>, flags: i64) -> io::Result<RawAttr> {
    let mut new = zeroed_attr();
    new.mq_flags = flags as libc::c_long;
    let mut old = zeroed_attr();
    // SAFETY: `new` and `old` are valid mq_attr values for the call; `fd` is open.
    cvt(unsafe { libc::mq_setattr(fd.as_raw_fd(), &new, &mut old) })?;
    Ok(to_raw(&old))
}

/// How `mq_notify` should notify.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawNotify {
    /// `SIGEV_NONE`: registered, no notification.
    None,
    /// `SIGEV_SIGNAL` with this signal and `si_value.sival_int = value`.
    Signal(i32, i32),
}

/// `mq_notify(fd, sev)`; `None` removes this process's registration.
pub(crate) fn mq_notify(fd: BorrowedFd<'_>, how: Option<RawNotify>) -> io::Result<()> {
    // SAFETY: `sigevent` is plain data (integers, a union of an int and a pointer, padding):
    // all-zero is a valid value.
    let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
    let ptr: *const libc::sigevent = match how {
        None => std::ptr::null(),
        Some(RawNotify::None) => {
            sev.sigev_notify = libc::SIGEV_NONE;
            &sev
        }
        Some(RawNotify::Signal(signo, value)) => {
            sev.sigev_notify = libc::SIGEV_SIGNAL;
            sev.sigev_signo = signo;
            // `sigval` is a union of `int sival_int` and `void *sival_ptr`; libc declares only
            // the pointer. Put `value` where `sival_int` lies: the low bytes of the pointer
            // on little-endian and 32-bit targets, the high half on 64-bit big-endian ones.
            #[cfg(all(target_endian = "big", target_pointer_width = "64"))]
            let bits = (value as u32 as usize) << 32;
            #[cfg(not(all(target_endian = "big", target_pointer_width = "64")))]
            let bits = value as isize as usize;
            sev.sigev_value = libc::sigval {
                sival_ptr: std::ptr::without_provenance_mut(bits),
            };
            &sev
        }
    };
    // SAFETY: `ptr` is null or points to `sev`, initialised for SIGEV_NONE or SIGEV_SIGNAL
    // (never SIGEV_THREAD, so the kernel calls no code of ours); `fd` is open.
    cvt(unsafe { libc::mq_notify(fd.as_raw_fd(), ptr) }).map(drop)
}

/// `msgget(key, flags)` → queue id.
pub(crate) fn msgget(key: libc::key_t, flags: libc::c_int) -> io::Result<i32> {
    // SAFETY: plain integers in, an integer out.
    cvt(unsafe { libc::msgget(key, flags) })
}

/// The bytes of a System V message's type header (a C `long`).
pub(crate) const HDR: usize = size_of::<libc::c_long>();

/// Messages whose header and text fit in this many bytes are staged on the stack (the default
/// `kernel.msgmax` of 8192 plus the header); larger ones are not.
pub(crate) const STAGE: usize = 8192 + HDR;

/// `msgsnd(id, msg, len, flags)`; `msg` starts with the native `long` message type, followed by
/// `len` bytes of text.
pub(crate) fn msgsnd(id: i32, msg: &[u8], flags: libc::c_int) -> io::Result<()> {
    let len = msg.len().saturating_sub(HDR);
    assert!(msg.len() >= HDR, "a System V message starts with its type");
    // SAFETY: `msg` holds the type (`long`) followed by `len` text bytes and is valid for reads
    // of all of them for the call; the kernel copies it with no alignment requirement.
    cvt(unsafe { libc::msgsnd(id, msg.as_ptr().cast(), len, flags) }).map(drop)
}

/// `msgsnd` of a message of type `mtype` with `text`, laid out (type, text) on the stack when it
/// fits in [`STAGE`] bytes, else in a buffer of exactly that size.
pub(crate) fn msgsnd_parts(
    id: i32,
    mtype: libc::c_long,
    text: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    let Some(total) = text.len().checked_add(HDR).filter(|&t| t <= STAGE) else {
        let mut v = Vec::with_capacity(text.len().saturating_add(HDR));
        v.extend_from_slice(&mtype.to_ne_bytes());
        v.extend_from_slice(text);
        return msgsnd(id, &v, flags);
    };
    let mut stage = [MaybeUninit::<u8>::uninit(); STAGE];
    for (d, s) in stage.iter_mut().zip(mtype.to_ne_bytes()) {
        d.write(s);
    }
    for (d, s) in stage[HDR..total].iter_mut().zip(text) {
        d.write(*s);
    }
    // SAFETY: the first `total` bytes of `stage` (the type, then `text.len()` text bytes) were
    // initialised just above and are valid for reads for the call; the kernel reads no more.
    cvt(unsafe { libc::msgsnd(id, stage.as_ptr().cast(), text.len(), flags) }).map(drop)
}

/// `msgrcv(id, buf, buf.len() - sizeof(long), msgtyp, flags)` → text length; the type is
/// written into the first `sizeof(long)` bytes of `buf`, the text after it.
pub(crate) fn msgrcv(
    id: i32,
    buf: &mut [u8],
    msgtyp: libc::c_long,
    flags: libc::c_int,
) -> io::Result<usize> {
    assert!(buf.len() >= HDR, "a System V message starts with its type");
    let cap = buf.len() - HDR;
    // SAFETY: `buf` is valid for writes of `sizeof(long) + cap` bytes for the call; the kernel
    // copies into it with no alignment requirement.
    let n = unsafe { libc::msgrcv(id, buf.as_mut_ptr().cast(), cap, msgtyp, flags) };
    let n = cvt_size(n)?;
    if n > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("msgrcv reported {n} bytes for a buffer of {cap}"),
        ));
    }
    Ok(n)
}

/// `msgrcv` of at most `out.len()` text bytes into `out` → (text length, type), staged on the
/// stack (uninitialised, so nothing is zeroed) when header and text fit in [`STAGE`] bytes;
/// otherwise `None` (the caller stages it another way).
pub(crate) fn msgrcv_small(
    id: i32,
    out: &mut [u8],
    msgtyp: libc::c_long,
    flags: libc::c_int,
) -> Option<io::Result<(usize, libc::c_long)>> {
    let cap = out.len();
    if cap > STAGE - HDR {
        return None;
    }
    let mut stage = [MaybeUninit::<u8>::uninit(); STAGE];
    // SAFETY: `stage` is valid for writes of `HDR + cap <= STAGE` bytes for the call; the
    // kernel writes no more and needs no alignment.
    let n = unsafe { libc::msgrcv(id, stage.as_mut_ptr().cast(), cap, msgtyp, flags) };
    let n = match cvt_size(n) {
        Ok(n) if n <= cap => n,
        Ok(n) => {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("msgrcv reported {n} bytes for a buffer of {cap}"),
            )));
        }
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: a successful msgrcv wrote the type and `n` text bytes: the first `HDR + n` bytes
    // of `stage` are initialised, and `stage` outlives the slice.
    let got: &[u8] = unsafe { std::slice::from_raw_parts(stage.as_ptr().cast::<u8>(), HDR + n) };
    let mut t = [0; HDR];
    t.copy_from_slice(&got[..HDR]);
    out[..n].copy_from_slice(&got[HDR..]);
    Some(Ok((n, libc::c_long::from_ne_bytes(t))))
}

/// An `F_OFD_*` lock request for the one byte at `start` (`l_pid` 0, as OFD locks require).
pub(crate) fn ofd_flock(l_type: libc::c_int, start: libc::off_t) -> libc::flock {
    // SAFETY: `flock` is plain integers (and, on some targets, padding fields): all-zero is a
    // valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = 1;
    fl
}

/// `msgctl(id, IPC_RMID)`.
pub(crate) fn msgctl_rmid(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID reads no buffer; a null pointer is allowed.
    cvt(unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) }).map(drop)
}

/// `msgctl(id, IPC_STAT)`.
pub(crate) fn msgctl_stat(id: i32) -> io::Result<libc::msqid_ds> {
    // SAFETY: `msqid_ds` is plain integers: all-zero is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid, writable msqid_ds for the call.
    cvt(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) })?;
    Ok(ds)
}

/// `ftok(path, proj_id)`.
pub(crate) fn ftok(path: &CStr, proj_id: u8) -> io::Result<libc::key_t> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let k = unsafe { libc::ftok(path.as_ptr(), libc::c_int::from(proj_id)) };
    if k == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(k)
    }
}

/// Registers `fd`, a non-blocking descriptor this crate opened and owns, with the current tokio
/// runtime's reactor, for the directions given.
///
/// # Panics
/// Outside a tokio runtime, or in one built without IO (tokio's own rule); callers check for a
/// runtime first.
#[cfg(feature = "tokio")]
pub(crate) fn register_async(
    fd: OwnedFd,
    readable: bool,
    writable: bool,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    use tokio::io::Interest;
    let interest = match (readable, writable) {
        (true, false) => Interest::READABLE,
        (false, true) => Interest::WRITABLE,
        _ => Interest::READABLE | Interest::WRITABLE,
    };
    // SAFETY: the `AsyncFd` owns `fd` (an `OwnedFd`), so the descriptor stays open and refers to
    // the same open file description until the `AsyncFd` is dropped or `into_inner` gives it
    // back, and `OwnedFd::as_raw_fd` returns the same number every time.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(io::Error::from)
}
