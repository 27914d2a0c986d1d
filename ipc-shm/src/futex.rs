//! Futex helpers (shared, not `FUTEX_PRIVATE`: the word lives in shared memory).

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use rustix::thread::futex;

/// Sleeps while `*word == expected`, until woken or `deadline` (None: no deadline). A wait is
/// capped at `slice` so callers can re-check peers. Returns false if the deadline has passed.
pub(crate) fn wait_slice(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
    slice: Duration,
) -> bool {
    let now = Instant::now();
    let left = match deadline {
        Some(d) if d <= now => return false,
        Some(d) => (d - now).min(slice),
        None => slice,
    };
    let ts = rustix::time::Timespec {
        tv_sec: left.as_secs() as i64,
        tv_nsec: i64::from(left.subsec_nanos()),
    };
    // EAGAIN (value changed), EINTR, ETIMEDOUT: all mean "look again".
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
    true
}

/// As [`wait_slice`] with a one-second slice.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
    wait_slice(word, expected, deadline, Duration::from_secs(1))
}

/// Wakes every waiter.
pub(crate) fn wake_all(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}
