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
//! [`SigpipePolicy::Suppress`] is the safe way *either way*: it changes nothing process-wide. It
//! blocks SIGPIPE in the writing thread around each `write`, and if the write failed with
//! `EPIPE`, removes the signal that the write queued for that thread before restoring the mask.
//! The cost is two extra system calls per write (`pthread_sigmask`), so it is opt-in. A writer's
//! policy covers everything that writes through it: its `Write` impls (and so a
//! [`crate::FramedWriter`] over it), its own methods, [`crate::ZeroCopyWriter`],
//! [`crate::vmsplice`] and [`crate::tee`] into it.
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

use std::io;

use crate::sys;

/// What a [`crate::PipeWriter`] does about SIGPIPE when it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SigpipePolicy {
    /// Plain `write`: the process-wide disposition decides. In a Rust binary that is "ignore",
    /// so the write fails with `BrokenPipe`; in a host that left SIGPIPE at its default, the
    /// process dies.
    #[default]
    Inherit,
    /// Block SIGPIPE in the writing thread around each write and discard the one a failed write
    /// raised: the write fails with `BrokenPipe` whatever the disposition. Two extra syscalls per
    /// write.
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
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// Only if `sigaction` fails, which it does not for SIGPIPE.
#[doc(alias = "sigaction")]
pub fn disposition() -> io::Result<Disposition> {
    sys::sigpipe()
}

/// `signal(SIGPIPE, SIG_IGN)`—Makes the whole process ignore SIGPIPE, as Rust binaries do;
/// returns the previous disposition. For a C host, or a library's init function, to call early:
/// it changes a process-wide setting that the host may rely on, and children inherit it across
/// `exec` (std's `Command` resets it to the default in children it spawns).
///
/// ```no_run
/// // In a library's initialisation, when loaded by a C host that left SIGPIPE at its default:
/// let before = ipc_pipe::sigpipe::ignore()?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// Only if `sigaction` fails, which it does not for SIGPIPE.
pub fn ignore() -> io::Result<Disposition> {
    sys::set_sigpipe(Disposition::Ignore)
}

/// `signal(SIGPIPE, SIG_DFL)`—Restores the default action (terminate), for a program that wants
/// to behave like a classic Unix filter and end quietly when its reader goes away; returns the
/// previous disposition.
///
/// ```no_run
/// // A filter that should end quietly when its reader (`head`, say) goes away.
/// ipc_pipe::sigpipe::restore_default()?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// Only if `sigaction` fails, which it does not for SIGPIPE.
pub fn restore_default() -> io::Result<Disposition> {
    sys::set_sigpipe(Disposition::Default)
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
/// If the thread already blocks SIGPIPE, `f` simply runs: a pending SIGPIPE stays the
/// caller's. Costs three system calls around `f` (two `pthread_sigmask`, one `sigtimedwait`).
///
/// # Errors
/// Only if the thread's signal mask cannot be changed, which `pthread_sigmask` does not refuse
/// for SIGPIPE; `f` has not run then.
#[doc(alias = "pthread_sigmask")]
pub fn suppressed<R>(f: impl FnOnce() -> R) -> io::Result<R> {
    sys::without_sigpipe(f, |_| true)
}
