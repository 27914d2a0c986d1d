//! wait_timeout with zero, small and Duration::MAX, for every kind; timed waits end in bounds.

use std::time::{Duration, Instant};

use ipc_sem::{Error, EventSemaphore, NamedSemaphore, RobustMutex, SemOp, SharedSemaphore};
use ipc_testkit::{Proc, Watchdog, test_path};

use crate::shared::Shared;

const SMALL: Duration = Duration::from_millis(50);
const SLACK: Duration = Duration::from_millis(900);

/// Checks one kind: `wait(t)` on an empty semaphore, then `post` and waits with MAX and zero.
fn check(what: &str, wait: impl Fn(Duration) -> Result<(), Error>, post: impl Fn()) {
    let t = Instant::now();
    assert!(
        matches!(wait(Duration::ZERO), Err(Error::TimedOut)),
        "{what}: zero"
    );
    assert!(t.elapsed() < SLACK, "{what}: zero returned at once");
    let t = Instant::now();
    assert!(matches!(wait(SMALL), Err(Error::TimedOut)), "{what}: small");
    let took = t.elapsed();
    assert!(
        took >= SMALL && took < SMALL + SLACK,
        "{what}: small took {took:?}"
    );
    post();
    wait(Duration::MAX).unwrap_or_else(|e| panic!("{what}: MAX with a unit: {e}"));
    post();
    wait(Duration::ZERO).unwrap_or_else(|e| panic!("{what}: zero with a unit: {e}"));
    // Saturating: a timeout whose deadline overflows waits like MAX (a unit is there).
    post();
    wait(Duration::new(u64::MAX, 0)).unwrap_or_else(|e| panic!("{what}: huge: {e}"));
}

#[test]
fn timed_waits_of_every_kind_return_within_bounds() {
    let _wd = Watchdog::new("timeouts", Duration::from_secs(30));
    let name = ipc_testkit::posix_name("tmo");
    let named = NamedSemaphore::create(&name, 0).unwrap();
    check("named", |t| named.wait_timeout(t), || named.post().unwrap());
    let shared = SharedSemaphore::new(0).unwrap();
    check(
        "shared",
        |t| shared.wait_timeout(t),
        || shared.post().unwrap(),
    );
    let set = crate::shared::new_set(&[0]);
    check(
        "sysv",
        |t| set.apply_timeout(&[SemOp::wait(0)], t),
        || set.apply(&[SemOp::post(0)]).unwrap(),
    );
    let efd = EventSemaphore::new(0).unwrap();
    check("eventfd", |t| efd.wait_timeout(t), || efd.post().unwrap());
    assert!(matches!(named.try_wait(), Err(Error::WouldBlock)));
    assert!(matches!(
        set.try_apply(&[SemOp::wait(0)]),
        Err(Error::WouldBlock)
    ));
    assert!(matches!(efd.try_wait(), Err(Error::WouldBlock)));
}

#[test]
fn robust_mutex_lock_timeout_returns_within_bounds() {
    let _wd = Watchdog::new("mutex timeouts", Duration::from_secs(30));
    let shm = Shared::create();
    // SAFETY: fresh zeroed shared page; initialised once; destroyed below; outlives `m`.
    let m = unsafe { RobustMutex::init(shm.mutex_slot()) }.unwrap();
    let g = m.lock().unwrap();
    assert!(
        matches!(m.lock(), Err(Error::Deadlock)),
        "error-checking mutex"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(matches!(m.try_lock(), Err(Error::WouldBlock)));
            assert!(matches!(
                m.lock_timeout(Duration::ZERO),
                Err(Error::TimedOut)
            ));
            let t = Instant::now();
            assert!(matches!(m.lock_timeout(SMALL), Err(Error::TimedOut)));
            let took = t.elapsed();
            assert!(took >= SMALL && took < SMALL + SLACK, "{took:?}");
        });
    });
    drop(g);
    let g = m.lock_timeout(Duration::MAX).unwrap();
    drop(g);
    // SAFETY: unlocked; nobody else uses it.
    unsafe { m.destroy() }.unwrap();
}

#[test]
fn wait_with_duration_max_returns_when_another_process_posts() {
    const NAME_ENV: &str = "IPC_SEM_TEST_NAME";
    if ipc_testkit::role().is_some() {
        let sem = NamedSemaphore::open(&std::env::var(NAME_ENV).unwrap()).unwrap();
        sem.post().unwrap();
        return;
    }
    let _wd = Watchdog::new("max", Duration::from_secs(30));
    let name = ipc_testkit::posix_name("max");
    let sem = NamedSemaphore::create(&name, 0).unwrap();
    let mut cmd = ipc_testkit::child(
        &test_path!(wait_with_duration_max_returns_when_another_process_posts),
        "poster",
    );
    cmd.env(NAME_ENV, &name);
    let child = Proc::spawn(&mut cmd).unwrap();
    sem.wait_timeout(Duration::MAX).unwrap();
    child.expect_success(Duration::from_secs(10));
    assert_eq!(sem.value().unwrap(), 0);
}

static SIGNALS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// A timed wait of `LIMIT` while signals keep interrupting it: it must still end at its
/// deadline (a retry with the full timeout after each EINTR would never end while they come).
fn interrupted(what: &str, wait: impl Fn(Duration) -> Result<(), Error>) {
    const LIMIT: Duration = Duration::from_millis(300);
    let before = SIGNALS.load(std::sync::atomic::Ordering::SeqCst);
    let t = Instant::now();
    let r = wait(LIMIT);
    let took = t.elapsed();
    let signals = SIGNALS.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(matches!(r, Err(Error::TimedOut)), "{what}: {r:?}");
    assert!(
        took >= LIMIT && took < LIMIT + SLACK,
        "{what}: took {took:?}"
    );
    assert!(signals >= 3, "{what}: only {signals} signals arrived");
    eprintln!("{what}: timed out after {took:?} through {signals} interruptions");
}

#[test]
fn timed_waits_interrupted_by_signals_keep_their_deadline() {
    const ID_ENV: &str = "IPC_SEM_TEST_ID";
    const NAME_ENV: &str = "IPC_SEM_TEST_NAME";
    if ipc_testkit::role().is_some() {
        // A handler without SA_RESTART (process-global: only in this child), so the waits see
        // EINTR; semop and sem_clockwait are never restarted anyway.
        // SAFETY: an all-zero sigaction is a valid empty value, filled in below.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = count_signal as *const () as usize;
        // SAFETY: `sa` is valid; the handler only touches an atomic (async-signal-safe).
        let rc = unsafe { libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "sigaction");
        let set =
            ipc_sem::SemSet::open_id(std::env::var(ID_ENV).unwrap().parse().unwrap()).unwrap();
        // The parent starts signalling once it sees this waiter (after the handler is set).
        interrupted("sysv", |t| set.apply_timeout(&[SemOp::wait(0)], t));
        let named = NamedSemaphore::open(&std::env::var(NAME_ENV).unwrap()).unwrap();
        interrupted("named", |t| named.wait_timeout(t));
        let efd = EventSemaphore::new(0).unwrap();
        interrupted("eventfd", |t| efd.wait_timeout(t));
        return;
    }
    let _wd = Watchdog::new("interrupted", Duration::from_secs(60));
    let set = crate::shared::new_set(&[0]);
    let name = ipc_testkit::posix_name("intr");
    let _named = NamedSemaphore::create(&name, 0).unwrap();
    let mut cmd = ipc_testkit::child(
        &test_path!(timed_waits_interrupted_by_signals_keep_their_deadline),
        "waiter",
    );
    cmd.env(ID_ENV, set.id().to_string()).env(NAME_ENV, &name);
    let mut child = Proc::spawn(&mut cmd).unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    crate::shared::spin_until(|| set.waiters(0).unwrap() == 1);
    let start = Instant::now();
    // Signal every 10 ms until the child is done (bounded: a child that never finishes is
    // killed by `wait_timeout` below after the loop gives up).
    while child.inner().try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(20) {
        // To every thread: a process-directed signal would interrupt libtest's idle main thread
        // rather than the one that waits.
        for task in std::fs::read_dir(format!("/proc/{}/task", child.id()))
            .into_iter()
            .flatten()
        {
            let Some(tid) = task
                .ok()
                .and_then(|t| t.file_name().to_str()?.parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: plain integer arguments; the child is not yet reaped, so its pid and
            // thread ids are still its own.
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    pid.as_raw_nonzero().get(),
                    tid,
                    libc::SIGUSR1,
                )
            };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait_timeout(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "waiter: {status}");
}
