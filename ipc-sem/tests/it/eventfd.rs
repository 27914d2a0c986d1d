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

/// The runtime-agnostic recipe of the README: a non-blocking `EventSemaphore` registered, by
/// its descriptor, with a plain edge-triggered `epoll` loop (as mio and async-io use it); on
/// each event the loop takes units with `try_wait` until `WouldBlock`. A child process posts
/// bursts of units; the loop takes exactly as many, and never blocks in anything but
/// `epoll_wait`.
#[test]
fn a_plain_epoll_loop_drives_a_nonblocking_event_semaphore() {
    const UNITS: u64 = 2000;
    if ipc_testkit::role().is_some() {
        let sem = EventSemaphore::from(std::io::stdin().as_fd().try_clone_to_owned().unwrap());
        let mut rng = ipc_testkit::SplitMix64::new(3);
        let mut posted = 0;
        while posted < UNITS {
            let n = rng.range(1, 16).min(UNITS - posted);
            sem.post_n(n).unwrap();
            posted += n;
            std::thread::yield_now();
        }
        return;
    }
    use rustix::event::epoll;
    let _wd = Watchdog::new("epoll loop", Duration::from_secs(60));
    let sem = EventSemaphore::new(0).unwrap();
    sem.set_nonblocking(true).unwrap();
    assert!(sem.is_nonblocking().unwrap());
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
    epoll::add(
        &ep,
        &sem,
        epoll::EventData::new_u64(7),
        epoll::EventFlags::IN | epoll::EventFlags::ET,
    )
    .unwrap();
    let mut cmd = ipc_testkit::child(
        &test_path!(a_plain_epoll_loop_drives_a_nonblocking_event_semaphore),
        "poster",
    );
    cmd.stdin(Stdio::from(OwnedFd::from(sem.try_clone().unwrap())));
    let child = Proc::spawn(&mut cmd).unwrap();
    let (mut taken, mut events_seen) = (0u64, 0u64);
    let limit = rustix::event::Timespec {
        tv_sec: 30,
        tv_nsec: 0,
    };
    let empty = epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    };
    while taken < UNITS {
        let mut events = [empty; 4];
        let n = match epoll::wait(&ep, &mut events[..], Some(&limit)) {
            Err(rustix::io::Errno::INTR) => continue,
            r => r.unwrap(),
        };
        assert!(
            n > 0,
            "no event within 30 s with {taken} of {UNITS} units taken"
        );
        for e in &events[..n] {
            assert_eq!(e.data.u64(), 7);
            events_seen += 1;
            // Edge-triggered: take until WouldBlock, or the next event may never come.
            loop {
                match sem.try_wait() {
                    Ok(()) => taken += 1,
                    Err(Error::WouldBlock) => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
    child.expect_success(Duration::from_secs(30));
    assert_eq!(taken, UNITS);
    assert!(matches!(sem.try_wait(), Err(Error::WouldBlock)));
    eprintln!("epoll loop: {UNITS} units in {events_seen} events");
}
