//! The init-once protocol of in-place semaphores and robust mutexes: exactly one initialiser
//! wins and is told so, the others are told "already initialised", an early opener waits
//! (bounded) for the slot to become ready, and a slot whose initialiser died half-way is
//! reported, never used.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ipc_sem::{Error, InPlaceSemaphore, Opened, RawRobustMutex, RawSemaphore, RobustMutex};
use ipc_testkit::{Proc, Watchdog, test_path};
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};

use crate::lifetime::{hear, say, until_zombie};
use crate::shared::{Shared, ready_and_wait_for_go, spin_until};

const RACERS: u64 = 8;

fn race_child(shm: &Shared) {
    let r = shm.region();
    ready_and_wait_for_go(r);
    // Every slot below: zero-filled shared segment, aligned slots inside `Region`, mapped until
    // the end of this function, written only through ipc-sem.
    // SAFETY: as just said.
    let first = unsafe { InPlaceSemaphore::init(shm.sem_slot_n(0), 1) };
    match first {
        Ok(_) => r.created[0].fetch_add(1, Ordering::SeqCst),
        Err(Error::AlreadyInitialized { .. }) => r.existing[0].fetch_add(1, Ordering::SeqCst),
        Err(e) => panic!("init: {e}"),
    };
    // SAFETY: as above.
    let (sem, how) =
        unsafe { InPlaceSemaphore::init_or_attach(shm.sem_slot_n(1), 1, Duration::from_secs(30)) }
            .unwrap();
    let counter = if how == Opened::Created {
        &r.created[1]
    } else {
        &r.existing[1]
    };
    counter.fetch_add(1, Ordering::SeqCst);
    drop(sem.acquire_timeout(Duration::from_secs(30)).unwrap());
    // SAFETY: as above.
    match unsafe { RobustMutex::init(shm.mutex_slot_n(0)) } {
        Ok(_) => r.created[2].fetch_add(1, Ordering::SeqCst),
        Err(Error::AlreadyInitialized { .. }) => r.existing[2].fetch_add(1, Ordering::SeqCst),
        Err(e) => panic!("mutex init: {e}"),
    };
    // SAFETY: as above.
    let (m, how) =
        unsafe { RobustMutex::init_or_attach(shm.mutex_slot_n(1), Duration::from_secs(30)) }
            .unwrap();
    let counter = if how == Opened::Created {
        &r.created[3]
    } else {
        &r.existing[3]
    };
    counter.fetch_add(1, Ordering::SeqCst);
    drop(m.lock_timeout(Duration::from_secs(30)).unwrap());
}

#[test]
fn processes_racing_to_initialise_a_slot_make_exactly_one_initialiser() {
    if ipc_testkit::role().is_some() {
        race_child(&Shared::from_env());
        return;
    }
    let _wd = Watchdog::new("init race", Duration::from_secs(120));
    let shm = Shared::create();
    let test = test_path!(processes_racing_to_initialise_a_slot_make_exactly_one_initialiser);
    let kids: Vec<Proc> = (0..RACERS)
        .map(|_| Proc::spawn(&mut shm.child(&test, "racer")).unwrap())
        .collect();
    let r = shm.region();
    spin_until(|| r.ready.load(Ordering::SeqCst) == RACERS);
    r.go.store(1, Ordering::SeqCst);
    for k in kids {
        k.expect_success(Duration::from_secs(100));
    }
    for i in 0..4 {
        let (c, e) = (
            r.created[i].load(Ordering::SeqCst),
            r.existing[i].load(Ordering::SeqCst),
        );
        assert_eq!(
            (c, e),
            (1, RACERS - 1),
            "slot {i}: created {c}, existing {e}"
        );
    }
    // SAFETY: initialised by a racer; the segment outlives the handles.
    let sem = unsafe { InPlaceSemaphore::attach(shm.sem_slot_n(1)) }.unwrap();
    assert_eq!(sem.value().unwrap(), 1, "every racer's unit came back");
    // SAFETY: as above.
    let m = unsafe { RobustMutex::attach(shm.mutex_slot_n(1)) }.unwrap();
    assert!(!m.try_lock().unwrap().is_owner_died());
}

/// The first entry of /proc/PID/task/TID/syscall: the system call the thread is blocked in and
/// its first argument.
fn blocked_in(pid: u32, tid: u64) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let mut f = s.split_whitespace();
    let nr = f.next()?.parse().ok()?;
    let arg = u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
    Some((nr, arg))
}

#[test]
fn an_early_opener_waits_until_the_slot_is_ready() {
    if ipc_testkit::role().is_some() {
        let shm = Shared::from_env();
        let r = shm.region();
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u64;
        // The semaphore first, then the mutex; each time the parent initialises only once it
        // sees this thread asleep on the slot's state word.
        r.waiter_addr
            .store(shm.sem_slot().as_ptr() as u64, Ordering::SeqCst);
        r.waiter_tid.store(tid, Ordering::SeqCst);
        // SAFETY: zero-filled shared segment, aligned slot, mapped until the end.
        let sem =
            unsafe { InPlaceSemaphore::attach_timeout(shm.sem_slot(), Duration::from_secs(30)) }
                .expect("attached once the parent initialised it");
        assert_eq!(sem.value().unwrap(), 3);
        r.waiter_tid.store(0, Ordering::SeqCst);
        r.waiter_addr
            .store(shm.mutex_slot().as_ptr() as u64, Ordering::SeqCst);
        r.waiter_tid.store(tid, Ordering::SeqCst);
        // SAFETY: as above.
        let m = unsafe { RobustMutex::attach_timeout(shm.mutex_slot(), Duration::MAX) }
            .expect("attached once the parent initialised it");
        drop(m.lock().unwrap());
        return;
    }
    let _wd = Watchdog::new("early opener", Duration::from_secs(60));
    let shm = Shared::create();
    let r = shm.region();
    let test = test_path!(an_early_opener_waits_until_the_slot_is_ready);
    let child = Proc::spawn(&mut shm.child(&test, "opener")).unwrap();
    // Waits until the child's thread sleeps in futex(2) on the state word at `addr` (in the
    // child's mapping).
    let asleep = |which: &str| {
        spin_until(|| {
            let (tid, addr) = (
                r.waiter_tid.load(Ordering::SeqCst),
                r.waiter_addr.load(Ordering::SeqCst),
            );
            tid != 0 && blocked_in(child.id(), tid) == Some((libc::SYS_futex as u64, addr))
        });
        eprintln!("the opener sleeps on the {which} slot's state word");
    };
    asleep("semaphore");
    // SAFETY: the segment is zeroed and outlives every handle; the slot is aligned.
    let sem = unsafe { InPlaceSemaphore::init(shm.sem_slot(), 3) }.unwrap();
    asleep("mutex");
    // SAFETY: as above.
    let m = unsafe { RobustMutex::init(shm.mutex_slot()) }.unwrap();
    child.expect_success(Duration::from_secs(30));
    assert_eq!(sem.value().unwrap(), 3);
    drop(m.try_lock().unwrap());
}

#[test]
fn attaching_to_a_slot_nobody_initialises_is_not_initialized_at_the_deadline() {
    let mut slot = Box::new(RawSemaphore::new());
    let p = NonNull::from(&mut *slot);
    // SAFETY: a zeroed slot in memory that outlives the calls.
    let r = unsafe { InPlaceSemaphore::attach(p) };
    assert!(matches!(r, Err(Error::NotInitialized { .. })), "{r:?}");
    let t = std::time::Instant::now();
    // SAFETY: as above.
    let r = unsafe { InPlaceSemaphore::attach_timeout(p, Duration::from_millis(100)) };
    assert!(matches!(r, Err(Error::NotInitialized { .. })), "{r:?}");
    assert!(t.elapsed() >= Duration::from_millis(100));
    let mut m = Box::new(RawRobustMutex::new());
    // SAFETY: as above.
    let r = unsafe { RobustMutex::attach(NonNull::from(&mut *m)) };
    assert!(matches!(r, Err(Error::NotInitialized { .. })), "{r:?}");
    // Initialised, destroyed, initialised again.
    // SAFETY: as above; `sem` is the only handle when destroyed.
    let sem = unsafe { InPlaceSemaphore::init(p, 2) }.unwrap();
    // SAFETY: nobody else uses it.
    unsafe { sem.destroy() }.unwrap();
    // SAFETY: as above.
    let r = unsafe { InPlaceSemaphore::attach(p) };
    assert!(
        matches!(r, Err(Error::NotInitialized { .. })),
        "destroyed: {r:?}"
    );
    // SAFETY: as above.
    let sem = unsafe { InPlaceSemaphore::init(p, 4) }.unwrap();
    assert_eq!(sem.value().unwrap(), 4);
}

#[test]
fn a_garbage_state_word_is_refused_before_use() {
    for garbage in [1u32, 0xdead_beef, 0x4900_0000 ^ 0x0100_0000, u32::MAX] {
        let mut slot = Box::new(RawSemaphore::new());
        let p = NonNull::from(&mut *slot);
        // SAFETY: the state word is the slot's first 4 bytes (a repr(C) u32); nothing else
        // uses the slot.
        unsafe { p.cast::<u32>().write(garbage) };
        // SAFETY: the slot is valid memory that outlives the calls (its contents are the test).
        let r = unsafe { InPlaceSemaphore::init(p, 1) };
        assert!(
            matches!(r, Err(Error::InvalidObject { .. })),
            "{garbage:#x}: {r:?}"
        );
        // SAFETY: as above.
        let r = unsafe { InPlaceSemaphore::attach_timeout(p, Duration::from_secs(5)) };
        assert!(
            matches!(r, Err(Error::InvalidObject { .. })),
            "{garbage:#x}: {r:?}"
        );
        let mut m = Box::new(RawRobustMutex::new());
        let q = NonNull::from(&mut *m);
        // SAFETY: as above.
        unsafe { q.cast::<u32>().write(garbage) };
        // SAFETY: as above.
        let r = unsafe { RobustMutex::init_or_attach(q, Duration::from_secs(5)) };
        assert!(
            matches!(r, Err(Error::InvalidObject { .. })),
            "{garbage:#x}: {r:?}"
        );
    }
}

static MSG: &[u8] = b"\n@@paused\n";

extern "C" fn paused_mid_init(_: libc::c_int) {
    // SAFETY: write(2) of a static buffer to stdout, and pause(2): both async-signal-safe.
    unsafe { libc::write(1, MSG.as_ptr().cast(), MSG.len()) };
    loop {
        // SAFETY: as above.
        unsafe { libc::pause() };
    }
}

/// Offset of the slot in the two-page memfd: its state word at the end of the first page,
/// its object at the start of the second.
const SLOT_AT: usize = 4096 - 8;

/// Maps the two-page memfd `fd` read-write.
fn map_two_pages(fd: &OwnedFd) -> NonNull<u8> {
    // SAFETY: a new mapping at an address the kernel picks aliases nothing; the memfd has two
    // pages.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            8192,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .unwrap();
    NonNull::new(p.cast()).unwrap()
}

/// The child: begins to initialise a slot whose object lies in a read-only page, so the
/// initialiser faults right after it claimed the slot; the handler says so and pauses there,
/// half-way, until the parent kills it.
fn die_half_way() {
    let fd: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
    let base = map_two_pages(&fd);
    // SAFETY: 4096 is within the two-page mapping.
    let second = unsafe { base.as_ptr().add(4096) };
    // SAFETY: the second page of our own mapping; nothing references it.
    unsafe { rustix::mm::mprotect(second.cast(), 4096, MprotectFlags::READ) }.unwrap();
    // SAFETY: an all-zero sigaction is a valid empty value, filled in below.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = paused_mid_init as *const () as usize;
    // SAFETY: `sa` is valid; the handler is async-signal-safe (process-wide, in this child).
    let rc = unsafe { libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
    // SAFETY: an aligned slot in our shared mapping, which stays until we die.
    let slot = unsafe { base.add(SLOT_AT) };
    let r = match std::env::var("IPC_SEM_TEST_KIND").as_deref() {
        // SAFETY: as above.
        Ok("mutex") => unsafe { RobustMutex::init(slot.cast()) }.map(drop),
        // SAFETY: as above.
        _ => unsafe { InPlaceSemaphore::init(slot.cast(), 1) }.map(drop),
    };
    say(&format!("init returned {r:?}"));
}

#[test]
fn an_initialiser_killed_half_way_is_reported_never_used() {
    if ipc_testkit::role().is_some() {
        die_half_way();
        return;
    }
    let _wd = Watchdog::new("half-made", Duration::from_secs(90));
    let test = test_path!(an_initialiser_killed_half_way_is_reported_never_used);
    for kind in ["sem", "mutex"] {
        let fd = rustix::fs::memfd_create("ipcrs-half", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 8192).unwrap();
        let base = map_two_pages(&fd);
        // SAFETY: inside the mapping, 8-aligned.
        let slot = unsafe { base.add(SLOT_AT) };
        let mut cmd = ipc_testkit::child(&test, "initialiser");
        cmd.env("IPC_SEM_TEST_KIND", kind)
            .stdin(Stdio::from(fd.try_clone().unwrap()))
            .stdout(Stdio::piped());
        let mut child = Proc::spawn(&mut cmd).unwrap();
        assert_eq!(
            hear(&mut child),
            "paused",
            "{kind}: the initialiser did not stop half-way"
        );
        let pid = child.id();
        let check = |what: &str, alive: bool| {
            let sem = || {
                (
                    // SAFETY: the slot is in our mapping, which outlives these handles.
                    unsafe {
                        InPlaceSemaphore::attach_timeout(slot.cast(), Duration::from_millis(200))
                    }
                    .map(drop),
                    // SAFETY: as above.
                    unsafe { InPlaceSemaphore::init(slot.cast(), 1) }.map(drop),
                    // SAFETY: as above.
                    unsafe { InPlaceSemaphore::init_or_attach(slot.cast(), 1, Duration::ZERO) }
                        .map(drop),
                )
            };
            let mutex = || {
                (
                    // SAFETY: as above.
                    unsafe { RobustMutex::attach_timeout(slot.cast(), Duration::from_millis(200)) }
                        .map(drop),
                    // SAFETY: as above.
                    unsafe { RobustMutex::init(slot.cast()) }.map(drop),
                    // SAFETY: as above.
                    unsafe { RobustMutex::init_or_attach(slot.cast(), Duration::ZERO) }.map(drop),
                )
            };
            let (attach, init, either) = if kind == "sem" { sem() } else { mutex() };
            if alive {
                assert!(
                    matches!(attach, Err(Error::TimedOut)),
                    "{kind} {what}: {attach:?}"
                );
                assert!(
                    matches!(init, Err(Error::AlreadyInitialized { .. })),
                    "{kind} {what}: {init:?}"
                );
                assert!(
                    matches!(either, Err(Error::TimedOut)),
                    "{kind} {what}: {either:?}"
                );
            } else {
                for r in [attach, init, either] {
                    match r {
                        Err(Error::InitializerDied { pid: p, .. }) => assert_eq!(p, pid),
                        other => panic!("{kind} {what}: expected InitializerDied, got {other:?}"),
                    }
                }
            }
        };
        check("initialiser alive", true);
        child.kill().unwrap();
        until_zombie(pid);
        check("initialiser a zombie", false);
        let _ = child.wait_timeout(Duration::from_secs(10));
        check("initialiser reaped", false);
        // Waiting forever on a dead initialiser still ends.
        let t = std::time::Instant::now();
        // SAFETY: as above.
        let r = unsafe { InPlaceSemaphore::attach_timeout(slot.cast(), Duration::MAX) };
        assert!(
            matches!(r, Err(Error::InitializerDied { .. })),
            "{kind}: {r:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(10));
        // SAFETY: the mapping is ours; no handle into it is left.
        unsafe { rustix::mm::munmap(base.as_ptr().cast(), 8192) }.unwrap();
    }
}
