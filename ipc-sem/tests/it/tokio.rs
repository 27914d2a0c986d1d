//! The await-able forms (feature `tokio`), across real processes.
//!
//! Cancellation is tested the way the futures are dropped in real programs: polled once by
//! hand then dropped, losing a `select!`, and timing out; at random moments around the peer's
//! posts, so that futures are dropped while pending, and after the waiter thread woke them but
//! before they ran. The bounded-buffer tests prove what a dropped future may not do: a producer
//! process writes sequence-numbered, checksummed records into shared memory, one unit per
//! record; the consumer checks every record. A unit lost to a dropped future hangs the consumer
//! (its bounded wait fails), a unit taken twice lets it read a record not yet written (wrong
//! sequence number or checksum), and at the end exactly every unit has been taken.
#![cfg(feature = "tokio")]
#![allow(unsafe_code)]

use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::{Pin, pin};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use ipc_sem::{
    AsyncEventSemaphore, AsyncLocked, AsyncMutex, AsyncSemSet, AsyncSemaphore, Error,
    EventSemaphore, InPlaceSemaphore, Locked, NamedMutex, NamedSemaphore, SemOp, SemSet,
    SharedMutex, SharedSemaphore,
};
use ipc_testkit::{Proc, SplitMix64, Watchdog, test_path};

use crate::shared::{Region, Shared, hold_forever, new_set, spin_until};

const LIMIT: Duration = Duration::from_secs(30);
const NAME_ENV: &str = "IPC_SEM_TOKIO_NAME";
const SLOTS_ENV: &str = "IPC_SEM_TOKIO_SLOTS";
const ID_ENV: &str = "IPC_SEM_TOKIO_ID";
/// Records per bounded-buffer test.
const RECORDS: u64 = 300;

fn current_thread() -> ::tokio::runtime::Runtime {
    ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> ::tokio::runtime::Runtime {
    ::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Awaits `f` at most [`LIMIT`].
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match ::tokio::time::timeout(LIMIT, f).await {
        Ok(t) => t,
        Err(_) => panic!("{what}: not done within {LIMIT:?}"),
    }
}

fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(waker))
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"))
}

/// Our standard input, as a descriptor of our own (the parent passed an object there).
fn stdin_fd() -> OwnedFd {
    std::io::stdin().as_fd().try_clone_to_owned().unwrap()
}

/// A waker that records that it was woken, and lets a thread wait for that (bounded).
#[derive(Default)]
struct Flag {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        *self.woken.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

impl Flag {
    fn new() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag::default());
        let w = Waker::from(f.clone());
        (f, w)
    }

    fn is_woken(&self) -> bool {
        *self.woken.lock().unwrap()
    }

    /// Waits at most `limit` for a wake; whether it came.
    fn wait(&self, limit: Duration) -> bool {
        let g = self.woken.lock().unwrap();
        let (g, _) = self.cv.wait_timeout_while(g, limit, |w| !*w).unwrap();
        *g
    }
}

// ---------------------------------------------------------------------------------------------
// The bounded buffer

/// The producer: `RECORDS` records, each written when `asked` says the consumer wants it,
/// each announced by `announce` (one unit of the semaphore under test).
fn produce(r: &Region, asked: impl Fn(), announce: impl Fn()) {
    for seq in 0..RECORDS {
        asked();
        r.write_record(seq);
        announce();
    }
}

/// How the consumer's futures were dropped before completing: polled once by hand, lost a
/// `select!`, timed out.
type Cancelled = [u64; 3];

/// The consumer: for each record, asks for it with `ask` (the producer writes it, then posts
/// its unit), and waits for its unit with `wait`, dropping a random number of waits first, at
/// random moments around the post; checks the record.
///
/// Before asking, a quarter of the time, a wait that must time out (nothing can come: the
/// producer waits to be asked) is dropped at its deadline.
async fn consume<W, F>(r: &Region, wait: W, ask: impl Fn()) -> Cancelled
where
    W: Fn() -> F,
    F: Future<Output = ipc_sem::Result<()>>,
{
    let mut rng = SplitMix64::new(0x5e3a);
    let mut cancelled = [0; 3];
    for seq in 0..RECORDS {
        if rng.range(0, 3) == 0 {
            let early = ::tokio::time::timeout(Duration::from_millis(1), wait()).await;
            assert!(
                early.is_err(),
                "record {seq}: a unit before it was asked for"
            );
            cancelled[2] += 1;
        }
        ask();
        loop {
            match rng.range(0, 7) {
                0..=1 => {
                    let f = pin!(wait());
                    match poll_once(f, Waker::noop()) {
                        Poll::Ready(r) => break r.unwrap(),
                        Poll::Pending => cancelled[0] += 1,
                    }
                }
                2..=4 => {
                    ::tokio::select! {
                        biased;
                        r = wait() => break r.unwrap(),
                        () = ::tokio::task::yield_now() => cancelled[1] += 1,
                    }
                }
                5..=6 => {
                    let d = Duration::from_micros(rng.range(1, 300));
                    match ::tokio::time::timeout(d, wait()).await {
                        Ok(r) => break r.unwrap(),
                        Err(_) => cancelled[2] += 1,
                    }
                }
                _ => break bounded("a record's unit", wait()).await.unwrap(),
            }
        }
        r.check_record(seq);
    }
    cancelled
}

fn check_cancelled(what: &str, c: Cancelled) {
    eprintln!("{what}: cancelled futures (polled once, lost a select, timed out): {c:?}");
    assert!(
        c.iter().all(|&n| n > 0),
        "{what}: a kind of cancellation never happened: {c:?}"
    );
    // About a quarter of the records get a wait that must time out before they are asked
    // for; how many racing waits are dropped depends on the machine's load.
    assert!(
        c.iter().sum::<u64>() >= RECORDS / 6,
        "{what}: too few cancellations: {c:?}"
    );
}

/// The producer roles of the bounded-buffer tests: requests come on a named semaphore
/// (`SLOTS_ENV`), except for System V, where both are in one set.
fn producer(role: &str) {
    let shm = Shared::from_env();
    let r = shm.region();
    let slots = || NamedSemaphore::open(&env(SLOTS_ENV)).unwrap();
    let free = |s: &NamedSemaphore| s.wait_timeout(LIMIT).expect("a request");
    match role {
        "named" => {
            let (s, items) = (slots(), NamedSemaphore::open(&env(NAME_ENV)).unwrap());
            produce(r, || free(&s), || items.post().unwrap());
        }
        "shared" => {
            let (s, items) = (slots(), SharedSemaphore::from_fd(stdin_fd()).unwrap());
            produce(r, || free(&s), || items.post().unwrap());
        }
        "in-place" => {
            let s = slots();
            // SAFETY: the parent initialised the slot before starting us and keeps the segment
            // alive until we are gone.
            let items = unsafe { InPlaceSemaphore::attach(shm.sem_slot()) }.unwrap();
            produce(r, || free(&s), || items.post().unwrap());
        }
        "eventfd" => {
            let (s, items) = (slots(), EventSemaphore::from(stdin_fd()));
            produce(r, || free(&s), || items.post().unwrap());
        }
        "sysv" => {
            let set = SemSet::open_id(env(ID_ENV).parse().unwrap()).unwrap();
            produce(
                r,
                || {
                    set.apply_timeout(&[SemOp::wait(0)], LIMIT)
                        .expect("a request")
                },
                || set.apply(&[SemOp::post(1)]).unwrap(),
            );
        }
        other => panic!("unknown role {other}"),
    }
}

/// Starts the producer `role` with the segment, the slots semaphore and `setup`'s additions.
fn start_producer(
    test: &str,
    role: &str,
    shm: &Shared,
    slots: &str,
    setup: impl FnOnce(&mut std::process::Command),
) -> Proc {
    let mut cmd = shm.child(test, role);
    cmd.env(SLOTS_ENV, slots);
    setup(&mut cmd);
    Proc::spawn(&mut cmd).unwrap()
}

#[test]
fn cancelled_waits_on_a_named_semaphore_lose_no_unit_across_processes() {
    if let Some(role) = ipc_testkit::role() {
        return producer(&role);
    }
    let _wd = Watchdog::new("named bounded buffer", Duration::from_secs(120));
    let shm = Shared::create();
    let (name, slots_name) = (
        ipc_testkit::posix_name("tbi"),
        ipc_testkit::posix_name("tbs"),
    );
    let items = AsyncSemaphore::new(NamedSemaphore::create(&name, 0).unwrap());
    let slots = NamedSemaphore::create(&slots_name, 0).unwrap();
    let child = start_producer(
        &test_path!(cancelled_waits_on_a_named_semaphore_lose_no_unit_across_processes),
        "named",
        &shm,
        &slots_name,
        |c| {
            c.env(NAME_ENV, &name);
        },
    );
    let c = current_thread().block_on(consume(
        shm.region(),
        || items.wait(),
        || slots.post().unwrap(),
    ));
    child.expect_success(LIMIT);
    check_cancelled("named", c);
    // Every unit was taken exactly once.
    assert!(matches!(items.try_wait(), Err(Error::WouldBlock)));
    assert_eq!(slots.value().unwrap(), 0);
    // The owner inside removes the name when the async handle is dropped, at once.
    drop(items);
    assert!(matches!(
        NamedSemaphore::open(&name),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn cancelled_waits_on_an_anonymous_semaphore_lose_no_unit_across_processes() {
    if let Some(role) = ipc_testkit::role() {
        return producer(&role);
    }
    let _wd = Watchdog::new("shared bounded buffer", Duration::from_secs(120));
    let shm = Shared::create();
    let slots_name = ipc_testkit::posix_name("tbs");
    let items = AsyncSemaphore::new(SharedSemaphore::new(0).unwrap());
    let slots = NamedSemaphore::create(&slots_name, 0).unwrap();
    let fd = items.get_ref().as_fd().try_clone_to_owned().unwrap();
    let child = start_producer(
        &test_path!(cancelled_waits_on_an_anonymous_semaphore_lose_no_unit_across_processes),
        "shared",
        &shm,
        &slots_name,
        |c| {
            c.stdin(Stdio::from(fd));
        },
    );
    let c = multi_thread().block_on(consume(
        shm.region(),
        || items.wait(),
        || slots.post().unwrap(),
    ));
    child.expect_success(LIMIT);
    check_cancelled("shared", c);
    assert!(matches!(items.try_wait(), Err(Error::WouldBlock)));
    assert_eq!(items.into_inner().value().unwrap(), 0);
}

#[test]
fn cancelled_waits_on_an_in_place_semaphore_lose_no_unit_across_processes() {
    if let Some(role) = ipc_testkit::role() {
        return producer(&role);
    }
    let _wd = Watchdog::new("in-place bounded buffer", Duration::from_secs(120));
    let shm = Shared::create();
    let slots_name = ipc_testkit::posix_name("tbs");
    // SAFETY: the segment is zeroed, aligned, and outlives the handle (declared before it).
    let items = AsyncSemaphore::new(unsafe { InPlaceSemaphore::init(shm.sem_slot(), 0) }.unwrap());
    let slots = NamedSemaphore::create(&slots_name, 0).unwrap();
    let child = start_producer(
        &test_path!(cancelled_waits_on_an_in_place_semaphore_lose_no_unit_across_processes),
        "in-place",
        &shm,
        &slots_name,
        |_| {},
    );
    let c = current_thread().block_on(consume(
        shm.region(),
        || items.wait(),
        || slots.post().unwrap(),
    ));
    child.expect_success(LIMIT);
    check_cancelled("in place", c);
    assert_eq!(items.value().unwrap(), 0);
}

#[test]
fn cancelled_waits_on_an_eventfd_semaphore_lose_no_unit_across_processes() {
    if let Some(role) = ipc_testkit::role() {
        return producer(&role);
    }
    let _wd = Watchdog::new("eventfd bounded buffer", Duration::from_secs(120));
    let shm = Shared::create();
    let slots_name = ipc_testkit::posix_name("tbs");
    let items = EventSemaphore::new(0).unwrap();
    let slots = NamedSemaphore::create(&slots_name, 0).unwrap();
    let copy = OwnedFd::from(items.try_clone().unwrap());
    let child = start_producer(
        &test_path!(cancelled_waits_on_an_eventfd_semaphore_lose_no_unit_across_processes),
        "eventfd",
        &shm,
        &slots_name,
        |c| {
            c.stdin(Stdio::from(copy));
        },
    );
    let rt = current_thread();
    let items = rt.block_on(async {
        let items = AsyncEventSemaphore::new(items).unwrap();
        let c = consume(shm.region(), || items.wait(), || slots.post().unwrap()).await;
        check_cancelled("eventfd", c);
        items
    });
    child.expect_success(LIMIT);
    assert!(matches!(items.try_wait(), Err(Error::WouldBlock)));
    let sem = items.into_inner();
    assert!(sem.is_nonblocking().unwrap());
    assert!(matches!(sem.try_wait(), Err(Error::WouldBlock)));
}

#[test]
fn cancelled_system_v_operations_change_nothing_across_processes() {
    if let Some(role) = ipc_testkit::role() {
        return producer(&role);
    }
    let _wd = Watchdog::new("sysv bounded buffer", Duration::from_secs(120));
    let shm = Shared::create();
    // Semaphore 0: records asked for; 1: records ready.
    let set = AsyncSemSet::new(new_set(&[0, 0]));
    let child = start_producer(
        &test_path!(cancelled_system_v_operations_change_nothing_across_processes),
        "sysv",
        &shm,
        "-",
        |c| {
            c.env(ID_ENV, set.get_ref().id().to_string());
        },
    );
    let c = current_thread().block_on(consume(
        shm.region(),
        || set.apply(&[SemOp::wait(1)]),
        || set.get_ref().apply(&[SemOp::post(0)]).unwrap(),
    ));
    child.expect_success(LIMIT);
    check_cancelled("sysv", c);
    assert_eq!(set.get_ref().values().unwrap(), [0, 0]);
}

// ---------------------------------------------------------------------------------------------
// Wake-ups from other processes; the runtime is never blocked

#[test]
fn async_waits_wake_when_another_process_posts_and_never_block_the_runtime() {
    if ipc_testkit::role().is_some() {
        // Each round: wait for the parent's go (which only a runtime that is not blocked can
        // post), then post a unit of each kind.
        let go = NamedSemaphore::open(&env(NAME_ENV)).unwrap();
        let named = NamedSemaphore::open(&env(SLOTS_ENV)).unwrap();
        let efd = EventSemaphore::from(stdin_fd());
        let set = SemSet::open_id(env(ID_ENV).parse().unwrap()).unwrap();
        let mutex = NamedMutex::open(&format!("{}m", env(SLOTS_ENV))).unwrap();
        let back = NamedSemaphore::open(&format!("{}b", env(SLOTS_ENV))).unwrap();
        for _ in 0..20 {
            go.wait_timeout(LIMIT).unwrap();
            named.post().unwrap();
            go.wait_timeout(LIMIT).unwrap();
            efd.post().unwrap();
            go.wait_timeout(LIMIT).unwrap();
            set.apply(&[SemOp::post(0)]).unwrap();
            // The mutex: hold it until the parent's lock waits, then let it go.
            let g = mutex.lock_timeout(LIMIT).unwrap().recover().unwrap();
            back.post().unwrap();
            go.wait_timeout(LIMIT).unwrap();
            drop(g);
        }
        return;
    }
    let _wd = Watchdog::new("wake-ups", Duration::from_secs(120));
    let (go_name, name) = (
        ipc_testkit::posix_name("tgo"),
        ipc_testkit::posix_name("twk"),
    );
    let go = NamedSemaphore::create(&go_name, 0).unwrap();
    let named = AsyncSemaphore::new(NamedSemaphore::create(&name, 0).unwrap());
    let efd = EventSemaphore::new(0).unwrap();
    let set = AsyncSemSet::new(new_set(&[0]));
    let mutex = AsyncMutex::new(NamedMutex::create(&format!("{name}m")).unwrap());
    let back = AsyncSemaphore::new(NamedSemaphore::create(&format!("{name}b"), 0).unwrap());
    let mut cmd = ipc_testkit::child(
        &test_path!(async_waits_wake_when_another_process_posts_and_never_block_the_runtime),
        "poster",
    );
    cmd.env(NAME_ENV, &go_name)
        .env(SLOTS_ENV, &name)
        .env(ID_ENV, set.get_ref().id().to_string())
        .stdin(Stdio::from(OwnedFd::from(efd.try_clone().unwrap())));
    let child = Proc::spawn(&mut cmd).unwrap();
    current_thread().block_on(async {
        let efd = AsyncEventSemaphore::new(efd).unwrap();
        for _ in 0..20 {
            // `join!` polls the wait first (it sleeps), then posts the go: if the wait blocked
            // the thread, the go would never be posted and the peer never post.
            let (r, ()) =
                ::tokio::join!(bounded("named", named.wait()), async { go.post().unwrap() });
            r.unwrap();
            let (r, ()) =
                ::tokio::join!(bounded("eventfd", efd.wait()), async { go.post().unwrap() });
            r.unwrap();
            let (r, ()) = ::tokio::join!(bounded("sysv", set.apply(&[SemOp::wait(0)])), async {
                go.post().unwrap()
            });
            r.unwrap();
            // The peer holds the mutex, says so, then waits for our go to let it go.
            bounded("held", back.wait()).await.unwrap();
            let (r, ()) =
                ::tokio::join!(bounded("mutex", mutex.lock()), async { go.post().unwrap() });
            let guard = r.unwrap();
            assert!(!guard.is_owner_died());
            drop(guard);
        }
    });
    child.expect_success(LIMIT);
    assert_eq!(named.value().unwrap(), 0);
    assert_eq!(set.get_ref().values().unwrap(), [0]);
}

// ---------------------------------------------------------------------------------------------
// Robust mutexes

const INCREMENTS: u64 = 200;

/// Increments the shared counter under `lock` by a load and a store with a yield between
/// (without mutual exclusion, updates are lost).
async fn increment(r: &Region) {
    let v = r.counter.load(Ordering::SeqCst);
    ::tokio::task::yield_now().await;
    r.counter.store(v + 1, Ordering::SeqCst);
}

#[test]
fn cancelled_async_locks_keep_mutual_exclusion_across_processes() {
    if ipc_testkit::role().is_some() {
        let shm = Shared::from_env();
        let m = NamedMutex::open(&env(NAME_ENV)).unwrap();
        for _ in 0..INCREMENTS {
            let g = m.lock_timeout(LIMIT).unwrap().recover().unwrap();
            let v = shm.region().counter.load(Ordering::SeqCst);
            std::thread::yield_now();
            shm.region().counter.store(v + 1, Ordering::SeqCst);
            drop(g);
        }
        return;
    }
    let _wd = Watchdog::new("mutex counter", Duration::from_secs(120));
    let shm = Arc::new(Shared::create());
    let name = ipc_testkit::posix_name("tmx");
    let m = Arc::new(AsyncMutex::new(NamedMutex::create(&name).unwrap()));
    let mut cmd = shm.child(
        &test_path!(cancelled_async_locks_keep_mutual_exclusion_across_processes),
        "incrementer",
    );
    cmd.env(NAME_ENV, &name);
    let child = Proc::spawn(&mut cmd).unwrap();
    let cancelled = multi_thread().block_on(async {
        let mut tasks = ::tokio::task::JoinSet::new();
        for t in 0..4u64 {
            let (m, shm) = (m.clone(), shm.clone());
            tasks.spawn(async move {
                let mut rng = SplitMix64::new(t);
                let mut cancelled = [0u64; 3];
                for _ in 0..INCREMENTS / 4 {
                    let guard = loop {
                        match rng.range(0, 3) {
                            0 => {
                                let f = pin!(m.lock());
                                match poll_once(f, Waker::noop()) {
                                    Poll::Ready(r) => break r.unwrap(),
                                    Poll::Pending => cancelled[0] += 1,
                                }
                            }
                            1 => {
                                ::tokio::select! {
                                    biased;
                                    r = m.lock() => break r.unwrap(),
                                    () = ::tokio::task::yield_now() => cancelled[1] += 1,
                                }
                            }
                            2 => {
                                let d = Duration::from_micros(rng.range(1, 300));
                                match ::tokio::time::timeout(d, m.lock()).await {
                                    Ok(r) => break r.unwrap(),
                                    Err(_) => cancelled[2] += 1,
                                }
                            }
                            _ => break bounded("lock", m.lock()).await.unwrap(),
                        }
                    };
                    let guard = guard.recover().unwrap();
                    // Held across awaits, on whichever worker thread the task runs.
                    increment(shm.region()).await;
                    drop(guard);
                }
                cancelled
            });
        }
        let mut total = [0u64; 3];
        while let Some(r) = bounded("tasks", tasks.join_next()).await {
            for (t, c) in total.iter_mut().zip(r.unwrap()) {
                *t += c;
            }
        }
        total
    });
    child.expect_success(LIMIT);
    eprintln!("mutex: cancelled locks (polled once, lost a select, timed out): {cancelled:?}");
    assert!(cancelled.iter().sum::<u64>() > 0);
    assert_eq!(shm.region().counter.load(Ordering::SeqCst), 2 * INCREMENTS);
    // No lock was left behind by a cancelled future.
    let g = m.get_ref().try_lock().expect("free").recover().unwrap();
    drop(g);
}

/// A holder that dies holding the mutex named in `NAME_ENV` (forgets its guard, says so, waits
/// to be killed).
fn doomed_holder() -> ! {
    let shm = Shared::from_env();
    let m = NamedMutex::open(&env(NAME_ENV)).unwrap();
    let g = m.lock_timeout(LIMIT).unwrap().recover().unwrap();
    std::mem::forget(g);
    shm.region().held.store(1, Ordering::SeqCst);
    hold_forever();
}

#[test]
fn an_async_lock_reports_a_killed_holder_and_the_mutex_recovers() {
    if ipc_testkit::role().is_some() {
        doomed_holder();
    }
    let _wd = Watchdog::new("async owner died", Duration::from_secs(60));
    let shm = Shared::create();
    let name = ipc_testkit::posix_name("tod");
    let m = AsyncMutex::new(NamedMutex::create(&name).unwrap());
    let mut cmd = shm.child(
        &test_path!(an_async_lock_reports_a_killed_holder_and_the_mutex_recovers),
        "holder",
    );
    cmd.env(NAME_ENV, &name);
    let mut holder = Proc::spawn(&mut cmd).unwrap();
    spin_until(|| shm.region().held.load(Ordering::SeqCst) == 1);
    current_thread().block_on(async {
        assert!(matches!(m.try_lock(), Err(Error::WouldBlock)));
        let mut lock = pin!(m.lock());
        // Pending: held by the live holder.
        ::tokio::select! {
            biased;
            _ = &mut lock => panic!("locked while held"),
            () = ::tokio::task::yield_now() => {}
        }
        // The kernel hands the lock of a thread that dies to the next locker.
        holder.kill().unwrap();
        let locked = bounded("owner died", lock).await.unwrap();
        let AsyncLocked::OwnerDied(repair) = locked else {
            panic!("not reported as owner died")
        };
        // Repair, then consistent: a normal mutex again.
        let g = repair.make_consistent().unwrap();
        drop(g);
        let again = bounded("again", m.lock()).await.unwrap();
        assert!(!again.is_owner_died());
    });
    assert!(!holder.wait_timeout(LIMIT).unwrap().success());
}

#[test]
fn a_lock_dropped_after_its_wake_up_leaves_a_dead_holder_s_mutex_owner_died() {
    if ipc_testkit::role().is_some() {
        doomed_holder();
    }
    let _wd = Watchdog::new("dropped lock, owner died", Duration::from_secs(60));
    let shm = Shared::create();
    let name = ipc_testkit::posix_name("tdl");
    let m = AsyncMutex::new(NamedMutex::create(&name).unwrap());
    let mut cmd = shm.child(
        &test_path!(a_lock_dropped_after_its_wake_up_leaves_a_dead_holder_s_mutex_owner_died),
        "holder",
    );
    cmd.env(NAME_ENV, &name);
    let mut holder = Proc::spawn(&mut cmd).unwrap();
    spin_until(|| shm.region().held.load(Ordering::SeqCst) == 1);
    let (flag, waker) = Flag::new();
    let mut lock = Box::pin(m.lock());
    assert!(poll_once(lock.as_mut(), &waker).is_pending());
    holder.kill().unwrap();
    assert!(!holder.wait_timeout(LIMIT).unwrap().success());
    // The waiter thread saw the lock released by the kernel and woke the future...
    assert!(flag.wait(LIMIT), "the lock future was not woken");
    // ...which is dropped without running: it took nothing, so the next locker (here a
    // blocking lock of this thread) is still told that the owner died.
    drop(lock);
    let locked = m.get_ref().lock_timeout(LIMIT).unwrap();
    let Locked::OwnerDied(repair) = locked else {
        panic!("the owner-died state was lost")
    };
    drop(repair.make_consistent().unwrap());
}

#[test]
fn async_locks_of_an_unrecoverable_mutex_fail_and_a_dead_thread_s_lock_is_owner_died() {
    let _wd = Watchdog::new("unrecoverable", Duration::from_secs(60));
    let m = Arc::new(AsyncMutex::new(SharedMutex::new().unwrap()));
    // A thread that ends holding the lock: the kernel marks it owner died.
    let m2 = m.clone();
    std::thread::spawn(move || std::mem::forget(m2.get_ref().lock().unwrap()))
        .join()
        .unwrap();
    current_thread().block_on(async {
        let locked = bounded("lock", m.lock()).await.unwrap();
        assert!(locked.is_owner_died());
        // Unlocked without being made consistent: unrecoverable, as POSIX says.
        drop(locked);
        assert!(matches!(
            bounded("lock", m.lock()).await,
            Err(Error::NotRecoverable)
        ));
        assert!(matches!(m.try_lock(), Err(Error::NotRecoverable)));
    });
}

// ---------------------------------------------------------------------------------------------
// System V errors

#[test]
fn an_async_system_v_wait_reports_a_removed_set_and_bad_indices_at_once() {
    let _wd = Watchdog::new("sysv removed", Duration::from_secs(60));
    let owner = new_set(&[0]);
    let set = AsyncSemSet::new(SemSet::open_id(owner.id()).unwrap());
    current_thread().block_on(async {
        assert!(matches!(
            set.apply(&[SemOp::wait(1)]).await,
            Err(Error::IndexOutOfRange { index: 1, len: 1 })
        ));
        let (r, removed) =
            ::tokio::join!(bounded("removed", set.apply(&[SemOp::wait(0)])), async {
                owner.remove()
            });
        removed.unwrap();
        assert!(matches!(r, Err(Error::Removed { .. })), "{r:?}");
    });
}

// ---------------------------------------------------------------------------------------------
// Many tasks on one semaphore

/// Eight tasks on a multi-threaded runtime wait on one shared handle `$sem` until `$units`
/// were taken (the last one tells the others, whose waits are then dropped); `$go` starts the
/// poster once they wait. Returns how many each took.
macro_rules! share {
    ($sem:expr, $units:expr, $go:expr) => {{
        let taken = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let all = Arc::new(::tokio::sync::Notify::new());
        let mut tasks = ::tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (sem, taken, all) = ($sem.clone(), taken.clone(), all.clone());
            let started = started.clone();
            tasks.spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                let mut mine = 0u64;
                let stop = all.notified();
                let mut stop = pin!(stop);
                loop {
                    if taken.load(Ordering::SeqCst) >= $units {
                        return mine;
                    }
                    ::tokio::select! {
                        r = sem.wait() => {
                            r.unwrap();
                            mine += 1;
                            if taken.fetch_add(1, Ordering::SeqCst) + 1 == $units {
                                all.notify_waiters();
                            }
                        }
                        () = &mut stop => return mine,
                    }
                }
            });
        }
        while started.load(Ordering::SeqCst) < 8 {
            ::tokio::task::yield_now().await;
        }
        $go;
        let mut each = Vec::new();
        while let Some(r) = bounded("tasks", tasks.join_next()).await {
            each.push(r.unwrap());
        }
        assert_eq!(taken.load(Ordering::SeqCst), $units);
        each
    }};
}

#[test]
fn many_tasks_share_one_semaphore_and_take_exactly_the_units_posted() {
    const UNITS: u64 = 400;
    if ipc_testkit::role().is_some() {
        // Bursts of units: first on the named semaphore, then on the eventfd.
        let s = NamedSemaphore::open(&env(NAME_ENV)).unwrap();
        let go = NamedSemaphore::open(&env(SLOTS_ENV)).unwrap();
        let e = EventSemaphore::from(stdin_fd());
        let mut rng = SplitMix64::new(9);
        let posts: [&dyn Fn(); 2] = [&|| s.post().unwrap(), &|| e.post().unwrap()];
        for post in posts {
            go.wait_timeout(LIMIT).unwrap();
            let mut posted = 0;
            while posted < UNITS {
                for _ in 0..rng.range(1, 8).min(UNITS - posted) {
                    post();
                    posted += 1;
                }
                std::thread::yield_now();
            }
        }
        return;
    }
    let _wd = Watchdog::new("many tasks", Duration::from_secs(120));
    let name = ipc_testkit::posix_name("tmt");
    let sem = Arc::new(AsyncSemaphore::new(
        NamedSemaphore::create(&name, 0).unwrap(),
    ));
    let efd = EventSemaphore::new(0).unwrap();
    let go_name = ipc_testkit::posix_name("tmg");
    let go = NamedSemaphore::create(&go_name, 0).unwrap();
    let mut cmd = ipc_testkit::child(
        &test_path!(many_tasks_share_one_semaphore_and_take_exactly_the_units_posted),
        "poster",
    );
    cmd.env(NAME_ENV, &name)
        .env(SLOTS_ENV, &go_name)
        .stdin(Stdio::from(OwnedFd::from(efd.try_clone().unwrap())));
    let child = Proc::spawn(&mut cmd).unwrap();
    multi_thread().block_on(async {
        let each = share!(sem, UNITS, go.post().unwrap());
        eprintln!("units each task took, named semaphore: {each:?}");
        let efd = Arc::new(AsyncEventSemaphore::new(efd).unwrap());
        let each = share!(efd, UNITS, go.post().unwrap());
        eprintln!("units each task took, eventfd: {each:?}");
        assert!(matches!(efd.try_wait(), Err(Error::WouldBlock)));
    });
    child.expect_success(LIMIT);
    assert!(matches!(sem.try_wait(), Err(Error::WouldBlock)));
}

// ---------------------------------------------------------------------------------------------
// A wake-up used up by the waiter thread is passed on

/// The threads of process `pid`, by `/proc`.
fn tasks_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The state letter of thread `tid` of `pid` (`S`: sleeping).
fn thread_state(pid: u32, tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether every thread of `pid` sleeps.
fn all_asleep(pid: u32) -> bool {
    let tasks = tasks_of(pid);
    !tasks.is_empty() && tasks.iter().all(|&t| thread_state(pid, t) == Some('S'))
}

/// The thread id of this process's waiter thread, once it exists.
fn waiter_thread() -> Option<u32> {
    let me = std::process::id();
    tasks_of(me).into_iter().find(|t| {
        std::fs::read_to_string(format!("/proc/{me}/task/{t}/comm"))
            .is_ok_and(|c| c.trim() == "ipc-sem-waiter")
    })
}

/// The waiter thread's voluntary context switches so far (each one a sleep).
fn waiter_sleeps() -> u64 {
    let me = std::process::id();
    let tid = waiter_thread().expect("the waiter thread");
    let status = std::fs::read_to_string(format!("/proc/{me}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Waits (bounded by the caller's watchdog) until the waiter thread has caught up: asleep, and
/// not woken during 20 ms. (A measurement window starts then; nothing is synchronised by it.)
fn settle() {
    let me = std::process::id();
    loop {
        let a = waiter_sleeps();
        std::thread::sleep(Duration::from_millis(20));
        let asleep = waiter_thread().is_some_and(|t| thread_state(me, t) == Some('S'));
        if asleep && waiter_sleeps() == a {
            return;
        }
    }
}

/// A read-only mapping of a file of `/dev/shm`, to look at glibc's words in it.
struct Peek {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl Peek {
    fn new(path: &str) -> Peek {
        let fd =
            rustix::fs::open(path, rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
        let len = rustix::fs::fstat(&fd).unwrap().st_size as usize;
        // SAFETY: a new read-only shared mapping at an address the kernel picks, of the file's
        // length.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .unwrap();
        Peek { ptr, len }
    }

    /// The aligned 32-bit word at `offset`, read atomically.
    fn word(&self, offset: usize) -> u32 {
        assert!(offset + 4 <= self.len && offset & 3 == 0);
        let at = self.ptr.cast::<u8>().wrapping_add(offset);
        // SAFETY: in bounds and aligned (checked), mapped while `self` lives; others write it
        // only atomically.
        unsafe { &*at.cast::<std::sync::atomic::AtomicU32>() }.load(Ordering::SeqCst)
    }
}

impl Drop for Peek {
    fn drop(&mut self) {
        // SAFETY: our mapping; no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// Waits (bounded by the caller's watchdog) for `cond`, yielding.
fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One round: a blocking waiter in another process sleeps behind the waiter thread on the same
/// word; `release` posts or unlocks (the kernel wakes the first sleeper: the waiter thread);
/// the woken future is dropped without running. The blocking waiter must still get it.
/// Returns whether the waiter thread was the one woken.
///
/// With `complete`, the woken future runs to the end instead (for a mutex: it locks and
/// unlocks); the blocking waiter must then get the mutex from that unlock.
fn pass_on_round(
    sleeper: &mut std::process::Command,
    ready: impl Fn() -> bool,
    future: Pin<Box<dyn Future<Output = bool> + '_>>,
    release: impl FnOnce(),
    complete: bool,
) -> bool {
    let mut future = future;
    let (flag, waker) = Flag::new();
    assert!(poll_once(future.as_mut(), &waker).is_pending());
    let me = std::process::id();
    // The waiter thread sleeps on the word first...
    until(|| ready() && waiter_thread().is_some_and(|t| thread_state(me, t) == Some('S')));
    // ...then the blocking waiter behind it.
    let mut child = Proc::spawn(sleeper).unwrap();
    let pid = child.id();
    until(|| all_asleep(pid));
    release();
    if complete {
        assert!(flag.wait(LIMIT), "the future was never woken");
    } else {
        until(|| flag.is_woken() || child.inner().try_wait().unwrap().is_some());
    }
    let woke_ours = flag.is_woken() && child.inner().try_wait().unwrap().is_none();
    if complete {
        assert_eq!(poll_once(future.as_mut(), &waker), Poll::Ready(true));
    }
    drop(future);
    child.expect_success(LIMIT);
    woke_ours
}

#[test]
fn a_wait_or_lock_dropped_after_its_wake_up_passes_the_wake_up_on_to_a_sleeping_process() {
    let test = test_path!(
        a_wait_or_lock_dropped_after_its_wake_up_passes_the_wake_up_on_to_a_sleeping_process
    );
    match ipc_testkit::role().as_deref() {
        Some("sleeper-sem") => {
            // Without the wake-up passed on, this times out.
            let s = NamedSemaphore::open(&env(NAME_ENV)).unwrap();
            s.wait_timeout(LIMIT).expect("the post was passed on");
            return;
        }
        Some("sleeper-mutex") => {
            let m = NamedMutex::open(&env(NAME_ENV)).unwrap();
            drop(m.lock_timeout(LIMIT).expect("the unlock was passed on"));
            return;
        }
        Some("solo") => {}
        _ => {
            // In a process of its own: no other test's waits make its waiter thread sleep
            // again (behind the blocking waiter) at the wrong moment.
            let _wd = Watchdog::new("pass on", Duration::from_secs(240));
            Proc::spawn(&mut ipc_testkit::child(&test, "solo"))
                .unwrap()
                .expect_success(Duration::from_secs(200));
            return;
        }
    }
    const ROUNDS: usize = 8;
    let mut ours = [0; 3];
    for _ in 0..ROUNDS {
        let name = ipc_testkit::posix_name("tps");
        let s = NamedSemaphore::create(&name, 0).unwrap();
        let a = AsyncSemaphore::new(NamedSemaphore::open(&name).unwrap());
        let peek = Peek::new(&format!("/dev/shm/sem.{}", &name[1..]));
        let mut sleeper = ipc_testkit::child(&test, "sleeper-sem");
        sleeper.env(NAME_ENV, &name);
        // nwaiters (the high half of glibc's word): the waiter thread, then the sleeper too.
        let woke = pass_on_round(
            &mut sleeper,
            || peek.word(4) == 1,
            Box::pin(async { a.wait().await.is_ok() }),
            || s.post().unwrap(),
            false,
        );
        ours[0] += usize::from(woke);
        assert_eq!(s.value().unwrap(), 0, "the unit went to the sleeper");
        assert_eq!(peek.word(4), 0, "no waiter left registered");

        for complete in [false, true] {
            let mname = ipc_testkit::posix_name("tpm");
            let m = NamedMutex::create(&mname).unwrap();
            let held = m.lock().unwrap().recover().unwrap();
            let am = AsyncMutex::new(NamedMutex::open(&mname).unwrap());
            // The lock word (after the slot's state word and padding) with FUTEX_WAITERS set.
            let peek = Peek::new(&format!("/dev/shm/{}", &mname[1..]));
            let mut sleeper = ipc_testkit::child(&test, "sleeper-mutex");
            sleeper.env(NAME_ENV, &mname);
            let woke = pass_on_round(
                &mut sleeper,
                || peek.word(8) & 0x8000_0000 != 0,
                Box::pin(async { am.lock().await.map(drop).is_ok() }),
                || drop(held),
                complete,
            );
            ours[1 + usize::from(complete)] += usize::from(woke);
            drop(m.try_lock().expect("free again").recover().unwrap());
        }
    }
    eprintln!(
        "wake-ups that went to the waiter thread (semaphore; mutex, dropped; mutex, locked): \
         {ours:?} of {ROUNDS}"
    );
    assert!(
        ours.iter().all(|&n| n > 0),
        "the waiter thread was never the one woken: {ours:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The waiter thread's cost: one thread, asleep

#[test]
fn one_waiter_thread_serves_every_wait_of_a_process_and_sleeps_while_they_pend() {
    if ipc_testkit::role().is_none() {
        let _wd = Watchdog::new("one thread", Duration::from_secs(120));
        Proc::spawn(&mut ipc_testkit::child(
            &test_path!(
                one_waiter_thread_serves_every_wait_of_a_process_and_sleeps_while_they_pend
            ),
            "solo",
        ))
        .unwrap()
        .expect_success(Duration::from_secs(100));
        return;
    }
    let threads = || tasks_of(std::process::id()).len();
    let rt = current_thread();
    let before = threads();
    // More semaphores than one futex_waitv takes (128 words).
    let sems: Vec<_> = (0..200)
        .map(|_| Arc::new(AsyncSemaphore::new(SharedSemaphore::new(0).unwrap())))
        .collect();
    let mutexes: Vec<_> = (0..10)
        .map(|_| Arc::new(AsyncMutex::new(SharedMutex::new().unwrap())))
        .collect();
    let held: Vec<_> = mutexes
        .iter()
        .map(|m| m.get_ref().lock().unwrap().recover().unwrap())
        .collect();
    let sets: Vec<_> = (0..5)
        .map(|_| Arc::new(AsyncSemSet::new(new_set(&[0]))))
        .collect();
    let started = Arc::new(AtomicUsize::new(0));
    let total = sems.len() + mutexes.len() + sets.len();
    rt.block_on(async {
        let mut tasks = ::tokio::task::JoinSet::new();
        for s in &sems {
            let (s, started) = (s.clone(), started.clone());
            tasks.spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                s.wait().await
            });
        }
        for m in &mutexes {
            let (m, started) = (m.clone(), started.clone());
            tasks.spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                m.lock().await.map(drop)
            });
        }
        for q in &sets {
            let (q, started) = (q.clone(), started.clone());
            tasks.spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                q.apply(&[SemOp::wait(0)]).await
            });
        }
        // Each task's first poll (which registers its wait) is done when it counted itself.
        while started.load(Ordering::SeqCst) < total {
            ::tokio::task::yield_now().await;
        }
        assert_eq!(threads(), before + 1, "one waiter thread for {total} waits");
        // More words than one futex_waitv takes: a look every millisecond, no more (and a few
        // more while it still takes in the registrations).
        let (s0, t0) = (waiter_sleeps(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(100));
        let (futex_sleeps, ms) = (waiter_sleeps() - s0, t0.elapsed().as_millis() as u64);
        eprintln!("waiter thread: {futex_sleeps} sleeps in {ms} ms with 210 futex waits pending");
        assert!(
            futex_sleeps <= ms + ms / 5 + 10,
            "{futex_sleeps} in {ms} ms"
        );
        // Post every semaphore, free every mutex, post every set: all complete.
        for s in &sems {
            s.post().unwrap();
        }
        drop(held);
        for q in &sets {
            q.get_ref().apply(&[SemOp::post(0)]).unwrap();
        }
        while let Some(r) = bounded("every wait", tasks.join_next()).await {
            r.unwrap().unwrap();
        }
        assert_eq!(threads(), before + 1);
    });
    // With only futex waits pending (no System V set), the thread does not wake at all.
    rt.block_on(async {
        let mut tasks = ::tokio::task::JoinSet::new();
        for s in sems.iter().take(50) {
            let s = s.clone();
            tasks.spawn(async move { s.wait().await });
        }
        ::tokio::task::yield_now().await;
        ::tokio::task::yield_now().await;
        settle();
        let (s0, t0) = (waiter_sleeps(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(300));
        let (idle, ms) = (waiter_sleeps() - s0, t0.elapsed().as_millis());
        eprintln!("waiter thread: {idle} sleeps in {ms} ms with 50 semaphore waits pending");
        assert!(
            idle <= 2,
            "the waiter thread woke {idle} times while nothing changed"
        );
        // And one System V wait: looks on the backoff schedule, at most every 5 ms in the end.
        let q = AsyncSemSet::new(new_set(&[0]));
        let mut wait = pin!(q.apply(&[SemOp::wait(0)]));
        assert!(poll_once(wait.as_mut(), Waker::noop()).is_pending());
        let (s0, t0) = (waiter_sleeps(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(300));
        let (looks, ms) = (waiter_sleeps() - s0, t0.elapsed().as_millis() as u64);
        eprintln!("waiter thread: {looks} sleeps in {ms} ms with one System V wait pending");
        // 50 µs, 100, 200, ... 3.2 ms, then every 5 ms.
        assert!(looks <= ms / 5 + 20, "{looks} looks in {ms} ms");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    });
}

// ---------------------------------------------------------------------------------------------
// Without futex_waitv (Linux before 5.16)

#[cfg(target_arch = "x86_64")]
#[test]
fn waits_complete_without_futex_waitv() {
    if ipc_testkit::role().is_none() {
        let _wd = Watchdog::new("no futex_waitv", Duration::from_secs(120));
        Proc::spawn(&mut ipc_testkit::child(
            &test_path!(waits_complete_without_futex_waitv),
            "no-waitv",
        ))
        .unwrap()
        .expect_success(Duration::from_secs(100));
        return;
    }
    // As a kernel before 5.16: futex_waitv does not exist. (Before the waiter thread starts,
    // which inherits the filter.)
    crate::fallback::install(&[crate::fallback::Rule {
        nr: libc::SYS_futex_waitv as u32,
        arg: 1,
        mask: !0,
        errno: libc::ENOSYS as u32,
    }]);
    let w = rustix::thread::futex::Wait::new();
    assert_eq!(
        rustix::thread::futex::waitv(
            &[w],
            rustix::thread::futex::WaitvFlags::empty(),
            None,
            rustix::time::ClockId::Monotonic
        ),
        Err(rustix::io::Errno::NOSYS)
    );
    let sem = AsyncSemaphore::new(SharedSemaphore::new(0).unwrap());
    let m = AsyncMutex::new(SharedMutex::new().unwrap());
    current_thread().block_on(async {
        for _ in 0..20 {
            let (r, ()) = ::tokio::join!(bounded("sem", sem.wait()), async {
                ::tokio::task::yield_now().await;
                sem.post().unwrap()
            });
            r.unwrap();
            let held = m.get_ref().lock().unwrap().recover().unwrap();
            let (r, ()) = ::tokio::join!(bounded("mutex", m.lock()), async {
                ::tokio::task::yield_now().await;
                drop(held)
            });
            drop(r.unwrap());
        }
    });
}

// ---------------------------------------------------------------------------------------------
// After fork

#[test]
fn a_forked_child_drops_async_handles_futures_and_guards_and_returns() {
    let _wd = Watchdog::new("fork drops", Duration::from_secs(60));
    let sem = AsyncSemaphore::new(SharedSemaphore::new(0).unwrap());
    let m = AsyncMutex::new(SharedMutex::new().unwrap());
    let set = AsyncSemSet::new(new_set(&[0]));
    let rt = current_thread();
    let guard = rt.block_on(bounded("lock", m.lock())).unwrap();
    let mut wait = Box::pin(sem.wait());
    let mut lock = Box::pin(m.lock());
    let mut apply = Box::pin(set.apply(&[SemOp::wait(0)]));
    let (_, waker) = Flag::new();
    assert!(poll_once(wait.as_mut(), &waker).is_pending());
    assert!(poll_once(lock.as_mut(), &waker).is_pending());
    assert!(poll_once(apply.as_mut(), &waker).is_pending());
    // SAFETY: the child only drops what it inherited (documented as fine after fork: no lock
    // is taken, nothing of the parent's waits is touched; memory is freed, and glibc resets
    // malloc's locks in the child) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        drop((wait, lock, apply, guard));
        drop((sem, m, set));
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(0) };
    }
    let status = crate::fork::wait_bounded(pid, LIMIT).expect("the child returned");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}"
    );
    // The parent's futures and lock are untouched.
    rt.block_on(async {
        sem.post().unwrap();
        bounded("wait", wait).await.unwrap();
        drop(guard);
        drop(bounded("lock", lock).await.unwrap());
        set.get_ref().apply(&[SemOp::post(0)]).unwrap();
        bounded("apply", apply).await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Errors and types

#[test]
fn an_async_event_semaphore_outside_a_runtime_is_an_error_that_returns_the_semaphore() {
    let sem = EventSemaphore::new(1).unwrap();
    let fd = sem.as_raw_fd();
    let e = AsyncEventSemaphore::new(sem).unwrap_err();
    assert!(e.to_string().contains("tokio runtime"), "{e}");
    assert!(matches!(e.error(), Error::Io(_)));
    let sem = e.into_inner();
    assert_eq!(sem.as_raw_fd(), fd);
    sem.try_wait().unwrap();
}

#[test]
fn async_handles_futures_and_guards_are_send_and_sync_where_they_should_be() {
    fn send<T: Send>(_: &T) {}
    fn sync<T: Sync>(_: &T) {}
    let sem = AsyncSemaphore::new(SharedSemaphore::new(1).unwrap());
    let m = AsyncMutex::new(SharedMutex::new().unwrap());
    let set = AsyncSemSet::new(new_set(&[1]));
    let rt = current_thread();
    rt.block_on(async {
        let efd = AsyncEventSemaphore::new(EventSemaphore::new(1).unwrap()).unwrap();
        send(&efd);
        sync(&efd);
        send(&efd.wait());
        let w = sem.wait();
        send(&w);
        drop(w);
        let a = sem.acquire();
        send(&a);
        drop(a);
        send(&m.lock());
        send(&set.apply(&[SemOp::wait(0)]));
        let g = m.lock().await.unwrap().recover().unwrap();
        send(&g);
        sync(&g);
        let dbg = format!("{sem:?} {m:?} {set:?} {efd:?} {g:?}");
        assert!(
            dbg.contains("AsyncSemaphore") && dbg.contains("AsyncMutexGuard"),
            "{dbg}"
        );
    });
    send(&sem);
    sync(&sem);
    send(&m);
    sync(&m);
    send(&set);
    sync(&set);
}
