//! The only unsafe code of the test kit: `fork` for single-threaded bench binaries.
#![allow(unsafe_code)]

/// `fork()`; in the child runs `f` and `_exit`s with its result.
///
/// The caller guarantees the process is single-threaded (checked by the caller), so the child
/// may run any code.
pub(crate) fn fork_run(f: impl FnOnce() -> i32) -> std::io::Result<i32> {
    // SAFETY: the process has one thread (checked by `bench::fork`), so no lock can be held by a
    // thread that does not exist in the child; the child never returns into the caller's frames.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: `_exit` is always safe to call; it ends the child without running the
            // parent's atexit handlers or flushing its copied stdio buffers twice.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}
