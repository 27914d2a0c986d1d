//! Owners record the pid that created them: a forked child that drops an inherited owner
//! removes nothing of its parent's.
//!
//! A child made by re-running the test binary cannot inherit an owner handle, so this needs a
//! real `fork`. Dropping a `NamedSemaphore` calls `sem_close`, which is not on the
//! async-signal-safe list (it takes glibc's semaphore-mappings lock and frees a tree node), so
//! the fork must not happen in the multi-threaded test process, where another test thread could
//! be inside `sem_open` at that moment. Instead the test re-runs its binary as a "forker" that
//! runs only this test; there the forking thread is the only one that ever calls `sem_*` (the
//! other one, libtest's main thread, waits for this test's result), glibc re-initialises
//! malloc's locks in a fork child, so the grandchild can run the real drop path. The forker
//! checks its thread count before forking, and the grandchild is bounded by `alarm`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::time::Duration;

use ipc_sem::{Error, NamedSemaphore, SemOp, SemSet};
use ipc_testkit::{Proc, Watchdog, test_path};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};

/// The threads of this process (from /proc/self/status).
fn threads() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Waits at most `limit` for child `pid`; kills it on time-out. Returns its raw wait status.
fn wait_bounded(pid: i32, limit: Duration) -> i32 {
    let p = Pid::from_raw(pid).unwrap();
    let fd = pidfd_open(p, PidfdFlags::empty()).unwrap();
    let ts = Timespec {
        tv_sec: limit.as_secs() as i64,
        tv_nsec: 0,
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ready = loop {
        match poll(&mut fds, Some(&ts)) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r.unwrap(),
        }
    };
    if ready == 0 {
        // SAFETY: `pid` is our unreaped child, so the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let (_, status) = waitpid(Some(p), WaitOptions::empty()).unwrap().unwrap();
    assert!(
        ready == 1,
        "the forked child did not finish within {limit:?}"
    );
    status.as_raw()
}

/// The forker: creates the owners, forks a child that uses and drops them, checks they stay.
fn forker() {
    let name = ipc_testkit::posix_name("fork");
    let owner = NamedSemaphore::create(&name, 0).unwrap();
    let set = crate::shared::new_set(&[0]);
    let file = CString::new(format!("/dev/shm/sem.{}", &name[1..])).unwrap();
    assert!(owner.is_owner() && set.is_owner());
    // This test thread and libtest's main thread, blocked until the test ends: nothing else.
    assert!(threads() <= 2, "{} threads in the forker", threads());

    // SAFETY: see the module docs: the only thread that calls `sem_*` or holds a lock we need
    // is the one that forks; the child ends with `_exit` and never returns into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: `alarm` has no preconditions; SIGALRM's default action ends the child if
        // anything below hangs.
        unsafe { libc::alarm(10) };
        // Use the inherited handles, so the parent can see the child really had them...
        let used = owner.post().is_ok() && set.try_apply(&[SemOp::post(0)]).is_ok();
        // ...then drop them here: the real Drop, in a process that did not create them.
        let not_owner = !owner.is_owner() && !set.is_owner();
        drop(owner);
        drop(set);
        // SAFETY: `file` is a NUL-terminated path made before the fork.
        let still_there = unsafe { libc::access(file.as_ptr(), libc::F_OK) } == 0;
        let code = if !used {
            2
        } else if !not_owner {
            3
        } else if !still_there {
            4
        } else {
            0
        };
        // SAFETY: ends the child without running the parent's destructors a second time.
        unsafe { libc::_exit(code) };
    }
    let status = wait_bounded(pid, Duration::from_secs(15));
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "forked child: raw wait status {status:#x} (exit 2: could not use the handles, \
         3: thought it owned them, 4: the name was gone after its drop)"
    );
    // Both objects are still there, with the child's posts in them.
    assert!(owner.is_owner() && set.is_owner());
    let again = NamedSemaphore::open(&name).expect("the name survived the child's drop");
    assert_eq!(again.value().unwrap(), 1);
    drop(again);
    let by_id = SemSet::open_id(set.id()).expect("the set survived the child's drop");
    assert_eq!(by_id.values().unwrap(), [1]);
    drop(by_id);
    // The creator's drop does remove them.
    let id = set.id();
    drop(owner);
    drop(set);
    assert!(matches!(
        NamedSemaphore::open(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(SemSet::open_id(id), Err(Error::NotFound { .. })));
}

#[test]
fn a_forked_child_dropping_inherited_owners_removes_nothing() {
    if ipc_testkit::role().is_some() {
        forker();
        return;
    }
    let _wd = Watchdog::new("fork drop", Duration::from_secs(60));
    let test = test_path!(a_forked_child_dropping_inherited_owners_removes_nothing);
    Proc::spawn(&mut ipc_testkit::child(&test, "forker"))
        .unwrap()
        .expect_success(Duration::from_secs(40));
}
