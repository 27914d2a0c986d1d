//! The eventfd semaphore: pollable, passable to an exec'd child, a counting semaphore.

use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use ipc_sem::{Error, EventSemaphore, SharedSemaphore};
use ipc_testkit::{Proc, Watchdog, test_path};

#[test]
fn eventfd_semaphore_counts_and_is_pollable() {
    let sem = EventSemaphore::new(2).unwrap();
    let mut fds = [rustix::event::PollFd::new(
        &sem,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(
        rustix::event::poll(&mut fds, Some(&ts)).unwrap(),
        1,
        "readable with units"
    );
    sem.try_wait().unwrap();
    sem.try_wait().unwrap();
    assert!(matches!(sem.try_wait(), Err(Error::WouldBlock)));
    let mut fds = [rustix::event::PollFd::new(
        &sem,
        rustix::event::PollFlags::IN,
    )];
    assert_eq!(
        rustix::event::poll(&mut fds, Some(&ts)).unwrap(),
        0,
        "not readable at zero"
    );
    sem.post_n(3).unwrap();
    for _ in 0..3 {
        sem.wait().unwrap();
    }
    assert!(matches!(
        sem.post_n(u64::MAX),
        Err(Error::ValueTooLarge { .. })
    ));
}

#[test]
fn eventfd_semaphore_passes_to_an_exec_d_child() {
    if ipc_testkit::role().is_some() {
        // The parent handed the eventfd over as our stdin.
        let fd: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        let sem = EventSemaphore::from(fd);
        for _ in 0..5 {
            sem.post().unwrap();
        }
        return;
    }
    let _wd = Watchdog::new("eventfd exec", Duration::from_secs(30));
    let sem = EventSemaphore::new(0).unwrap();
    let mut cmd = ipc_testkit::child(
        &test_path!(eventfd_semaphore_passes_to_an_exec_d_child),
        "poster",
    );
    cmd.stdin(Stdio::from(OwnedFd::from(sem.try_clone().unwrap())));
    let child = Proc::spawn(&mut cmd).unwrap();
    for _ in 0..5 {
        sem.wait_timeout(Duration::from_secs(10)).unwrap();
    }
    child.expect_success(Duration::from_secs(10));
    assert!(matches!(sem.try_wait(), Err(Error::WouldBlock)));
}

#[test]
fn shared_semaphore_is_shared_with_a_forked_child() {
    let _wd = Watchdog::new("fork", Duration::from_secs(30));
    let sem = SharedSemaphore::new(0).unwrap();
    // SAFETY: the child only calls `sem_post` (async-signal-safe; our wrapper touches no lock
    // or allocator on success) and `_exit`, so forking a multi-threaded test process is sound.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let code = if sem.post().is_ok() { 0 } else { 1 };
        // SAFETY: `_exit` ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    sem.wait_timeout(Duration::from_secs(10)).unwrap();
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out location.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
}

#[test]
fn a_descriptor_that_is_not_an_eventfd_gives_errors_not_units() {
    use std::io::Write;
    // `From<OwnedFd>` takes the caller's word; a pipe's short reads must not count as units.
    let (r, w) = rustix::pipe::pipe().unwrap();
    std::fs::File::from(w).write_all(b"abc").unwrap();
    let sem = EventSemaphore::from(r);
    let e = sem.wait().unwrap_err();
    assert!(e.to_string().contains("not an eventfd"), "{e}");
    assert!(sem.try_wait().is_err());
}
