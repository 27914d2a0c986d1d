//! Deadlines on the monotonic clock: `Duration::MAX` (or anything that overflows) is forever.

use std::time::Duration;

use rustix::time::{ClockId, Timespec, clock_gettime};

/// When a timed wait gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Deadline {
    /// Wait without limit.
    Forever,
    /// Give up at this point of `CLOCK_MONOTONIC`.
    At(Timespec),
}

const NANOS: i64 = 1_000_000_000;

impl Deadline {
    /// The deadline `timeout` from now; saturates to `Forever`.
    pub(crate) fn after(timeout: Duration) -> Deadline {
        if timeout == Duration::MAX {
            return Deadline::Forever;
        }
        let now = clock_gettime(ClockId::Monotonic);
        let Ok(secs) = i64::try_from(timeout.as_secs()) else {
            return Deadline::Forever;
        };
        let mut nsec = now.tv_nsec + i64::from(timeout.subsec_nanos());
        let mut carry = 0;
        if nsec >= NANOS {
            nsec -= NANOS;
            carry = 1;
        }
        match now
            .tv_sec
            .checked_add(secs)
            .and_then(|s| s.checked_add(carry))
        {
            Some(tv_sec) => Deadline::At(Timespec {
                tv_sec,
                tv_nsec: nsec,
            }),
            None => Deadline::Forever,
        }
    }

    /// Time left until the deadline (zero once passed); `None` for `Forever`.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        match self {
            Deadline::Forever => None,
            Deadline::At(at) => {
                let now = clock_gettime(ClockId::Monotonic);
                let left = (i128::from(at.tv_sec) - i128::from(now.tv_sec)) * i128::from(NANOS)
                    + i128::from(at.tv_nsec - now.tv_nsec);
                Some(Duration::from_nanos(
                    u64::try_from(left.max(0)).unwrap_or(u64::MAX),
                ))
            }
        }
    }
}

/// A relative `Timespec` for `semtimedop` and `poll`.
pub(crate) fn to_timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}
