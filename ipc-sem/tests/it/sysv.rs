//! System V specifics: EINTR after SIGSTOP/SIGCONT, the create/initialise race.

use std::time::Duration;

use ipc_sem::{Error, Key, SemOp, SemSet};
use ipc_testkit::{Proc, Watchdog, test_path};
use rustix::process::{Pid, Signal, kill_process};

use crate::shared::spin_until;

const ID_ENV: &str = "IPC_SEM_TEST_ID";

/// The state letter of process `pid` in /proc/PID/stat (`S`, `T`, ...).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?')
}

#[test]
fn semop_interrupted_by_sigstop_and_sigcont_is_retried() {
    if ipc_testkit::role().is_some() {
        let set = SemSet::open_id(std::env::var(ID_ENV).unwrap().parse().unwrap()).unwrap();
        // Both forms must survive the EINTR that semop returns after SIGSTOP + SIGCONT.
        set.apply_timeout(&[SemOp::wait(0)], Duration::from_secs(20))
            .expect("timed wait retried after EINTR");
        set.apply(&[SemOp::wait(0)])
            .expect("blocking wait retried after EINTR");
        return;
    }
    let _wd = Watchdog::new("sigstop", Duration::from_secs(60));
    let set = crate::shared::new_set(&[0]);
    let mut cmd = ipc_testkit::child(
        &test_path!(semop_interrupted_by_sigstop_and_sigcont_is_retried),
        "waiter",
    );
    cmd.env(ID_ENV, set.id().to_string());
    let child = Proc::spawn(&mut cmd).unwrap();
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    // Waits for the child to be in semop; fails at once if it exited instead.
    let waiting = || {
        let st = state(child.id());
        assert!(st != 'Z' && st != '?', "the waiter exited early");
        set.waiters(0).unwrap() == 1
    };
    for _ in 0..2 {
        spin_until(waiting);
        kill_process(pid, Signal::STOP).unwrap();
        // Stopped, and out of semop (it returned EINTR on the way to the stop).
        spin_until(|| state(child.id()) == 'T' && set.waiters(0).unwrap() == 0);
        kill_process(pid, Signal::CONT).unwrap();
        // Back in semop: the library retried.
        spin_until(waiting);
        set.apply(&[SemOp::post(0)]).unwrap();
    }
    child.expect_success(Duration::from_secs(20));
    assert_eq!(set.value(0).unwrap(), 0);
}

#[test]
fn open_waits_for_the_creator_to_initialise_the_set() {
    let _wd = Watchdog::new("otime", Duration::from_secs(30));
    // A set made by a raw semget and never operated on: sem_otime is 0, "being initialised".
    let (key, id) = loop {
        let key = ipc_testkit::sysv_key();
        // SAFETY: plain integer arguments.
        let id = unsafe { libc::semget(key, 1, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        if id >= 0 {
            break (key, id);
        }
    };
    let r = SemSet::options()
        .wait_ready(Duration::from_millis(50))
        .open(Key::new(key));
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    let r = SemSet::options()
        .wait_ready(Duration::from_millis(50))
        .open_id(id);
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    // Once an operation has run (sem_otime set), open succeeds.
    let mut post = libc::sembuf {
        sem_num: 0,
        sem_op: 1,
        sem_flg: 0,
    };
    // SAFETY: `post` is one valid sembuf for the call.
    assert_eq!(unsafe { libc::semop(id, &mut post, 1) }, 0);
    let opened = SemSet::open(Key::new(key)).unwrap();
    assert_eq!(opened.values().unwrap(), [1]);
    ipc_sem::sysv::remove(id).unwrap();
    assert!(matches!(opened.value(0), Err(Error::Removed { .. })));
}

#[test]
fn persistent_objects_stay_until_removed() {
    let name = ipc_testkit::posix_name("keep");
    let mut sem = ipc_sem::NamedSemaphore::create(&name, 3).unwrap();
    sem.persist();
    assert!(sem.is_owner(), "the owner until dropped");
    drop(sem);
    let again = ipc_sem::NamedSemaphore::open(&name).unwrap();
    assert_eq!(again.value().unwrap(), 3);
    ipc_sem::unlink(&name).unwrap();
    assert!(matches!(
        ipc_sem::unlink(&name),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        again.value().unwrap(),
        3,
        "an unlinked semaphore still works for its openers"
    );

    let mut set = crate::shared::new_set(&[1]);
    set.persist();
    let id = set.id();
    drop(set);
    let set = SemSet::open_id(id).unwrap();
    assert_eq!(set.values().unwrap(), [1]);
    assert!(
        matches!(set.remove(), Err(Error::NotOwner { .. })),
        "an opener removes nothing"
    );
    ipc_sem::sysv::remove(id).unwrap();
    assert!(matches!(SemSet::open_id(id), Err(Error::NotFound { .. })));
}

#[test]
fn keys_from_a_path_reach_the_same_set_and_bad_paths_are_typed_errors() {
    let dir = std::env::temp_dir();
    let file = dir.join(ipc_testkit::unique("ftok"));
    std::fs::write(&file, b"key file").unwrap();
    // Removed even if an assertion below fails.
    struct RmFile(std::path::PathBuf);
    impl Drop for RmFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = RmFile(file.clone());
    // ftok keys can collide with another file's set: try the next project byte then.
    let (proj, set) = (1..=255u8)
        .find_map(|proj| {
            let key = Key::from_path(&file, proj).unwrap();
            assert_eq!(key, Key::from_path(&file, proj).unwrap(), "stable");
            assert_ne!(key, Key::PRIVATE);
            match SemSet::create(key, &[4, 2]) {
                Err(Error::AlreadyExists { .. }) => None,
                r => Some((proj, r.unwrap())),
            }
        })
        .expect("a free ftok key");
    // Another process would derive the same key from the same path and byte.
    let key = Key::from_path(&file, proj).unwrap();
    let opened = SemSet::open(key).unwrap();
    assert_eq!(opened.id(), set.id());
    assert_eq!(opened.values().unwrap(), [4, 2]);
    assert_eq!(Key::from(key.as_raw()), key);
    drop(opened);
    drop(set);
    assert!(matches!(SemSet::open(key), Err(Error::NotFound { .. })));
    let missing = dir.join(ipc_testkit::unique("noftok"));
    assert!(matches!(
        Key::from_path(&missing, 1),
        Err(Error::NotFound { .. })
    ));
    let nul = std::path::Path::new("/tmp/ipcrs\0x");
    assert!(matches!(
        Key::from_path(nul, 1),
        Err(Error::InvalidName { .. })
    ));
}

/// A handle whose set was removed, and whose id the kernel then gave to a larger set: `values`
/// (`GETALL`) and `set_values` (`SETALL`) would move that set's count of values through a
/// buffer the size of ours. Refused as `Removed`. The id comes back at once by
/// `/proc/sys/kernel/sem_next_id`, in an IPC namespace of the child's own; raw `semget` there,
/// because the crate's owners keep companion files in `/dev/shm`, which this namespace shares
/// with the machine's.
#[test]
#[allow(unsafe_code)]
fn a_handle_whose_id_went_to_a_larger_set_refuses_getall_and_setall() {
    if ipc_testkit::role().is_none() {
        let _wd = Watchdog::new("reused id", Duration::from_secs(60));
        Proc::spawn(&mut ipc_testkit::child(
            &test_path!(a_handle_whose_id_went_to_a_larger_set_refuses_getall_and_setall),
            "own-namespace",
        ))
        .unwrap()
        .expect_success(Duration::from_secs(30));
        return;
    }
    // SAFETY: a plain flag; this child process is ours to move into a new IPC namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWIPC) } != 0 {
        eprintln!(
            "skipped: no IPC namespace of our own ({})",
            std::io::Error::last_os_error()
        );
        return;
    }
    let raw_set = |n: i32| {
        // SAFETY: plain integer arguments.
        let id = unsafe { libc::semget(libc::IPC_PRIVATE, n, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "semget: {}", std::io::Error::last_os_error());
        let mut op = libc::sembuf {
            sem_num: 0,
            sem_op: 1,
            sem_flg: 0,
        };
        // SAFETY: one valid sembuf. (A first semop marks the set initialised for `open`.)
        assert_eq!(unsafe { libc::semop(id, &mut op, 1) }, 0);
        id
    };
    let small = raw_set(3);
    let handle = SemSet::open_id(small).unwrap();
    assert_eq!(handle.values().unwrap(), [1, 0, 0]);
    // SAFETY: IPC_RMID takes no fourth argument.
    assert_eq!(unsafe { libc::semctl(small, 0, libc::IPC_RMID) }, 0);
    if std::fs::write("/proc/sys/kernel/sem_next_id", small.to_string()).is_err() {
        eprintln!("skipped: sem_next_id cannot be set here");
        return;
    }
    let large = raw_set(512);
    assert_eq!(large, small, "the kernel gave the id back");
    assert!(
        matches!(handle.values(), Err(Error::Removed { .. })),
        "GETALL through a 3-value buffer into a set of 512"
    );
    assert!(matches!(
        handle.set_values(&[0, 0, 0]),
        Err(Error::Removed { .. })
    ));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::semctl(large, 0, libc::IPC_RMID) }, 0);
}
