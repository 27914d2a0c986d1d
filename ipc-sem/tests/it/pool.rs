//! A counting semaphore as a pool of N resources: never more than N holders at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ipc_sem::{InPlaceSemaphore, NamedSemaphore, SemGuard};
use ipc_testkit::{Proc, Watchdog, test_path};

use crate::shared::{Shared, ready_and_wait_for_go, spin_until};

const N: u32 = 3;
const HOLDERS: u64 = 8;
const ROUNDS: u64 = 300;
const NAME_ENV: &str = "IPC_SEM_TEST_NAME";

/// One holder's rounds; checks the bound itself and exits non-zero (panics) if it is broken.
fn hold_rounds<'a>(shm: &Shared, acquire: impl Fn() -> SemGuard<'a>) {
    let r = shm.region();
    ready_and_wait_for_go(r);
    for _ in 0..ROUNDS {
        let g = acquire();
        let now = r.inside.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(now <= u64::from(N), "{now} holders of a pool of {N}");
        r.max_inside.fetch_max(now, Ordering::SeqCst);
        for _ in 0..3 {
            std::thread::yield_now();
        }
        r.inside.fetch_sub(1, Ordering::SeqCst);
        drop(g);
    }
}

fn run_pool(test: &str, named: bool) {
    let _wd = Watchdog::new(test, Duration::from_secs(60));
    let shm = Shared::create();
    let name = ipc_testkit::posix_name("pool");
    let sem = named.then(|| NamedSemaphore::create(&name, N).unwrap());
    // SAFETY: fresh shared page, initialised once, destroyed below after the children exited.
    let in_place = (!named).then(|| unsafe { InPlaceSemaphore::init(shm.sem_slot(), N) }.unwrap());
    let kids: Vec<Proc> = (0..HOLDERS)
        .map(|_| {
            let mut cmd = shm.child(test, "holder");
            cmd.env(NAME_ENV, &name);
            Proc::spawn(&mut cmd).unwrap()
        })
        .collect();
    let r = shm.region();
    spin_until(|| r.ready.load(Ordering::SeqCst) == HOLDERS);
    r.go.store(1, Ordering::SeqCst);
    for k in kids {
        k.expect_success(Duration::from_secs(50));
    }
    let max = r.max_inside.load(Ordering::SeqCst);
    eprintln!("most holders at once: {max} of {N}");
    assert!((1..=u64::from(N)).contains(&max));
    assert_eq!(r.inside.load(Ordering::SeqCst), 0);
    if let Some(s) = &sem {
        assert_eq!(s.value().unwrap(), N, "every unit back in the pool");
    }
    if let Some(s) = in_place {
        assert_eq!(s.value().unwrap(), N);
        // SAFETY: the children exited; nobody uses it any more.
        unsafe { s.destroy() }.unwrap();
    }
}

#[test]
fn named_counting_semaphore_never_admits_more_than_n() {
    if ipc_testkit::role().is_some() {
        let shm = Shared::from_env();
        let sem = NamedSemaphore::open(&std::env::var(NAME_ENV).unwrap()).unwrap();
        hold_rounds(&shm, || sem.acquire().unwrap());
        return;
    }
    run_pool(
        &test_path!(named_counting_semaphore_never_admits_more_than_n),
        true,
    );
}

#[test]
fn in_place_counting_semaphore_never_admits_more_than_n() {
    if ipc_testkit::role().is_some() {
        let shm = Shared::from_env();
        // SAFETY: initialised by the parent before we started; the mapping outlives `sem`.
        let sem = unsafe { InPlaceSemaphore::attach(shm.sem_slot()) }.unwrap();
        hold_rounds(&shm, || sem.acquire().unwrap());
        return;
    }
    run_pool(
        &test_path!(in_place_counting_semaphore_never_admits_more_than_n),
        false,
    );
}
