//! ipc-sem places its own shared objects: anonymous ones (`SharedSemaphore`, `SharedMutex`, a
//! sealed memfd) reach spawned children as a descriptor passed with std only, and are checked
//! before they are mapped; named ones (`NamedMutex`) are opened by unrelated processes.
#![allow(unsafe_code)]

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use ipc_sem::{
    Error, EventSemaphore, Locked, NamedMutex, RawRobustMutex, RawSemaphore, SharedMutex,
    SharedSemaphore,
};
use ipc_testkit::{Proc, Watchdog, test_path};
use rustix::fs::{MemfdFlags, SealFlags};

use crate::lifetime::{hear, say};

/// The descriptor the parent passed as our stdin (a dup, close-on-exec).
fn passed_fd() -> OwnedFd {
    std::io::stdin().as_fd().try_clone_to_owned().unwrap()
}

#[test]
fn a_shared_semaphore_reaches_a_spawned_child_as_a_descriptor() {
    if ipc_testkit::role().is_some() {
        let sem = SharedSemaphore::from_fd(passed_fd()).unwrap();
        for _ in 0..5 {
            sem.post().unwrap();
        }
        // Now wait for the parent's unit (it waits for our five first).
        while sem.value().unwrap() != 0 {
            std::thread::yield_now();
        }
        say("posted");
        sem.wait_timeout(Duration::from_secs(20)).unwrap();
        return;
    }
    let _wd = Watchdog::new("shared spawn", Duration::from_secs(60));
    let sem = SharedSemaphore::new(0).unwrap();
    let mut cmd = ipc_testkit::child(
        &test_path!(a_shared_semaphore_reaches_a_spawned_child_as_a_descriptor),
        "child",
    );
    cmd.stdin(Stdio::from(sem.as_fd().try_clone_to_owned().unwrap()))
        .stdout(Stdio::piped());
    let mut child = Proc::spawn(&mut cmd).unwrap();
    for _ in 0..5 {
        sem.wait_timeout(Duration::from_secs(20)).unwrap();
    }
    assert_eq!(hear(&mut child), "posted");
    sem.post().unwrap();
    child.expect_success(Duration::from_secs(20));
    assert_eq!(sem.value().unwrap(), 0);
}

#[test]
fn a_shared_mutex_reaches_a_spawned_child_and_survives_its_death() {
    if ipc_testkit::role().is_some() {
        let m = SharedMutex::from_fd(passed_fd()).unwrap();
        let guard = m.lock().unwrap().recover().unwrap();
        say("locked");
        std::mem::forget(guard);
        crate::shared::hold_forever();
    }
    let _wd = Watchdog::new("shared mutex spawn", Duration::from_secs(60));
    let m = SharedMutex::new().unwrap();
    let mut cmd = ipc_testkit::child(
        &test_path!(a_shared_mutex_reaches_a_spawned_child_and_survives_its_death),
        "child",
    );
    cmd.stdin(Stdio::from(m.as_fd().try_clone_to_owned().unwrap()))
        .stdout(Stdio::piped());
    let mut child = Proc::spawn(&mut cmd).unwrap();
    assert_eq!(hear(&mut child), "locked");
    assert!(
        matches!(m.try_lock(), Err(Error::WouldBlock)),
        "held by the child"
    );
    child.kill().unwrap();
    let _ = child.wait_timeout(Duration::from_secs(10));
    let Locked::OwnerDied(g) = m.lock_timeout(Duration::from_secs(10)).unwrap() else {
        panic!("the child died holding it");
    };
    drop(g.make_consistent().unwrap());
    assert!(!m.try_lock().unwrap().is_owner_died());
}

/// A sealed memfd of `len` bytes filled with `fill`, sealed with `seals`.
fn memfd(len: u64, fill: u8, seals: SealFlags) -> OwnedFd {
    let fd = rustix::fs::memfd_create(
        "ipcrs-test",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(&vec![fill; len as usize]).unwrap();
    let fd = OwnedFd::from(f);
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

#[test]
fn from_fd_checks_the_descriptor_before_mapping_it() {
    let size = SealFlags::SHRINK | SealFlags::GROW;
    let sem_len = RawSemaphore::SIZE as u64;
    let mutex_len = RawRobustMutex::SIZE as u64;
    let (pipe_r, _pipe_w) = rustix::pipe::pipe().unwrap();
    let file = std::fs::File::from(
        rustix::fs::open(
            std::env::temp_dir(),
            rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap(),
    );
    file.set_len(sem_len).unwrap();
    type Expect = fn(&Error) -> bool;
    let cases: Vec<(&str, OwnedFd, Expect)> = vec![
        ("a pipe", pipe_r, |e| {
            matches!(e, Error::InvalidObject { .. })
        }),
        ("a regular file (no seals)", file.into(), |e| {
            matches!(e, Error::InvalidObject { .. })
        }),
        ("an eventfd", EventSemaphore::new(0).unwrap().into(), |e| {
            matches!(e, Error::InvalidObject { .. })
        }),
        (
            "an unsealed memfd",
            memfd(sem_len, 0, SealFlags::empty()),
            |e| matches!(e, Error::InvalidObject { .. }),
        ),
        (
            "a memfd sealed against growing only",
            memfd(sem_len, 0, SealFlags::GROW),
            |e| matches!(e, Error::InvalidObject { .. }),
        ),
        ("an empty sealed memfd", memfd(0, 0, size), |e| {
            matches!(e, Error::WrongSize { found: 0, .. })
        }),
        ("a short sealed memfd", memfd(sem_len - 1, 0, size), |e| {
            matches!(e, Error::WrongSize { .. })
        }),
        ("a long sealed memfd", memfd(4096, 0, size), |e| {
            matches!(e, Error::WrongSize { found: 4096, .. })
        }),
        ("a mutex's memfd", SharedMutex::new().unwrap().into(), |e| {
            matches!(e, Error::WrongSize { .. })
        }),
        (
            "a zeroed memfd (never initialised)",
            memfd(sem_len, 0, size),
            |e| matches!(e, Error::NotInitialized { .. }),
        ),
        ("a memfd of garbage", memfd(sem_len, 0xa5, size), |e| {
            matches!(e, Error::InvalidObject { .. })
        }),
    ];
    for (what, fd, ok) in cases {
        match SharedSemaphore::from_fd(fd) {
            Err(e) if ok(&e) => eprintln!("{what}: {e}"),
            other => panic!("{what}: {:?}", other.map(drop)),
        }
    }
    // The same checks guard the mutex.
    assert!(matches!(
        SharedMutex::from_fd(memfd(mutex_len, 0, size)),
        Err(Error::NotInitialized { .. })
    ));
    assert!(matches!(
        SharedMutex::from_fd(SharedSemaphore::new(1).unwrap().into()),
        Err(Error::WrongSize { .. })
    ));
    assert!(matches!(
        SharedMutex::from_fd(memfd(mutex_len, 0, SealFlags::empty())),
        Err(Error::InvalidObject { .. })
    ));
    // And a real one passes.
    let sem = SharedSemaphore::new(2).unwrap();
    let again = SharedSemaphore::from_fd(sem.as_fd().try_clone_to_owned().unwrap()).unwrap();
    again.try_wait().unwrap();
    assert_eq!(sem.value().unwrap(), 1);
}

#[test]
fn a_named_mutex_is_shared_by_name_and_reports_a_killed_holder() {
    const NAME_ENV: &str = "IPC_SEM_TEST_NAME";
    if ipc_testkit::role().is_some() {
        let m = NamedMutex::open(&std::env::var(NAME_ENV).unwrap()).unwrap();
        assert!(!m.is_owner());
        let guard = m.lock().unwrap().recover().unwrap();
        say("locked");
        std::mem::forget(guard);
        crate::shared::hold_forever();
    }
    let _wd = Watchdog::new("named mutex", Duration::from_secs(60));
    let name = ipc_testkit::posix_name("nm");
    let m = NamedMutex::create(&name).unwrap();
    let mut cmd = ipc_testkit::child(
        &test_path!(a_named_mutex_is_shared_by_name_and_reports_a_killed_holder),
        "holder",
    );
    cmd.env(NAME_ENV, &name).stdout(Stdio::piped());
    let mut child = Proc::spawn(&mut cmd).unwrap();
    assert_eq!(hear(&mut child), "locked");
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(50)),
        Err(Error::TimedOut)
    ));
    child.kill().unwrap();
    let _ = child.wait_timeout(Duration::from_secs(10));
    let died = m.lock().unwrap();
    assert!(died.is_owner_died());
    drop(died); // not made consistent: unrecoverable, for every process
    assert!(matches!(m.lock(), Err(Error::NotRecoverable)));
    let other = NamedMutex::open(&name).unwrap();
    assert!(matches!(other.try_lock(), Err(Error::NotRecoverable)));
    drop(other);
    drop(m);
    assert!(matches!(
        NamedMutex::open(&name),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn a_placed_mutex_locked_through_a_forgotten_guard_stays_mapped() {
    if ipc_testkit::role().is_some() {
        // A forgotten guard leaves the mutex on this thread's robust list. If dropping the
        // handle unmapped it, the next robust lock on this thread would write through that
        // list into whatever is mapped there next: here a page of a known pattern.
        let other = SharedMutex::new().unwrap();
        let name = ipc_testkit::posix_name("fg");
        for round in 0..32 {
            if round % 2 == 0 {
                let m = SharedMutex::new().unwrap();
                std::mem::forget(m.lock().unwrap());
                drop(m);
            } else {
                let n = NamedMutex::create(&name).unwrap();
                std::mem::forget(n.lock().unwrap());
                drop(n);
            }
            // The hole a dropped mapping leaves is where the next mapping goes.
            // SAFETY: a fresh private mapping at an address the kernel picks.
            let page = unsafe {
                rustix::mm::mmap_anonymous(
                    std::ptr::null_mut(),
                    4096,
                    rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                    rustix::mm::MapFlags::PRIVATE,
                )
            }
            .unwrap()
            .cast::<u8>();
            // SAFETY: the page is ours, 4096 bytes, referenced by nothing else.
            unsafe { page.write_bytes(0xa5, 4096) };
            drop(other.lock().unwrap());
            // SAFETY: as above; read as plain bytes.
            let bytes = unsafe { std::slice::from_raw_parts(page, 4096) };
            let changed = bytes.iter().filter(|&&b| b != 0xa5).count();
            assert_eq!(
                changed, 0,
                "round {round}: a robust lock wrote into unrelated memory"
            );
            // SAFETY: the mapping is ours and `bytes` is not used after this.
            unsafe { rustix::mm::munmap(page.cast(), 4096) }.unwrap();
        }
        return;
    }
    let _wd = Watchdog::new("forgotten guard", Duration::from_secs(60));
    Proc::spawn(&mut ipc_testkit::child(
        &test_path!(a_placed_mutex_locked_through_a_forgotten_guard_stays_mapped),
        "forgetter",
    ))
    .unwrap()
    .expect_success(Duration::from_secs(50));
}
