//! A holder killed with SIGKILL: what each kind does about it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipc_sem::{Error, Locked, NamedSemaphore, RobustMutex, SemOp, SemSet};
use ipc_testkit::{Proc, Watchdog, test_path};

use crate::shared::{Shared, hold_forever, spin_until};

const ID_ENV: &str = "IPC_SEM_TEST_ID";
const NAME_ENV: &str = "IPC_SEM_TEST_NAME";

/// Spawns the holder, waits for its "I hold it" in shared memory, kills it and reaps it.
fn kill_holder(shm: &Shared, mut cmd: std::process::Command) {
    let mut holder = Proc::spawn(&mut cmd).unwrap();
    spin_until(|| shm.region().held.load(Ordering::SeqCst) == 1);
    holder.kill().unwrap();
    let status = holder.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(!status.success(), "the holder was killed");
}

#[test]
fn system_v_undo_gives_a_killed_holders_unit_back() {
    if ipc_testkit::role().is_some() {
        let shm = Shared::from_env();
        let set = SemSet::open_id(std::env::var(ID_ENV).unwrap().parse().unwrap()).unwrap();
        set.apply(&[SemOp::wait(0).undo(), SemOp::wait(1).undo()])
            .unwrap();
        shm.region().held.store(1, Ordering::SeqCst);
        hold_forever();
    }
    let _wd = Watchdog::new("sysv undo", Duration::from_secs(30));
    let shm = Shared::create();
    let set = crate::shared::new_set(&[1, 1]);
    let mut cmd = shm.child(
        &test_path!(system_v_undo_gives_a_killed_holders_unit_back),
        "holder",
    );
    cmd.env(ID_ENV, set.id().to_string());
    kill_holder(&shm, cmd);
    // The kernel applied the undo at exit: the next acquire succeeds at once.
    let g = set
        .try_acquire(&[SemOp::wait(0).undo(), SemOp::wait(1).undo()])
        .expect("units given back by SEM_UNDO");
    assert_eq!(set.values().unwrap(), [0, 0]);
    drop(g);
    assert_eq!(set.values().unwrap(), [1, 1]);
}

fn mutex_holder(shm: &Shared) -> ! {
    // SAFETY: the parent initialised the mutex before starting us and keeps the segment alive.
    let m = unsafe { RobustMutex::attach(shm.mutex_slot()) }.unwrap();
    let guard = m.lock().unwrap().recover().unwrap();
    // Half an update: the protected data is inconsistent when we die.
    shm.region().counter.store(1, Ordering::SeqCst);
    shm.region().held.store(1, Ordering::SeqCst);
    std::mem::forget(guard);
    hold_forever();
}

#[test]
fn robust_mutex_reports_owner_died_and_recovers() {
    if ipc_testkit::role().is_some() {
        mutex_holder(&Shared::from_env());
    }
    let _wd = Watchdog::new("robust recover", Duration::from_secs(30));
    let shm = Shared::create();
    // SAFETY: fresh zeroed shared page; initialised once; destroyed below; outlives `m`.
    let m = unsafe { RobustMutex::init(shm.mutex_slot()) }.unwrap();
    let test = test_path!(robust_mutex_reports_owner_died_and_recovers);
    kill_holder(&shm, shm.child(&test, "holder"));
    let Locked::OwnerDied(died) = m.lock().unwrap() else {
        panic!("expected the owner-died guard");
    };
    // Repair the data, then mark it consistent.
    assert_eq!(shm.region().counter.load(Ordering::SeqCst), 1);
    shm.region().counter.store(0, Ordering::SeqCst);
    let g = died.make_consistent().unwrap();
    drop(g);
    let again = m.try_lock().unwrap();
    assert!(!again.is_owner_died(), "normal after recovery");
    drop(again);
    // SAFETY: unlocked, and no other process uses it.
    unsafe { m.destroy() }.unwrap();
}

#[test]
fn robust_mutex_not_made_consistent_is_unrecoverable() {
    if ipc_testkit::role().is_some() {
        mutex_holder(&Shared::from_env());
    }
    let _wd = Watchdog::new("robust unrecoverable", Duration::from_secs(30));
    let shm = Shared::create();
    // SAFETY: fresh zeroed shared page; initialised once; outlives `m`.
    let m = unsafe { RobustMutex::init(shm.mutex_slot()) }.unwrap();
    let test = test_path!(robust_mutex_not_made_consistent_is_unrecoverable);
    kill_holder(&shm, shm.child(&test, "holder"));
    let died = m.lock_timeout(Duration::from_secs(5)).unwrap();
    assert!(died.is_owner_died());
    drop(died); // unlocked without pthread_mutex_consistent
    assert!(matches!(m.lock(), Err(Error::NotRecoverable)));
    assert!(matches!(m.try_lock(), Err(Error::NotRecoverable)));
    // Also from another thread (nothing was left locked by the failed attempts).
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(matches!(m.try_lock(), Err(Error::NotRecoverable)));
            assert!(matches!(m.lock(), Err(Error::NotRecoverable)));
        });
    });
    assert!(matches!(m.lock(), Err(Error::NotRecoverable)));
    let r = m.lock_timeout(Duration::from_millis(10));
    assert!(matches!(r, Err(Error::NotRecoverable)), "{r:?}");
    drop(r);
    // SAFETY: no other process uses it; an unrecoverable mutex may be destroyed.
    unsafe { m.destroy() }.unwrap();
}

#[test]
fn posix_named_killed_holder_makes_a_timed_wait_time_out() {
    if ipc_testkit::role().is_some() {
        let shm = Shared::from_env();
        let sem = NamedSemaphore::open(&std::env::var(NAME_ENV).unwrap()).unwrap();
        sem.wait().unwrap();
        shm.region().held.store(1, Ordering::SeqCst);
        hold_forever();
    }
    let _wd = Watchdog::new("named killed", Duration::from_secs(30));
    let shm = Shared::create();
    let name = ipc_testkit::posix_name("kill");
    let sem = NamedSemaphore::create(&name, 1).unwrap();
    let mut cmd = shm.child(
        &test_path!(posix_named_killed_holder_makes_a_timed_wait_time_out),
        "holder",
    );
    cmd.env(NAME_ENV, &name);
    kill_holder(&shm, cmd);
    // POSIX semaphores do not survive a holder's crash: the unit is gone for good.
    let limit = Duration::from_millis(200);
    let start = Instant::now();
    assert!(matches!(sem.wait_timeout(limit), Err(Error::TimedOut)));
    let took = start.elapsed();
    assert!(
        took >= limit && took < limit + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(sem.value().unwrap(), 0);
}
