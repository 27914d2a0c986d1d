//! After `fork`: a child forked from a multi-threaded parent may make only async-signal-safe
//! calls. Every type documents what its handles allow there; these tests call exactly that in
//! such children, forked while other threads of the parent are busy creating, opening and
//! dropping objects of every kind, and require every child to return within a bound.
//!
//! A re-run test process (the "forker") does the forking, so the children never run inside the
//! multi-threaded test harness with its output capture; its own extra threads are the busy ones.
//! With glibc's `sem_close`, whose lock a busy thread may hold at the moment of the fork, a
//! child dropping an inherited named semaphore hung forever.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipc_sem::{
    Error, EventSemaphore, InPlaceSemaphore, NamedMutex, NamedSemaphore, RawRobustMutex,
    RawSemaphore, RobustMutex, SemOp, SemSet, SharedMutex, SharedSemaphore,
};
use ipc_testkit::{Proc, Watchdog, test_path};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};

/// Waits at most `limit` for child `pid`; kills it on time-out. Returns its raw wait status,
/// or `None` if it had to be killed.
pub(crate) fn wait_bounded(pid: i32, limit: Duration) -> Option<i32> {
    let p = Pid::from_raw(pid).unwrap();
    let fd = pidfd_open(p, PidfdFlags::empty()).unwrap();
    let ts = Timespec {
        tv_sec: limit.as_secs() as i64,
        tv_nsec: 0,
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ready = loop {
        match poll(&mut fds, Some(&ts)) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r.unwrap(),
        }
    };
    if ready == 0 {
        // SAFETY: `pid` is our unreaped child, so the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let (_, status) = waitpid(Some(p), WaitOptions::empty()).unwrap().unwrap();
    (ready == 1).then(|| status.as_raw())
}

/// Forks; the child runs `f` and leaves with `_exit(f())`. The child of this multi-threaded
/// process may call only what the crate documents as fine after fork (the `f`s below do).
pub(crate) fn fork_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child runs only `f`, which makes async-signal-safe calls (the operations the
    // crate documents for after-fork) and frees memory (glibc resets malloc's locks in the
    // child), then `_exit`s without returning into the caller's frames.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running the parent's destructors a second time.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Threads that create, open, use and drop objects of every kind until stopped (the
/// `inherit` module's churn), so that forks happen while they are in the middle of it.
struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start(n: usize) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        crate::inherit::churn(&format!("busy{t}"));
                    }
                })
            })
            .collect();
        Busy { stop, threads }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// An anonymous `MAP_SHARED` page for in-place slots (shared with forked children).
struct Page(NonNull<u8>);

impl Page {
    fn new() -> Page {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks aliases nothing.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                4096,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
            )
        }
        .unwrap();
        Page(NonNull::new(p.cast()).unwrap())
    }

    fn slot<T>(&self, offset: usize) -> NonNull<T> {
        // 64-byte offsets keep both slot types aligned.
        assert!(offset.is_multiple_of(64) && offset + 64 <= 4096);
        // SAFETY: within the page (checked above).
        unsafe { self.0.add(offset) }.cast()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: the page is ours; no handle into it outlives the test that made it.
        let _ = unsafe { rustix::mm::munmap(self.0.as_ptr().cast(), 4096) };
    }
}

/// Every kind of handle, as a forked child inherits them.
struct All {
    named_owner: NamedSemaphore,
    named_opener: NamedSemaphore,
    shared: SharedSemaphore,
    in_place: InPlaceSemaphore,
    set: SemSet,
    event: EventSemaphore,
    robust: RobustMutex,
    shared_mutex: SharedMutex,
    named_mutex: NamedMutex,
    named_mutex_opener: NamedMutex,
    name: String,
    _page: Page,
}

impl All {
    fn new() -> All {
        let name = ipc_testkit::posix_name("fk");
        let page = Page::new();
        // SAFETY: zeroed shared page, aligned slots, mapped until `All` is dropped (after the
        // handles: fields drop in order and `_page` is last).
        let in_place = unsafe { InPlaceSemaphore::init(page.slot::<RawSemaphore>(0), 0) }.unwrap();
        // SAFETY: as above.
        let robust = unsafe { RobustMutex::init(page.slot::<RawRobustMutex>(64)) }.unwrap();
        let named_mutex = NamedMutex::create(&name).unwrap();
        All {
            named_owner: NamedSemaphore::create(&name, 0).unwrap(),
            named_opener: NamedSemaphore::open(&name).unwrap(),
            shared: SharedSemaphore::new(0).unwrap(),
            in_place,
            set: crate::shared::new_set(&[0]),
            event: EventSemaphore::new(0).unwrap(),
            robust,
            shared_mutex: SharedMutex::new().unwrap(),
            named_mutex_opener: NamedMutex::open(&name).unwrap(),
            named_mutex,
            name,
            _page: page,
        }
    }

    /// In the forked child: the documented operations on every kind, then every handle
    /// dropped. Returns 0, or the number of the first step that failed.
    fn child(self) -> i32 {
        let steps: [&dyn Fn() -> bool; 11] = [
            &|| {
                !self.named_owner.is_owner() && !self.set.is_owner() && !self.named_mutex.is_owner()
            },
            &|| {
                self.named_owner.post().is_ok()
                    && self.named_opener.post().is_ok()
                    && self.named_opener.try_wait().is_ok()
                    && self
                        .named_owner
                        .wait_timeout(Duration::from_secs(5))
                        .is_ok()
                    && self.named_owner.post().is_ok()
                    && self.named_owner.value().is_ok()
            },
            &|| {
                self.shared.post().is_ok()
                    && self.shared.post().is_ok()
                    && self.shared.wait().is_ok()
                    && self.shared.acquire().is_ok()
            },
            &|| {
                self.in_place.post().is_ok()
                    && self.in_place.try_acquire().is_ok()
                    && self.in_place.value().is_ok()
            },
            &|| {
                self.set.apply(&[SemOp::post(0)]).is_ok()
                    && self.set.try_apply(&[SemOp::post(0)]).is_ok()
                    && self
                        .set
                        .apply_timeout(&[SemOp::wait(0)], Duration::from_secs(5))
                        .is_ok()
                    && self.set.value(0).is_ok()
                    && self.set.waiters(0).is_ok()
            },
            &|| {
                self.event.post().is_ok()
                    && self.event.post().is_ok()
                    && self.event.try_wait().is_ok()
            },
            &|| matches!(self.robust.lock(), Ok(ipc_sem::Locked::Normal(_))),
            &|| matches!(self.shared_mutex.try_lock(), Ok(ipc_sem::Locked::Normal(_))),
            &|| {
                matches!(
                    self.named_mutex_opener.lock_timeout(Duration::from_secs(5)),
                    Ok(ipc_sem::Locked::Normal(_))
                )
            },
            &|| self.named_mutex.try_lock().is_ok(),
            &|| true,
        ];
        for (i, step) in steps.iter().enumerate() {
            if !step() {
                return i as i32 + 1;
            }
        }
        // Drop every handle: unmaps and closes only, removes nothing.
        drop(self);
        0
    }
}

/// The forker of `every_kind_works_in_a_child_forked_while_threads_are_busy`.
fn forker_every_kind() {
    let mut all = Some(All::new());
    let busy = Busy::start(2);
    // The child takes the handles out of its copy of `all`; the parent's stays.
    let pid = fork_child(|| all.take().map_or(99, All::child));
    let all = all.unwrap();
    let status = wait_bounded(pid, Duration::from_secs(30)).expect("the forked child hung");
    drop(busy);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "forked child: raw wait status {status:#x} (exit N: step N failed)"
    );
    // What the child did arrived, and it removed nothing.
    assert_eq!(all.named_owner.value().unwrap(), 1, "named: +1 net");
    assert_eq!(all.shared.value().unwrap(), 1, "shared: +1 net");
    assert_eq!(all.in_place.value().unwrap(), 1, "in place: +1 net");
    assert_eq!(all.set.values().unwrap(), [1], "set: +1 net");
    all.event.try_wait().expect("eventfd: +1 net");
    assert!(
        NamedSemaphore::open(&all.name).is_ok(),
        "semaphore still named"
    );
    assert!(NamedMutex::open(&all.name).is_ok(), "mutex still named");
    assert!(SemSet::open_id(all.set.id()).is_ok(), "set still there");
    // The child's locks died with it: its guards unlocked before it exited.
    drop(all.robust.try_lock().unwrap());
    drop(all.shared_mutex.try_lock().unwrap());
    drop(all.named_mutex.try_lock().unwrap());
    let name = all.name.clone();
    let id = all.set.id();
    drop(all);
    // The creator's drops do remove them.
    assert!(matches!(
        NamedSemaphore::open(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        NamedMutex::open(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(SemSet::open_id(id), Err(Error::NotFound { .. })));
}

#[test]
fn every_kind_works_in_a_child_forked_while_threads_are_busy() {
    if ipc_testkit::role().is_some() {
        forker_every_kind();
        return;
    }
    let _wd = Watchdog::new("fork every kind", Duration::from_secs(120));
    let test = test_path!(every_kind_works_in_a_child_forked_while_threads_are_busy);
    Proc::spawn(&mut ipc_testkit::child(&test, "forker"))
        .unwrap()
        .expect_success(Duration::from_secs(100));
}

/// The forker of `children_forked_while_threads_are_busy_drop_inherited_handles_and_return`.
fn forker_drops() {
    const FORKS: usize = 300;
    let name = ipc_testkit::posix_name("fkd");
    let owner = NamedSemaphore::create(&name, 0).unwrap();
    let busy = Busy::start(2);
    let mut hung = 0;
    let mut failed = 0;
    for _ in 0..FORKS {
        let opener = NamedSemaphore::open(&name).unwrap();
        let shared = SharedSemaphore::new(0).unwrap();
        let mutex = SharedMutex::new().unwrap();
        let pid = fork_child(|| {
            // Only drops of inherited handles, the owner's among them.
            drop(opener);
            drop(shared);
            drop(mutex);
            0
        });
        match wait_bounded(pid, Duration::from_secs(10)) {
            None => hung += 1,
            Some(s) if !(libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0) => failed += 1,
            Some(_) => {}
        }
    }
    drop(busy);
    assert_eq!(
        hung, 0,
        "{hung} of {FORKS} forked children hung dropping inherited handles"
    );
    assert_eq!(failed, 0, "{failed} of {FORKS} forked children failed");
    let file = CString::new(format!("/dev/shm/sem.{}", &name[1..])).unwrap();
    assert!(rustix::fs::access(file.as_c_str(), rustix::fs::Access::EXISTS).is_ok());
    drop(owner);
}

#[test]
fn children_forked_while_threads_are_busy_drop_inherited_handles_and_return() {
    if ipc_testkit::role().is_some() {
        forker_drops();
        return;
    }
    let _wd = Watchdog::new("fork drop race", Duration::from_secs(600));
    let test = test_path!(children_forked_while_threads_are_busy_drop_inherited_handles_and_return);
    Proc::spawn(&mut ipc_testkit::child(&test, "forker"))
        .unwrap()
        .expect_success(Duration::from_secs(550));
}

/// A forked child that holds the inherited owner keeps it alive: `remove_stale` refuses while
/// the child lives, even after the creator dropped its handle with `OnDrop::Keep`.
fn forker_keeps_alive() {
    let name = ipc_testkit::posix_name("fka");
    let mut owner = NamedSemaphore::create(&name, 0).unwrap();
    owner.persist();
    let (rd, wr) = rustix::pipe::pipe().unwrap();
    let mut wr = Some(wr);
    let pid = fork_child(|| {
        // Hold the inherited owner (and its descriptor) until the parent closes the pipe.
        drop(wr.take());
        let mut b = [0u8; 1];
        let _ = rustix::io::read(&rd, &mut b);
        drop(owner);
        0
    });
    // The parent's copy of `owner` went with the closure when `fork_child` returned: only the
    // child holds the owner's descriptor now.
    let r = ipc_sem::remove_stale(&name);
    drop(wr);
    let status = wait_bounded(pid, Duration::from_secs(10)).expect("child hung");
    assert!(libc::WIFEXITED(status));
    assert!(matches!(r, Err(Error::OwnerAlive { .. })), "{r:?}");
    ipc_sem::remove_stale(&name).expect("stale once the child is gone");
}

#[test]
fn a_forked_child_holding_the_owner_keeps_it_alive() {
    if ipc_testkit::role().is_some() {
        forker_keeps_alive();
        return;
    }
    let _wd = Watchdog::new("fork keeps alive", Duration::from_secs(60));
    let test = test_path!(a_forked_child_holding_the_owner_keeps_it_alive);
    Proc::spawn(&mut ipc_testkit::child(&test, "forker"))
        .unwrap()
        .expect_success(Duration::from_secs(40));
}
