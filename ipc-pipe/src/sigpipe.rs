//! SIGPIPE: what a write to a pipe without reader does to the writing process.
//!
//! The kernel answers such a write with `EPIPE` *and* sends the writer `SIGPIPE`, whose default
//! action kills the process without a message. That default suits shell filters (`yes | head`
//! ends `yes` quietly) and nothing else.
//!
//! - **A Rust binary** ignores SIGPIPE: the standard library's start-up code sets it to
//!   `SIG_IGN` before `main`. Writes then fail with [`std::io::ErrorKind::BrokenPipe`]
//!   ([`crate::Error::NoReader`]) and nothing else happens. Nothing to do.
//! - **A C (or Python, or JVM) host** that loads Rust code as a library keeps its own
//!   disposition, often the default: the first write to a pipe without reader kills the whole
//!   host. Such a host must either ignore SIGPIPE itself (`signal(SIGPIPE, SIG_IGN)`, or
//!   [`ignore`] from Rust, at start-up, before threads exist), or install a handler, or let this
//!   crate write with [`SigpipePolicy::Suppress`].
//!
//! Linux raises SIGPIPE not only when a write fails with `EPIPE`: a write that has put part of
//! its bytes into the pipe when the last reader goes away returns that short count *and*
//! raises SIGPIPE. So a 1 MiB `write_all` into a full pipe whose reader closes meanwhile kills a
//! default-disposition host on its first, successful-looking `write`.
//!
//! [`SigpipePolicy::Suppress`] is the safe way *either way*: it changes nothing process-wide.
//! Around each system call that writes, it blocks SIGPIPE in the writing thread, notes whether
//! one is pending already (`sigpending`), and afterwards — whatever the call returned —
//! removes the SIGPIPE the call raised (`sigtimedwait` with a zero timeout) unless one was
//! pending before, then restores the mask. A SIGPIPE that was pending before is left pending:
//! it is the caller's, and one raised by the write merges with it (a signal is pending at most
//! once). This is the classic recipe (libpq's `pq_block_sigpipe`); it works whether or not the
//! thread had SIGPIPE blocked already. The cost is four extra system calls per write
//! (`pthread_sigmask` twice, `sigpending`, `sigtimedwait`), so it is opt-in. A writer's policy
//! covers everything that writes through it: its `Write` impls (`write`, `write_vectored`,
//! `write_all`, and so a [`crate::FramedWriter`] over it), its own methods (`write_atomic`,
//! `write_timeout`, `write_all_timeout`, ...), [`crate::ZeroCopyWriter`], [`crate::vmsplice`]
//! and [`crate::tee`] into it.
//!
//! One race is left, and no library can close it: a SIGPIPE that another process sends with
//! `kill` exactly while a suppressed write runs, into a thread that had none pending, is taken
//! for the write's own and consumed.
//!
//! [`crate::splice`] and [`crate::copy`] take any descriptor, so they cannot know a writer's
//! policy: in a host that may leave SIGPIPE at its default, run them inside [`suppressed`].
//!
//! ```
//! use ipc_pipe::sigpipe::SigpipePolicy;
//! use std::io::Write;
//!
//! let (r, mut w) = ipc_pipe::pipe()?;
//! w.set_sigpipe_policy(SigpipePolicy::Suppress); // safe whatever the host did with SIGPIPE
//! drop(r);
//! assert_eq!(w.write(b"x").unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::{Result, sys};

/// What a [`crate::PipeWriter`] does about SIGPIPE when it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SigpipePolicy {
    /// Plain `write`: the process-wide disposition decides. In a Rust binary that is "ignore",
    /// so the write fails with `BrokenPipe`; in a host that left SIGPIPE at its default, the
    /// process dies.
    #[default]
    Inherit,
    /// Block SIGPIPE in the writing thread around each write and discard the one the write
    /// raised (failed with `EPIPE`, or cut short because the reader went away meanwhile): the
    /// write fails with `BrokenPipe` (or returns its short count) whatever the disposition.
    /// Four extra system calls per write.
    Suppress,
}

/// The process-wide disposition of SIGPIPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// `SIG_IGN`: writes without reader fail with `EPIPE` (what Rust binaries start with).
    Ignore,
    /// `SIG_DFL`: the process is killed (what C programs start with; right for shell filters).
    Default,
    /// A handler function installed by the host program.
    Handler,
}

/// The current process-wide disposition of SIGPIPE.
///
/// ```
/// // The Rust runtime ignores SIGPIPE before `main` (and before the test harness).
/// assert_eq!(ipc_pipe::sigpipe::disposition()?, ipc_pipe::sigpipe::Disposition::Ignore);
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
///
/// # Errors
/// Only if `sigaction` fails, which it does not for SIGPIPE.
#[doc(alias = "sigaction")]
pub fn disposition() -> Result<Disposition> {
    Ok(disposition_of(sys::sigpipe()?))
}

fn disposition_of(handler: libc::sighandler_t) -> Disposition {
    match handler {
        libc::SIG_IGN => Disposition::Ignore,
        libc::SIG_DFL => Disposition::Default,
        _ => Disposition::Handler,
    }
}

/// `signal(SIGPIPE, SIG_IGN)`—Makes the whole process ignore SIGPIPE, as Rust binaries do;
/// returns the previous disposition. For a C host, or a library's init function, to call early:
/// it changes a process-wide setting that the host may rely on, and children inherit it across
/// `exec` (std's `Command` resets it to the default in children it spawns).
///
/// ```no_run
/// // In a library's initialisation, when loaded by a C host that left SIGPIPE at its default:
/// let before = ipc_pipe::sigpipe::ignore()?;
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
///
/// # Errors
/// Only if `sigaction` fails, which it does not for SIGPIPE.
pub fn ignore() -> Result<Disposition> {
    Ok(disposition_of(sys::set_sigpipe(true)?))
}

/// `signal(SIGPIPE, SIG_DFL)`—Restores the default action (terminate), for a program that wants
/// to behave like a classic Unix filter and end quietly when its reader goes away; returns the
/// previous disposition.
///
/// ```no_run
/// // A filter that should end quietly when its reader (`head`, say) goes away.
/// ipc_pipe::sigpipe::restore_default()?;
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
///
/// # Errors
/// Only if `sigaction` fails, which it does not for SIGPIPE.
pub fn restore_default() -> Result<Disposition> {
    Ok(disposition_of(sys::set_sigpipe(false)?))
}

/// Runs `f` with SIGPIPE suppressed in the calling thread, as [`SigpipePolicy::Suppress`] does
/// for one write: a pipe (or socket) without reader that `f` writes to gives `f` an `EPIPE`
/// error and never kills the process, whatever the disposition. Nothing changes process-wide,
/// and other threads are not affected. For calls that take any descriptor, such as
/// [`crate::splice`] and [`crate::copy`]:
///
/// ```
/// use ipc_pipe::{Error, sigpipe};
/// let (r, w) = ipc_pipe::pipe()?;
/// let (src_r, src_w) = ipc_pipe::pipe()?;
/// src_w.write_atomic(b"data")?;
/// drop(r);
/// // Even in a host whose SIGPIPE is at its default action, this is an error, not a death.
/// let copied = sigpipe::suppressed(|| ipc_pipe::copy(&src_r, &w, Some(4)))?;
/// assert!(matches!(copied, Err(Error::NoReader)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Every SIGPIPE that `f` raises is consumed before this returns (they merge into one while
/// blocked), whatever `f` returned, also if it panicked. A SIGPIPE that was pending before is
/// left pending, for the caller. Costs four system calls around `f` (two `pthread_sigmask`,
/// `sigpending`, `sigtimedwait`).
///
/// # Errors
/// Only if the thread's signal mask or pending set cannot be read, which does not happen for
/// SIGPIPE; `f` has not run then.
#[doc(alias = "pthread_sigmask")]
pub fn suppressed<R>(f: impl FnOnce() -> R) -> Result<R> {
    Ok(sys::without_sigpipe(f)?)
}
