//! POSIX semaphores post and wait without a system call when nobody has to sleep.
//!
//! Proved, not timed: a forked child enters seccomp strict mode, in which any system call other
//! than read, write, exit and sigreturn kills it with SIGKILL, then posts and waits thousands of
//! times through ipc-sem and leaves with a raw `exit`. If any of those calls entered the kernel
//! (a futex, a getpid), the child dies instead of exiting 0.
//!
//! The child of this multi-threaded test process only touches semaphore memory (glibc's
//! uncontended `sem_post`/`sem_wait`/`sem_trywait` are atomic instructions) and makes raw
//! system calls, so the fork is sound.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::time::Duration;

use ipc_sem::{InPlaceSemaphore, NamedSemaphore, RawSemaphore, SharedSemaphore};
use ipc_testkit::Watchdog;

const ROUNDS: u32 = 10_000;
/// Exit codes of the child.
const NO_SECCOMP: i32 = 3;
const WRONG: i32 = 4;

/// The operations every POSIX semaphore handle has, as a trait so one child body serves all.
trait Posix {
    fn post(&self) -> bool;
    fn wait(&self) -> bool;
    fn try_wait(&self) -> bool;
    fn cycle_guards(&self) -> bool;
    fn zero_timeout(&self) -> bool;
}

macro_rules! posix {
    ($t:ty) => {
        impl Posix for $t {
            fn post(&self) -> bool {
                <$t>::post(self).is_ok()
            }
            fn wait(&self) -> bool {
                <$t>::wait(self).is_ok()
            }
            fn try_wait(&self) -> bool {
                <$t>::try_wait(self).is_ok()
            }
            fn cycle_guards(&self) -> bool {
                let Ok(a) = self.acquire() else { return false };
                let Ok(b) = self.try_acquire() else {
                    return false;
                };
                drop((a, b));
                true
            }
            fn zero_timeout(&self) -> bool {
                self.wait_timeout(Duration::ZERO).is_ok()
            }
        }
    };
}
posix!(NamedSemaphore);
posix!(SharedSemaphore);
posix!(InPlaceSemaphore);

/// Forks; the child runs `ROUNDS` uncontended cycles on `sem` (value 0 at the start) under
/// seccomp strict mode. Returns the child's raw wait status.
fn run_strict(sem: &dyn Posix) -> i32 {
    // SAFETY: the child makes only raw system calls and semaphore operations on memory (see the
    // module docs), and leaves with a raw exit without returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: `alarm` has no preconditions; it bounds the child if something hangs (once
        // strict mode is on, the kernel kills the child on SIGALRM's delivery anyway).
        unsafe { libc::alarm(10) };
        // SAFETY: PR_SET_SECCOMP with SECCOMP_MODE_STRICT takes no pointer arguments.
        let rc = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_STRICT) };
        let mut code = if rc == 0 { 0 } else { NO_SECCOMP };
        if code == 0 {
            for _ in 0..ROUNDS {
                let ok = sem.post()
                    && sem.wait()
                    && sem.post()
                    && sem.post()
                    && sem.try_wait()
                    && sem.try_wait()
                    && !sem.try_wait()
                    && sem.post()
                    && sem.post()
                    && sem.cycle_guards()
                    && sem.zero_timeout()
                    && sem.zero_timeout();
                if !ok {
                    code = WRONG;
                    break;
                }
            }
        }
        // Only `exit` is allowed in strict mode, not the `exit_group` of `_exit`.
        // SAFETY: ends this (single-threaded) child at once.
        unsafe { libc::syscall(libc::SYS_exit, code) };
        unreachable!();
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out location.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

fn check(what: &str, sem: &dyn Posix) {
    let status = run_strict(sem);
    if libc::WIFSIGNALED(status) {
        panic!(
            "{what}: the child was killed by signal {} (SIGKILL: it made a system call)",
            libc::WTERMSIG(status)
        );
    }
    assert!(libc::WIFEXITED(status), "{what}: status {status:#x}");
    match libc::WEXITSTATUS(status) {
        0 => {}
        NO_SECCOMP => panic!("{what}: seccomp strict mode is not available here"),
        WRONG => panic!("{what}: a semaphore operation gave the wrong result"),
        c => panic!("{what}: exit code {c}"),
    }
}

#[test]
fn uncontended_post_and_wait_make_no_system_call() {
    let _wd = Watchdog::new("fast path", Duration::from_secs(60));
    let name = ipc_testkit::posix_name("fast");
    let named = NamedSemaphore::create(&name, 0).unwrap();
    check("named", &named);
    let shared = SharedSemaphore::new(0).unwrap();
    check("unnamed, own page", &shared);
    let mut slot = Box::new(RawSemaphore::new());
    let slot = NonNull::from(&mut *slot);
    // SAFETY: aligned stack memory, initialised once here, not moved while `in_place` lives,
    // destroyed once below. (Private memory: the child works on its copy.)
    let in_place = unsafe { InPlaceSemaphore::init(slot, 0) }.unwrap();
    check("unnamed, in place", &in_place);
    // SAFETY: nobody else uses it.
    unsafe { in_place.destroy() }.unwrap();
    // The shared kinds end where they started: every cycle of the children was balanced.
    assert_eq!(named.value().unwrap(), 0);
    assert_eq!(shared.value().unwrap(), 0);
}
