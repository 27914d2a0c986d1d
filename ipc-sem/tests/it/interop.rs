//! Named semaphores keep glibc's file format: programs that use `sem_open` (here: raw libc
//! calls, as a C program makes them) and ipc-sem share one semaphore by name, in either
//! direction, also across processes where one side sleeps in the kernel and the other wakes it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::time::Duration;

use ipc_sem::{Error, NamedSemaphore};
use ipc_testkit::{Proc, Watchdog, test_path};

/// A semaphore opened with glibc's `sem_open`, closed on drop.
struct CSem(*mut libc::sem_t);

impl CSem {
    fn open(name: &str) -> CSem {
        let c = CString::new(name).unwrap();
        // SAFETY: `c` is NUL-terminated; without O_CREAT no variadic arguments are read.
        let p = unsafe { libc::sem_open(c.as_ptr(), 0) };
        assert!(
            p != libc::SEM_FAILED,
            "sem_open({name}): {}",
            std::io::Error::last_os_error()
        );
        CSem(p)
    }

    fn create(name: &str, value: u32) -> CSem {
        let c = CString::new(name).unwrap();
        // SAFETY: `c` is NUL-terminated; with O_CREAT the variadic arguments are the mode and
        // the value, both unsigned ints.
        let p = unsafe {
            libc::sem_open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL,
                0o600 as libc::c_uint,
                value as libc::c_uint,
            )
        };
        assert!(
            p != libc::SEM_FAILED,
            "sem_open(O_CREAT): {}",
            std::io::Error::last_os_error()
        );
        CSem(p)
    }

    fn value(&self) -> i32 {
        let mut v = 0;
        // SAFETY: `self.0` came from sem_open and is open; `v` is a valid out location.
        assert_eq!(unsafe { libc::sem_getvalue(self.0, &mut v) }, 0);
        v
    }

    fn post(&self) {
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sem_post(self.0) }, 0);
    }

    fn try_wait(&self) -> bool {
        // SAFETY: as above.
        unsafe { libc::sem_trywait(self.0) == 0 }
    }

    /// `sem_timedwait` with a CLOCK_REALTIME deadline `secs` from now; EINTR retried.
    fn wait_secs(&self, secs: i64) -> bool {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out location.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        ts.tv_sec += secs;
        loop {
            // SAFETY: as above; `ts` is valid for the call.
            if unsafe { libc::sem_timedwait(self.0, &ts) } == 0 {
                return true;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
    }

    fn unlink(name: &str) -> i32 {
        let c = CString::new(name).unwrap();
        // SAFETY: `c` is NUL-terminated.
        unsafe { libc::sem_unlink(c.as_ptr()) }
    }
}

impl Drop for CSem {
    fn drop(&mut self) {
        // SAFETY: opened by sem_open, closed once.
        unsafe { libc::sem_close(self.0) };
    }
}

fn file_of(name: &str) -> std::path::PathBuf {
    format!("/dev/shm/sem.{}", &name[1..]).into()
}

/// Runs `f` in a re-run child: glibc's `sem_open` opens its file without `O_CLOEXEC`, and in
/// the test harness that descriptor would leak into children other tests spawn meanwhile (the
/// `inherit` test would see it).
fn in_child(test: &str, f: impl FnOnce()) {
    if ipc_testkit::role().is_some() {
        f();
        return;
    }
    let _wd = Watchdog::new(test, Duration::from_secs(60));
    Proc::spawn(&mut ipc_testkit::child(test, "glibc"))
        .unwrap()
        .expect_success(Duration::from_secs(50));
}

#[test]
fn our_file_holds_the_bytes_glibc_writes() {
    in_child(&test_path!(our_file_holds_the_bytes_glibc_writes), bytes);
}

fn bytes() {
    let ours = ipc_testkit::posix_name("ibyte");
    let theirs = ipc_testkit::posix_name("ibyte");
    let sem = NamedSemaphore::create(&ours, 5).unwrap();
    let c = CSem::create(&theirs, 5);
    let a = std::fs::read(file_of(&ours)).unwrap();
    let b = std::fs::read(file_of(&theirs)).unwrap();
    assert_eq!(CSem::unlink(&theirs), 0);
    drop(c);
    assert_eq!(a.len(), 32, "sizeof(sem_t)");
    assert_eq!(a, b, "ipc-sem's sem_t bytes differ from glibc's");
    drop(sem);
}

#[test]
fn glibc_sem_open_uses_ours_and_we_use_glibcs() {
    in_child(
        &test_path!(glibc_sem_open_uses_ours_and_we_use_glibcs),
        both_ways,
    );
}

fn both_ways() {
    // Ours, opened by glibc.
    let name = ipc_testkit::posix_name("iop");
    let owner = NamedSemaphore::create(&name, 7).unwrap();
    let c = CSem::open(&name);
    assert_eq!(c.value(), 7);
    assert!(c.try_wait());
    assert_eq!(owner.value().unwrap(), 6);
    owner.post().unwrap();
    assert_eq!(c.value(), 7);
    // glibc's unlink removes our name; our owner's drop then finds it gone and removes nothing.
    assert_eq!(CSem::unlink(&name), 0);
    drop(owner);
    drop(c);

    // glibc's, opened by us: no owner lock, so it counts as stale.
    let name = ipc_testkit::posix_name("iop");
    let c = CSem::create(&name, 5);
    let sem = NamedSemaphore::open(&name).unwrap();
    assert!(!sem.is_owner());
    assert_eq!(sem.value().unwrap(), 5);
    sem.try_wait().unwrap();
    assert_eq!(c.value(), 4);
    c.post();
    assert_eq!(sem.value().unwrap(), 5);
    ipc_sem::remove_stale(&name).expect("a sem_open semaphore has no owner lock");
    assert!(matches!(
        NamedSemaphore::open(&name),
        Err(Error::NotFound { .. })
    ));
    // Both mappings survive the unlink.
    c.post();
    assert_eq!(sem.value().unwrap(), 6);
    drop(c);
    drop(sem);
}

#[test]
fn a_glibc_process_and_ours_wake_each_other() {
    const PING_ENV: &str = "IPC_SEM_TEST_PING";
    const PONG_ENV: &str = "IPC_SEM_TEST_PONG";
    const ROUNDS: usize = 200;
    if ipc_testkit::role().is_some() {
        // The "C program": glibc's sem_open and sem_timedwait, sleeping in the kernel until
        // ipc-sem's process posts, then waking that process's waiter with sem_post.
        let ping = CSem::open(&std::env::var(PING_ENV).unwrap());
        let pong = CSem::open(&std::env::var(PONG_ENV).unwrap());
        for _ in 0..ROUNDS {
            assert!(ping.wait_secs(20), "woken by ipc-sem's post");
            pong.post();
        }
        return;
    }
    let _wd = Watchdog::new("interop wake", Duration::from_secs(60));
    let ping_name = ipc_testkit::posix_name("iwk");
    let pong_name = ipc_testkit::posix_name("iwk");
    let ping = NamedSemaphore::create(&ping_name, 0).unwrap();
    let pong = NamedSemaphore::create(&pong_name, 0).unwrap();
    let mut cmd = ipc_testkit::child(&test_path!(a_glibc_process_and_ours_wake_each_other), "c");
    cmd.env(PING_ENV, &ping_name).env(PONG_ENV, &pong_name);
    let child = Proc::spawn(&mut cmd).unwrap();
    for _ in 0..ROUNDS {
        ping.post().unwrap();
        pong.wait_timeout(Duration::from_secs(20))
            .expect("woken by glibc's post");
    }
    child.expect_success(Duration::from_secs(20));
    assert_eq!((ping.value().unwrap(), pong.value().unwrap()), (0, 0));
}
