//! Deadlines and polling against them.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;

use crate::error::Result;

/// An absolute point on the monotonic clock, or never.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// `timeout` from now; `Duration::MAX` (or anything that overflows) is never.
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(timeout))
    }

    pub(crate) fn is_never(self) -> bool {
        self.0.is_none()
    }

    /// Time left: `None` for never, `Some(ZERO)` once passed.
    pub(crate) fn remaining(self) -> Option<Duration> {
        self.0
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// Polls one descriptor for `events` until `deadline` (at most `cap`, if given), retrying
/// `EINTR` against the deadline. Returns the reported events, or `None` on time-out.
pub(crate) fn poll_until(
    fd: impl AsFd,
    events: PollFlags,
    deadline: Deadline,
    cap: Option<Duration>,
) -> Result<Option<PollFlags>> {
    let mut fds = [PollFd::new(&fd, events)];
    Ok(poll_all_until(&mut fds, deadline, cap)?.then(|| fds[0].revents()))
}

/// Polls `fds` until one is ready or `deadline` passes (at most `cap`, if given), retrying
/// `EINTR` against the deadline. Returns whether any is ready (see their `revents`).
pub(crate) fn poll_all_until(
    fds: &mut [PollFd<'_>],
    deadline: Deadline,
    cap: Option<Duration>,
) -> Result<bool> {
    loop {
        let left = match (deadline.remaining(), cap) {
            (None, None) => None,
            (Some(l), None) => Some(l),
            (None, Some(c)) => Some(c),
            (Some(l), Some(c)) => Some(l.min(c)),
        };
        let ts = left.map(timespec);
        match poll(fds, ts.as_ref()) {
            Ok(0) => {
                if deadline.remaining().is_some_and(|l| l.is_zero()) || cap.is_some() {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => {
                if deadline.remaining().is_some_and(|l| l.is_zero()) {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
