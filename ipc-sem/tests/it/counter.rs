//! 16 processes × 10,000 increments of a counter in shared memory, under each kind of lock.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipc_sem::{InPlaceSemaphore, Locked, NamedSemaphore, RobustMutex, SemOp, SemSet};
use ipc_testkit::{Proc, Watchdog, test_path};

use crate::shared::{Shared, ready_and_wait_for_go, spin_until};

const PROCS: u64 = 16;
const INCREMENTS: u64 = 10_000;
const NAME_ENV: &str = "IPC_SEM_TEST_NAME";
const ID_ENV: &str = "IPC_SEM_TEST_ID";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    None,
    Named,
    Unnamed,
    SysV,
    Mutex,
}

/// One increment that can lose updates: read, then write back (two separate atomic accesses).
fn bump(shm: &Shared) {
    let c = &shm.region().counter;
    let v = c.load(Ordering::Relaxed);
    c.store(v + 1, Ordering::Relaxed);
}

fn child(kind: Kind) {
    let shm = Shared::from_env();
    let r = shm.region();
    match kind {
        Kind::None => {
            ready_and_wait_for_go(r);
            for _ in 0..INCREMENTS {
                bump(&shm);
            }
        }
        Kind::Named => {
            let sem = NamedSemaphore::open(&std::env::var(NAME_ENV).unwrap()).unwrap();
            ready_and_wait_for_go(r);
            for _ in 0..INCREMENTS {
                let _g = sem.acquire().unwrap();
                bump(&shm);
            }
        }
        Kind::Unnamed => {
            // SAFETY: the parent initialised the semaphore in the segment before starting us
            // and destroys it only after we exited; our mapping outlives `sem`.
            let sem = unsafe { InPlaceSemaphore::attach(shm.sem_slot()) }.unwrap();
            ready_and_wait_for_go(r);
            for _ in 0..INCREMENTS {
                let _g = sem.acquire().unwrap();
                bump(&shm);
            }
        }
        Kind::SysV => {
            let id = std::env::var(ID_ENV).unwrap().parse().unwrap();
            let set = SemSet::open_id(id).unwrap();
            ready_and_wait_for_go(r);
            for _ in 0..INCREMENTS {
                let _g = set.acquire(&[SemOp::wait(0).undo()]).unwrap();
                bump(&shm);
            }
        }
        Kind::Mutex => {
            // SAFETY: as for the unnamed semaphore.
            let m = unsafe { RobustMutex::attach(shm.mutex_slot()) }.unwrap();
            ready_and_wait_for_go(r);
            for _ in 0..INCREMENTS {
                let Locked::Normal(_g) = m.lock().unwrap() else {
                    panic!("owner died unexpectedly")
                };
                bump(&shm);
            }
        }
    }
}

/// Runs the case as parent (spawns 16 children) or as one of the children. Returns the total.
fn run(test: &str, kind: Kind) -> Option<u64> {
    if ipc_testkit::role().is_some() {
        child(kind);
        return None;
    }
    let _wd = Watchdog::new(test, Duration::from_secs(120));
    let shm = Shared::create();
    let name = ipc_testkit::posix_name("cnt");
    let _named = (kind == Kind::Named).then(|| NamedSemaphore::create(&name, 1).unwrap());
    let set = (kind == Kind::SysV).then(|| crate::shared::new_set(&[1]));
    // SAFETY: the segment is fresh, page-aligned and shared; initialised once here, destroyed
    // below after every child exited; the mapping outlives these handles.
    let unnamed = (kind == Kind::Unnamed)
        .then(|| unsafe { InPlaceSemaphore::init(shm.sem_slot(), 1) }.unwrap());
    // SAFETY: as above.
    let mutex =
        (kind == Kind::Mutex).then(|| unsafe { RobustMutex::init(shm.mutex_slot()) }.unwrap());
    let start = Instant::now();
    let children: Vec<Proc> = (0..PROCS)
        .map(|_| {
            let mut cmd = shm.child(test, "incrementer");
            cmd.env(NAME_ENV, &name);
            if let Some(s) = &set {
                cmd.env(ID_ENV, s.id().to_string());
            }
            Proc::spawn(&mut cmd).unwrap()
        })
        .collect();
    let r = shm.region();
    spin_until(|| r.ready.load(Ordering::SeqCst) == PROCS);
    r.go.store(1, Ordering::SeqCst);
    for c in children {
        c.expect_success(Duration::from_secs(100));
    }
    let total = r.counter.load(Ordering::SeqCst);
    eprintln!(
        "{kind:?}: total {total} of {} in {:?}",
        PROCS * INCREMENTS,
        start.elapsed()
    );
    if let Some(s) = unnamed {
        // SAFETY: every child exited; nobody uses the semaphore any more.
        unsafe { s.destroy() }.unwrap();
    }
    if let Some(m) = mutex {
        // SAFETY: every child exited and the mutex is unlocked.
        unsafe { m.destroy() }.unwrap();
    }
    if let Some(s) = &set {
        assert_eq!(s.values().unwrap(), [1], "every unit given back");
    }
    Some(total)
}

#[test]
fn without_a_lock_updates_may_be_lost() {
    if let Some(total) = run(&test_path!(without_a_lock_updates_may_be_lost), Kind::None) {
        // Lost updates are possible, not certain (one core, short time slices): only report.
        assert!(total <= PROCS * INCREMENTS);
        assert!(total >= INCREMENTS);
        eprintln!(
            "lost updates without a lock: {}",
            PROCS * INCREMENTS - total
        );
    }
}

#[test]
fn named_semaphore_keeps_the_total_exact() {
    if let Some(total) = run(
        &test_path!(named_semaphore_keeps_the_total_exact),
        Kind::Named,
    ) {
        assert_eq!(total, PROCS * INCREMENTS);
    }
}

#[test]
fn unnamed_semaphore_in_shared_memory_keeps_the_total_exact() {
    let test = test_path!(unnamed_semaphore_in_shared_memory_keeps_the_total_exact);
    if let Some(total) = run(&test, Kind::Unnamed) {
        assert_eq!(total, PROCS * INCREMENTS);
    }
}

#[test]
fn system_v_set_keeps_the_total_exact() {
    if let Some(total) = run(&test_path!(system_v_set_keeps_the_total_exact), Kind::SysV) {
        assert_eq!(total, PROCS * INCREMENTS);
    }
}

#[test]
fn robust_mutex_keeps_the_total_exact() {
    if let Some(total) = run(&test_path!(robust_mutex_keeps_the_total_exact), Kind::Mutex) {
        assert_eq!(total, PROCS * INCREMENTS);
    }
}
