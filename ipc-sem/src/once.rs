//! The init-once protocol of in-place objects: a `u32` state word in front of the object.
//!
//! ```text
//!   0 (uninitialised) --CAS--> CLAIMED | pid --init ok--> READY
//!                                      \--init failed--> 0 (another may try)
//! ```
//!
//! Exactly one compare-and-swap from 0 wins: that process initialises the object, then stores
//! `READY` with release ordering and wakes the futex waiters on the word. Everyone else sees
//! `CLAIMED | pid` (being initialised) or `READY`. A waiter sleeps on the word (a shared futex,
//! so across processes) until `READY` or its deadline; on `CLAIMED` at the deadline it checks
//! the claimant's pid: dead or a zombie is [`Error::InitializerDied`], alive is
//! [`Error::TimedOut`]. A pid is not an exact identity (another process may get the number, and
//! another pid namespace numbers differently), which is acceptable here only because both
//! answers refuse the slot: a half-made object is never used. Waiting without a deadline
//! checks the claimant once a second.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys::{Cell, Claim, Slot};
use crate::time::{Deadline, to_timespec};

/// The state word of an initialised object ("RDY1").
pub(crate) const READY: u32 = 0x5244_5931;
/// The top byte of a claimed state word; the low 24 bits are the claimant's pid.
const CLAIMED: u32 = 0x4900_0000;
const PID_MASK: u32 = 0x00ff_ffff;
/// Pids never exceed 2^22 on Linux (`PID_MAX_LIMIT`); a larger one is recorded as this.
const UNKNOWN_PID: u32 = PID_MASK;

/// The claimed state word for this process.
fn claimed_by_me() -> u32 {
    let pid = std::process::id();
    CLAIMED | if pid < PID_MASK { pid } else { UNKNOWN_PID }
}

/// The pid in a claimed state word, or `None` if the word is not claimed.
fn claimant(state: u32) -> Option<u32> {
    (state & !PID_MASK == CLAIMED).then_some(state & PID_MASK)
}

/// Whether process `pid` is running and not a zombie (see the module docs for what a pid
/// proves). When unsure, it is alive.
fn alive(pid: u32) -> bool {
    if pid == UNKNOWN_PID || pid == std::process::id() {
        return true;
    }
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    // EPERM: it exists, under another uid.
    if rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH) {
        return false;
    }
    // A zombie still answers kill(0): look at its state (Z, or X while being reaped).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// What a claim attempt found.
pub(crate) enum Begun<'a, T: Cell> {
    /// We won: initialise, then publish.
    Won(Claim<'a, T>),
    /// Someone else initialised it, or is initialising it and is alive.
    Taken,
}

/// Tries to claim `slot` for initialisation.
///
/// # Errors
/// [`Error::InitializerDied`] if it is claimed by a process that is gone;
/// [`Error::InvalidObject`] if the state word holds no state of this protocol.
pub(crate) fn begin<'a, T: Cell>(
    slot: &'a Slot<T>,
    name: &dyn Fn() -> String,
) -> Result<Begun<'a, T>> {
    match slot.claim(claimed_by_me()) {
        Ok(claim) => Ok(Begun::Won(claim)),
        Err(READY) => Ok(Begun::Taken),
        Err(s) => match claimant(s) {
            Some(pid) if alive(pid) => Ok(Begun::Taken),
            Some(pid) => Err(Error::InitializerDied { name: name(), pid }),
            None => Err(invalid(name)),
        },
    }
}

fn invalid(name: &dyn Fn() -> String) -> Error {
    Error::InvalidObject {
        name: name(),
        reason: "its state word holds no valid state (not memory this crate initialised)",
    }
}

/// Waits at most `timeout` (zero: only looks; `Duration::MAX`: forever) for `slot` to be
/// ready, and returns its cell.
///
/// # Errors
/// [`Error::NotInitialized`] (still 0 at the deadline), [`Error::InitializerDied`],
/// [`Error::TimedOut`] (claimed by a live process at the deadline), [`Error::InvalidObject`]
/// (a garbage state word, or a ready one over an object that is not of our kind).
pub(crate) fn wait_ready<'a, T: Cell>(
    slot: &'a Slot<T>,
    timeout: Duration,
    name: &dyn Fn() -> String,
) -> Result<&'a T> {
    let deadline = Deadline::after(timeout);
    loop {
        if let Some(cell) = slot.ready(READY) {
            return if cell.plausible() {
                Ok(cell)
            } else {
                Err(Error::InvalidObject {
                    name: name(),
                    reason: "marked initialised, but it holds no object of the kind this crate makes",
                })
            };
        }
        let s = slot.state().load(Ordering::Acquire);
        if s == READY {
            continue;
        }
        let pid = claimant(s);
        if s != 0 && pid.is_none() {
            return Err(invalid(name));
        }
        let left = deadline.remaining();
        if left == Some(Duration::ZERO) {
            return Err(match pid {
                None => Error::NotInitialized { name: name() },
                Some(pid) if alive(pid) => Error::TimedOut,
                Some(pid) => Error::InitializerDied { name: name(), pid },
            });
        }
        // Without a deadline, look at the claimant once a second: a dead one never publishes.
        let nap = match left {
            Some(l) => l,
            None => {
                if let Some(pid) = pid.filter(|&p| !alive(p)) {
                    return Err(Error::InitializerDied { name: name(), pid });
                }
                Duration::from_secs(1)
            }
        };
        // Sleeps while the word still holds `s`; EAGAIN (it changed), EINTR and ETIMEDOUT all
        // lead back to the checks above.
        let _ = rustix::thread::futex::wait(
            slot.state(),
            rustix::thread::futex::Flags::empty(),
            s,
            Some(&to_timespec(nap)),
        );
    }
}
