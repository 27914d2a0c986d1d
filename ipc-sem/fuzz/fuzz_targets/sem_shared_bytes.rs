//! Bytes a peer controls, as the memory of an anonymous semaphore or mutex: the first byte
//! picks the seals, the rest is the content of a real memfd passed to `from_fd`, and the first
//! bytes are also copied over an in-place slot passed to `attach`. Promises: no panic, no abort,
//! no hang; `from_fd` succeeds only for a memfd sealed against resizing of exactly the slot's
//! size holding a ready, plausible object; every operation on a handle that was made returns a
//! typed result consistent with the value it reports. The async forms (the waiter thread reads
//! the same words, counts itself in glibc's `nwaiters` and sets `FUTEX_WAITERS` in a mutex's
//! lock word) register a wait on those bytes and drop it: no panic, no hang, and the value is
//! what it was.
#![no_main]

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

use std::future::Future;
use std::task::{Context, Waker};

use ipc_sem::{
    AsyncLocked, AsyncMutex, AsyncSemaphore, Error, InPlaceSemaphore, Locked, RawRobustMutex,
    RawSemaphore, RobustMutex, SEM_VALUE_MAX, SharedMutex, SharedSemaphore,
};
use libfuzzer_sys::fuzz_target;
use rustix::fs::{MemfdFlags, SealFlags};

fn memfd(content: &[u8], seals: SealFlags) -> OwnedFd {
    let fd = rustix::fs::memfd_create(
        "ipcrs-fuzz",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .expect("memfd_create");
    let mut f = std::fs::File::from(fd);
    f.write_all(content).expect("write");
    let fd = OwnedFd::from(f);
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).expect("seals");
    }
    fd
}

macro_rules! exercise_sem {
    ($sem:expr) => {{
        let sem = $sem;
        let v = sem.value().expect("value");
        assert!(v <= SEM_VALUE_MAX, "value {v}");
        match sem.try_wait() {
            Ok(()) => assert_eq!(sem.value().unwrap(), v - 1, "try_wait took one"),
            Err(Error::WouldBlock) => assert_eq!(v, 0, "WouldBlock with value {v}"),
            Err(e) => panic!("try_wait: {e}"),
        }
        let v = sem.value().unwrap();
        match sem.post() {
            Ok(()) => assert_eq!(sem.value().unwrap(), v + 1),
            Err(Error::Overflow) => assert_eq!(v, SEM_VALUE_MAX),
            Err(e) => panic!("post: {e}"),
        }
        match sem.wait_timeout(Duration::ZERO) {
            Ok(()) | Err(Error::TimedOut) => {}
            Err(e) => panic!("wait_timeout: {e}"),
        }
        drop(sem.try_acquire());
    }};
}

fn exercise_mutex(m: &RobustMutex) {
    for _ in 0..2 {
        match m.try_lock() {
            Ok(Locked::Normal(g)) => drop(g),
            Ok(Locked::OwnerDied(g)) => drop(g.make_consistent()),
            Err(_) => {}
        }
    }
    drop(m.lock_timeout(Duration::ZERO));
}

/// Polls `f` once (a wait that finds nothing registers with the waiter thread), then drops it.
fn poll_once_and_drop<F: Future>(f: F) -> bool {
    let mut f = std::pin::pin!(f);
    f.as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, content)) = data.split_first() else {
        return;
    };
    let mut seals = SealFlags::empty();
    if how & 1 != 0 {
        seals |= SealFlags::SHRINK;
    }
    if how & 2 != 0 {
        seals |= SealFlags::GROW;
    }
    let sealed = seals.contains(SealFlags::SHRINK | SealFlags::GROW);

    match SharedSemaphore::from_fd(memfd(content, seals)) {
        Ok(sem) => {
            assert!(
                sealed && content.len() == RawSemaphore::SIZE,
                "accepted {} bytes",
                content.len()
            );
            exercise_sem!(&sem);
            // A second handle on the same memfd sees the same semaphore.
            let again = SharedSemaphore::from_fd(sem.as_fd().try_clone_to_owned().unwrap())
                .expect("a second from_fd");
            assert_eq!(again.value().unwrap(), sem.value().unwrap());
            // Async: a wait registered (or done at once) and dropped leaves the value alone,
            // beyond the unit it took.
            let v = sem.value().unwrap();
            let a = AsyncSemaphore::new(again);
            let took = poll_once_and_drop(a.wait());
            assert_eq!(a.value().unwrap() + u32::from(took), v);
        }
        Err(Error::Io(e)) => panic!("untyped error {e}"),
        Err(_) => {}
    }
    match SharedMutex::from_fd(memfd(content, seals)) {
        Ok(m) => {
            assert!(
                sealed && content.len() == RawRobustMutex::SIZE,
                "accepted {} bytes",
                content.len()
            );
            exercise_mutex(&m);
            let a = AsyncMutex::new(
                SharedMutex::from_fd(m.as_fd().try_clone_to_owned().unwrap()).unwrap(),
            );
            match a.try_lock() {
                Ok(AsyncLocked::Normal(g)) => drop(g),
                Ok(AsyncLocked::OwnerDied(g)) => drop(g.make_consistent()),
                Err(_) => {}
            }
            poll_once_and_drop(async {
                if let Ok(l) = a.lock().await {
                    drop(l.recover());
                }
            });
        }
        Err(Error::Io(e)) => panic!("untyped error {e}"),
        Err(_) => {}
    }

    // The same bytes over an in-place semaphore slot (the rest zero).
    let mut slot = Box::new(RawSemaphore::new());
    let p = NonNull::from(&mut *slot);
    let n = content.len().min(RawSemaphore::SIZE);
    // SAFETY: `n` bytes fit in the slot; nothing else uses it.
    unsafe { std::ptr::copy_nonoverlapping(content.as_ptr(), p.as_ptr().cast::<u8>(), n) };
    // SAFETY: the slot is aligned and lives until the end of this block, after the handle.
    if let Ok(sem) = unsafe { InPlaceSemaphore::attach(p) } {
        exercise_sem!(&sem);
    }
    // And over a mutex slot: attach only (a lock taken in place must outlive its memory, which
    // this harness does not promise).
    let mut mslot = Box::new(RawRobustMutex::new());
    let q = NonNull::from(&mut *mslot);
    let n = content.len().min(RawRobustMutex::SIZE);
    // SAFETY: `n` bytes fit in the slot; nothing else uses it.
    unsafe { std::ptr::copy_nonoverlapping(content.as_ptr(), q.as_ptr().cast::<u8>(), n) };
    // SAFETY: as above.
    let _ = unsafe { RobustMutex::attach(q) };
});
